// A malicious frontend: one test per validation rule of request_validator.h. Each
// asserts the error response AND that the backend keeps serving another guest whose
// disk stays untouched.
#include <catch2/catch.hpp>

#include <cstring>

#include "common/units.h"
#include "tests/blkif/gated_device.h"
#include "tests/blkif/ring_harness.h"
#include "tests/support/wait_until.h"

namespace tapmap::testing {
namespace {

constexpr xen::DomainId kEvil = 11;
constexpr xen::DomainId kGood = 12;
constexpr xen::DomainId kBystander = 13;
constexpr uint64_t kDiskBytes = 8 * kMiB;
constexpr uint64_t kDiskSectors = kDiskBytes / 512;

struct Attack {
  boost::asio::io_context io;
  std::shared_ptr<MemoryBlockDevice> evil_disk = std::make_shared<MemoryBlockDevice>(io, "evil", kDiskBytes);
  std::shared_ptr<MemoryBlockDevice> good_disk = std::make_shared<MemoryBlockDevice>(io, "good", kDiskBytes);
  std::unique_ptr<IoRunner> threads = std::make_unique<IoRunner>(io, 2);
  RingRig evil, good;

  explicit Attack(blkif::RequestLimits evil_limits = {}, SimBlkfrontOptions evil_options = {},
                  std::FILE* evil_log = stderr) {
    evil.log_sink = evil_log;
    REQUIRE(RingRig::Make(&evil, io, evil_disk, kEvil, evil_options, evil_limits).ok());
    SimBlkfrontOptions g;
    g.indirect_segments = 256;
    REQUIRE(RingRig::Make(&good, io, good_disk, kGood, g, {}, evil.hv).ok());
    REQUIRE(evil.hv->CreateDomain(kBystander, 16).ok());
  }
  ~Attack() {
    evil.StopAll();
    good.StopAll();
    threads.reset();
  }

  // Sends one raw native request from the evil guest; returns its response.
  SimCompletion Send(const void* slot, size_t size, uint64_t id) {
    REQUIRE(evil.front->SubmitRaw(0, {static_cast<const uint8_t*>(slot), size}).ok());
    for (int i = 0; i < 100; ++i) {
      auto done = evil.front->Poll(0, std::chrono::milliseconds(100));
      REQUIRE(done.ok());
      for (auto& c : *done) {
        if (c.id == id) return c;
      }
    }
    FAIL("no response to request " << id);
    return {};
  }
  SimCompletion Send(const blkif_request& r) { return Send(&r, sizeof r, r.id); }

  // The other guest still gets correct service, and its disk holds only its data.
  void GoodGuestStillServed() {
    auto data = RandomBytes(16384, 77);
    REQUIRE(*good.front->Write(0, 64, data) == BLKIF_RSP_OKAY);
    std::vector<uint8_t> back(data.size());
    REQUIRE(*good.front->Read(0, 64, back) == BLKIF_RSP_OKAY);
    CHECK(back == data);
    auto disk = good_disk->Snapshot();
    std::vector<uint8_t> expect(kDiskBytes, 0);
    std::memcpy(expect.data() + 64 * 512, data.data(), data.size());
    CHECK(disk == expect);
  }

