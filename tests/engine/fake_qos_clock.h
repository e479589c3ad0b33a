// FakeQosClock: a QosClock whose time moves only when the test advances it, and whose
// wake-up runs inside Advance — QoS tests are exact and never sleep.
#pragma once

#include <functional>
#include <memory>
#include <mutex>
#include <optional>

#include "tapdisk-map/engine/qos_limiter.h"

namespace tapmap::engine {

class FakeQosClock {
 public:
  using TimePoint = QosClock::TimePoint;

  // A QosClock backed by this fake (the fake must outlive it).
  std::unique_ptr<QosClock> Make() { return std::make_unique<Handle>(this); }

  TimePoint now() const {
    std::lock_guard<std::mutex> lock(mu_);
    return now_;
  }
  // When the pending wake-up is due (none: nothing waits for time).
  std::optional<TimePoint> due() const {
    std::lock_guard<std::mutex> lock(mu_);
    return due_;
  }
  // Moves time on by `d`, running the wake-up if it is due by then.
  void Advance(std::chrono::nanoseconds d) {
    std::function<void()> wake;
    {
      std::lock_guard<std::mutex> lock(mu_);
      now_ += d;
      if (due_ && *due_ <= now_) {
        wake = std::move(wake_);
        due_.reset();
      }
    }
    if (wake) wake();
  }

 private:
  class Handle final : public QosClock {
   public:
    explicit Handle(FakeQosClock* fake) : fake_(fake) {}
    TimePoint Now() const override { return fake_->now(); }
    void WakeAt(TimePoint due, std::function<void()> wake) override {
      std::lock_guard<std::mutex> lock(fake_->mu_);
      fake_->due_ = due;
      fake_->wake_ = std::move(wake);
    }

   private:
    FakeQosClock* fake_;
  };

  mutable std::mutex mu_;
  TimePoint now_{std::chrono::hours(1)};
  std::optional<TimePoint> due_;
  std::function<void()> wake_;
};

}  // namespace tapmap::engine
