// Where qemu tools reach a volume through the local tapdisk-map's NBD export: the
// listener list comes from the control op nbd-list (tapdisk-map/control/PROTOCOL.md).
//
//   unix:PATH           -> nbd+unix:///EXPORT?socket=PATH
//   tcp:HOST:PORT       -> nbd://HOST:PORT/EXPORT   (nbds:// when it requires TLS)
//
// EXPORT is a volume name, or VOLUME@ro for the read-only export.
#pragma once

#include <chrono>
#include <string>

#include <nlohmann/json.hpp>

#include "common/status.h"

namespace tapmap::cli {

// The URL template for listener `address` with "VOLUME" standing for the export name,
// "" if the address form is unknown. `tls` is the listener's "tls" field.
std::string NbdUrlTemplate(const std::string& address, const std::string& tls = "off");

struct NbdEndpoint {
  std::string url;      // what qemu tools and libnbd take
  std::string address;  // the listener's address (unix:PATH, tcp:HOST:PORT)
};

// The URL of `export_name` on the first shared listener of `exports` (nbd-list's
// "exports" array) that offers it (per-device listeners are skipped: they serve one
// volume each). With `plain_only`, listeners that require TLS are skipped too (a
// helper run by the CLI has no client credentials). url "" if there is none.
NbdEndpoint FindNbdUrl(const nlohmann::json& exports, const std::string& export_name,
                       bool plain_only);

// Asks the tapdisk-map at `control_path` and returns FindNbdUrl(..., plain_only = true).
// kUnavailable (with "is tapdisk-map running?") if the control socket cannot be
// reached; kNotFound if tapdisk-map has no NBD listener offering the export.
Result<std::string> LocalNbdUrl(const std::string& control_path, const std::string& export_name,
                                std::chrono::milliseconds timeout);

}  // namespace tapmap::cli
