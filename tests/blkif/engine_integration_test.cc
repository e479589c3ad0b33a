// The blkif front end on the real engine and a real mapserver: guest I/O through the
// ring lands in the pool via copy-on-write, clones see the golden data, and a clone's
// writes stay its own.
#include <catch2/catch.hpp>
#include <cstring>
#include <map>

#include "tests/blkif/ring_harness.h"
#include "tests/engine/mapserver_fixture.h"

namespace tapmap::testing {
namespace {

constexpr uint64_t kMiB = 1 << 20;

std::shared_ptr<engine::BlockDevice> OpenVolume(engine::Engine& e, const std::string& name, bool ro) {
  Waiter<Result<std::shared_ptr<engine::BlockDevice>>> w;
  e.Open(name, ro, [&](Result<std::shared_ptr<engine::BlockDevice>> r) { w.Set(std::move(r)); });
  auto r = w.Wait();
  INFO(r.status().ToString());
  REQUIRE(r.ok());
  return *r;
}

TEST_CASE("blkif on the real engine: ring I/O, clone sharing and isolation", "[blkif][integration]") {
  MapserverFixture ms;
  ms.Create("golden", 64 * kMiB);
  IoThreads threads(2);
  auto engine = engine::Engine::Create(threads.io(), ms.EngineOptions(), Logger("engine", LogLevel::kWarning));
  INFO(engine.status().ToString());
  REQUIRE(engine.ok());

  SimBlkfrontOptions o;
  o.indirect_segments = 256;
  o.ring_page_order = 1;
  auto hv = std::make_shared<xen::SimulatedHypervisor>();
  REQUIRE(hv->CreateDomain(kBackendDomid, 0).ok());
  auto golden_data = RandomBytes(4 * kMiB, 21);
  {
    RingRig rig;
    auto dev = OpenVolume(**engine, "golden", false);
    REQUIRE(RingRig::Make(&rig, threads.io(), dev, 1, o, {}, hv).ok());
    for (uint64_t off = 0; off < golden_data.size(); off += kMiB) {
      std::span<const uint8_t> chunk(golden_data.data() + off, kMiB);
      REQUIRE(*rig.front->Write(0, off / 512, chunk) == BLKIF_RSP_OKAY);
    }
    REQUIRE(*rig.front->Simple(0, BLKIF_OP_FLUSH_DISKCACHE) == BLKIF_RSP_OKAY);
    std::vector<uint8_t> back(kMiB);
    REQUIRE(*rig.front->Read(0, 2 * kMiB / 512, back) == BLKIF_RSP_OKAY);
    CHECK(std::equal(back.begin(), back.end(), golden_data.begin() + 2 * kMiB));
    rig.StopAll();
  }
  ms.Snapshot("golden", "golden.v1");
  ms.Clone("golden.v1", "vm1");
  {
    RingRig clone_rig;
    auto clone = OpenVolume(**engine, "vm1", false);
    REQUIRE(RingRig::Make(&clone_rig, threads.io(), clone, 2, o, {}, hv).ok());
    std::vector<uint8_t> back(4 * kMiB);
    for (uint64_t off = 0; off < back.size(); off += kMiB) {
      REQUIRE(*clone_rig.front->Read(0, off / 512, std::span<uint8_t>(back.data() + off, kMiB)) == BLKIF_RSP_OKAY);
    }
    CHECK(back == golden_data);
    auto mine = RandomBytes(64 * 1024, 99);
    REQUIRE(*clone_rig.front->Write(0, 128, mine) == BLKIF_RSP_OKAY);
    std::vector<uint8_t> again(mine.size());
    REQUIRE(*clone_rig.front->Read(0, 128, again) == BLKIF_RSP_OKAY);
    CHECK(again == mine);
    clone_rig.StopAll();
  }
  {
    RingRig rig;
    auto dev = OpenVolume(**engine, "golden", true);
    blkif::RequestLimits ro;
    ro.read_only = true;
    REQUIRE(RingRig::Make(&rig, threads.io(), dev, 3, o, ro, hv).ok());
    std::vector<uint8_t> back(64 * 1024);
    REQUIRE(*rig.front->Read(0, 128, back) == BLKIF_RSP_OKAY);  // golden unchanged by the clone
    CHECK(std::equal(back.begin(), back.end(), golden_data.begin() + 128 * 512));
    CHECK(*rig.front->Write(0, 128, back) == BLKIF_RSP_ERROR);
    rig.StopAll();
  }
  Waiter<bool> down;
  (*engine)->Shutdown([&] { down.Set(true); });
  down.Wait();
  threads.Stop();
}

// What the lab's indirect case does on real Xen, with more in flight: 1 MiB
// requests (256 segments, one indirect page) on a multi-page ring with persistent
// grants, reads of shared golden blocks and copy-on-write writes interleaved, many
// at once. Meant for the sanitizer build too (memory errors, not timing).
TEST_CASE("blkif on the real engine: many 1 MiB indirect requests in flight", "[blkif][integration]") {
  MapserverFixture ms;
  ms.Create("golden", 32 * kMiB);
  IoThreads threads(2);
  auto engine = engine::Engine::Create(threads.io(), ms.EngineOptions(), Logger("engine", LogLevel::kWarning));
  REQUIRE(engine.ok());
  auto hv = std::make_shared<xen::SimulatedHypervisor>();
  REQUIRE(hv->CreateDomain(kBackendDomid, 0).ok());
  SimBlkfrontOptions o;
  o.indirect_segments = 256;
  o.ring_page_order = 2;
  o.persistent_grants = true;
  auto golden = RandomBytes(16 * kMiB, 5);
  {
    RingRig rig;
    REQUIRE(RingRig::Make(&rig, threads.io(), OpenVolume(**engine, "golden", false), 1, o, {}, hv).ok());
    for (uint64_t off = 0; off < golden.size(); off += kMiB) {
      REQUIRE(*rig.front->Write(0, off / 512, std::span<const uint8_t>(golden.data() + off, kMiB)) == BLKIF_RSP_OKAY);
    }
    REQUIRE(*rig.front->Simple(0, BLKIF_OP_FLUSH_DISKCACHE) == BLKIF_RSP_OKAY);
    rig.StopAll();
  }
  ms.Snapshot("golden", "golden.v1");
  ms.Clone("golden.v1", "vm");
  RingRig rig;
  REQUIRE(RingRig::Make(&rig, threads.io(), OpenVolume(**engine, "vm", false), 2, o, {}, hv).ok());
  auto mine = RandomBytes(kMiB, 6);
  std::map<uint64_t, uint64_t> reads;  // id -> offset
  size_t writes = 0, done = 0, submitted = 0;
  for (int round = 0; round < 4; round++) {
    for (uint64_t off = 0; off < golden.size(); off += kMiB) {
      SimIo io;
      io.sector = off / 512;
      io.sectors = kMiB / 512;
      bool write = (off / kMiB) % 4 == 3 && round == 1;  // some copy-on-write mid-stream
      io.operation = write ? BLKIF_OP_WRITE : BLKIF_OP_READ;
      auto id = rig.front->Submit(0, io, write ? std::span<const uint8_t>(mine) : std::span<const uint8_t>());
      if (!id.ok()) break;  // ring full: drain below
      submitted++;
      if (write) writes++;
      else reads[*id] = off;
    }
    REQUIRE(rig.front->Kick(0).ok());
    while (done < submitted) {
      auto got = rig.front->Poll(0, std::chrono::seconds(10));
      INFO(got.status().ToString());
      REQUIRE(got.ok());
      REQUIRE(!got->empty());
      for (const SimCompletion& c : *got) {
        CHECK(c.status == BLKIF_RSP_OKAY);
        auto r = reads.find(c.id);
        if (r != reads.end()) {
          auto data = rig.front->ReadData(c.id);
          REQUIRE(data.size() == kMiB);
          bool rewritten = round >= 1 && (r->second / kMiB) % 4 == 3 && round > 1;
          const uint8_t* want = rewritten ? mine.data() : golden.data() + r->second;
          if (round <= 1 && (r->second / kMiB) % 4 == 3) want = nullptr;  // raced with its write
          if (want != nullptr) CHECK(std::memcmp(data.data(), want, kMiB) == 0);
          reads.erase(r);
        }
        done++;
      }
    }
  }
  CHECK(writes > 0);
  rig.StopAll();
  Waiter<bool> down;
  (*engine)->Shutdown([&] { down.Set(true); });
  down.Wait();
  threads.Stop();
}

}  // namespace
}  // namespace tapmap::testing
