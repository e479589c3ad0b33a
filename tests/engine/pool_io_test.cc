// Pool I/O: both implementations read back what they wrote, sync, continue past the
// end of the file correctly, and reject unaligned I/O.
#include <fcntl.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstring>

#include "tapdisk-map/pool/pool_io.h"
#include "tests/engine/test_util.h"

namespace tapmap::pool {
namespace {

using tapmap::testing::IoThreads;
using tapmap::testing::TempDir;
using tapmap::testing::Waiter;

std::string MakePoolFile(const TempDir& dir, uint64_t size) {
  std::string path = dir.path() + "/pool";
  int fd = ::open(path.c_str(), O_CREAT | O_RDWR | O_CLOEXEC, 0600);
  REQUIRE(fd >= 0);
  REQUIRE(::ftruncate(fd, static_cast<off_t>(size)) == 0);
  ::close(fd);
  return path;
}

Status RunRead(PoolIo& io, uint64_t off, std::span<uint8_t> buf) {
  Waiter<Status> w;
  io.Read(off, buf, w.Callback());
  return w.Wait();
}
Status RunWrite(PoolIo& io, uint64_t off, std::span<const uint8_t> buf) {
  Waiter<Status> w;
  io.Write(off, buf, w.Callback());
  return w.Wait();
}

void RoundTrip(PoolIoKind kind) {
  TempDir dir;
  std::string path = MakePoolFile(dir, 4 * 1024 * 1024);
  IoThreads threads;
  Logger log("test", LogLevel::kError);
  auto file = PoolFile::Open(path, false, log);
  REQUIRE(file.ok());
  auto io = CreatePoolIo(threads.io(), std::move(*file), kind, log);
  REQUIRE(io.ok());
  PoolIo& pool = **io;
  CHECK(pool.kind() == (kind == PoolIoKind::kUring     ? "io_uring"
                        : kind == PoolIoKind::kThreads ? "threads"
                                                       : "io_uring+threads"));

  // Many writes in flight at once (more than the queue depth of 128).
  constexpr int kBlocks = 300;
  std::vector<AlignedBuffer> bufs;
  for (int i = 0; i < kBlocks; i++) {
    bufs.emplace_back(4096);
    std::memset(bufs.back().data(), i & 0xff, 4096);
  }
  std::mutex mu;
  std::condition_variable cv;
  int completed = 0, failed = 0;
  for (int i = 0; i < kBlocks; i++) {
    pool.Write(uint64_t(i) * 8192, bufs[i].span(), [&](Status s) {
      std::lock_guard<std::mutex> lock(mu);
      completed++;
      if (!s.ok()) failed++;
      cv.notify_all();
    });
  }
  {
    std::unique_lock<std::mutex> lock(mu);
    REQUIRE(cv.wait_for(lock, std::chrono::seconds(60), [&] { return completed == kBlocks; }));
  }
  CHECK(failed == 0);
  Waiter<Status> sync;
  pool.Sync(sync.Callback());
  CHECK(sync.Wait().ok());

  AlignedBuffer back(4096);
  for (int i : {0, 1, 127, 128, 299}) {
    REQUIRE(RunRead(pool, uint64_t(i) * 8192, back.span()).ok());
    CHECK(back.data()[0] == (i & 0xff));
    CHECK(back.data()[4095] == (i & 0xff));
    // The gaps between written blocks read as zeros.
    REQUIRE(RunRead(pool, uint64_t(i) * 8192 + 4096, back.span()).ok());
    CHECK(back.data()[17] == 0);
  }
  auto c = pool.counters();
  CHECK(c.write_ops == kBlocks);
  CHECK(c.bytes_written == kBlocks * 4096u);
  CHECK(c.sync_ops == 1);

  // A vectored write: pieces from separate buffers land back to back, as one write.
  std::vector<AlignedBuffer> pieces;
  std::vector<std::span<const uint8_t>> spans;
  for (int i = 0; i < 5; i++) {
    pieces.emplace_back(i == 2 ? 8192 : 4096);
    std::memset(pieces.back().data(), 0xa0 + i, pieces.back().size());
  }
  for (auto& p : pieces) spans.push_back(p.span());
  constexpr uint64_t kVecAt = 3 * 1024 * 1024;
  Waiter<Status> vw;
  pool.WriteV(kVecAt, spans, vw.Callback());
  REQUIRE(vw.Wait().ok());
  AlignedBuffer all(6 * 4096);
  REQUIRE(RunRead(pool, kVecAt, all.span()).ok());
  const int expect[6] = {0xa0, 0xa1, 0xa2, 0xa2, 0xa3, 0xa4};
  for (int page = 0; page < 6; page++) {
    CHECK(all.data()[page * 4096] == expect[page]);
    CHECK(all.data()[page * 4096 + 4095] == expect[page]);
  }
  CHECK(pool.counters().bytes_written == kBlocks * 4096u + 6 * 4096u);
  Waiter<Status> bad_vec;
  pool.WriteV(kVecAt, {std::span<const uint8_t>(back.data(), 1000)}, bad_vec.Callback());
  CHECK(bad_vec.Wait().code() == StatusCode::kInvalidArgument);

  // Past the end of the file: io-error, not a silent zero fill.
  Status past = RunRead(pool, 4 * 1024 * 1024, back.span());
  CHECK(past.code() == StatusCode::kIoError);
  // Misaligned offset, length, buffer.
  CHECK(RunRead(pool, 512, back.span()).code() == StatusCode::kInvalidArgument);
  CHECK(RunRead(pool, 0, back.span().subspan(0, 1000)).code() == StatusCode::kInvalidArgument);
  CHECK(RunWrite(pool, 0, std::span<const uint8_t>(back.data() + 512, 4096 - 512)).code() ==
        StatusCode::kInvalidArgument);
  io->reset();
}

TEST_CASE("an aligned buffer slice shares its parent's memory and keeps it alive", "[pool]") {
  auto parent = std::make_shared<AlignedBuffer>(4 * 4096);
  std::weak_ptr<AlignedBuffer> watch = parent;
  auto slice = AlignedBuffer::Slice(parent, 2 * 4096, 4096);
  CHECK(slice->data() == parent->data() + 2 * 4096);
  CHECK(slice->size() == 4096);
  slice->data()[0] = 0x5A;
  CHECK(parent->data()[2 * 4096] == 0x5A);
  parent.reset();
  CHECK_FALSE(watch.expired());  // the slice owns it now
  AlignedBuffer moved = std::move(*slice);
  CHECK(slice->data() == nullptr);
  slice.reset();
  CHECK_FALSE(watch.expired());  // ownership moved with the view
  CHECK(moved.data()[0] == 0x5A);
  moved = AlignedBuffer(4096);
  CHECK(watch.expired());
}

TEST_CASE("io_uring pool I/O round trip", "[pool]") { RoundTrip(PoolIoKind::kUring); }
TEST_CASE("thread pool I/O round trip", "[pool]") { RoundTrip(PoolIoKind::kThreads); }
// On a regular file, auto reads via io_uring and writes via threads.
TEST_CASE("auto (hybrid on a regular file) pool I/O round trip", "[pool]") { RoundTrip(PoolIoKind::kAuto); }

bool KernelTakesODirect(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDWR | O_DIRECT | O_CLOEXEC);
  if (fd < 0) return false;
  ::close(fd);
  return true;
}

TEST_CASE("pool file uses O_DIRECT where the filesystem allows, buffered elsewhere", "[pool]") {
  TempDir dir;
  std::string path = MakePoolFile(dir, 65536);
  Logger log("test", LogLevel::kError);
  auto file = PoolFile::Open(path, false, log);
  REQUIRE(file.ok());
  CHECK(file->size_bytes() == 65536);
  CHECK(file->direct() == KernelTakesODirect(path));
  // tmpfs refuses O_DIRECT on older kernels: the open must still succeed (buffered).
  std::string shm = "/dev/shm/tapmap-engine-test-" + std::to_string(::getpid());
  int fd = ::open(shm.c_str(), O_CREAT | O_RDWR | O_CLOEXEC, 0600);
  if (fd >= 0) {
    ::close(fd);
    auto f = PoolFile::Open(shm, false, log);
    bool expect_direct = KernelTakesODirect(shm);
    ::unlink(shm.c_str());
    REQUIRE(f.ok());
    CHECK(f->direct() == expect_direct);
  }
  CHECK(PoolFile::Open(dir.path() + "/missing", false, log).status().code() == StatusCode::kNotFound);
}

}  // namespace
}  // namespace tapmap::pool
