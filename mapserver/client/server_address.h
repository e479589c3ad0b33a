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

#include "common/status.h"

namespace tapmap::mapserver {

// Default address of the server on a host when nothing else is configured.
inline constexpr std::string_view kDefaultServerAddress = "unix:/run/tapmap/mapserver.sock";

struct ServerAddress {
  enum class Kind : uint8_t { kUnix, kTcp };

  Kind kind = Kind::kUnix;
  std::string path;  // kUnix: socket path (absolute or relative), non-empty
  std::string host;  // kTcp: host name or address, without brackets
  uint16_t port = 0; // kTcp: 0..65535 (0 = any free port; only useful to listen)

  // The canonical text form ("unix:/path", "tcp:host:port", "tcp:[v6]:port").
  std::string ToString() const;
  // The form kj::Network::parseAddress() accepts for this address.
  std::string ToKjAddress() const;
};

// Parses the text form above. Errors (kInvalidArgument) name the bad text: unknown
// scheme, empty path, missing or out-of-range port, empty host.
Result<ServerAddress> ParseServerAddress(std::string_view text);

}  // namespace tapmap::mapserver
