// QosLimiter's token buckets, its waiter queues and the steady clock behind them.
#include "tapdisk-map/engine/qos_limiter.h"

#include <algorithm>
#include <boost/asio/steady_timer.hpp>
#include <cmath>
#include <sstream>
#include <vector>

namespace tapmap::engine {
namespace {

using json = nlohmann::json;

// Every field of QosLimits with its key (PROTOCOL.md, --qos-default, the CLI flags).
constexpr std::pair<const char*, uint64_t QosLimits::*> kFields[] = {
    {"read_iops", &QosLimits::read_iops},
    {"write_iops", &QosLimits::write_iops},
    {"iops", &QosLimits::iops},
    {"read_bps", &QosLimits::read_bps},
    {"write_bps", &QosLimits::write_bps},
    {"bps", &QosLimits::bps},
    {"read_iops_burst", &QosLimits::read_iops_burst},
    {"write_iops_burst", &QosLimits::write_iops_burst},
    {"iops_burst", &QosLimits::iops_burst},
    {"read_bps_burst", &QosLimits::read_bps_burst},
    {"write_bps_burst", &QosLimits::write_bps_burst},
    {"bps_burst", &QosLimits::bps_burst},
};

uint64_t QosLimits::*FieldOf(const std::string& key) {
  for (const auto& [name, field] : kFields) {
    if (key == name) return field;
  }
  return nullptr;
}

// Tokens short of the need by at most this long's refill count as enough (wake-up
// times are whole nanoseconds, and floating point rounds).
constexpr double kSlackSeconds = 1e-6;

class SteadyQosClock final : public QosClock {
 public:
  explicit SteadyQosClock(boost::asio::io_context& io) : timer_(io) {}
  TimePoint Now() const override { return std::chrono::steady_clock::now(); }
  void WakeAt(TimePoint due, std::function<void()> wake) override {
    timer_.expires_at(due);
    timer_.async_wait([wake = std::move(wake)](const boost::system::error_code& ec) {
      if (!ec) wake();
    });
  }

