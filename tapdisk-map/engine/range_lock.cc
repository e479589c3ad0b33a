#include "tapdisk-map/engine/range_lock.h"

namespace tapmap::engine {

bool RangeLock::HeldOverlapsLocked(uint64_t s, uint64_t e) const {
  for (const Span& h : held_) {
    if (h.Overlaps(s, e)) return true;
  }
  return false;
}

void RangeLock::Acquire(uint64_t start, uint64_t end, std::function<void()> granted) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    bool blocked = HeldOverlapsLocked(start, end);
    for (const Waiter& w : waiters_) {
      if (blocked) break;
      blocked = w.span.Overlaps(start, end);
    }
    if (blocked) {
      waiters_.push_back(Waiter{Span{start, end}, std::move(granted)});
      return;
    }
    held_.push_back(Span{start, end});
  }
  granted();
}

void RangeLock::Release(uint64_t start, uint64_t end) {
  std::vector<std::function<void()>> to_run;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (size_t i = 0; i < held_.size(); i++) {
      if (held_[i].start == start && held_[i].end == end) {
        held_[i] = held_.back();
        held_.pop_back();
        break;
      }
    }
    std::vector<Span> still_waiting;
    for (auto it = waiters_.begin(); it != waiters_.end();) {
      bool blocked = HeldOverlapsLocked(it->span.start, it->span.end);
      for (const Span& w : still_waiting) {
        if (blocked) break;
        blocked = w.Overlaps(it->span.start, it->span.end);
      }
      if (blocked) {
        still_waiting.push_back(it->span);
        ++it;
        continue;
      }
      held_.push_back(it->span);
      to_run.push_back(std::move(it->granted));
      it = waiters_.erase(it);
    }
  }
  for (auto& fn : to_run) fn();
}

size_t RangeLock::held() const {
  std::lock_guard<std::mutex> lock(mu_);
  return held_.size();
}

}  // namespace tapmap::engine
