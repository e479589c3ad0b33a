// AsyncSignal: a condition variable for coroutines running on one strand. Waiters
// re-check their condition after every wake-up; Notify wakes all current waiters.
//
// Threading: Wait and Notify must be called from the strand (or single-threaded
// executor) the signal was created on.
#pragma once

#include <utility>  // before asio: boost 1.74's awaitable.hpp needs std::exchange

#include <boost/asio/awaitable.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

namespace tapmap {

class AsyncSignal {
 public:
  template <typename Executor>
  explicit AsyncSignal(const Executor& executor) : timer_(executor) {
    timer_.expires_at(boost::asio::steady_timer::time_point::max());
  }
  AsyncSignal(const AsyncSignal&) = delete;
  AsyncSignal& operator=(const AsyncSignal&) = delete;

  // Suspends until the next Notify (or a spurious wake-up: callers loop on their
  // condition).
  boost::asio::awaitable<void> Wait() {
    boost::system::error_code ec;
    co_await timer_.async_wait(boost::asio::redirect_error(boost::asio::use_awaitable, ec));
  }

  void Notify() {
    timer_.cancel();
    timer_.expires_at(boost::asio::steady_timer::time_point::max());
  }

 private:
  boost::asio::steady_timer timer_;
};

}  // namespace tapmap
