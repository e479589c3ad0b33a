#include "xenstore-tools/cli/nbd_command.h"

#include <chrono>

#include "xenstore-tools/cli/control_client.h"
#include "xenstore-tools/cli/json_fields.h"
#include "xenstore-tools/cli/nbd_url.h"

namespace tapmap::cli {
namespace {

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
              NbdUrlTemplate(address, JsonString(e, "tls"))});
  }
  inv.Print(t.rows() == 0 ? "no NBD export configured (tapdisk-map --nbd)\n" : t.Render());
  return Status::Ok();
}

// `tapmap nbd url VOLUME`: the URL of VOLUME on the daemon's first shared export
// (per-device listeners are skipped: they serve one volume each).
Status RunUrl(Invocation& inv) {
  auto client = ControlClient::Connect(inv.options().Get("control"));
  if (!client.ok()) return client.status();
  auto r = client->Call({{"op", "nbd-list"}}, std::chrono::milliseconds(inv.timeout_ms()));
  if (!r.ok()) return r.status();
  const std::string& volume = inv.args()[0];
  const nlohmann::json exports = r->contains("exports") ? (*r)["exports"] : nlohmann::json();
  NbdEndpoint found = FindNbdUrl(exports, volume, /*plain_only=*/false);
  if (!found.url.empty()) {
    Json doc;
    doc["url"] = found.url;
    doc["address"] = found.address;
    inv.PrintJson(doc);
    inv.Print(found.url + "\n");
    return Status::Ok();
  }
  return Status::NotFound("tapdisk-map has no NBD export (start it with --nbd, or nbd = in tapmap.conf)");
}

Status RunListen(Invocation& inv) {
  const std::string& volume = inv.options().Get("export");
  if (volume.empty()) return inv.UsageError("--export VOLUME is required");
  auto client = ControlClient::Connect(inv.options().Get("control"));
  if (!client.ok()) return client.status();
  auto r = client->Call({{"op", "nbd-listen"}, {"address", inv.args()[0]}, {"export", volume}},
                        std::chrono::milliseconds(inv.timeout_ms()));
  if (!r.ok()) return r.status();
  Json doc;
  doc["address"] = inv.args()[0];
  doc["export"] = volume;
  inv.PrintJson(doc);
  inv.Print("listening on " + inv.args()[0] + " for volume " + volume + " (also the default export)\n");
  return Status::Ok();
}

Status RunUnlisten(Invocation& inv) {
  auto client = ControlClient::Connect(inv.options().Get("control"));
  if (!client.ok()) return client.status();
  auto r = client->Call({{"op", "nbd-unlisten"}, {"address", inv.args()[0]}},
                        std::chrono::milliseconds(inv.timeout_ms()));
  if (!r.ok()) return r.status();
  Json doc;
  doc["address"] = inv.args()[0];
  inv.PrintJson(doc);
  inv.Print("no longer listening on " + inv.args()[0] + "\n");
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
  commands->push_back({"nbd",
                       "url",
                       "VOLUME",
                       "print the URL at which QEMU or qemu-img reach VOLUME (first shared NBD export)",
                       1,
                       1,
                       {},
                       kUsesControl,
                       RunUrl});
  commands->push_back({"nbd",
                       "listen",
                       "ADDRESS",
                       "serve one volume on its own NBD socket, also as the default export (unix:PATH|tcp:HOST:PORT)",
                       1,
                       1,
                       {{"export", "", "the volume this listener serves (required)"}},
                       kUsesControl,
                       RunListen});
  commands->push_back({"nbd",
                       "unlisten",
                       "ADDRESS",
                       "close a listener made by 'tapmap nbd listen' and remove its socket",
                       1,
                       1,
                       {},
                       kUsesControl,
                       RunUnlisten});
}

}  // namespace tapmap::cli
