// engine_bench: measurements of the engine's lower layers.
//
//   engine_bench pool  [--dir DIR] [--seconds N] [--depth N]
//       4 KiB random reads and writes on an O_DIRECT pool file, io_uring vs a
//       thread pool doing pread/pwrite (same queue depth), and their ratio.
//   engine_bench cache [--seconds N] [--threads N]
//       read throughput of data-cache hits (lookup + copy of 4 KiB out of a 64 KiB
//       block), as the read path does for a block the host already holds.
//   engine_bench all   both.
//
// Output: one "name value unit" line per figure, then a summary.
#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "common/logging.h"
#include "tapdisk-map/engine/data_cache.h"
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
  double results[2][2] = {};
  bool direct = false;
  for (int k = 0; k < 2; k++) {
    PoolIoKind kind = k == 0 ? PoolIoKind::kUring : PoolIoKind::kThreads;
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

int Main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: engine_bench pool|cache|all [--dir DIR] [--seconds N] [--depth N] [--threads N]\n");
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
  if (mode != "pool" && mode != "cache" && mode != "all") {
    std::fprintf(stderr, "unknown mode %s\n", mode.c_str());
    return 2;
  }
  return rc;
}

}  // namespace
}  // namespace tapmap::bench

int main(int argc, char** argv) { return tapmap::bench::Main(argc, argv); }
