// fsck finds each kind of metadata damage (injected directly into LMDB).
#include <catch2/catch.hpp>

#include "mapserver/free_space.h"
#include "mapserver/metadata_format.h"
#include "store_fixture.h"

namespace tapmap::mapserver {
namespace {

using testing::StoreFixture;
constexpr uint64_t kBs = 4096;

// A store with a base volume, a snapshot and a clone that diverged.
void Populate(StoreFixture& f) {
  auto& s = f.store();
  REQUIRE(s.Create("v", 600 * kBs).ok());
  auto e = s.PrepareWrite(1, "v", {ByteRange{0, 600 * kBs}}, 0);
  REQUIRE(e.ok());
  REQUIRE(s.Commit(1, "v", *e).ok());
  REQUIRE(s.Snapshot("v", "s").ok());
  REQUIRE(s.Clone("s", "c").ok());
  auto w = s.PrepareWrite(2, "c", {ByteRange{0, 10 * kBs}}, 0);
  REQUIRE(w.ok());
  REQUIRE(s.Commit(2, "c", *w).ok());
  f.RequireClean();
}

bool Reports(const FsckReport& r, const std::string& needle) {
  for (const auto& p : r.problems) {
    if (p.find(needle) != std::string::npos) return true;
  }
  return false;
}

template <typename Fn>
FsckReport Damage(StoreFixture& f, Fn&& fn) {
  auto txn = f.store().metadata().BeginWrite();
  fn(txn.get());
  txn->Commit();
  return f.Fsck();
}

VolumeRecord Record(Txn* txn, const std::string& name) {
  auto bytes = txn->Get(Table::kVolumes, name);
  REQUIRE(bytes.has_value());
  return *DecodeVolumeRecord(*bytes);
}

TEST_CASE("fsck: a clean store has a summary") {
  StoreFixture f;
  Populate(f);
  FsckReport r = f.Fsck();
  CHECK(r.clean());
  CHECK(r.volumes == 3);
  CHECK(r.version_sets == 1);
  CHECK(r.used_blocks == 610);
  // Lazy refcounts: only blocks of c's copied leaf (256 slots, 10 overwritten) are
  // referenced from two leaves; the rest are shared through shared nodes.
  CHECK(r.shared_blocks == 246);
  CHECK(r.free_blocks + r.used_blocks == r.total_blocks);
  CHECK(r.Summary().rfind("clean: 3 volumes", 0) == 0);
}

TEST_CASE("fsck: leaked blocks") {
  StoreFixture f;
  Populate(f);
  auto r = Damage(f, [](Txn* txn) { FreeSpace(txn).Take(3000, 5); });
  CHECK_FALSE(r.clean());
  CHECK(Reports(r, "blocks leaked"));
  CHECK(r.Summary().rfind("NOT CLEAN", 0) == 0);
}

TEST_CASE("fsck: a block both free and in use") {
  StoreFixture f;
  Populate(f);
  auto r = Damage(f, [](Txn* txn) {
    // Block 0 belongs to v (and s, c); put it into the free table as well.
    txn->Put(Table::kFree, EncodeKey64(0), EncodeU64(1));
    txn->PutMetaU64(kMetaFreeBlocks, FreeSpace::FreeBlocks(txn) + 1);
  });
  CHECK(Reports(r, "both free and in use"));
}

TEST_CASE("fsck: wrong block refcount") {
  StoreFixture f;
  Populate(f);
  auto r = Damage(f, [](Txn* txn) { txn->Put(Table::kBlockRefs, EncodeKey64(5), EncodeU32(7)); });
  CHECK(Reports(r, "block 5 refcount 7"));
}

TEST_CASE("fsck: wrong node refcount and a leaked node") {
  StoreFixture f;
  Populate(f);
  SECTION("refcount") {
    auto r = Damage(f, [](Txn* txn) {
      uint64_t root = Record(txn, "s").root;
      txn->Put(Table::kNodeRefs, EncodeKey64(root), EncodeU32(9));
    });
    CHECK(Reports(r, "refcount 9"));
  }
  SECTION("leak") {
    auto r = Damage(f, [](Txn* txn) {
      MapNode node;
      node.level = 0;
      node.child[0] = 1;
      node.generation[0] = 1;
      txn->Put(Table::kNodes, EncodeKey64(999999), EncodeMapNode(node));
    });
    CHECK(Reports(r, "unreachable"));
  }
  SECTION("missing") {
    auto r = Damage(f, [](Txn* txn) {
      uint64_t root = Record(txn, "c").root;
      txn->Delete(Table::kNodes, EncodeKey64(root));
    });
    CHECK(Reports(r, "missing"));
  }
}

TEST_CASE("fsck: a volume's mapped count or size disagrees with its tree") {
  StoreFixture f;
  Populate(f);
  SECTION("mapped count") {
    auto r = Damage(f, [](Txn* txn) {
      VolumeRecord rec = Record(txn, "c");
      rec.mapped_blocks += 1;
      txn->Put(Table::kVolumes, "c", EncodeVolumeRecord(rec));
    });
    CHECK(Reports(r, "mapped blocks"));
  }
  SECTION("size") {
    auto r = Damage(f, [](Txn* txn) {
      VolumeRecord rec = Record(txn, "c");
      rec.size_bytes = 100 * kBs;
      txn->Put(Table::kVolumes, "c", EncodeVolumeRecord(rec));
    });
    CHECK(Reports(r, "beyond its size"));
  }
}

TEST_CASE("fsck: free-space counter and coalescing") {
  StoreFixture f;
  Populate(f);
  auto r = Damage(f, [](Txn* txn) { txn->PutMetaU64(kMetaFreeBlocks, 1); });
  CHECK(Reports(r, "free-blocks counter"));
}

}  // namespace
}  // namespace tapmap::mapserver
