#include "xenstore-tools/cli/vbd_command.h"

#include <chrono>

#include "common/units.h"
#include "xenstore-tools/cli/control_client.h"
#include "xenstore-tools/cli/json_fields.h"
#include "xenstore-tools/cli/progress.h"
#include "xenstore-tools/cli/qos_command.h"

namespace tapmap::cli {
namespace {

Json ToOrdered(const nlohmann::json& j) { return Json::parse(j.dump()); }

// Connects to the control socket named by --control and makes one call.
Result<nlohmann::json> ControlCall(Invocation& inv, const nlohmann::json& request) {
  auto client = ControlClient::Connect(inv.options().Get("control"));
  if (!client.ok()) return client.status();
  return client->Call(request, std::chrono::milliseconds(inv.timeout_ms()));
}

std::string DiskName(const nlohmann::json& vbd) {
  return std::to_string(JsonUint(vbd, "domid")) + "/" + std::to_string(JsonUint(vbd, "devid"));
}

Status RunList(Invocation& inv) {
  auto r = ControlCall(inv, {{"op", "vbd-list"}});
  if (!r.ok()) return r.status();
  nlohmann::json vbds =
      r->contains("vbds") && (*r)["vbds"].is_array() ? (*r)["vbds"] : nlohmann::json::array();
  Json doc;
  doc["vbds"] = ToOrdered(vbds);
  inv.PrintJson(doc);
  Table table({{"DISK"},
               {"LAYOUT"},
               {"VOLUME"},
               {"MODE"},
               {"STATE"},
               {"PAUSED"},
               {"RINGS", true},
               {"PROTOCOL"}});
  for (const auto& v : vbds) {
    table.AddRow({DiskName(v), JsonString(v, "layout", "vbd"), JsonString(v, "volume"),
                  JsonString(v, "mode") + (JsonBool(v, "standby") ? " (standby)" : ""), JsonString(v, "state"),
                  YesNo(JsonBool(v, "paused")),
                  std::to_string(JsonUint(v, "rings")), JsonString(v, "protocol")});
  }
  inv.Print(table.rows() == 0 ? "no disks attached\n" : table.Render());
  return Status::Ok();
}

Status RunAttach(Invocation& inv) {
  auto disk = DiskArgument(inv, 0);
  if (!disk.ok()) return disk.status();
  const std::string& volume = inv.options().Get("volume");
  if (volume.empty()) return inv.UsageError("--volume is required");
  const std::string& mode_text = inv.options().Get("mode");
  std::string mode;
  if (mode_text == "r" || mode_text == "ro") {
    mode = "r";
  } else if (mode_text == "w" || mode_text == "rw") {
    mode = "w";
  } else {
    return inv.UsageError("--mode must be r or w, not '" + mode_text + "'");
  }
  Result<nlohmann::json> qos = nlohmann::json::object();
  if (inv.options().Has("qos")) {
    qos = ParseQosAttachFlag(inv);
    if (!qos.ok()) return qos.status();
  }
  nlohmann::json request = DiskRequest("vbd-attach", *disk);
  request["volume"] = volume;
  request["mode"] = mode;
  // The limits are the volume's (its NBD exports share them), in force from its first request.
  if (!qos->empty()) {
    if (Status s = SetVolumeQos(inv, volume, *qos); !s.ok()) return s.WithContext("attach " + disk->ToString());
  }
  Result<nlohmann::json> r = Status::Internal("unset");
  {
    Progress progress("attaching " + disk->ToString() + " (volume " + volume + ")", !inv.json(),
                      inv.err());
    r = ControlCall(inv, request);
  }
  if (!r.ok()) return r.status().WithContext("attach " + disk->ToString());
  nlohmann::json vbd = r->contains("vbd") ? (*r)["vbd"] : nlohmann::json::object();
  Json doc;
  doc["vbd"] = ToOrdered(vbd);
  inv.PrintJson(doc);
  inv.Print("attached " + disk->ToString() + ": volume " + JsonString(vbd, "volume", volume) +
            " (" + (mode == "w" ? "read-write" : "read-only") + "), backend " +
            JsonString(vbd, "state", "?") + "\n");
  return Status::Ok();
}

// detach, pause and resume: same shape, different op.
Status RunSimple(Invocation& inv, const char* op, const char* action, const char* doing,
                 const char* done) {
  auto disk = DiskArgument(inv, 0);
  if (!disk.ok()) return disk.status();
  Result<nlohmann::json> r = Status::Internal("unset");
  {
    Progress progress(std::string(doing) + " " + disk->ToString(), !inv.json(), inv.err());
    r = ControlCall(inv, DiskRequest(op, *disk));
  }
  if (!r.ok()) return r.status().WithContext(std::string(action) + " " + disk->ToString());
  Json doc;
  doc["domid"] = disk->domid;
  doc["devid"] = disk->devid;
  doc["layout"] = disk->layout;
  doc["action"] = action;
  inv.PrintJson(doc);
  inv.Print(std::string(done) + " " + disk->ToString() + "\n");
  return Status::Ok();
}

}  // namespace

OptionSpec LayoutFlag() {
  return {"layout", "vbd",
          "xenstore backend layout: vbd (Xen 4.17, backendtype=phy) or vbd3 (Xen 4.19+, "
          "backendtype=tap)"};
}

Result<VbdAddress> DiskArgument(Invocation& inv, size_t index) {
  auto disk = ParseVbdAddress(inv.args().at(index));
  if (!disk.ok()) return inv.UsageError(disk.status().message());
  const std::string& layout = inv.options().Get("layout");
  if (layout != "vbd" && layout != "vbd3")
    return inv.UsageError("--layout must be vbd or vbd3, not '" + layout + "'");
  disk->layout = layout;
  return disk;
}

nlohmann::json DiskRequest(const char* op, const VbdAddress& disk) {
  return {{"op", op}, {"domid", disk.domid}, {"devid", disk.devid}, {"layout", disk.layout}};
}

void AddVbdCommands(std::vector<CommandSpec>* commands) {
  commands->push_back({"vbd",
                       "list",
                       "",
                       "list the guest disks tapdisk-map serves",
                       0,
                       0,
                       {},
                       kUsesControl,
                       RunList});
  commands->push_back({"vbd",
                       "attach",
                       "DOMID/DEVID",
                       "serve a volume as a guest disk; waits until the volume is open",
                       1,
                       1,
                       {{"volume", "", "volume to serve (required)"},
                        {"mode", "w", "r (read-only) or w (read-write)"},
                        LayoutFlag(),
                        QosAttachFlag()},
                       kUsesControl,
                       RunAttach});
  commands->push_back({"vbd",
                       "detach",
                       "DOMID/DEVID",
                       "stop serving a guest disk; waits until the volume is closed",
                       1,
                       1,
                       {LayoutFlag()},
                       kUsesControl,
                       [](Invocation& inv) {
                         return RunSimple(inv, "vbd-detach", "detach", "detaching", "detached");
                       }});
  commands->push_back(
      {"vbd",
       "pause",
       "DOMID/DEVID",
       "quiesce a guest disk (no request in flight, data flushed)",
       1,
       1,
       {LayoutFlag()},
       kUsesControl,
       [](Invocation& inv) { return RunSimple(inv, "vbd-pause", "pause", "pausing", "paused"); }});
  commands->push_back({"vbd",
                       "resume",
                       "DOMID/DEVID",
                       "resume a paused guest disk",
                       1,
                       1,
                       {LayoutFlag()},
                       kUsesControl,
                       [](Invocation& inv) {
                         return RunSimple(inv, "vbd-resume", "resume", "resuming", "resumed");
                       }});
}

}  // namespace tapmap::cli
