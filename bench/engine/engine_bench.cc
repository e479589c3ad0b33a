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
//   engine_bench all   all three.
//
// Output: one "name value unit" line per figure, then a summary.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
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

#include "common/logging.h"
#include "mapserver/client/connection.h"
#include "mapserver/client/remote_status.h"
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

int BenchVolume(const Settings& s, const std::string& bin_dir) {
  testing::TempDir dir("engine-bench");
  std::string secret = dir / "secret", sock = dir / "ms.sock";
  {
    FILE* f = std::fopen(secret.c_str(), "w");
    std::fputs("bench secret\n", f);
    std::fclose(f);
    ::chmod(secret.c_str(), 0600);
    FILE* c = std::fopen((dir / "tapmap.conf").c_str(), "w");
    std::fclose(c);
  }
  std::string out;
  if (testing::RunCommand({bin_dir + "/mapserver", "format", "--pool", dir / "pool", "--meta", dir / "meta",
                           "--size", "256M", "--config", dir / "tapmap.conf"}, &out) != 0) {
    std::fprintf(stderr, "mapserver format failed: %s\n", out.c_str());
    return 1;
  }
  testing::ChildProcess server({bin_dir + "/mapserver", "serve", "--pool", dir / "pool", "--meta", dir / "meta",
                                "--listen", "unix:" + sock, "--secret-file", secret, "--config", dir / "tapmap.conf"},
                               dir / "mapserver.log");
  testing::WaitForPath(sock, std::chrono::seconds(30));
  constexpr uint64_t kSpan = 64ull << 20;
  {
    auto kio = kj::setupAsyncIo();
    auto addr = mapserver::ParseServerAddress("unix:" + sock);
    Result<kj::Own<mapserver::Connection>> conn = Status::Unavailable("not yet");
    for (int i = 0; i < 300 && !conn.ok(); i++) {
      conn = mapserver::Connection::ConnectBlocking(kio, *addr, "bench", "bench secret");
      if (!conn.ok()) std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    if (!conn.ok()) {
      std::fprintf(stderr, "%s\n", conn.status().ToString().c_str());
      return 1;
    }
    auto req = (*conn)->session().createRequest();
    req.setName("bench");
    req.setSizeBytes(kSpan);
    Status st = mapserver::RunCatching([&] { req.send().wait(kio.waitScope); });
    if (!st.ok()) {
      std::fprintf(stderr, "create: %s\n", st.ToString().c_str());
      return 1;
    }
  }
  IoRunner runner;
  engine::EngineOptions eo;
  eo.server = "unix:" + sock;
  eo.host = "bench";
  eo.secret_file = secret;
  eo.pool_path = dir / "pool";
  eo.cache_size_bytes = 256ull << 20;
  auto made = engine::Engine::Create(runner.io(), eo, Logger("engine", LogLevel::kWarning));
  if (!made.ok()) {
    std::fprintf(stderr, "%s\n", made.status().ToString().c_str());
    return 1;
  }
  std::unique_ptr<engine::Engine> eng = std::move(*made);
  Sync<Result<std::shared_ptr<engine::BlockDevice>>> opened;
  eng->Open("bench", false, [&](Result<std::shared_ptr<engine::BlockDevice>> r) { opened.Set(std::move(r)); });
  auto dev = opened.Wait();
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
  uint64_t pool_reads_before = eng->Stats().host.pool_read_ops;
  double iops = DeviceReads(**dev, kSpan, 4096, s.depth, s.seconds, false);
  double seq = DeviceReads(**dev, kSpan, 1 << 20, 4, s.seconds, true);
  uint64_t pool_reads = eng->Stats().host.pool_read_ops - pool_reads_before;
  std::printf("engine_cached_randread_4k_qd%u %.0f IOPS\n", s.depth, iops);
  std::printf("engine_cached_seqread_1m_qd4 %.0f MiB/s\n", seq);
  std::printf("engine_cached_pool_reads_during_timed_runs %llu (expect 0)\n",
              static_cast<unsigned long long>(pool_reads));
  dev->reset();
  Sync<bool> down;
  eng->Shutdown([&]() { down.Set(true); });
  down.Wait();
  eng.reset();
  return 0;
}

int Main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: engine_bench pool|cache|volume|all [--dir DIR] [--seconds N] [--depth N] [--threads N]\n");
    return 2;
  }
  std::string mode = argv[1];
  Settings s;
  for (int i = 2; i + 1 < argc; i += 2) {
    std::string flag = argv[i], value = argv[i + 1];
    if (flag == "--dir") s.dir = value;
    else if (flag == "--seconds") s.seconds = std::stod(value);
    else if (flag == "--depth") s.depth = static_cast<unsigned>(std::stoul(value));
    else if (flag == "--threads") s.threads = static_cast<unsigned>(std::stoul(value));
    else {
      std::fprintf(stderr, "unknown flag %s\n", flag.c_str());
      return 2;
    }
  }
  int rc = 0;
  if (mode == "pool" || mode == "all") rc |= BenchPool(s);
  if (mode == "cache" || mode == "all") rc |= BenchCache(s);
  if (mode == "volume" || mode == "all") {
    // mapserver is built next to this program.
    std::string self = std::filesystem::read_symlink("/proc/self/exe").parent_path().string();
    rc |= BenchVolume(s, self);
  }
  if (mode != "pool" && mode != "cache" && mode != "volume" && mode != "all") {
    std::fprintf(stderr, "unknown mode %s\n", mode.c_str());
    return 2;
  }
  return rc;
}

}  // namespace
}  // namespace tapmap::bench

int main(int argc, char** argv) { return tapmap::bench::Main(argc, argv); }
