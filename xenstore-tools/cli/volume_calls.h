// The mapserver calls `volume import` and `volume export` make, one short session
// each (a copy can take hours; no connection is held open meanwhile). Volumes are
// returned as the Volume JSON object of volume_command.h.
#pragma once

#include <string>
#include <vector>

#include "common/status.h"
#include "xenstore-tools/cli/command.h"
#include "xenstore-tools/cli/incremental_format.h"

namespace tapmap::cli {

Result<Json> CreateVolume(Invocation& inv, const std::string& name, uint64_t size_bytes);
Result<Json> GetVolume(Invocation& inv, const std::string& name);
Result<Json> ResizeVolume(Invocation& inv, const std::string& name, uint64_t size_bytes,
                          bool allow_shrink);

// Deletes `name`, retrying while it is busy (tapdisk-map closes a volume shortly after
// its last NBD client left) for at most --timeout.
Status DeleteVolumeWhenClosed(Invocation& inv, const std::string& name);

// Every extent of `to` whose mapping differs from `from` (Session.diff, all pages).
Result<std::vector<IncrementalExtent>> DiffVolumes(Invocation& inv, const std::string& from,
                                                   const std::string& to);

}  // namespace tapmap::cli
