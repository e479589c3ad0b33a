// Metadata encodings, the LMDB store and free-space bookkeeping.
#include <catch2/catch.hpp>

#include "mapserver/free_space.h"
#include "mapserver/metadata_format.h"
#include "mapserver/metadata_store.h"
#include "store_fixture.h"

namespace tapmap::mapserver {
namespace {

TEST_CASE("Volume records round-trip") {
  VolumeRecord r;
  r.kind = VolumeRecord::Kind::kClone;
  r.read_only = false;
  r.depth = 3;
  r.size_bytes = 10ull << 30;
  r.root = 77;
  r.id = 5;
  r.version_set = 2;
  r.created_unix_seconds = 1234;
  r.mapped_blocks = 99;
  r.parent_id = 4;
  r.parent_name = "golden-debian";
  auto back = DecodeVolumeRecord(EncodeVolumeRecord(r));
  REQUIRE(back.ok());
  CHECK(back->kind == r.kind);
  CHECK(back->depth == 3);
  CHECK(back->size_bytes == r.size_bytes);
  CHECK(back->root == 77);
  CHECK(back->mapped_blocks == 99);
  CHECK(back->parent_name == "golden-debian");
  std::string bytes = EncodeVolumeRecord(r);
  CHECK(DecodeVolumeRecord(bytes.substr(0, 10)).status().code() == StatusCode::kCorruption);
  bytes[1] = 9;  // kind
  CHECK(DecodeVolumeRecord(bytes).status().code() == StatusCode::kCorruption);
}

TEST_CASE("Map nodes store only used slots and round-trip") {
  MapNode leaf;
  leaf.level = 0;
  leaf.child[3] = 1000;
  leaf.generation[3] = 7;
  leaf.child[255] = 5;
  leaf.generation[255] = 8;
  std::string bytes = EncodeMapNode(leaf);
  CHECK(bytes.size() == 8 + 2 * 17);
  auto back = DecodeMapNode(bytes);
  REQUIRE(back.ok());
  CHECK(back->CountUsed() == 2);
  CHECK(back->child[3] == 1000);
  CHECK(back->generation[255] == 8);
  CHECK_FALSE(back->SlotUsed(4));

  MapNode interior;
  interior.level = 2;
  interior.child[0] = 42;
  auto ib = DecodeMapNode(EncodeMapNode(interior));
  REQUIRE(ib.ok());
  CHECK(ib->level == 2);
  CHECK(ib->child[0] == 42);
  std::string trunc = EncodeMapNode(interior);
  trunc.pop_back();
  CHECK(DecodeMapNode(trunc).status().code() == StatusCode::kCorruption);
}

TEST_CASE("Integer keys sort numerically") {
  CHECK(EncodeKey64(255) < EncodeKey64(256));
  CHECK(DecodeKey64(EncodeKey64(0x0102030405060708ull)) == 0x0102030405060708ull);
  CHECK(DecodeU64(EncodeU64(42)) == 42u);
  CHECK_FALSE(DecodeU32("abc").has_value());
}

TEST_CASE("An aborted transaction leaves no trace, a committed one persists") {
  testing::TempDir dir;
  {
    auto store = MetadataStore::Open(dir.path());
    REQUIRE(store.ok());
    {
      auto txn = (*store)->BeginWrite();
      txn->Put(Table::kVolumes, "a", "1");
    }  // aborted
    auto txn = (*store)->BeginWrite();
    CHECK_FALSE(txn->Get(Table::kVolumes, "a").has_value());
    txn->Put(Table::kVolumes, "b", "2");
    txn->Commit();
  }
  auto store = MetadataStore::Open(dir.path());
  REQUIRE(store.ok());
  auto txn = (*store)->BeginRead();
  CHECK(txn->Get(Table::kVolumes, "b") == std::optional<std::string_view>("2"));
  CHECK(txn->EntryCount(Table::kVolumes) == 1);
}

TEST_CASE("Free space takes and releases with coalescing") {
  testing::TempDir dir;
  auto store = MetadataStore::Open(dir.path());
  REQUIRE(store.ok());
  auto txn = (*store)->BeginWrite();
  txn->Put(Table::kFree, EncodeKey64(0), EncodeU64(100));
  txn->PutMetaU64(kMetaFreeBlocks, 100);
  FreeSpace fs(txn.get());
  fs.Take(10, 5);
  fs.Take(0, 2);
  auto runs = FreeSpace::AllExtents(txn.get());
  REQUIRE(runs.size() == 2);
  CHECK(runs[0].start == 2);
  CHECK(runs[0].length == 8);
  CHECK(runs[1].start == 15);
  CHECK(runs[1].length == 85);
  CHECK(FreeSpace::FreeBlocks(txn.get()) == 93);

  CHECK_THROWS_AS(fs.Take(12, 1), StatusError);  // not free

  for (uint64_t b : {12, 10, 11, 14, 13}) fs.Release(b);
  fs.Flush();
  runs = FreeSpace::AllExtents(txn.get());
  REQUIRE(runs.size() == 1);
  CHECK(runs[0].start == 2);
  CHECK(runs[0].length == 98);
  CHECK(FreeSpace::FreeBlocks(txn.get()) == 98);

  fs.Release(50);  // already free
  CHECK_THROWS_AS(fs.Flush(), StatusError);
}

TEST_CASE("FindFree prefers runs at the hint and skips exclusions and wraps") {
  testing::TempDir dir;
  auto store = MetadataStore::Open(dir.path());
  REQUIRE(store.ok());
  auto txn = (*store)->BeginWrite();
  txn->Put(Table::kFree, EncodeKey64(0), EncodeU64(10));
  txn->Put(Table::kFree, EncodeKey64(20), EncodeU64(10));
  txn->PutMetaU64(kMetaFreeBlocks, 20);
  std::vector<BlockRun> out;
  CHECK(FreeSpace::FindFree(txn.get(), 22, 5, {}, &out) == 5);
  REQUIRE(out.size() == 1);
  CHECK(out[0].start == 22);
  CHECK(out[0].length == 5);

  out.clear();
  CHECK(FreeSpace::FindFree(txn.get(), 25, 10, {26, 27}, &out) == 10);
  // 25, 28..29, then wrap: 0..6
  REQUIRE(out.size() == 3);
  CHECK(out[0].start == 25);
  CHECK(out[0].length == 1);
  CHECK(out[1].start == 28);
  CHECK(out[1].length == 2);
  CHECK(out[2].start == 0);
  CHECK(out[2].length == 7);

  out.clear();
  CHECK(FreeSpace::FindFree(txn.get(), 0, 100, {}, &out) == 20);
}

}  // namespace
}  // namespace tapmap::mapserver
