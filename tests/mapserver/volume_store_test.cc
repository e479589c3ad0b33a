// The version-set store: copy-on-write map trees, lazy refcounts, reservations,
// free-space accounting. fsck must be clean after every scenario.
#include <algorithm>
#include <catch2/catch.hpp>
#include <numeric>
#include <random>
#include <set>

#include "mapserver/map_tree.h"
#include "store_fixture.h"

namespace tapmap::mapserver {
namespace {

using testing::StoreFixture;
constexpr uint64_t kBs = 4096;
// The rw lease these tests write under: epoch 0, older than every block, so every
// block exclusive to a volume is owned (written in place). Epoch rules have their own
// test case below.
constexpr uint64_t kLease = 0;

std::vector<MapExtent> Prepare(VolumeStore& s, OpenerId opener, const std::string& name,
                               uint64_t offset, uint64_t length) {
  auto r = s.PrepareWrite(opener, name, {ByteRange{offset, length}}, kLease);
  INFO(r.status().ToString());
  REQUIRE(r.ok());
  return *r;
}

// prepareWrite + commit of [offset, offset+length).
std::vector<MapExtent> Write(VolumeStore& s, OpenerId opener, const std::string& name,
                             uint64_t offset, uint64_t length) {
  auto extents = Prepare(s, opener, name, offset, length);
  Status c = s.Commit(opener, name, extents);
  INFO(c.ToString());
  REQUIRE(c.ok());
  return extents;
}

std::vector<MapExtent> MapOf(VolumeStore& s, const std::string& name, uint64_t offset,
                             uint64_t length) {
  auto r = s.Map(name, offset, length, kLease);
  INFO(r.status().ToString());
  REQUIRE(r.ok());
  return *r;
}

TEST_CASE("A new volume is one hole, writes become owned extents") {
  StoreFixture f;
  auto& s = f.store();
  uint64_t free0 = f.FreeBlocks();
  auto info = s.Create("vm1", 64 * kBs);
  REQUIRE(info.ok());
  CHECK(info->record.size_bytes == 64 * kBs);
  CHECK(info->record.mapped_blocks == 0);

  auto m = MapOf(s, "vm1", 0, 64 * kBs);
  REQUIRE(m.size() == 1);
  CHECK(m[0].state == ExtentState::kHole);
  CHECK(m[0].length == 64 * kBs);

  auto prepared = Prepare(s, 1, "vm1", 4 * kBs, 8 * kBs);
  REQUIRE(prepared.size() == 1);  // contiguous fresh blocks, one generation
  CHECK(prepared[0].state == ExtentState::kOwned);
  CHECK(prepared[0].generation >= 1);
  CHECK(f.FreeBlocks() == free0 - 8);  // reserved blocks are not free
  // Not yet visible in the map.
  CHECK(MapOf(s, "vm1", 4 * kBs, kBs)[0].state == ExtentState::kHole);
  REQUIRE(s.Commit(1, "vm1", prepared).ok());

  m = MapOf(s, "vm1", 0, 64 * kBs);
  REQUIRE(m.size() == 3);
  CHECK(m[0].state == ExtentState::kHole);
  CHECK(m[1] == prepared[0]);
  CHECK(m[2].logical == 12 * kBs);
  CHECK(m[2].length == 52 * kBs);
  CHECK(s.ReservedBlocks() == 0);
  CHECK(f.FreeBlocks() == free0 - 8);

  // Already-owned blocks come back unchanged from prepareWrite.
  auto again = Prepare(s, 1, "vm1", 4 * kBs, 8 * kBs);
  CHECK(again == prepared);
  CHECK(s.ReservedBlocks() == 0);
  auto d = s.Describe("vm1");
  REQUIRE(d.ok());
  CHECK(d->record.mapped_blocks == 8);
  CHECK(d->exclusive_blocks == 8);
  CHECK(d->shared_blocks == 0);
  f.RequireClean();
}

TEST_CASE("Unaligned writes round out to whole blocks") {
  StoreFixture f;
  auto& s = f.store();
  REQUIRE(s.Create("v", 16 * kBs).ok());
  auto e = Write(f.store(), 1, "v", kBs + 512, 1024);
  REQUIRE(e.size() == 1);
  CHECK(e[0].logical == kBs);
  CHECK(e[0].length == kBs);
  f.RequireClean();
}

TEST_CASE("Snapshot shares everything in O(1) and copy-on-write keeps it intact") {
  StoreFixture f;
  auto& s = f.store();
  REQUIRE(s.Create("base", 1024 * kBs).ok());
  auto written = Write(s, 1, "base", 0, 300 * kBs);  // spans two leaves
  uint64_t free_after_write = f.FreeBlocks();

  auto snap = s.Snapshot("base", "snap");
  REQUIRE(snap.ok());
  CHECK(snap->record.read_only);
  CHECK(snap->record.kind == VolumeRecord::Kind::kSnapshot);
  CHECK(snap->parent == "base");
  CHECK(snap->record.version_set == s.Describe("base")->record.version_set);
  CHECK(snap->shared_blocks == 300);
  CHECK(snap->exclusive_blocks == 0);
  CHECK(f.FreeBlocks() == free_after_write);  // no data copied
  f.RequireClean();

  // Everything is now shared in both.
  for (auto& e : MapOf(s, "base", 0, 300 * kBs)) CHECK(e.state == ExtentState::kShared);
  auto snap_map_before = MapOf(s, "snap", 0, 1024 * kBs);

  // Overwrite block 5 of base: new block, new generation.
  auto cow = Prepare(s, 1, "base", 5 * kBs, kBs);
  REQUIRE(cow.size() == 1);
  CHECK(cow[0].physical != written[0].physical + 5 * kBs);
  CHECK(cow[0].generation > written[0].generation);
  REQUIRE(s.Commit(1, "base", cow).ok());
  CHECK(f.FreeBlocks() == free_after_write - 1);

  CHECK(MapOf(s, "snap", 0, 1024 * kBs) == snap_map_before);
  auto b5 = MapOf(s, "base", 5 * kBs, kBs);
  REQUIRE(b5.size() == 1);
  CHECK(b5[0].physical == cow[0].physical);
  CHECK(b5[0].state == ExtentState::kOwned);
  // Block 6 of base is still shared (its leaf was copied, the block was not).
  CHECK(MapOf(s, "base", 6 * kBs, kBs)[0].state == ExtentState::kShared);
  auto base_info = s.Describe("base");
  REQUIRE(base_info.ok());
  CHECK(base_info->exclusive_blocks == 1);
  CHECK(base_info->shared_blocks == 299);
  f.RequireClean();

  // Snapshots are read-only.
  CHECK(s.PrepareWrite(2, "snap", {ByteRange{0, kBs}}, kLease).status().code() == StatusCode::kReadOnly);
  CHECK(s.Discard("snap", {ByteRange{0, kBs}}).code() == StatusCode::kReadOnly);
  CHECK(s.Resize("snap", 2048 * kBs, false).status().code() == StatusCode::kReadOnly);

  // Deleting base frees only what it owned alone.
  REQUIRE(s.Delete("base").ok());
  CHECK(f.FreeBlocks() == free_after_write);
  CHECK(s.Describe("snap")->parent == "");
  CHECK(s.Describe("snap")->exclusive_blocks == 300);
  f.RequireClean();
  REQUIRE(s.Delete("snap").ok());
  f.RequireClean();
}

TEST_CASE("Lazy refcounts: a snapshot bumps only the root and a write copies only its path") {
  StoreFixture f(100000);
  auto& s = f.store();
  REQUIRE(s.Create("v", 70000 * kBs).ok());  // depth 3
  Write(s, 1, "v", 0, 600 * kBs);            // three leaves under one level-1 node
  VolumeRecord before = s.Describe("v")->record;
  REQUIRE(before.depth == 3);
  REQUIRE(s.Snapshot("v", "s").ok());
  {
    auto txn = s.metadata().BeginRead();
    MapTree tree(txn.get(), nullptr);
    CHECK(tree.NodeRefs(before.root) == 2);
    CHECK(txn->EntryCount(Table::kNodeRefs) == 1);  // only the root was touched
    CHECK(txn->EntryCount(Table::kBlockRefs) == 0);
    CHECK(s.Describe("s")->record.root == before.root);
  }
  Write(s, 1, "v", 300 * kBs, kBs);  // in the second leaf
  {
    auto txn = s.metadata().BeginRead();
    MapTree tree(txn.get(), nullptr);
    VolumeRecord after = s.Describe("v")->record;
    CHECK(after.root != before.root);        // root copied
    CHECK(tree.NodeRefs(before.root) == 1);  // now the snapshot's alone
    const MapNode& new_root = tree.Node(after.root);
    const MapNode& old_root = tree.Node(before.root);
    uint64_t new_l1 = new_root.child[0], old_l1 = old_root.child[0];
    CHECK(new_l1 != old_l1);  // level-1 node copied
    CHECK(tree.NodeRefs(old_l1) == 1);
    const MapNode& l1 = tree.Node(new_l1);
    const MapNode& ol1 = tree.Node(old_l1);
    CHECK(l1.child[0] == ol1.child[0]);  // untouched leaves are shared
    CHECK(l1.child[2] == ol1.child[2]);
    CHECK(tree.NodeRefs(l1.child[0]) == 2);
    CHECK(l1.child[1] != ol1.child[1]);  // the written leaf was copied
    // Blocks of the copied leaf are referenced from both leaves, except the new one.
    CHECK(txn->EntryCount(Table::kBlockRefs) == 255);
    CHECK(tree.BlockRefs(tree.Node(l1.child[1]).child[44]) == 1);
    CHECK(tree.BlockRefs(tree.Node(l1.child[1]).child[45]) == 2);
  }
  f.RequireClean();
}

TEST_CASE("Clone of a clone of a snapshot then deletes in every order return all space") {
  std::vector<std::string> names = {"gold", "snap", "clone1", "clone2"};
  std::vector<int> order = {0, 1, 2, 3};
  do {
    StoreFixture f(2048);
    auto& s = f.store();
    uint64_t free0 = f.FreeBlocks();
    REQUIRE(s.Create("gold", 512 * kBs).ok());
    Write(s, 1, "gold", 0, 400 * kBs);
    REQUIRE(s.Snapshot("gold", "snap").ok());
    REQUIRE(s.Clone("snap", "clone1").ok());
    Write(s, 2, "clone1", 100 * kBs, 10 * kBs);
    REQUIRE(s.Clone("clone1", "clone2").ok());
    Write(s, 3, "clone2", 100 * kBs, 5 * kBs);
    Write(s, 3, "clone2", 450 * kBs, 20 * kBs);
    Write(s, 1, "gold", 0, 3 * kBs);
    CHECK(s.Describe("clone2")->record.kind == VolumeRecord::Kind::kClone);
    CHECK(s.Describe("clone2")->parent == "clone1");
    f.RequireClean();
    auto stats = s.Stats();
    REQUIRE(stats.ok());
    CHECK(stats->version_sets == 1);
    CHECK(stats->volumes == 4);
    for (int i : order) {
      INFO("deleting " << names[i]);
      REQUIRE(s.Delete(names[i]).ok());
      f.RequireClean();
    }
    CHECK(f.FreeBlocks() == free0);
    CHECK(s.Stats()->volumes == 0);
  } while (std::next_permutation(order.begin(), order.end()));
}

TEST_CASE("Reservations are excluded from allocation and vanish on drop and restart") {
  StoreFixture f(64);
  auto& s = f.store();
  REQUIRE(s.Create("a", 64 * kBs).ok());
  REQUIRE(s.Create("b", 64 * kBs).ok());
  auto ra = Prepare(s, 1, "a", 0, 40 * kBs);
  // Only 23 blocks remain (64 - 1 MiB offset is in bytes; pool has exactly 64 blocks).
  CHECK(f.FreeBlocks() == 24);
  auto rb = s.PrepareWrite(2, "b", {ByteRange{0, 30 * kBs}}, kLease);
  CHECK(rb.status().code() == StatusCode::kNoSpace);
  CHECK(f.FreeBlocks() == 24);  // a failed prepare reserves nothing
  auto rb2 = Prepare(s, 2, "b", 0, 24 * kBs);
  for (auto& e : rb2) {
    for (auto& a : ra) {  // disjoint from a's reservation
      CHECK((e.physical + e.length <= a.physical || a.physical + a.length <= e.physical));
    }
  }
  CHECK(f.FreeBlocks() == 0);
  s.DropReservations(1);
  CHECK(f.FreeBlocks() == 40);
  CHECK(s.Commit(1, "a", ra).code() == StatusCode::kAborted);  // reclaimed
  // Opener 3 cannot commit opener 2's reservation.
  CHECK(s.Commit(3, "b", rb2).code() == StatusCode::kAborted);
  f.Reopen();  // restart: reservations gone, nothing leaked
  CHECK(f.FreeBlocks() == 64);
  CHECK(f.store().Commit(2, "b", rb2).code() == StatusCode::kAborted);
  f.RequireClean();
}

TEST_CASE("Generations are never reused even across restarts") {
  StoreFixture f;
  REQUIRE(f.store().Create("v", 64 * kBs).ok());
  auto first = Prepare(f.store(), 1, "v", 0, kBs);
  f.Reopen();
  auto second = Prepare(f.store(), 1, "v", 0, kBs);
  CHECK(second[0].generation > first[0].generation);
  CHECK(second[0].physical == first[0].physical);  // same block, new name
  REQUIRE(f.store().Commit(1, "v", second).ok());
  REQUIRE(f.store().Discard("v", {ByteRange{0, kBs}}).ok());
  auto third = Prepare(f.store(), 2, "v", 0, kBs);  // a new opener searches from block 0
  CHECK(third[0].physical == first[0].physical);
  CHECK(third[0].generation > second[0].generation);
}

TEST_CASE("Sequential prepares allocate contiguous blocks") {
  StoreFixture f;
  auto& s = f.store();
  REQUIRE(s.Create("v", 1024 * kBs).ok());
  uint64_t expected = 0;
  for (int i = 0; i < 10; ++i) {
    auto e = Write(s, 1, "v", i * 16 * kBs, 16 * kBs);
    REQUIRE(e.size() == 1);
    if (i > 0) CHECK(e[0].physical == expected);
    expected = e[0].physical + e[0].length;
  }
  auto m = MapOf(s, "v", 0, 160 * kBs);
  CHECK(m.size() == 10);  // one extent per generation, physically contiguous
  f.RequireClean();
}

TEST_CASE("Commit validates what it is given") {
  StoreFixture f;
  auto& s = f.store();
  REQUIRE(s.Create("v", 64 * kBs).ok());
  auto e = Prepare(s, 1, "v", 0, 2 * kBs);
  MapExtent bad = e[0];
  bad.generation += 1;
  CHECK(s.Commit(1, "v", {bad}).code() == StatusCode::kAborted);
  bad = e[0];
  bad.physical += 512;
  CHECK(s.Commit(1, "v", {bad}).code() == StatusCode::kInvalidArgument);
  bad = e[0];
  bad.physical = f.sb().data_offset + f.sb().total_blocks * kBs;
  CHECK(s.Commit(1, "v", {bad}).code() == StatusCode::kInvalidArgument);
  CHECK(s.Commit(1, "v", {e[0], e[0]}).code() == StatusCode::kInvalidArgument);
  CHECK(s.Commit(1, "nope", e).code() == StatusCode::kNotFound);
  // A partly bad batch changes nothing.
  bad = e[0];
  bad.logical = 10 * kBs;
  CHECK(s.Commit(1, "v", {e[0], bad}).code() == StatusCode::kAborted);
  CHECK(MapOf(s, "v", 0, kBs)[0].state == ExtentState::kHole);
  REQUIRE(s.Commit(1, "v", e).ok());
  // Committing the installed extents again is harmless.
  REQUIRE(s.Commit(1, "v", e).ok());
  f.RequireClean();
}

TEST_CASE("A commit batch is one transaction whose members fail independently") {
  StoreFixture f;
  auto& s = f.store();
  REQUIRE(s.Create("a", 64 * kBs).ok());
  REQUIRE(s.Create("b", 64 * kBs).ok());
  auto ea = Prepare(s, 1, "a", 0, 4 * kBs);
  auto eb = Prepare(s, 2, "b", 8 * kBs, 4 * kBs);
  MapExtent stale = eb[0];
  stale.generation += 100;
  std::vector<VolumeStore::CommitRequest> batch = {
      {1, "a", ea},    {2, "b", {stale}},  // refused alone
      {2, "b", eb},    {2, "b", eb},       // the same reservation again: a no-op
      {3, "a", ea},  // another opener naming a's blocks: they are installed now
      {1, "nope", ea},
  };
  auto results = s.CommitBatch(batch);
  REQUIRE(results.size() == 6);
  CHECK(results[0].ok());
  CHECK(results[1].code() == StatusCode::kAborted);
  CHECK(results[2].ok());
  CHECK(results[3].ok());
  CHECK(results[4].ok());
  CHECK(results[5].code() == StatusCode::kNotFound);
  CHECK(MapOf(s, "a", 0, 4 * kBs)[0] == ea[0]);
  CHECK(MapOf(s, "b", 8 * kBs, 4 * kBs)[0] == eb[0]);
  CHECK(s.ReservedBlocks() == 0);
  f.RequireClean();
}

TEST_CASE("Argument validation of names sizes and ranges") {
  StoreFixture f;
  auto& s = f.store();
  for (const char* bad : {"", ".hidden", "a/b", "a b", "ä"}) {
    CHECK(s.Create(bad, kBs).status().code() == StatusCode::kInvalidArgument);
  }
  CHECK(s.Create(std::string(129, 'x'), kBs).status().code() == StatusCode::kInvalidArgument);
  CHECK(s.Create(std::string(128, 'x'), kBs).ok());
  CHECK(s.Create("v", 0).status().code() == StatusCode::kInvalidArgument);
  CHECK(s.Create("v", 1000).status().code() == StatusCode::kInvalidArgument);
  CHECK(s.Create("v", kMaxVolumeBytes + 512).status().code() == StatusCode::kInvalidArgument);
  REQUIRE(s.Create("v", 8 * kBs).ok());
  CHECK(s.Create("v", 8 * kBs).status().code() == StatusCode::kAlreadyExists);
  CHECK(s.Snapshot("v", "v").status().code() == StatusCode::kAlreadyExists);
  CHECK(s.Clone("missing", "w").status().code() == StatusCode::kNotFound);
  CHECK(s.Map("v", 0, 0, kLease).status().code() == StatusCode::kInvalidArgument);
  CHECK(s.Map("v", 100, 512, kLease).status().code() == StatusCode::kInvalidArgument);
  CHECK(s.Map("v", 7 * kBs, 2 * kBs, kLease).status().code() == StatusCode::kInvalidArgument);
  CHECK(s.Map("v", ~uint64_t{511}, 512, kLease).status().code() == StatusCode::kInvalidArgument);
  CHECK(s.PrepareWrite(1, "v", {}, kLease).status().code() == StatusCode::kInvalidArgument);
  CHECK(s.PrepareWrite(1, "v", {ByteRange{0, 9 * kBs}}, kLease).status().code() ==
        StatusCode::kInvalidArgument);
  CHECK(s.Discard("v", {ByteRange{512, 0}}).code() == StatusCode::kInvalidArgument);
  CHECK(s.Resize("v", 4 * kBs, false).status().code() == StatusCode::kInvalidArgument);
  // A shrink into the middle of a block would keep that block's old tail, which a
  // later grow would expose (found by the cluster model check): refused.
  CHECK(s.Resize("v", 4 * kBs + 512, true).status().code() == StatusCode::kInvalidArgument);
  CHECK(s.Delete("missing").code() == StatusCode::kNotFound);
  CHECK(s.ReservedBlocks() == 0);
  f.RequireClean();
}

TEST_CASE("Resize grows the tree by levels and shrink frees beyond the end") {
  StoreFixture f(8192);
  auto& s = f.store();
  uint64_t free0 = f.FreeBlocks();
  REQUIRE(s.Create("v", 100 * kBs).ok());
  CHECK(s.Describe("v")->record.depth == 1);
  auto low = Write(s, 1, "v", 0, 10 * kBs);
  auto r = s.Resize("v", 70000 * kBs, false);  // needs depth 3
  REQUIRE(r.ok());
  CHECK(r->record.depth == 3);
  CHECK(MapOf(s, "v", 0, 10 * kBs)[0] == low[0]);  // old data still where it was
  Write(s, 1, "v", 69990 * kBs, 10 * kBs);
  f.RequireClean();
  REQUIRE(s.Snapshot("v", "s").ok());
  r = s.Resize("v", 5 * kBs, true);
  REQUIRE(r.ok());
  CHECK(r->record.mapped_blocks == 5);
  CHECK(s.Describe("s")->record.mapped_blocks == 20);  // the snapshot is untouched
  f.RequireClean();
  REQUIRE(s.Delete("s").ok());
  CHECK(f.FreeBlocks() == free0 - 5);
  f.RequireClean();
  // Growing again shows holes, not old data.
  REQUIRE(s.Resize("v", 100 * kBs, false).ok());
  auto m = MapOf(s, "v", 5 * kBs, 95 * kBs);
  REQUIRE(m.size() == 1);
  CHECK(m[0].state == ExtentState::kHole);
}

TEST_CASE("Discard unmaps whole blocks only and returns unshared space") {
  StoreFixture f;
  auto& s = f.store();
  uint64_t free0 = f.FreeBlocks();
  REQUIRE(s.Create("v", 600 * kBs).ok());
  Write(s, 1, "v", 0, 600 * kBs);
  REQUIRE(s.Snapshot("v", "s").ok());
  // Partial blocks at both ends stay mapped.
  REQUIRE(s.Discard("v", {ByteRange{10 * kBs + 512, 300 * kBs}}).ok());
  auto m = MapOf(s, "v", 0, 600 * kBs);
  REQUIRE(m.size() == 3);
  CHECK(m[1].state == ExtentState::kHole);
  CHECK(m[1].logical == 11 * kBs);
  CHECK(m[1].length == 299 * kBs);
  CHECK(f.FreeBlocks() == free0 - 600);  // the snapshot still holds them
  REQUIRE(s.Delete("s").ok());
  CHECK(f.FreeBlocks() == free0 - 301);
  REQUIRE(s.Discard("v", {ByteRange{0, 600 * kBs}}).ok());
  CHECK(f.FreeBlocks() == free0);
  auto d = s.Describe("v");
  CHECK(d->record.mapped_blocks == 0);
  CHECK(d->record.root == 0);  // empty nodes are removed
  f.RequireClean();
}

TEST_CASE("Random workload keeps fsck clean and matches a model") {
  StoreFixture f(4096);
  auto& s = f.store();
  std::mt19937_64 rng(12345);
  const uint64_t nblocks = 2000;
  REQUIRE(s.Create("v0", nblocks * kBs).ok());
  // Model: per volume, logical block -> physical offset.
  std::map<std::string, std::map<uint64_t, uint64_t>> model;
  model["v0"];
  int serial = 0;
  for (int step = 0; step < 300; ++step) {
    std::vector<std::string> names;
    for (auto& [n, m] : model) names.push_back(n);
    std::string v = names[rng() % names.size()];
    bool ro = s.Describe(v)->record.read_only;
    int op = static_cast<int>(rng() % 10);
    if (op < 5 && !ro) {
      uint64_t first = rng() % nblocks;
      uint64_t n = 1 + rng() % std::min<uint64_t>(64, nblocks - first);
      auto r = s.PrepareWrite(7, v, {ByteRange{first * kBs, n * kBs}}, kLease);
      if (!r.ok()) {
        REQUIRE(r.status().code() == StatusCode::kNoSpace);
        s.DropReservations(7);
        continue;
      }
      REQUIRE(s.Commit(7, v, *r).ok());
      s.DropReservations(7);  // opener 7 moves between volumes
      for (auto& e : *r) {
        for (uint64_t i = 0; i < e.length / kBs; ++i)
          model[v][e.logical / kBs + i] = e.physical + i * kBs;
      }
    } else if (op == 5 && !ro) {
      uint64_t first = rng() % nblocks;
      uint64_t n = 1 + rng() % std::min<uint64_t>(300, nblocks - first);
      REQUIRE(s.Discard(v, {ByteRange{first * kBs, n * kBs}}).ok());
      for (uint64_t i = 0; i < n; ++i) model[v].erase(first + i);
    } else if (op == 6 || op == 7) {
      std::string name = "x" + std::to_string(++serial);
      auto r = op == 6 ? s.Snapshot(v, name) : s.Clone(v, name);
      REQUIRE(r.ok());
      model[name] = model[v];
    } else if (op == 8 && model.size() > 1) {
      REQUIRE(s.Delete(v).ok());
      model.erase(v);
    } else {
      auto m = MapOf(s, v, 0, nblocks * kBs);
      std::map<uint64_t, uint64_t> seen;
      for (auto& e : m) {
        if (e.state == ExtentState::kHole) continue;
        for (uint64_t i = 0; i < e.length / kBs; ++i)
          seen[e.logical / kBs + i] = e.physical + i * kBs;
      }
      REQUIRE(seen == model[v]);
    }
    if (step % 50 == 0) f.RequireClean();
  }
  f.RequireClean();
  for (auto& [n, m] : model) REQUIRE(s.Delete(n).ok());
  CHECK(f.FreeBlocks() == f.sb().total_blocks);
  f.RequireClean();
}

}  // namespace
}  // namespace tapmap::mapserver

