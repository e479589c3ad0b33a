#include "tapdisk-map/blkif/inflight_budget.h"

#include <algorithm>

namespace tapmap::blkif {

namespace {

bool Fits(const InflightBudget::Usage& u, uint64_t bytes) { return u.in_flight == 0 || u.in_flight + bytes <= u.limit; }

void Take(InflightBudget::Usage& u, uint64_t bytes) {
  u.in_flight += bytes;
  u.peak = std::max(u.peak, u.in_flight);
}

}  // namespace

std::shared_ptr<InflightBudget> InflightBudget::Create(uint64_t limit) {
  return std::shared_ptr<InflightBudget>(new InflightBudget(limit));
}

InflightBudget::InflightBudget(uint64_t limit) { usage_.limit = std::max<uint64_t>(limit, 1); }

std::shared_ptr<InflightBudget::Account> InflightBudget::NewAccount(uint64_t limit) {
  return std::shared_ptr<Account>(new Account(shared_from_this(), std::max<uint64_t>(limit, 1)));
}

InflightBudget::Usage InflightBudget::usage() const {
  std::lock_guard lock(mu_);
  return usage_;
}

bool InflightBudget::FitsHostLocked(uint64_t bytes) const { return Fits(usage_, bytes); }

bool InflightBudget::FitsLocked(const Account& account, uint64_t bytes) const {
  return Fits(account.usage_, bytes) && Fits(usage_, bytes);
}

void InflightBudget::TakeLocked(Account& account, uint64_t bytes) {
  Take(account.usage_, bytes);
  Take(usage_, bytes);
}

InflightBudget::Granted InflightBudget::GrantWaitersLocked() {
  Granted granted;
  std::vector<const Account*> blocked;  // accounts with an earlier waiter left waiting
  for (auto it = waiters_.begin(); it != waiters_.end();) {
    const Account* account = it->account.get();
    bool behind = std::find(blocked.begin(), blocked.end(), account) != blocked.end();
    if (!behind && FitsLocked(*account, it->bytes)) {
      TakeLocked(*it->account, it->bytes);
      granted.emplace_back(std::move(it->granted), Grant(std::move(it->account), it->bytes));
      it = waiters_.erase(it);
      continue;
    }
    if (!FitsHostLocked(it->bytes)) break;  // host order: nobody passes it
    blocked.push_back(account);
    ++it;
  }
  return granted;
}

void InflightBudget::Return(Account& account, uint64_t bytes) {
  Granted granted;
  {
    std::lock_guard lock(mu_);
    account.usage_.in_flight -= bytes;
    usage_.in_flight -= bytes;
    if (!waiters_.empty()) granted = GrantWaitersLocked();
  }
  for (auto& [callback, grant] : granted) callback(std::move(grant));
}

std::optional<InflightBudget::Grant> InflightBudget::Account::Acquire(uint64_t bytes,
                                                                      const std::function<void(Grant)>& granted) {
  InflightBudget& host = *host_;
  std::lock_guard lock(host.mu_);
  // Waiters come first when they are of this disk or wait for the host's bytes.
  bool queue = std::any_of(host.waiters_.begin(), host.waiters_.end(), [&](const Waiter& w) {
    return w.account.get() == this || !host.FitsHostLocked(w.bytes);
  });
  if (!queue && host.FitsLocked(*this, bytes)) {
    host.TakeLocked(*this, bytes);
    return Grant(shared_from_this(), bytes);
  }
  ++usage_.waits;
  ++host.usage_.waits;
  host.waiters_.push_back(Waiter{shared_from_this(), bytes, granted});
  return std::nullopt;
}

InflightBudget::Usage InflightBudget::Account::usage() const {
  std::lock_guard lock(host_->mu_);
  return usage_;
}

void InflightBudget::Grant::Reset() {
  if (!account_) return;
  std::shared_ptr<Account> account = std::move(account_);
  uint64_t bytes = std::exchange(bytes_, 0);
  account->host_->Return(*account, bytes);
}

}  // namespace tapmap::blkif
