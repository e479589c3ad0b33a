// Exit codes of the `tapmap` command (documented in tapmap(1) and the README).
// Scripts (block-tapmap, automation) rely on them; never renumber.
#pragma once

#include "common/status.h"

namespace tapmap::cli {

enum ExitCode : int {
  kExitOk = 0,           // the command did what was asked
  kExitFailed = 1,       // the server or daemon refused or failed the request
  kExitUsage = 2,        // bad command line (unknown command/flag, bad argument)
  kExitUnreachable = 3,  // mapserver / tapdisk-map could not be reached (or timed out)
};

// The exit code for a command that ended with `status` (a usage error is decided by
// the caller, not by the status code: a server may also answer invalid-argument).
inline ExitCode ExitCodeFor(const Status& status) {
  if (status.ok()) return kExitOk;
  if (status.code() == StatusCode::kUnavailable) return kExitUnreachable;
  return kExitFailed;
}

}  // namespace tapmap::cli
