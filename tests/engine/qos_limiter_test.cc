// QosLimiter: token bucket rates, bursts, FIFO order, live changes, zero = unlimited and
// requests larger than a bucket — all on a fake clock (no sleeps, exact times).
#include <catch2/catch.hpp>
#include <vector>

#include "tests/engine/fake_qos_clock.h"

namespace tapmap::engine {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

struct Fixture {
  FakeQosClock clock;
  std::shared_ptr<QosLimiter> limiter = QosLimiter::Create(clock.Make());
  std::vector<int> done;  // ids of admitted requests, in admission order

  void Admit(int id, QosLimiter::Direction dir, uint64_t bytes) {
    limiter->Admit(dir, bytes, [this, id]() { done.push_back(id); });
  }
};

TEST_CASE("zero limits admit everything at once", "[qos]") {
  Fixture f;
  CHECK_FALSE(f.limiter->limited());
  for (int i = 0; i < 1000; ++i)
    f.Admit(i, i % 2 ? QosLimiter::kWrite : QosLimiter::kRead, 1 << 20);
  CHECK(f.done.size() == 1000);
  CHECK(f.limiter->stats().throttled_read_ops == 0);
  CHECK_FALSE(f.clock.due());
}

TEST_CASE("a byte rate holds writes to it, one second's worth of burst by default", "[qos]") {
  Fixture f;
  f.limiter->SetLimits(QosLimits{.write_bps = 1000});
  f.Admit(1, QosLimiter::kWrite, 1000);  // the full bucket
  f.Admit(2, QosLimiter::kWrite, 500);
  f.Admit(3, QosLimiter::kWrite, 500);
  CHECK(f.done == std::vector<int>{1});
  REQUIRE(f.clock.due());
  CHECK(*f.clock.due() - f.clock.now() == milliseconds(500));
  f.clock.Advance(milliseconds(499));
  CHECK(f.done.size() == 1);
  f.clock.Advance(milliseconds(1));
  CHECK(f.done == std::vector<int>{1, 2});
  f.clock.Advance(milliseconds(500));
  CHECK(f.done == std::vector<int>{1, 2, 3});
  QosStats s = f.limiter->stats();
  CHECK(s.throttled_write_ops == 2);
  CHECK(s.wait_us == 500000 + 1000000);
  CHECK(s.queued == 0);
  CHECK(s.peak_queued == 2);
}

TEST_CASE("an ops rate with a burst admits the burst, then one op per interval", "[qos]") {
  Fixture f;
  f.limiter->SetLimits(QosLimits{.iops = 10, .iops_burst = 3});
  for (int i = 0; i < 6; ++i) f.Admit(i, i % 2 ? QosLimiter::kWrite : QosLimiter::kRead, 4096);
  CHECK(f.done.size() == 3);
  for (int step = 1; step <= 3; ++step) {
    f.clock.Advance(milliseconds(99));
    CHECK(f.done.size() == size_t(2 + step));
    f.clock.Advance(milliseconds(1));
    CHECK(f.done.size() == size_t(3 + step));
  }
  // Idle time refills the bucket up to the burst only.
  f.clock.Advance(seconds(10));
  for (int i = 10; i < 14; ++i) f.Admit(i, QosLimiter::kRead, 1);
  CHECK(f.done.size() == 6 + 3);
}

TEST_CASE("waiters of one direction go in arrival order", "[qos]") {
  Fixture f;
  f.limiter->SetLimits(QosLimits{.write_bps = 1000});
  f.Admit(1, QosLimiter::kWrite, 1000);
  f.Admit(2, QosLimiter::kWrite, 800);
  f.Admit(3, QosLimiter::kWrite, 1);  // would fit earlier, but waits behind 2
  f.clock.Advance(milliseconds(10));
  CHECK(f.done == std::vector<int>{1});
  f.clock.Advance(milliseconds(790));
  CHECK(f.done == std::vector<int>{1, 2});
  f.clock.Advance(milliseconds(1));
  CHECK(f.done == std::vector<int>{1, 2, 3});
}

TEST_CASE("reads are not held behind writes held by the write budget", "[qos]") {
  Fixture f;
  f.limiter->SetLimits(QosLimits{.read_iops = 0, .write_bps = 1000});
  f.Admit(1, QosLimiter::kWrite, 1000);
  f.Admit(2, QosLimiter::kWrite, 1000);
  f.Admit(3, QosLimiter::kRead, 1 << 20);
  CHECK(f.done == std::vector<int>{1, 3});
}

TEST_CASE("a total limit is shared by reads and writes", "[qos]") {
  Fixture f;
  f.limiter->SetLimits(QosLimits{.bps = 1000});
  f.Admit(1, QosLimiter::kRead, 600);
  f.Admit(2, QosLimiter::kWrite, 600);
  CHECK(f.done == std::vector<int>{1});
  f.clock.Advance(milliseconds(200));
  CHECK(f.done == std::vector<int>{1, 2});
}

TEST_CASE("a request larger than the bucket goes when the bucket is full, and its debt is paid",
          "[qos]") {
  Fixture f;
  f.limiter->SetLimits(QosLimits{.write_bps = 1000});
  f.Admit(1, QosLimiter::kWrite, 5000);
  CHECK(f.done == std::vector<int>{1});
  f.Admit(2, QosLimiter::kWrite, 1);     // the bucket is 4000 in debt: 4.001 s
  f.Admit(3, QosLimiter::kWrite, 5000);  // then needs a full bucket again
  f.clock.Advance(milliseconds(4000));
  CHECK(f.done.size() == 1);
  f.clock.Advance(milliseconds(1));
  CHECK(f.done == std::vector<int>{1, 2});
  f.clock.Advance(milliseconds(999));
  CHECK(f.done.size() == 2);
  f.clock.Advance(milliseconds(1));
  CHECK(f.done == std::vector<int>{1, 2, 3});
}

TEST_CASE("live changes apply to the waiters at once", "[qos]") {
  Fixture f;
  f.limiter->SetLimits(QosLimits{.write_iops = 1});
  f.Admit(1, QosLimiter::kWrite, 0);
  f.Admit(2, QosLimiter::kWrite, 0);
  f.Admit(3, QosLimiter::kWrite, 0);
  CHECK(f.done == std::vector<int>{1});
  SECTION("a faster rate brings the wake-up forward") {
    f.limiter->SetLimits(QosLimits{.write_iops = 10, .write_iops_burst = 1});
    REQUIRE(f.clock.due());
    CHECK(*f.clock.due() - f.clock.now() == milliseconds(100));
    f.clock.Advance(milliseconds(100));
    CHECK(f.done == std::vector<int>{1, 2});
    f.clock.Advance(milliseconds(100));
    CHECK(f.done == std::vector<int>{1, 2, 3});
  }
  SECTION("zero releases every waiter and stops limiting") {
    f.limiter->SetLimits(QosLimits{});
    CHECK(f.done == std::vector<int>{1, 2, 3});
    CHECK_FALSE(f.limiter->limited());
    CHECK(f.limiter->stats().queued == 0);
  }
}

TEST_CASE("limits parse from JSON and KEY=N lists, naming what is wrong", "[qos]") {
  auto j = QosLimitsFromJson(nlohmann::json{{"write_bps", 20971520}, {"read_iops", 100}});
  REQUIRE(j.ok());
  CHECK(j->write_bps == 20971520);
  CHECK(j->read_iops == 100);
  CHECK(QosLimitsFromJson(QosLimitsToJson(*j)).value() == *j);
  auto partial = QosLimitsFromJson(nlohmann::json{{"iops", 5}}, *j);
  CHECK((partial->iops == 5 && partial->write_bps == 20971520));
  CHECK_FALSE(QosLimitsFromJson(nlohmann::json{{"write_bsp", 1}}).ok());
  CHECK_FALSE(QosLimitsFromJson(nlohmann::json{{"iops", -1}}).ok());
  CHECK_FALSE(QosLimitsFromJson(nlohmann::json{{"iops", "5"}}).ok());
  auto t = ParseQosLimits("write_bps=1048576,iops_burst=7");
  REQUIRE(t.ok());
  CHECK((t->write_bps == 1048576 && t->iops_burst == 7));
  CHECK_FALSE(ParseQosLimits("write_bps").ok());
  CHECK_FALSE(ParseQosLimits("write_bps=-1").ok());
  CHECK_FALSE(ParseQosLimits("bogus=1").ok());
}

}  // namespace
}  // namespace tapmap::engine
