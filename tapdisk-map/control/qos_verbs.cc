// The QoS verb of the control socket (PROTOCOL.md): `volume-qos` reads or changes one
// volume's I/O limits through ControlHandlers::volume_qos (the engine's SetQos), or
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

constexpr Verb kQosVerbs[] = {
    {"volume-qos",
     "volume, optional limits (QosLimits keys to change), optional reset (true: all zero first)",
     R"({"volume": "<name>", "limits": QosLimits}: the limits now in force)", &VolumeQos},
};

}  // namespace

std::span<const Verb> QosVerbs() { return kQosVerbs; }

}  // namespace tapmap::control
