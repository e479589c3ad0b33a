#include "protocol/pool_location.h"

#include <charconv>

namespace tapmap::protocol {
namespace {

bool ValidName(std::string_view name) {
  if (name.empty()) return false;
  for (char c : name) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
              c == '_' || c == '-';
    if (!ok) return false;
  }
  return true;
}

Status Bad(std::string_view text, const std::string& why) {
  return Status::InvalidArgument("pool location '" + std::string(text) + "': " + why +
                                 " (expected PATH or rados:CEPHPOOL/PREFIX[?conf=FILE&id=NAME&timeout=SECONDS])");
}

}  // namespace

Result<PoolLocation> ParsePoolLocation(std::string_view text) {
  if (text.empty()) return Status::InvalidArgument("empty pool location");
  PoolLocation location;
  if (text.substr(0, kRadosScheme.size()) != kRadosScheme) {
    location.path = std::string(text);
    return location;
  }
  location.kind = PoolLocation::Kind::kRados;
  location.rados.timeout_seconds = kDefaultRadosTimeoutSeconds;
  std::string_view rest = text.substr(kRadosScheme.size());
  std::string_view query;
  if (size_t q = rest.find('?'); q != std::string_view::npos) {
    query = rest.substr(q + 1);
    rest = rest.substr(0, q);
  }
  size_t slash = rest.find('/');
  if (slash == std::string_view::npos) return Bad(text, "no '/' between the Ceph pool and the object prefix");
  std::string_view pool = rest.substr(0, slash), prefix = rest.substr(slash + 1);
  if (!ValidName(pool)) return Bad(text, "bad Ceph pool name '" + std::string(pool) + "'");
  if (!ValidName(prefix) || prefix.front() == '.') {
    return Bad(text, "bad object prefix '" + std::string(prefix) + "'");
  }
  location.rados.pool = std::string(pool);
  location.prefix = std::string(prefix);

  bool seen_conf = false, seen_id = false, seen_timeout = false;
  while (!query.empty()) {
    size_t amp = query.find('&');
    std::string_view item = query.substr(0, amp);
    query = amp == std::string_view::npos ? std::string_view() : query.substr(amp + 1);
    size_t eq = item.find('=');
    if (eq == std::string_view::npos || eq == 0 || eq + 1 == item.size()) {
      return Bad(text, "option '" + std::string(item) + "' is not NAME=VALUE");
    }
    std::string_view name = item.substr(0, eq), value = item.substr(eq + 1);
    bool* seen = name == "conf" ? &seen_conf : name == "id" ? &seen_id : name == "timeout" ? &seen_timeout : nullptr;
    if (seen == nullptr) return Bad(text, "unknown option '" + std::string(name) + "'");
    if (*seen) return Bad(text, "option '" + std::string(name) + "' given twice");
    *seen = true;
    if (name == "conf") {
      location.rados.conf = std::string(value);
    } else if (name == "id") {
      if (!ValidName(value)) return Bad(text, "bad client name '" + std::string(value) + "'");
      location.rados.client_id = std::string(value);
    } else {
      unsigned seconds = 0;
      auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), seconds);
      if (ec != std::errc() || end != value.data() + value.size() || seconds < 1 || seconds > 3600) {
        return Bad(text, "timeout must be 1..3600 seconds, not '" + std::string(value) + "'");
      }
      location.rados.timeout_seconds = seconds;
    }
  }
  return location;
}

}  // namespace tapmap::protocol
