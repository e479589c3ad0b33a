// engine_bench: measurements of the engine's lower layers.
//
//   engine_bench pool  [--dir DIR] [--seconds N] [--depth N]
//       4 KiB random reads and writes on an O_DIRECT pool file, io_uring vs a
//       thread pool doing pread/pwrite (same queue depth), and their ratio; also
//       the default (auto: io_uring reads, thread writes on a regular file).
//   engine_bench cache [--seconds N] [--threads N]
//       read throughput of data-cache hits (lookup + copy of 4 KiB out of a 64 KiB
//       block), as the read path does for a block the host already holds.
//   engine_bench volume [--seconds N] [--depth N]
//       the whole engine read path against a real mapserver (started here, in a temp
//       dir): a 64 MiB volume is written and read once, then 4 KiB random reads at
//       queue depth N (all cache hits) and 1 MiB sequential reads are timed.
//   engine_bench write [--depth N] [--mib N] [--cache-mib N] [--max-pinned-mib N] [--commit-interval-ms N]
//       sequential 1 MiB writes (default 256 MiB, depth 8, ending with a flush) into
//       a fresh clone through the engine, against a real mapserver, vs the same
//       writes with O_DIRECT to a file in the same directory: the engine's share of
//       bench/nbd/seq_write.sh, without the NBD transport.
//   engine_bench all   all four.
//
// Output: one "name value unit" line per figure, then a summary.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/thread_pool.hpp>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <optional>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "common/heap_tuning.h"
#include "common/logging.h"
#include "protocol/connection.h"
#include "protocol/remote_status.h"
#include "tapdisk-map/engine/data_cache.h"
#include "tapdisk-map/engine/engine.h"
#include "tests/support/child_process.h"
#include "tapdisk-map/pool/pool_io.h"

namespace tapmap::bench {
namespace {

using Clock = std::chrono::steady_clock;
using pool::AlignedBuffer;
using pool::PoolIo;
using pool::PoolIoKind;

struct Settings {
  std::string dir = "/tmp";
  double seconds = 3;
  unsigned depth = 32;
  unsigned threads = 2;
  uint64_t file_bytes = 256ull << 20;
  uint64_t cache_bytes = 256ull << 20;  // the engine's --cache-size (write: bounds pinned data)
  uint64_t max_pinned_bytes = 0;        // 0: the engine's default (max(256 MiB, cache / 4))
  int64_t commit_interval_ms = -1;      // -1: the engine's default
};

class IoRunner {
 public:
  IoRunner() : guard_(io_.get_executor()) {
    for (int i = 0; i < 2; i++) threads_.emplace_back([this] { io_.run(); });
  }
  ~IoRunner() {
    guard_.reset();
    io_.stop();
    for (auto& t : threads_) t.join();
  }
  boost::asio::io_context& io() { return io_; }

