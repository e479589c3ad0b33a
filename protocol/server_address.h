// ServerAddress: where a mapserver listens, parsed from the text form used in config
// files and on command lines:
//
//   unix:/run/tapmap/mapserver.sock     a unix-domain stream socket (the default)
//   tcp:HOST:PORT                       TCP; HOST is a name, an IPv4 address or an
//                                       IPv6 address in brackets ("tcp:[::1]:7000")
//
// Used by both the server (--listen) and its clients (--server).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "common/listen_address.h"
#include "common/status.h"

namespace tapmap::protocol {

// Default address of the server on a host when nothing else is configured.
inline constexpr std::string_view kDefaultServerAddress = "unix:/run/tapmap/mapserver.sock";

// A mapserver address is a common ListenAddress; port 0 is accepted (a listener on
// "any free port" whose real port the server reports).
using ServerAddress = ListenAddress;

inline Result<ServerAddress> ParseServerAddress(std::string_view text) {
  return ParseListenAddress(text, /*allow_port_zero=*/true);
}

}  // namespace tapmap::protocol
