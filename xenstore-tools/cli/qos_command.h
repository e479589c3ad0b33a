// `tapmap volume qos NAME [LIMITS] [--reset]` and `tapmap vbd qos DOMID/DEVID [LIMITS]
// [--reset]`: read or change a volume's I/O limits on the local tapdisk-map (control op
// "volume-qos", QosLimits of tapdisk-map/control/PROTOCOL.md). `vbd qos` finds the
// disk's volume with vbd-list, then sets the volume's limits (they apply to every front
// end of the volume: its vbd and its NBD exports alike).
//
// LIMITS: --read-iops N, --write-iops N, --iops N (ops per second) and --read-bps B,
// --write-bps B, --bps B (bytes per second; 20M = 20 MiB/s), each with a --…-burst
// (bucket size; default one second's worth). A limit not given keeps its value; 0
// removes it; --reset starts from no limits. Without any, the limits are only shown.
//
// Output: human "volume NAME: write_bps=20971520, ..." (or "unlimited"); JSON
// {"volume": NAME, "limits": QosLimits} (vbd qos adds "domid" and "devid").
// A bad number or disk address is a usage error (exit code 2).
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "xenstore-tools/cli/command.h"

namespace tapmap::cli {

void AddQosCommands(std::vector<CommandSpec>* commands);

// `vbd attach --qos KEY=N,...` (keys of QosLimits, sizes allowed for the *bps* ones):
// the flag's description, and the limits it gives (a usage error names a malformed
// item; the daemon checks the keys).
OptionSpec QosAttachFlag();
Result<nlohmann::json> ParseQosAttachFlag(Invocation& inv);
// Sets `volume`'s limits on the local tapdisk-map (volume-qos, starting from none).
Status SetVolumeQos(Invocation& inv, const std::string& volume, const nlohmann::json& limits);

}  // namespace tapmap::cli
