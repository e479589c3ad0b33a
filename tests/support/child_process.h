// ChildProcess: a program a test starts (a daemon, a client); RAII — the destructor
// ends it (SIGTERM, then SIGKILL after a bounded wait) so no test leaves processes
// behind. Also RunCommand for one-shot programs whose output a test inspects.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <optional>
#include <string>
#include <vector>

namespace tapmap::testing {

class ChildProcess {
 public:
  // Starts argv[0] (searched in PATH) with stdout and stderr appended to `log_path`
  // ("" = inherit). Throws std::runtime_error if it cannot be started.
  ChildProcess(std::vector<std::string> argv, const std::string& log_path = "");
  ~ChildProcess();
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;

  pid_t pid() const { return pid_; }
  // Sends `signal` (if still running).
  void Signal(int signal);
  // Waits up to `timeout` for exit; the exit status as from waitpid (nullopt if still
  // running).
  std::optional<int> Wait(std::chrono::milliseconds timeout);
  // True while the process has not been reaped.
  bool Running();
  // SIGTERM, wait up to `grace`, then SIGKILL; returns the waitpid status.
  int Stop(std::chrono::milliseconds grace = std::chrono::milliseconds(10000));

 private:
  pid_t pid_ = -1;
  std::optional<int> status_;
};

// Runs argv to completion (at most `timeout`, then it is killed), capturing stdout and
// stderr together into `*output` if given. Returns the exit code, or -1 if it was
// killed by a signal or timed out.
int RunCommand(const std::vector<std::string>& argv, std::string* output = nullptr,
               std::chrono::milliseconds timeout = std::chrono::milliseconds(120000));

// Waits (polling, bounded) until `path` exists. True if it appeared in time.
bool WaitForPath(const std::string& path, std::chrono::milliseconds timeout);

// A fresh directory under /tmp, removed with its contents on destruction.
class TempDir {
 public:
  explicit TempDir(const std::string& prefix = "tapmap-test");
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string operator/(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

}  // namespace tapmap::testing
