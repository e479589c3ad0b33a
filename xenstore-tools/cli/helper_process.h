// HelperProcess: runs one of the programs the CLI delegates work to (qemu-img, nbdsh)
// to completion, feeding its stdin, handing its stdout to the caller line by line
// (lines end in '\n' or '\r': qemu-img -p redraws its progress with '\r') and keeping
// the end of its stderr for the error message.
//
// A SIGINT/SIGTERM/SIGHUP that reaches the CLI meanwhile (InterruptGuard) is forwarded
// to the helper, which is then given kKillGrace to exit before it gets SIGKILL; Run
// still waits for it, so that when Run returns the helper is gone and nothing it does
// can race the caller's cleanup.
#pragma once

#include <chrono>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "xenstore-tools/cli/interrupt_guard.h"

namespace tapmap::cli {

struct HelperOutcome {
  int exit_code = -1;       // the exit code if the helper exited, else -1
  int term_signal = 0;      // the signal that ended it, else 0
  int interrupted_by = 0;   // the signal the CLI received and forwarded, else 0
  std::string error_tail;   // the last 4 KiB of its stderr, trailing blanks removed

  bool succeeded() const { return exit_code == 0 && interrupted_by == 0; }
  // "qemu-img failed: <stderr>" / "... was ended by SIGKILL" / "interrupted by SIGINT".
  Status ToStatus(const std::string& program) const;
};

class HelperProcess {
 public:
  static constexpr std::chrono::seconds kKillGrace{10};

  using LineHandler = std::function<void(std::string_view line)>;

  // Runs argv (argv[0] looked up in PATH; the helper starts with default signal
  // dispositions and an empty signal mask) with `input` on its stdin (then closed)
  // and calls `on_line` for every non-empty stdout line. `guard` must outlive the
  // call. Errors: kNotSupported if argv[0] is not installed (`install_hint` is added
  // to the message); kIoError if it cannot be started. A helper that fails is not an
  // error of Run: see HelperOutcome.
  static Result<HelperOutcome> Run(const std::vector<std::string>& argv, const std::string& input,
                                   InterruptGuard& guard, const LineHandler& on_line,
                                   const std::string& install_hint = "");
};

}  // namespace tapmap::cli
