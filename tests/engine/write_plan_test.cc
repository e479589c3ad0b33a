// PlanWrite: the per-block decision of the write path, from pending blocks and maps.
#include "tapdisk-map/engine/write_plan.h"

#include <catch2/catch.hpp>

namespace tapmap::engine {
namespace {

constexpr uint32_t kBs = 65536;

BlockData Content() {
  return std::make_shared<pool::AlignedBuffer>(kBs, pool::AlignedBuffer::Uninitialized{});
}

TEST_CASE("write plan: each block's kind follows what this host knows", "[write_plan]") {
  auto host = std::make_shared<std::atomic<uint64_t>>(0);
  PendingBlocks pending(kBs, host);
  MapCache map(kBs);
  // Blocks 0-5: owned, shared, hole, pending (live), pending (lost), owned.
  const Extent owned{0, kBs, 1 << 20, 9, ExtentState::kOwned};
  const Extent shared{kBs, kBs, 2 << 20, 3, ExtentState::kShared};
  const Extent hole{2 * kBs, 3 * kBs, 0, 0, ExtentState::kHole};
  const Extent owned5{5 * kBs, kBs, 6 << 20, 9, ExtentState::kOwned};
  REQUIRE(map.Insert({owned, shared, hole, owned5}, map.epoch()));
  const Extent live{3 * kBs, kBs, 4 << 20, 10, ExtentState::kOwned};
  const Extent lost{4 * kBs, kBs, 5 << 20, 10, ExtentState::kOwned};
  pending.Put(3 * kBs, live, Content());
  pending.Put(4 * kBs, lost, Content());
  pending.MarkNeedsPrepare(lost);

  WritePlan plan = PlanWrite(0, 6 * kBs, kBs, pending, map);
  CHECK_FALSE(plan.map_missing);
  REQUIRE(plan.blocks.size() == 6);
  CHECK(plan.blocks[0].kind == WriteKind::kOwnedInPlace);
  CHECK(plan.blocks[0].target == owned);
  CHECK(plan.blocks[1].kind == WriteKind::kCopyOnWrite);
  CHECK(plan.blocks[1].old_extent == shared);
  CHECK(plan.blocks[2].kind == WriteKind::kCopyOnWrite);
  CHECK(plan.blocks[2].old_extent.state == ExtentState::kHole);
  CHECK(plan.blocks[2].old_extent.length == kBs);  // trimmed to the block
  CHECK(plan.blocks[3].kind == WriteKind::kPendingInPlace);
  CHECK(plan.blocks[3].target == live);
  CHECK(plan.blocks[3].pinned != nullptr);
  CHECK(plan.blocks[4].kind == WriteKind::kCopyOnWrite);
  CHECK(plan.blocks[4].from_pinned);
  CHECK(plan.blocks[5].kind == WriteKind::kOwnedInPlace);
  CHECK(plan.cow_blocks == std::vector<uint64_t>{kBs, 2 * kBs, 4 * kBs});
}

TEST_CASE("write plan: a block whose map is not cached stops the plan", "[write_plan]") {
  auto host = std::make_shared<std::atomic<uint64_t>>(0);
  PendingBlocks pending(kBs, host);
  MapCache map(kBs);
  REQUIRE(map.Insert({Extent{0, kBs, 1 << 20, 9, ExtentState::kShared}}, map.epoch()));
  WritePlan plan = PlanWrite(0, 2 * kBs, kBs, pending, map);
  CHECK(plan.map_missing);
  // A pending block needs no map.
  pending.Put(kBs, Extent{kBs, kBs, 2 << 20, 10, ExtentState::kOwned}, Content());
  plan = PlanWrite(0, 2 * kBs, kBs, pending, map);
  CHECK_FALSE(plan.map_missing);
  CHECK(plan.blocks.size() == 2);
}

}  // namespace
}  // namespace tapmap::engine
