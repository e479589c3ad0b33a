// WaiterList: requests waiting for a condition of their volume (its lease re-opened, a
// standby promoted), each with a deadline. The owner releases them all when the
// condition holds, fails them all on an error, and fails those past their deadline
// when the list's timer fires (armed at the earliest deadline).
//
// Threading: the owner's mutex guards the list (every method but the callbacks it
// returns, which the owner runs outside its lock); the timer runs on the io_context.
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <functional>
#include <vector>

#include "common/status.h"

namespace tapmap::engine {

class WaiterList {
 public:
  using Clock = std::chrono::steady_clock;
  using Go = std::function<void(Status)>;
  struct Waiter {
    Clock::time_point deadline;
    Go go;
  };

  explicit WaiterList(boost::asio::io_context& io) : timer_(io) {}

  // Adds a waiter and (re)arms the timer at the earliest deadline; `on_timer` runs when
  // it fires (the owner then calls TakeExpired under its lock).
  void Add(Clock::time_point deadline, Go go, std::function<void()> on_timer) {
    waiters_.push_back(Waiter{deadline, std::move(go)});
    Arm(std::move(on_timer));
  }
  // Every waiter; the timer is cancelled (its handler holds what `on_timer` captured,
  // e.g. the volume, until it runs: it must not wait for a deadline nobody has).
  std::vector<Waiter> TakeAll() {
    timer_.cancel();
    std::vector<Waiter> all = std::move(waiters_);
    waiters_.clear();
    return all;
  }
  // The waiters past their deadline; re-arms for the others.
  std::vector<Waiter> TakeExpired(std::function<void()> on_timer) {
    std::vector<Waiter> expired, keep;
    const auto now = Clock::now();
    for (Waiter& w : waiters_) (now >= w.deadline ? expired : keep).push_back(std::move(w));
    waiters_ = std::move(keep);
    if (!waiters_.empty()) Arm(std::move(on_timer));
    else timer_.cancel();
    return expired;
  }
  bool empty() const { return waiters_.empty(); }

 private:
  void Arm(std::function<void()> on_timer) {
    auto earliest = Clock::time_point::max();
    for (const Waiter& w : waiters_) earliest = std::min(earliest, w.deadline);
    timer_.expires_at(earliest);  // cancels a pending wait
    timer_.async_wait([on_timer = std::move(on_timer)](const boost::system::error_code& ec) {
      if (!ec) on_timer();
    });
  }

  std::vector<Waiter> waiters_;
  boost::asio::steady_timer timer_;
};

}  // namespace tapmap::engine
