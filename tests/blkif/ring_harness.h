// Test fixture pieces shared by the blkif tests: an io_context running on its own
// threads, a simulated hypervisor with a backend domain and guests, and a ring served
// by a RingWorker straight from a SimBlkfront's rings (no xenstore).
#pragma once

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <future>
#include <thread>

#include "tapdisk-map/blkif/ring_worker.h"
#include "tapdisk-map/xen/sim_platform.h"
#include "tests/support/memory_block_device.h"
#include "tests/support/sim_blkfront.h"

namespace tapmap::testing {

// Runs `io` on `threads` threads until destroyed.
class IoRunner {
 public:
  explicit IoRunner(boost::asio::io_context& io, int threads = 1) : io_(io), guard_(io.get_executor()) {
    for (int i = 0; i < threads; ++i) threads_.emplace_back([this] { io_.run(); });
  }
  ~IoRunner() {
    guard_.reset();
    io_.stop();
    for (auto& t : threads_) t.join();
  }

 private:
  boost::asio::io_context& io_;
  boost::asio::executor_work_guard<boost::asio::io_context::executor_type> guard_;
  std::vector<std::thread> threads_;
};

inline constexpr xen::DomainId kBackendDomid = 0;

// A guest with a ring-level SimBlkfront and RingWorkers serving each of its queues
// from `device`.
struct RingRig {
  std::shared_ptr<xen::SimulatedHypervisor> hv;
  xen::XenPlatform platform;
  std::unique_ptr<SimBlkfront> front;
  std::vector<std::shared_ptr<blkif::RingWorker>> workers;
  std::vector<Status> broken;
  std::mutex mu;
  std::FILE* log_sink = stderr;  // where the workers log (set before Make)
  std::shared_ptr<blkif::InflightBudget::Account> budget;  // the disk's in-flight bytes (set before Make); null: none
  std::shared_ptr<blkif::PersistentGrantQuota> persistent_quota;  // host cap (set before Make); null: none
  blkif::StormDamping storm;  // (set before Make)

  static Status Make(RingRig* rig, boost::asio::io_context& io, std::shared_ptr<engine::BlockDevice> device,
                     xen::DomainId guest, SimBlkfrontOptions options, blkif::RequestLimits limits = {},
                     std::shared_ptr<xen::SimulatedHypervisor> hv = nullptr, size_t guest_pages = 4096) {
    if (!hv) {
      hv = std::make_shared<xen::SimulatedHypervisor>();
      TAPMAP_RETURN_IF_ERROR(hv->CreateDomain(kBackendDomid, 0));
    }
    rig->hv = hv;
    TAPMAP_RETURN_IF_ERROR(hv->CreateDomain(guest, guest_pages));
    rig->platform = xen::MakeSimulatedPlatform(hv, kBackendDomid, nullptr);
    rig->front = std::make_unique<SimBlkfront>(hv, guest, kBackendDomid, options);
    TAPMAP_RETURN_IF_ERROR(rig->front->SetupRings());
    auto limiter = std::make_shared<RateLimiter>(5, std::chrono::milliseconds(1000));
    for (uint32_t q = 0; q < options.queues; ++q) {
      blkif::RingConfig c;
      c.frontend_domid = guest;
      c.ring_refs = rig->front->ring_refs(q);
      c.event_port = rig->front->event_port(q);
      c.abi = options.abi;
      c.persistent_grants = options.persistent_grants;
      c.persistent_capacity = 256;
      c.limits = limits;
      c.budget = rig->budget;
      c.persistent_quota = rig->persistent_quota;
      c.storm = rig->storm;
      auto w = blkif::RingWorker::Connect(io, rig->platform, device, c, Logger("blkif-test", LogLevel::kWarning, rig->log_sink),
                                          limiter, [rig](Status s) {
                                            std::lock_guard lock(rig->mu);
                                            rig->broken.push_back(s);
                                          });
      if (!w.ok()) return w.status();
      (*w)->Start();
      rig->workers.push_back(*w);
    }
    return Status::Ok();
  }

  // Stops every worker and waits until they released their rings.
  void StopAll() {
    for (auto& w : workers) {
      std::promise<void> p;
      w->Stop([&p] { p.set_value(); });
      p.get_future().wait();
    }
    workers.clear();
  }

  // Sum of every worker's counters (requests, budget_waits...).
  blkif::RingWorker::Counters Totals() const {
    blkif::RingWorker::Counters t;
    for (const auto& w : workers) {
      auto c = w->counters();
      t.requests += c.requests;
      t.rejected += c.rejected;
      t.notifications += c.notifications;
      t.wakeups += c.wakeups;
      t.budget_waits += c.budget_waits;
      t.in_flight += c.in_flight;
    }
    return t;
  }

  size_t broken_count() {
    std::lock_guard lock(mu);
    return broken.size();
  }
};

inline std::vector<uint8_t> RandomBytes(size_t bytes, uint32_t seed) {
  std::vector<uint8_t> v(bytes);
  uint32_t x = seed * 2654435761u + 1;
  for (auto& b : v) {
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    b = static_cast<uint8_t>(x);
  }
  return v;
}

}  // namespace tapmap::testing
