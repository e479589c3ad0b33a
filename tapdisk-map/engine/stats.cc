#include "tapdisk-map/engine/stats.h"

namespace tapmap::engine {
namespace {

nlohmann::json IoStatsToJson(const IoStats& s) {
  nlohmann::json j = nlohmann::json::object();
#define TAPMAP_X(name, help) j[#name] = s.name;
  TAPMAP_IO_STATS_FIELDS(TAPMAP_X)
#undef TAPMAP_X
  return j;
}

// Label values escape backslash, double quote and newline.
std::string EscapeLabel(const std::string& v) {
  std::string out;
  for (char c : v) {
    if (c == '\\') out += "\\\\";
    else if (c == '"') out += "\\\"";
    else if (c == '\n') out += "\\n";
    else out += c;
  }
  return out;
}

void Metric(std::string& out, const char* name, const char* type, const char* help, uint64_t value) {
  out += "# HELP tapmap_"; out += name; out += ' '; out += help; out += '\n';
  out += "# TYPE tapmap_"; out += name; out += ' '; out += type; out += '\n';
  out += "tapmap_"; out += name; out += ' '; out += std::to_string(value); out += '\n';
}

}  // namespace

IoStats IoCounters::Snapshot() const {
  IoStats s;
#define TAPMAP_X(name, help) s.name = name.load(std::memory_order_relaxed);
  TAPMAP_IO_STATS_FIELDS(TAPMAP_X)
#undef TAPMAP_X
  return s;
}

nlohmann::json StatsToJson(const StatsSnapshot& stats) {
  nlohmann::json j = IoStatsToJson(stats.host);
  j["cache_bytes"] = stats.cache_bytes;
  j["cache_capacity_bytes"] = stats.cache_capacity_bytes;
  j["pinned_bytes"] = stats.pinned_bytes;
  j["volumes_open"] = stats.volumes_open;
  j["connected"] = stats.connected;
  j["pool_io"] = stats.pool_io;
  j["pool_direct"] = stats.pool_direct;
  j["lease"] = {{"state", stats.lease_state},
                {"lease_ms", stats.lease_ms},
                {"ms_since_renewal", stats.lease_ms_since_renewal},
                {"renewals", stats.lease_renewals},
                {"fences", stats.lease_fences},
                {"waiting", stats.lease_waiting}};
  nlohmann::json volumes = nlohmann::json::object();
  for (const auto& [name, s] : stats.volumes) volumes[name] = IoStatsToJson(s);
  for (const auto& [name, q] : stats.qos) {
    if (!volumes.contains(name)) continue;
    volumes[name]["qos"] = {{"limits", QosLimitsToJson(q.limits)},
                            {"throttled_read_ops", q.throttled_read_ops},
                            {"throttled_write_ops", q.throttled_write_ops},
                            {"wait_us", q.wait_us},
                            {"queued", q.queued},
                            {"peak_queued", q.peak_queued}};
  }
  j["volumes"] = std::move(volumes);
  return j;
}

std::string StatsToPrometheus(const StatsSnapshot& stats) {
  std::string out;
#define TAPMAP_X(name, help) Metric(out, #name, "counter", help, stats.host.name);
  TAPMAP_IO_STATS_FIELDS(TAPMAP_X)
#undef TAPMAP_X
  Metric(out, "cache_bytes", "gauge", "bytes in the data cache", stats.cache_bytes);
  Metric(out, "cache_capacity_bytes", "gauge", "data cache capacity", stats.cache_capacity_bytes);
  Metric(out, "pinned_bytes", "gauge", "written bytes kept in memory until committed", stats.pinned_bytes);
  Metric(out, "volumes_open", "gauge", "volumes open", stats.volumes_open);
  Metric(out, "connected", "gauge", "1 if connected to the mapserver", stats.connected ? 1 : 0);
  Metric(out, "lease_valid", "gauge", "1 while this host's lease at the mapserver is valid (0: fenced or none)",
         stats.lease_state == "valid" ? 1 : 0);
  Metric(out, "lease_renewals", "counter", "answered lease renewals", stats.lease_renewals);
  Metric(out, "lease_fences", "counter", "times this host fenced itself (lease not renewed in time)",
         stats.lease_fences);
  Metric(out, "lease_waiting_requests", "gauge", "requests held by a fence", stats.lease_waiting);
#define TAPMAP_X(name, help)                                                              \
  out += "# HELP tapmap_volume_" #name " " help " (per volume)\n";                  \
  out += "# TYPE tapmap_volume_" #name " counter\n";                                \
  for (const auto& [vol, s] : stats.volumes) {                                            \
    out += "tapmap_volume_" #name "{volume=\"" + EscapeLabel(vol) + "\"} " +        \
           std::to_string(s.name) + "\n";                                                 \
  }
  TAPMAP_IO_STATS_FIELDS(TAPMAP_X)
#undef TAPMAP_X
  // QoS: each limit (0 = unlimited) and the throttling counters, per limited volume.
  auto qos_family = [&](const std::string& name, const char* type, const char* help, auto value) {
    out += "# HELP tapmap_qos_" + name + " " + help + "\n";
    out += "# TYPE tapmap_qos_" + name + " " + type + "\n";
    for (const auto& [vol, q] : stats.qos) {
      out += "tapmap_qos_" + name + "{volume=\"" + EscapeLabel(vol) + "\"} " + std::to_string(value(q)) + "\n";
    }
  };
  if (!stats.qos.empty()) {
    const nlohmann::json keys = QosLimitsToJson(QosLimits{});
    for (auto it = keys.begin(); it != keys.end(); ++it) {
      const std::string key = it.key();
      qos_family(key, "gauge", "QoS limit (0 = unlimited; per second, bursts in ops or bytes)",
                 [&key](const QosStats& q) { return QosLimitsToJson(q.limits).at(key).get<uint64_t>(); });
    }
    qos_family("throttled_read_ops", "counter", "reads that waited for their QoS budget",
               [](const QosStats& q) { return q.throttled_read_ops; });
    qos_family("throttled_write_ops", "counter", "writes that waited for their QoS budget",
               [](const QosStats& q) { return q.throttled_write_ops; });
    qos_family("wait_seconds_total", "counter", "time requests waited for their QoS budget",
               [](const QosStats& q) { return static_cast<double>(q.wait_us) / 1e6; });
    qos_family("wait_us", "counter", "time requests waited for their QoS budget, microseconds",
               [](const QosStats& q) { return q.wait_us; });
    qos_family("queued", "gauge", "requests waiting for their QoS budget now",
               [](const QosStats& q) { return q.queued; });
  }
  return out;
}

}  // namespace tapmap::engine
