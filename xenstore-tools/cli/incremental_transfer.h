// Incremental backups of volumes, in the file format of incremental_format.h:
//
//   ExportIncremental  `volume export --since SNAP NAME FILE`: asks the mapserver what
//                      changed from SNAP to NAME (Session.diff, computed from the map
//                      trees in time proportional to the change) and copies only those
//                      extents' data from the read-only export NAME@ro into FILE.
//   ImportIncremental  `volume import --diff FILE NAME`: writes FILE's data extents into
//                      NAME and zeroes its zero extents (after resizing NAME to the
//                      size of the incremental's `to`), so that a NAME equal to SNAP
//                      becomes equal to the exported NAME, byte for byte.
//
// Both copy with NbdExtentCopy (libnbd). For a consistent backup export from a snapshot
// (a live NAME being written may change between the diff and the copy). Applying the
// same incremental twice gives the same volume, so an interrupted import --diff is
// finished by running it again. NAME must not be in use: ImportIncremental refuses a
// NAME attached to a guest on this host (vbd-list), and a writer on another host holds
// its rw lease, so the copy's NBD open fails before anything is written.
#pragma once

#include <string>

#include "common/status.h"
#include "xenstore-tools/cli/command.h"
#include "xenstore-tools/cli/incremental_format.h"
#include "xenstore-tools/cli/interrupt_guard.h"

namespace tapmap::cli {

// The command's control socket, --force etc. come from `inv`'s options.
Status ExportIncremental(Invocation& inv, InterruptGuard& guard, const std::string& since,
                         const std::string& name, const std::string& dest);
Status ImportIncremental(Invocation& inv, InterruptGuard& guard, const std::string& file,
                         const std::string& name);

// {"from", "to", "extents", "data_bytes", "zero_bytes"}.
Json IncrementalJson(const IncrementalHeader& header);

}  // namespace tapmap::cli
