#include "tapdisk-map/engine/map_cache.h"

#include "common/units.h"

namespace tapmap::engine {

std::string ExtentStateName(ExtentState state) {
  switch (state) {
    case ExtentState::kHole: return "hole";
    case ExtentState::kOwned: return "owned";
    case ExtentState::kShared: return "shared";
  }
  return "?";
}

uint64_t MapCache::epoch() const {
  std::lock_guard<std::mutex> lock(mu_);
  return epoch_;
}

std::optional<Extent> MapCache::Find(uint64_t offset) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = extents_.upper_bound(offset);
  if (it == extents_.begin()) return std::nullopt;
  --it;
  const Extent& e = it->second;
  if (offset >= e.end()) return std::nullopt;
  uint64_t start = AlignDown(offset, block_size_);
  if (start < e.logical) start = e.logical;
  Extent out = e;
  uint64_t skip = start - e.logical;
  out.logical = start;
  out.length = e.length - skip;
  if (out.state != ExtentState::kHole) out.physical = e.physical + skip;
  return out;
}

std::optional<ByteRange> MapCache::FirstMissing(uint64_t offset, uint64_t length) const {
  std::lock_guard<std::mutex> lock(mu_);
  uint64_t pos = AlignDown(offset, block_size_);
  uint64_t end = AlignUp(offset + length, block_size_);
  while (pos < end) {
    auto it = extents_.upper_bound(pos);
    if (it != extents_.begin()) {
      auto prev = std::prev(it);
      if (pos < prev->second.end()) {
        pos = prev->second.end();
        continue;
      }
    }
    // pos is not covered: the gap runs to the next extent or the end.
    uint64_t gap_end = it == extents_.end() ? end : std::min(end, it->first);
    return ByteRange{pos, gap_end - pos};
  }
  return std::nullopt;
}

void MapCache::SplitAtLocked(uint64_t at) {
  auto it = extents_.upper_bound(at);
  if (it == extents_.begin()) return;
  --it;
  Extent& e = it->second;
  if (at <= e.logical || at >= e.end()) return;
  Extent tail = e;
  uint64_t head_len = at - e.logical;
  tail.logical = at;
  tail.length = e.length - head_len;
  if (tail.state != ExtentState::kHole) tail.physical = e.physical + head_len;
  e.length = head_len;
  extents_.emplace(at, tail);
}

void MapCache::EraseLocked(uint64_t start, uint64_t end) {
  SplitAtLocked(start);
  SplitAtLocked(end);
  auto it = extents_.lower_bound(start);
  while (it != extents_.end() && it->first < end) it = extents_.erase(it);
}

bool MapCache::Insert(const std::vector<Extent>& extents, uint64_t epoch) {
  std::lock_guard<std::mutex> lock(mu_);
  if (epoch != epoch_) return false;
  for (const Extent& e : extents) {
    if (e.length == 0) continue;
    EraseLocked(e.logical, e.end());
    extents_.emplace(e.logical, e);
  }
  return true;
}

void MapCache::Set(const Extent& extent) {
  std::lock_guard<std::mutex> lock(mu_);
  EraseLocked(extent.logical, extent.end());
  extents_.emplace(extent.logical, extent);
}

void MapCache::Drop(uint64_t offset, uint64_t length) {
  std::lock_guard<std::mutex> lock(mu_);
  epoch_++;
  EraseLocked(AlignDown(offset, block_size_), AlignUp(offset + length, block_size_));
}

void MapCache::Downgrade(uint64_t offset, uint64_t length) {
  std::lock_guard<std::mutex> lock(mu_);
  epoch_++;
  uint64_t start = AlignDown(offset, block_size_), end = AlignUp(offset + length, block_size_);
  SplitAtLocked(start);
  SplitAtLocked(end);
  for (auto it = extents_.lower_bound(start); it != extents_.end() && it->first < end; ++it) {
    if (it->second.state == ExtentState::kOwned) it->second.state = ExtentState::kShared;
  }
}

void MapCache::Clear() {
  std::lock_guard<std::mutex> lock(mu_);
  epoch_++;
  extents_.clear();
}

size_t MapCache::extent_count() const {
  std::lock_guard<std::mutex> lock(mu_);
  return extents_.size();
}

}  // namespace tapmap::engine
