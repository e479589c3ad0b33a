#include "xenstore-tools/cli/helper_process.h"

#include <fcntl.h>
#include <poll.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstring>

#include "common/unique_fd.h"

namespace tapmap::cli {
namespace {

constexpr size_t kErrorTail = 4096;

struct Pipe {
  UniqueFd read;
  UniqueFd write;
};

Result<Pipe> MakePipe() {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) return Status::FromErrno("pipe", errno);
  return Pipe{UniqueFd(fds[0]), UniqueFd(fds[1])};
}

void SetNonBlocking(int fd) { ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK); }

// SIGPIPE ignored while it lives (a helper that exits early must not kill the CLI
// writing its stdin; the write then fails with EPIPE), the old disposition restored.
class IgnoreSigpipe {
 public:
  IgnoreSigpipe() {
    struct sigaction ign {};
    ign.sa_handler = SIG_IGN;
    sigemptyset(&ign.sa_mask);
    ::sigaction(SIGPIPE, &ign, &old_);
  }
  ~IgnoreSigpipe() { ::sigaction(SIGPIPE, &old_, nullptr); }
  IgnoreSigpipe(const IgnoreSigpipe&) = delete;
  IgnoreSigpipe& operator=(const IgnoreSigpipe&) = delete;

 private:
  struct sigaction old_ {};
};

std::string Trimmed(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r' || s.back() == ' ')) s.pop_back();
  return s;
}

}  // namespace

Status HelperOutcome::ToStatus(const std::string& program) const {
  if (interrupted_by != 0) {
    return Status::Aborted(std::string("interrupted by ") + SignalName(interrupted_by));
  }
  if (exit_code == 0) return Status::Ok();
  std::string what = program + (term_signal != 0 ? std::string(" was ended by ") + SignalName(term_signal)
                                                 : " failed (exit code " + std::to_string(exit_code) + ")");
  if (!error_tail.empty()) what += ": " + error_tail;
  return Status::IoError(what);
}