namespace tapmap::mapserver {
namespace {

using testing::StoreFixture;

// The cache-coherence rule: (physical, generation) names immutable content, because a
// block is written in place only by the rw lease it was allocated under.
TEST_CASE("A new rw lease may not write in place what an older lease wrote") {
  StoreFixture f;
  auto& s = f.store();
  constexpr uint64_t bs = 4096;
  REQUIRE(s.Create("vm", 16 * bs).ok());

  auto lease_a = s.NewLeaseEpoch();
  REQUIRE(lease_a.ok());
  auto a = s.PrepareWrite(1, "vm", {ByteRange{0, bs}}, *lease_a);
  REQUIRE(a.ok());
  REQUIRE(s.Commit(1, "vm", *a).ok());
  CHECK((*a)[0].generation > *lease_a);
  // Under lease A the block is owned: in place, same block and generation.
  auto again = s.PrepareWrite(1, "vm", {ByteRange{0, bs}}, *lease_a);
  REQUIRE(again.ok());
  CHECK(*again == *a);
  auto seen_by_a = s.Map("vm", 0, bs, *lease_a);
  REQUIRE(seen_by_a.ok());
  CHECK((*seen_by_a)[0].state == ExtentState::kOwned);
  // No writer: the content is frozen, every opener may cache it.
  auto frozen = s.Map("vm", 0, bs, kNoWriter);
  REQUIRE(frozen.ok());
  CHECK((*frozen)[0].state == ExtentState::kShared);
  CHECK((*frozen)[0].generation == (*a)[0].generation);

  // Lease B (another host, after A closed): the block A wrote is shared to it, and
  // its write takes a new block under a new generation, so a cache holding A's
  // (physical, generation) can never be served for B's data.
  auto lease_b = s.NewLeaseEpoch();
  REQUIRE(lease_b.ok());
  CHECK(*lease_b > (*a)[0].generation);
  auto seen_by_b = s.Map("vm", 0, bs, *lease_b);
  REQUIRE(seen_by_b.ok());
  CHECK((*seen_by_b)[0].state == ExtentState::kShared);
  auto b = s.PrepareWrite(2, "vm", {ByteRange{0, bs}}, *lease_b);
  REQUIRE(b.ok());
  CHECK((*b)[0].physical != (*a)[0].physical);
  CHECK((*b)[0].generation > *lease_b);
  uint64_t free_before = f.FreeBlocks();
  REQUIRE(s.Commit(2, "vm", *b).ok());
  // B's reservation became mapped and A's block went back to free space.
  CHECK(f.FreeBlocks() == free_before + 1);
  // Lease B now writes its own block in place.
  auto b2 = s.PrepareWrite(2, "vm", {ByteRange{0, bs}}, *lease_b);
  REQUIRE(b2.ok());
  CHECK(*b2 == *b);
  // A reopening gets a lease newer than B's block: copy-on-write again.
  auto lease_a2 = s.NewLeaseEpoch();
  REQUIRE(lease_a2.ok());
  auto a2 = s.PrepareWrite(3, "vm", {ByteRange{0, bs}}, *lease_a2);
  REQUIRE(a2.ok());
  CHECK((*a2)[0].physical != (*b)[0].physical);
  s.DropReservations(3);
  f.RequireClean();
}

TEST_CASE("Lease epochs keep growing across a restart") {
  StoreFixture f;
  auto e1 = f.store().NewLeaseEpoch();
  REQUIRE(e1.ok());
  f.Reopen();
  auto e2 = f.store().NewLeaseEpoch();
  REQUIRE(e2.ok());
  CHECK(*e2 > *e1);
}

TEST_CASE("Quarantined blocks are not handed out until the quarantine ends") {
  StoreFixture f(64);
  auto& s = f.store();
  constexpr uint64_t bs = 4096;
  REQUIRE(s.Create("a", 64 * bs).ok());
  auto a = s.PrepareWrite(1, "a", {ByteRange{0, 4 * bs}}, 0);
  REQUIRE(a.ok());
  REQUIRE(s.Commit(1, "a", *a).ok());
  std::vector<uint64_t> freed;
  REQUIRE(s.Discard("a", {ByteRange{0, 4 * bs}}, &freed).ok());
  REQUIRE(freed.size() == 4);
  s.Quarantine(freed);
  CHECK(s.QuarantinedBlocks() == 4);
  CHECK(s.ReservedBlocks() == 0);
  // Everything else can be allocated, the quarantined blocks cannot: the pool
  // holds 64 - 4 blocks for now.
  auto most = s.PrepareWrite(2, "a", {ByteRange{0, 60 * bs}}, 0);
  REQUIRE(most.ok());
  for (const MapExtent& e : *most) {
    for (uint64_t b : freed) {
      uint64_t off = f.sb().BlockOffset(b);
      CHECK((off < e.physical || off >= e.physical + e.length));
    }
  }
  CHECK(s.PrepareWrite(2, "a", {ByteRange{60 * bs, bs}}, 0).status().code() == StatusCode::kNoSpace);
  s.EndQuarantine(freed);
  CHECK(s.QuarantinedBlocks() == 0);
  auto rest = s.PrepareWrite(2, "a", {ByteRange{60 * bs, 4 * bs}}, 0);
  REQUIRE(rest.ok());
  s.DropReservations(2);
  f.RequireClean();
}

}  // namespace
}  // namespace tapmap::mapserver

