// InterruptGuard: lets a long command (volume import/export) clean up after SIGINT,
// SIGTERM or SIGHUP instead of dying half-way.
//
// While the guard lives those signals are blocked in the calling thread (and in every
// thread it starts afterwards) and arrive on a signalfd instead: the command polls
// fd() next to its other descriptors, forwards a signal to the helper it runs
// (HelperProcess does), then undoes what it made and fails with kAborted. A second
// signal does not stop the cleanup; SIGKILL does (nothing can catch it).
#pragma once

#include <csignal>
#include <memory>

#include "common/status.h"
#include "common/unique_fd.h"

namespace tapmap::cli {

class InterruptGuard {
 public:
  // Blocks the signals and opens the signalfd. Must be called before the command
  // starts any thread (a thread started earlier would still take the signal and die).
  static Result<std::unique_ptr<InterruptGuard>> Install();

  // Takes every signal still queued (so none is delivered later) and restores the
  // signal mask the thread had.
  ~InterruptGuard();
  InterruptGuard(const InterruptGuard&) = delete;
  InterruptGuard& operator=(const InterruptGuard&) = delete;

  // Readable when a signal arrived; pass it to poll(2), then call Take().
  int fd() const { return fd_.get(); }

  // Reads every queued signal without blocking; returns the first signal ever
  // received (SIGINT, SIGTERM or SIGHUP), 0 if none yet. Later calls keep returning it.
  int Take();

  // Take() != 0.
  bool interrupted() { return Take() != 0; }

 private:
  InterruptGuard(UniqueFd fd, sigset_t old_mask) : fd_(std::move(fd)), old_mask_(old_mask) {}

  UniqueFd fd_;
  sigset_t old_mask_;
  int first_ = 0;
};

// "SIGINT", "SIGTERM", ... for messages.
const char* SignalName(int signal);

}  // namespace tapmap::cli
