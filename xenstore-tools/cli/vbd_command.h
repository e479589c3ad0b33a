// `tapmap vbd list|attach|detach|pause|resume`: the guest disks tapdisk-map serves,
// through its control socket (tapdisk-map/control/PROTOCOL.md).
//
// JSON output (--json):
//   list                    {"vbds": [Vbd, ...]}            Vbd as in PROTOCOL.md
//   attach                  {"vbd": Vbd}
//   detach, pause, resume   {"domid": N, "devid": N, "layout": "vbd", "action": "detach"}
#pragma once

#include <vector>

#include "xenstore-tools/cli/command.h"
#include "xenstore-tools/cli/vbd_address.h"

namespace tapmap::cli {

void AddVbdCommands(std::vector<CommandSpec>* commands);

// The "--layout" flag shared by vbd and snapshot-live commands.
OptionSpec LayoutFlag();

// Parses args()[index] as a disk address and applies --layout; usage errors are
// marked on `inv`.
Result<VbdAddress> DiskArgument(Invocation& inv, size_t index);

// {"domid": .., "devid": .., "layout": ..} fields of a control request for `disk`.
nlohmann::json DiskRequest(const char* op, const VbdAddress& disk);

}  // namespace tapmap::cli
