// Request validation: the ONE place where a guest's blkif request is checked.
//
// Guests are untrusted (XSA-155/216/332/349): the ring slot was copied once into a
// RingRequest by BackRing::Fetch; the indirect segment pages are copied here, once,
// into private memory through `fetch_indirect`; only those copies are checked and
// used. A request that passes becomes a BlkifIo that touches only the guest's own disk
// range; one that fails becomes a Rejection with the status to answer
// (BLKIF_RSP_ERROR, or BLKIF_RSP_EOPNOTSUPP for an operation not offered) and a
// reason for the (rate-limited) log.
//
// Rules:
//  - the operation is known (READ, WRITE, WRITE_BARRIER, FLUSH_DISKCACHE, DISCARD,
//    INDIRECT with indirect_op READ or WRITE) and offered (discard/flush/barrier);
//  - nr_segments within 1..11 for direct READ/WRITE, 0..11 for flush/barrier,
//    1..max_indirect_segments for indirect ones;
//  - every segment has first_sect <= last_sect <= 7;
//  - the sector range [sector_number, +sectors) lies inside the disk, computed
//    without overflow (also for discard's nr_sectors);
//  - nothing that writes (write, barrier/flush with data, discard) on a read-only disk;
//  - the indirect pages can be fetched (a refused grant fails the request).
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <variant>
#include <vector>

#include "common/status.h"
#include "tapdisk-map/blkif/back_ring.h"

namespace tapmap::blkif {

// What the disk and the negotiated features allow.
struct RequestLimits {
  uint64_t sectors = 0;  // disk size in 512-byte sectors
  bool read_only = false;
  bool discard = true;
  bool flush = true;
  bool barrier = true;
  uint32_t max_indirect_segments = 256;
};

// A validated request, ready to execute against the disk.
struct BlkifIo {
  enum class Kind : uint8_t { kRead, kWrite, kFlush, kDiscard };
  Kind kind = Kind::kRead;
  uint64_t id = 0;
  uint8_t operation = 0;  // for the response: the request's operation, its indirect_op if indirect
  bool preflush = false;  // flush/barrier carrying data: flush before writing ...
  bool fua = false;       // ... and make the write durable before answering
  uint64_t offset = 0;    // bytes
  uint64_t length = 0;    // bytes (0 for a pure flush)
  std::vector<blkif_request_segment> segments;  // data segments, checked, in disk order
};

struct Rejection {
  uint64_t id = 0;
  uint8_t operation = 0;  // as BlkifIo::operation
  int16_t status = BLKIF_RSP_ERROR;
  std::string reason;
};

// Copies the indirect pages `refs` of the guest into `dest` (refs.size() * 4096
// bytes of private memory). Returns an error if any page cannot be had.
using IndirectPageFetcher = std::function<Status(std::span<const grant_ref_t> refs, std::span<uint8_t> dest)>;

// Checks `request` against `limits` (see the rules above).
std::variant<BlkifIo, Rejection> ValidateRequest(const RingRequest& request, const RequestLimits& limits,
                                                 const IndirectPageFetcher& fetch_indirect);

}  // namespace tapmap::blkif