 private:
  boost::asio::io_context io_;
  boost::asio::executor_work_guard<boost::asio::io_context::executor_type> guard_;
  std::vector<std::thread> threads_;
};

// Keeps `depth` random 4 KiB operations in flight for `seconds`; returns ops/s.
double RandomIo(PoolIo& pool, const Settings& s, bool write) {
  const uint64_t pages = s.file_bytes / 4096;
  std::vector<AlignedBuffer> bufs;
  for (unsigned i = 0; i < s.depth; i++) bufs.emplace_back(4096);
  std::mutex mu;
  std::condition_variable cv;
  std::atomic<uint64_t> done_ops{0};
  std::atomic<bool> stop{false};
  unsigned running = s.depth;
  std::atomic<uint64_t> errors{0};
  std::function<void(unsigned)> issue = [&](unsigned slot) {
    if (stop.load()) {
      std::lock_guard<std::mutex> lock(mu);
      if (--running == 0) cv.notify_all();
      return;
    }
    thread_local std::mt19937_64 rng(std::random_device{}());
    uint64_t off = (rng() % pages) * 4096;
    auto next = [&, slot](Status st) {
      if (!st.ok()) errors++;
      done_ops++;
      issue(slot);
    };
    if (write) pool.Write(off, bufs[slot].span(), next);
    else pool.Read(off, bufs[slot].span(), next);
  };
  auto start = Clock::now();
  for (unsigned i = 0; i < s.depth; i++) issue(i);
  std::this_thread::sleep_for(std::chrono::duration<double>(s.seconds));
  stop = true;
  std::unique_lock<std::mutex> lock(mu);
  cv.wait(lock, [&] { return running == 0; });
  double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
  if (errors) std::fprintf(stderr, "warning: %llu I/O errors\n", static_cast<unsigned long long>(errors.load()));
  return done_ops.load() / elapsed;
}

int BenchPool(const Settings& s) {
  std::string path = s.dir + "/engine-bench-pool-" + std::to_string(::getpid());
  int fd = ::open(path.c_str(), O_CREAT | O_RDWR | O_CLOEXEC, 0600);
  if (fd < 0) {
    std::perror(path.c_str());
    return 1;
  }
  // Fill the file so that reads hit allocated blocks (not holes).
  std::vector<char> chunk(1 << 20, 'x');
  for (uint64_t off = 0; off < s.file_bytes; off += chunk.size()) {
    if (::pwrite(fd, chunk.data(), chunk.size(), off) != static_cast<ssize_t>(chunk.size())) {
      std::perror("fill");
      return 1;
    }
  }
  ::fdatasync(fd);
  ::close(fd);
  Logger log("engine_bench", LogLevel::kWarning);
  double results[3][2] = {};
  bool direct = false;
  for (int k = 0; k < 3; k++) {
    PoolIoKind kind = k == 0 ? PoolIoKind::kUring : k == 1 ? PoolIoKind::kThreads : PoolIoKind::kAuto;
    IoRunner runner;
    auto file = pool::PoolFile::Open(path, false, log);
    if (!file.ok()) {
      std::fprintf(stderr, "%s\n", file.status().ToString().c_str());
      return 1;
    }
    direct = file->direct();
    // The thread pool gets as many threads as the queue depth: the same concurrency.
    auto io = pool::CreatePoolIo(runner.io(), std::move(*file), kind, log, s.depth, s.depth);
    if (!io.ok()) {
      std::fprintf(stderr, "%s\n", io.status().ToString().c_str());
      return 1;
    }
    results[k][0] = RandomIo(**io, s, false);
    results[k][1] = RandomIo(**io, s, true);
    std::printf("pool_%s_randread_4k_qd%u %.0f IOPS\n", std::string((*io)->kind()).c_str(), s.depth, results[k][0]);
    std::printf("pool_%s_randwrite_4k_qd%u %.0f IOPS\n", std::string((*io)->kind()).c_str(), s.depth, results[k][1]);
  }
  ::unlink(path.c_str());
  std::printf("pool_uring_vs_threads_randread_ratio %.2f x\n", results[0][0] / results[1][0]);
  std::printf("pool_uring_vs_threads_randwrite_ratio %.2f x\n", results[0][1] / results[1][1]);
  std::printf("pool_auto_vs_threads_randread_ratio %.2f x\n", results[2][0] / results[1][0]);
  std::printf("pool_auto_vs_threads_randwrite_ratio %.2f x\n", results[2][1] / results[1][1]);
  std::printf("pool_o_direct %s\n", direct ? "yes" : "no");
  return 0;
}

int BenchCache(const Settings& s) {
  constexpr uint32_t kBlock = 64 * 1024;
  constexpr uint64_t kBlocks = 1024;  // 64 MiB of cached blocks
  engine::DataCache cache(kBlocks * kBlock, kBlock);
  for (uint64_t b = 0; b < kBlocks; b++) {
    auto buf = std::make_shared<AlignedBuffer>(kBlock);
    std::memset(buf->data(), int(b), kBlock);
    cache.Put(engine::BlockKey{0, b * kBlock, 1}, std::move(buf));
  }
  std::atomic<uint64_t> ops{0};
  std::atomic<bool> stop{false};
  std::vector<std::thread> workers;
  auto never = [](engine::DataCache::LoadDone loaded) { loaded(Status::Internal("bench: unexpected miss")); };
  for (unsigned t = 0; t < s.threads; t++) {
    workers.emplace_back([&, t] {
      std::mt19937_64 rng(t + 1);
      std::vector<uint8_t> out(4096);
      uint64_t n = 0;
      while (!stop.load(std::memory_order_relaxed)) {
        uint64_t b = rng() % kBlocks;
        size_t in_block = (rng() % (kBlock / 4096)) * 4096;
        cache.Get(engine::BlockKey{0, b * kBlock, 1}, never,
                  [&](Result<engine::BlockData> data, engine::DataCache::GetInfo) {
                    if (data.ok()) std::memcpy(out.data(), (*data)->data() + in_block, 4096);
                  });
        n++;
      }
      ops += n;
    });
  }
  auto start = Clock::now();
  std::this_thread::sleep_for(std::chrono::duration<double>(s.seconds));
  stop = true;
  for (auto& w : workers) w.join();
  double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
  double rate = ops.load() / elapsed;
  auto c = cache.counters();
  std::printf("cache_hit_read_4k_threads%u %.0f ops/s\n", s.threads, rate);
  std::printf("cache_hit_read_4k_threads%u_bandwidth %.1f MiB/s\n", s.threads, rate * 4096 / (1 << 20));
  std::printf("cache_hit_misses %llu (must be 0)\n", static_cast<unsigned long long>(c.misses));
  return c.misses == 0 ? 0 : 1;
}

// Waits for a callback's value (up to 60 s).
template <typename T>
class Sync {
 public:
  void Set(T v) {
    std::lock_guard<std::mutex> lock(mu_);
    value_ = std::move(v);
    cv_.notify_all();
  }
  T Wait() {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait_for(lock, std::chrono::seconds(60), [this] { return value_.has_value(); });
    if (!value_) throw std::runtime_error("timed out");
    return std::move(*value_);
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::optional<T> value_;
};

// Keeps `depth` reads of `size` bytes in flight for `seconds`; returns ops/s.
double DeviceReads(engine::BlockDevice& dev, uint64_t span, uint64_t size, unsigned depth, double seconds,
                   bool sequential) {
  std::vector<std::vector<uint8_t>> bufs(depth, std::vector<uint8_t>(size));
  std::mutex mu;
  std::condition_variable cv;
  std::atomic<uint64_t> ops{0}, errors{0}, next_seq{0};
  std::atomic<bool> stop{false};
  unsigned running = depth;
  std::function<void(unsigned)> issue = [&](unsigned slot) {
    if (stop.load()) {
      std::lock_guard<std::mutex> lock(mu);
      if (--running == 0) cv.notify_all();
      return;
    }
    thread_local std::mt19937_64 rng(std::random_device{}());
    uint64_t off = sequential ? (next_seq++ * size) % span : (rng() % (span / size)) * size;
    dev.Read(off, bufs[slot], [&, slot](Status st) {
      if (!st.ok()) errors++;
      ops++;
      issue(slot);
    });
  };
  auto start = Clock::now();
  for (unsigned i = 0; i < depth; i++) issue(i);
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
  stop = true;
  std::unique_lock<std::mutex> lock(mu);
  cv.wait(lock, [&] { return running == 0; });
  if (errors) std::fprintf(stderr, "warning: %llu read errors\n", static_cast<unsigned long long>(errors.load()));
  return ops.load() / std::chrono::duration<double>(Clock::now() - start).count();
}

// A real mapserver (in a temp dir) and an Engine connected to it, for the volume
// and write benches.
class EngineStack {
 public:
  // Formats a pool of `pool_size` ("1G") and starts mapserver; Ok() tells if it worked.
  EngineStack(const std::string& bin_dir, const std::string& pool_size, bool preallocate = false,
              uint64_t cache_bytes = 256ull << 20, uint64_t max_pinned_bytes = 0, int64_t commit_interval_ms = -1)
      : dir_("engine-bench") {
    secret_ = dir_ / "secret";
    sock_ = dir_ / "ms.sock";
    FILE* f = std::fopen(secret_.c_str(), "w");
    std::fputs("bench secret\n", f);
    std::fclose(f);
    ::chmod(secret_.c_str(), 0600);
    FILE* c = std::fopen((dir_ / "tapmap.conf").c_str(), "w");
    std::fclose(c);
    std::string out;
    std::vector<std::string> format = {bin_dir + "/mapserver", "format", "--pool", dir_ / "pool", "--meta",
                                       dir_ / "meta", "--size", pool_size, "--config", dir_ / "tapmap.conf"};
    if (preallocate) format.push_back("--preallocate");
    if (testing::RunCommand(format, &out) != 0) {
      status_ = Status::Internal("mapserver format failed: " + out);
      return;
    }
    server_ = std::make_unique<testing::ChildProcess>(
        std::vector<std::string>{bin_dir + "/mapserver", "serve", "--pool", dir_ / "pool", "--meta", dir_ / "meta",
                                 "--listen", "unix:" + sock_, "--secret-file", secret_, "--config",
                                 dir_ / "tapmap.conf"},
        dir_ / "mapserver.log");
    testing::WaitForPath(sock_, std::chrono::seconds(30));
    engine::EngineOptions eo;
    eo.server = "unix:" + sock_;
    eo.host = "bench";
    eo.secret_file = secret_;
    eo.pool_path = dir_ / "pool";
    eo.cache_size_bytes = cache_bytes;
    eo.max_pinned_bytes = max_pinned_bytes;
    if (commit_interval_ms >= 0) eo.commit_interval = std::chrono::milliseconds(commit_interval_ms);
    auto made = engine::Engine::Create(runner_.io(), eo, Logger("engine", LogLevel::kWarning));
    if (!made.ok()) {
      status_ = made.status();
      return;
    }
    engine_ = std::move(*made);
  }
  ~EngineStack() {
    if (engine_) {
      Sync<bool> down;
      engine_->Shutdown([&]() { down.Set(true); });
      down.Wait();
      engine_.reset();
    }
  }
  const Status& status() const { return status_; }
  const std::string& dir() const { return dir_.path(); }
  engine::Engine& engine() { return *engine_; }

