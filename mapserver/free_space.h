// FreeSpace: the pool's free blocks, kept as coalesced extents in the metadata `free`
// table (metadata_format.h), with the `free-blocks` counter kept equal to their sum.
//
// Allocation policy: FindFree scans from a caller-supplied hint (the end of the
// caller's previous allocation) and takes the first free runs at or after it,
// wrapping around, so that sequential writes into a volume get physically contiguous
// blocks.
//
// Writes go through one write Txn; the object must not outlive it. Errors throw
// StatusError (see metadata_store.h); a double free or the taking of a block that is
// not free throws kCorruption (the transaction must then be aborted).
#pragma once

#include <cstdint>
#include <set>
#include <utility>
#include <vector>

#include "mapserver/metadata_store.h"

namespace tapmap::mapserver {

struct BlockRun {
  uint64_t start = 0;
  uint64_t length = 0;
  uint64_t end() const { return start + length; }
};

class FreeSpace {
 public:
  explicit FreeSpace(Txn* txn) : txn_(txn) {}

  // Removes [start, start+length) from free space; every block in it must be free.
  void Take(uint64_t start, uint64_t length);
  // Queues `block` to become free; applied (sorted, coalesced) by Flush().
  void Release(uint64_t block) { released_.push_back(block); }
  // Applies queued releases. Must be called before the Txn commits.
  void Flush();
  // Every block returned to free space by Flush so far.
  const std::vector<uint64_t>& freed() const { return freed_; }

  // Total free blocks (the counter). Works on any Txn.
  static uint64_t FreeBlocks(Txn* txn);
  // Appends to `*out` runs totalling up to `count` free blocks, none in `excluded`,
  // preferring the first ones at or after `hint` (then wrapping to block 0). Returns
  // the number of blocks found (< count only if the pool has fewer). Read-only.
  static uint64_t FindFree(Txn* txn, uint64_t hint, uint64_t count,
                           const std::set<uint64_t>& excluded, std::vector<BlockRun>* out);
  // Every free extent in order (for fsck and tests).
  static std::vector<BlockRun> AllExtents(Txn* txn);

 private:
  void AddRun(BlockRun run);

  Txn* txn_;
  std::vector<uint64_t> released_;
  std::vector<uint64_t> freed_;
};

}  // namespace tapmap::mapserver
