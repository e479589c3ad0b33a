// RealXenStore against a private real xenstored (tests/support/xenstored_instance.h).
#include <catch2/catch.hpp>

#include <poll.h>

#include <chrono>
#include <thread>

#include "tests/support/xenstored_instance.h"

namespace tapmap::xen {
namespace {

using testing::XenstoredInstance;

std::unique_ptr<XenstoredInstance> StartDaemon() {
  auto xs = XenstoredInstance::Start();
  if (!xs.ok()) FAIL(xs.status().ToString());
  return std::move(*xs);
}

std::unique_ptr<RealXenStore> Client(const XenstoredInstance& xs) {
  auto c = xs.Connect();
  if (!c.ok()) FAIL(c.status().ToString());
  return std::move(*c);
}

// Polls watch_fd until `want` events with `token` arrived (or 10 s pass).
std::vector<WatchEvent> WaitEvents(XenStore& store, const std::string& token, size_t want) {
  std::vector<WatchEvent> got;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (got.size() < want && std::chrono::steady_clock::now() < deadline) {
    pollfd p{store.watch_fd(), POLLIN, 0};
    poll(&p, 1, 100);
    for (auto& e : store.TakeWatchEvents()) {
      if (e.token == token) got.push_back(e);
    }
  }
  return got;
}

TEST_CASE("xenstore: read, write, directory, remove and permissions") {
  auto daemon = StartDaemon();
  auto xs = Client(*daemon);
  REQUIRE(xs->Write(kNoTransaction, "/local/domain/0/backend/vbd/1/51712/state", "1").ok());
  CHECK(*xs->Read(kNoTransaction, "/local/domain/0/backend/vbd/1/51712/state") == "1");
  auto dir = xs->Directory(kNoTransaction, "/local/domain/0/backend/vbd/1");
  REQUIRE(dir.ok());
  CHECK(*dir == std::vector<std::string>{"51712"});
  CHECK(xs->Read(kNoTransaction, "/nope").status().code() == StatusCode::kNotFound);
  CHECK(xs->Directory(kNoTransaction, "/nope").status().code() == StatusCode::kNotFound);
  REQUIRE(xs->Mkdir(kNoTransaction, "/empty").ok());
  CHECK(xs->Directory(kNoTransaction, "/empty")->empty());
  REQUIRE(xs->SetPermissions(kNoTransaction, "/empty",
                             {{0, XenStorePermission::kNone}, {3, XenStorePermission::kRead}})
              .ok());
  REQUIRE(xs->Write(kNoTransaction, "/n", "42").ok());
  CHECK(*ReadUnsigned(*xs, kNoTransaction, "/n") == 42);
  REQUIRE(xs->Write(kNoTransaction, "/n", "4x").ok());
  CHECK(ReadUnsigned(*xs, kNoTransaction, "/n").status().code() == StatusCode::kInvalidArgument);
  REQUIRE(xs->Remove(kNoTransaction, "/local/domain/0/backend").ok());
  CHECK(xs->Read(kNoTransaction, "/local/domain/0/backend/vbd/1/51712/state").status().code() ==
        StatusCode::kNotFound);
  CHECK(xs->Remove(kNoTransaction, "/local/domain/0/backend").ok());  // absent is fine
}

TEST_CASE("xenstore: watches fire across connections on the pollable fd") {
  auto daemon = StartDaemon();
  auto watcher = Client(*daemon);
  auto writer = Client(*daemon);
  REQUIRE(watcher->Watch("/local/domain/0/backend/vbd", "tok").ok());
  CHECK(WaitEvents(*watcher, "tok", 1).size() == 1);  // the initial firing
  REQUIRE(writer->Write(kNoTransaction, "/local/domain/0/backend/vbd/2/768/state", "1").ok());
  auto events = WaitEvents(*watcher, "tok", 1);
  REQUIRE(events.size() == 1);
  CHECK(events[0].path.rfind("/local/domain/0/backend/vbd/2", 0) == 0);
  REQUIRE(watcher->Unwatch("/local/domain/0/backend/vbd", "tok").ok());
}

TEST_CASE("xenstore: a conflicting transaction is redone by RunTransaction") {
  auto daemon = StartDaemon();
  auto a = Client(*daemon);
  auto b = Client(*daemon);
  REQUIRE(a->Write(kNoTransaction, "/counter", "0").ok());
  int attempts = 0;
  Status s = RunTransaction(*a, [&](TransactionId tx) -> Status {
    ++attempts;
    auto v = ReadUnsigned(*a, tx, "/counter");
    if (!v.ok()) return v.status();
    if (attempts == 1) {
      // Another writer changes the node under our first transaction.
      TAPMAP_RETURN_IF_ERROR(b->Write(kNoTransaction, "/counter", "10"));
    }
    return a->Write(tx, "/counter", std::to_string(*v + 1));
  });
  REQUIRE(s.ok());
  CHECK(attempts == 2);
  CHECK(*a->Read(kNoTransaction, "/counter") == "11");

  // Direct use: EndTransaction reports the conflict as such.
  auto tx = a->StartTransaction();
  REQUIRE(tx.ok());
  REQUIRE(a->Read(*tx, "/counter").ok());
  REQUIRE(a->Write(*tx, "/counter", "x").ok());
  REQUIRE(b->Write(kNoTransaction, "/counter", "y").ok());
  Status end = a->EndTransaction(*tx, false);
  CHECK(IsTransactionConflict(end));
  CHECK(*a->Read(kNoTransaction, "/counter") == "y");
}

TEST_CASE("xenstore harness: instances are independent and cleaned up") {
  std::string dir;
  {
    auto d1 = StartDaemon();
    auto d2 = StartDaemon();
    dir = d1->dir();
    auto c1 = Client(*d1);
    REQUIRE(c1->Write(kNoTransaction, "/only-in-1", "1").ok());
    auto c2 = Client(*d2);
    CHECK(c2->Read(kNoTransaction, "/only-in-1").status().code() == StatusCode::kNotFound);
    CHECK(d1->Running());
  }
  CHECK(access(dir.c_str(), F_OK) != 0);
}

}  // namespace
}  // namespace tapmap::xen
