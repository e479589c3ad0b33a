// LeaseTable: host leases (login, resume, supersede, renew, expiry candidates) and
// openers (by volume, the rw lease holder and its epoch, reclaimable ones).
#include "mapserver/lease_table.h"

#include <catch2/catch.hpp>

namespace tapmap::mapserver {
namespace {

Opener Make(LeaseTable& t, const std::string& volume, bool writable, uint64_t epoch = kNoWriter,
            HostLeaseId holder = 0) {
  Opener o;
  o.id = t.NextId();
  o.volume = volume;
  o.writable = writable;
  o.lease_epoch = epoch;
  o.holder = holder;
  o.attached = true;
  return o;
}

kj::TimePoint At(int64_t ms) { return kj::origin<kj::TimePoint>() + ms * kj::MILLISECONDS; }

TEST_CASE("lease table: openers, the writer and its epoch", "[lease]") {
  LeaseTable t;
  OpenerId reader = t.Add(Make(t, "vm", false)).id;
  CHECK(t.WriterOf("vm") == nullptr);
  CHECK(t.WriterEpochOf("vm") == kNoWriter);
  OpenerId writer = t.Add(Make(t, "vm", true, 42)).id;
  OpenerId other = t.Add(Make(t, "other", false)).id;
  CHECK(reader != writer);
  CHECK(t.size() == 3);
  REQUIRE(t.WriterOf("vm") != nullptr);
  CHECK(t.WriterOf("vm")->id == writer);
  CHECK(t.WriterEpochOf("vm") == 42);
  CHECK(t.OpenersOf("vm").size() == 2);
  CHECK(t.Find(other)->volume == "other");
  CHECK(t.Remove(writer));
  CHECK_FALSE(t.Remove(writer));  // released once
  CHECK(t.WriterEpochOf("vm") == kNoWriter);
  CHECK(t.Find(writer) == nullptr);
  // Ids are never reused.
  CHECK(t.NextId() > other);
}

TEST_CASE("lease table: a host instance logs in, resumes, is superseded by a restart", "[lease]") {
  LeaseTable t;
  bool resumed = true;
  std::vector<HostLeaseId> superseded;
  HostLeaseId a = t.Login("h1", 7, At(0), &resumed, &superseded);
  CHECK_FALSE(resumed);
  CHECK(superseded.empty());
  // The same instance again (a reconnection): the same lease, renewed.
  HostLeaseId again = t.Login("h1", 7, At(100), &resumed, &superseded);
  CHECK(resumed);
  CHECK(again == a);
  CHECK(t.FindHost(a)->renewed == At(100));
  // Another host, and a tool session of h1 (instance 0): neither supersedes anything.
  HostLeaseId b = t.Login("h2", 9, At(100), &resumed, &superseded);
  HostLeaseId tool = t.Login("h1", 0, At(100), &resumed, &superseded);
  CHECK_FALSE(resumed);
  CHECK(superseded.empty());
  CHECK(tool != a);
  CHECK_FALSE(t.FindHost(tool)->resumable());
  // A new instance of h1 (tapdisk-map restarted): the old one is named for expiry.
  HostLeaseId a2 = t.Login("h1", 8, At(200), &resumed, &superseded);
  CHECK_FALSE(resumed);
  REQUIRE(superseded.size() == 1);
  CHECK(superseded[0] == a);
  CHECK(a2 != a);
  (void)b;
}

TEST_CASE("lease table: renewals, blocklisting and expiry candidates", "[lease]") {
  LeaseTable t;
  bool resumed = false;
  std::vector<HostLeaseId> superseded;
  HostLeaseId a = t.Login("h1", 1, At(0), &resumed, &superseded);
  HostLeaseId b = t.Login("h2", 2, At(0), &resumed, &superseded);
  CHECK(t.Renew(a, At(500)));
  CHECK(t.RenewedBefore(At(400)) == std::vector<HostLeaseId>{b});
  t.FindHost(a)->blocklisted = true;
  CHECK_FALSE(t.Renew(a, At(900)));  // refused: it is left to expire
  CHECK(t.FindHost(a)->renewed == At(500));
  // A blocklisted instance logging in again is not resumed: a fresh record.
  HostLeaseId a_again = t.Login("h1", 1, At(950), &resumed, &superseded);
  CHECK_FALSE(resumed);
  CHECK(a_again != a);
  t.EraseHost(b);
  CHECK_FALSE(t.Renew(b, At(1000)));  // unknown now
}

TEST_CASE("lease table: reclaimable openers of an instance, orphans first", "[lease]") {
  LeaseTable t;
  bool resumed = false;
  std::vector<HostLeaseId> superseded;
  HostLeaseId a = t.Login("h1", 1, At(0), &resumed, &superseded);
  HostLeaseId b = t.Login("h2", 2, At(0), &resumed, &superseded);
  OpenerId attached = t.Add(Make(t, "vm", false, kNoWriter, a)).id;
  CHECK(t.FindReclaimable(a, "vm", false)->id == attached);  // a stale connection's
  Opener orphan = Make(t, "vm", false, kNoWriter, a);
  orphan.attached = false;
  OpenerId orphan_id = t.Add(orphan).id;
  CHECK(t.FindReclaimable(a, "vm", false)->id == orphan_id);
  CHECK(t.FindReclaimable(a, "vm", true) == nullptr);   // other mode
  CHECK(t.FindReclaimable(b, "vm", false) == nullptr);  // other instance
  t.Find(orphan_id)->revoked = true;
  CHECK(t.FindReclaimable(a, "vm", false)->id == attached);  // revoked ones are not
  CHECK(t.OpenersHeldBy(a).size() == 2);
  CHECK(t.OpenersHeldBy(b).empty());
}

}  // namespace
}  // namespace tapmap::mapserver
