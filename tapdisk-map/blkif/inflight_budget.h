// InflightBudget: bounds the request data tapdisk-map holds for guests. Every blkif
// request being executed owns a private buffer of its length (up to 1 MiB); without
// a bound a guest filling 4 queues x 512 slots would make dom0 hold 2 GiB per disk.
// The budget is two-level: one InflightBudget per host (all disks of this daemon) and
// one Account per disk drawing on it. A ring takes a Grant for a request's bytes
// before executing it; when the grant cannot be had the ring stops consuming (the
// requests stay on the shared ring, which blkif allows: the frontend waits) and is
// handed the grant once enough bytes come back.
//
// Admission: a request is granted when its bytes fit both the account's and the
// host's limit, or when the level it does not fit holds nothing (so a request larger
// than a limit still runs, alone). Waiting requests are granted in arrival order; one
// that does not fit the host limit blocks every later one (no starvation of large
// requests by small ones), one that does not fit its own disk's limit blocks only its
// disk's later ones. While requests wait, new ones queue behind them.
//
// Threading: thread-safe; one mutex per host, taken twice per request (acquire,
// release). `granted` callbacks run on whichever thread returns bytes, never under
// the mutex and never inline in Acquire.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <utility>
#include <vector>

namespace tapmap::blkif {

class InflightBudget : public std::enable_shared_from_this<InflightBudget> {
 public:
  class Account;
  class Grant;

  // What a level holds and held: for stats and tests.
  struct Usage {
    uint64_t limit = 0;
    uint64_t in_flight = 0;  // bytes granted and not yet returned
    uint64_t peak = 0;       // the most ever granted at once
    uint64_t waits = 0;      // requests that had to wait for bytes
  };

  // `limit` >= 1 bytes for the whole host. Hold it by shared_ptr (accounts refer to it).
  static std::shared_ptr<InflightBudget> Create(uint64_t limit);
  // A disk's account of `limit` (>= 1) bytes drawing on this budget.
  std::shared_ptr<Account> NewAccount(uint64_t limit);

  Usage usage() const;

  InflightBudget(const InflightBudget&) = delete;
  InflightBudget& operator=(const InflightBudget&) = delete;

 private:
  struct Waiter {
    std::shared_ptr<Account> account;
    uint64_t bytes = 0;
    std::function<void(Grant)> granted;
  };
  using Granted = std::vector<std::pair<std::function<void(Grant)>, Grant>>;
  explicit InflightBudget(uint64_t limit);
  bool FitsHostLocked(uint64_t bytes) const;                        // requires mu_
  bool FitsLocked(const Account& account, uint64_t bytes) const;  // requires mu_
  void TakeLocked(Account& account, uint64_t bytes);               // requires mu_
  void Return(Account& account, uint64_t bytes);
  // Grants waiters that now fit, in order; returns them with their grants, to be
  // called after mu_ is released. Requires mu_.
  Granted GrantWaitersLocked();

  mutable std::mutex mu_;
  Usage usage_;  // guarded by mu_
  std::deque<Waiter> waiters_;  // guarded by mu_; arrival order
};

// One disk's share. Hold it by shared_ptr; grants keep it alive.
class InflightBudget::Account : public std::enable_shared_from_this<InflightBudget::Account> {
 public:
  // Takes `bytes` (>0) for one request. Returns the grant if it is had now. Otherwise
  // returns nullopt and `granted` is called exactly once later, from the thread that
  // returned the bytes, with the grant taken on the caller's behalf (destroying an
  // unwanted grant gives the bytes back). `granted` must be cheap (post work, no I/O).
  // `granted` is copied only if the request has to wait.
  std::optional<Grant> Acquire(uint64_t bytes, const std::function<void(Grant)>& granted);

  Usage usage() const;

  Account(const Account&) = delete;
  Account& operator=(const Account&) = delete;

 private:
  friend class InflightBudget;
  Account(std::shared_ptr<InflightBudget> host, uint64_t limit) : host_(std::move(host)) { usage_.limit = limit; }

  const std::shared_ptr<InflightBudget> host_;
  Usage usage_;  // guarded by host_->mu_
};

// Bytes held for one request; returned to the account (and host) on destruction.
class InflightBudget::Grant {
 public:
  Grant() = default;
  ~Grant() { Reset(); }
  Grant(Grant&& other) noexcept : account_(std::move(other.account_)), bytes_(other.bytes_) { other.bytes_ = 0; }
  Grant& operator=(Grant&& other) noexcept {
    if (this != &other) {
      Reset();
      account_ = std::move(other.account_);
      bytes_ = other.bytes_;
      other.bytes_ = 0;
    }
    return *this;
  }
  Grant(const Grant&) = delete;
  Grant& operator=(const Grant&) = delete;

  uint64_t bytes() const { return bytes_; }
  // Gives the bytes back now.
  void Reset();

 private:
  friend class InflightBudget;
  Grant(std::shared_ptr<Account> account, uint64_t bytes) : account_(std::move(account)), bytes_(bytes) {}
  std::shared_ptr<Account> account_;
  uint64_t bytes_ = 0;
};

}  // namespace tapmap::blkif
