// The volume verbs of the control socket (PROTOCOL.md): `volume-qos` reads or changes
// one volume's I/O limits through ControlHandlers::volume_qos (the engine's SetQos);
// `volume-flatten`, `-status`, `-cancel` run a flatten job (engine/flattener.h). Each
// answers not-supported in a daemon without an engine.
#include "tapdisk-map/control/verb_table.h"

namespace tapmap::control {

namespace {

using json = nlohmann::json;

void VolumeQos(const VerbCall& call, JsonReply reply) {
  if (!call.handlers.volume_qos) {
    reply(Status::NotSupported("volume-qos: this tapdisk-map has no engine"));
    return;
  }
  if (!call.request.contains("volume") || !call.request["volume"].is_string() ||
      call.request["volume"].get<std::string>().empty()) {
    reply(Status::InvalidArgument("volume-qos: \"volume\" (a volume name) is required"));
    return;
  }
  const json* limits = nullptr;
  if (call.request.contains("limits")) {
    if (!call.request["limits"].is_object()) {
      reply(Status::InvalidArgument("volume-qos: \"limits\" must be an object of QosLimits keys"));
      return;
    }
    limits = &call.request["limits"];
  }
  bool reset = call.request.value("reset", false);
  reply(call.handlers.volume_qos(call.request["volume"].get<std::string>(), limits, reset));
}

// "volume" argument of the volume-* verbs, or an error reply (false).
bool VolumeArgument(const VerbCall& call, const JsonReply& reply, std::string* volume) {
  if (!call.request.contains("volume") || !call.request["volume"].is_string() ||
      call.request["volume"].get<std::string>().empty()) {
    reply(Status::InvalidArgument(std::string(call.op) + ": \"volume\" (a volume name) is required"));
    return false;
  }
  *volume = call.request["volume"].get<std::string>();
  return true;
}

void VolumeFlatten(const VerbCall& call, JsonReply reply) {
  if (!call.handlers.volume_flatten) {
    reply(Status::NotSupported("volume-flatten: this tapdisk-map has no engine"));
    return;
  }
  std::string volume;
  if (!VolumeArgument(call, reply, &volume)) return;
  uint64_t rate = 64ull << 20;
  if (call.request.contains("rate")) {
    if (!call.request["rate"].is_number_unsigned()) {
      reply(Status::InvalidArgument("volume-flatten: \"rate\" must be a whole number of bytes per second"));
      return;
    }
    rate = call.request["rate"].get<uint64_t>();
  }
  call.handlers.volume_flatten(volume, rate, std::move(reply));
}

void VolumeFlattenStatus(const VerbCall& call, JsonReply reply) {
  if (!call.handlers.volume_flatten_status) {
    reply(Status::NotSupported("volume-flatten-status: this tapdisk-map has no engine"));
    return;
  }
  std::string volume;
  if (!VolumeArgument(call, reply, &volume)) return;
  reply(call.handlers.volume_flatten_status(volume));
}

void VolumeFlattenCancel(const VerbCall& call, JsonReply reply) {
  if (!call.handlers.volume_flatten_cancel) {
    reply(Status::NotSupported("volume-flatten-cancel: this tapdisk-map has no engine"));
    return;
  }
  std::string volume;
  if (!VolumeArgument(call, reply, &volume)) return;
  reply(call.handlers.volume_flatten_cancel(volume));
}

constexpr Verb kVolumeVerbs[] = {
    {"volume-qos",
     "volume, optional limits (QosLimits keys to change), optional reset (true: all zero first)",
     R"({"volume": "<name>", "limits": QosLimits}: the limits now in force)", &VolumeQos},
    {"volume-flatten", "volume, optional rate (bytes/s, default 64 MiB/s, 0 = unbounded)",
     R"({"flatten": FlattenStatus} once the job started (or of the job already running))", &VolumeFlatten},
    {"volume-flatten-status", "volume", R"({"flatten": FlattenStatus}: the running or last job)",
     &VolumeFlattenStatus},
    {"volume-flatten-cancel", "volume", R"({"flatten": FlattenStatus}: the job, asked to stop)",
     &VolumeFlattenCancel},
};

}  // namespace

std::span<const Verb> VolumeVerbs() { return kVolumeVerbs; }

}  // namespace tapmap::control
