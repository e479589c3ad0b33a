#include "tapdisk-map/blkif/request_validator.h"

#include <algorithm>
#include <cstring>

#include "common/units.h"

namespace tapmap::blkif {

namespace {

// Sector counts whose byte value still fits in uint64_t.
constexpr uint64_t kMaxSectors = UINT64_MAX >> kSectorShift;

uint64_t DiskSectors(const RequestLimits& limits) { return std::min(limits.sectors, kMaxSectors); }

// The operation a response must carry: the request's, except that an indirect
// request is answered with its indirect_op (as xen-blkback does; Linux blkfront
// disables the device on a response whose operation does not match).
uint8_t ResponseOperation(const RingRequest& r) {
  return r.operation == BLKIF_OP_INDIRECT ? r.indirect_op : r.operation;
}

Rejection Reject(const RingRequest& r, std::string reason, int16_t status = BLKIF_RSP_ERROR) {
  return Rejection{r.id, ResponseOperation(r), status, std::move(reason)};
}

// Checks the data segments and the disk range they cover; fills io->segments,
// io->offset and io->length.
std::variant<BlkifIo, Rejection> CheckData(const RingRequest& r, const RequestLimits& limits,
                                           std::span<const blkif_request_segment> segments, BlkifIo io) {
  uint64_t sectors = 0;
  for (size_t i = 0; i < segments.size(); ++i) {
    const blkif_request_segment& s = segments[i];
    if (s.first_sect > s.last_sect || s.last_sect > 7) {
      return Reject(r, "segment " + std::to_string(i) + " has sectors " + std::to_string(s.first_sect) +
                           ".." + std::to_string(s.last_sect) + " (must be first <= last <= 7)");
    }
    sectors += uint64_t{s.last_sect} - s.first_sect + 1;
  }
  if (!RangeWithin(r.sector_number, sectors, DiskSectors(limits))) {
    return Reject(r, "sectors " + std::to_string(r.sector_number) + "+" + std::to_string(sectors) +
                         " beyond the disk's " + std::to_string(limits.sectors));
  }
  io.offset = r.sector_number << kSectorShift;
  io.length = sectors << kSectorShift;
  io.segments.assign(segments.begin(), segments.end());
  return io;
}

}  // namespace

std::variant<BlkifIo, Rejection> ValidateRequest(const RingRequest& r, const RequestLimits& limits,
                                                 const IndirectPageFetcher& fetch_indirect) {
  BlkifIo io;
  io.id = r.id;
  io.operation = ResponseOperation(r);
  std::span<const blkif_request_segment> direct(r.segments.data(), r.segments.size());

  switch (r.operation) {
    case BLKIF_OP_READ:
    case BLKIF_OP_WRITE: {
      bool write = r.operation == BLKIF_OP_WRITE;
      if (r.nr_segments == 0 || r.nr_segments > BLKIF_MAX_SEGMENTS_PER_REQUEST) {
        return Reject(r, "nr_segments " + std::to_string(r.nr_segments) + " not in 1..11");
      }
      if (write && limits.read_only) return Reject(r, "write to a read-only disk");
      io.kind = write ? BlkifIo::Kind::kWrite : BlkifIo::Kind::kRead;
      return CheckData(r, limits, direct.first(r.nr_segments), std::move(io));
    }

    case BLKIF_OP_WRITE_BARRIER:
    case BLKIF_OP_FLUSH_DISKCACHE: {
      bool barrier = r.operation == BLKIF_OP_WRITE_BARRIER;
      if ((barrier && !limits.barrier) || (!barrier && !limits.flush)) {
        return Reject(r, barrier ? "barrier not offered" : "flush not offered", BLKIF_RSP_EOPNOTSUPP);
      }
      if (r.nr_segments > BLKIF_MAX_SEGMENTS_PER_REQUEST) {
        return Reject(r, "nr_segments " + std::to_string(r.nr_segments) + " not in 0..11");
      }
      if (r.nr_segments == 0) {
        io.kind = BlkifIo::Kind::kFlush;
        return io;
      }
      if (limits.read_only) return Reject(r, "write to a read-only disk");
      io.kind = BlkifIo::Kind::kWrite;
      io.preflush = true;
      io.fua = true;
      return CheckData(r, limits, direct.first(r.nr_segments), std::move(io));
    }

    case BLKIF_OP_DISCARD: {
      if (!limits.discard) return Reject(r, "discard not offered", BLKIF_RSP_EOPNOTSUPP);
      if (limits.read_only) return Reject(r, "discard on a read-only disk");
      if (!RangeWithin(r.sector_number, r.nr_sectors, DiskSectors(limits))) {
        return Reject(r, "discard of sectors " + std::to_string(r.sector_number) + "+" +
                             std::to_string(r.nr_sectors) + " beyond the disk's " +
                             std::to_string(limits.sectors));
      }
      io.kind = BlkifIo::Kind::kDiscard;
      io.offset = r.sector_number << kSectorShift;
      io.length = r.nr_sectors << kSectorShift;
      return io;
    }

    case BLKIF_OP_INDIRECT: {
      if (limits.max_indirect_segments == 0) {
        return Reject(r, "indirect requests not offered", BLKIF_RSP_EOPNOTSUPP);
      }
      if (r.indirect_op != BLKIF_OP_READ && r.indirect_op != BLKIF_OP_WRITE) {
        return Reject(r, "indirect operation " + std::to_string(r.indirect_op) + " is not read or write");
      }
      if (r.nr_segments == 0 || r.nr_segments > limits.max_indirect_segments) {
        return Reject(r, "indirect nr_segments " + std::to_string(r.nr_segments) + " not in 1.." +
                             std::to_string(limits.max_indirect_segments));
      }
      bool write = r.indirect_op == BLKIF_OP_WRITE;
      if (write && limits.read_only) return Reject(r, "write to a read-only disk");
      uint32_t pages = (r.nr_segments + kSegmentsPerIndirectPage - 1) / kSegmentsPerIndirectPage;
      if (pages > BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST) {
        return Reject(r, "too many indirect pages");
      }
      // The one copy of the indirect pages; only it is read below.
      std::vector<uint8_t> copy(size_t{pages} * kPageSize);
      Status fetched = fetch_indirect(std::span<const grant_ref_t>(r.indirect_grefs.data(), pages), copy);
      if (!fetched.ok()) return Reject(r, "indirect pages: " + fetched.ToString());
      std::vector<blkif_request_segment> segments(r.nr_segments);
      std::memcpy(segments.data(), copy.data(), segments.size() * sizeof(blkif_request_segment));
      io.kind = write ? BlkifIo::Kind::kWrite : BlkifIo::Kind::kRead;
      return CheckData(r, limits, segments, std::move(io));
    }

    default:
      return Reject(r, "unknown operation " + std::to_string(r.operation), BLKIF_RSP_EOPNOTSUPP);
  }
}

}  // namespace tapmap::blkif
