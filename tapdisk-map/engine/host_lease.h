// HostLease: this host's own view of its host lease at the mapserver
// (mapserver/doc/leases.md). The lease is valid until 0.6 T after the *sending* of the
// last login or renewal the server answered (the server keeps it 1.1 T after
// *receiving* it, so the host always stops first). The mapping client reports
// renewals; every volume asks Valid() before it starts a request or issues a pool
// write, and while the lease is not valid the host is *fenced*: requests wait
// (WhenValid, bounded by their deadline) and no pool I/O is issued.
//
// A lease that comes back after a fence (the link healed in time, the server resumed
// the instance) lets the waiting requests go on; volumes whose rw lease did not
// survive are revoked by the mapping client before that (MappingClient, Volume).
//
// Threading: every method is thread-safe. Waiters run on the io_context.
#pragma once

#include <atomic>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <cstdint>
#include <functional>
#include <mutex>
#include <vector>

#include "common/logging.h"
#include "common/status.h"

namespace tapmap::engine {

class HostLease {
 public:
  using Clock = std::chrono::steady_clock;
  // The fraction of the lease time a host may use after sending a renewal (leases.md).
  static constexpr double kUsableFraction = 0.6;

  enum class State { kNone, kValid, kFenced };
  struct Figures {
    State state = State::kNone;
    uint32_t lease_ms = 0;
    int64_t ms_since_renewal = -1;  // since the last answered renewal was sent; -1: never
    uint64_t renewals = 0;
    uint64_t fences = 0;            // times the lease ran out (a fence began)
    uint64_t waiting = 0;           // requests held by the fence now
  };

  HostLease(boost::asio::io_context& io, Logger log);
  ~HostLease();
  HostLease(const HostLease&) = delete;
  HostLease& operator=(const HostLease&) = delete;

  // True while pool I/O may be issued.
  bool Valid() const { return Clock::now().time_since_epoch().count() < valid_until_.load(std::memory_order_acquire); }
  // A login or renewal sent at `sent_at` was answered; the lease time is `lease`.
  // `continued` is false when the server did not resume this host's previous lease
  // (it expired, or the server restarted): requests held by a fence belong to the
  // lost lease and fail with aborted instead of going on.
  void Renewed(Clock::time_point sent_at, std::chrono::milliseconds lease, bool continued);
  // Calls fn(Ok) on the io_context once the lease is valid (at once if it is), or
  // fn(Unavailable) when `deadline` passes first. When the lease turns out lost
  // (Renewed with continued = false), a waiter fails with aborted, unless it
  // `survives_loss`: a request not yet started, which its volume re-checks (the
  // volume's own lease may have been reclaimed).
  void WhenValid(Clock::time_point deadline, std::function<void(Status)> fn, bool survives_loss = false);
  Figures figures() const;

 private:
  struct Waiter {
    Clock::time_point deadline;
    std::function<void(Status)> fn;
    bool survives_loss = false;
  };
  void ArmLocked();       // mu_ held
  void OnTimer();
  void NoticeFence();     // counts and logs the start of a fence
  void ReleaseWaiters();  // runs valid waiters, fails expired ones

  boost::asio::io_context& io_;
  const Logger log_;
  std::atomic<Clock::rep> valid_until_{0};
  mutable std::mutex mu_;
  boost::asio::steady_timer timer_;  // guarded by mu_: the next fence or waiter deadline
  bool fenced_ = false;              // a fence was logged and not yet lifted
  std::vector<Waiter> waiters_;
  uint32_t lease_ms_ = 0;
  Clock::time_point last_sent_{};
  uint64_t renewals_ = 0;
  uint64_t fences_ = 0;
  // Keeps the timer's handler from touching a destroyed lease.
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

const char* ToString(HostLease::State state);

}  // namespace tapmap::engine
