// Stats serialisers carry exactly the protocol's keys.
#include <catch2/catch.hpp>

#include "tapdisk-map/engine/stats.h"

namespace tapmap::engine {
namespace {

TEST_CASE("JSON stats have the PROTOCOL.md keys, host and per volume", "[stats]") {
  StatsSnapshot s;
  s.host.logical_bytes_read = 100;
  s.host.pool_bytes_read = 40;
  s.host.io_eliminated_bytes = 60;
  s.cache_bytes = 4096;
  s.volumes["vm1"].commits = 3;
  nlohmann::json j = StatsToJson(s);
  for (const char* key : {"logical_bytes_read", "logical_bytes_written", "logical_read_ops",
                          "logical_write_ops", "pool_bytes_read", "pool_bytes_written",
                          "pool_read_ops", "pool_write_ops", "cache_hits", "cache_misses",
                          "cache_evictions", "cache_bytes", "cache_capacity_bytes",
                          "io_eliminated_bytes", "map_fetches", "map_recalls", "commits",
                          "write_throttle_waits"}) {
    INFO(key);
    CHECK(j.contains(key));
  }
  CHECK(j["logical_bytes_read"] == 100);
  CHECK(j["io_eliminated_bytes"] == 60);
  CHECK(j["volumes"]["vm1"]["commits"] == 3);
  CHECK_FALSE(j["volumes"]["vm1"].contains("cache_bytes"));
}

TEST_CASE("Prometheus text names and labels", "[stats]") {
  StatsSnapshot s;
  s.host.cache_hits = 5;
  s.volumes["a\"b"].cache_hits = 2;
  std::string text = StatsToPrometheus(s);
  CHECK(text.find("tapmap_cache_hits 5\n") != std::string::npos);
  CHECK(text.find("# TYPE tapmap_cache_hits counter\n") != std::string::npos);
  CHECK(text.find("tapmap_volume_cache_hits{volume=\"a\\\"b\"} 2\n") != std::string::npos);
}

TEST_CASE("QoS of a volume appears in JSON stats and as tapmap_qos_* metrics", "[stats][qos]") {
  StatsSnapshot s;
  s.volumes["vm1"].commits = 1;
  s.volumes["vm2"].commits = 1;
  QosStats& q = s.qos["vm1"];
  q.limits.write_bps = 20 << 20;
  q.throttled_write_ops = 52;
  q.wait_us = 16600000;
  q.queued = 3;
  nlohmann::json j = StatsToJson(s);
  CHECK(j["volumes"]["vm1"]["qos"]["limits"]["write_bps"] == 20 << 20);
  CHECK(j["volumes"]["vm1"]["qos"]["limits"]["read_iops"] == 0);
  CHECK(j["volumes"]["vm1"]["qos"]["throttled_write_ops"] == 52);
  CHECK(j["volumes"]["vm1"]["qos"]["wait_us"] == 16600000);
  CHECK(j["volumes"]["vm1"]["qos"]["queued"] == 3);
  CHECK_FALSE(j["volumes"]["vm2"].contains("qos"));  // unlimited, never throttled
  std::string text = StatsToPrometheus(s);
  CHECK(text.find("# TYPE tapmap_qos_write_bps gauge\ntapmap_qos_write_bps{volume=\"vm1\"} 20971520\n") !=
        std::string::npos);
  CHECK(text.find("tapmap_qos_throttled_write_ops{volume=\"vm1\"} 52\n") != std::string::npos);
  CHECK(text.find("tapmap_qos_wait_seconds_total{volume=\"vm1\"} 16.600000\n") != std::string::npos);
  CHECK(text.find("tapmap_qos_queued{volume=\"vm1\"} 3\n") != std::string::npos);
  CHECK(text.find("volume=\"vm2\"} 0\ntapmap_qos") == std::string::npos);
  // No QoS anywhere: no tapmap_qos_ families at all.
  CHECK(StatsToPrometheus(StatsSnapshot{}).find("tapmap_qos_") == std::string::npos);
}

}  // namespace
}  // namespace tapmap::engine
