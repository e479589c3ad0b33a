// The xenbus handshake against a real xenstored, replaying what xl 4.17 does.
#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <future>
#include <thread>

#include "common/units.h"
#include "tests/blkif/handshake_rig.h"
#include "tests/support/wait_until.h"

namespace tapmap::testing {
namespace {

constexpr uint32_t kDom = 5;
constexpr uint32_t kDev = 51712;  // xvda

std::string Be(const std::string& node) { return HandshakeRig::BackendPath(kDom, kDev) + "/" + node; }
std::string Fe(const std::string& node) { return HandshakeRig::FrontendPath(kDom, kDev) + "/" + node; }

// Brings a guest's disk to Connected like xl + blkfront do; returns the frontend.
std::unique_ptr<SimBlkfront> ConnectDisk(HandshakeRig& rig, const std::string& volume, SimBlkfrontOptions o = {}) {
  REQUIRE(rig.XlAddDisk(kDom, kDev, volume).ok());
  // libxl waits (10 s at most) for InitWait before it runs the hotplug script.
  REQUIRE(rig.WaitNode(Be("state"), "2") == "2");
  auto attached = rig.Attach(kDom, kDev, volume);
  REQUIRE(attached.ok());
  CHECK(attached->state == "initwait");
  REQUIRE(rig.toolstack->Write(xen::kNoTransaction, Be("hotplug-status"), "connected").ok());
  auto front = rig.Guest(kDom, o);
  REQUIRE(front);
  REQUIRE(front->Publish(*rig.toolstack, HandshakeRig::FrontendPath(kDom, kDev)).ok());
  REQUIRE(rig.WaitNode(Be("state"), "4") == "4");
  REQUIRE(rig.toolstack->Write(xen::kNoTransaction, Fe("state"), "4").ok());
  return front;
}

TEST_CASE("blkif handshake: xl 4.17 disk creation, I/O, removal") {
  HandshakeRig rig;
  auto vol = rig.opener.Add("vm1", 32 * kMiB);
  REQUIRE(rig.StartBackend().ok());
  REQUIRE(rig.XlAddDisk(kDom, kDev, "vm1").ok());

  // Features are published and InitWait reached before the hotplug script runs.
  CHECK(rig.WaitNode(Be("state"), "2") == "2");
  CHECK(*rig.toolstack->Read(0, Be("feature-max-indirect-segments")) == "256");
  CHECK(*rig.toolstack->Read(0, Be("max-ring-page-order")) == "4");
  CHECK(*rig.toolstack->Read(0, Be("multi-queue-max-queues")) == "4");
  CHECK(*rig.toolstack->Read(0, Be("feature-flush-cache")) == "1");
  CHECK(rig.opener.opens() == 0);  // the volume is opened by the hotplug script's attach

  auto attached = rig.Attach(kDom, kDev, "vm1");
  REQUIRE(attached.ok());
  CHECK(attached->volume == "vm1");
  CHECK(attached->backend_path == "backend/vbd/5/51712");
  CHECK(rig.opener.opens() == 1);
  // Attaching again with the same volume is a no-op; another volume is refused.
  CHECK(rig.Attach(kDom, kDev, "vm1").ok());
  rig.opener.Add("other", kMiB);
  CHECK(rig.Attach(kDom, kDev, "other").status().code() == StatusCode::kAlreadyExists);

  SimBlkfrontOptions o;
  o.ring_page_order = 2;
  o.queues = 2;
  o.abi = blkif::Abi::kX86_64;
  o.indirect_segments = 256;  // read from feature-max-indirect-segments by blkfront
  auto front = rig.Guest(kDom, o);
  REQUIRE(front);
  REQUIRE(front->Publish(*rig.toolstack, HandshakeRig::FrontendPath(kDom, kDev)).ok());
  REQUIRE(rig.WaitNode(Be("state"), "4") == "4");
  CHECK(*rig.toolstack->Read(0, Be("sectors")) == std::to_string(32 * kMiB / 512));
  CHECK(*rig.toolstack->Read(0, Be("info")) == "0");
  CHECK(*rig.toolstack->Read(0, Be("sector-size")) == "512");
  CHECK(*rig.toolstack->Read(0, Be("feature-discard")) == "1");
  REQUIRE(rig.toolstack->Write(0, Fe("state"), "4").ok());

  auto data = RandomBytes(64 * 1024, 11);
  REQUIRE(*front->Write(1, 2048, data) == BLKIF_RSP_OKAY);
  std::vector<uint8_t> back(data.size());
  REQUIRE(*front->Read(0, 2048, back) == BLKIF_RSP_OKAY);
  CHECK(back == data);
  CHECK(std::memcmp(vol->Snapshot().data() + 2048 * 512, data.data(), data.size()) == 0);

  auto list = rig.List();
  REQUIRE(list.size() == 1);
  CHECK(list[0].state == "connected");
  CHECK(list[0].rings == 2);
  CHECK(list[0].protocol == "x86_64-abi");
  // Per-queue diagnostics: each request was taken on its own queue (counted before
  // it is answered, so this does not depend on timing).
  REQUIRE(list[0].queues.size() == 2);
  CHECK(list[0].queues[0].requests == 1);
  CHECK(list[0].queues[1].requests == 1);
  CHECK(list[0].queues[0].rejected + list[0].queues[1].rejected == 0);

  // xl block-detach / domain shutdown: libxl writes online=0, state=Closing.
  REQUIRE(rig.XlRemoveDisk(kDom, kDev).ok());
  CHECK(rig.WaitNode(Be("state"), "6") == "6");
  CHECK(rig.hv->ActiveMappings(kDom) == 0);  // rings unmapped before Closed
  // Then the hotplug script's remove: vbd-detach.
  CHECK(rig.opener.OpenForWrite("vm1"));
  REQUIRE(rig.Detach(kDom, kDev).ok());
  CHECK_FALSE(rig.opener.OpenForWrite("vm1"));
  CHECK(rig.List().empty());
  CHECK(rig.Detach(kDom, kDev).code() == StatusCode::kNotFound);
}

TEST_CASE("blkif handshake: attach of a device that is not in xenstore fails clearly") {
  HandshakeRig rig;
  rig.opener.Add("vm1", kMiB);
  REQUIRE(rig.StartBackend().ok());
  auto r = rig.Attach(9, 768, "vm1");
  CHECK(r.status().code() == StatusCode::kNotFound);
  // An unknown volume surfaces as the opener's error (the script reports hotplug-error).
  REQUIRE(rig.XlAddDisk(kDom, kDev, "nope").ok());
  REQUIRE(rig.WaitNode(Be("state"), "2") == "2");
  CHECK(rig.Attach(kDom, kDev, "nope").status().code() == StatusCode::kNotFound);
}

TEST_CASE("blkif handshake: devices of other scripts are left alone unless attached") {
  HandshakeRig rig;
  rig.opener.Add("vm1", kMiB);
  REQUIRE(rig.StartBackend().ok());
  REQUIRE(rig.XlAddDisk(kDom, kDev, "vm1", "w", "vbd", "/etc/xen/scripts/block").ok());
  CHECK(rig.WaitNode(Be("state"), "2", std::chrono::milliseconds(500)) == "1");
  auto r = rig.Attach(kDom, kDev, "vm1");
  REQUIRE(r.ok());
  CHECK(rig.WaitNode(Be("state"), "2") == "2");
}

TEST_CASE("blkif handshake: vbd3 layout and read-only disks") {
  HandshakeRig rig;
  rig.opener.Add("ro", 8 * kMiB);
  REQUIRE(rig.StartBackend().ok());
  REQUIRE(rig.XlAddDisk(kDom, kDev, "ro", "r", "vbd3").ok());
  std::string be = HandshakeRig::BackendPath(kDom, kDev, "vbd3");
  CHECK(rig.WaitNode(be + "/state", "2") == "2");
  // The hotplug script asks for read-write, but the toolstack's mode=r wins.
  auto r = rig.Attach(kDom, kDev, "ro", /*ro=*/false, blkif::Layout::kVbd3);
  REQUIRE(r.ok());
  CHECK(r->read_only);
  CHECK_FALSE(rig.opener.OpenForWrite("ro"));
  auto front = rig.Guest(kDom);
  REQUIRE(front->Publish(*rig.toolstack, HandshakeRig::FrontendPath(kDom, kDev)).ok());
  CHECK(rig.WaitNode(be + "/state", "4") == "4");
  CHECK(*rig.toolstack->Read(0, be + "/info") == std::to_string(VDISK_READONLY));
  CHECK(*rig.toolstack->Read(0, be + "/feature-discard") == "0");
  std::vector<uint8_t> buf(4096, 1);
  CHECK(*front->Write(0, 0, buf) == BLKIF_RSP_ERROR);
  CHECK(*front->Read(0, 0, buf) == BLKIF_RSP_OKAY);
}

TEST_CASE("blkif handshake: close and reconnect from Closed") {
  HandshakeRig rig;
  auto vol = rig.opener.Add("vm1", 16 * kMiB);
  REQUIRE(rig.StartBackend().ok());
  auto front = ConnectDisk(rig, "vm1");
  auto data = RandomBytes(4096, 1);
  REQUIRE(*front->Write(0, 0, data) == BLKIF_RSP_OKAY);

  // The guest closes the device (e.g. module unload): Closing -> Closed.
  REQUIRE(rig.toolstack->Write(0, Fe("state"), "5").ok());
  CHECK(rig.WaitNode(Be("state"), "5") == "5");
  REQUIRE(rig.toolstack->Write(0, Fe("state"), "6").ok());
  CHECK(rig.WaitNode(Be("state"), "6") == "6");
  CHECK(rig.hv->ActiveMappings(kDom) == 0);

  // It comes back (module reload): Initialising -> the backend offers InitWait again.
  REQUIRE(rig.toolstack->Write(0, Fe("state"), "1").ok());
  CHECK(rig.WaitNode(Be("state"), "2") == "2");
  // (now as a 32-bit guest: the protocol node selects the ring layout)
  SimBlkfrontOptions o32;
  o32.abi = blkif::Abi::kX86_32;
  auto front2 = rig.Guest(kDom, o32);
  REQUIRE(front2);
  REQUIRE(front2->Publish(*rig.toolstack, HandshakeRig::FrontendPath(kDom, kDev)).ok());
  CHECK(rig.WaitNode(Be("state"), "4") == "4");
  CHECK(rig.List()[0].protocol == "x86_32-abi");
  std::vector<uint8_t> back(4096);
  REQUIRE(*front2->Read(0, 0, back) == BLKIF_RSP_OKAY);
  CHECK(back == data);
}

TEST_CASE("blkif handshake: a frontend that skips states straight to Connected") {
  HandshakeRig rig;
  rig.opener.Add("vm1", 16 * kMiB);
  REQUIRE(rig.StartBackend().ok());
  REQUIRE(rig.XlAddDisk(kDom, kDev, "vm1").ok());
  auto front = rig.Guest(kDom);
  // The guest publishes and says Connected before the volume is even attached.
  REQUIRE(front->Publish(*rig.toolstack, HandshakeRig::FrontendPath(kDom, kDev)).ok());
  REQUIRE(rig.toolstack->Write(0, Fe("state"), "4").ok());
  CHECK(rig.WaitNode(Be("state"), "2") == "2");
  REQUIRE(rig.Attach(kDom, kDev, "vm1").ok());
  CHECK(rig.WaitNode(Be("state"), "4") == "4");
  std::vector<uint8_t> buf(512);
  CHECK(*front->Read(0, 0, buf) == BLKIF_RSP_OKAY);
}

TEST_CASE("blkif handshake: frontend death disconnects and the backend keeps serving others") {
  HandshakeRig rig;
  rig.opener.Add("vm1", 16 * kMiB);
  REQUIRE(rig.StartBackend().ok());
  auto front = ConnectDisk(rig, "vm1");
  // The guest is destroyed: the domain goes, xl removes its device directory.
  rig.hv->DestroyDomain(kDom);
  REQUIRE(rig.toolstack->Remove(0, HandshakeRig::FrontendPath(kDom, kDev)).ok());
  CHECK(rig.WaitNode(Be("state"), "6") == "6");
  auto list = rig.List();
  REQUIRE(list.size() == 1);
  CHECK(list[0].rings == 0);
  // xl removes the backend directory too: the device is released.
  REQUIRE(rig.toolstack->Remove(0, HandshakeRig::BackendPath(kDom, kDev)).ok());
  CHECK(WaitUntil([&] { return rig.List().empty(); }));
  CHECK_FALSE(rig.opener.OpenForWrite("vm1"));
}

// What libxl does with the disks of a domain whose creation failed (seen in the Xen
// lab: xl create failing after the disk was set up): online=0 and Closing on the
// backend, then both directories removed, while the hotplug script's attach may still
// be on its way. Whatever the interleaving, the device is released, the volume closed,
// and the same disk is served normally afterwards.
TEST_CASE("blkif handshake: a disk abandoned by a failed domain create is released, then served again") {
  HandshakeRig rig;
  auto vol = rig.opener.Add("vm1", 16 * kMiB);
  REQUIRE(rig.StartBackend().ok());
  for (int round = 0; round < 4; ++round) {
    INFO("round " << round);
    REQUIRE(rig.XlAddDisk(kDom, kDev, "vm1").ok());
    REQUIRE(rig.WaitNode(Be("state"), "2") == "2");
    // Shared with the callback: a late answer after a failed check must not touch a dead promise.
    auto attached = std::make_shared<std::promise<Result<blkif::VbdInfo>>>();
    if (round % 2 == 0) {
      // The removal races the attach.
      blkif::AttachSpec spec;
      spec.key = blkif::VbdKey{kDom, kDev, blkif::Layout::kVbd};
      spec.volume = "vm1";
      rig.manager->Attach(spec, [attached](Result<blkif::VbdInfo> r) { attached->set_value(std::move(r)); });
    } else {
      // The attach completed (InitWait, volume open) before the toolstack gave up.
      auto r = rig.Attach(kDom, kDev, "vm1");
      REQUIRE(r.ok());
      CHECK(rig.opener.OpenForWrite("vm1"));
      attached->set_value(std::move(r));
    }
    REQUIRE(rig.XlRemoveDisk(kDom, kDev).ok());
    rig.WaitNode(Be("state"), "6", std::chrono::seconds(2));  // libxl waits, then goes on
    REQUIRE(rig.toolstack->Remove(0, HandshakeRig::BackendPath(kDom, kDev)).ok());
    REQUIRE(rig.toolstack->Remove(0, HandshakeRig::FrontendPath(kDom, kDev)).ok());
    auto future = attached->get_future();
    REQUIRE(future.wait_for(std::chrono::seconds(10)) == std::future_status::ready);  // answered, either way
    CHECK(WaitUntil([&] { return rig.List().empty(); }));
    CHECK(WaitUntil([&] { return !rig.opener.OpenForWrite("vm1"); }));
    CHECK(rig.hv->ActiveMappings(kDom) == 0);
    // Nothing the backend wrote late re-created the removed directory.
    CHECK_FALSE(rig.toolstack->Read(0, HandshakeRig::BackendPath(kDom, kDev)).ok());
  }
  // The domain is created again and this time its disk connects and serves I/O.
  auto front = ConnectDisk(rig, "vm1");
  auto data = RandomBytes(8192, 7);
  REQUIRE(*front->Write(0, 8, data) == BLKIF_RSP_OKAY);
  std::vector<uint8_t> back(8192);
  REQUIRE(*front->Read(0, 8, back) == BLKIF_RSP_OKAY);
  CHECK(back == data);
  CHECK(std::memcmp(vol->Snapshot().data() + 8 * 512, data.data(), data.size()) == 0);
}

TEST_CASE("blkif handshake: backend restart mid-connection re-reads everything") {
  HandshakeRig rig;
  auto vol = rig.opener.Add("vm1", 16 * kMiB);
  REQUIRE(rig.StartBackend().ok());
  SimBlkfrontOptions o;
  o.ring_page_order = 1;
  auto front = ConnectDisk(rig, "vm1", o);
  auto a = RandomBytes(8192, 3);
  REQUIRE(*front->Write(0, 64, a) == BLKIF_RSP_OKAY);

  rig.StopBackend();  // the daemon goes away; xenstore and the guest stay
  CHECK(rig.hv->ActiveMappings(kDom) == 0);
  CHECK(*rig.toolstack->Read(0, Be("state")) == "4");
  // The guest keeps issuing I/O meanwhile: it is answered once the backend is back.
  auto b = RandomBytes(4096, 4);
  auto id = front->Submit(0, SimIo{BLKIF_OP_WRITE, 200, 8, false}, b);
  REQUIRE(id.ok());
  REQUIRE(front->Kick(0).ok());

  REQUIRE(rig.StartBackend().ok());
  std::vector<SimCompletion> done;
  for (int i = 0; i < 100 && done.empty(); ++i) done = *front->Poll(0, std::chrono::milliseconds(100));
  REQUIRE(done.size() == 1);
  CHECK(done[0].id == *id);
  CHECK(done[0].status == BLKIF_RSP_OKAY);
  std::vector<uint8_t> back(8192);
  REQUIRE(*front->Read(0, 64, back) == BLKIF_RSP_OKAY);
  CHECK(back == a);
  CHECK(std::memcmp(vol->Snapshot().data() + 200 * 512, b.data(), b.size()) == 0);
  auto list = rig.List();
  REQUIRE(list.size() == 1);
  CHECK(list[0].volume == "vm1");
  CHECK(list[0].state == "connected");
}

TEST_CASE("blkif handshake: pause quiesces and flushes, resume serves again") {
  HandshakeRig rig;
  auto vol = rig.opener.Add("vm1", 16 * kMiB);
  REQUIRE(rig.StartBackend().ok());
  auto front = ConnectDisk(rig, "vm1");
  REQUIRE(rig.Pause(kDom, kDev).ok());
  CHECK(vol->counters().flushes >= 1);
  CHECK(rig.List()[0].paused);
  auto id = front->Submit(0, SimIo{BLKIF_OP_WRITE, 0, 8, false}, RandomBytes(4096, 1));
  REQUIRE(front->Kick(0).ok());
  CHECK(front->Poll(0, std::chrono::milliseconds(300))->empty());
  REQUIRE(rig.Resume(kDom, kDev).ok());
  std::vector<SimCompletion> done;
  for (int i = 0; i < 100 && done.empty(); ++i) done = *front->Poll(0, std::chrono::milliseconds(100));
  REQUIRE(done.size() == 1);
  CHECK(done[0].id == *id);
}

// What `tapmap snapshot-live` relies on: pausing a disk while its guest writes
// leaves an image that is exactly the writes taken before the pause — every one of
// them, none after — whatever moment the pause lands on.
TEST_CASE("blkif handshake: a pause under a guest write stream freezes exactly a prefix of it") {
  constexpr int kWrites = 2000;
  constexpr size_t kSize = 4096;
  HandshakeRig rig;
  auto vol = rig.opener.Add("vm1", 16 * kMiB);
  REQUIRE(rig.StartBackend().ok());
  auto front = ConnectDisk(rig, "vm1");
  auto stamp = [](int i) { return std::vector<uint8_t>(kSize, static_cast<uint8_t>(i % 251 + 1)); };

  std::atomic<int> completed{0};
  std::atomic<bool> failed{false};
  std::thread guest([&] {  // the guest: up to 8 writes in flight, in order
    int next = 0, in_flight = 0;
    while (completed.load() < kWrites && !failed.load()) {
      while (in_flight < 8 && next < kWrites) {
        auto id = front->Submit(0, SimIo{BLKIF_OP_WRITE, uint64_t(next) * (kSize / 512), kSize / 512, false},
                                stamp(next));
        if (!id.ok()) break;
        next++;
        in_flight++;
      }
      if (!front->Kick(0).ok()) failed = true;
      auto done = front->Poll(0, std::chrono::milliseconds(100));
      if (!done.ok()) failed = true;
      else {
        for (const SimCompletion& c : *done) {
          if (c.status != BLKIF_RSP_OKAY) failed = true;
          in_flight--;
          completed++;
        }
      }
    }
  });
  // Pause once the stream is under way (a readiness wait, not a timing assumption).
  CHECK(WaitUntil([&] { return completed.load() >= 50 || failed.load(); }, std::chrono::seconds(15)));
  REQUIRE(rig.Pause(kDom, kDev).ok());
  std::vector<uint8_t> image = vol->Snapshot();  // what a snapshot taken now holds
  auto list = rig.List();
  REQUIRE(list.size() == 1);
  REQUIRE(list[0].queues.size() == 1);
  const uint64_t taken = list[0].queues[0].requests;  // requests consumed before the pause
  REQUIRE(rig.Resume(kDom, kDev).ok());
  guest.join();
  REQUIRE_FALSE(failed.load());
  INFO("paused after " << taken << " of " << kWrites << " writes");
  REQUIRE(taken <= uint64_t(kWrites));
  for (int i = 0; i < kWrites; i++) {
    const uint8_t* at = image.data() + size_t(i) * kSize;
    bool in_image = std::memcmp(at, stamp(i).data(), kSize) == 0;
    bool zeros = std::all_of(at, at + kSize, [](uint8_t b) { return b == 0; });
    if (uint64_t(i) < taken) {
      if (!in_image) FAIL("write " << i << " was taken before the pause but is missing from the image");
    } else if (!zeros) {
      FAIL("write " << i << " was taken after the pause but is in the image");
    }
  }
  // And after the resume every write landed.
  auto after = vol->Snapshot();
  for (int i = 0; i < kWrites; i++) REQUIRE(std::memcmp(after.data() + size_t(i) * kSize, stamp(i).data(), kSize) == 0);
}

TEST_CASE("blkif handshake: online resize rewrites sectors then state") {
  HandshakeRig rig;
  auto vol = rig.opener.Add("vm1", 16 * kMiB);
  REQUIRE(rig.StartBackend().ok());
  auto front = ConnectDisk(rig, "vm1");
  vol->Resize(32 * kMiB);
  CHECK(rig.WaitNode(Be("sectors"), std::to_string(32 * kMiB / 512)) == std::to_string(32 * kMiB / 512));
  CHECK(*rig.toolstack->Read(0, Be("state")) == "4");
  std::vector<uint8_t> buf(4096, 7);
  CHECK(*front->Write(0, 16 * kMiB / 512 + 8, buf) == BLKIF_RSP_OKAY);  // beyond the old end
}

TEST_CASE("blkif handshake: transport parameters beyond what was advertised are refused") {
  HandshakeRig rig;
  rig.opener.Add("vm1", 16 * kMiB);
  blkif::BackendOptions opts;
  opts.max_ring_page_order = 1;
  opts.max_queues = 2;
  REQUIRE(rig.StartBackend(opts).ok());
  REQUIRE(rig.XlAddDisk(kDom, kDev, "vm1").ok());
  REQUIRE(rig.WaitNode(Be("state"), "2") == "2");
  REQUIRE(rig.Attach(kDom, kDev, "vm1").ok());
  SimBlkfrontOptions o;
  o.ring_page_order = 2;  // above max-ring-page-order
  auto front = rig.Guest(kDom, o);
  REQUIRE(front->Publish(*rig.toolstack, HandshakeRig::FrontendPath(kDom, kDev)).ok());
  CHECK(rig.WaitNode(Be("state"), "5") == "5");
  CHECK(rig.toolstack->Read(0, Be("error"))->find("ring-page-order") != std::string::npos);
  CHECK(rig.hv->ActiveMappings(kDom) == 0);
  // The guest closes, then retries within limits but with too many queues.
  REQUIRE(rig.toolstack->Write(0, Fe("state"), "6").ok());
  CHECK(rig.WaitNode(Be("state"), "6") == "6");
  REQUIRE(rig.toolstack->Write(0, Fe("state"), "1").ok());
  CHECK(rig.WaitNode(Be("state"), "2") == "2");
  SimBlkfrontOptions o3;
  o3.queues = 3;
  auto front3 = rig.Guest(kDom, o3);
  REQUIRE(front3->Publish(*rig.toolstack, HandshakeRig::FrontendPath(kDom, kDev)).ok());
  CHECK(rig.WaitNode(Be("state"), "5") == "5");
  CHECK(rig.toolstack->Read(0, Be("error"))->find("multi-queue-num-queues") != std::string::npos);
}

TEST_CASE("blkif handshake: a guest that keeps sending bad transport parameters cannot flood the log") {
  // Declared before the rig so that it is closed after the backend is gone.
  std::unique_ptr<std::FILE, int (*)(std::FILE*)> log_file(std::tmpfile(), &std::fclose);
  REQUIRE(log_file != nullptr);
  HandshakeRig rig;
  rig.opener.Add("vm1", 16 * kMiB);
  blkif::BackendOptions opts;
  opts.max_ring_page_order = 1;
  REQUIRE(rig.StartBackend(opts, log_file.get()).ok());
  REQUIRE(rig.XlAddDisk(kDom, kDev, "vm1").ok());
  REQUIRE(rig.WaitNode(Be("state"), "2") == "2");
  REQUIRE(rig.Attach(kDom, kDev, "vm1").ok());
  SimBlkfrontOptions o;
  o.ring_page_order = 2;  // above max-ring-page-order: each connect is fatal
  auto front = rig.Guest(kDom, o);
  REQUIRE(front->Publish(*rig.toolstack, HandshakeRig::FrontendPath(kDom, kDev)).ok());
  REQUIRE(rig.WaitNode(Be("state"), "5") == "5");
  constexpr int kCycles = 25;
  for (int i = 0; i < kCycles; ++i) {  // Closed, Initialising, Initialised: refused again
    REQUIRE(rig.toolstack->Write(0, Fe("state"), "6").ok());
    REQUIRE(rig.WaitNode(Be("state"), "6") == "6");
    REQUIRE(rig.toolstack->Write(0, Fe("state"), "1").ok());
    REQUIRE(rig.WaitNode(Be("state"), "2") == "2");
    REQUIRE(rig.toolstack->Write(0, Fe("state"), "3").ok());
    REQUIRE(rig.WaitNode(Be("state"), "5") == "5");  // every attempt is still refused
  }
  CHECK(rig.toolstack->Read(0, Be("error"))->find("ring-page-order") != std::string::npos);
  rig.StopBackend();
  std::fflush(log_file.get());
  std::rewind(log_file.get());
  int fatal_lines = 0;
  char line[4096];
  while (std::fgets(line, sizeof(line), log_file.get())) {
    std::string text = line;
    fatal_lines += text.find("ring-page-order") != std::string::npos;
  }
  // 26 refusals; the per-disk limiter lets 10 lines a minute through.
  CHECK(fatal_lines >= 1);
  CHECK(fatal_lines <= 10);
}

TEST_CASE("blkif handshake: 4096-byte sectors are announced, ring sectors stay 512-based") {
  HandshakeRig rig;
  auto vol = rig.opener.Add("vm1", 16 * kMiB);
  REQUIRE(rig.StartBackend().ok());
  REQUIRE(rig.XlAddDisk(kDom, kDev, "vm1").ok());
  REQUIRE(rig.WaitNode(Be("state"), "2") == "2");
  REQUIRE(rig.Attach(kDom, kDev, "vm1", false, blkif::Layout::kVbd, 4096).ok());
  auto front = rig.Guest(kDom);
  REQUIRE(front->Publish(*rig.toolstack, HandshakeRig::FrontendPath(kDom, kDev)).ok());
  REQUIRE(rig.WaitNode(Be("state"), "4") == "4");
  CHECK(*rig.toolstack->Read(0, Be("sector-size")) == "4096");
  CHECK(*rig.toolstack->Read(0, Be("physical-sector-size")) == "4096");
  CHECK(*rig.toolstack->Read(0, Be("sectors")) == std::to_string(16 * kMiB / 512));
  auto data = RandomBytes(8192, 5);
  REQUIRE(*front->Write(0, 80, data) == BLKIF_RSP_OKAY);  // sector 80 = byte 40960
  CHECK(std::memcmp(vol->Snapshot().data() + 80 * 512, data.data(), data.size()) == 0);
  // A later attach remembers the size across a restart (tapmap-sector-size).
  CHECK(*rig.toolstack->Read(0, Be("tapmap-sector-size")) == "4096");
  // Other sizes are refused.
  REQUIRE(rig.XlAddDisk(kDom, 51728, "vm1").ok());
  CHECK(rig.Attach(kDom, 51728, "vm1", false, blkif::Layout::kVbd, 1024).status().code() ==
        StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace tapmap::testing
