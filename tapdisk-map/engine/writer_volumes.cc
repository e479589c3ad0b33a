#include "tapdisk-map/engine/writer_volumes.h"

namespace tapmap::engine {

void WriterVolumes::Add(const std::string& name) {
  std::lock_guard<std::mutex> lock(mu_);
  names_[name].alive++;
}

void WriterVolumes::Remove(const std::string& name) {
  std::vector<std::function<void()>> waiters;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = names_.find(name);
    if (it == names_.end()) return;  // unmatched: nothing to do
    if (--it->second.alive > 0) return;
    waiters = std::move(it->second.waiters);
    names_.erase(it);
  }
  for (auto& resume : waiters) resume();
}

bool WriterVolumes::WaitForEnd(const std::string& name, std::function<void()> resume) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = names_.find(name);
  if (it == names_.end()) return false;
  if (!abandoned_) it->second.waiters.push_back(std::move(resume));
  return true;
}

bool WriterVolumes::Alive(const std::string& name) const {
  std::lock_guard<std::mutex> lock(mu_);
  return names_.count(name) != 0;
}

void WriterVolumes::Abandon() {
  std::vector<std::function<void()>> dropped;  // destroyed after the lock is released
  std::lock_guard<std::mutex> lock(mu_);
  abandoned_ = true;
  for (auto& [name, entry] : names_) {
    for (auto& w : entry.waiters) dropped.push_back(std::move(w));
    entry.waiters.clear();
  }
}

}  // namespace tapmap::engine
