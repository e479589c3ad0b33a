// The host-wide cap on persistently mapped grants (persistent_grant_quota.h): the
// rings of several guests together never keep more grants mapped than the quota, the
// segments beyond it are grant-copied, and the data is right either way.
#include <catch2/catch.hpp>

#include <cstring>

#include "common/units.h"
#include "tests/blkif/ring_harness.h"

namespace tapmap::testing {
namespace {

constexpr uint64_t kDiskBytes = 8 * kMiB;
constexpr xen::DomainId kGuestA = 21, kGuestB = 22;

TEST_CASE("blkif persistent grants: the host quota caps the mappings of all rings, the rest is copied") {
  constexpr uint64_t kQuota = 8;
  constexpr uint32_t kQueues = 2;
  boost::asio::io_context io;
  auto disk_a = std::make_shared<MemoryBlockDevice>(io, "a", kDiskBytes);
  auto disk_b = std::make_shared<MemoryBlockDevice>(io, "b", kDiskBytes);
  auto threads = std::make_unique<IoRunner>(io, 2);
  auto quota = std::make_shared<blkif::PersistentGrantQuota>(kQuota);
  RingRig a, b;
  a.persistent_quota = quota;
  b.persistent_quota = quota;
  SimBlkfrontOptions o;
  o.persistent_grants = true;
  o.indirect_segments = 256;
  o.queues = kQueues;
  REQUIRE(RingRig::Make(&a, io, disk_a, kGuestA, o).ok());
  REQUIRE(RingRig::Make(&b, io, disk_b, kGuestB, o, {}, a.hv).ok());
  const size_t ring_pages = 2 * kQueues;  // one page per ring, two guests

  // Each 256 KiB request uses 64 guest pages, granted persistently and reused.
  std::vector<std::vector<uint8_t>> written;
  for (int round = 0; round < 2; ++round) {
    for (RingRig* rig : {&a, &b}) {
      for (uint32_t q = 0; q < kQueues; ++q) {
        auto data = RandomBytes(256 * kKiB, static_cast<uint32_t>(written.size() + 1));
        uint64_t sector = (q * 2 + round) * 512;
        REQUIRE(*rig->front->Write(q, sector, data, true) == BLKIF_RSP_OKAY);
        std::vector<uint8_t> back(data.size());
        REQUIRE(*rig->front->Read(q, sector, back, true) == BLKIF_RSP_OKAY);
        CHECK(back == data);
        written.push_back(std::move(data));
      }
    }
  }
  blkif::PersistentGrantQuota::Usage usage = quota->usage();
  CHECK(usage.used == kQuota);
  CHECK(usage.peak == kQuota);
  CHECK(usage.refused > 0);  // segments served by grant copy
  CHECK(a.hv->ActiveMappings(kGuestA) + a.hv->ActiveMappings(kGuestB) <= ring_pages + kQuota);
  // The data reached the disks intact through both paths.
  size_t i = 0;
  for (int round = 0; round < 2; ++round) {
    for (MemoryBlockDevice* disk : {disk_a.get(), disk_b.get()}) {
      auto image = disk->Snapshot();
      for (uint32_t q = 0; q < kQueues; ++q) {
        uint64_t offset = (q * 2 + round) * 512 * kSectorSize;
        CHECK(std::memcmp(image.data() + offset, written[i].data(), written[i].size()) == 0);
        ++i;
      }
    }
  }
  // Unmapping gives the slots back.
  a.StopAll();
  b.StopAll();
  CHECK(quota->usage().used == 0);
  CHECK(a.hv->ActiveMappings(kGuestA) + a.hv->ActiveMappings(kGuestB) == 0);
  threads.reset();
}

}  // namespace
}  // namespace tapmap::testing
