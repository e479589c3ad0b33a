// The pieces under the mapserver's metadata in RADOS, on a real one-node Ceph: the cls
// lock's fencing (assert_locked, expiry, renewal, blocklisting) and the journal
// (format, append through a MetadataStore, restore into an empty directory, a damaged
// record refused). mapserver/doc/metadata_rados.md.
#include <sys/stat.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <map>
#include <thread>

#include "mapserver/metadata_store.h"
#include "mapserver/rados_metadata_journal.h"
#include "protocol/pool_location.h"
#include "rados/exclusive_lock.h"
#include "tests/rados/ceph_cluster.h"

namespace tapmap::mapserver {
namespace {

using tapmap::testing::CephCluster;
using namespace std::chrono_literals;

std::unique_ptr<rados::RadosCluster> Connect(const CephCluster& cluster) {
  auto location = protocol::ParsePoolLocation(cluster.Location("jt", 5));
  REQUIRE(location.ok());
  auto connected = rados::RadosCluster::Connect(location->rados);
  INFO(connected.status().ToString());
  REQUIRE(connected.ok());
  return std::move(*connected);
}

// A write to `oid` guarded by `lock`: its librados return code.
int GuardedWrite(rados::RadosCluster& client, rados::RadosExclusiveLock& lock, const std::string& value) {
  librados::ObjectWriteOperation op;
  lock.AssertHeld(&op);
  librados::bufferlist bl;
  bl.append(value);
  op.omap_set({{"k", bl}});
  return client.ioctx().operate(lock.oid(), &op);
}

TEST_CASE("cls lock: only the live holder's guarded writes land, and a blocklisted client is refused everywhere") {
  CephCluster cluster;
  auto a = Connect(cluster);
  auto b = Connect(cluster);
  rados::RadosExclusiveLock lock_a(a->ioctx(), "jt.lock", "l", "cookie-a", 2s);
  rados::RadosExclusiveLock lock_b(b->ioctx(), "jt.lock", "l", "cookie-b", 2s);
  REQUIRE(lock_a.TryAcquire().ok());
  CHECK(GuardedWrite(*a, lock_a, "a1") == 0);
  CHECK(lock_b.TryAcquire().code() == StatusCode::kBusy);
  CHECK(GuardedWrite(*b, lock_b, "b1") == -EBUSY);  // not the holder
  auto holder = lock_b.CurrentHolder();
  REQUIRE(holder.ok());
  REQUIRE(holder->has_value());
  CHECK((*holder)->cookie == "cookie-a");
  CHECK(!(*holder)->address.empty());
  // Renewed, it outlives its duration.
  for (int i = 0; i < 4; ++i) {
    std::this_thread::sleep_for(700ms);
    REQUIRE(lock_a.Renew().ok());
  }
  CHECK(GuardedWrite(*a, lock_a, "a2") == 0);
  // Not renewed: expired at the OSD, so even with nobody else holding it a's guarded
  // write fails; then b takes it and a cannot renew.
  std::this_thread::sleep_for(2500ms);
  CHECK(GuardedWrite(*a, lock_a, "a3") == -EBUSY);
  REQUIRE(lock_b.TryAcquire().ok());
  CHECK(!lock_a.Renew().ok());
  CHECK(GuardedWrite(*b, lock_b, "b2") == 0);
  // Blocklisted: a's plain writes to any object fail too.
  REQUIRE(rados::BlocklistClient(b->rados(), (*holder)->address, 600).ok());
  librados::bufferlist bl;
  bl.append("x");
  int r = a->ioctx().write_full("jt.other", bl);
  CHECK(r < 0);
  std::map<std::string, librados::bufferlist> vals;
  REQUIRE(b->ioctx().omap_get_vals_by_keys("jt.lock", {"k"}, &vals) == 0);
  CHECK(vals["k"].to_str() == "b2");
}

TEST_CASE("Journal: format, appends through the store, restore into an empty directory, damage refused") {
  CephCluster cluster;
  auto client = Connect(cluster);
  Logger logger("test", LogLevel::kWarning);
  const std::string dir = cluster.path("active");
  {
    REQUIRE(::mkdir(dir.c_str(), 0700) == 0);
    auto store = MetadataStore::Open(dir);
    REQUIRE(store.ok());
    auto txn = (*store)->BeginWrite();
    txn->PutMetaU64("format-marker", 1);
    txn->Commit();
  }
  RadosMetadataJournal journal(*client, "jt", logger);
  REQUIRE(journal.Format(dir, false).ok());
  CHECK(journal.Format(dir, false).code() == StatusCode::kAlreadyExists);
  rados::RadosExclusiveLock lock(client->ioctx(), journal.journal_oid(), RadosMetadataJournal::kLockName,
                                 "test", 10s);
  REQUIRE(lock.TryAcquire().ok());
  {
    auto store = MetadataStore::Open(dir);
    REQUIRE(store.ok());
    journal.Attach(store->get(), &lock, /*checkpoint_every=*/3);
    (*store)->SetJournal(&journal);
    for (uint64_t i = 0; i < 8; ++i) {  // two checkpoints, then two records after
      auto txn = (*store)->BeginWrite();
      txn->PutMetaU64("k" + std::to_string(i), i * 10);
      if (i == 5) txn->Delete(Table::kMeta, "k0");
      txn->Commit();
    }
    CHECK(journal.next_seq() == 9);
  }
  RadosMetadataJournal reader(*client, "jt", logger);
  const std::string fresh = cluster.path("fresh");
  REQUIRE(reader.Restore(fresh).ok());
  CHECK(reader.next_seq() == 9);
  {
    auto store = MetadataStore::Open(fresh);
    REQUIRE(store.ok());
    auto txn = (*store)->BeginRead();
    CHECK(txn->GetMetaU64("format-marker", 0) == 1);
    CHECK(txn->GetMetaU64("k0", 999) == 999);  // deleted
    for (uint64_t i = 1; i < 8; ++i) CHECK(txn->GetMetaU64("k" + std::to_string(i), 999) == i * 10);
  }
  // A damaged record where the next one would be: the restore refuses it.
  JournalRecord next{9, {JournalOp{Table::kMeta, "k9", std::string("x")}}};
  std::string bytes = EncodeJournalRecord(next);
  bytes[bytes.size() - 1] ^= 1;
  librados::bufferlist bl;
  bl.append(bytes);
  REQUIRE(client->ioctx().omap_set(journal.journal_oid(), {{JournalRecordKey(9), bl}}) == 0);
  RadosMetadataJournal damaged(*client, "jt", logger);
  Status s = damaged.Restore(cluster.path("again"));
  CHECK(s.code() == StatusCode::kCorruption);
  CHECK(s.message().find("checksum") != std::string::npos);
}

}  // namespace
}  // namespace tapmap::mapserver
