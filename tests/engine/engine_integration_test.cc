// The engine against a real mapserver process: data round trips through clones,
// copy-on-write isolation, one pool read per shared block across clones, and
// surviving a kill -9 of the mapserver mid-workload.
#include <catch2/catch.hpp>
#include <cstring>
#include <thread>

#include "tests/engine/mapserver_fixture.h"

namespace tapmap::testing {
namespace {

using engine::BlockDevice;
using engine::Engine;

constexpr uint64_t kMiB = 1 << 20;
constexpr uint64_t kBlock = 64 * 1024;

std::unique_ptr<Engine> MakeEngine(IoThreads& io, const MapserverFixture& ms, uint64_t cache = 64 * kMiB) {
  auto e = Engine::Create(io.io(), ms.EngineOptions(cache), Logger("engine", LogLevel::kWarning));
  INFO(e.status().ToString());
  REQUIRE(e.ok());
  return std::move(*e);
}

// Issues reads of [0, length) in `chunk` pieces on every device at once, waits, and
// checks each against `expect`.
void ReadAllConcurrently(const std::vector<BlockDevice*>& devices, uint64_t length, uint64_t chunk,
                         const std::vector<uint8_t>& expect) {
  std::vector<std::vector<uint8_t>> bufs(devices.size(), std::vector<uint8_t>(length));
  std::mutex mu;
  std::condition_variable cv;
  size_t outstanding = 0;
  std::vector<Status> errors;
  for (size_t d = 0; d < devices.size(); d++) {
    for (uint64_t off = 0; off < length; off += chunk) {
      std::lock_guard<std::mutex> lock(mu);
      outstanding++;
      devices[d]->Read(off, std::span<uint8_t>(bufs[d].data() + off, chunk), [&](Status s) {
        std::lock_guard<std::mutex> lock(mu);
        if (!s.ok()) errors.push_back(s);
        outstanding--;
        cv.notify_all();
      });
    }
  }
  std::unique_lock<std::mutex> lock(mu);
  REQUIRE(cv.wait_for(lock, std::chrono::seconds(60), [&] { return outstanding == 0; }));
  REQUIRE(errors.empty());
  for (size_t d = 0; d < devices.size(); d++) {
    INFO("device " << devices[d]->name());
    REQUIRE(bufs[d] == expect);
  }
}

TEST_CASE("clones share golden blocks: one pool read per block, copy-on-write isolation", "[engine][integration]") {
  MapserverFixture ms;
  const uint64_t kVolume = 64 * kMiB, kData = 8 * kMiB;
  ms.Create("golden", kVolume);
  std::vector<uint8_t> golden(kData);

  {  // Fill the golden image through engine A.
    IoThreads io;
    auto engine = MakeEngine(io, ms);
    auto dev = OpenDevice(*engine, "golden", false);
    CHECK(dev->block_size() == kBlock);
    CHECK(dev->size_bytes() == kVolume);
    for (uint64_t off = 0; off < kData; off += kMiB) {
      auto buf = PatternBuf(off, kMiB, 1);
      std::memcpy(golden.data() + off, buf.data(), kMiB);
      REQUIRE(WriteSync(*dev, off, buf).ok());
    }
    // Sub-block and sub-page writes: read-modify-write in place / in the pinned copy.
    for (uint64_t off : {uint64_t(512), 3 * kBlock + 1536, 5 * kMiB + 4096 * 3}) {
      auto buf = PatternBuf(off, 1024, 2);
      std::memcpy(golden.data() + off, buf.data(), buf.size());
      REQUIRE(WriteSync(*dev, off, buf).ok());
    }
    REQUIRE(FlushSync(*dev).ok());
    std::vector<uint8_t> back(kData);
    REQUIRE(ReadSync(*dev, 0, back).ok());
    REQUIRE(back == golden);
    // Beyond the data: a hole reads as zeros.
    std::vector<uint8_t> hole(kBlock, 0xff);
    REQUIRE(ReadSync(*dev, kVolume - kBlock, hole).ok());
    CHECK(hole == std::vector<uint8_t>(kBlock, 0));
    auto st = engine->Stats();
    CHECK(st.host.commits >= 1);
    CHECK(st.pinned_bytes == 0);
    dev.reset();
    ShutdownSync(*engine);
  }

  ms.Snapshot("golden", "gold-snap");
  ms.Clone("gold-snap", "c1");
  ms.Clone("gold-snap", "c2");

  IoThreads io;
  auto engine = MakeEngine(io, ms);  // a fresh engine: empty cache
  auto c1 = OpenDevice(*engine, "c1", false);
  auto c2 = OpenDevice(*engine, "c2", false);
  // 4 KiB reads from both clones at once, interleaved: many concurrent misses per block.
  ReadAllConcurrently({c1.get(), c2.get()}, kData, 4096, golden);
  auto st = engine->Stats();
  const uint64_t blocks = kData / kBlock;
  CHECK(st.host.pool_read_ops == blocks);
  CHECK(st.host.pool_bytes_read == kData);
  CHECK(st.host.cache_misses == blocks);
  CHECK(st.host.logical_bytes_read == 2 * kData);
  CHECK(st.host.io_eliminated_bytes == kData);
  CHECK(st.volumes.at("c1").pool_bytes_read + st.volumes.at("c2").pool_bytes_read == kData);
  // Reading again costs nothing.
  ReadAllConcurrently({c2.get()}, kData, kMiB, golden);
  CHECK(engine->Stats().host.pool_read_ops == blocks);

  // Copy-on-write in c1: a partial block (the rest must come from the golden block),
  // a whole block, a write spanning a block boundary.
  std::vector<uint8_t> c1_expect = golden;
  struct W { uint64_t off, len; };
  for (W w : {W{kMiB + 4096, 8192}, W{2 * kMiB, kBlock}, W{3 * kMiB - 2048, 6144}}) {
    auto buf = PatternBuf(w.off, w.len, 3);
    std::memcpy(c1_expect.data() + w.off, buf.data(), w.len);
    REQUIRE(WriteSync(*c1, w.off, buf).ok());
  }
  // Visible at once (before any flush), to this host.
  ReadAllConcurrently({c1.get()}, kData, kMiB, c1_expect);
  REQUIRE(FlushSync(*c1).ok());
  ReadAllConcurrently({c1.get()}, kData, 65536, c1_expect);
  // The sibling, the snapshot and the golden image are untouched.
  auto snap = OpenDevice(*engine, "gold-snap", true);
  CHECK(snap->read_only());
  auto gold = OpenDevice(*engine, "golden", true);
  ReadAllConcurrently({c2.get(), snap.get(), gold.get()}, kData, kMiB, golden);
  // A read-only opener cannot write.
  CHECK(WriteSync(*snap, 0, std::vector<uint8_t>(4096)).code() == StatusCode::kReadOnly);
  // Out-of-range and misaligned I/O is refused.
  std::vector<uint8_t> small(512);
  CHECK(ReadSync(*c1, kVolume, small).code() == StatusCode::kInvalidArgument);
  std::vector<uint8_t> odd(100);
  CHECK(ReadSync(*c1, 0, odd).code() == StatusCode::kInvalidArgument);

  c1.reset();
  c2.reset();
  snap.reset();
  gold.reset();
  ShutdownSync(*engine);
  engine.reset();

  // What c1 committed is what a fresh engine (another host, after a restart) sees.
  IoThreads io2;
  auto engine2 = MakeEngine(io2, ms);
  auto c1again = OpenDevice(*engine2, "c1", true);
  ReadAllConcurrently({c1again.get()}, kData, kMiB, c1_expect);
  c1again.reset();
  ShutdownSync(*engine2);
}

TEST_CASE("discard and write-zeroes read back as zeros", "[engine][integration]") {
  MapserverFixture ms;
  ms.Create("v", 16 * kMiB);
  IoThreads io;
  auto engine = MakeEngine(io, ms);
  auto dev = OpenDevice(*engine, "v", false);
  auto buf = PatternBuf(0, 4 * kMiB, 1);
  REQUIRE(WriteSync(*dev, 0, buf).ok());
  REQUIRE(FlushSync(*dev).ok());
  Waiter<Status> wz;
  dev->WriteZeroes(kBlock / 2, 3 * kBlock, wz.Callback());  // partial head, 2 whole, partial tail
  REQUIRE(wz.Wait().ok());
  std::vector<uint8_t> expect = buf;
  std::memset(expect.data() + kBlock / 2, 0, 3 * kBlock);
  std::vector<uint8_t> back(4 * kMiB);
  REQUIRE(ReadSync(*dev, 0, back).ok());
  CHECK(back == expect);
  Waiter<Status> dz;
  dev->Discard(kMiB, kMiB, dz.Callback());
  REQUIRE(dz.Wait().ok());
  std::memset(expect.data() + kMiB, 0, kMiB);  // whole blocks discarded read as zeros
  REQUIRE(ReadSync(*dev, 0, back).ok());
  CHECK(back == expect);
  REQUIRE(FlushSync(*dev).ok());
  dev.reset();
  ShutdownSync(*engine);
}

TEST_CASE("a volume whose size is not a multiple of the block size", "[engine][integration]") {
  MapserverFixture ms;
  const uint64_t kSize = kMiB + 3 * 512;  // last block is 1536 bytes long
  ms.Create("odd", kSize);
  IoThreads io;
  auto engine = MakeEngine(io, ms);
  auto dev = OpenDevice(*engine, "odd", false);
  CHECK(dev->size_bytes() == kSize);
  auto tail = PatternBuf(kSize - 1024, 1024, 7);
  REQUIRE(WriteSync(*dev, kSize - 1024, tail).ok());
  auto head = PatternBuf(0, 4096, 7);
  REQUIRE(WriteSync(*dev, 0, head, /*fua=*/true).ok());
  std::vector<uint8_t> back(kSize);
  REQUIRE(ReadSync(*dev, 0, back).ok());
  CHECK(std::equal(tail.begin(), tail.end(), back.end() - 1024));
  CHECK(std::equal(head.begin(), head.end(), back.begin()));
  std::vector<uint8_t> past(1024);
  CHECK(ReadSync(*dev, kSize - 512, past).code() == StatusCode::kInvalidArgument);
  REQUIRE(FlushSync(*dev).ok());
  CHECK(engine->Stats().pinned_bytes == 0);
  dev.reset();
  ShutdownSync(*engine);
}

TEST_CASE("snapshot of a volume open for writing: recall, then copy-on-write", "[engine][integration]") {
  MapserverFixture ms;
  ms.Create("live", 8 * kMiB);
  IoThreads io;
  auto engine = MakeEngine(io, ms);
  auto dev = OpenDevice(*engine, "live", false);
  auto v1 = PatternBuf(0, 2 * kMiB, 1);
  REQUIRE(WriteSync(*dev, 0, v1).ok());
  REQUIRE(FlushSync(*dev).ok());
  REQUIRE(WriteSync(*dev, 0, PatternBuf(0, kBlock, 9)).ok());  // owned now: in place
  REQUIRE(FlushSync(*dev).ok());
  std::memcpy(v1.data(), PatternBuf(0, kBlock, 9).data(), kBlock);
  ms.Snapshot("live", "live-snap");  // recalls our owned blocks (downgrade)
  CHECK(engine->Stats().volumes.at("live").map_recalls >= 1);
  // Writes after the snapshot must not touch the snapshot's blocks.
  auto v2 = PatternBuf(0, kMiB, 2);
  REQUIRE(WriteSync(*dev, 0, v2).ok());
  REQUIRE(FlushSync(*dev).ok());
  auto snap = OpenDevice(*engine, "live-snap", true);
  std::vector<uint8_t> back(2 * kMiB);
  REQUIRE(ReadSync(*snap, 0, back).ok());
  CHECK(back == v1);
  REQUIRE(ReadSync(*dev, 0, back).ok());
  std::vector<uint8_t> expect = v1;
  std::memcpy(expect.data(), v2.data(), kMiB);
  CHECK(back == expect);
  dev.reset();
  snap.reset();
  ShutdownSync(*engine);
}

TEST_CASE("online resize reaches the resize listener", "[engine][integration]") {
  MapserverFixture ms;
  ms.Create("grow", 4 * kMiB);
  IoThreads io;
  auto engine = MakeEngine(io, ms);
  auto dev = OpenDevice(*engine, "grow", false);
  Waiter<uint64_t> resized;
  dev->SetResizeListener([&](uint64_t size) { resized.Set(size); });
  ms.Resize("grow", 6 * kMiB);
  CHECK(resized.Wait() == 6 * kMiB);
  CHECK(dev->size_bytes() == 6 * kMiB);
  auto tail = PatternBuf(5 * kMiB, kMiB, 4);
  REQUIRE(WriteSync(*dev, 5 * kMiB, tail).ok());
  std::vector<uint8_t> back(kMiB);
  REQUIRE(ReadSync(*dev, 5 * kMiB, back).ok());
  CHECK(back == tail);
  dev->SetResizeListener(nullptr);
  dev.reset();
  ShutdownSync(*engine);
}

TEST_CASE("front ends of one host share an open volume: one lease, each its own mode and listener",
          "[engine][integration]") {
  MapserverFixture ms;
  ms.Create("vm", 4 * kMiB);
  IoThreads io;
  auto engine = MakeEngine(io, ms);
  // Two Opens at once (the vbd and the NBD export of an HVM guest) both succeed: the
  // second waits for the first and shares it instead of asking for a second lease.
  Waiter<Result<std::shared_ptr<BlockDevice>>> first, second;
  engine->Open("vm", false, [&](Result<std::shared_ptr<BlockDevice>> r) { first.Set(std::move(r)); });
  engine->Open("vm", false, [&](Result<std::shared_ptr<BlockDevice>> r) { second.Set(std::move(r)); });
  auto pv = first.Wait();
  auto hvm = second.Wait();
  INFO(pv.status().ToString() << " / " << hvm.status().ToString());
  REQUIRE(pv.ok());
  REQUIRE(hvm.ok());
  auto ro = OpenDevice(*engine, "vm", true);
  CHECK(ro->read_only());
  CHECK_FALSE((*pv)->read_only());

  auto data = PatternBuf(kMiB, kMiB, 7);
  REQUIRE(WriteSync(**hvm, kMiB, data).ok());  // written through one front end ...
  std::vector<uint8_t> back(kMiB);
  REQUIRE(ReadSync(**pv, kMiB, back).ok());  // ... is what the other reads, at once
  CHECK(back == data);
  CHECK(WriteSync(*ro, 0, data).code() == StatusCode::kPermissionDenied);

  // Each handle has its own resize listener.
  Waiter<uint64_t> pv_resized, hvm_resized;
  (*pv)->SetResizeListener([&](uint64_t size) { pv_resized.Set(size); });
  (*hvm)->SetResizeListener([&](uint64_t size) { hvm_resized.Set(size); });
  ms.Resize("vm", 8 * kMiB);
  CHECK(pv_resized.Wait() == 8 * kMiB);
  CHECK(hvm_resized.Wait() == 8 * kMiB);

  // Dropping one front end leaves the volume open for the other; flush covers both.
  (*hvm)->SetResizeListener(nullptr);
  hvm->reset();
  REQUIRE(ReadSync(**pv, kMiB, back).ok());
  CHECK(back == data);
  Waiter<Status> flushed;
  (*pv)->Flush(flushed.Callback());
  CHECK(flushed.Wait().ok());
  (*pv)->SetResizeListener(nullptr);
  pv->reset();
  ro.reset();
  ShutdownSync(*engine);
  // All closed: another engine (host) can now take the read-write lease and sees the data.
  IoThreads io2;
  auto engine2 = MakeEngine(io2, ms);
  auto again = OpenDevice(*engine2, "vm", false);
  REQUIRE(ReadSync(*again, kMiB, back).ok());
  CHECK(back == data);
  again.reset();
  ShutdownSync(*engine2);
}

TEST_CASE("with the mapserver gone, I/O needing it waits, then fails with unavailable", "[engine][integration]") {
  MapserverFixture ms;
  ms.Create("v", 8 * kMiB);
  IoThreads io;
  auto options = ms.EngineOptions();
  options.unavailable_timeout = std::chrono::seconds(2);
  auto made = Engine::Create(io.io(), options, Logger("engine", LogLevel::kError));
  REQUIRE(made.ok());
  auto engine = std::move(*made);
  auto dev = OpenDevice(*engine, "v", false);
  auto data = PatternBuf(0, kBlock, 1);
  REQUIRE(WriteSync(*dev, 0, data).ok());
  REQUIRE(FlushSync(*dev).ok());
  std::vector<uint8_t> back(kBlock);
  REQUIRE(ReadSync(*dev, 0, back).ok());  // maps of the first 8 MiB are cached now
  ms.Kill9();
  // Cached maps and data keep serving reads.
  REQUIRE(ReadSync(*dev, 0, back).ok());
  CHECK(back == data);
  // A copy-on-write needs the server: it waits, then fails.
  auto t0 = std::chrono::steady_clock::now();
  Status s = WriteSync(*dev, 2 * kMiB, data);
  CHECK(s.code() == StatusCode::kUnavailable);
  CHECK(std::chrono::steady_clock::now() - t0 >= std::chrono::milliseconds(1500));
  CHECK_FALSE(engine->connected());
  ms.Start();
  // Back: the same write succeeds.
  Status again;
  for (int i = 0; i < 3; i++) {
    again = WriteSync(*dev, 2 * kMiB, data);
    if (again.ok()) break;
  }
  CHECK(again.ok());
  REQUIRE(FlushSync(*dev).ok());
  dev.reset();
  ShutdownSync(*engine);
}

TEST_CASE("kill -9 of the mapserver mid-workload loses no acknowledged write", "[engine][integration]") {
  MapserverFixture ms;
  const uint64_t kVolume = 32 * kMiB;
  ms.Create("base", kVolume);
  ms.Snapshot("base", "base-snap");  // every write to "vm" is copy-on-write first
  ms.Clone("base-snap", "vm");
  std::vector<uint8_t> model(kVolume, 0);

  IoThreads io;
  auto engine = MakeEngine(io, ms);
  auto dev = OpenDevice(*engine, "vm", false);

  // Rounds of writes at scattered offsets; the server is killed during round 3 with
  // writes in flight, and restarted a second later.
  std::vector<std::vector<uint8_t>> keep;  // buffers must live until completion
  for (uint32_t round = 1; round <= 5; round++) {
    std::mutex mu;
    std::condition_variable cv;
    int outstanding = 0;
    std::vector<Status> errors;
    for (int i = 0; i < 24; i++) {
      uint64_t off = ((uint64_t(i) * 7919 + round * 104729) % (kVolume / 4096 - 8)) * 4096;
      uint64_t len = (i % 3 == 0) ? 4096 : (i % 3 == 1) ? 3 * 4096 : kBlock;
      if (off + len > kVolume) len = kVolume - off;
      keep.push_back(PatternBuf(off, len, round));
      std::memcpy(model.data() + off, keep.back().data(), len);
      std::lock_guard<std::mutex> lock(mu);
      outstanding++;
      dev->Write(off, keep.back(), false, [&](Status s) {
        std::lock_guard<std::mutex> lock(mu);
        if (!s.ok()) errors.push_back(s);
        outstanding--;
        cv.notify_all();
      });
    }
    if (round == 3) {
      ms.Kill9();
      std::this_thread::sleep_for(std::chrono::milliseconds(1000));
      ms.Start();
    }
    {
      std::unique_lock<std::mutex> lock(mu);
      REQUIRE(cv.wait_for(lock, std::chrono::seconds(90), [&] { return outstanding == 0; }));
    }
    for (auto& e : errors) INFO(e.ToString());
    REQUIRE(errors.empty());
    // Acknowledged writes are visible at once, server or not.
    std::vector<uint8_t> back(kVolume);
    REQUIRE(ReadSync(*dev, 0, back).ok());
    REQUIRE(back == model);
    if (round % 2 == 1) REQUIRE(FlushSync(*dev).ok());
  }
  REQUIRE(FlushSync(*dev).ok());
  CHECK(engine->Stats().pinned_bytes == 0);
  dev.reset();
  ShutdownSync(*engine);
  engine.reset();

  // Kill the server once more after everything was flushed: all of it is durable.
  ms.Kill9();
  ms.Start();
  IoThreads io2;
  auto engine2 = MakeEngine(io2, ms);
  auto again = OpenDevice(*engine2, "vm", true);
  std::vector<uint8_t> back(kVolume);
  REQUIRE(ReadSync(*again, 0, back).ok());
  REQUIRE(back == model);
  // And the snapshot it was cloned from still reads zeros.
  auto snap = OpenDevice(*engine2, "base-snap", true);
  std::vector<uint8_t> zeros(kVolume);
  REQUIRE(ReadSync(*snap, 0, zeros).ok());
  CHECK(zeros == std::vector<uint8_t>(kVolume, 0));
  again.reset();
  snap.reset();
  ShutdownSync(*engine2);
}

TEST_CASE("a volume dropped and reopened at once on the same host is never refused", "[engine][integration]") {
  // The last front end of a read-write volume going away starts its final commit and
  // its close at the server; an Open right after (a client reconnecting, a migration
  // back) must wait for them instead of being refused busy by this host's own previous
  // opener, and a read-only reopen must see that final commit.
  MapserverFixture ms;
  ms.Create("vm", 64 * kMiB);
  IoThreads io;
  auto engine = MakeEngine(io, ms);
  for (uint32_t round = 1; round <= 60; ++round) {
    INFO("round " << round);
    const bool ro = round % 6 == 0;
    auto dev = OpenDevice(*engine, "vm", ro);  // REQUIREs success
    if (ro) {
      uint64_t off = ((round - 1) % 32) * kBlock;  // what the previous round wrote
      std::vector<uint8_t> buf(kBlock);
      REQUIRE(ReadSync(*dev, off, buf).ok());
      REQUIRE(buf == PatternBuf(off, kBlock, round - 1));
    } else {
      // A new block each round (copy-on-write of a hole or a shared block): the close
      // has a commit to make.
      uint64_t off = (round % 32) * kBlock;
      REQUIRE(WriteSync(*dev, off, PatternBuf(off, kBlock, round)).ok());
    }
    dev.reset();  // final commit and close now in flight
  }
  ShutdownSync(*engine);
}

}  // namespace
}  // namespace tapmap::testing
