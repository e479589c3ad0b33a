#include "xenstore-tools/cli/interrupt_guard.h"

#include <pthread.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace tapmap::cli {
namespace {

sigset_t Interrupts() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGHUP);
  return set;
}

}  // namespace

Result<std::unique_ptr<InterruptGuard>> InterruptGuard::Install() {
  sigset_t set = Interrupts();
  sigset_t old;
  int err = pthread_sigmask(SIG_BLOCK, &set, &old);
  if (err != 0) return Status::FromErrno("pthread_sigmask", err);
  UniqueFd fd(::signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC));
  if (!fd) {
    int e = errno;
    pthread_sigmask(SIG_SETMASK, &old, nullptr);
    return Status::FromErrno("signalfd", e);
  }
  return std::unique_ptr<InterruptGuard>(new InterruptGuard(std::move(fd), old));
}

InterruptGuard::~InterruptGuard() {
  Take();
  pthread_sigmask(SIG_SETMASK, &old_mask_, nullptr);
}

int InterruptGuard::Take() {
  signalfd_siginfo info;
  for (;;) {
    ssize_t n = ::read(fd_.get(), &info, sizeof(info));
    if (n < 0 && errno == EINTR) continue;
    if (n != static_cast<ssize_t>(sizeof(info))) break;  // EAGAIN: nothing queued
    if (first_ == 0) first_ = static_cast<int>(info.ssi_signo);
  }
  return first_;
}

const char* SignalName(int signal) {
  switch (signal) {
    case SIGINT:
      return "SIGINT";
    case SIGTERM:
      return "SIGTERM";
    case SIGHUP:
      return "SIGHUP";
    case SIGKILL:
      return "SIGKILL";
    default:
      return "a signal";
  }
}

}  // namespace tapmap::cli
