// `tapmap volume create|snapshot|clone|delete|resize|list|info`: volumes on mapserver
// (Session calls of include/tapmap/proto/mapping.capnp).
//
// JSON output (--json):
//   create, snapshot, clone, resize, info   {"volume": Volume}
//   delete                                  {"deleted": "<name>"}
//   list                                    {"volumes": [Volume, ...], "pool": Pool}
// Volume: {"name", "size_bytes", "read_only", "kind" ("base"|"snapshot"|"clone"),
//          "parent", "version_set", "mapped_bytes", "exclusive_bytes", "shared_bytes",
//          "created_unix_seconds", "openers", "writer"}
// Pool:   {"uuid", "pool_bytes", "block_size", "total_blocks", "free_blocks",
//          "reserved_blocks", "volumes", "version_sets", "metadata_bytes"}
#pragma once

#include <vector>

#include "tapmap/proto/mapping.capnp.h"
#include "xenstore-tools/cli/command.h"

namespace tapmap::cli {

void AddVolumeCommands(std::vector<CommandSpec>* commands);

// The Volume JSON object above (shared with snapshot-live).
Json VolumeJson(proto::VolumeInfo::Reader info);

// "name: value" lines describing a volume for people.
std::string VolumeText(proto::VolumeInfo::Reader info);

}  // namespace tapmap::cli
