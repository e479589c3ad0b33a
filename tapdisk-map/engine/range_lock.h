// RangeLock: asynchronous exclusive locks on byte ranges of one volume. A write holds
// the blocks it touches from classification to pool completion, so that two writes to
// one block (a read-modify-write, a copy-on-write) never interleave, and so that a
// recall can wait for in-flight writes to a range.
//
// Fairness: FIFO. A request is granted when it overlaps neither a held range nor an
// earlier waiting request; holders never wait for other locks, so no deadlock.
//
// Threading: thread-safe. `granted` runs inline from Acquire when free at once, else
// from the Release that frees it (outside the internal lock).
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <vector>

namespace tapmap::engine {

class RangeLock {
 public:
  // Locks [start, end). Call Release(start, end) exactly once after `granted` ran.
  void Acquire(uint64_t start, uint64_t end, std::function<void()> granted);
  void Release(uint64_t start, uint64_t end);
  // Number of held ranges (tests).
  size_t held() const;

 private:
  struct Span {
    uint64_t start, end;
    bool Overlaps(uint64_t s, uint64_t e) const { return s < end && start < e; }
  };
  struct Waiter {
    Span span;
    std::function<void()> granted;
  };
  bool HeldOverlapsLocked(uint64_t s, uint64_t e) const;

  mutable std::mutex mu_;
  std::vector<Span> held_;
  std::deque<Waiter> waiters_;
};

}  // namespace tapmap::engine