 private:
  boost::asio::steady_timer timer_;
};

}  // namespace

// ---------------------------------------------------------------------------------------
// Limits

json QosLimitsToJson(const QosLimits& limits) {
  json j = json::object();
  for (const auto& [name, field] : kFields) j[name] = limits.*field;
  return j;
}

Result<QosLimits> QosLimitsFromJson(const json& j, QosLimits base) {
  if (!j.is_object()) return Status::InvalidArgument("qos limits must be a JSON object");
  for (const auto& [key, value] : j.items()) {
    uint64_t QosLimits::*field = FieldOf(key);
    if (field == nullptr) return Status::InvalidArgument("unknown qos limit '" + key + "'");
    if (!value.is_number_unsigned() && !(value.is_number_integer() && value.get<int64_t>() >= 0)) {
      return Status::InvalidArgument("qos limit '" + key + "' must be a whole number >= 0, not " +
                                     value.dump());
    }
    base.*field = value.get<uint64_t>();
  }
  return base;
}

Result<QosLimits> ParseQosLimits(const std::string& text, QosLimits base) {
  std::stringstream in(text);
  std::string item;
  while (std::getline(in, item, ',')) {
    if (item.empty()) continue;
    size_t eq = item.find('=');
    if (eq == std::string::npos)
      return Status::InvalidArgument("qos setting '" + item + "' is not KEY=N");
    std::string key = item.substr(0, eq), value = item.substr(eq + 1);
    uint64_t QosLimits::*field = FieldOf(key);
    if (field == nullptr) return Status::InvalidArgument("unknown qos limit '" + key + "'");
    if (value.empty() || value.find_first_not_of("0123456789") != std::string::npos ||
        value.size() > 19) {
      return Status::InvalidArgument("qos limit '" + key + "' must be a whole number >= 0, not '" +
                                     value + "'");
    }
    base.*field = std::stoull(value);
  }
  return base;
}

std::unique_ptr<QosClock> MakeSteadyQosClock(boost::asio::io_context& io) {
  return std::make_unique<SteadyQosClock>(io);
}

// ---------------------------------------------------------------------------------------
// Limiter

std::shared_ptr<QosLimiter> QosLimiter::Create(std::unique_ptr<QosClock> clock) {
  return std::shared_ptr<QosLimiter>(new QosLimiter(std::move(clock)));
}

QosLimiter::QosLimiter(std::unique_ptr<QosClock> clock)
    : clock_(std::move(clock)), refilled_(clock_->Now()) {}

void QosLimiter::Refill(QosClock::TimePoint now) {
  if (now <= refilled_) return;
  double seconds = std::chrono::duration<double>(now - refilled_).count();
  refilled_ = now;
  for (Bucket& b : buckets_) {
    if (b.rate > 0) b.tokens = std::min(b.size, b.tokens + b.rate * seconds);
  }
}

std::chrono::nanoseconds QosLimiter::WaitFor(Direction dir, uint64_t bytes) const {
  const int idx[4] = {dir == kRead ? kReadOps : kWriteOps, kOps,
                      dir == kRead ? kReadBytes : kWriteBytes, kBytes};
  double wait = 0;
  for (int i : idx) {
    const Bucket& b = buckets_[i];
    if (b.rate <= 0) continue;
    double cost = i == kOps || i == kReadOps || i == kWriteOps ? 1.0 : static_cast<double>(bytes);
    double need = std::min(cost, b.size);
    if (b.tokens + b.rate * kSlackSeconds < need) wait = std::max(wait, (need - b.tokens) / b.rate);
  }
  return std::chrono::nanoseconds(std::llround(wait * 1e9));
}

void QosLimiter::Take(Direction dir, uint64_t bytes) {
  auto take = [&](int i, double cost) {
    if (buckets_[i].rate > 0) buckets_[i].tokens -= cost;
  };
  take(dir == kRead ? kReadOps : kWriteOps, 1);
  take(kOps, 1);
  take(dir == kRead ? kReadBytes : kWriteBytes, static_cast<double>(bytes));
  take(kBytes, static_cast<double>(bytes));
}

void QosLimiter::Release(QosClock::TimePoint now, std::vector<std::function<void()>>* ready) {
  std::optional<std::chrono::nanoseconds> next;
  // Alternate between the two queues so that total buckets serve both in turn.
  bool progress = true;
  while (progress) {
    progress = false;
    for (int d = kRead; d <= kWrite; ++d) {
      auto& q = queues_[d];
      if (q.empty()) continue;
      if (WaitFor(static_cast<Direction>(d), q.front().bytes).count() > 0) continue;
      Waiter w = std::move(q.front());
      q.pop_front();
      Take(static_cast<Direction>(d), w.bytes);
      stats_.wait_us +=
          std::chrono::duration_cast<std::chrono::microseconds>(now - w.since).count();
      stats_.queued--;
      ready->push_back(std::move(w.go));
      progress = true;
    }
  }
  for (int d = kRead; d <= kWrite; ++d) {
    if (queues_[d].empty()) continue;
    auto wait = WaitFor(static_cast<Direction>(d), queues_[d].front().bytes);
    if (!next || wait < *next) next = wait;
  }
  if (next) {
    std::weak_ptr<QosLimiter> weak = weak_from_this();
    clock_->WakeAt(now + *next, [weak]() {
      if (auto self = weak.lock()) self->Poll();
    });
  }
}

void QosLimiter::AdmitLimited(Direction dir, uint64_t bytes, std::function<void()> go) {
  std::vector<std::function<void()>> ready;
  {
    std::lock_guard<std::mutex> lock(mu_);
    QosClock::TimePoint now = clock_->Now();
    Refill(now);
    if (queues_[dir].empty() && WaitFor(dir, bytes).count() == 0) {
      Take(dir, bytes);
    } else {
      bool was_idle = queues_[kRead].empty() && queues_[kWrite].empty();
      queues_[dir].push_back(Waiter{bytes, now, std::move(go)});
      (dir == kRead ? stats_.throttled_read_ops : stats_.throttled_write_ops)++;
      stats_.queued++;
      stats_.peak_queued = std::max(stats_.peak_queued, stats_.queued);
      // A new head of a queue needs its wake-up (the other queue's is kept otherwise).
      if (was_idle || queues_[dir].size() == 1) Release(now, &ready);
      go = nullptr;
    }
  }
  if (go) go();
  for (auto& f : ready) f();
}

void QosLimiter::Poll() {
  std::vector<std::function<void()>> ready;
  {
    std::lock_guard<std::mutex> lock(mu_);
    QosClock::TimePoint now = clock_->Now();
    Refill(now);
    Release(now, &ready);
  }
  for (auto& f : ready) f();
}

void QosLimiter::SetLimits(const QosLimits& limits) {
  std::vector<std::function<void()>> ready;
  {
    std::lock_guard<std::mutex> lock(mu_);
    QosClock::TimePoint now = clock_->Now();
    Refill(now);
    limits_ = limits;
    auto set = [&](int i, uint64_t rate, uint64_t burst) {
      Bucket& b = buckets_[i];
      bool was_unlimited = b.rate <= 0;
      b.rate = static_cast<double>(rate);
      b.size = static_cast<double>(burst != 0 ? burst : rate);
      b.tokens = was_unlimited ? b.size : std::min(b.tokens, b.size);
    };
    set(kReadOps, limits.read_iops, limits.read_iops_burst);
    set(kWriteOps, limits.write_iops, limits.write_iops_burst);
    set(kOps, limits.iops, limits.iops_burst);
    set(kReadBytes, limits.read_bps, limits.read_bps_burst);
    set(kWriteBytes, limits.write_bps, limits.write_bps_burst);
    set(kBytes, limits.bps, limits.bps_burst);
    limited_.store(!limits.unlimited(), std::memory_order_relaxed);
    Release(now, &ready);
  }
  for (auto& f : ready) f();
}

QosLimits QosLimiter::limits() const {
  std::lock_guard<std::mutex> lock(mu_);
  return limits_;
}

QosStats QosLimiter::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  QosStats s = stats_;
  s.limits = limits_;
  return s;
}

}  // namespace tapmap::engine
