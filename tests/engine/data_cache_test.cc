// DataCache: keys include the generation, misses are single-flight, 2Q keeps a hot
// set through a scan, Put/Invalidate win over loads in flight.
#include <catch2/catch.hpp>
#include <cstring>

#include "tapdisk-map/engine/data_cache.h"

namespace tapmap::engine {
namespace {

constexpr uint32_t kBlock = 4096;

BlockData MakeBlock(uint8_t fill) {
  auto b = std::make_shared<pool::AlignedBuffer>(kBlock);
  std::memset(b->data(), fill, kBlock);
  return b;
}

BlockKey Key(uint64_t block, uint64_t gen = 1) { return BlockKey{0, block * kBlock, gen}; }

// A loader that completes immediately with a block filled with `fill`, counting loads.
struct CountingLoader {
  int loads = 0;
  DataCache::Loader Make(uint8_t fill) {
    return [this, fill](DataCache::LoadDone loaded) {
      loads++;
      loaded(MakeBlock(fill));
    };
  }
};

uint8_t GetFill(DataCache& cache, const BlockKey& key, DataCache::Loader loader, bool* hit = nullptr) {
  uint8_t fill = 0;
  bool got = false;
  cache.Get(key, loader, [&](Result<BlockData> b, DataCache::GetInfo info) {
    REQUIRE(b.ok());
    fill = (*b)->data()[0];
    if (hit) *hit = info.hit;
    got = true;
  });
  REQUIRE(got);
  return fill;
}

TEST_CASE("a cached block is served without loading again", "[data_cache]") {
  DataCache cache(16 * kBlock, kBlock);
  CountingLoader loader;
  bool hit = true;
  CHECK(GetFill(cache, Key(1), loader.Make(7), &hit) == 7);
  CHECK_FALSE(hit);
  CHECK(GetFill(cache, Key(1), loader.Make(9), &hit) == 7);
  CHECK(hit);
  CHECK(loader.loads == 1);
  auto c = cache.counters();
  CHECK(c.hits == 1);
  CHECK(c.misses == 1);
  CHECK(c.bytes == kBlock);
}

TEST_CASE("the generation is part of the key", "[data_cache]") {
  DataCache cache(16 * kBlock, kBlock);
  CountingLoader loader;
  CHECK(GetFill(cache, Key(1, 1), loader.Make(1)) == 1);
  // Same physical block, re-allocated: new generation, new content.
  CHECK(GetFill(cache, Key(1, 2), loader.Make(2)) == 2);
  CHECK(GetFill(cache, Key(1, 1), loader.Make(3)) == 1);
  CHECK(loader.loads == 2);
  // Another pool, same offset and generation: a different block.
  CHECK(GetFill(cache, BlockKey{1, kBlock, 1}, loader.Make(4)) == 4);
}

TEST_CASE("concurrent misses on one block share one load", "[data_cache]") {
  DataCache cache(16 * kBlock, kBlock);
  int loads = 0;
  DataCache::LoadDone pending;
  auto loader = [&](DataCache::LoadDone loaded) {
    loads++;
    pending = std::move(loaded);  // completes later
  };
  std::vector<uint8_t> fills;
  int hits = 0;
  for (int i = 0; i < 5; i++) {
    cache.Get(Key(3), loader, [&](Result<BlockData> b, DataCache::GetInfo info) {
      REQUIRE(b.ok());
      fills.push_back((*b)->data()[0]);
      if (info.hit) hits++;
    });
  }
  CHECK(loads == 1);
  CHECK(fills.empty());
  pending(MakeBlock(42));
  CHECK(fills == std::vector<uint8_t>(5, 42));
  CHECK(hits == 4);  // only the first caller paid for the read
  CHECK(cache.counters().coalesced == 4);
  // And it is cached now.
  CountingLoader again;
  CHECK(GetFill(cache, Key(3), again.Make(0)) == 42);
  CHECK(again.loads == 0);
}

TEST_CASE("a failed load reaches every waiter and is not cached", "[data_cache]") {
  DataCache cache(16 * kBlock, kBlock);
  DataCache::LoadDone pending;
  auto loader = [&](DataCache::LoadDone loaded) { pending = std::move(loaded); };
  int errors = 0;
  for (int i = 0; i < 3; i++) {
    cache.Get(Key(5), loader, [&](Result<BlockData> b, DataCache::GetInfo) {
      if (!b.ok() && b.status().code() == StatusCode::kIoError) errors++;
    });
  }
  pending(Status::IoError("disk on fire"));
  CHECK(errors == 3);
  CountingLoader next;
  CHECK(GetFill(cache, Key(5), next.Make(5)) == 5);
  CHECK(next.loads == 1);
}

TEST_CASE("Put or Invalidate during a load keeps the stale load out of the cache", "[data_cache]") {
  DataCache cache(16 * kBlock, kBlock);
  DataCache::LoadDone pending;
  auto loader = [&](DataCache::LoadDone loaded) { pending = std::move(loaded); };
  uint8_t waiter_fill = 0;
  cache.Get(Key(6), loader, [&](Result<BlockData> b, DataCache::GetInfo) { waiter_fill = (*b)->data()[0]; });
  cache.Put(Key(6), MakeBlock(99));  // the host wrote the block meanwhile
  pending(MakeBlock(1));             // the old content arrives late
  CHECK(waiter_fill == 1);           // the concurrent reader may see the old data
  CountingLoader next;
  CHECK(GetFill(cache, Key(6), next.Make(0)) == 99);  // but the cache has the new
  cache.Invalidate(Key(6));
  CHECK(GetFill(cache, Key(6), next.Make(3)) == 3);
  CHECK(next.loads == 1);
}

TEST_CASE("capacity is respected and evictions are counted", "[data_cache]") {
  DataCache cache(8 * kBlock, kBlock);
  CountingLoader loader;
  for (uint64_t b = 0; b < 100; b++) GetFill(cache, Key(b), loader.Make(uint8_t(b)));
  auto c = cache.counters();
  CHECK(c.bytes == 8 * kBlock);
  CHECK(c.evictions == 92);
  CHECK(c.capacity_bytes == 8 * kBlock);
}

TEST_CASE("2Q: a one-pass scan does not flush blocks referenced twice", "[data_cache]") {
  // 64 blocks of capacity: A1in holds 16, Am the rest.
  DataCache cache(64 * kBlock, kBlock);
  CountingLoader loader;
  // A hot working set of 32 blocks, each referenced, evicted from A1in by others and
  // referenced again (so it is remembered in A1out and promoted to Am).
  for (uint64_t b = 0; b < 32; b++) GetFill(cache, Key(b), loader.Make(1));
  for (uint64_t b = 1000; b < 1064; b++) GetFill(cache, Key(b), loader.Make(2));  // pushes hot set out
  for (uint64_t b = 0; b < 32; b++) GetFill(cache, Key(b), loader.Make(1));       // ghost hits -> Am
  // A long scan of blocks touched once.
  for (uint64_t b = 5000; b < 6000; b++) GetFill(cache, Key(b), loader.Make(3));
  // The hot set survived the scan.
  int before = loader.loads;
  for (uint64_t b = 0; b < 32; b++) GetFill(cache, Key(b), loader.Make(1));
  CHECK(loader.loads == before);
}

}  // namespace
}  // namespace tapmap::engine
