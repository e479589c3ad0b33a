// MapCache: lookup, gaps, splitting on insert/recall, downgrade, stale answers.
#include <catch2/catch.hpp>

#include "tapdisk-map/engine/map_cache.h"

namespace tapmap::engine {
namespace {

constexpr uint32_t kBlock = 65536;

Extent Ext(uint64_t logical_blocks, uint64_t blocks, uint64_t phys_block, ExtentState state, uint64_t gen = 7) {
  Extent e;
  e.logical = logical_blocks * kBlock;
  e.length = blocks * kBlock;
  e.state = state;
  if (state != ExtentState::kHole) {
    e.physical = phys_block * kBlock;
    e.generation = gen;
  }
  return e;
}

TEST_CASE("lookups trim the extent to the block asked for", "[map_cache]") {
  MapCache m(kBlock);
  REQUIRE(m.Insert({Ext(0, 4, 100, ExtentState::kShared), Ext(4, 2, 0, ExtentState::kHole)}, m.epoch()));
  auto e = m.Find(2 * kBlock + 512);
  REQUIRE(e);
  CHECK(e->logical == 2 * kBlock);
  CHECK(e->length == 2 * kBlock);
  CHECK(e->physical == 102 * kBlock);
  CHECK(e->generation == 7);
  auto h = m.Find(5 * kBlock);
  REQUIRE(h);
  CHECK(h->state == ExtentState::kHole);
  CHECK_FALSE(m.Find(6 * kBlock));
}

TEST_CASE("first missing range finds gaps", "[map_cache]") {
  MapCache m(kBlock);
  CHECK(m.FirstMissing(100, 10 * kBlock) == ByteRange{0, 11 * kBlock});
  REQUIRE(m.Insert({Ext(2, 2, 10, ExtentState::kOwned)}, m.epoch()));
  CHECK(m.FirstMissing(2 * kBlock, 2 * kBlock) == std::nullopt);
  CHECK(m.FirstMissing(0, 8 * kBlock) == ByteRange{0, 2 * kBlock});
  CHECK(m.FirstMissing(3 * kBlock, 5 * kBlock) == ByteRange{4 * kBlock, 4 * kBlock});
}

TEST_CASE("recall drops a range, splitting extents, and bumps the epoch", "[map_cache]") {
  MapCache m(kBlock);
  uint64_t e0 = m.epoch();
  REQUIRE(m.Insert({Ext(0, 10, 100, ExtentState::kOwned)}, e0));
  m.Drop(3 * kBlock + 17, kBlock);  // rounds out to blocks 3..4
  CHECK(m.epoch() != e0);
  CHECK(m.Find(2 * kBlock)->length == kBlock);
  CHECK_FALSE(m.Find(3 * kBlock));
  CHECK_FALSE(m.Find(4 * kBlock));
  auto tail = m.Find(5 * kBlock);
  REQUIRE(tail);
  CHECK(tail->physical == 105 * kBlock);
  // An answer fetched before the recall is refused.
  CHECK_FALSE(m.Insert({Ext(3, 2, 100, ExtentState::kOwned)}, e0));
  CHECK_FALSE(m.Find(3 * kBlock));
}

TEST_CASE("downgrade turns owned into shared inside the range only", "[map_cache]") {
  MapCache m(kBlock);
  REQUIRE(m.Insert({Ext(0, 8, 100, ExtentState::kOwned)}, m.epoch()));
  m.Downgrade(2 * kBlock, 2 * kBlock);
  CHECK(m.Find(1 * kBlock)->state == ExtentState::kOwned);
  CHECK(m.Find(2 * kBlock)->state == ExtentState::kShared);
  CHECK(m.Find(3 * kBlock)->state == ExtentState::kShared);
  CHECK(m.Find(4 * kBlock)->state == ExtentState::kOwned);
  CHECK(m.Find(4 * kBlock)->physical == 104 * kBlock);
}

TEST_CASE("Set replaces one block inside a larger extent", "[map_cache]") {
  MapCache m(kBlock);
  REQUIRE(m.Insert({Ext(0, 4, 100, ExtentState::kShared, 3)}, m.epoch()));
  m.Set(Ext(1, 1, 555, ExtentState::kOwned, 9));
  CHECK(m.Find(0)->length == kBlock);
  CHECK(m.Find(kBlock)->physical == 555 * kBlock);
  CHECK(m.Find(kBlock)->generation == 9);
  CHECK(m.Find(2 * kBlock)->physical == 102 * kBlock);
  CHECK(m.extent_count() == 3);
  m.Clear();
  CHECK(m.extent_count() == 0);
}

}  // namespace
}  // namespace tapmap::engine
