// InflightBudget: the per-disk and per-host bounds on request data, the order in
// which waiting requests are granted, and that every grant gives its bytes back.
#include <catch2/catch.hpp>

#include <optional>
#include <vector>

#include "tapdisk-map/blkif/inflight_budget.h"

namespace tapmap::blkif {
namespace {

using Grant = InflightBudget::Grant;

// Records the grants handed to waiters, in order.
struct Waits {
  std::vector<std::pair<int, Grant>> granted;
  std::function<void(Grant)> For(int who) {
    return [this, who](Grant g) { granted.emplace_back(who, std::move(g)); };
  }
  std::vector<int> order() const {
    std::vector<int> out;
    for (const auto& [who, g] : granted) out.push_back(who);
    return out;
  }
};

TEST_CASE("inflight budget: grants within both limits, waits beyond, hands bytes over when returned") {
  auto host = InflightBudget::Create(100);
  auto disk = host->NewAccount(60);
  Waits waits;
  auto g1 = disk->Acquire(40, waits.For(1));
  REQUIRE(g1);
  CHECK(disk->usage().in_flight == 40);
  CHECK(!disk->Acquire(30, waits.For(2)));  // 70 > 60: waits
  CHECK(disk->usage().waits == 1);
  CHECK(waits.granted.empty());
  g1->Reset();
  REQUIRE(waits.order() == std::vector<int>{2});
  CHECK(waits.granted[0].second.bytes() == 30);
  CHECK(disk->usage().in_flight == 30);
  CHECK(host->usage().in_flight == 30);
  waits.granted.clear();  // destroying a grant returns its bytes
  CHECK(disk->usage().in_flight == 0);
  CHECK(host->usage().in_flight == 0);
  CHECK(disk->usage().peak == 40);
}

TEST_CASE("inflight budget: a request larger than a limit runs alone") {
  auto host = InflightBudget::Create(100);
  auto disk = host->NewAccount(10);
  Waits waits;
  auto big = disk->Acquire(50, waits.For(1));
  REQUIRE(big);  // nothing else held: admitted
  CHECK(!disk->Acquire(1, waits.For(2)));
  big.reset();
  CHECK(waits.order() == std::vector<int>{2});
}

TEST_CASE("inflight budget: the host limit binds all disks, in arrival order") {
  auto host = InflightBudget::Create(100);
  auto a = host->NewAccount(100), b = host->NewAccount(100);
  Waits waits;
  auto a1 = a->Acquire(90, waits.For(0));
  REQUIRE(a1);
  CHECK(!b->Acquire(50, waits.For(1)));  // host: 140 > 100
  // A small request that would fit must not pass the waiting large one.
  CHECK(!a->Acquire(5, waits.For(2)));
  a1.reset();
  CHECK(waits.order() == std::vector<int>{1, 2});
  CHECK(host->usage().in_flight == 55);
  CHECK(host->usage().peak == 90);
}

TEST_CASE("inflight budget: a disk at its own limit does not hold up other disks") {
  auto host = InflightBudget::Create(100);
  auto a = host->NewAccount(20), b = host->NewAccount(50);
  Waits waits;
  auto a1 = a->Acquire(20, waits.For(0));
  REQUIRE(a1);
  CHECK(!a->Acquire(10, waits.For(1)));  // a's own limit
  auto b1 = b->Acquire(30, waits.For(2));  // not queued behind a's waiter
  REQUIRE(b1);
  auto b2 = b->Acquire(30, waits.For(3));  // b's own limit: waits
  CHECK(!b2);
  b1.reset();  // b's waiter is granted, a's still waits for a's bytes
  CHECK(waits.order() == std::vector<int>{3});
  a1.reset();
  CHECK(waits.order() == std::vector<int>{3, 1});
}

}  // namespace
}  // namespace tapmap::blkif
