#include "xenstore-tools/cli/nbd_url.h"

#include <fnmatch.h>

#include "xenstore-tools/cli/control_client.h"
#include "xenstore-tools/cli/json_fields.h"

namespace tapmap::cli {
namespace {

// Whether listener entry `e` of nbd-list offers `export_name` (its export allow-list,
// if any: fnmatch patterns, as tapdisk-map/nbd/export_allow_list.h; VOLUME@ro is
// offered when a pattern matches it or VOLUME).
bool Offers(const nlohmann::json& e, const std::string& export_name) {
  if (!e.contains("allowed_exports") || !e["allowed_exports"].is_array()) return true;
  std::string volume = export_name;
  const std::string ro = "@ro";
  if (volume.size() > ro.size() && volume.compare(volume.size() - ro.size(), ro.size(), ro) == 0) {
    volume.resize(volume.size() - ro.size());
  }
  for (const auto& pattern : e["allowed_exports"]) {
    if (!pattern.is_string()) continue;
    const std::string p = pattern.get<std::string>();
    if (::fnmatch(p.c_str(), export_name.c_str(), 0) == 0 || ::fnmatch(p.c_str(), volume.c_str(), 0) == 0) {
      return true;
    }
  }
  return false;
}

}  // namespace

std::string NbdUrlTemplate(const std::string& address, const std::string& tls) {
  if (address.rfind("unix:", 0) == 0) return "nbd+unix:///VOLUME?socket=" + address.substr(5);
  if (address.rfind("tcp:", 0) == 0) {
    return (tls == "required" ? "nbds://" : "nbd://") + address.substr(4) + "/VOLUME";
  }
  return "";
}

NbdEndpoint FindNbdUrl(const nlohmann::json& exports, const std::string& export_name,
                       bool plain_only) {
  if (!exports.is_array()) return {};
  for (const auto& e : exports) {
    if (e.contains("export") || !Offers(e, export_name)) continue;
    std::string tls = JsonString(e, "tls", "off");
    if (plain_only && tls == "required") continue;
    std::string address = JsonString(e, "address");
    std::string url = NbdUrlTemplate(address, tls);
    if (url.empty()) continue;
    url.replace(url.find("VOLUME"), 6, export_name);
    return {url, address};
  }
  return {};
}

Result<std::string> LocalNbdUrl(const std::string& control_path, const std::string& export_name,
                                std::chrono::milliseconds timeout) {
  auto client = ControlClient::Connect(control_path);
  if (!client.ok()) return client.status();
  auto r = client->Call({{"op", "nbd-list"}}, timeout);
  if (!r.ok()) return r.status().WithContext("nbd-list");
  std::string url = FindNbdUrl(r->contains("exports") ? (*r)["exports"] : nlohmann::json(),
                               export_name, /*plain_only=*/true).url;
  if (url.empty()) {
    return Status::NotFound("tapdisk-map (" + control_path + ") has no NBD listener without TLS offering " +
                            export_name + " (start it with --nbd unix:PATH, or nbd = in tapmap.conf)");
  }
  return url;
}

}  // namespace tapmap::cli
