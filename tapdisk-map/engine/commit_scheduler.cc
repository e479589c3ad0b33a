#include "tapdisk-map/engine/commit_scheduler.h"

#include <algorithm>

namespace tapmap::engine {

void CommitScheduler::AddFlush(IoDone done) {
  // A cycle that starts after this point covers every write acknowledged before.
  waiters_.push_back(Waiter{started_ + 1, std::move(done)});
}

std::optional<uint64_t> CommitScheduler::TryStart(bool has_pending) {
  if (running_) return std::nullopt;
  if (!has_pending && waiters_.empty()) return std::nullopt;
  running_ = true;
  return ++started_;
}

std::vector<IoDone> CommitScheduler::Succeeded(uint64_t cycle, bool covered_all) {
  std::vector<IoDone> ready;
  for (auto it = waiters_.begin(); it != waiters_.end();) {
    if (covered_all && it->cycle <= cycle) {
      ready.push_back(std::move(it->done));
      it = waiters_.erase(it);
    } else {
      it->cycle = std::max(it->cycle, cycle + 1);  // needs a later cycle
      ++it;
    }
  }
  running_ = false;
  return ready;
}

std::vector<IoDone> CommitScheduler::Failed(uint64_t cycle) {
  std::vector<IoDone> failed;
  for (auto it = waiters_.begin(); it != waiters_.end();) {
    if (it->cycle <= cycle) {
      failed.push_back(std::move(it->done));
      it = waiters_.erase(it);
    } else {
      ++it;
    }
  }
  running_ = false;
  return failed;
}

std::vector<IoDone> CommitScheduler::TakeAll() {
  std::vector<IoDone> all;
  for (Waiter& w : waiters_) all.push_back(std::move(w.done));
  waiters_.clear();
  return all;
}

bool CommitScheduler::ArmTimer() {
  if (timer_armed_) return false;
  timer_armed_ = true;
  return true;
}

}  // namespace tapmap::engine
