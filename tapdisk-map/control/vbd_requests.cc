#include "tapdisk-map/control/vbd_requests.h"

namespace tapmap::control {

using json = nlohmann::json;

namespace {

Result<uint64_t> UintField(const json& request, const char* name, uint64_t max) {
  auto it = request.find(name);
  if (it == request.end() || !it->is_number_unsigned() || it->get<uint64_t>() > max) {
    return Status::InvalidArgument(std::string("\"") + name + "\" must be an integer 0.." + std::to_string(max));
  }
  return it->get<uint64_t>();
}

}  // namespace

Result<blkif::VbdKey> ParseVbdKey(const json& request) {
  blkif::VbdKey key;
  auto domid = UintField(request, "domid", 0x7fef);  // DOMID_FIRST_RESERVED - 1
  if (!domid.ok()) return domid.status();
  auto devid = UintField(request, "devid", UINT32_MAX);
  if (!devid.ok()) return devid.status();
  key.domid = static_cast<xen::DomainId>(*domid);
  key.devid = static_cast<uint32_t>(*devid);
  auto layout = request.find("layout");
  if (layout != request.end()) {
    if (!layout->is_string()) return Status::InvalidArgument("\"layout\" must be \"vbd\" or \"vbd3\"");
    auto parsed = blkif::ParseLayout(layout->get<std::string>());
    if (!parsed.ok()) return parsed.status();
    key.layout = *parsed;
  }
  return key;
}

std::string BlkifHostToPrometheus(const blkif::HostStatus& host) {
  std::string out;
  auto metric = [&out](const char* name, const char* type, const char* help, uint64_t value) {
    out += std::string("# HELP tapmap_blkif_") + name + " " + help + "\n# TYPE tapmap_blkif_" + name + " " + type +
           "\ntapmap_blkif_" + name + " " + std::to_string(value) + "\n";
  };
  metric("inflight_bytes", "gauge", "request data held for all guest disks", host.inflight.in_flight);
  metric("inflight_bytes_peak", "gauge", "the most request data held at once", host.inflight.peak);
  metric("inflight_bytes_limit", "gauge", "--blkif-inflight-per-host", host.inflight.limit);
  metric("budget_waits", "counter", "times a ring stopped taking requests for want of in-flight bytes",
         host.inflight.waits);
  metric("persistent_grants", "gauge", "guest grants kept mapped", host.persistent_grants.used);
  metric("persistent_grants_peak", "gauge", "the most guest grants kept mapped at once", host.persistent_grants.peak);
  metric("persistent_grants_limit", "gauge", "--blkif-persistent-grants-per-host", host.persistent_grants.limit);
  metric("persistent_grants_refused", "counter", "segments grant-copied for want of a persistent grant slot",
         host.persistent_grants.refused);
  return out;
}

json VbdToJson(const blkif::VbdInfo& info) {
  json queues = json::array();
  for (const blkif::QueueStatus& q : info.queues) {
    queues.push_back(json{{"requests", q.requests},
                          {"rejected", q.rejected},
                          {"notifications", q.notifications},
                          {"wakeups", q.wakeups},
                          {"budget_waits", q.budget_waits},
                          {"spurious_events", q.spurious},
                          {"event_storms", q.storms},
                          {"damped_events", q.damped},
                          {"in_flight", q.in_flight},
                          {"req_prod", q.req_prod},
                          {"req_cons", q.req_cons},
                          {"req_event", q.req_event},
                          {"rsp_prod", q.rsp_prod},
                          {"rsp_prod_pvt", q.rsp_prod_pvt},
                          {"rsp_event", q.rsp_event}});
  }
  return json{{"domid", info.key.domid},
              {"devid", info.key.devid},
              {"layout", blkif::LayoutName(info.key.layout)},
              {"volume", info.volume},
              {"mode", info.read_only ? "r" : "w"},
              {"backend_path", info.backend_path},
              {"state", info.state},
              {"paused", info.paused},
              {"standby", info.standby},
              {"rings", info.rings},
              {"protocol", info.protocol},
              {"inflight_bytes", info.inflight_bytes},
              {"inflight_bytes_peak", info.inflight_bytes_peak},
              {"inflight_bytes_limit", info.inflight_bytes_limit},
              {"budget_waits", info.budget_waits},
              {"queues", std::move(queues)}};
}

namespace {

// vbd-attach: the key, then volume, mode and sector_size.
void Attach(blkif::BackendManager& manager, const json& request, JsonReply reply) {
  Result<blkif::VbdKey> key = ParseVbdKey(request);
  if (!key.ok()) {
    reply(key.status());
    return;
  }
  blkif::AttachSpec spec;
  spec.key = *key;
  auto volume = request.find("volume");
  if (volume == request.end() || !volume->is_string() || volume->get<std::string>().empty()) {
    reply(Status::InvalidArgument("\"volume\" must be a non-empty string"));
    return;
  }
  spec.volume = volume->get<std::string>();
  std::string mode = request.value("mode", std::string("w"));
  if (mode != "r" && mode != "w") {
    reply(Status::InvalidArgument("\"mode\" must be \"r\" or \"w\""));
    return;
  }
  spec.read_only = mode == "r";
  if (request.contains("sector_size")) {
    auto sector = UintField(request, "sector_size", 4096);
    if (!sector.ok() || (*sector != 512 && *sector != 4096)) {
      reply(Status::InvalidArgument("\"sector_size\" must be 512 or 4096"));
      return;
    }
    spec.sector_size = static_cast<uint32_t>(*sector);
  }
  manager.Attach(spec, [reply](Result<blkif::VbdInfo> info) {
    if (info.ok()) {
      reply(json{{"vbd", VbdToJson(*info)}});
    } else {
      reply(info.status());
    }
  });
}

// vbd-detach / vbd-pause / vbd-resume: `method` on the request's key, answering {} or
// the error.
using KeyedMethod = void (blkif::BackendManager::*)(blkif::VbdKey, std::function<void(Status)>);

VbdHook KeyedHook(blkif::BackendManager& manager, KeyedMethod method) {
  return [&manager, method](const json& request, JsonReply reply) {
    Result<blkif::VbdKey> key = ParseVbdKey(request);
    if (!key.ok()) {
      reply(key.status());
      return;
    }
    (manager.*method)(*key, [reply](Status s) {
      if (s.ok()) {
        reply(json::object());
      } else {
        reply(s);
      }
    });
  };
}

}  // namespace

VbdHandlers MakeVbdHandlers(blkif::BackendManager& manager) {
  VbdHandlers hooks;
  hooks.list = [&manager](const json&, JsonReply reply) {
    manager.List([reply, &manager](std::vector<blkif::VbdInfo> vbds) {
      json list = json::array();
      for (const auto& vbd : vbds) list.push_back(VbdToJson(vbd));
      blkif::HostStatus host = manager.Host();
      reply(json{{"vbds", list},
                 {"host", json{{"inflight_bytes", host.inflight.in_flight},
                               {"inflight_bytes_peak", host.inflight.peak},
                               {"inflight_bytes_limit", host.inflight.limit},
                               {"budget_waits", host.inflight.waits},
                               {"persistent_grants", host.persistent_grants.used},
                               {"persistent_grants_peak", host.persistent_grants.peak},
                               {"persistent_grants_limit", host.persistent_grants.limit},
                               {"persistent_grants_refused", host.persistent_grants.refused}}}});
    });
  };
  hooks.attach = [&manager](const json& request, JsonReply reply) { Attach(manager, request, std::move(reply)); };
  hooks.detach = KeyedHook(manager, &blkif::BackendManager::Detach);
  hooks.pause = KeyedHook(manager, &blkif::BackendManager::Pause);
  hooks.resume = KeyedHook(manager, &blkif::BackendManager::Resume);
  return hooks;
}

}  // namespace tapmap::control
