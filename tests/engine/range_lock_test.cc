// RangeLock: overlapping requests wait, disjoint ones do not, FIFO order holds.
#include <catch2/catch.hpp>

#include "tapdisk-map/engine/range_lock.h"

namespace tapmap::engine {
namespace {

TEST_CASE("overlapping ranges are exclusive, disjoint ones concurrent, FIFO", "[range_lock]") {
  RangeLock locks;
  std::vector<int> granted;
  locks.Acquire(0, 100, [&] { granted.push_back(1); });
  locks.Acquire(100, 200, [&] { granted.push_back(2); });  // adjacent: no overlap
  locks.Acquire(50, 150, [&] { granted.push_back(3); });   // waits for 1 and 2
  locks.Acquire(300, 400, [&] { granted.push_back(4); });  // free
  locks.Acquire(140, 160, [&] { granted.push_back(5); });  // overlaps waiting 3: queued behind it
  CHECK(granted == std::vector<int>{1, 2, 4});
  locks.Release(0, 100);
  CHECK(granted == std::vector<int>{1, 2, 4});  // 3 still blocked by 2
  locks.Release(100, 200);
  CHECK(granted == std::vector<int>{1, 2, 4, 3});
  locks.Release(50, 150);
  CHECK(granted == std::vector<int>{1, 2, 4, 3, 5});
  locks.Release(300, 400);
  locks.Release(140, 160);
  CHECK(locks.held() == 0);
}

}  // namespace
}  // namespace tapmap::engine
