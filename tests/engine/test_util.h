// Helpers shared by the engine tests (TempDir comes from tests/support): an
// io_context running on threads, and waiting for callback results with a generous deadline.
#pragma once

#include <stdlib.h>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>

#include "common/status.h"
#include "tests/support/child_process.h"

namespace tapmap::testing {

// An io_context with `threads` threads running it until destruction.
class IoThreads {
 public:
  explicit IoThreads(int threads = 2) : guard_(io_.get_executor()) {
    for (int i = 0; i < threads; i++) threads_.emplace_back([this] { io_.run(); });
  }
  ~IoThreads() { Stop(); }
  void Stop() {
    guard_.reset();
    io_.stop();
    for (auto& t : threads_) if (t.joinable()) t.join();
  }
  boost::asio::io_context& io() { return io_; }

 private:
  boost::asio::io_context io_;
  boost::asio::executor_work_guard<boost::asio::io_context::executor_type> guard_;
  std::vector<std::thread> threads_;
};

// Collects one result from a callback; Wait() blocks up to 60 s.
template <typename T>
class Waiter {
 public:
  void Set(T value) {
    std::lock_guard<std::mutex> lock(mu_);
    value_ = std::move(value);
    cv_.notify_all();
  }
  T Wait() {
    std::unique_lock<std::mutex> lock(mu_);
    if (!cv_.wait_for(lock, std::chrono::seconds(60), [this] { return value_.has_value(); })) {
      throw std::runtime_error("timed out waiting for a callback");
    }
    return std::move(*value_);
  }
  auto Callback() {
    return [this](T value) { Set(std::move(value)); };
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::optional<T> value_;
};

}  // namespace tapmap::testing
