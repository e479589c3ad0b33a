#include "common/listen_address.h"

#include <charconv>

namespace tapmap {

std::string ListenAddress::ToString() const {
  if (kind == Kind::kUnix) return "unix:" + path;
  if (host.find(':') != std::string::npos) return "tcp:[" + host + "]:" + std::to_string(port);
  return "tcp:" + host + ":" + std::to_string(port);
}

std::string ListenAddress::ToKjAddress() const {
  if (kind == Kind::kUnix) return "unix:" + path;
  if (host.find(':') != std::string::npos) return "[" + host + "]:" + std::to_string(port);
  return host + ":" + std::to_string(port);
}

Result<ListenAddress> ParseListenAddress(std::string_view text, bool allow_port_zero) {
  auto bad = [&](std::string_view why) {
    return Status::InvalidArgument("bad address '" + std::string(text) + "': " + std::string(why) +
                                   " (expected unix:PATH or tcp:HOST:PORT)");
  };
  ListenAddress address;
  if (text.starts_with("unix:")) {
    address.kind = ListenAddress::Kind::kUnix;
    address.path = std::string(text.substr(5));
    if (address.path.empty()) return bad("empty path");
    if (address.path.size() >= 108) return bad("path too long for a unix socket");
    if (address.path.find('\0') != std::string::npos) return bad("NUL in path");
    return address;
  }
  if (!text.starts_with("tcp:")) return bad("unknown scheme");
  std::string_view rest = text.substr(4);
  std::string_view host, port_text;
  if (rest.starts_with("[")) {
    size_t close = rest.find(']');
    if (close == std::string_view::npos) return bad("unclosed '['");
    host = rest.substr(1, close - 1);
    rest = rest.substr(close + 1);
    if (!rest.starts_with(":")) return bad("expected ':PORT' after ']'");
    port_text = rest.substr(1);
  } else {
    size_t colon = rest.rfind(':');
    if (colon == std::string_view::npos) return bad("missing port");
    host = rest.substr(0, colon);
    if (host.find(':') != std::string_view::npos) return bad("IPv6 hosts must be in brackets");
    port_text = rest.substr(colon + 1);
  }
  if (host.empty()) return bad("empty host");
  unsigned port = 0;
  auto [end, ec] = std::from_chars(port_text.data(), port_text.data() + port_text.size(), port);
  if (port_text.empty() || ec != std::errc() || end != port_text.data() + port_text.size() ||
      port > 65535 || (port == 0 && !allow_port_zero)) {
    return bad(allow_port_zero ? "port must be 0..65535" : "port must be 1..65535");
  }
  address.kind = ListenAddress::Kind::kTcp;
  address.host = std::string(host);
  address.port = static_cast<uint16_t>(port);
  return address;
}

Result<std::vector<ListenAddress>> ParseListenAddressList(std::string_view text) {
  std::vector<ListenAddress> out;
  size_t start = 0;
  while (true) {
    size_t comma = text.find(',', start);
    std::string_view item = text.substr(start, comma == std::string_view::npos ? text.npos : comma - start);
    Result<ListenAddress> address = ParseListenAddress(item);
    if (!address.ok()) return address.status();
    out.push_back(std::move(*address));
    if (comma == std::string_view::npos) break;
    start = comma + 1;
  }
  return out;
}

}  // namespace tapmap
