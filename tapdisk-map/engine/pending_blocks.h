// PendingBlocks: the blocks one open volume wrote into fresh reservations (copy on
// write) and has not committed yet, each with its whole content PINNED in memory
// (engine/doc/durability.md): until its commit is durable at the mapserver, the pinned
// copy is what reads of the block return and what is written again to a new
// reservation if the server lost the old one (restart, reconnection).
//
// It also keeps the host-wide total of pinned bytes (shared by every volume of the
// engine, the bound of write admission) equal to block_size × the blocks it holds, by
// every insertion and removal and at its destruction, so the accounting lives in one
// place.
//
//   PendingBlocks pending(64 << 10, host_pinned);
//   pending.Put(block, target, data);          // a copy-on-write block was written
//   auto batch = pending.CommitBatch(4096);    // what the next commit carries
//   pending.Committed(e);                      // its commit is durable: unpinned
//
// Keys are the logical byte offsets of blocks. Not thread-safe: the owning Volume's
// mutex guards every call.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <vector>

#include "tapdisk-map/engine/data_cache.h"
#include "tapdisk-map/engine/extent.h"

namespace tapmap::engine {

class PendingBlocks {
 public:
  struct Block {
    Extent extent;       // one block, state owned: the reservation it was written to
    BlockData data;      // the block's whole content (pinned)
    bool needs_prepare;  // the reservation was lost: write `data` to a new one
  };

  // `host_pinned` is the engine-wide total this object adds its share to.
  PendingBlocks(uint32_t block_size, std::shared_ptr<std::atomic<uint64_t>> host_pinned);
  // Gives back this volume's share of the host-wide total.
  ~PendingBlocks();
  PendingBlocks(const PendingBlocks&) = delete;
  PendingBlocks& operator=(const PendingBlocks&) = delete;

  size_t size() const { return blocks_.size(); }
  bool empty() const { return blocks_.empty(); }
  // The pending block at logical offset `start`, null if none.
  const Block* Find(uint64_t start) const;
  // Whether any block starts in [first, last).
  bool AnyIn(uint64_t first, uint64_t last) const;

  // A block was written to the reservation `extent`: records (or replaces) it.
  void Put(uint64_t start, const Extent& extent, BlockData data);
  // An in-place rewrite of a pending block: its content is now `data`, if it still
  // waits for the reservation `extent` (else nothing changes).
  void Rewritten(uint64_t start, const Extent& extent, BlockData data);

  // Up to `max` blocks whose reservations are live, in logical order.
  std::vector<Extent> CommitBatch(size_t max) const;
  // Blocks whose reservations are lost, in logical order.
  std::vector<uint64_t> NeedingPrepare() const;
  // The reservations of every block are lost (the server was reconnected).
  void MarkAllNeedPrepare();
  // The reservation of the block committed as `extent` was lost (commit aborted).
  void MarkNeedsPrepare(const Extent& extent);
  // The block's content was written to a new reservation `extent`.
  void Reprepared(uint64_t start, const Extent& extent);

  // The commit of `extent` is durable: the block is no longer pending, if it still
  // waited for that reservation. Returns whether it was removed.
  bool Committed(const Extent& extent);
  // Forgets every block at or after logical offset `start` (a shrink cut them off).
  // Returns how many.
  size_t DropFrom(uint64_t start);

 private:
  void Unpin(size_t blocks);

  const uint32_t block_size_;
  const std::shared_ptr<std::atomic<uint64_t>> host_pinned_;
  std::map<uint64_t, Block> blocks_;
};

}  // namespace tapmap::engine
