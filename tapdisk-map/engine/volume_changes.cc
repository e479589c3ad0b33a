// Volume::ChangedSince: which parts of a range differ from an earlier snapshot
// (BlockDevice::ChangedSince, NBD's tapmap:changed-since:SNAPSHOT context). One page of
// the mapserver's diff (Session.diff: committed mappings, computed from the map trees),
// with this host's pending (written, uncommitted) blocks added as changed: the diff
// cannot see them, and a backup tool copies only what is reported changed.
#include <algorithm>
#include <boost/asio/post.hpp>

#include "common/units.h"
#include "tapdisk-map/engine/volume.h"

namespace tapmap::engine {
namespace {

// Diff extents asked for per request: enough for max_runs changed runs and the gaps.
constexpr uint32_t kMaxDiffExtents = 65536;

}  // namespace

void Volume::ChangedSince(const std::string& snapshot, uint64_t offset, uint64_t length, size_t max_runs,
                          ChangesDone done) {
  auto self = shared_from_this();
  auto post = [self](ChangesDone done, Result<std::vector<ChangeRun>> result) {
    boost::asio::post(*self->ctx_.io, [done = std::move(done), result = std::move(result)]() mutable {
      done(std::move(result));
    });
  };
  Status s = CheckIo(offset, length, false);
  if (s.ok() && length == 0) s = Status::InvalidArgument("changes of an empty range");
  if (s.ok() && max_runs == 0) s = Status::InvalidArgument("changes with max_runs 0");
  if (!s.ok()) return post(std::move(done), std::move(s));
  const uint64_t bs = ctx_.block_size;
  const uint64_t end = offset + length;
  const uint32_t max_extents = static_cast<uint32_t>(std::min<uint64_t>(kMaxDiffExtents, max_runs + 1));
  remote_->Diff(snapshot, AlignDown(offset, bs), max_extents,
                [self, snapshot, offset, end, bs, max_runs, done, post](Result<DiffPage> page) mutable {
    if (!page.ok()) {
      return post(std::move(done), page.status().WithContext("changes of " + self->name_ + " since " + snapshot));
    }
    // What the page describes: up to next_offset, or all of the range if it is the last.
    uint64_t covered = page->next_offset == 0 ? end : std::min(end, page->next_offset);
    // A page cut short says nothing past its last extent.
    if (page->next_offset != 0 && !page->extents.empty()) {
      covered = std::min(covered, page->extents.back().offset + page->extents.back().length);
    }
    if (covered <= offset) {
      return post(std::move(done), Status::Internal("diff of " + self->name_ + " made no progress at " +
                                                    std::to_string(offset)));
    }
    // Changed intervals inside [offset, covered): the diff's, then the pending blocks.
    std::vector<std::pair<uint64_t, uint64_t>> changed;
    for (const ChangedExtent& e : page->extents) {
      uint64_t a = std::max(offset, e.offset), z = std::min(covered, e.offset + e.length);
      if (a < z) changed.emplace_back(a, z);
    }
    {
      std::lock_guard<std::mutex> lock(self->mu_);
      const uint64_t first = AlignDown(offset, bs);
      if (self->pending_.AnyIn(first, covered)) {
        for (uint64_t b = first; b < covered; b += bs) {
          if (self->pending_.Find(b) != nullptr) changed.emplace_back(std::max(b, offset), std::min(b + bs, covered));
        }
      }
    }
    std::sort(changed.begin(), changed.end());
    std::vector<ChangeRun> runs;
    auto add = [&runs](uint64_t length, bool is_changed) {
      if (length == 0) return;
      if (!runs.empty() && runs.back().changed == is_changed) {
        runs.back().length += length;
      } else {
        runs.push_back(ChangeRun{length, is_changed});
      }
    };
    uint64_t p = offset;
    for (const auto& [a, z] : changed) {
      if (z <= p) continue;
      add(std::max(a, p) - p, false);
      add(z - std::max(a, p), true);
      p = z;
    }
    add(covered - p, false);
    if (runs.size() > max_runs) runs.resize(max_runs);
    post(std::move(done), std::move(runs));
  });
}

}  // namespace tapmap::engine