  // A valid data page of the evil guest, granted to the backend.
  blkif_request_segment Page(bool read_only = false) {
    auto p = evil.front->GrantScratchPage(read_only);
    REQUIRE(p.ok());
    return blkif_request_segment{p->first, 0, 7};
  }
};

blkif_request Rw(uint8_t op, uint64_t id, uint64_t sector, std::initializer_list<blkif_request_segment> segs) {
  blkif_request r;
  std::memset(&r, 0, sizeof r);
  r.operation = op;
  r.id = id;
  r.sector_number = sector;
  r.nr_segments = static_cast<uint8_t>(segs.size());
  size_t i = 0;
  for (auto& s : segs) r.seg[i++] = s;
  return r;
}

TEST_CASE("malicious: an unknown operation gets EOPNOTSUPP") {
  Attack a;
  auto r = Rw(BLKIF_OP_RESERVED_1, 1, 0, {a.Page()});
  auto c = a.Send(r);
  CHECK(c.status == BLKIF_RSP_EOPNOTSUPP);
  CHECK(c.operation == BLKIF_OP_RESERVED_1);
  r.operation = 200;
  r.id = 2;
  CHECK(a.Send(r).status == BLKIF_RSP_EOPNOTSUPP);
  a.GoodGuestStillServed();
}

TEST_CASE("malicious: nr_segments out of range") {
  Attack a;
  auto r = Rw(BLKIF_OP_READ, 1, 0, {});
  CHECK(a.Send(r).status == BLKIF_RSP_ERROR);  // 0 segments for a read
  auto w = Rw(BLKIF_OP_WRITE, 2, 0, {a.Page()});
  w.nr_segments = 12;
  CHECK(a.Send(w).status == BLKIF_RSP_ERROR);
  w.nr_segments = 255;
  w.id = 3;
  CHECK(a.Send(w).status == BLKIF_RSP_ERROR);
  CHECK(a.evil_disk->counters().writes == 0);
  a.GoodGuestStillServed();
}

TEST_CASE("malicious: segment sector bounds (first <= last <= 7)") {
  Attack a;
  auto seg = a.Page();
  seg.first_sect = 3;
  seg.last_sect = 2;
  CHECK(a.Send(Rw(BLKIF_OP_WRITE, 1, 0, {seg})).status == BLKIF_RSP_ERROR);
  seg.first_sect = 0;
  seg.last_sect = 8;  // would run past the page
  CHECK(a.Send(Rw(BLKIF_OP_READ, 2, 0, {seg})).status == BLKIF_RSP_ERROR);
  CHECK(a.evil_disk->counters().writes + a.evil_disk->counters().reads == 0);
  a.GoodGuestStillServed();
}

TEST_CASE("malicious: sector ranges outside the disk, with and without overflow") {
  Attack a;
  auto seg = a.Page();
  CHECK(a.Send(Rw(BLKIF_OP_WRITE, 1, kDiskSectors - 4, {seg})).status == BLKIF_RSP_ERROR);
  CHECK(a.Send(Rw(BLKIF_OP_READ, 2, kDiskSectors, {seg})).status == BLKIF_RSP_ERROR);
  CHECK(a.Send(Rw(BLKIF_OP_WRITE, 3, UINT64_MAX - 3, {seg})).status == BLKIF_RSP_ERROR);
  CHECK(a.Send(Rw(BLKIF_OP_WRITE, 4, UINT64_MAX / 512, {seg})).status == BLKIF_RSP_ERROR);
  blkif_request_discard d;
  std::memset(&d, 0, sizeof d);
  d.operation = BLKIF_OP_DISCARD;
  d.id = 5;
  d.sector_number = 8;
  d.nr_sectors = UINT64_MAX - 4;
  CHECK(a.Send(&d, sizeof d, d.id).status == BLKIF_RSP_ERROR);
  // The last sectors themselves are fine.
  CHECK(a.Send(Rw(BLKIF_OP_WRITE, 6, kDiskSectors - 8, {seg})).status == BLKIF_RSP_OKAY);
  CHECK(a.evil_disk->counters().discards == 0);
  CHECK(a.evil_disk->counters().writes == 1);
  a.GoodGuestStillServed();
}

TEST_CASE("malicious: writes to a read-only disk") {
  blkif::RequestLimits ro;
  ro.read_only = true;
  Attack a(ro);
  auto seg = a.Page();
  CHECK(a.Send(Rw(BLKIF_OP_WRITE, 1, 0, {seg})).status == BLKIF_RSP_ERROR);
  CHECK(a.Send(Rw(BLKIF_OP_WRITE_BARRIER, 2, 0, {seg})).status == BLKIF_RSP_ERROR);
  CHECK(a.Send(Rw(BLKIF_OP_FLUSH_DISKCACHE, 3, 0, {seg})).status == BLKIF_RSP_ERROR);
  blkif_request_discard d;
  std::memset(&d, 0, sizeof d);
  d.operation = BLKIF_OP_DISCARD;
  d.id = 4;
  d.nr_sectors = 8;
  CHECK(a.Send(&d, sizeof d, d.id).status == BLKIF_RSP_ERROR);
  CHECK(a.Send(Rw(BLKIF_OP_READ, 5, 0, {seg})).status == BLKIF_RSP_OKAY);
  CHECK(a.evil_disk->counters().writes == 0);
  CHECK(a.evil_disk->counters().discards == 0);
  a.GoodGuestStillServed();
}

TEST_CASE("malicious: unusable grants fail the request") {
  Attack a;
  auto evil_seg = [&](xen::GrantRef ref) { return blkif_request_segment{ref, 0, 7}; };
  // Never granted.
  CHECK(a.Send(Rw(BLKIF_OP_WRITE, 1, 0, {evil_seg(9999)})).status == BLKIF_RSP_ERROR);
  // Granted to another domain than the backend.
  auto foreign = a.evil.front->GrantScratchPage(false, kBystander);
  REQUIRE(foreign.ok());
  CHECK(a.Send(Rw(BLKIF_OP_WRITE, 2, 0, {evil_seg(foreign->first)})).status == BLKIF_RSP_ERROR);
  // The good guest's own grant used by the evil one (grant refs are per domain).
  // (a reference number the evil guest never granted, valid in the good one's table)
  Result<std::pair<xen::GrantRef, uint8_t*>> victim = Status::NotFound("");
  for (int i = 0; i < 20; ++i) victim = a.good.front->GrantScratchPage(false);
  REQUIRE(victim.ok());
  std::memset(victim->second, 0x5a, 4096);
  CHECK(a.Send(Rw(BLKIF_OP_WRITE, 3, 0, {evil_seg(victim->first)})).status == BLKIF_RSP_ERROR);
  // Read-only grant as the target of a read (the backend would have to write it).
  CHECK(a.Send(Rw(BLKIF_OP_READ, 4, 0, {a.Page(/*read_only=*/true)})).status == BLKIF_RSP_ERROR);
  // A revoked grant.
  auto page = a.evil.front->GrantScratchPage(false);
  REQUIRE(a.evil.hv->EndAccess(kEvil, page->first).ok());
  CHECK(a.Send(Rw(BLKIF_OP_READ, 5, 0, {evil_seg(page->first)})).status == BLKIF_RSP_ERROR);
  // A request mixing one good and one bad segment fails as a whole.
  CHECK(a.Send(Rw(BLKIF_OP_WRITE, 6, 0, {a.Page(), evil_seg(9998)})).status == BLKIF_RSP_ERROR);
  CHECK(a.evil_disk->counters().writes == 0);
  auto evil_disk = a.evil_disk->Snapshot();
  CHECK(std::all_of(evil_disk.begin(), evil_disk.end(), [](uint8_t b) { return b == 0; }));
  a.GoodGuestStillServed();
}

TEST_CASE("malicious: indirect requests") {
  Attack a;
  auto indirect = [&](uint64_t id, uint8_t op, uint16_t nseg, xen::GrantRef page) {
    blkif_request_indirect r;
    std::memset(&r, 0, sizeof r);
    r.operation = BLKIF_OP_INDIRECT;
    r.indirect_op = op;
    r.nr_segments = nseg;
    r.id = id;
    r.indirect_grefs[0] = page;
    return r;
  };
  auto ipage = a.evil.front->GrantScratchPage(true);
  REQUIRE(ipage.ok());
  auto* segs = reinterpret_cast<blkif_request_segment*>(ipage->second);
  for (int i = 0; i < 16; ++i) segs[i] = a.Page();

  auto ok = indirect(1, BLKIF_OP_WRITE, 16, ipage->first);
  auto ok_rsp = a.Send(&ok, sizeof ok, ok.id);
  CHECK(ok_rsp.status == BLKIF_RSP_OKAY);
  CHECK(ok_rsp.operation == BLKIF_OP_WRITE);  // answered with the indirect_op, as blkfront checks
  auto too_many = indirect(2, BLKIF_OP_WRITE, 257, ipage->first);
  CHECK(a.Send(&too_many, sizeof too_many, too_many.id).status == BLKIF_RSP_ERROR);
  auto zero = indirect(3, BLKIF_OP_READ, 0, ipage->first);
  CHECK(a.Send(&zero, sizeof zero, zero.id).status == BLKIF_RSP_ERROR);
  auto bad_op = indirect(4, BLKIF_OP_FLUSH_DISKCACHE, 1, ipage->first);
  CHECK(a.Send(&bad_op, sizeof bad_op, bad_op.id).status == BLKIF_RSP_ERROR);
  auto bad_page = indirect(5, BLKIF_OP_READ, 4, 9999);
  auto bad_page_rsp = a.Send(&bad_page, sizeof bad_page, bad_page.id);
  CHECK(bad_page_rsp.status == BLKIF_RSP_ERROR);
  CHECK(bad_page_rsp.operation == BLKIF_OP_READ);
  auto foreign = a.evil.front->GrantScratchPage(true, kBystander);
  auto foreign_page = indirect(6, BLKIF_OP_READ, 4, foreign->first);
  CHECK(a.Send(&foreign_page, sizeof foreign_page, foreign_page.id).status == BLKIF_RSP_ERROR);
  segs[9].last_sect = 9;  // one bad segment inside the indirect page
  auto bad_seg = indirect(7, BLKIF_OP_WRITE, 16, ipage->first);
  CHECK(a.Send(&bad_seg, sizeof bad_seg, bad_seg.id).status == BLKIF_RSP_ERROR);
  CHECK(a.evil_disk->counters().writes == 1);
  a.GoodGuestStillServed();
}

TEST_CASE("malicious: features not offered get EOPNOTSUPP") {
  blkif::RequestLimits limits;
  limits.discard = false;
  limits.barrier = false;
  limits.max_indirect_segments = 0;
  Attack a(limits);
  blkif_request_discard d;
  std::memset(&d, 0, sizeof d);
  d.operation = BLKIF_OP_DISCARD;
  d.id = 1;
  d.nr_sectors = 8;
  CHECK(a.Send(&d, sizeof d, d.id).status == BLKIF_RSP_EOPNOTSUPP);
  CHECK(a.Send(Rw(BLKIF_OP_WRITE_BARRIER, 2, 0, {})).status == BLKIF_RSP_EOPNOTSUPP);
  blkif_request_indirect r;
  std::memset(&r, 0, sizeof r);
  r.operation = BLKIF_OP_INDIRECT;
  r.indirect_op = BLKIF_OP_READ;
  r.nr_segments = 1;
  r.id = 3;
  CHECK(a.Send(&r, sizeof r, r.id).status == BLKIF_RSP_EOPNOTSUPP);
  a.GoodGuestStillServed();
}

TEST_CASE("malicious: a producer index more than a ring ahead breaks only that ring") {
  Attack a;
  REQUIRE(a.evil.front->ForceProducer(0, a.evil.front->ring_size() + 5).ok());
  REQUIRE(WaitUntil([&] { return a.evil.broken_count() != 0; }));
  REQUIRE(a.evil.broken_count() == 1);
  CHECK(a.evil.broken[0].message().find("ring broken") != std::string::npos);
  CHECK(a.evil_disk->counters().reads + a.evil_disk->counters().writes == 0);
  a.GoodGuestStillServed();
}

TEST_CASE("malicious: a flood of invalid requests is answered and the ring stays usable") {
  // Declared before the rig so that it is closed after the workers are gone.
  std::unique_ptr<std::FILE, int (*)(std::FILE*)> log_file(std::tmpfile(), &std::fclose);
  REQUIRE(log_file != nullptr);
  std::FILE* log = log_file.get();
  blkif::RequestLimits limits;
  Attack a(limits, {}, log);
  uint32_t slots = a.evil.front->ring_size();
  for (int round = 0; round < 8; ++round) {
    for (uint32_t i = 0; i < slots; ++i) {
      auto r = Rw(BLKIF_OP_READ, 1000 + i, UINT64_MAX, {});
      r.nr_segments = 200;
      REQUIRE(a.evil.front->SubmitRaw(0, {reinterpret_cast<const uint8_t*>(&r), sizeof r}).ok());
    }
    size_t answered = 0;
    for (int i = 0; i < 100 && answered < slots; ++i) {
      auto done = a.evil.front->Poll(0, std::chrono::milliseconds(100));
      REQUIRE(done.ok());
      for (auto& c : *done) CHECK(c.status == BLKIF_RSP_ERROR);
      answered += done->size();
    }
    REQUIRE(answered == slots);
  }
  CHECK(a.evil.workers[0]->counters().rejected == 8 * slots);
  // The journal is not flooded: rejections are logged through a rate limiter
  // (5 lines per second in this rig).
  std::fflush(log);
  std::rewind(log);
  int lines = 0;
  for (int ch; (ch = std::fgetc(log)) != EOF;) lines += ch == '\n';
  CHECK(lines >= 1);
  CHECK(lines < 40);
  CHECK(a.evil.broken_count() == 0);
  std::vector<uint8_t> buf(4096);
  CHECK(*a.evil.front->Read(0, 0, buf) == BLKIF_RSP_OKAY);
  a.GoodGuestStillServed();
}

// Fills every slot of every queue with indirect 1 MiB reads that all name the same
// two guest pages (the guest spends nothing); returns the number of requests.
uint32_t FillWithLargeReads(RingRig& rig, uint32_t queues) {
  auto data = rig.front->GrantScratchPage(false);
  auto ipage = rig.front->GrantScratchPage(true);
  REQUIRE(data.ok());
  REQUIRE(ipage.ok());
  auto* segs = reinterpret_cast<blkif_request_segment*>(ipage->second);
  for (int i = 0; i < 256; ++i) segs[i] = blkif_request_segment{data->first, 0, 7};
  uint32_t slots = rig.front->ring_size();
  for (uint32_t q = 0; q < queues; ++q) {
    for (uint32_t i = 0; i < slots; ++i) {
      blkif_request_indirect r;
      std::memset(&r, 0, sizeof r);
      r.operation = BLKIF_OP_INDIRECT;
      r.indirect_op = BLKIF_OP_READ;
      r.nr_segments = 256;
      r.id = 1 + q * slots + i;
      r.sector_number = (i % 4) * 2048;
      r.indirect_grefs[0] = ipage->first;
      REQUIRE(rig.front->SubmitRaw(q, {reinterpret_cast<const uint8_t*>(&r), sizeof r}).ok());
    }
  }
  return queues * slots;
}

// Collects `count` responses over `queues` queues; all must be OKAY.
void ExpectAllAnswered(RingRig& rig, uint32_t queues, uint32_t count) {
  uint32_t answered = 0, ok = 0;
  REQUIRE(WaitUntil(
      [&] {
        for (uint32_t q = 0; q < queues; ++q) {
          auto done = rig.front->Poll(q, std::chrono::milliseconds(0));
          REQUIRE(done.ok());
          for (auto& c : *done) ok += c.status == BLKIF_RSP_OKAY;
          answered += static_cast<uint32_t>(done->size());
        }
        return answered == count;
      },
      std::chrono::seconds(60)));
  CHECK(ok == count);
}

TEST_CASE("malicious: every slot of every queue with 1 MiB requests holds at most the in-flight budget") {
  constexpr uint64_t kDiskBudget = 8 * kMiB, kHostBudget = 12 * kMiB;
  boost::asio::io_context io;
  auto gate_a = std::make_shared<GatedDevice>(std::make_shared<MemoryBlockDevice>(io, "a", kDiskBytes));
  auto gate_b = std::make_shared<GatedDevice>(std::make_shared<MemoryBlockDevice>(io, "b", kDiskBytes));
  gate_a->Close();
  gate_b->Close();
  auto host = blkif::InflightBudget::Create(kHostBudget);
  auto threads = std::make_unique<IoRunner>(io, 2);
  RingRig a, b;
  a.budget = host->NewAccount(kDiskBudget);
  b.budget = host->NewAccount(kDiskBudget);
  SimBlkfrontOptions four_queues;
  four_queues.queues = 4;
  REQUIRE(RingRig::Make(&a, io, gate_a, kEvil, four_queues).ok());
  REQUIRE(RingRig::Make(&b, io, gate_b, kGood, {}, {}, a.hv).ok());

  uint32_t sent_a = FillWithLargeReads(a, 4);
  uint32_t sent_b = FillWithLargeReads(b, 1);
  CHECK(sent_a * kMiB >= 16 * kDiskBudget);  // what the rings could make us hold
  // Every ring stops consuming, for want of its disk's or the host's bytes, and waits.
  REQUIRE(WaitUntil([&] { return a.Totals().budget_waits == 4 && b.Totals().budget_waits == 1; }));
  CHECK(gate_a->bytes() + gate_b->bytes() == kHostBudget);
  CHECK(gate_a->bytes() <= kDiskBudget);
  CHECK(gate_b->bytes() <= kDiskBudget);
  CHECK(a.Totals().requests < sent_a);  // the rest stays on the ring

  // Once the device answers, every request completes; the bounds held throughout.
  gate_a->Open();
  gate_b->Open();
  ExpectAllAnswered(a, 4, sent_a);
  ExpectAllAnswered(b, 1, sent_b);
  CHECK(gate_a->peak_bytes() <= kDiskBudget);
  CHECK(gate_b->peak_bytes() <= kDiskBudget);
  CHECK(gate_a->peak_bytes() + gate_b->peak_bytes() >= kHostBudget);
  CHECK(a.budget->usage().peak <= kDiskBudget);
  CHECK(host->usage().peak == kHostBudget);
  CHECK(host->usage().in_flight == 0);
  CHECK(a.Totals().requests == sent_a);
  CHECK(a.broken_count() == 0);
  a.StopAll();
  b.StopAll();
  threads.reset();
}

TEST_CASE("malicious: an event storm with nothing on the ring is damped, requests are still served") {
  constexpr uint32_t kThreshold = 16, kStorm = 5000;
  boost::asio::io_context io;
  auto disk = std::make_shared<MemoryBlockDevice>(io, "evil", kDiskBytes);
  auto threads = std::make_unique<IoRunner>(io, 2);
  RingRig rig;
  rig.storm.spurious_threshold = kThreshold;
  rig.storm.interval = std::chrono::hours(1);  // the whole test is one interval: counts, not rates
  rig.storm.backoff = std::chrono::milliseconds(20);
  REQUIRE(RingRig::Make(&rig, io, disk, kEvil, {}).ok());
  blkif::RingWorker& w = *rig.workers[0];

  // Notifications handled one by one (each sent once the previous one was taken):
  // the first kThreshold spurious ones are only counted, the next starts damping.
  for (uint32_t i = 1; i <= kThreshold + 1; ++i) {
    REQUIRE(rig.front->NotifyOnly(0).ok());
    REQUIRE(WaitUntil([&] { return w.counters().wakeups == i; }));
    CHECK(w.counters().storms == (i > kThreshold ? 1u : 0u));
  }
  CHECK(w.counters().spurious == kThreshold + 1);

  // Damped, a sustained storm (each notification sent once the previous one was taken
  // or put off) costs one ring pass per two notifications at most: every event the
  // ring takes is preceded by a backoff during which the port stays masked and the
  // next notification only marks it pending. Undamped, each one is a pass.
  constexpr uint32_t kPaced = 60;
  const auto before = w.counters();
  for (uint32_t i = 0; i < kPaced; ++i) {
    auto seen = w.counters();
    REQUIRE(rig.front->NotifyOnly(0).ok());
    REQUIRE(WaitUntil([&] {
      auto c = w.counters();
      return c.wakeups + c.damped > seen.wakeups + seen.damped;
    }));
  }
  auto paced = w.counters();
  uint64_t passes = paced.wakeups - before.wakeups;
  CHECK(passes <= kPaced / 2 + 1);
  CHECK(passes <= paced.damped - before.damped);

  // A burst, and a request sent amid it is still served (no lost wake-up).
  for (uint32_t i = 0; i < kStorm; ++i) REQUIRE(rig.front->NotifyOnly(0).ok());
  auto data = RandomBytes(4096, 5);
  REQUIRE(*rig.front->Write(0, 8, data) == BLKIF_RSP_OKAY);
  const auto after = w.counters();
  uint64_t handled = after.wakeups - paced.wakeups;
  CHECK(handled >= 1);
  CHECK(handled <= after.damped - paced.damped);
  CHECK(after.storms == 1);
  CHECK(disk->counters().writes == 1);
  rig.StopAll();
  threads.reset();
}

TEST_CASE("malicious: rings paused or stopped while waiting for in-flight bytes give every byte back") {
  constexpr uint64_t kBudget = 4 * kMiB;
  boost::asio::io_context io;
  auto gate = std::make_shared<GatedDevice>(std::make_shared<MemoryBlockDevice>(io, "evil", kDiskBytes));
  auto host = blkif::InflightBudget::Create(kBudget);
  auto threads = std::make_unique<IoRunner>(io, 2);
  RingRig rig;
  rig.budget = host->NewAccount(kBudget);
  REQUIRE(RingRig::Make(&rig, io, gate, kEvil, {}).ok());
  blkif::RingWorker& w = *rig.workers[0];

  // Paused while waiting: the requests in flight drain, the waiting one is not started.
  gate->Close();
  uint32_t sent = FillWithLargeReads(rig, 1);
  REQUIRE(WaitUntil([&] { return w.counters().budget_waits == 1; }));
  std::promise<void> drained;
  w.Pause([&drained] { drained.set_value(); });
  gate->Open();
  REQUIRE(drained.get_future().wait_for(std::chrono::seconds(30)) == std::future_status::ready);
  CHECK(gate->bytes() == 0);
  CHECK(w.counters().requests == 5);  // 4 executed and answered, 1 taken and kept
  // Resumed: everything completes, within the budget.
  w.Resume();
  ExpectAllAnswered(rig, 1, sent);
  CHECK(gate->peak_bytes() <= kBudget);

  // Stopped while waiting: the in-flight requests are answered, the rest stays on the
  // ring, and every byte goes back (the kept request's grant included).
  gate->Close();
  const uint64_t waits_before = w.counters().budget_waits;
  sent = FillWithLargeReads(rig, 1);
  REQUIRE(WaitUntil([&] { return w.counters().budget_waits == waits_before + 1; }));
  std::promise<void> stopped;
  w.Stop([&stopped] { stopped.set_value(); });
  gate->Open();
  REQUIRE(stopped.get_future().wait_for(std::chrono::seconds(30)) == std::future_status::ready);
  REQUIRE(WaitUntil([&] { return host->usage().in_flight == 0; }));
  CHECK(rig.budget->usage().in_flight == 0);
  auto done = rig.front->Poll(0, std::chrono::milliseconds(0));
  REQUIRE(done.ok());
  CHECK(done->size() == kBudget / kMiB);
  rig.workers.clear();
  threads.reset();
}

}  // namespace
}  // namespace tapmap::testing
