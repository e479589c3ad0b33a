// CommitScheduler: the bookkeeping of one open volume's group commit — when a commit
// cycle may start, and which flushes a finished cycle answers — in the style of
// LevelDB's writer queue: many flushes share one cycle (one pool fdatasync and one
// commit RPC), and a flush is answered only by a cycle that started after it, so it
// covers every write acknowledged before it.
//
// The cycle itself (fdatasync, re-preparing lost reservations, the commit RPC) is the
// Volume's; this class only says "start cycle N now" and, when cycle N ends, hands back
// the flushes it completes or fails. One cycle runs at a time.
//
//   sched.AddFlush(done);                       // a flush waits
//   if (auto n = sched.TryStart(has_pending))   // no cycle running and work to do
//     RunCycle(*n);
//   for (auto& d : sched.Succeeded(n, covered_all)) Complete(d, Ok);
//
// Not thread-safe: the owning Volume's mutex guards every call. The IoDones it hands
// back must be called outside that mutex.
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include "tapdisk-map/engine/block_device.h"

namespace tapmap::engine {

class CommitScheduler {
 public:
  // A flush: it completes with the first successful cycle that starts after now and
  // covers every pending block.
  void AddFlush(IoDone done);
  bool flush_waiting() const { return !waiters_.empty(); }
  bool running() const { return running_; }

  // Starts the next cycle unless one is running or there is nothing to do (no pending
  // block and no flush waiting). Returns its number.
  std::optional<uint64_t> TryStart(bool has_pending);

  // Cycle `cycle` committed what it carried. If that was every pending block
  // (`covered_all`), the flushes it covers are returned; the others wait for a later
  // cycle. The next cycle may start.
  std::vector<IoDone> Succeeded(uint64_t cycle, bool covered_all);
  // Cycle `cycle` failed: the flushes it would have answered are returned (to fail
  // with its status); later ones keep waiting. The next cycle may start.
  std::vector<IoDone> Failed(uint64_t cycle);
  // Every waiting flush, to fail (the lease was revoked).
  std::vector<IoDone> TakeAll();

  // The lazy commit timer: true if the caller should arm it now (it was not armed).
  bool ArmTimer();
  void TimerFired() { timer_armed_ = false; }

 private:
  struct Waiter {
    uint64_t cycle;  // completes when this cycle (or a later one) has succeeded
    IoDone done;
  };
  std::vector<Waiter> waiters_;
  uint64_t started_ = 0;
  bool running_ = false;
  bool timer_armed_ = false;
};

}  // namespace tapmap::engine