  // Runs `session` requests on a fresh connection (volume set-up).
  Status Admin(const std::function<void(protocol::Connection&, kj::WaitScope&)>& fn) {
    auto kio = kj::setupAsyncIo();
    auto addr = protocol::ParseServerAddress("unix:" + sock_);
    Result<kj::Own<protocol::Connection>> conn = Status::Unavailable("not yet");
    for (int i = 0; i < 300 && !conn.ok(); i++) {
      conn = protocol::Connection::ConnectBlocking(kio, *addr, "bench-admin", "bench secret");
      if (!conn.ok()) std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    if (!conn.ok()) return conn.status();
    return protocol::RunCatching([&] { fn(**conn, kio.waitScope); });
  }

  Result<std::shared_ptr<engine::BlockDevice>> Open(const std::string& name) {
    Sync<Result<std::shared_ptr<engine::BlockDevice>>> opened;
    engine_->Open(name, false, [&](Result<std::shared_ptr<engine::BlockDevice>> r) { opened.Set(std::move(r)); });
    return opened.Wait();
  }

 private:
  testing::TempDir dir_;
  std::string secret_, sock_;
  Status status_;
  std::unique_ptr<testing::ChildProcess> server_;
  IoRunner runner_;
  std::unique_ptr<engine::Engine> engine_;
};

int BenchVolume(const Settings& s, const std::string& bin_dir) {
  EngineStack stack(bin_dir, "256M");
  if (!stack.status().ok()) {
    std::fprintf(stderr, "%s\n", stack.status().ToString().c_str());
    return 1;
  }
  constexpr uint64_t kSpan = 64ull << 20;
  Status created = stack.Admin([&](protocol::Connection& conn, kj::WaitScope& ws) {
    auto req = conn.session().createRequest();
    req.setName("bench");
    req.setSizeBytes(kSpan);
    req.send().wait(ws);
  });
  if (!created.ok()) {
    std::fprintf(stderr, "create: %s\n", created.ToString().c_str());
    return 1;
  }
  auto dev = stack.Open("bench");
  if (!dev.ok()) {
    std::fprintf(stderr, "%s\n", dev.status().ToString().c_str());
    return 1;
  }
  std::vector<uint8_t> chunk(1 << 20, 0x5a);
  for (uint64_t off = 0; off < kSpan; off += chunk.size()) {
    Sync<Status> w;
    (*dev)->Write(off, chunk, false, [&](Status st) { w.Set(st); });
    if (!w.Wait().ok()) return 1;
  }
  Sync<Status> f;
  (*dev)->Flush([&](Status st) { f.Set(st); });
  if (!f.Wait().ok()) return 1;
  DeviceReads(**dev, kSpan, 1 << 20, 4, 0.5, true);  // warm: every block cached
  uint64_t pool_reads_before = stack.engine().Stats().host.pool_read_ops;
  double iops = DeviceReads(**dev, kSpan, 4096, s.depth, s.seconds, false);
  double seq = DeviceReads(**dev, kSpan, 1 << 20, 4, s.seconds, true);
  uint64_t pool_reads = stack.engine().Stats().host.pool_read_ops - pool_reads_before;
  std::printf("engine_cached_randread_4k_qd%u %.0f IOPS\n", s.depth, iops);
  std::printf("engine_cached_seqread_1m_qd4 %.0f MiB/s\n", seq);
  std::printf("engine_cached_pool_reads_during_timed_runs %llu (expect 0)\n",
              static_cast<unsigned long long>(pool_reads));
  return 0;
}

// Writes `total` bytes sequentially in 1 MiB pieces, `depth` in flight, through
// `write_at`, then `sync_all`; returns MiB/s including the sync.
double SequentialWrites(uint64_t total, unsigned depth,
                        const std::function<void(uint64_t, std::span<const uint8_t>, std::function<void(Status)>)>& write_at,
                        const std::function<Status()>& sync_all) {
  constexpr size_t kPiece = 1 << 20;
  AlignedBuffer data(kPiece);
  std::memset(data.data(), 0xa5, kPiece);
  std::mutex mu;
  std::condition_variable cv;
  uint64_t next = 0;
  unsigned running = depth;
  std::atomic<uint64_t> errors{0};
  std::function<void()> issue = [&] {
    uint64_t off;
    {
      std::lock_guard<std::mutex> lock(mu);
      if (next >= total) {
        if (--running == 0) cv.notify_all();
        return;
      }
      off = next;
      next += kPiece;
    }
    write_at(off, data.span(), [&](Status st) {
      if (!st.ok()) errors++;
      issue();
    });
  };
  auto start = Clock::now();
  for (unsigned i = 0; i < depth; i++) issue();
  {
    std::unique_lock<std::mutex> lock(mu);
    cv.wait(lock, [&] { return running == 0; });
  }
  Status synced = sync_all();
  double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
  if (errors || !synced.ok()) {
    std::fprintf(stderr, "warning: %llu write errors, sync: %s\n", static_cast<unsigned long long>(errors.load()),
                 synced.ToString().c_str());
    return 0;
  }
  return total / elapsed / (1 << 20);
}

// Sequential 1 MiB writes into a fresh clone through the engine (no NBD) vs the same
// writes with O_DIRECT to a file in the same directory, as bench/nbd/seq_write.sh does
// through NBD: this separates the engine's cost from the NBD transport's.
int BenchWrite(const Settings& s, const std::string& bin_dir) {
  const uint64_t total = s.file_bytes;
  EngineStack stack(bin_dir, std::to_string((total >> 20) * 2 + 256) + "M", /*preallocate=*/true, s.cache_bytes,
                    s.max_pinned_bytes, s.commit_interval_ms);
  if (!stack.status().ok()) {
    std::fprintf(stderr, "%s\n", stack.status().ToString().c_str());
    return 1;
  }
  Status made = stack.Admin([&](protocol::Connection& conn, kj::WaitScope& ws) {
    auto create = conn.session().createRequest();
    create.setName("base");
    create.setSizeBytes(total);
    create.send().wait(ws);
    auto snap = conn.session().snapshotRequest();
    snap.setSource("base");
    snap.setName("base-v1");
    snap.send().wait(ws);
    auto clone = conn.session().cloneRequest();
    clone.setSource("base-v1");
    clone.setName("fresh");
    clone.send().wait(ws);
  });
  if (!made.ok()) {
    std::fprintf(stderr, "set-up: %s\n", made.ToString().c_str());
    return 1;
  }
  auto dev = stack.Open("fresh");
  if (!dev.ok()) {
    std::fprintf(stderr, "%s\n", dev.status().ToString().c_str());
    return 1;
  }
  double engine_mibs = SequentialWrites(
      total, s.depth,
      [&](uint64_t off, std::span<const uint8_t> d, std::function<void(Status)> done) {
        (*dev)->Write(off, d, false, std::move(done));
      },
      [&] {
        Sync<Status> f;
        (*dev)->Flush([&](Status st) { f.Set(st); });
        return f.Wait();
      });
  auto counters = stack.engine().Stats().host;

  // Raw: the same writes, O_DIRECT, on as many threads as the depth.
  std::string raw_path = stack.dir() + "/raw-target";
  int fd = ::open(raw_path.c_str(), O_CREAT | O_RDWR | O_DIRECT | O_CLOEXEC, 0600);
  if (fd < 0 || ::posix_fallocate(fd, 0, static_cast<off_t>(total)) != 0) {  // preallocated, as the pool
    std::perror(raw_path.c_str());
    return 1;
  }
  double raw_mibs;
  {
    IoRunner runner;
    boost::asio::thread_pool writers(s.depth);
    raw_mibs = SequentialWrites(
        total, s.depth,
        [&](uint64_t off, std::span<const uint8_t> d, std::function<void(Status)> done) {
          boost::asio::post(writers, [fd, off, d, done = std::move(done)] {
            ssize_t n = ::pwrite(fd, d.data(), d.size(), static_cast<off_t>(off));
            done(n == static_cast<ssize_t>(d.size()) ? Status::Ok() : Status::FromErrno("pwrite", errno));
          });
        },
        [&] { return ::fdatasync(fd) == 0 ? Status::Ok() : Status::FromErrno("fdatasync", errno); });
    writers.join();
  }
  ::close(fd);
  std::printf("engine_seqwrite_fresh_clone_1m_qd%u %.0f MiB/s\n", s.depth, engine_mibs);
  std::printf("raw_odirect_seqwrite_1m_qd%u %.0f MiB/s\n", s.depth, raw_mibs);
  std::printf("engine_vs_raw_seqwrite_ratio %.2f x\n", raw_mibs > 0 ? engine_mibs / raw_mibs : 0.0);
  std::printf("engine_seqwrite_pool_write_ops %llu (%.1f KiB each), commits %llu\n",
              static_cast<unsigned long long>(counters.pool_write_ops),
              counters.pool_write_ops ? counters.pool_bytes_written / 1024.0 / counters.pool_write_ops : 0.0,
              static_cast<unsigned long long>(counters.commits));
  return engine_mibs > 0 && raw_mibs > 0 ? 0 : 1;
}

int Main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: engine_bench pool|cache|volume|write|all [--dir DIR] [--seconds N] [--depth N] [--threads N] [--mib N] [--cache-mib N] [--max-pinned-mib N] [--commit-interval-ms N]\n");
    return 2;
  }
  std::string mode = argv[1];
  Settings s;
  bool depth_given = false;
  for (int i = 2; i + 1 < argc; i += 2) {
    std::string flag = argv[i], value = argv[i + 1];
    if (flag == "--dir") s.dir = value;
    else if (flag == "--seconds") s.seconds = std::stod(value);
    else if (flag == "--depth") {
      s.depth = static_cast<unsigned>(std::stoul(value));
      depth_given = true;
    } else if (flag == "--mib") s.file_bytes = std::stoull(value) << 20;
    else if (flag == "--threads") s.threads = static_cast<unsigned>(std::stoul(value));
    else if (flag == "--cache-mib") s.cache_bytes = std::stoull(value) << 20;
    else if (flag == "--max-pinned-mib") s.max_pinned_bytes = std::stoull(value) << 20;
    else if (flag == "--commit-interval-ms") s.commit_interval_ms = std::stoll(value);
    else {
      std::fprintf(stderr, "unknown flag %s\n", flag.c_str());
      return 2;
    }
  }
  int rc = 0;
  if (mode == "pool" || mode == "all") rc |= BenchPool(s);
  if (mode == "cache" || mode == "all") rc |= BenchCache(s);
  // mapserver is built next to this program.
  const std::string bin_dir = std::filesystem::read_symlink("/proc/self/exe").parent_path().string();
  if (mode == "volume" || mode == "all") rc |= BenchVolume(s, bin_dir);
  if (mode == "write" || mode == "all") {
    if (s.depth == 32 && !depth_given) s.depth = 8;
    rc |= BenchWrite(s, bin_dir);
  }
  if (mode != "pool" && mode != "cache" && mode != "volume" && mode != "write" && mode != "all") {
    std::fprintf(stderr, "unknown mode %s\n", mode.c_str());
    return 2;
  }
  return rc;
}

}  // namespace
}  // namespace tapmap::bench

int main(int argc, char** argv) {
  tapmap::KeepLargeBuffersInHeap();  // as tapdisk-map does
  return tapmap::bench::Main(argc, argv);
}
