// I/O end to end through the ring: SimBlkfront (real ring ABI) -> RingWorker ->
// MemoryBlockDevice, in every ABI, ring size, grant mode, direct and indirect.
#include <catch2/catch.hpp>

#include <cstring>

#include "common/units.h"
#include "tests/blkif/ring_harness.h"

namespace tapmap::testing {
namespace {

using blkif::Abi;

constexpr uint64_t kDiskBytes = 64 * kMiB;

struct Case {
  Abi abi;
  uint32_t order;
  bool persistent;
};

TEST_CASE("blkif ring: reads and writes reach the device intact in every ABI and mode") {
  auto c = GENERATE(Case{Abi::kNative, 0, false}, Case{Abi::kX86_32, 0, false}, Case{Abi::kX86_64, 0, false},
                    Case{Abi::kNative, 2, true}, Case{Abi::kX86_32, 4, true}, Case{Abi::kX86_64, 1, false});
  CAPTURE(blkif::AbiName(c.abi), c.order, c.persistent);
  boost::asio::io_context io;
  auto device = std::make_shared<MemoryBlockDevice>(io, "vol", kDiskBytes);
  IoRunner threads(io, 2);
  RingRig rig;
  SimBlkfrontOptions o;
  o.abi = c.abi;
  o.ring_page_order = c.order;
  o.persistent_grants = c.persistent;
  o.indirect_segments = 256;
  REQUIRE(RingRig::Make(&rig, io, device, 7, o).ok());
  CHECK(rig.front->ring_size() == (c.abi == Abi::kX86_32 ? 32u : 32u) << c.order);

  // Direct: 4 KiB, 44 KiB (11 segments), partial sectors.
  auto a = RandomBytes(4096, 1);
  REQUIRE(*rig.front->Write(0, 8, a) == BLKIF_RSP_OKAY);
  auto b = RandomBytes(44 * 1024, 2);
  REQUIRE(*rig.front->Write(0, 1000, b) == BLKIF_RSP_OKAY);
  auto small = RandomBytes(1536, 3);
  REQUIRE(*rig.front->Write(0, 5000, small) == BLKIF_RSP_OKAY);
  // Indirect: 1 MiB = 256 segments; and a forced indirect 8 KiB.
  auto big = RandomBytes(kMiB, 4);
  REQUIRE(*rig.front->Write(0, 20000, big) == BLKIF_RSP_OKAY);
  auto forced = RandomBytes(8192, 5);
  REQUIRE(*rig.front->Write(0, 40000, forced, /*force_indirect=*/true) == BLKIF_RSP_OKAY);

  std::vector<uint8_t> disk = device->Snapshot();
  CHECK(std::memcmp(disk.data() + 8 * 512, a.data(), a.size()) == 0);
  CHECK(std::memcmp(disk.data() + 1000 * 512, b.data(), b.size()) == 0);
  CHECK(std::memcmp(disk.data() + 5000 * 512, small.data(), small.size()) == 0);
  CHECK(std::memcmp(disk.data() + 20000 * 512, big.data(), big.size()) == 0);
  CHECK(std::memcmp(disk.data() + 40000 * 512, forced.data(), forced.size()) == 0);

  std::vector<uint8_t> back(kMiB);
  REQUIRE(*rig.front->Read(0, 20000, back) == BLKIF_RSP_OKAY);
  CHECK(back == big);
  std::vector<uint8_t> back_b(b.size());
  REQUIRE(*rig.front->Read(0, 1000, back_b) == BLKIF_RSP_OKAY);
  CHECK(back_b == b);
  std::vector<uint8_t> back_small(small.size());
  REQUIRE(*rig.front->Read(0, 5000, back_small, true) == BLKIF_RSP_OKAY);
  CHECK(back_small == small);

  CHECK(*rig.front->Simple(0, BLKIF_OP_FLUSH_DISKCACHE) == BLKIF_RSP_OKAY);
  CHECK(*rig.front->Simple(0, BLKIF_OP_WRITE_BARRIER) == BLKIF_RSP_OKAY);
  CHECK(*rig.front->Simple(0, BLKIF_OP_DISCARD, 20000, 2048) == BLKIF_RSP_OKAY);
  auto counters = device->counters();
  CHECK(counters.flushes >= 2);
  CHECK(counters.discards == 1);
  rig.StopAll();
  CHECK(rig.broken_count() == 0);
  if (!c.persistent) CHECK(rig.hv->ActiveMappings(7) == 0);  // ring unmapped, nothing leaked
  CHECK(rig.hv->ActiveMappings(7) == 0);
}

TEST_CASE("blkif ring: a full ring of pipelined requests on several queues") {
  boost::asio::io_context io;
  auto device = std::make_shared<MemoryBlockDevice>(io, "vol", kDiskBytes);
  IoRunner threads(io, 2);
  RingRig rig;
  SimBlkfrontOptions o;
  o.queues = 3;
  o.ring_page_order = 1;
  REQUIRE(RingRig::Make(&rig, io, device, 9, o).ok());
  uint32_t slots = rig.front->ring_size();
  // Each queue writes its own region with a full ring of 4 KiB writes.
  for (uint32_t q = 0; q < 3; ++q) {
    for (uint32_t i = 0; i < slots; ++i) {
      auto data = RandomBytes(4096, q * 1000 + i);
      REQUIRE(rig.front->Submit(q, SimIo{BLKIF_OP_WRITE, (q * slots + i) * 8ull, 8, false}, data).ok());
    }
    CHECK(rig.front->Submit(q, SimIo{BLKIF_OP_WRITE, 0, 8, false}, RandomBytes(4096, 0)).status().code() ==
          StatusCode::kBusy);
    REQUIRE(rig.front->Kick(q).ok());
  }
  for (uint32_t q = 0; q < 3; ++q) {
    size_t got = 0;
    for (int round = 0; round < 100 && got < slots; ++round) {
      auto done = rig.front->Poll(q, std::chrono::milliseconds(200));
      REQUIRE(done.ok());
      for (auto& c : *done) {
        CHECK(c.status == BLKIF_RSP_OKAY);
        CHECK(c.operation == BLKIF_OP_WRITE);
      }
      got += done->size();
    }
    CHECK(got == slots);
  }
  std::vector<uint8_t> disk = device->Snapshot();
  for (uint32_t q = 0; q < 3; ++q) {
    for (uint32_t i = 0; i < slots; i += 7) {
      auto data = RandomBytes(4096, q * 1000 + i);
      CHECK(std::memcmp(disk.data() + (q * slots + i) * 4096ull, data.data(), 4096) == 0);
    }
  }
  rig.StopAll();
}

TEST_CASE("blkif ring: device errors become BLKIF_RSP_ERROR") {
  boost::asio::io_context io;
  auto device = std::make_shared<MemoryBlockDevice>(io, "vol", kDiskBytes);
  IoRunner threads(io, 1);
  RingRig rig;
  REQUIRE(RingRig::Make(&rig, io, device, 3, SimBlkfrontOptions{}).ok());
  device->FailWith(Status::IoError("pool read failed"));
  std::vector<uint8_t> buf(4096);
  CHECK(*rig.front->Read(0, 0, buf) == BLKIF_RSP_ERROR);
  CHECK(*rig.front->Write(0, 0, buf) == BLKIF_RSP_ERROR);
  device->FailWith(Status::Ok());
  CHECK(*rig.front->Read(0, 0, buf) == BLKIF_RSP_OKAY);
  rig.StopAll();
}

TEST_CASE("blkif ring: pause drains and stops consumption, resume continues") {
  boost::asio::io_context io;
  auto device = std::make_shared<MemoryBlockDevice>(io, "vol", kDiskBytes);
  IoRunner threads(io, 1);
  RingRig rig;
  REQUIRE(RingRig::Make(&rig, io, device, 4, SimBlkfrontOptions{}).ok());
  std::promise<void> drained;
  rig.workers[0]->Pause([&] { drained.set_value(); });
  drained.get_future().wait();
  auto id = rig.front->Submit(0, SimIo{BLKIF_OP_WRITE, 0, 8, false}, RandomBytes(4096, 9));
  REQUIRE(id.ok());
  REQUIRE(rig.front->Kick(0).ok());
  auto none = rig.front->Poll(0, std::chrono::milliseconds(300));
  REQUIRE(none.ok());
  CHECK(none->empty());  // paused: not consumed
  CHECK(device->counters().writes == 0);
  rig.workers[0]->Resume();
  std::vector<SimCompletion> got;
  for (int i = 0; i < 50 && got.empty(); ++i) got = *rig.front->Poll(0, std::chrono::milliseconds(200));
  REQUIRE(got.size() == 1);
  CHECK(got[0].id == *id);
  CHECK(device->counters().writes == 1);
  rig.StopAll();
}

}  // namespace
}  // namespace tapmap::testing
