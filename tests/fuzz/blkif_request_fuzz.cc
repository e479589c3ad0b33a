// libFuzzer target: request fetch-and-validate of the blkif back end, i.e. everything
// a guest controls in a request: the ring indices, the slot bytes in any ABI, and the
// content of indirect segment pages. Checks that the validator's output keeps its
// promises (request_validator.h); any violation aborts.
//
// Input: byte 0 = ABI, byte 1 = disk/feature flags, bytes 2..9 = disk size in
// sectors, then the shared ring page (its header holds req_prod/rsp_prod), then the
// pages served for indirect grants (grant refs divisible by 5 are refused).
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "common/units.h"
#include "tapdisk-map/blkif/back_ring.h"
#include "tapdisk-map/blkif/request_validator.h"

namespace {

using namespace tapmap;
using namespace tapmap::blkif;

void Require(bool ok) {
  if (!ok) __builtin_trap();
}

void CheckVerdict(const RingRequest& req, const RequestLimits& limits, const std::variant<BlkifIo, Rejection>& v) {
  // Responses echo the operation, an indirect request's indirect_op (blkfront checks).
  const uint8_t response_op = req.operation == BLKIF_OP_INDIRECT ? req.indirect_op : req.operation;
  if (const Rejection* r = std::get_if<Rejection>(&v)) {
    Require(r->id == req.id && r->operation == response_op);
    Require(r->status == BLKIF_RSP_ERROR || r->status == BLKIF_RSP_EOPNOTSUPP);
    return;
  }
  const BlkifIo& io = std::get<BlkifIo>(v);
  Require(io.id == req.id && io.operation == response_op);
  Require(io.offset % kSectorSize == 0 && io.length % kSectorSize == 0);
  Require(RangeWithin(io.offset >> kSectorShift, io.length >> kSectorShift, limits.sectors));
  Require(io.offset <= UINT64_MAX - io.length);  // the byte range itself does not wrap
  switch (io.kind) {
    case BlkifIo::Kind::kRead:
    case BlkifIo::Kind::kWrite: {
      Require(!io.segments.empty());
      Require(io.segments.size() <= (req.operation == BLKIF_OP_INDIRECT ? limits.max_indirect_segments
                                                                         : BLKIF_MAX_SEGMENTS_PER_REQUEST));
      uint64_t bytes = 0;
      for (const auto& s : io.segments) {
        Require(s.first_sect <= s.last_sect && s.last_sect <= 7);
        bytes += (s.last_sect - s.first_sect + 1) * kSectorSize;
      }
      Require(bytes == io.length);
      if (io.kind == BlkifIo::Kind::kWrite) Require(!limits.read_only);
      break;
    }
    case BlkifIo::Kind::kFlush:
      Require(io.length == 0 && io.segments.empty());
      break;
    case BlkifIo::Kind::kDiscard:
      Require(!limits.read_only && limits.discard && io.segments.empty());
      break;
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 10) return 0;
  Abi abi = static_cast<Abi>(data[0] % 3);
  uint8_t flags = data[1];
  uint64_t sectors;
  std::memcpy(&sectors, data + 2, sizeof sectors);
  data += 10;
  size -= 10;

  RequestLimits limits;
  limits.sectors = sectors >> (flags & 0x3f);  // small and huge disks alike
  limits.read_only = flags & 0x40;
  limits.discard = flags & 0x80;
  limits.barrier = !(flags & 0x01);
  limits.max_indirect_segments = (flags & 0x02) ? 0 : 256;

  // The shared ring page: whatever the guest wrote, header included.
  std::vector<uint8_t> ring(kPageSize, 0);
  size_t ring_bytes = std::min<size_t>(size, kPageSize);
  std::memcpy(ring.data(), data, ring_bytes);
  const uint8_t* extra = data + ring_bytes;
  size_t extra_size = size - ring_bytes;

  auto back = BackRing::Attach(abi, ring.data(), 1);
  IndirectPageFetcher fetch = [&](std::span<const grant_ref_t> refs, std::span<uint8_t> dest) -> Status {
    Require(dest.size() == refs.size() * kPageSize && refs.size() <= BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST);
    for (size_t i = 0; i < refs.size(); ++i) {
      if (refs[i] % 5 == 0) return Status::PermissionDenied("grant refused");
      for (size_t b = 0; b < kPageSize; ++b) {
        dest[i * kPageSize + b] = extra_size == 0 ? 0 : extra[(refs[i] + i * kPageSize + b) % extra_size];
      }
    }
    return Status::Ok();
  };
  for (int round = 0; round < 4; ++round) {
    std::vector<RingRequest> batch;
    auto n = back->Fetch(16, &batch);
    if (!n.ok()) break;  // ring broken: the backend disconnects
    Require(*n == batch.size() && *n <= back->size());
    for (const RingRequest& r : batch) {
      auto verdict = ValidateRequest(r, limits, fetch);
      CheckVerdict(r, limits, verdict);
      back->PutResponse(r.id, r.operation, BLKIF_RSP_OKAY);
    }
    back->PushResponses();
    if (!back->FinalCheckForRequests()) break;
  }
  return 0;
}
