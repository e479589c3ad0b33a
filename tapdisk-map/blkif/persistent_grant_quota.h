// PersistentGrantQuota: the host-wide cap on persistently mapped grants. Each
// persistent grant is a mapping of its own (one VMA with gntdev), so the grants of all
// rings of all disks count against the process's vm.max_map_count (65530 by default);
// every ring's own LRU bound (persistent_grants_per_ring) is not enough once there are
// many disks. A ring takes a slot from the quota before it keeps a grant mapped and
// gives it back when it unmaps it. With no slot left, the ring serves that segment
// without keeping a mapping: by grant copy, its non-persistent path (Linux blkback
// maps and unmaps such grants per request once max_persistent_grants is reached;
// grant copy needs no mapping at all).
//
// Threading: thread-safe (lock-free).
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>

namespace tapmap::blkif {

class PersistentGrantQuota {
 public:
  explicit PersistentGrantQuota(uint64_t limit) : limit_(limit) {}
  PersistentGrantQuota(const PersistentGrantQuota&) = delete;
  PersistentGrantQuota& operator=(const PersistentGrantQuota&) = delete;

  // Takes one slot; false (and counts a refusal) if all `limit` are taken.
  bool TryTake() {
    uint64_t used = used_.load(std::memory_order_relaxed);
    do {
      if (used >= limit_) {
        refused_.fetch_add(1, std::memory_order_relaxed);
        return false;
      }
    } while (!used_.compare_exchange_weak(used, used + 1, std::memory_order_relaxed));
    uint64_t peak = peak_.load(std::memory_order_relaxed);
    while (used + 1 > peak && !peak_.compare_exchange_weak(peak, used + 1, std::memory_order_relaxed)) {
    }
    return true;
  }
  // Gives back `n` slots taken with TryTake.
  void Give(uint64_t n) { used_.fetch_sub(n, std::memory_order_relaxed); }

  struct Usage {
    uint64_t limit = 0, used = 0, peak = 0;
    uint64_t refused = 0;  // segments served without a persistent mapping for want of a slot
  };
  Usage usage() const {
    constexpr auto r = std::memory_order_relaxed;
    return Usage{limit_, used_.load(r), peak_.load(r), refused_.load(r)};
  }

 private:
  const uint64_t limit_;
  std::atomic<uint64_t> used_{0}, peak_{0}, refused_{0};
};

}  // namespace tapmap::blkif