Result<HelperOutcome> HelperProcess::Run(const std::vector<std::string>& argv,
                                         const std::string& input, InterruptGuard& guard,
                                         const LineHandler& on_line,
                                         const std::string& install_hint) {
  if (argv.empty()) return Status::InvalidArgument("no helper program given");
  IgnoreSigpipe ignore_sigpipe;
  auto in = MakePipe();
  if (!in.ok()) return in.status();
  auto out = MakePipe();
  if (!out.ok()) return out.status();
  auto err = MakePipe();
  if (!err.ok()) return err.status();

  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, in->read.get(), 0);
  posix_spawn_file_actions_adddup2(&actions, out->write.get(), 1);
  posix_spawn_file_actions_adddup2(&actions, err->write.get(), 2);
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  sigset_t none, defaults;
  sigemptyset(&none);
  sigemptyset(&defaults);
  for (int s : {SIGINT, SIGTERM, SIGHUP, SIGPIPE}) sigaddset(&defaults, s);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setsigdefault(&attr, &defaults);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid = -1;
  int rc = ::posix_spawnp(&pid, args[0], &actions, &attr, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attr);
  if (rc == ENOENT) {
    return Status::NotSupported(argv[0] + " is not installed" +
                                (install_hint.empty() ? "" : " (" + install_hint + ")"));
  }
  if (rc != 0) return Status::IoError("cannot start " + argv[0] + ": " + std::strerror(rc));
  in->read.Reset();
  out->write.Reset();
  err->write.Reset();
  SetNonBlocking(in->write.get());
  SetNonBlocking(out->read.get());
  SetNonBlocking(err->read.get());

  HelperOutcome outcome;
  std::string out_buffer, err_text;
  size_t input_sent = 0;
  if (input.empty()) in->write.Reset();
  std::chrono::steady_clock::time_point kill_at{};
  bool killed = false;

  auto flush_lines = [&](bool at_eof) {
    size_t start = 0;
    for (size_t i = 0; i < out_buffer.size(); ++i) {
      if (out_buffer[i] != '\n' && out_buffer[i] != '\r') continue;
      if (i > start) on_line(std::string_view(out_buffer).substr(start, i - start));
      start = i + 1;
    }
    out_buffer.erase(0, start);
    if (at_eof && !out_buffer.empty()) {
      on_line(out_buffer);
      out_buffer.clear();
    }
  };

  while (out->read || err->read) {
    std::vector<pollfd> fds;
    fds.push_back({guard.fd(), POLLIN, 0});
    if (out->read) fds.push_back({out->read.get(), POLLIN, 0});
    if (err->read) fds.push_back({err->read.get(), POLLIN, 0});
    if (in->write) fds.push_back({in->write.get(), POLLOUT, 0});
    int timeout_ms = -1;
    if (outcome.interrupted_by != 0 && !killed) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          kill_at - std::chrono::steady_clock::now());
      timeout_ms = static_cast<int>(std::max<int64_t>(0, left.count()));
    }
    int n = ::poll(fds.data(), fds.size(), timeout_ms);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Status::FromErrno("poll", errno);
    if (outcome.interrupted_by == 0 && guard.Take() != 0) {
      outcome.interrupted_by = guard.Take();
      ::kill(pid, outcome.interrupted_by);
      kill_at = std::chrono::steady_clock::now() + kKillGrace;
    } else if (outcome.interrupted_by != 0) {
      guard.Take();  // later signals: already forwarded one, keep cleaning up
      if (!killed && std::chrono::steady_clock::now() >= kill_at) {
        ::kill(pid, SIGKILL);
        killed = true;
      }
    }
    for (const auto& p : fds) {
      if (p.revents == 0 || p.fd == guard.fd()) continue;
      if (in->write && p.fd == in->write.get()) {
        ssize_t w = ::write(p.fd, input.data() + input_sent, input.size() - input_sent);
        if (w > 0) input_sent += static_cast<size_t>(w);
        if ((w < 0 && errno != EAGAIN && errno != EINTR) || input_sent == input.size()) {
          in->write.Reset();  // done, or the helper stopped reading (EPIPE)
        }
        continue;
      }
      UniqueFd& src = (out->read && p.fd == out->read.get()) ? out->read : err->read;
      char buf[16384];
      ssize_t r = ::read(p.fd, buf, sizeof(buf));
      if (r < 0 && (errno == EAGAIN || errno == EINTR)) continue;
      if (r <= 0) {
        if (&src == &out->read) flush_lines(true);
        src.Reset();
        continue;
      }
      if (&src == &out->read) {
        out_buffer.append(buf, static_cast<size_t>(r));
        flush_lines(false);
      } else {
        err_text.append(buf, static_cast<size_t>(r));
        if (err_text.size() > 2 * kErrorTail) err_text.erase(0, err_text.size() - kErrorTail);
      }
    }
  }
  in->write.Reset();

  // Both pipes closed: the helper is exiting (or closed them itself; it is then still
  // bounded by the forwarded signal and the SIGKILL after kKillGrace).
  int status = 0;
  for (;;) {
    pid_t w = ::waitpid(pid, &status, outcome.interrupted_by != 0 && !killed ? WNOHANG : 0);
    if (w == pid) break;
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) return Status::FromErrno("waitpid", errno);
    // WNOHANG and still running: wait for the grace period, then SIGKILL.
    pollfd p{guard.fd(), POLLIN, 0};
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(kill_at - std::chrono::steady_clock::now());
    ::poll(&p, 1, static_cast<int>(std::clamp<int64_t>(left.count(), 0, 100)));
    guard.Take();
    if (std::chrono::steady_clock::now() >= kill_at) {
      ::kill(pid, SIGKILL);
      killed = true;
    }
  }
  if (outcome.interrupted_by == 0 && guard.Take() != 0) outcome.interrupted_by = guard.Take();
  if (WIFEXITED(status)) outcome.exit_code = WEXITSTATUS(status);
  if (WIFSIGNALED(status)) outcome.term_signal = WTERMSIG(status);
  if (err_text.size() > kErrorTail) err_text.erase(0, err_text.size() - kErrorTail);
  outcome.error_tail = Trimmed(std::move(err_text));
  return outcome;
}

}  // namespace tapmap::cli
