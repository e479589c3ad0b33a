#include "mapserver/client/server_address.h"

#include <charconv>

namespace tapmap::mapserver {
namespace {

Status Bad(std::string_view text, std::string_view why) {
  return Status::InvalidArgument("bad server address '" + std::string(text) + "': " +
                                 std::string(why));
}

}  // namespace

std::string ServerAddress::ToString() const {
  if (kind == Kind::kUnix) return "unix:" + path;
  bool v6 = host.find(':') != std::string::npos;
  return "tcp:" + (v6 ? "[" + host + "]" : host) + ":" + std::to_string(port);
}

std::string ServerAddress::ToKjAddress() const {
  if (kind == Kind::kUnix) return "unix:" + path;
  bool v6 = host.find(':') != std::string::npos;
  return (v6 ? "[" + host + "]" : host) + ":" + std::to_string(port);
}

Result<ServerAddress> ParseServerAddress(std::string_view text) {
  ServerAddress addr;
  if (text.starts_with("unix:")) {
    addr.kind = ServerAddress::Kind::kUnix;
    addr.path = std::string(text.substr(5));
    if (addr.path.empty()) return Bad(text, "empty socket path");
    if (addr.path.size() >= 108) return Bad(text, "socket path longer than 107 bytes");
    if (addr.path.find('\0') != std::string::npos) return Bad(text, "NUL in socket path");
    return addr;
  }
  if (!text.starts_with("tcp:")) return Bad(text, "expected unix:PATH or tcp:HOST:PORT");
  std::string_view rest = text.substr(4);
  std::string_view host, port_text;
  if (rest.starts_with("[")) {
    size_t close = rest.find(']');
    if (close == std::string_view::npos) return Bad(text, "unclosed '['");
    host = rest.substr(1, close - 1);
    rest = rest.substr(close + 1);
    if (!rest.starts_with(":")) return Bad(text, "expected ':PORT' after ']'");
    port_text = rest.substr(1);
  } else {
    size_t colon = rest.rfind(':');
    if (colon == std::string_view::npos) return Bad(text, "missing ':PORT'");
    host = rest.substr(0, colon);
    if (host.find(':') != std::string_view::npos) {
      return Bad(text, "IPv6 addresses must be written in brackets");
    }
    port_text = rest.substr(colon + 1);
  }
  if (host.empty()) return Bad(text, "empty host");
  unsigned port = 0;
  auto [end, ec] = std::from_chars(port_text.data(), port_text.data() + port_text.size(), port);
  if (port_text.empty() || ec != std::errc() || end != port_text.data() + port_text.size() ||
      port > 65535) {
    return Bad(text, "port must be a number in 0..65535");
  }
  addr.kind = ServerAddress::Kind::kTcp;
  addr.host = std::string(host);
  addr.port = static_cast<uint16_t>(port);
  return addr;
}

}  // namespace tapmap::mapserver
