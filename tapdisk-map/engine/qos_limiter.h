// QosLimiter: one volume's I/O limits (QEMU throttle groups, tapdisk3's valve) — token
// buckets of operations and bytes for reads, writes and both together. A request over
// its budget waits, in arrival order, until its tokens are due; it never fails.
//
//   QosLimiter limiter(io, MakeSteadyQosClock(io));
//   limiter.SetLimits(QosLimits{.write_bps = 20 << 20});
//   limiter.Admit(QosLimiter::kWrite, length, [..]() { /* carry the write out */ });
//
// Buckets: each limit is a rate per second and a bucket of `burst` tokens (0 = one
// second's worth), full at the start. A request costs one op token and `bytes` byte
// tokens of its direction's buckets and of the total buckets; it is admitted when every
// bucket it draws on holds min(cost, bucket size) tokens — so a request larger than a
// bucket goes through when that bucket is full (no starvation) — and its whole cost is
// then taken (a bucket may go into debt: the rate holds over time).
//
// Order: reads and writes wait in one queue each (FIFO); a read never waits behind a
// write held by the write budget. Admission of an unlimited limiter is one relaxed
// atomic load and the callback called inline.
//
// Bound: the queue holds what the front ends have in flight (a blkif ring's slots, an
// NBD connection's request budget), so it is bounded by them; `peak_queued` reports it.
//
// Live changes (SetLimits) apply to the next admission decision: the waiters are
// re-examined at once (and all go if the new limits are zero). Buckets keep their
// tokens, clipped to the new sizes.
//
// Time comes from a QosClock, so the arithmetic is deterministic under a fake clock
// (unit tests advance it; no sleeps).
//
// Threading: every method is thread-safe. Callbacks run without the limiter's lock
// held: inline in Admit/SetLimits/Poll, or on the io_context (the real clock's timer).
#pragma once

#include <array>
#include <atomic>
#include <boost/asio/io_context.hpp>
#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>

#include <nlohmann/json.hpp>

#include "common/status.h"

namespace tapmap::engine {

// ---------------------------------------------------------------------------------------
// Limits

// A volume's limits; every field 0 = unlimited. Rates per second; bursts are bucket
// sizes (0 = the rate, i.e. one second's worth).
struct QosLimits {
  uint64_t read_iops = 0, write_iops = 0, iops = 0;  // ops/s: reads, writes, both
  uint64_t read_bps = 0, write_bps = 0, bps = 0;     // bytes/s: reads, writes, both
  uint64_t read_iops_burst = 0, write_iops_burst = 0, iops_burst = 0;
  uint64_t read_bps_burst = 0, write_bps_burst = 0, bps_burst = 0;

  bool unlimited() const {
    return read_iops == 0 && write_iops == 0 && iops == 0 && read_bps == 0 && write_bps == 0 &&
           bps == 0;
  }
  bool operator==(const QosLimits&) const = default;
};

// {"read_iops": N, ...} with every field (PROTOCOL.md `QosLimits`).
nlohmann::json QosLimitsToJson(const QosLimits& limits);
// Applies the fields present in `j` over `base` (a partial update); unknown keys,
// non-integers and negative values are invalid-argument naming the key.
Result<QosLimits> QosLimitsFromJson(const nlohmann::json& j, QosLimits base = {});
// "write_bps=20971520,read_iops=100" (the same keys; --qos-default) over `base`.
Result<QosLimits> ParseQosLimits(const std::string& text, QosLimits base = {});

// What a limiter counts (totals since the volume was opened, except queued/peak).
struct QosStats {
  QosLimits limits;
  uint64_t throttled_read_ops = 0;   // reads that had to wait
  uint64_t throttled_write_ops = 0;  // writes that had to wait
  uint64_t wait_us = 0;              // time the admitted requests waited, summed
  uint64_t queued = 0;               // waiting now
  uint64_t peak_queued = 0;          // most ever waiting at once
};

// ---------------------------------------------------------------------------------------
// Clock

// Where the limiter's time and wake-ups come from.
class QosClock {
 public:
  using TimePoint = std::chrono::steady_clock::time_point;
  virtual ~QosClock() = default;
  virtual TimePoint Now() const = 0;
  // Calls `wake` at `due` (or soon after); replaces any wake-up scheduled before.
  // `wake` may run on any thread; it must not be called after the clock is destroyed.
  virtual void WakeAt(TimePoint due, std::function<void()> wake) = 0;
};

// std::chrono::steady_clock, woken by a steady_timer on `io` (which must outlive it).
std::unique_ptr<QosClock> MakeSteadyQosClock(boost::asio::io_context& io);

// ---------------------------------------------------------------------------------------
// Limiter

class QosLimiter : public std::enable_shared_from_this<QosLimiter> {
 public:
  enum Direction { kRead = 0, kWrite = 1 };

  // Always owned by a std::shared_ptr (the clock's wake-up holds a weak reference).
  static std::shared_ptr<QosLimiter> Create(std::unique_ptr<QosClock> clock);
  QosLimiter(const QosLimiter&) = delete;
  QosLimiter& operator=(const QosLimiter&) = delete;

  // Calls `go` once the request's tokens are there: at once (inline) when they are
  // and nobody of its direction waits, otherwise later, in arrival order.
  void Admit(Direction dir, uint64_t bytes, std::function<void()> go) {
    if (!limited_.load(std::memory_order_relaxed)) return go();
    AdmitLimited(dir, bytes, std::move(go));
  }

  // Whether any limit is set (an unlimited limiter admits everything at once).
  bool limited() const { return limited_.load(std::memory_order_relaxed); }

  // New limits for the next admissions; re-examines the waiters now.
  void SetLimits(const QosLimits& limits);
  QosLimits limits() const;
  QosStats stats() const;

  // Admits the waiters whose tokens are due by the clock's Now(). The clock's wake-up
  // calls it; tests with a fake clock may call it after advancing the clock.
  void Poll();

 private:
  explicit QosLimiter(std::unique_ptr<QosClock> clock);

  struct Bucket {
    double rate = 0;  // tokens per second; 0 = unlimited
    double size = 0;  // burst
    double tokens = 0;
  };
  struct Waiter {
    uint64_t bytes;
    QosClock::TimePoint since;
    std::function<void()> go;
  };
  // Buckets: ops and bytes of reads, writes, both.
  enum BucketIndex { kReadOps, kWriteOps, kOps, kReadBytes, kWriteBytes, kBytes, kBucketCount };

  void AdmitLimited(Direction dir, uint64_t bytes, std::function<void()> go);
  void Refill(QosClock::TimePoint now);  // under mu_
  // How long until `dir`'s request of `bytes` may go (zero: now). Under mu_.
  std::chrono::nanoseconds WaitFor(Direction dir, uint64_t bytes) const;
  void Take(Direction dir, uint64_t bytes);  // under mu_
  // Moves every waiter that may go now into `ready`; schedules the next wake-up.
  void Release(QosClock::TimePoint now, std::vector<std::function<void()>>* ready);  // under mu_

  const std::unique_ptr<QosClock> clock_;
  std::atomic<bool> limited_{false};
  mutable std::mutex mu_;
  QosLimits limits_;
  std::array<Bucket, kBucketCount> buckets_;
  QosClock::TimePoint refilled_;
  std::array<std::deque<Waiter>, 2> queues_;  // by Direction
  QosStats stats_;
};

}  // namespace tapmap::engine
