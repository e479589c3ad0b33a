// Engine statistics: counters per volume and per host, a plain snapshot of them, and
// its two serialisations — JSON (the control socket's `stats` op) and Prometheus text
// (`--metrics`). Key names are those of tapdisk-map/control/PROTOCOL.md.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <string>

#include <nlohmann/json.hpp>

#include "tapdisk-map/engine/qos_limiter.h"

namespace tapmap::engine {

// The counters kept both per volume and per host, as (member, key) pairs. Every
// counter is a total since start.
#define TAPMAP_IO_STATS_FIELDS(X)                                                       \
  X(logical_bytes_read, "bytes read by front ends")                                     \
  X(logical_bytes_written, "bytes written by front ends (incl. write-zeroes)")          \
  X(logical_read_ops, "read requests from front ends")                                  \
  X(logical_write_ops, "write requests from front ends")                                \
  X(pool_bytes_read, "bytes read from the pool")                                        \
  X(pool_bytes_written, "bytes written to the pool")                                    \
  X(pool_read_ops, "reads issued to the pool")                                          \
  X(pool_write_ops, "writes issued to the pool")                                        \
  X(cache_hits, "block lookups served without a pool read")                             \
  X(cache_misses, "block lookups that read the pool")                                   \
  X(cache_evictions, "data cache entries evicted")                                      \
  X(io_eliminated_bytes, "logical bytes read minus pool bytes read for reads")          \
  X(map_fetches, "map RPCs sent to the mapserver")                                      \
  X(map_recalls, "map recalls received from the mapserver")                             \
  X(commits, "commit RPCs that succeeded")                                              \
  X(write_throttle_waits, "writes that waited for pinned data to be committed")

// A plain copy of the counters.
struct IoStats {
#define TAPMAP_X(name, help) uint64_t name = 0;
  TAPMAP_IO_STATS_FIELDS(TAPMAP_X)
#undef TAPMAP_X
};

// Live counters, updated from any thread (relaxed atomics).
class IoCounters {
 public:
#define TAPMAP_X(name, help) std::atomic<uint64_t> name{0};
  TAPMAP_IO_STATS_FIELDS(TAPMAP_X)
#undef TAPMAP_X
  IoStats Snapshot() const;
};

// Everything the engine reports at one moment.
struct StatsSnapshot {
  IoStats host;                          // totals of every volume ever open
  uint64_t cache_bytes = 0;              // data cache content now
  uint64_t cache_capacity_bytes = 0;
  uint64_t pinned_bytes = 0;             // written, awaiting commit (kept in memory)
  uint64_t volumes_open = 0;
  bool connected = false;                // to the mapserver
  std::string pool_io;                   // "io_uring" or "threads"
  bool pool_direct = false;              // pool opened with O_DIRECT
  // This host's lease at the mapserver (mapserver/doc/leases.md).
  std::string lease_state = "none";      // "none" (never logged in), "valid", "fenced"
  uint32_t lease_ms = 0;                 // the server's lease time T
  int64_t lease_ms_since_renewal = -1;   // since the last answered renewal was sent
  uint64_t lease_renewals = 0;
  uint64_t lease_fences = 0;             // times the host fenced itself
  uint64_t lease_waiting = 0;            // requests held by a fence now
  std::map<std::string, IoStats> volumes;  // open volumes by name
  // QoS of the open volumes that have limits or were ever throttled, by name.
  std::map<std::string, QosStats> qos;
};

// {"logical_bytes_read": N, ..., "volumes": {"<name>": {...}}} plus the extra host
// fields above (cache_bytes, cache_capacity_bytes, pinned_bytes, volumes_open,
// connected, pool_io, pool_direct, and "lease": {state, lease_ms, ms_since_renewal,
// renewals, fences, waiting}); a volume in `qos` gets "qos": {"limits": QosLimits,
// throttled_read_ops, throttled_write_ops, wait_us, queued, peak_queued}.
nlohmann::json StatsToJson(const StatsSnapshot& stats);

// Prometheus text exposition format 0.0.4: tapmap_<key> for host counters and gauges,
// tapmap_volume_<key>{volume="<name>"} per volume, and tapmap_qos_<key>{volume=...}
// (limits as gauges, throttling counters) for the volumes in `qos`, with HELP and TYPE
// lines.
std::string StatsToPrometheus(const StatsSnapshot& stats);

}  // namespace tapmap::engine