namespace tapmap::mapserver {
namespace {

using testing::StoreFixture;

// Per logical block: (pool offset, generation); absent = hole. The reference for diff.
std::map<uint64_t, std::pair<uint64_t, uint64_t>> BlocksOf(VolumeStore& s, const std::string& name) {
  auto d = s.Describe(name);
  REQUIRE(d.ok());
  std::map<uint64_t, std::pair<uint64_t, uint64_t>> out;
  for (uint64_t off = 0; off < d->record.size_bytes;) {
    auto m = s.Map(name, off, d->record.size_bytes - off, kLease);
    REQUIRE(m.ok());
    for (auto& e : *m) {
      if (e.state == ExtentState::kHole) continue;
      for (uint64_t i = 0; i < e.length / kBs; ++i) out[e.logical / kBs + i] = {e.physical + i * kBs, e.generation};
    }
    off = m->back().end();
  }
  return out;
}

// Diff's answer as {block -> zero?}, paging with a small maxExtents.
std::map<uint64_t, bool> DiffOf(VolumeStore& s, const std::string& from, const std::string& to) {
  std::map<uint64_t, bool> out;
  uint64_t start = 0;
  do {
    uint64_t next = 0;
    auto d = s.Diff(from, to, start, 3, &next);
    INFO(d.status().ToString());
    REQUIRE(d.ok());
    for (auto& e : *d) {
      REQUIRE(e.length > 0);
      for (uint64_t b = e.offset / kBs; b * kBs < e.offset + e.length; ++b) {
        REQUIRE(out.count(b) == 0);
        out[b] = e.zero;
      }
    }
    start = next;
  } while (start != 0);
  return out;
}

TEST_CASE("Diff of two volumes of a version set matches a block-by-block comparison") {
  StoreFixture f(8192);
  auto& s = f.store();
  std::mt19937_64 rng(GENERATE(1u, 2u, 3u, 4u));
  uint64_t size_blocks = 200;  // one leaf level; grows to three levels below
  REQUIRE(s.Create("v", size_blocks * kBs).ok());
  std::vector<std::string> names = {"v"};
  int serial = 0, compared = 0;
  for (int step = 0; step < 400; ++step) {
    const std::string v = names[rng() % names.size()];
    const bool ro = s.Describe(v)->record.read_only;
    const uint64_t vblocks = s.Describe(v)->record.size_bytes / kBs;
    int op = static_cast<int>(rng() % 12);
    if (op < 5 && !ro) {
      uint64_t first = rng() % vblocks, n = 1 + rng() % std::min<uint64_t>(20, vblocks - first);
      auto r = s.PrepareWrite(7, v, {ByteRange{first * kBs, n * kBs}}, kLease);
      if (r.ok()) REQUIRE(s.Commit(7, v, *r).ok());
      s.DropReservations(7);
    } else if (op == 5 && !ro) {
      uint64_t first = rng() % vblocks, n = 1 + rng() % std::min<uint64_t>(40, vblocks - first);
      REQUIRE(s.Discard(v, {ByteRange{first * kBs, n * kBs}}).ok());
    } else if (op == 6 || op == 7) {
      std::string name = "s" + std::to_string(++serial);
      REQUIRE((op == 6 ? s.Snapshot(v, name) : s.Clone(v, name)).ok());
      names.push_back(name);
    } else if (op == 8 && !ro && vblocks < 70000) {
      REQUIRE(s.Resize(v, (vblocks + 1 + rng() % (vblocks * 20)) * kBs, false).ok());  // deeper trees
    } else {
      // Compare two random volumes (of the one version set) both ways.
      const std::string w = names[rng() % names.size()];
      auto a = BlocksOf(s, v), b = BlocksOf(s, w);
      std::map<uint64_t, bool> expected;
      uint64_t wblocks = s.Describe(w)->record.size_bytes / kBs;
      for (auto& [blk, e] : b) {
        auto it = a.find(blk);
        if (it == a.end() || it->second != e) expected[blk] = false;
      }
      for (auto& [blk, e] : a) {
        if (blk < wblocks && b.count(blk) == 0) expected[blk] = true;  // w reads zeros there now
      }
      INFO("diff " << v << " -> " << w << " at step " << step);
      REQUIRE(DiffOf(s, v, w) == expected);
      ++compared;
    }
  }
  CHECK(compared > 20);
  f.RequireClean();
}

TEST_CASE("Diff visits only what changed: a 1 TiB volume with 1,000 changed blocks") {
  StoreFixture f(1 << 16, 4096);  // 256 MiB pool; the volume is thin
  auto& s = f.store();
  const uint64_t tib = 1ull << 40;
  REQUIRE(s.Create("big", tib).ok());
  // 20,000 mapped blocks spread over the first 64 GiB, then a snapshot.
  std::mt19937_64 rng(7);
  for (int i = 0; i < 20000; i += 100) {
    uint64_t at = (rng() % ((64ull << 30) / kBs - 100)) * kBs;
    auto r = s.PrepareWrite(7, "big", {ByteRange{at, 100 * kBs}}, kLease);
    REQUIRE(r.ok());
    REQUIRE(s.Commit(7, "big", *r).ok());
  }
  s.DropReservations(7);
  REQUIRE(s.Snapshot("big", "base").ok());
  // 1,000 changed blocks anywhere in the 1 TiB.
  std::set<uint64_t> changed;
  while (changed.size() < 1000) changed.insert(rng() % (tib / kBs));
  for (uint64_t b : changed) {
    auto r = s.PrepareWrite(8, "big", {ByteRange{b * kBs, kBs}}, kLease);
    REQUIRE(r.ok());
    REQUIRE(s.Commit(8, "big", *r).ok());
  }
  s.DropReservations(8);
  uint64_t next = 0, visited = 0;
  auto d = s.Diff("base", "big", 0, 65536, &next, &visited);
  REQUIRE(d.ok());
  std::set<uint64_t> seen;
  for (auto& e : *d) {
    for (uint64_t b = e.offset / kBs; b * kBs < e.offset + e.length; ++b) seen.insert(b);
  }
  CHECK(seen == changed);
  CHECK(next == 0);
  // Each changed block costs at most its path (5 levels, both trees): far below the
  // ~20,000 / 256 leaves + interior nodes a full walk of the mapped part would read.
  INFO("nodes visited: " << visited);
  CHECK(visited <= 2 * 5 * changed.size());
}

}  // namespace
}  // namespace tapmap::mapserver

