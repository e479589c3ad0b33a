// `tapmap nbd list`: tapdisk-map's NBD exports (control op nbd-list), i.e. where qemu-img,
// qemu-io or QEMU can reach volumes: nbd+unix:///<volume>?socket=<path> for a unix
// address, nbd://<host>:<port>/<volume> for a TCP one.
//
// JSON output: {"exports": [{"address": "unix:/run/tapmap/nbd.sock",
//                            "volumes_open": ["vm1", ...], "connections": N}, ...]}
// (tapdisk-map/control/PROTOCOL.md, passed through).
//
// `tapmap nbd url VOLUME`: the URL of VOLUME on the first shared export
// (JSON {"url": "...", "address": "..."}; not-found if the daemon has no export).
// `tapmap nbd listen ADDRESS --export VOLUME` / `tapmap nbd unlisten ADDRESS`: a
// per-device listener serving one volume, also as the default export (control ops
// nbd-listen / nbd-unlisten); JSON {"address": ..., "export": ...} / {"address": ...}.
#pragma once

#include <vector>

#include "xenstore-tools/cli/command.h"

namespace tapmap::cli {

void AddNbdCommands(std::vector<CommandSpec>* commands);

}  // namespace tapmap::cli
