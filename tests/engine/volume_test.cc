// Volume against an in-process stand-in for the mapserver (FakeRemoteVolume below):
// the copy-on-write path, group commit, re-prepare after lost reservations, recall
// downgrades. Runs without daemons so that it is covered by the ASan build; the real
// mapserver is exercised by engine_integration_test.
#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <boost/asio/post.hpp>
#include <catch2/catch.hpp>
#include <cstring>
#include <map>

#include "tapdisk-map/engine/volume.h"
#include "tests/engine/fake_qos_clock.h"
#include "tests/engine/test_util.h"
#include "tests/support/wait_until.h"

namespace tapmap::engine {
namespace {

using tapmap::testing::IoThreads;
using tapmap::testing::TempDir;
using tapmap::testing::WaitUntil;
using tapmap::testing::Waiter;

constexpr uint32_t kBlock = 64 * 1024;
constexpr uint64_t kDataStart = 1 << 20;

// Keeps a per-block map and reservations like the server's VolumeStore does.
class FakeRemoteVolume final : public RemoteVolume {
 public:
  FakeRemoteVolume(boost::asio::io_context& io, uint64_t size) : io_(io), blocks_(size / kBlock) {}

  void Map(uint64_t offset, uint64_t length, std::function<void(Result<MapReply>)> done) override {
    std::lock_guard<std::mutex> lock(mu_);
    map_calls++;
    MapReply r;
    r.size_bytes = blocks_.size() * kBlock;
    for (uint64_t b = offset / kBlock; b < (offset + length + kBlock - 1) / kBlock && b < blocks_.size(); b++) {
      Extent e = blocks_[b];
      e.logical = b * kBlock;
      e.length = kBlock;
      r.extents.push_back(e);
    }
    Post([done, r]() { done(r); });
  }
  void PrepareWrite(std::vector<ByteRange> ranges, std::function<void(Result<std::vector<Extent>>)> done) override {
    std::lock_guard<std::mutex> lock(mu_);
    prepare_calls++;
    std::vector<Extent> out;
    uint64_t gen = ++generation_;
    for (const ByteRange& r : ranges) {
      for (uint64_t b = r.offset / kBlock; b * kBlock < r.end(); b++) {
        if (blocks_[b].state == ExtentState::kOwned) {
          Extent e = blocks_[b];
          e.logical = b * kBlock;
          e.length = kBlock;
          out.push_back(e);
          continue;
        }
        Extent e{b * kBlock, kBlock, kDataStart + next_free_++ * kBlock, gen, ExtentState::kOwned};
        reservations_[e.physical] = e;
        out.push_back(e);
      }
    }
    Post([done, out]() { done(out); });
  }
  void Commit(std::vector<Extent> extents, std::function<void(Status)> done) override {
    std::lock_guard<std::mutex> lock(mu_);
    if (hold_commits_) {
      held_.push_back([this, extents, done]() { Commit(extents, done); });
      return;
    }
    commit_calls++;
    Status s;
    if (lose_reservations_before_next_commit) {
      lose_reservations_before_next_commit = false;
      reservations_.clear();  // as after a server restart
    }
    for (const Extent& e : extents) {
      for (uint64_t off = 0; off < e.length; off += kBlock) {
        auto it = reservations_.find(e.physical + off);
        if (it == reservations_.end() || it->second.logical != e.logical + off) {
          s = Status::Aborted("no live reservation at " + std::to_string(e.physical + off));
        }
      }
    }
    if (s.ok()) {
      for (const Extent& e : extents) {
        for (uint64_t off = 0; off < e.length; off += kBlock) {
          blocks_[(e.logical + off) / kBlock] = Extent{0, 0, e.physical + off, e.generation, ExtentState::kOwned};
          reservations_.erase(e.physical + off);
          committed_blocks++;
        }
      }
    }
    Post([done, s]() { done(s); });
  }
  void Discard(std::vector<ByteRange> ranges, std::function<void(Status)> done) override {
    std::lock_guard<std::mutex> lock(mu_);
    for (const ByteRange& r : ranges) {
      for (uint64_t b = r.offset / kBlock; (b + 1) * kBlock <= r.end(); b++) blocks_[b] = Extent{};
    }
    Post([done]() { done(Status::Ok()); });
  }
  void Close(std::function<void(Status)> done) override {
    Post([done]() { done(Status::Ok()); });
  }