namespace tapmap::mapserver {
namespace {

TEST_CASE("Rename keeps the map, moves the name and fsck stays clean") {
  testing::StoreFixture f;
  auto& s = f.store();
  REQUIRE(s.Create("a", 64 * kBs).ok());
  auto r = s.PrepareWrite(1, "a", {ByteRange{0, 8 * kBs}}, kLease);
  REQUIRE(r.ok());
  REQUIRE(s.Commit(1, "a", *r).ok());
  s.DropReservations(1);
  REQUIRE(s.Snapshot("a", "a-snap").ok());
  REQUIRE(s.Clone("a-snap", "c").ok());
  auto renamed = s.Rename("a-snap", "base");
  REQUIRE(renamed.ok());
  CHECK(renamed->name == "base");
  CHECK(s.Describe("c")->parent == "base");
  CHECK(s.Describe("a-snap").status().code() == StatusCode::kNotFound);
  CHECK(s.Rename("c", "a").status().code() == StatusCode::kAlreadyExists);
  CHECK(s.Map("base", 0, 8 * kBs, kLease)->front().physical == r->front().physical);
  f.RequireClean();
  f.Reopen();  // a new store object: `s` refers to the old one
  CHECK(f.store().Describe("c")->parent == "base");
  f.RequireClean();
}

}  // namespace
}  // namespace tapmap::mapserver

