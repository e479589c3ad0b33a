// `tapmap volume import` and `tapmap volume export`: disk images in and out of volumes,
// through the local tapdisk-map's NBD export (so they need tapdisk-map running on this
// host, reachable at --control, with an NBD listener without TLS).
//
//   volume import SOURCE NAME [--format F]   SOURCE: a file qemu-img reads (raw, qcow2,
//       vmdk, vpc, vhdx, ...; format probed by qemu-img info unless --format) or an NBD
//       URL. Creates NAME with SOURCE's virtual size (rounded up to 512) and copies
//       with `qemu-img convert -n --target-is-zero` into the NBD export NAME: zero and
//       unallocated regions are not written and cost no pool space. On any failure or
//       SIGINT/SIGTERM/SIGHUP (forwarded to qemu-img) NAME is deleted again; if even
//       that fails, the message names it and says how to delete it.
//   volume import --diff FILE NAME           applies an incremental file (see
//       incremental_transfer.h) onto the existing volume NAME.
//   volume export NAME DEST [--format raw|qcow2|vmdk|vpc|vhdx] [--force]
//       reads the read-only export NAME@ro with `qemu-img convert` into DEST (a file,
//       created; an existing one only with --force; removed again on failure) or an
//       NBD URL (raw only; written in place).
//   volume export --since SNAP NAME DEST     an incremental file of what changed from
//       SNAP to NAME.
//
// Progress: a bar on a terminal; with --json, JSON Lines: {"progress": P, "phase":
// "copying", "volume": NAME} lines (transfer_progress.h), then one final document:
//   import          {"volume": Volume, "source": {"location", "format", "virtual_size_bytes"}}
//   import --diff   {"volume": Volume, "incremental": Incremental}
//   export          {"exported": {"volume", "location", "format", "size_bytes"}}
//   export --since  {"exported": {"volume", "location", "format": "tapmap-incremental",
//                    "size_bytes", "incremental": Incremental}}
// Incremental: {"from", "to", "extents", "data_bytes", "zero_bytes"}.
// On failure the usual {"error": ...} document ends the stream.
#pragma once

#include <vector>

#include "xenstore-tools/cli/command.h"

namespace tapmap::cli {

void AddImageCommands(std::vector<CommandSpec>* commands);

}  // namespace tapmap::cli
