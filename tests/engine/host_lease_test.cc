// HostLease: the host's own view of its lease (mapserver/doc/leases.md): valid for
// 0.6 T after the sending of an answered renewal; requests held while it is not valid
// go on when it is renewed, fail when it was lost, or fail at their deadline. The
// times are chosen so that nothing depends on how fast the test runs: a lease sent an
// hour ago is expired, one sent now with T = 1 hour is valid.
#include "tapdisk-map/engine/host_lease.h"

#include <catch2/catch.hpp>
#include <optional>

namespace tapmap::engine {
namespace {

using Clock = HostLease::Clock;
constexpr std::chrono::milliseconds kHour{3600 * 1000};

struct Rig {
  boost::asio::io_context io;
  std::shared_ptr<HostLease> lease = std::make_shared<HostLease>(io, Logger("test", LogLevel::kError));
  // Runs the io_context until `result` is set (the waiter ran).
  void RunUntil(const std::optional<Status>& result) {
    while (!result) {
      io.restart();
      io.run_one();
    }
  }
};

TEST_CASE("host lease: none before a login, valid after, fenced once it ran out", "[lease]") {
  Rig r;
  CHECK_FALSE(r.lease->Valid());
  CHECK(r.lease->figures().state == HostLease::State::kNone);
  r.lease->Renewed(Clock::now(), kHour, true);
  CHECK(r.lease->Valid());
  CHECK(r.lease->figures().state == HostLease::State::kValid);
  CHECK(r.lease->figures().lease_ms == kHour.count());
  // An answer to an older renewal does not move the lease back.
  r.lease->Renewed(Clock::now() - 2 * kHour, kHour, true);
  CHECK(r.lease->Valid());
  Rig old;
  old.lease->Renewed(Clock::now() - kHour, kHour, true);  // 0.6 T passed long ago
  CHECK_FALSE(old.lease->Valid());
  CHECK(old.lease->figures().state == HostLease::State::kFenced);
}

TEST_CASE("host lease: a held request goes on when the lease is renewed", "[lease]") {
  Rig r;
  r.lease->Renewed(Clock::now() - kHour, kHour, true);
  std::optional<Status> result;
  r.lease->WhenValid(Clock::now() + kHour, [&](Status s) { result = s; });
  r.io.restart();
  r.io.poll();
  CHECK_FALSE(result);  // still held: the lease is not valid and the deadline is far
  CHECK(r.lease->figures().waiting == 1);
  r.lease->Renewed(Clock::now(), kHour, true);
  r.RunUntil(result);
  CHECK(result->ok());
  CHECK(r.lease->figures().waiting == 0);
}

TEST_CASE("host lease: held requests fail when the lease was lost, not resumed", "[lease]") {
  Rig r;
  r.lease->Renewed(Clock::now() - kHour, kHour, true);
  std::optional<Status> result;
  r.lease->WhenValid(Clock::now() + kHour, [&](Status s) { result = s; });
  r.lease->Renewed(Clock::now(), kHour, /*continued=*/false);
  r.RunUntil(result);
  CHECK(result->code() == StatusCode::kAborted);
  CHECK(r.lease->Valid());  // new requests of the new lease go on
  std::optional<Status> later;
  r.lease->WhenValid(Clock::now() + kHour, [&](Status s) { later = s; });
  r.RunUntil(later);
  CHECK(later->ok());
}

TEST_CASE("host lease: a request not yet started survives a lost lease", "[lease]") {
  Rig r;
  r.lease->Renewed(Clock::now() - kHour, kHour, true);
  std::optional<Status> started, issued;
  r.lease->WhenValid(Clock::now() + kHour, [&](Status s) { started = s; }, /*survives_loss=*/true);
  r.lease->WhenValid(Clock::now() + kHour, [&](Status s) { issued = s; });
  r.lease->Renewed(Clock::now(), kHour, /*continued=*/false);
  r.RunUntil(started);
  r.RunUntil(issued);
  CHECK(started->ok());  // its volume re-checks its own lease
  CHECK(issued->code() == StatusCode::kAborted);
}

TEST_CASE("host lease: a held request fails at its deadline", "[lease]") {
  Rig r;
  r.lease->Renewed(Clock::now() - kHour, kHour, true);
  std::optional<Status> result;
  r.lease->WhenValid(Clock::now(), [&](Status s) { result = s; });
  r.RunUntil(result);
  CHECK(result->code() == StatusCode::kUnavailable);
  CHECK(r.lease->figures().fences == 1);  // the fence was noticed (and logged)
}

}  // namespace
}  // namespace tapmap::engine
