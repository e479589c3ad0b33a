// Volume::Allocation: which parts of a range are holes (BlockDevice::Allocation, what
// NBD's base:allocation reports). Kept apart from volume.cc: it reads the same state
// as the read path (the map, fetched as a read fetches it, and the pending blocks)
// and changes nothing.
//
// The answer must never call data a hole: a backup tool skips what is reported as a
// hole. So a block is a hole only if the map says so AND this host has no pending
// (written, uncommitted) copy of it; pending blocks and the map are looked at under
// mu_, the lock under which a commit moves a block from the one to the other
// (CycleDone), so a block being committed is seen in one place or the other.
#include <boost/asio/post.hpp>

#include "common/units.h"
#include "tapdisk-map/engine/volume.h"

namespace tapmap::engine {
namespace {

// How often the range is mapped again when a recall or reconnection drops maps
// between mapping and looking (each attempt maps what is missing, so a few suffice).
constexpr int kAllocationMapAttempts = 8;

void AddRun(std::vector<AllocationRun>* runs, uint64_t length, bool hole) {
  if (length == 0) return;
  if (!runs->empty() && runs->back().hole == hole) {
    runs->back().length += length;
  } else {
    runs->push_back(AllocationRun{length, hole});
  }
}

}  // namespace

void Volume::Allocation(uint64_t offset, uint64_t length, size_t max_runs, AllocationDone done) {
  auto post = [this](AllocationDone done, Result<std::vector<AllocationRun>> result) {
    boost::asio::post(*ctx_.io, [done = std::move(done), result = std::move(result)]() mutable {
      done(std::move(result));
    });
  };
  Status s = CheckIo(offset, length, false);
  if (s.ok() && length == 0) s = Status::InvalidArgument("allocation of an empty range");
  if (s.ok() && max_runs == 0) s = Status::InvalidArgument("allocation with max_runs 0");
  if (!s.ok()) return post(std::move(done), std::move(s));
  if (!Usable()) {
    // Fenced (or the opener in doubt): cached maps may be stale now, as for reads.
    auto self = shared_from_this();
    return WaitUsable(std::chrono::steady_clock::now() + ctx_.unavailable_timeout,
                      [self, offset, length, max_runs, done, post](Status s) mutable {
                        if (!s.ok()) return post(std::move(done), std::move(s));
                        self->AllocationUsable(offset, length, max_runs, kAllocationMapAttempts, std::move(done));
                      });
  }
  AllocationUsable(offset, length, max_runs, kAllocationMapAttempts, std::move(done));
}

void Volume::AllocationUsable(uint64_t offset, uint64_t length, size_t max_runs, int attempts,
                              AllocationDone done) {
  auto self = shared_from_this();
  EnsureMapped(offset, length, [self, offset, length, max_runs, attempts, done](Status s) mutable {
    auto post = [self](AllocationDone done, Result<std::vector<AllocationRun>> result) {
      boost::asio::post(*self->ctx_.io, [done = std::move(done), result = std::move(result)]() mutable {
        done(std::move(result));
      });
    };
    if (!s.ok()) return post(std::move(done), s.WithContext("allocation of " + self->name_));
    const uint64_t bs = self->ctx_.block_size;
    const uint64_t end = offset + length;
    std::vector<AllocationRun> runs;
    uint64_t p = offset;
    {
      std::lock_guard<std::mutex> lock(self->mu_);
      // One run more than asked for shows that the last one asked for is complete.
      while (p < end && runs.size() <= max_runs) {
        const uint64_t block = AlignDown(p, bs);
        const uint64_t block_end = std::min(block + bs, end);
        if (self->pending_.Find(block) != nullptr) {
          AddRun(&runs, block_end - p, false);  // written here, not yet committed
          p = block_end;
          continue;
        }
        std::optional<Extent> ext = self->map_->Find(p);
        if (!ext) break;  // recalled since mapping: map again below
        const uint64_t stop = std::min(ext->end(), end);
        if (ext->state != ExtentState::kHole) {
          AddRun(&runs, stop - p, false);
          p = stop;
        } else if (!self->pending_.AnyIn(block + bs, stop)) {
          AddRun(&runs, stop - p, true);
          p = stop;
        } else {
          // A hole with pending blocks in it: block by block.
          AddRun(&runs, block_end - p, true);
          p = block_end;
        }
      }
    }
    if (runs.size() > max_runs) runs.resize(max_runs);
    if (runs.empty()) {
      // Nothing known at `offset` any more (a recall or reconnection raced): map again.
      if (attempts <= 1) {
        return post(std::move(done), Status::Unavailable("allocation of " + self->name_ +
                                                         ": maps keep being recalled"));
      }
      return self->AllocationUsable(offset, length, max_runs, attempts - 1, std::move(done));
    }
    // A prefix of the range otherwise (the client asks again for the rest).
    post(std::move(done), std::move(runs));
  });
}

}  // namespace tapmap::engine
