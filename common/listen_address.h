// ListenAddress: where a daemon listens or a client connects, written as
//   unix:/run/tapmap/nbd.sock      a unix stream socket path
//   tcp:127.0.0.1:10809            a TCP host (name, IPv4, or [IPv6]) and port
// Used by every program that listens or connects: mapserver's --listen and its clients'
// --server (protocol/server_address.h), tapdisk-map's --nbd and --metrics.
// Parsing only: no socket is created here.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace tapmap {

struct ListenAddress {
  enum class Kind : uint8_t { kUnix, kTcp };
  Kind kind = Kind::kUnix;
  std::string path;  // kUnix: the socket path (non-empty, < 108 bytes)
  std::string host;  // kTcp: host name or address, without IPv6 brackets
  uint16_t port = 0; // kTcp: 1..65535

  // The canonical text form ("unix:/path", "tcp:host:port", "tcp:[::1]:port").
  std::string ToString() const;
  // The form kj::Network::parseAddress() accepts ("unix:/path", "host:port", "[v6]:port").
  std::string ToKjAddress() const;
};

// Parses one address; errors (kInvalidArgument) name the offending text. Port 0 ("any
// free port", for a listener whose port is read back) is accepted only if
// `allow_port_zero`.
Result<ListenAddress> ParseListenAddress(std::string_view text, bool allow_port_zero = false);

// Parses a comma-separated list ("unix:/a,tcp:0.0.0.0:10809"); empty items are errors.
Result<std::vector<ListenAddress>> ParseListenAddressList(std::string_view text);

}  // namespace tapmap
