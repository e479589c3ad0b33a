// PendingBlocks: uncommitted copy-on-write blocks and the host-wide pinned-bytes
// total they account for.
#include "tapdisk-map/engine/pending_blocks.h"

#include <catch2/catch.hpp>
#include <cstring>

namespace tapmap::engine {
namespace {

constexpr uint32_t kBs = 65536;

BlockData Content(uint8_t byte) {
  auto b = std::make_shared<pool::AlignedBuffer>(kBs, pool::AlignedBuffer::Uninitialized{});
  std::memset(b->data(), byte, kBs);
  return b;
}

Extent Reserved(uint64_t logical, uint64_t physical, uint64_t generation) {
  return Extent{logical, kBs, physical, generation, ExtentState::kOwned};
}

TEST_CASE("pending blocks: the host-wide pinned total follows every change", "[pending]") {
  auto host = std::make_shared<std::atomic<uint64_t>>(7);  // another volume's share
  {
    PendingBlocks p(kBs, host);
    p.Put(0, Reserved(0, 1 << 20, 5), Content(1));
    p.Put(kBs, Reserved(kBs, 2 << 20, 5), Content(2));
    CHECK(*host == 7 + 2 * kBs);
    p.Put(0, Reserved(0, 3 << 20, 6), Content(3));  // rewritten to a new reservation
    CHECK(*host == 7 + 2 * kBs);
    CHECK(p.size() == 2);
    CHECK(p.Find(0)->extent.physical == 3 << 20);
    CHECK(p.Find(0)->data->data()[0] == 3);

    // A commit of an older reservation of the block does not release it.
    CHECK_FALSE(p.Committed(Reserved(0, 1 << 20, 5)));
    CHECK(p.Committed(Reserved(0, 3 << 20, 6)));
    CHECK(*host == 7 + kBs);
    CHECK(p.Find(0) == nullptr);
    p.Put(5 * kBs, Reserved(5 * kBs, 4 << 20, 7), Content(4));
    CHECK(p.DropFrom(2 * kBs) == 1);  // a shrink to two blocks
    CHECK(*host == 7 + kBs);
  }
  CHECK(*host == 7);  // what was left is given back at destruction
}

TEST_CASE("pending blocks: lost reservations are re-prepared before committing", "[pending]") {
  auto host = std::make_shared<std::atomic<uint64_t>>(0);
  PendingBlocks p(kBs, host);
  for (uint64_t i = 0; i < 4; ++i) p.Put(i * kBs, Reserved(i * kBs, (i + 1) << 20, 9), Content(uint8_t(i)));
  CHECK(p.CommitBatch(3).size() == 3);  // bounded
  CHECK(p.NeedingPrepare().empty());
  p.MarkNeedsPrepare(Reserved(kBs, 2 << 20, 9));
  p.MarkNeedsPrepare(Reserved(2 * kBs, 99, 9));  // not its reservation: unchanged
  CHECK(p.NeedingPrepare() == std::vector<uint64_t>{kBs});
  CHECK(p.CommitBatch(10).size() == 3);  // the lost one is not committed
  p.Reprepared(kBs, Reserved(kBs, 8 << 20, 10));
  CHECK(p.NeedingPrepare().empty());
  CHECK(p.Find(kBs)->extent.physical == 8 << 20);
  p.MarkAllNeedPrepare();
  CHECK(p.NeedingPrepare().size() == 4);
  CHECK(p.CommitBatch(10).empty());
  // An in-place rewrite replaces the pinned content only for the same reservation.
  p.Rewritten(0, Reserved(0, 1 << 20, 9), Content(42));
  CHECK(p.Find(0)->data->data()[0] == 42);
  p.Rewritten(0, Reserved(0, 5, 9), Content(43));
  CHECK(p.Find(0)->data->data()[0] == 42);
  CHECK(p.AnyIn(3 * kBs, 4 * kBs));
  CHECK_FALSE(p.AnyIn(4 * kBs, 9 * kBs));
}

}  // namespace
}  // namespace tapmap::engine