  // Test controls.
  void SetShared(uint64_t block, uint64_t physical, uint64_t gen) {
    std::lock_guard<std::mutex> lock(mu_);
    blocks_[block] = Extent{0, 0, physical, gen, ExtentState::kShared};
  }
  Extent BlockAt(uint64_t block) {
    std::lock_guard<std::mutex> lock(mu_);
    return blocks_[block];
  }

  void HoldCommits() {
    std::lock_guard<std::mutex> lock(mu_);
    hold_commits_ = true;
  }
  void ReleaseCommits() {
    std::vector<std::function<void()>> held;
    {
      std::lock_guard<std::mutex> lock(mu_);
      hold_commits_ = false;
      held.swap(held_);
    }
    for (auto& fn : held) fn();
  }

  std::atomic<int> map_calls{0}, prepare_calls{0}, commit_calls{0}, committed_blocks{0};
  bool lose_reservations_before_next_commit = false;

 private:
  template <typename Fn>
  void Post(Fn fn) {
    boost::asio::post(io_, std::move(fn));
  }
  boost::asio::io_context& io_;
  std::mutex mu_;
  std::vector<Extent> blocks_;
  std::map<uint64_t, Extent> reservations_;
  bool hold_commits_ = false;
  std::vector<std::function<void()>> held_;
  uint64_t next_free_ = 16;  // blocks 0..15 of the data area are "golden"
  uint64_t generation_ = 100;
};

struct Rig {
  TempDir dir{"tapmap-volume-test"};
  IoThreads threads;
  std::unique_ptr<pool::PoolIo> pool;
  std::shared_ptr<DataCache> cache = std::make_shared<DataCache>(16 << 20, kBlock);
  std::shared_ptr<FakeRemoteVolume> remote;
  std::shared_ptr<Volume> volume;
  int pool_fd = -1;

