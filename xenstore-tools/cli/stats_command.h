// `tapmap stats [--watch SECONDS [--count N]]`: tapdisk-map's I/O and cache counters
// (control op "stats"; the Stats object of tapdisk-map/control/PROTOCOL.md).
//
// Human output: per-volume totals with a total line, then cache and map counters.
// With --watch: every SECONDS, rates over the last interval, until interrupted or N
// intervals were shown.
//
// JSON output: {"stats": Stats} once; with --watch one line per sample (JSON Lines),
// the first right away: {"unix_time": T, "interval_seconds": S, "stats": Stats}
// (totals, not rates; subtract consecutive samples for rates).
#pragma once

#include <vector>

#include "xenstore-tools/cli/command.h"

namespace tapmap::cli {

void AddStatsCommands(std::vector<CommandSpec>* commands);

}  // namespace tapmap::cli
