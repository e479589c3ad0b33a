// CommitScheduler: which cycles run and which flushes each answers.
#include "tapdisk-map/engine/commit_scheduler.h"

#include <catch2/catch.hpp>

namespace tapmap::engine {
namespace {

// A flush whose completion the test can see.
struct Flush {
  int calls = 0;
  IoDone done() {
    return [this](Status) { ++calls; };
  }
};

void Run(std::vector<IoDone> dones) {
  for (auto& d : dones) d(Status::Ok());
}

TEST_CASE("commit scheduler: a flush is answered by a cycle that started after it", "[commit]") {
  CommitScheduler s;
  CHECK_FALSE(s.TryStart(false));  // nothing to do
  auto c1 = s.TryStart(true);
  REQUIRE(c1);
  CHECK(s.running());
  CHECK_FALSE(s.TryStart(true));  // one at a time
  Flush f;
  s.AddFlush(f.done());  // arrives while cycle 1 runs: cycle 1 does not cover it
  auto ready = s.Succeeded(*c1, true);
  CHECK(ready.empty());
  CHECK(s.flush_waiting());
  auto c2 = s.TryStart(false);  // a waiting flush is work enough
  REQUIRE(c2);
  CHECK(*c2 == *c1 + 1);
  Run(s.Succeeded(*c2, true));
  CHECK(f.calls == 1);
  CHECK_FALSE(s.flush_waiting());
}

TEST_CASE("commit scheduler: a cycle that left blocks behind answers no flush", "[commit]") {
  CommitScheduler s;
  Flush f;
  s.AddFlush(f.done());
  auto c1 = s.TryStart(true);
  REQUIRE(c1);
  CHECK(s.Succeeded(*c1, false).empty());  // batch was capped: more blocks pending
  auto c2 = s.TryStart(true);
  REQUIRE(c2);
  Run(s.Succeeded(*c2, true));
  CHECK(f.calls == 1);
}

TEST_CASE("commit scheduler: a failed cycle fails the flushes it would have answered", "[commit]") {
  CommitScheduler s;
  Flush early, late;
  s.AddFlush(early.done());
  auto c1 = s.TryStart(true);
  REQUIRE(c1);
  s.AddFlush(late.done());
  auto failed = s.Failed(*c1);
  REQUIRE(failed.size() == 1);
  Run(std::move(failed));
  CHECK(early.calls == 1);
  CHECK(late.calls == 0);
  CHECK_FALSE(s.running());
  auto all = s.TakeAll();
  CHECK(all.size() == 1);
  CHECK_FALSE(s.flush_waiting());
}

TEST_CASE("commit scheduler: the lazy timer is armed once until it fires", "[commit]") {
  CommitScheduler s;
  CHECK(s.ArmTimer());
  CHECK_FALSE(s.ArmTimer());
  s.TimerFired();
  CHECK(s.ArmTimer());
}

}  // namespace
}  // namespace tapmap::engine
