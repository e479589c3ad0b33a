#include "xenstore-tools/cli/qos_command.h"

#include <chrono>

#include "common/units.h"
#include "xenstore-tools/cli/control_client.h"
#include "xenstore-tools/cli/json_fields.h"
#include "xenstore-tools/cli/vbd_command.h"

namespace tapmap::cli {
namespace {

// The limit flags: flag name, QosLimits key, whether the value is a size (bytes).
struct LimitFlag {
  const char* flag;
  const char* key;
  bool bytes;
  const char* help;
};
constexpr LimitFlag kLimitFlags[] = {
    {"read-iops", "read_iops", false, "reads per second (0 = no limit)"},
    {"write-iops", "write_iops", false, "writes per second (0 = no limit)"},
    {"iops", "iops", false, "requests per second, reads and writes together"},
    {"read-bps", "read_bps", true, "bytes read per second, e.g. 50M"},
    {"write-bps", "write_bps", true, "bytes written per second, e.g. 20M"},
    {"bps", "bps", true, "bytes per second, reads and writes together"},
    {"read-iops-burst", "read_iops_burst", false, "read ops bucket (default: one second's worth)"},
    {"write-iops-burst", "write_iops_burst", false, "write ops bucket"},
    {"iops-burst", "iops_burst", false, "total ops bucket"},
    {"read-bps-burst", "read_bps_burst", true, "read bytes bucket, e.g. 64M"},
    {"write-bps-burst", "write_bps_burst", true, "write bytes bucket"},
    {"bps-burst", "bps_burst", true, "total bytes bucket"},
};

std::vector<OptionSpec> QosFlags(bool vbd) {
  std::vector<OptionSpec> flags;
  for (const LimitFlag& f : kLimitFlags) flags.push_back({f.flag, "", f.help});
  flags.push_back({"reset", "false", "start from no limits (then apply the flags given)", true});
  if (vbd) flags.push_back(LayoutFlag());
  return flags;
}

Result<nlohmann::json> ControlCall(Invocation& inv, const nlohmann::json& request) {
  auto client = ControlClient::Connect(inv.options().Get("control"));
  if (!client.ok()) return client.status();
  return client->Call(request, std::chrono::milliseconds(inv.timeout_ms()));
}

// The volume-qos request for `volume` from the flags; a usage error for a bad value.
Result<nlohmann::json> QosRequest(Invocation& inv, const std::string& volume) {
  nlohmann::json request{{"op", "volume-qos"}, {"volume", volume}};
  nlohmann::json limits = nlohmann::json::object();
  for (const LimitFlag& f : kLimitFlags) {
    if (!inv.options().Has(f.flag) || inv.options().Get(f.flag).empty()) continue;
    auto value = f.bytes ? inv.options().GetSize(f.flag) : inv.options().GetUint(f.flag);
    if (!value.ok()) {
      return inv.UsageError(std::string("--") + f.flag + " must be a whole number" +
                            (f.bytes ? " of bytes (e.g. 20M)" : "") + ", not '" +
                            inv.options().Get(f.flag) + "'");
    }
    limits[f.key] = *value;
  }
  if (inv.options().GetBool("reset")) request["reset"] = true;
  if (!limits.empty()) request["limits"] = limits;
  return request;
}

std::string Describe(const nlohmann::json& limits) {
  std::string text;
  for (const LimitFlag& f : kLimitFlags) {
    uint64_t v = JsonUint(limits, f.key);
    if (v == 0) continue;
    if (!text.empty()) text += ", ";
    text += std::string(f.key) + "=" + (f.bytes ? FormatSize(v) : std::to_string(v));
  }
  return text.empty() ? "unlimited" : text;
}

// Sends `request`, prints the answer; `extra` goes into the JSON document.
Status Apply(Invocation& inv, const nlohmann::json& request, Json extra) {
  auto r = ControlCall(inv, request);
  if (!r.ok()) return r.status().WithContext("qos of " + request["volume"].get<std::string>());
  nlohmann::json limits = r->contains("limits") ? (*r)["limits"] : nlohmann::json::object();
  Json doc = std::move(extra);
  doc["volume"] = JsonString(*r, "volume", request["volume"].get<std::string>());
  doc["limits"] = Json::parse(limits.dump());
  inv.PrintJson(doc);
  inv.Print("volume " + doc["volume"].get<std::string>() + ": " + Describe(limits) + "\n");
  return Status::Ok();
}

Status RunVolumeQos(Invocation& inv) {
  const std::string& volume = inv.args().at(0);
  if (volume.empty()) return inv.UsageError("the volume name is empty");
  auto request = QosRequest(inv, volume);
  if (!request.ok()) return request.status();
  return Apply(inv, *request, Json::object());
}

Status RunVbdQos(Invocation& inv) {
  auto disk = DiskArgument(inv, 0);
  if (!disk.ok()) return disk.status();
  auto request = QosRequest(inv, "");  // flags checked before any call
  if (!request.ok()) return request.status();
  auto list = ControlCall(inv, {{"op", "vbd-list"}});
  if (!list.ok()) return list.status().WithContext("qos of " + disk->ToString());
  std::string volume;
  if (list->contains("vbds") && (*list)["vbds"].is_array()) {
    for (const auto& v : (*list)["vbds"]) {
      if (JsonUint(v, "domid") == disk->domid && JsonUint(v, "devid") == disk->devid &&
          JsonString(v, "layout", "vbd") == disk->layout) {
        volume = JsonString(v, "volume");
      }
    }
  }
  if (volume.empty())
    return Status::NotFound("no disk " + disk->ToString() + " (" + disk->layout +
                            ") is attached here");
  (*request)["volume"] = volume;
  Json extra = Json::object();
  extra["domid"] = disk->domid;
  extra["devid"] = disk->devid;
  return Apply(inv, *request, std::move(extra));
}

}  // namespace

OptionSpec QosAttachFlag() {
  return {
      "qos", "",
      "I/O limits of the volume, set before it is served: KEY=N,... (e.g. write_bps=20M,iops=500; "
      "keys as tapmap volume qos's flags with _ for -)"};
}

Result<nlohmann::json> ParseQosAttachFlag(Invocation& inv) {
  nlohmann::json limits = nlohmann::json::object();
  const std::string& text = inv.options().Get("qos");
  size_t pos = 0;
  while (pos <= text.size()) {
    size_t comma = text.find(',', pos);
    std::string item =
        text.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
    pos = comma == std::string::npos ? text.size() + 1 : comma + 1;
    if (item.empty()) continue;
    size_t eq = item.find('=');
    if (eq == std::string::npos || eq == 0)
      return inv.UsageError("--qos: '" + item + "' is not KEY=N");
    std::string key = item.substr(0, eq);
    auto value = key.find("bps") != std::string::npos ? ParseSize(item.substr(eq + 1))
                                                      : [&]() -> Result<uint64_t> {
      const std::string v = item.substr(eq + 1);
      if (v.empty() || v.size() > 19 || v.find_first_not_of("0123456789") != std::string::npos) {
        return Status::InvalidArgument("not a whole number");
      }
      return std::stoull(v);
    }();
    if (!value.ok())
      return inv.UsageError("--qos: " + key + " must be a whole number, not '" +
                            item.substr(eq + 1) + "'");
    limits[key] = *value;
  }
  return limits;
}

Status SetVolumeQos(Invocation& inv, const std::string& volume, const nlohmann::json& limits) {
  auto r = ControlCall(
      inv, {{"op", "volume-qos"}, {"volume", volume}, {"reset", true}, {"limits", limits}});
  if (!r.ok()) return r.status().WithContext("qos of " + volume);
  return Status::Ok();
}

void AddQosCommands(std::vector<CommandSpec>* commands) {
  commands->push_back(
      {"volume", "qos", "NAME",
       "show or set a volume's I/O limits on this host's tapdisk-map (IOPS, bytes/s, bursts)", 1, 1,
       QosFlags(false), kUsesControl, RunVolumeQos});
  commands->push_back({"vbd", "qos", "DOMID/DEVID",
                       "show or set the I/O limits of a guest disk's volume (as volume qos)", 1, 1,
                       QosFlags(true), kUsesControl, RunVbdQos});
}

}  // namespace tapmap::cli
