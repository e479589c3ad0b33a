// `tapmap volume flatten NAME`: gives a clone private copies of every block it shares
// with another volume (its golden image, the snapshot it was cloned from, siblings),
// online, so that afterwards it shares nothing (rbd flatten). The work is done by the
// local tapdisk-map (control ops volume-flatten, -status, -cancel; engine/flattener.h),
// which opens the volume read-write — or uses the open of a guest disk attached here;
// a volume open read-write on another host must be flattened there.
//
//   volume flatten NAME [--rate 64M]   starts the job and follows it to its end: a
//       progress bar on a terminal; with --json, JSON Lines {"progress": P, "phase":
//       "copying", "volume": NAME} and a final {"flatten": FlattenStatus}. --rate bounds
//       the copy rate in bytes per second (0 = unbounded). SIGINT/SIGTERM/SIGHUP cancel
//       the job: what was copied is committed, and running flatten again continues.
//   volume flatten NAME --no-wait      starts it and prints its status at once.
//   volume flatten NAME --status       the running or last job's status on this host.
//   volume flatten NAME --cancel       asks the running job to stop.
//
// Exit code 0 once the volume shares nothing (the job's state "done"); 1 if the job
// failed or was cancelled (its error is printed).
#pragma once

#include <vector>

#include "xenstore-tools/cli/command.h"

namespace tapmap::cli {

void AddFlattenCommands(std::vector<CommandSpec>* commands);

}  // namespace tapmap::cli