  // commit_interval 0: commits start right after each write (the tests below that
  // count cycles rely on it, except the lazy-commit ones).
  explicit Rig(uint64_t size = 4 << 20, bool read_only = false, uint64_t max_pinned = 0,
               std::chrono::milliseconds commit_interval = std::chrono::milliseconds(0),
               FakeQosClock* qos_clock = nullptr) {
    std::string path = dir.path() + "/pool";
    pool_fd = ::open(path.c_str(), O_CREAT | O_RDWR | O_CLOEXEC, 0600);
    REQUIRE(pool_fd >= 0);
    REQUIRE(::ftruncate(pool_fd, kDataStart + 256 * kBlock) == 0);
    Logger log("test", LogLevel::kError);
    auto file = pool::PoolFile::Open(path, false, log);
    REQUIRE(file.ok());
    auto io = pool::CreatePoolIo(threads.io(), std::move(*file), pool::PoolIoKind::kAuto, log);
    REQUIRE(io.ok());
    pool = std::move(*io);
    VolumeContext ctx;
    ctx.io = &threads.io();
    ctx.pool = pool.get();
    ctx.cache = cache;
    ctx.host_counters = std::make_shared<IoCounters>();
    ctx.pinned_bytes = std::make_shared<std::atomic<uint64_t>>(0);
    ctx.block_size = kBlock;
    ctx.pool_data_start = kDataStart;
    ctx.pool_data_end = kDataStart + 256 * kBlock;
    ctx.log = log;
    ctx.max_pinned_bytes = max_pinned;
    ctx.commit_interval = commit_interval;
    if (qos_clock != nullptr) ctx.qos_clock = [qos_clock]() { return qos_clock->Make(); };
    remote = std::make_shared<FakeRemoteVolume>(threads.io(), size);
    volume = std::make_shared<Volume>(ctx, "v", read_only);
    volume->Attach(remote, size);
  }
  ~Rig() {
    volume.reset();
    threads.Stop();
    pool.reset();
    ::close(pool_fd);
  }
  // Raw pool content, bypassing the engine.
  std::vector<uint8_t> PoolBytes(uint64_t physical, size_t n) {
    std::vector<uint8_t> b(n);
    REQUIRE(::pread(pool_fd, b.data(), n, static_cast<off_t>(physical)) == static_cast<ssize_t>(n));
    return b;
  }
  void PoolFill(uint64_t physical, size_t n, uint8_t v) {
    std::vector<uint8_t> b(n, v);
    REQUIRE(::pwrite(pool_fd, b.data(), n, static_cast<off_t>(physical)) == static_cast<ssize_t>(n));
  }
  Status Write(uint64_t off, const std::vector<uint8_t>& data, bool fua = false) {
    Waiter<Status> w;
    volume->Write(off, data, fua, w.Callback());
    return w.Wait();
  }
  Status Read(uint64_t off, std::vector<uint8_t>& data) {
    Waiter<Status> w;
    volume->Read(off, data, w.Callback());
    return w.Wait();
  }
  Status Flush() {
    Waiter<Status> w;
    volume->Flush(w.Callback());
    return w.Wait();
  }
};

TEST_CASE("writes to holes are copy-on-write, visible at once, committed by flush", "[volume]") {
  Rig rig;
  std::vector<uint8_t> data(8192, 0xAB);
  REQUIRE(rig.Write(kBlock + 4096, data).ok());
  std::vector<uint8_t> back(kBlock);
  REQUIRE(rig.Read(kBlock, back).ok());
  CHECK(back[0] == 0);  // the rest of a hole block is zeros
  CHECK(back[4096] == 0xAB);
  CHECK(back[4096 + 8191] == 0xAB);
  CHECK(back[4096 + 8192] == 0);
  REQUIRE(rig.Flush().ok());
  CHECK(rig.volume->pending_blocks() == 0);
  Extent e = rig.remote->BlockAt(1);
  REQUIRE(e.state == ExtentState::kOwned);
  auto raw = rig.PoolBytes(e.physical, kBlock);
  CHECK(raw == back);  // the whole new block reached the pool
  CHECK(rig.volume->stats().commits >= 1);
  // A second write to the now-owned block goes in place: no new prepareWrite.
  int prepares = rig.remote->prepare_calls;
  std::vector<uint8_t> more(4096, 0xCD);
  REQUIRE(rig.Write(kBlock, more).ok());
  CHECK(rig.remote->prepare_calls == prepares);
  CHECK(rig.PoolBytes(e.physical, 4096) == more);
}

TEST_CASE("a partial write to a shared block copies the rest from the old block", "[volume]") {
  Rig rig;
  const uint64_t golden = kDataStart + 3 * kBlock;
  rig.PoolFill(golden, kBlock, 0x11);
  rig.remote->SetShared(2, golden, 7);
  std::vector<uint8_t> data(512, 0x22);
  REQUIRE(rig.Write(2 * kBlock + 1024, data).ok());
  std::vector<uint8_t> back(kBlock);
  REQUIRE(rig.Read(2 * kBlock, back).ok());
  CHECK(back[0] == 0x11);
  CHECK(back[1024] == 0x22);
  CHECK(back[1535] == 0x22);
  CHECK(back[1536] == 0x11);
  // The shared block itself is untouched.
  CHECK(rig.PoolBytes(golden, kBlock) == std::vector<uint8_t>(kBlock, 0x11));
  REQUIRE(rig.Flush().ok());
  Extent e = rig.remote->BlockAt(2);
  CHECK(e.state == ExtentState::kOwned);
  CHECK(e.physical != golden);
  CHECK(rig.PoolBytes(e.physical, kBlock) == back);
}

TEST_CASE("WriteShared keeps whole blocks of the payload instead of copying them", "[volume]") {
  Rig rig;
  // Two whole blocks and a half block, 4 KiB-aligned in the payload.
  auto payload = std::make_shared<pool::AlignedBuffer>(2 * kBlock + kBlock / 2);
  for (size_t i = 0; i < payload->size(); i++) payload->data()[i] = static_cast<uint8_t>(i / 4096 + 1);
  const std::vector<uint8_t> expected(payload->data(), payload->data() + payload->size());
  std::weak_ptr<pool::AlignedBuffer> watch = payload;
  rig.remote->HoldCommits();
  Waiter<Status> w;
  rig.volume->WriteShared(4 * kBlock, std::move(payload), expected.size(), false, w.Callback());
  REQUIRE(w.Wait().ok());
  // The caller's reference is gone; the volume still holds slices of the payload,
  // pinned until commit.
  CHECK_FALSE(watch.expired());
  std::vector<uint8_t> back(expected.size());
  REQUIRE(rig.Read(4 * kBlock, back).ok());
  CHECK(back == expected);
  rig.remote->ReleaseCommits();
  REQUIRE(rig.Flush().ok());
  // Committed: released. The cache did not keep the slices (write-around).
  CHECK(watch.expired());
  REQUIRE(rig.Read(4 * kBlock, back).ok());
  CHECK(back == expected);
  for (uint64_t b = 4; b < 7; b++) {
    Extent e = rig.remote->BlockAt(b);
    REQUIRE(e.state == ExtentState::kOwned);
    size_t n = b < 6 ? kBlock : kBlock / 2;
    auto raw = rig.PoolBytes(e.physical, n);
    CHECK(std::equal(raw.begin(), raw.end(), expected.begin() + (b - 4) * kBlock));
  }
  // An in-place rewrite of an owned block from a shared payload reaches the pool too.
  auto again = std::make_shared<pool::AlignedBuffer>(kBlock);
  std::memset(again->data(), 0x77, kBlock);
  Waiter<Status> w2;
  rig.volume->WriteShared(4 * kBlock, again, kBlock, false, w2.Callback());
  REQUIRE(w2.Wait().ok());
  CHECK(rig.PoolBytes(rig.remote->BlockAt(4).physical, kBlock) == std::vector<uint8_t>(kBlock, 0x77));
  REQUIRE(rig.Read(4 * kBlock, back).ok());
  CHECK(back[0] == 0x77);
  CHECK(back[kBlock] == expected[kBlock]);
}

TEST_CASE("WriteShared copies what is not block-aligned in the payload", "[volume]") {
  Rig rig;
  // 512 bytes in: no block of the write starts 4 KiB-aligned in the payload.
  auto payload = std::make_shared<pool::AlignedBuffer>(kBlock + 4096);
  std::memset(payload->data(), 0x3C, payload->size());
  std::weak_ptr<pool::AlignedBuffer> watch = payload;
  Waiter<Status> w;
  rig.volume->WriteShared(kBlock - 512, std::move(payload), kBlock + 512, false, w.Callback());
  REQUIRE(w.Wait().ok());
  CHECK(watch.expired());  // nothing of it was kept
  std::vector<uint8_t> back(kBlock + 512);
  REQUIRE(rig.Read(kBlock - 512, back).ok());
  CHECK(back == std::vector<uint8_t>(kBlock + 512, 0x3C));
  Waiter<Status> bad;
  rig.volume->WriteShared(0, std::make_shared<pool::AlignedBuffer>(4096), 8192, false, bad.Callback());
  CHECK(bad.Wait().code() == StatusCode::kInvalidArgument);
}

TEST_CASE("lost reservations are re-written from the pinned copy and committed", "[volume]") {
  Rig rig;
  std::vector<uint8_t> data(kBlock, 0x5A);
  REQUIRE(rig.Write(0, data).ok());
  REQUIRE(rig.Write(3 * kBlock, data).ok());
  rig.remote->lose_reservations_before_next_commit = true;
  REQUIRE(rig.Flush().ok());
  CHECK(rig.remote->committed_blocks == 2);
  for (uint64_t b : {0, 3}) {
    Extent e = rig.remote->BlockAt(b);
    REQUIRE(e.state == ExtentState::kOwned);
    CHECK(rig.PoolBytes(e.physical, kBlock) == data);
  }
  std::vector<uint8_t> back(kBlock);
  REQUIRE(rig.Read(3 * kBlock, back).ok());
  CHECK(back == data);
}

TEST_CASE("after a reconnection pending blocks go to new reservations", "[volume]") {
  Rig rig;
  std::vector<uint8_t> data(4096, 0x77);
  // Stop the first commit from winning the race: reservations are lost at commit.
  rig.remote->lose_reservations_before_next_commit = true;
  REQUIRE(rig.Write(5 * kBlock, data).ok());
  rig.volume->OnReopened(4 << 20, false);
  REQUIRE(rig.Flush().ok());
  Extent e = rig.remote->BlockAt(5);
  REQUIRE(e.state == ExtentState::kOwned);
  CHECK(rig.PoolBytes(e.physical, 4096) == data);
  CHECK(rig.volume->pending_blocks() == 0);
}

TEST_CASE("a snapshot recall makes owned blocks copy-on-write again", "[volume]") {
  Rig rig;
  std::vector<uint8_t> data(kBlock, 1);
  REQUIRE(rig.Write(0, data).ok());
  REQUIRE(rig.Flush().ok());
  int prepares = rig.remote->prepare_calls;
  REQUIRE(rig.Write(0, data).ok());  // owned: in place
  CHECK(rig.remote->prepare_calls == prepares);
  // As the server does: the snapshot makes the block shared, then recalls the map.
  // (Without this the stand-in would keep answering "owned" and refuse the commit,
  // and the background re-prepare loop would make the prepare count timing-dependent.)
  Extent before = rig.remote->BlockAt(0);
  rig.remote->SetShared(0, before.physical, before.generation);
  Waiter<bool> recalled;
  rig.volume->OnRecall({ByteRange{0, 4 << 20}}, RecallReason::kSnapshot, [&]() { recalled.Set(true); });
  CHECK(recalled.Wait());
  std::vector<uint8_t> newer(kBlock, 2);
  REQUIRE(rig.Write(0, newer).ok());  // now shared: copy-on-write
  CHECK(rig.remote->prepare_calls == prepares + 1);
  CHECK(rig.volume->stats().map_recalls == 1);
  REQUIRE(rig.Flush().ok());
  Extent after = rig.remote->BlockAt(0);
  CHECK(after.state == ExtentState::kOwned);
  CHECK(after.physical != before.physical);  // the snapshot's block was not written in place
  CHECK(rig.PoolBytes(before.physical, kBlock) == data);
  CHECK(rig.PoolBytes(after.physical, kBlock) == newer);
}

TEST_CASE("group commit is lazy: one batch on flush, not one cycle per write", "[volume]") {
  Rig rig(4 << 20, false, /*max_pinned=*/0, /*commit_interval=*/std::chrono::hours(1));
  std::vector<uint8_t> data(kBlock, 9);
  for (uint64_t b = 0; b < 8; b++) REQUIRE(rig.Write(b * kBlock, data).ok());
  // Nothing asked for durability and the interval is far away: no cycle yet.
  CHECK(rig.remote->commit_calls == 0);
  CHECK(rig.volume->pending_blocks() == 8);
  REQUIRE(rig.Flush().ok());
  CHECK(rig.remote->commit_calls == 1);  // all eight blocks in one commit
  CHECK(rig.remote->committed_blocks == 8);
  CHECK(rig.volume->pending_blocks() == 0);
}

TEST_CASE("lazy commit still commits unflushed writes within the interval", "[volume]") {
  Rig rig(4 << 20, false, /*max_pinned=*/0, /*commit_interval=*/std::chrono::milliseconds(20));
  std::vector<uint8_t> data(kBlock, 4);
  REQUIRE(rig.Write(3 * kBlock, data).ok());
  // No flush: the timer starts the cycle (waited for, with a generous bound).
  CHECK(WaitUntil([&] { return rig.volume->pending_blocks() == 0; }));
  CHECK(rig.remote->BlockAt(3).state == ExtentState::kOwned);
}

TEST_CASE("pinned data past half its bound starts a commit without waiting", "[volume]") {
  Rig rig(4 << 20, false, /*max_pinned=*/4 * kBlock, /*commit_interval=*/std::chrono::hours(1));
  std::vector<uint8_t> data(kBlock, 5);
  REQUIRE(rig.Write(0, data).ok());
  CHECK(rig.remote->commit_calls == 0);  // 1 of 4 blocks: below half
  REQUIRE(rig.Write(kBlock, data).ok());  // 2 of 4: a cycle starts now
  CHECK(WaitUntil([&] { return rig.volume->pending_blocks() == 0; }));
  CHECK(rig.remote->commit_calls >= 1);
}

TEST_CASE("copy-on-write writes wait while too much awaits commit", "[volume]") {
  Rig rig(4 << 20, false, /*max_pinned=*/2 * kBlock);
  rig.remote->HoldCommits();
  std::vector<uint8_t> data(kBlock, 3);
  REQUIRE(rig.Write(0, data).ok());
  REQUIRE(rig.Write(kBlock, data).ok());
  std::atomic<bool> third_done{false};
  Waiter<Status> third;
  rig.volume->Write(2 * kBlock, data, false, [&](Status s) {
    third_done = true;
    third.Set(std::move(s));
  });
  // Nothing can be released while commits are held: the third write must wait. The
  // counter says it reached the wait; from there only a commit (held) lets it go on.
  REQUIRE(WaitUntil([&] { return rig.volume->stats().write_throttle_waits >= 1; }));
  CHECK_FALSE(third_done.load());
  CHECK(rig.volume->pending_blocks() == 2);
  CHECK(rig.volume->stats().write_throttle_waits == 1);  // once per write, not per retry
  rig.remote->ReleaseCommits();
  CHECK(third.Wait().ok());
  REQUIRE(rig.Flush().ok());
  CHECK(rig.remote->committed_blocks == 3);
}

TEST_CASE("read-only volumes refuse writes, bad ranges are refused", "[volume]") {
  Rig rig(4 << 20, /*read_only=*/true);
  CHECK(rig.Write(0, std::vector<uint8_t>(512)).code() == StatusCode::kReadOnly);
  std::vector<uint8_t> b(512);
  CHECK(rig.Read(4 << 20, b).code() == StatusCode::kInvalidArgument);
  std::vector<uint8_t> odd(100);
  CHECK(rig.Read(0, odd).code() == StatusCode::kInvalidArgument);
  CHECK(rig.Flush().ok());
}

TEST_CASE("a limited volume's front-end requests wait for their budget on the QoS clock", "[volume][qos]") {
  FakeQosClock clock;
  Rig rig(4 << 20, false, 0, std::chrono::milliseconds(0), &clock);
  auto handle = std::make_unique<FrontHandle>(std::make_shared<OpenVolume>(rig.volume), false);
  FrontHandle& front = *handle;
  QosLimiter& qos = rig.volume->qos();
  CHECK_FALSE(qos.limited());
  // 10 writes/s, a bucket of one: the first write goes, the others one per 100 ms.
  qos.SetLimits(QosLimits{.write_iops = 10, .write_iops_burst = 1});
  std::vector<uint8_t> data(kBlock, 0x5A);
  constexpr int kWrites = 4;
  std::vector<std::unique_ptr<Waiter<Status>>> writes;
  for (int i = 0; i < kWrites; ++i) {
    writes.push_back(std::make_unique<Waiter<Status>>());
    front.Write(static_cast<uint64_t>(i) * kBlock, data, false, writes.back()->Callback());
  }
  REQUIRE(writes[0]->Wait().ok());
  CHECK(qos.stats().queued == kWrites - 1);
  CHECK(rig.volume->stats().logical_write_ops == 1);  // the others never reached the Volume

  // Reads have their own budget (none): they pass the queued writes.
  std::vector<uint8_t> back(kBlock);
  Waiter<Status> read;
  front.Read(0, back, read.Callback());
  REQUIRE(read.Wait().ok());
  CHECK(back == data);

  for (int i = 1; i < kWrites; ++i) {
    clock.Advance(std::chrono::milliseconds(99));
    CHECK(qos.stats().queued == size_t(kWrites - i));
    clock.Advance(std::chrono::milliseconds(1));
    REQUIRE(writes[i]->Wait().ok());
  }
  QosStats s = qos.stats();
  CHECK(s.throttled_write_ops == kWrites - 1);
  CHECK(s.throttled_read_ops == 0);
  CHECK(s.wait_us == (100 + 200 + 300) * 1000);  // virtual time, exactly
  CHECK(rig.volume->stats().logical_write_ops == kWrites);

  // A live change releases waiters at once: lifting the limit lets a held write go.
  Waiter<Status> held;
  front.Write(0, data, false, held.Callback());
  CHECK(qos.stats().queued == 1);
  qos.SetLimits(QosLimits{});
  REQUIRE(held.Wait().ok());
  CHECK(qos.stats().queued == 0);
  // The last handle closes the volume (asynchronously); let that finish before the
  // rig stops its threads.
  handle.reset();
  CHECK(WaitUntil([&]() { return rig.volume.use_count() == 1; }));
}

// ---------------------------------------------------------------------------------------
// Allocation (NBD base:allocation): holes never hide data.

std::vector<AllocationRun> AllocationOf(Rig& rig, uint64_t offset, uint64_t length, size_t max_runs = 1024) {
  Waiter<Result<std::vector<AllocationRun>>> w;
  rig.volume->Allocation(offset, length, max_runs, w.Callback());
  Result<std::vector<AllocationRun>> r = w.Wait();
  REQUIRE(r.ok());
  return *r;
}

// "H:len" / "D:len" per run, in blocks where whole, for readable checks.
std::string Runs(const std::vector<AllocationRun>& runs) {
  std::string out;
  for (const AllocationRun& r : runs) {
    out += (r.hole ? "H" : "D");
    out += r.length % kBlock == 0 ? std::to_string(r.length / kBlock) : std::to_string(r.length) + "b";
    out += " ";
  }
  return out;
}

TEST_CASE("allocation: uncommitted writes are data, holes stay holes, committed or not", "[volume][allocation]") {
  Rig rig(4 << 20, false, /*max_pinned=*/0, /*commit_interval=*/std::chrono::hours(1));
  CHECK(Runs(AllocationOf(rig, 0, 64 * kBlock)) == "H64 ");
  std::vector<uint8_t> data(4096, 0x5A);
  REQUIRE(rig.Write(3 * kBlock + 8192, data).ok());
  REQUIRE(rig.Write(10 * kBlock, std::vector<uint8_t>(2 * kBlock, 1)).ok());
  // Pending (pinned, not committed): the map still says hole for these blocks.
  REQUIRE(rig.volume->pending_blocks() == 3);
  CHECK(rig.remote->BlockAt(3).state == ExtentState::kHole);
  CHECK(Runs(AllocationOf(rig, 0, 64 * kBlock)) == "H3 D1 H6 D2 H52 ");
  REQUIRE(rig.Flush().ok());
  REQUIRE(rig.volume->pending_blocks() == 0);
  CHECK(Runs(AllocationOf(rig, 0, 64 * kBlock)) == "H3 D1 H6 D2 H52 ");
  // Ranges not aligned to blocks are answered in bytes.
  CHECK(Runs(AllocationOf(rig, 3 * kBlock - 512, kBlock + 1024)) == "H512b D1 H512b ");
}

TEST_CASE("allocation: shared blocks are data, max_runs cuts the answer short", "[volume][allocation]") {
  Rig rig(4 << 20, false, /*max_pinned=*/0, /*commit_interval=*/std::chrono::hours(1));
  rig.remote->SetShared(1, kDataStart + 3 * kBlock, 7);
  REQUIRE(rig.Write(5 * kBlock, std::vector<uint8_t>(512, 2)).ok());
  CHECK(Runs(AllocationOf(rig, 0, 8 * kBlock)) == "H1 D1 H3 D1 H2 ");
  CHECK(Runs(AllocationOf(rig, 0, 8 * kBlock, 1)) == "H1 ");
  CHECK(Runs(AllocationOf(rig, 0, 8 * kBlock, 3)) == "H1 D1 H3 ");
  // Discarded blocks are holes again once the discard completed.
  Waiter<Status> w;
  rig.volume->Discard(5 * kBlock, kBlock, w.Callback());
  REQUIRE(w.Wait().ok());
  CHECK(Runs(AllocationOf(rig, 0, 8 * kBlock)) == "H1 D1 H6 ");
}

TEST_CASE("allocation: bad ranges are refused", "[volume][allocation]") {
  Rig rig;
  for (auto [offset, length] : std::vector<std::pair<uint64_t, uint64_t>>{
           {0, 0}, {100, 512}, {0, 100}, {4 << 20, 512}, {(4 << 20) - 512, 1024}}) {
    Waiter<Result<std::vector<AllocationRun>>> w;
    rig.volume->Allocation(offset, length, 16, w.Callback());
    CHECK(w.Wait().status().code() == StatusCode::kInvalidArgument);
  }
}

TEST_CASE("CopyUp gives shared blocks private copies and leaves holes, owned and pending blocks alone",
          "[volume][flatten]") {
  Rig rig;
  const uint64_t golden = kDataStart + 10 * kBlock;
  for (uint64_t b = 0; b < 3; b++) {
    rig.PoolFill(golden + b * kBlock, kBlock, static_cast<uint8_t>(0x30 + b));
    rig.remote->SetShared(b, golden + b * kBlock, 7);
  }
  // Block 3 written here (pending, then owned after the flush); block 4 a hole.
  REQUIRE(rig.Write(3 * kBlock, std::vector<uint8_t>(kBlock, 0x77)).ok());
  Waiter<Result<uint64_t>> w;
  rig.volume->CopyUp(0, 5 * kBlock, w.Callback());
  auto copied = w.Wait();
  REQUIRE(copied.ok());
  CHECK(*copied == 3);
  REQUIRE(rig.Flush().ok());
  for (uint64_t b = 0; b < 3; b++) {
    Extent e = rig.remote->BlockAt(b);
    CHECK(e.state == ExtentState::kOwned);
    CHECK(e.physical != golden + b * kBlock);
    CHECK(rig.PoolBytes(e.physical, kBlock) == std::vector<uint8_t>(kBlock, static_cast<uint8_t>(0x30 + b)));
    // The golden blocks are untouched.
    CHECK(rig.PoolBytes(golden + b * kBlock, kBlock) == std::vector<uint8_t>(kBlock, static_cast<uint8_t>(0x30 + b)));
  }
  CHECK(rig.remote->BlockAt(4).state == ExtentState::kHole);
  // Nothing shared is left: a second CopyUp copies nothing.
  Waiter<Result<uint64_t>> again;
  rig.volume->CopyUp(0, 5 * kBlock, again.Callback());
  REQUIRE(again.Wait().ok());
  Waiter<Result<uint64_t>> third;
  rig.volume->CopyUp(0, 5 * kBlock, third.Callback());
  auto none = third.Wait();
  REQUIRE(none.ok());
  CHECK(*none == 0);
}

TEST_CASE("CopyUp racing writes to the same shared blocks never loses a write", "[volume][flatten]") {
  Rig rig;
  const uint64_t golden = kDataStart + 20 * kBlock;
  constexpr uint64_t kBlocks = 16;
  for (uint64_t b = 0; b < kBlocks; b++) {
    rig.PoolFill(golden + b * kBlock, kBlock, 0x11);
    rig.remote->SetShared(b, golden + b * kBlock, 7);
  }
  // Every block gets a CopyUp and a partial write issued together, in both orders; the
  // write's bytes must be there afterwards whichever runs first.
  std::vector<Waiter<Result<uint64_t>>> copies(kBlocks);
  std::vector<Waiter<Status>> writes(kBlocks);
  std::vector<std::vector<uint8_t>> data(kBlocks);
  for (uint64_t b = 0; b < kBlocks; b++) {
    data[b].assign(4096, static_cast<uint8_t>(0x80 + b));
    if (b % 2 == 0) rig.volume->CopyUp(b * kBlock, kBlock, copies[b].Callback());
    rig.volume->Write(b * kBlock + 8192, data[b], false, writes[b].Callback());
    if (b % 2 == 1) rig.volume->CopyUp(b * kBlock, kBlock, copies[b].Callback());
  }
  uint64_t copied = 0;
  for (uint64_t b = 0; b < kBlocks; b++) {
    REQUIRE(writes[b].Wait().ok());
    auto c = copies[b].Wait();
    REQUIRE(c.ok());
    copied += *c;
  }
  // A block the write made private first has nothing left to copy.
  CHECK(copied <= kBlocks);
  REQUIRE(rig.Flush().ok());
  for (uint64_t b = 0; b < kBlocks; b++) {
    std::vector<uint8_t> back(kBlock);
    REQUIRE(rig.Read(b * kBlock, back).ok());
    std::vector<uint8_t> want(kBlock, 0x11);
    std::fill(want.begin() + 8192, want.begin() + 8192 + 4096, static_cast<uint8_t>(0x80 + b));
    INFO("block " << b);
    CHECK(back == want);
    Extent e = rig.remote->BlockAt(b);
    CHECK(e.state == ExtentState::kOwned);
    CHECK(rig.PoolBytes(e.physical, kBlock) == want);
  }
}

TEST_CASE("CopyUp refuses what it cannot do", "[volume][flatten]") {
  SECTION("a read-only opener") {
    Rig rig(4 << 20, /*read_only=*/true);
    Waiter<Result<uint64_t>> w;
    rig.volume->CopyUp(0, kBlock, w.Callback());
    CHECK(w.Wait().status().code() == StatusCode::kReadOnly);
  }
  SECTION("ranges not on block boundaries or past the end") {
    Rig rig;
    Waiter<Result<uint64_t>> a, b;
    rig.volume->CopyUp(4096, kBlock, a.Callback());
    CHECK(a.Wait().status().code() == StatusCode::kInvalidArgument);
    rig.volume->CopyUp(0, 8 << 20, b.Callback());
    CHECK(b.Wait().status().code() == StatusCode::kInvalidArgument);
  }
}

}  // namespace
}  // namespace tapmap::engine
