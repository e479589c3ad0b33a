#include "tapdisk-map/engine/write_plan.h"

namespace tapmap::engine {

WritePlan PlanWrite(uint64_t first, uint64_t last, uint32_t block_size, const PendingBlocks& pending,
                    const MapCache& map) {
  WritePlan plan;
  for (uint64_t b = first; b < last; b += block_size) {
    BlockWrite w;
    w.block_start = b;
    if (const PendingBlocks::Block* p = pending.Find(b)) {
      w.pinned = p->data;
      w.old_extent = p->extent;
      if (p->needs_prepare) {
        // Its reservation is gone: the block may already belong to someone else.
        w.kind = WriteKind::kCopyOnWrite;
        w.from_pinned = true;
        plan.cow_blocks.push_back(b);
      } else {
        w.kind = WriteKind::kPendingInPlace;
        w.target = p->extent;
      }
    } else {
      auto e = map.Find(b);
      if (!e) {
        plan.map_missing = true;
        return plan;
      }
      e->length = block_size;
      w.old_extent = *e;
      if (e->state == ExtentState::kOwned) {
        w.kind = WriteKind::kOwnedInPlace;
        w.target = *e;
      } else {
        w.kind = WriteKind::kCopyOnWrite;
        plan.cow_blocks.push_back(b);
      }
    }
    plan.blocks.push_back(std::move(w));
  }
  return plan;
}

}  // namespace tapmap::engine
