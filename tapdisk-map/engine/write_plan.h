// WritePlan: how a write reaches each pool block it touches, decided only from what
// this host knows of the volume at that moment — its uncommitted blocks
// (PendingBlocks) and its cached map (MapCache). A pure function, tested alone, in the
// style of blkif/request_validator.h; the Volume then carries the plan out.
//
// Per block (see mapping.capnp ExtentState and engine/doc/durability.md):
//   - pending, reservation live   -> kPendingInPlace: rewrite the pinned block in its
//                                    reservation
//   - pending, reservation lost   -> kCopyOnWrite from the pinned copy (a new one)
//   - mapped `owned` (allocated under this host's lease) -> kOwnedInPlace
//   - mapped `shared`, or a hole  -> kCopyOnWrite: prepareWrite a new block
//   - map not cached (a recall or reconnection dropped it) -> the plan says so and
//     stops: map again, then plan again.
#pragma once

#include <cstdint>
#include <vector>

#include "tapdisk-map/engine/data_cache.h"
#include "tapdisk-map/engine/extent.h"
#include "tapdisk-map/engine/map_cache.h"
#include "tapdisk-map/engine/pending_blocks.h"

namespace tapmap::engine {

enum class WriteKind : uint8_t { kCopyOnWrite, kPendingInPlace, kOwnedInPlace };

// One block of a write.
struct BlockWrite {
  uint64_t block_start = 0;
  WriteKind kind = WriteKind::kCopyOnWrite;
  Extent old_extent;          // mapping before the write (kCopyOnWrite: shared or hole)
  BlockData pinned;           // kPendingInPlace / re-prepare: the current content
  bool from_pinned = false;   // copy-on-write whose base is the pinned copy
  Extent target;              // where the data goes (kCopyOnWrite: once prepared)
  BlockData content;          // what is written to target, once built (by the Volume)
};

struct WritePlan {
  std::vector<BlockWrite> blocks;     // one per block of [first, last), in order
  std::vector<uint64_t> cow_blocks;   // block starts that need a new reservation
  bool map_missing = false;           // a block's map is not cached: map again first
};

// Plans the blocks of [first, last) (block-aligned byte offsets).
WritePlan PlanWrite(uint64_t first, uint64_t last, uint32_t block_size, const PendingBlocks& pending,
                    const MapCache& map);

}  // namespace tapmap::engine
