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
#include <vector>

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

// The addresses of a pool's active and standby mapservers, comma-separated
// ("tcp:a:7000,tcp:b:7000", mapserver/doc/metadata_rados.md): a client tries them in
// turn until one answers (a standby does not listen). One address is a list of one.
// A text that is not a list of valid addresses is tried as a single address (a unix
// socket path may contain a comma); errors are those of the first bad element.
inline Result<std::vector<ServerAddress>> ParseServerAddressList(std::string_view text) {
  std::vector<ServerAddress> list;
  Status first_error;
  for (size_t start = 0; start <= text.size();) {
    size_t comma = text.find(',', start);
    std::string_view part = text.substr(start, comma == std::string_view::npos ? std::string_view::npos : comma - start);
    auto address = ParseServerAddress(part);
    if (!address.ok()) {
      first_error = address.status();
      list.clear();
      break;
    }
    list.push_back(std::move(*address));
    if (comma == std::string_view::npos) break;
    start = comma + 1;
  }
  if (!list.empty()) return list;
  auto whole = ParseServerAddress(text);
  if (!whole.ok()) return first_error.ok() ? whole.status() : first_error;
  return std::vector<ServerAddress>{std::move(*whole)};
}

}  // namespace tapmap::protocol
