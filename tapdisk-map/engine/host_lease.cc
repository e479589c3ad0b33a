#include "tapdisk-map/engine/host_lease.h"

#include <boost/asio/post.hpp>

namespace tapmap::engine {

const char* ToString(HostLease::State state) {
  switch (state) {
    case HostLease::State::kNone: return "none";
    case HostLease::State::kValid: return "valid";
    case HostLease::State::kFenced: return "fenced";
  }
  return "?";
}

HostLease::HostLease(boost::asio::io_context& io, Logger log) : io_(io), log_(std::move(log)), timer_(io) {}

HostLease::~HostLease() {
  std::lock_guard<std::mutex> lock(mu_);
  *alive_ = false;
  timer_.cancel();
}

void HostLease::Renewed(Clock::time_point sent_at, std::chrono::milliseconds lease, bool continued) {
  auto usable = std::chrono::duration_cast<Clock::duration>(lease * kUsableFraction);
  Clock::rep until = (sent_at + usable).time_since_epoch().count();
  bool lifted = false;
  std::vector<Waiter> lost;
  {
    std::lock_guard<std::mutex> lock(mu_);
    // Held requests of a lost lease must not see it valid again: taken out first, in
    // the same critical section that makes it valid.
    if (!continued) {
      std::vector<Waiter> keep;
      for (Waiter& w : waiters_) (w.survives_loss ? keep : lost).push_back(std::move(w));
      waiters_ = std::move(keep);  // released below, as the lease is valid again
    }
    // Answers may arrive out of order: the lease only ever moves forward.
    if (until > valid_until_.load()) valid_until_.store(until, std::memory_order_release);
    if (sent_at > last_sent_) last_sent_ = sent_at;
    lease_ms_ = static_cast<uint32_t>(lease.count());
    ++renewals_;
    if (fenced_ && Valid()) {
      fenced_ = false;
      lifted = true;
    }
    ArmLocked();
  }
  if (!lost.empty()) {
    log_.Errorf("lease: the mapserver did not resume this host's lease; %zu held request(s) fail", lost.size());
  }
  for (Waiter& w : lost) {
    boost::asio::post(io_, [fn = std::move(w.fn)]() {
      fn(Status::Aborted("this host's lease at the mapserver was lost while the host was fenced"));
    });
  }
  if (lifted) log_.Warnf("lease: renewed again; pool I/O resumes");
  boost::asio::post(io_, [this, alive = alive_]() {
    if (*alive) ReleaseWaiters();
  });
}

void HostLease::WhenValid(Clock::time_point deadline, std::function<void(Status)> fn, bool survives_loss) {
  if (Valid()) {
    boost::asio::post(io_, [fn = std::move(fn)]() { fn(Status::Ok()); });
    return;
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    waiters_.push_back(Waiter{deadline, std::move(fn), survives_loss});
    ArmLocked();
  }
  // The lease may have been renewed between the check and the push.
  boost::asio::post(io_, [this, alive = alive_]() {
    if (*alive) ReleaseWaiters();
  });
}

void HostLease::ArmLocked() {
  // The timer wakes at the fence point (to log it) and at the earliest waiter deadline.
  Clock::time_point next = Clock::time_point::max();
  if (!fenced_ && renewals_ > 0) {
    next = std::max(Clock::time_point(Clock::duration(valid_until_.load())), Clock::now());
  }
  for (const Waiter& w : waiters_) next = std::min(next, w.deadline);
  if (next == Clock::time_point::max()) return;
  timer_.expires_at(next);  // cancels a pending wait (its handler sees operation_aborted)
  timer_.async_wait([this, alive = alive_](const boost::system::error_code& ec) {
    if (ec || !*alive) return;
    OnTimer();
  });
}

void HostLease::OnTimer() {
  ReleaseWaiters();
  std::lock_guard<std::mutex> lock(mu_);
  ArmLocked();
}

void HostLease::NoticeFence() {
  bool fenced_now = false;
  Clock::time_point last_sent;
  uint32_t lease_ms = 0;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!fenced_ && renewals_ > 0 && !Valid()) {
      fenced_ = true;
      ++fences_;
      fenced_now = true;
      last_sent = last_sent_;
      lease_ms = lease_ms_;
    }
  }
  if (fenced_now) {
    auto since = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - last_sent).count();
    log_.Errorf("lease: fenced (no renewal answered for %lld ms, lease %u ms): pool I/O stopped, requests held",
                static_cast<long long>(since), lease_ms);
  }
}

void HostLease::ReleaseWaiters() {
  NoticeFence();
  std::vector<Waiter> ready, expired;
  {
    std::lock_guard<std::mutex> lock(mu_);
    const bool valid = Valid();
    const auto now = Clock::now();
    std::vector<Waiter> keep;
    for (Waiter& w : waiters_) {
      if (valid) ready.push_back(std::move(w));
      else if (now >= w.deadline) expired.push_back(std::move(w));
      else keep.push_back(std::move(w));
    }
    waiters_ = std::move(keep);
  }
  for (Waiter& w : ready) w.fn(Status::Ok());
  for (Waiter& w : expired) {
    w.fn(Status::Unavailable("this host's lease at the mapserver is not renewed (fenced): "
                             "the mapserver is unreachable"));
  }
}

HostLease::Figures HostLease::figures() const {
  std::lock_guard<std::mutex> lock(mu_);
  Figures f;
  f.lease_ms = lease_ms_;
  f.renewals = renewals_;
  f.fences = fences_;
  f.waiting = waiters_.size();
  if (renewals_ == 0) return f;
  f.state = Valid() ? State::kValid : State::kFenced;
  f.ms_since_renewal = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - last_sent_).count();
  return f;
}

}  // namespace tapmap::engine
