// BackRing: the back end's side of one shared blkif ring, in any ABI (ring_abi.h).
//
// Fetch copies each new request slot ONCE from the shared page into private memory
// and decodes it into the ABI-independent RingRequest; nothing is read from the
// slot again (the guest may rewrite it at any time). The copy is NOT validated here:
// that is request_validator's job. Responses are written zero-filled in the guest's
// layout; PushResponses tells (per RING_PUSH_RESPONSES_AND_CHECK_NOTIFY) whether the
// guest must be notified.
//
// Threading: one thread at a time (the ring's strand). The shared pages must stay
// mapped while the BackRing lives.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <vector>

#include "common/status.h"
#include "tapdisk-map/blkif/ring_abi.h"

namespace tapmap::blkif {

// One request as copied from the ring, in ABI-independent form. Fields not used by
// `operation` are zero.
struct RingRequest {
  uint8_t operation = 0;    // BLKIF_OP_*
  uint8_t indirect_op = 0;  // BLKIF_OP_INDIRECT: the real operation
  uint16_t nr_segments = 0;
  uint16_t handle = 0;
  uint8_t discard_flag = 0;
  uint64_t id = 0;
  uint64_t sector_number = 0;  // 512-byte units
  uint64_t nr_sectors = 0;     // BLKIF_OP_DISCARD
  std::array<blkif_request_segment, BLKIF_MAX_SEGMENTS_PER_REQUEST> segments{};  // direct
  std::array<grant_ref_t, BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST> indirect_grefs{};
};

class BackRing {
 public:
  virtual ~BackRing() = default;

  // Attaches to the shared ring at `sring` spanning `pages` pages (a power of two),
  // resuming at the ring's published response index (0 for a fresh ring; where a
  // previous instance of the backend stopped otherwise: requests it had not answered
  // are fetched again).
  static std::unique_ptr<BackRing> Attach(Abi abi, void* sring, size_t pages);

  virtual Abi abi() const = 0;
  // Number of slots.
  virtual uint32_t size() const = 0;

  // Appends up to `max` newly produced requests to `out`. kCorruption ("ring
  // broken") if the guest's producer index is more than a ring ahead of our
  // responses: the ring must then be disconnected.
  virtual Result<uint32_t> Fetch(uint32_t max, std::vector<RingRequest>* out) = 0;
  // True if requests are waiting; when none are, re-arms the request event
  // (RING_FINAL_CHECK_FOR_REQUESTS) and checks once more.
  virtual bool FinalCheckForRequests() = 0;

  // Writes the response for request `id` (echoing its `operation`) in the next slot.
  virtual void PutResponse(uint64_t id, uint8_t operation, int16_t status) = 0;
  // Publishes the responses written so far; true if the guest must be notified.
  virtual bool PushResponses() = 0;

  // The ring's indices now: the shared ones as the guest left them, and ours. For
  // diagnostics of a stalled ring (tapmap vbd list); call on the ring's strand.
  struct Indices {
    uint32_t req_prod = 0, req_event = 0, rsp_prod = 0, rsp_event = 0;  // shared page
    uint32_t req_cons = 0, rsp_prod_pvt = 0;                            // private
  };
  virtual Indices indices() const = 0;
};

}  // namespace tapmap::blkif
