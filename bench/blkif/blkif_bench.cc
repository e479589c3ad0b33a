// blkif_bench: throughput of the blkif back end through real rings with simulated
// grants (SimulatedHypervisor) and a RAM device (every read is a "cache hit": no pool
// I/O), so the figures are the cost of the ring protocol, validation, grant transfer
// and request dispatch.
//
//   blkif_bench [--seconds S] [--only NAME]
//
// Scenarios:
//   read4k-iops        4 KiB random reads, 1 queue, 1 backend thread: IOPS and IOPS
//                      per backend core (backend thread CPU time)
//   seq1m-{read,write}-{copy,persistent}-q{1,4}
//                      1 MiB sequential I/O (indirect requests, 256 segments),
//                      grant copy vs persistent grants, 1 vs 4 queues
// Output: one line per scenario.
#include <pthread.h>
#include <time.h>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <future>
#include <random>
#include <string>
#include <thread>

#include "common/units.h"
#include "tapdisk-map/blkif/backend_manager.h"
#include "tapdisk-map/blkif/ring_worker.h"
#include "tapdisk-map/xen/sim_platform.h"
#include "tests/support/memory_block_device.h"
#include "tests/support/sim_blkfront.h"

namespace {

using namespace tapmap;
using tapmap::testing::SimBlkfront;
using tapmap::testing::SimBlkfrontOptions;
using tapmap::testing::SimIo;

double ThreadCpuSeconds(std::thread& t) {
  clockid_t cid;
  if (pthread_getcpuclockid(t.native_handle(), &cid) != 0) return 0;
  timespec ts{};
  clock_gettime(cid, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

struct Scenario {
  std::string name;
  uint8_t op = BLKIF_OP_READ;
  uint32_t sectors = 8;
  bool random = true;
  uint32_t queues = 1;
  bool persistent = false;
  int backend_threads = 1;
};

struct Figures {
  uint64_t ops = 0;
  double seconds = 0;
  double backend_cpu = 0;
};

Figures Run(const Scenario& s, double seconds) {
  constexpr uint64_t kDisk = 256 * kMiB;
  boost::asio::io_context io;
  auto device = std::make_shared<testing::MemoryBlockDevice>(io, "bench", kDisk);
  auto hv = std::make_shared<xen::SimulatedHypervisor>();
  (void)hv->CreateDomain(0, 0);
  (void)hv->CreateDomain(1, 16384);
  xen::XenPlatform platform = xen::MakeSimulatedPlatform(hv, 0, nullptr);
  SimBlkfrontOptions o;
  o.queues = s.queues;
  o.ring_page_order = 0;
  o.persistent_grants = s.persistent;
  o.indirect_segments = 256;
  SimBlkfront front(hv, 1, 0, o);
  if (!front.SetupRings().ok()) std::abort();
  auto limiter = std::make_shared<RateLimiter>(5, std::chrono::milliseconds(1000));
  // The daemon's default in-flight budget (its checks are on the hot path).
  blkif::BackendOptions defaults;
  auto budget = blkif::InflightBudget::Create(defaults.inflight_bytes_per_host)
                    ->NewAccount(defaults.inflight_bytes_per_disk);
  std::vector<std::shared_ptr<blkif::RingWorker>> workers;
  for (uint32_t q = 0; q < s.queues; ++q) {
    blkif::RingConfig c;
    c.frontend_domid = 1;
    c.ring_refs = front.ring_refs(q);
    c.event_port = front.event_port(q);
    c.persistent_grants = s.persistent;
    c.persistent_capacity = 4096;
    c.budget = budget;
    auto w = blkif::RingWorker::Connect(io, platform, device, c, Logger("bench", LogLevel::kError), limiter, nullptr);
    if (!w.ok()) std::abort();
    (*w)->Start();
    workers.push_back(*w);
  }
  auto guard = boost::asio::make_work_guard(io);
  std::vector<std::thread> threads;
  for (int i = 0; i < s.backend_threads; ++i) threads.emplace_back([&io] { io.run(); });

  std::vector<uint8_t> payload(size_t{s.sectors} * kSectorSize, 0xa5);
  std::mt19937_64 rng(42);
  uint64_t span_sectors = kDisk / kSectorSize - s.sectors;
  uint64_t next_seq = 0;
  auto next_sector = [&]() -> uint64_t {
    if (s.random) return (rng() % (span_sectors / s.sectors)) * s.sectors;
    uint64_t v = next_seq;
    next_seq = (next_seq + s.sectors) % span_sectors;
    return v;
  };
  uint32_t depth = std::min<uint32_t>(front.ring_size(), s.sectors > 8 ? 8 : front.ring_size());

  Figures f;
  std::vector<double> cpu0;
  for (auto& t : threads) cpu0.push_back(ThreadCpuSeconds(t));
  auto start = std::chrono::steady_clock::now();
  auto deadline = start + std::chrono::duration<double>(seconds);
  bool stop = false;
  while (!stop || [&] {
    uint32_t n = 0;
    for (uint32_t q = 0; q < s.queues; ++q) n += front.in_flight(q);
    return n;
  }() > 0) {
    if (!stop && std::chrono::steady_clock::now() >= deadline) stop = true;
    bool harvested = false;
    for (uint32_t q = 0; q < s.queues; ++q) {
      while (!stop && front.in_flight(q) < depth) {
        auto id = front.Submit(q, SimIo{s.op, next_sector(), s.sectors, false}, payload);
        if (!id.ok()) break;
      }
      (void)front.Kick(q);
      auto done = front.Poll(q, std::chrono::milliseconds(0));
      if (done.ok() && !done->empty()) {
        harvested = true;
        f.ops += done->size();
      }
    }
    if (!harvested) {
      auto done = front.Poll(0, std::chrono::milliseconds(1));
      if (done.ok()) f.ops += done->size();
    }
  }
  f.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  for (size_t i = 0; i < threads.size(); ++i) f.backend_cpu += ThreadCpuSeconds(threads[i]) - cpu0[i];

  for (auto& w : workers) {
    std::promise<void> p;
    w->Stop([&p] { p.set_value(); });
    p.get_future().wait();
  }
  guard.reset();
  io.stop();
  for (auto& t : threads) t.join();
  return f;
}

}  // namespace

int main(int argc, char** argv) {
  double seconds = 2;
  std::string only;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--seconds" && i + 1 < argc) {
      seconds = std::atof(argv[++i]);
    } else if (a == "--only" && i + 1 < argc) {
      only = argv[++i];
    } else {
      std::fprintf(stderr, "usage: %s [--seconds S] [--only NAME]\n", argv[0]);
      return 2;
    }
  }
  std::vector<Scenario> scenarios = {{"read4k-iops", BLKIF_OP_READ, 8, true, 1, false, 1},
                                     {"read4k-iops-persistent", BLKIF_OP_READ, 8, true, 1, true, 1}};
  for (uint8_t op : {BLKIF_OP_READ, BLKIF_OP_WRITE}) {
    for (bool persistent : {false, true}) {
      for (uint32_t q : {1u, 4u}) {
        std::string name = std::string("seq1m-") + (op == BLKIF_OP_READ ? "read" : "write") + "-" +
                           (persistent ? "persistent" : "copy") + "-q" + std::to_string(q);
        scenarios.push_back({name, op, 2048, false, q, persistent, q == 1 ? 1 : 2});
      }
    }
  }
  std::printf("%-30s %12s %12s %14s\n", "scenario", "ops/s", "MiB/s", "ops/s/core");
  for (const Scenario& s : scenarios) {
    if (!only.empty() && s.name.find(only) == std::string::npos) continue;
    Figures f = Run(s, seconds);
    double ops = f.ops / f.seconds;
    double mib = ops * s.sectors * 512 / kMiB;
    double per_core = f.backend_cpu > 0 ? f.ops / f.backend_cpu : 0;
    std::printf("%-30s %12.0f %12.1f %14.0f\n", s.name.c_str(), ops, mib, per_core);
    std::fflush(stdout);
  }
  return 0;
}