namespace tapmap::mapserver {
namespace {

// Every page of SharedRanges from the start, concatenated.
std::vector<ByteRange> AllShared(VolumeStore& s, const std::string& name, size_t max_ranges, uint64_t max_scanned,
                                 int* pages = nullptr) {
  std::vector<ByteRange> all;
  uint64_t next = 0;
  int n = 0;
  do {
    auto page = s.SharedRanges(name, next, max_ranges, max_scanned, &next);
    REQUIRE(page.ok());
    REQUIRE(page->size() <= max_ranges);
    for (const ByteRange& r : *page) {
      if (!all.empty() && all.back().end() == r.offset) {
        all.back().length += r.length;  // a range cut by a page boundary
      } else {
        all.push_back(r);
      }
    }
    ++n;
  } while (next != 0);
  if (pages != nullptr) *pages = n;
  return all;
}

}  // namespace

TEST_CASE("SharedRanges: what a clone shares with its golden image, until it is rewritten") {
  StoreFixture f(4096);
  auto& s = f.store();
  REQUIRE(s.Create("gold", 100 * kBs).ok());
  // gold maps blocks 0..9 and 50..59.
  for (uint64_t first : {0, 50}) {
    auto r = s.PrepareWrite(7, "gold", {ByteRange{first * kBs, 10 * kBs}}, kLease);
    REQUIRE(r.ok());
    REQUIRE(s.Commit(7, "gold", *r).ok());
  }
  s.DropReservations(7);
  // Alone, nothing of gold is shared.
  CHECK(AllShared(s, "gold", 16, 1000).empty());
  REQUIRE(s.Clone("gold", "vm").ok());
  std::vector<ByteRange> both = {{0, 10 * kBs}, {50 * kBs, 10 * kBs}};
  CHECK(AllShared(s, "vm", 16, 1000) == both);
  CHECK(AllShared(s, "gold", 16, 1000) == both);
  // vm rewrites blocks 3..4 and 55..59 (as flatten's copies would): those are its own.
  for (ByteRange r : {ByteRange{3 * kBs, 2 * kBs}, ByteRange{55 * kBs, 5 * kBs}}) {
    auto e = s.PrepareWrite(8, "vm", {r}, kLease + 1);
    REQUIRE(e.ok());
    REQUIRE(s.Commit(8, "vm", *e).ok());
  }
  s.DropReservations(8);
  std::vector<ByteRange> left = {{0, 3 * kBs}, {5 * kBs, 5 * kBs}, {50 * kBs, 5 * kBs}};
  CHECK(AllShared(s, "vm", 16, 1000) == left);
  // Paging: one range per page, or a scan bound of 2 blocks, give the same ranges.
  int pages = 0;
  CHECK(AllShared(s, "vm", 1, 1000, &pages) == left);
  CHECK(pages == 3);
  CHECK(AllShared(s, "vm", 16, 2, &pages) == left);
  CHECK(pages >= 7);  // 15 mapped blocks, 2 per page
  // Holes are never shared; a discarded shared range is no longer mapped.
  REQUIRE(s.Discard("vm", {ByteRange{0, 3 * kBs}}).ok());
  CHECK(AllShared(s, "vm", 16, 1000) == std::vector<ByteRange>{{5 * kBs, 5 * kBs}, {50 * kBs, 5 * kBs}});
  // A snapshot of vm shares everything it maps again.
  REQUIRE(s.Snapshot("vm", "vm-s").ok());
  CHECK(AllShared(s, "vm", 16, 1000) == std::vector<ByteRange>{{3 * kBs, 7 * kBs}, {50 * kBs, 10 * kBs}});
  // Errors.
  uint64_t next = 0;
  CHECK(s.SharedRanges("nope", 0, 16, 1000, &next).status().code() == StatusCode::kNotFound);
  CHECK(s.SharedRanges("vm", 0, 0, 1000, &next).status().code() == StatusCode::kInvalidArgument);
}

}  // namespace tapmap::mapserver
