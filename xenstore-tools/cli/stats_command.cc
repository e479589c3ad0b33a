#include "xenstore-tools/cli/stats_command.h"

#include <chrono>
#include <cstdio>
#include <ctime>
#include <thread>

#include "common/units.h"
#include "xenstore-tools/cli/control_client.h"
#include "xenstore-tools/cli/json_fields.h"

namespace tapmap::cli {
namespace {

Result<nlohmann::json> FetchStats(Invocation& inv) {
  auto client = ControlClient::Connect(inv.options().Get("control"));
  if (!client.ok()) return client.status();
  auto r = client->Call({{"op", "stats"}}, std::chrono::milliseconds(inv.timeout_ms()));
  if (!r.ok()) return r.status();
  if (!r->contains("stats") || !(*r)["stats"].is_object()) {
    return Status::Corruption("tapdisk-map's stats answer has no \"stats\" object");
  }
  return (*r)["stats"];
}

std::string Percent(uint64_t part, uint64_t whole) {
  if (whole == 0) return "-";
  char buf[16];
  std::snprintf(buf, sizeof(buf), "%.1f%%",
                100.0 * static_cast<double>(part) / static_cast<double>(whole));
  return buf;
}

// A counter's growth between two samples (0 if it went backwards: daemon restarted).
uint64_t Delta(const nlohmann::json& now, const nlohmann::json& before, const char* key) {
  uint64_t a = JsonUint(now, key), b = JsonUint(before, key);
  return a >= b ? a - b : 0;
}

std::string Rate(uint64_t bytes, double seconds) {
  return FormatSize(static_cast<uint64_t>(static_cast<double>(bytes) / seconds)) + "/s";
}

std::string PerSecond(uint64_t count, double seconds) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.0f", static_cast<double>(count) / seconds);
  return buf;
}

void AddTotalsRow(Table* t, const std::string& name, const nlohmann::json& s) {
  t->AddRow({name, FormatSize(JsonUint(s, "logical_bytes_read")),
             FormatSize(JsonUint(s, "logical_bytes_written")),
             std::to_string(JsonUint(s, "logical_read_ops")),
             std::to_string(JsonUint(s, "logical_write_ops")),
             FormatSize(JsonUint(s, "pool_bytes_read")),
             FormatSize(JsonUint(s, "pool_bytes_written")),
             FormatSize(JsonUint(s, "io_eliminated_bytes"))});
}

// "lease: valid (T 15 s, renewed 2.1 s ago, 523 renewals, 0 fences)"; a fenced host
// says what it means (mapserver/doc/leases.md).
std::string RenderLease(const nlohmann::json& stats) {
  if (!stats.contains("lease") || !stats["lease"].is_object()) return "";
  const nlohmann::json& l = stats["lease"];
  std::string state = l.value("state", "?");
  char buf[256];
  std::snprintf(buf, sizeof(buf), "lease: %s (T %.1f s, renewed %.1f s ago, %llu renewals, %llu fences",
                state.c_str(), static_cast<double>(JsonUint(l, "lease_ms")) / 1000.0,
                static_cast<double>(l.value("ms_since_renewal", int64_t{-1})) / 1000.0,
                static_cast<unsigned long long>(JsonUint(l, "renewals")),
                static_cast<unsigned long long>(JsonUint(l, "fences")));
  std::string text = buf;
  if (JsonUint(l, "waiting") > 0) text += ", " + std::to_string(JsonUint(l, "waiting")) + " requests held";
  text += ")\n";
  if (state == "fenced") {
    text += "  FENCED: the mapserver has not answered a renewal in time; guests' I/O is held and fails\n"
            "  if the lease is not resumed (see mapserver/doc/leases.md, \"What an operator sees\")\n";
  }
  return text;
}

// One line per volume with QoS limits (PROTOCOL.md Stats "qos"): "qos vm1: write_bps=20
// MiB/s; 52 requests waited (0 reads, 52 writes) 16.6 s in all, 3 waiting now".
std::string RenderQos(const nlohmann::json& stats) {
  if (!stats.contains("volumes") || !stats["volumes"].is_object()) return "";
  std::string text;
  for (const auto& [name, v] : stats["volumes"].items()) {
    if (!v.contains("qos") || !v["qos"].is_object()) continue;
    const nlohmann::json& q = v["qos"];
    std::string limits;
    if (q.contains("limits") && q["limits"].is_object()) {
      for (const auto& [key, value] : q["limits"].items()) {
        if (!value.is_number_unsigned() || value.get<uint64_t>() == 0) continue;
        bool bytes = key.find("bps") != std::string::npos;
        bool burst = key.find("burst") != std::string::npos;
        if (!limits.empty()) limits += ", ";
        limits += key + "=" + (bytes ? FormatSize(value.get<uint64_t>()) : std::to_string(value.get<uint64_t>())) +
                  (burst ? "" : "/s");
      }
    }
    uint64_t reads = JsonUint(q, "throttled_read_ops"), writes = JsonUint(q, "throttled_write_ops");
    char waited[64];
    std::snprintf(waited, sizeof(waited), "%.1f s", static_cast<double>(JsonUint(q, "wait_us")) / 1e6);
    text += "qos " + name + ": " + (limits.empty() ? "unlimited" : limits) + "; " + std::to_string(reads + writes) +
            " requests waited (" + std::to_string(reads) + " reads, " + std::to_string(writes) + " writes) " + waited +
            " in all, " + std::to_string(JsonUint(q, "queued")) + " waiting now\n";
  }
  return text;
}

std::string RenderTotals(const nlohmann::json& stats) {
  Table t({{"VOLUME"},
           {"READ", true},
           {"WRITTEN", true},
           {"READ OPS", true},
           {"WRITE OPS", true},
           {"POOL READ", true},
           {"POOL WRITTEN", true},
           {"SAVED", true}});
  if (stats.contains("volumes") && stats["volumes"].is_object()) {
    for (const auto& [name, v] : stats["volumes"].items()) AddTotalsRow(&t, name, v);
  }
  AddTotalsRow(&t, "total", stats);
  uint64_t hits = JsonUint(stats, "cache_hits"), misses = JsonUint(stats, "cache_misses");
  std::string text = t.Render();
  text += "cache: " + FormatSize(JsonUint(stats, "cache_bytes")) + " of " +
          FormatSize(JsonUint(stats, "cache_capacity_bytes")) + " used, " +
          Percent(hits, hits + misses) + " hits (" + std::to_string(hits) + " hits, " +
          std::to_string(misses) + " misses, " +
          std::to_string(JsonUint(stats, "cache_evictions")) + " evictions)\n";
  text += "maps: " + std::to_string(JsonUint(stats, "map_fetches")) + " fetched, " +
          std::to_string(JsonUint(stats, "map_recalls")) + " recalled, " +
          std::to_string(JsonUint(stats, "commits")) + " commits\n";
  text += RenderLease(stats);
  text += RenderQos(stats);
  return text;
}

void AddRateRow(Table* t, const std::string& name, const nlohmann::json& now,
                const nlohmann::json& before, double secs) {
  t->AddRow({name, Rate(Delta(now, before, "logical_bytes_read"), secs),
             Rate(Delta(now, before, "logical_bytes_written"), secs),
             PerSecond(Delta(now, before, "logical_read_ops"), secs),
             PerSecond(Delta(now, before, "logical_write_ops"), secs),
             Rate(Delta(now, before, "pool_bytes_read"), secs),
             Rate(Delta(now, before, "pool_bytes_written"), secs),
             Rate(Delta(now, before, "io_eliminated_bytes"), secs)});
}

std::string RenderRates(const nlohmann::json& now, const nlohmann::json& before, double secs) {
  Table t({{"VOLUME"},
           {"READ/s", true},
           {"WRITE/s", true},
           {"READ IOPS", true},
           {"WRITE IOPS", true},
           {"POOL READ/s", true},
           {"POOL WRITE/s", true},
           {"SAVED/s", true}});
  if (now.contains("volumes") && now["volumes"].is_object()) {
    for (const auto& [name, v] : now["volumes"].items()) {
      nlohmann::json prev = before.contains("volumes") && before["volumes"].contains(name)
                                ? before["volumes"][name]
                                : nlohmann::json::object();
      AddRateRow(&t, name, v, prev, secs);
    }
  }
  AddRateRow(&t, "total", now, before, secs);
  uint64_t hits = Delta(now, before, "cache_hits"), misses = Delta(now, before, "cache_misses");
  char stamp[32];
  std::time_t tt = std::time(nullptr);
  std::strftime(stamp, sizeof(stamp), "%H:%M:%S", std::localtime(&tt));
  return std::string("--- ") + stamp + " ---\n" + t.Render() +
         "cache hits: " + Percent(hits, hits + misses) + ", cache " +
         FormatSize(JsonUint(now, "cache_bytes")) + " of " +
         FormatSize(JsonUint(now, "cache_capacity_bytes")) + "\n";
}

Status RunStats(Invocation& inv) {
  uint64_t watch = 0, count = 0;
  if (inv.options().Has("watch")) {
    auto w = inv.options().GetUint("watch");
    if (!w.ok() || *w == 0 || *w > 3600)
      return inv.UsageError("--watch needs a whole number of seconds in 1..3600");
    watch = *w;
  }
  if (inv.options().Has("count")) {
    if (watch == 0) return inv.UsageError("--count only goes with --watch");
    auto c = inv.options().GetUint("count");
    if (!c.ok()) return inv.UsageError(c.status().message());
    count = *c;
  }

  auto first = FetchStats(inv);
  if (!first.ok()) return first.status();
  if (watch == 0) {
    Json doc;
    doc["stats"] = Json::parse(first->dump());
    inv.PrintJson(doc);
    inv.Print(RenderTotals(*first));
    return Status::Ok();
  }

  auto sample_doc = [&](const nlohmann::json& stats) {
    Json doc;
    doc["unix_time"] = static_cast<uint64_t>(std::time(nullptr));
    doc["interval_seconds"] = watch;
    doc["stats"] = Json::parse(stats.dump());
    return doc;
  };
  inv.PrintJson(sample_doc(*first), /*pretty=*/false);
  nlohmann::json before = std::move(*first);
  auto taken = std::chrono::steady_clock::now();
  for (uint64_t shown = 0; count == 0 || shown < count; ++shown) {
    std::this_thread::sleep_until(taken + std::chrono::seconds(watch));
    auto now = FetchStats(inv);
    if (!now.ok()) return now.status();
    auto now_time = std::chrono::steady_clock::now();
    double secs = std::chrono::duration<double>(now_time - taken).count();
    inv.PrintJson(sample_doc(*now), /*pretty=*/false);
    inv.Print(RenderRates(*now, before, secs));
    before = std::move(*now);
    taken = now_time;
  }
  return Status::Ok();
}

}  // namespace

void AddStatsCommands(std::vector<CommandSpec>* commands) {
  commands->push_back({"stats",
                       "",
                       "",
                       "I/O, cache and map counters of tapdisk-map",
                       0,
                       0,
                       {{"watch", "", "show rates every SECONDS until interrupted"},
                        {"count", "", "with --watch: stop after N intervals"}},
                       kUsesControl,
                       RunStats});
}

}  // namespace tapmap::cli
