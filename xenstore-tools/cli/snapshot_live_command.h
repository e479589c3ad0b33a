// `tapmap snapshot-live DOMID/DEVID NAME`: a crash-consistent snapshot of the volume a
// running guest's disk is served from.
//
//   1. log in to mapserver (before touching the guest: a bad secret must not pause it)
//   2. find the disk's volume (control op vbd-list)
//   3. vbd-pause: tapdisk-map drains the ring and flushes, the guest's I/O waits
//   4. Session.snapshot(volume, NAME) on mapserver (it recalls tapdisk-map's writable
//      maps, so later guest writes go copy-on-write)
//   5. vbd-resume — ALWAYS once a pause was sent, whatever happened in 3 or 4.
//
// JSON output: {"snapshot": Volume (see volume_command.h), "source": "<volume>",
//               "domid": N, "devid": N, "layout": "vbd", "paused_ms": N}
#pragma once

#include <vector>

#include "xenstore-tools/cli/command.h"

namespace tapmap::cli {

void AddSnapshotLiveCommands(std::vector<CommandSpec>* commands);

}  // namespace tapmap::cli
