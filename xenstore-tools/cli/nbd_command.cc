#include "xenstore-tools/cli/nbd_command.h"

#include <chrono>

#include "xenstore-tools/cli/control_client.h"
#include "xenstore-tools/cli/json_fields.h"

namespace tapmap::cli {
namespace {

// The URL template a qemu tool takes for `address` ("" if the form is unknown).
std::string UrlFor(const std::string& address) {
  if (address.rfind("unix:", 0) == 0) return "nbd+unix:///VOLUME?socket=" + address.substr(5);
  if (address.rfind("tcp:", 0) == 0) return "nbd://" + address.substr(4) + "/VOLUME";
  return "";
}

Status RunList(Invocation& inv) {
  auto client = ControlClient::Connect(inv.options().Get("control"));
  if (!client.ok()) return client.status();
  auto r = client->Call({{"op", "nbd-list"}}, std::chrono::milliseconds(inv.timeout_ms()));
  if (!r.ok()) return r.status();
  nlohmann::json exports = r->contains("exports") && (*r)["exports"].is_array()
                               ? (*r)["exports"]
                               : nlohmann::json::array();
  Json doc;
  doc["exports"] = Json::parse(exports.dump());
  inv.PrintJson(doc);
  Table t({{"ADDRESS"}, {"CONNECTIONS", true}, {"VOLUMES OPEN"}, {"URL"}});
  for (const auto& e : exports) {
    std::string open;
    if (e.contains("volumes_open") && e["volumes_open"].is_array()) {
      for (const auto& v : e["volumes_open"]) {
        if (!v.is_string()) continue;
        open += (open.empty() ? "" : ",") + v.get<std::string>();
      }
    }
    std::string address = JsonString(e, "address");
    t.AddRow({address, std::to_string(JsonUint(e, "connections")), open.empty() ? "-" : open,
              UrlFor(address)});
  }
  inv.Print(t.rows() == 0 ? "no NBD export configured (tapdisk-map --nbd)\n" : t.Render());
  return Status::Ok();
}

}  // namespace

void AddNbdCommands(std::vector<CommandSpec>* commands) {
  commands->push_back({"nbd",
                       "list",
                       "",
                       "list tapdisk-map's NBD exports and the URL to reach a volume",
                       0,
                       0,
                       {},
                       kUsesControl,
                       RunList});
}

}  // namespace tapmap::cli
