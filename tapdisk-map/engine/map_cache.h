// MapCache: the extents of one open volume this host has fetched from the mapserver,
// kept until the server recalls them. Non-overlapping, ordered by logical offset;
// ranges never fetched (or recalled) are simply absent.
//
// Staleness: every change that can make an in-flight map fetch's answer stale (a
// recall, a reconnection) bumps epoch(). A fetch records the epoch when it starts and
// its result is installed only if the epoch is unchanged (Insert's `epoch`).
//
// Threading: thread-safe (one internal mutex).
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <vector>

#include "tapdisk-map/engine/extent.h"

namespace tapmap::engine {

class MapCache {
 public:
  explicit MapCache(uint32_t block_size) : block_size_(block_size) {}

  uint32_t block_size() const { return block_size_; }
  uint64_t epoch() const;

  // The extent covering byte `offset`, trimmed to start at the block containing it and
  // end at the extent's end; nullopt if not cached.
  std::optional<Extent> Find(uint64_t offset) const;

  // The first block-aligned range inside [offset, offset+length) that is not cached,
  // as [start, end) byte offsets; nullopt if all is cached.
  std::optional<ByteRange> FirstMissing(uint64_t offset, uint64_t length) const;

  // Installs extents from a map reply. Returns false (and installs nothing) if the
  // epoch moved since `epoch` was read: the answer may predate a recall.
  bool Insert(const std::vector<Extent>& extents, uint64_t epoch);

  // Installs one extent regardless of the epoch (what this host just committed).
  void Set(const Extent& extent);

  // Recall: forgets [offset, offset+length) (rounded out to blocks).
  void Drop(uint64_t offset, uint64_t length);
  // Recall for snapshot/clone: owned extents in the range become shared.
  void Downgrade(uint64_t offset, uint64_t length);
  // Forgets everything (connection re-established: maps must be re-validated).
  void Clear();

  // Number of extents held (for tests and stats).
  size_t extent_count() const;

 private:
  // Splits extents so that `at` is a boundary; requires mu_.
  void SplitAtLocked(uint64_t at);
  void EraseLocked(uint64_t start, uint64_t end);

  const uint32_t block_size_;
  mutable std::mutex mu_;
  uint64_t epoch_ = 0;
  std::map<uint64_t, Extent> extents_;  // keyed by logical start
};

}  // namespace tapmap::engine
