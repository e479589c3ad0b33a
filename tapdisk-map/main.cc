// tapdisk-map: the per-host block daemon of tapmap. It opens volumes through the
// engine (mapping client + data cache keyed by physical block + direct pool I/O) and
// serves them to guests over Xen blkif rings and to anything else over NBD, with a
// local control socket (control/PROTOCOL.md) and optional Prometheus metrics.
//
//   tapdisk-map --pool /dev/vg/pool --server tcp:mapserver:7000 --nbd unix:/run/tapmap/nbd.sock
//
// Settings come from /etc/tapmap/tapmap.conf (section [tapdisk-map]) and the flags below.
// SIGTERM/SIGINT: stop accepting, finish and answer in-flight requests, commit what is
// pending on every volume (the engine's final flush), exit 0.
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <cstdio>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "common/heap_tuning.h"
#include "common/listen_address.h"
#include "common/logging.h"
#include "common/options.h"
#include "common/units.h"
#include "tapdisk-map/blkif/backend_manager.h"
#include "tapdisk-map/control/control_server.h"
#include "tapdisk-map/control/metrics_server.h"
#include "tapdisk-map/control/vbd_requests.h"
#include "tapdisk-map/engine/engine.h"
#include "tapdisk-map/nbd/export_catalog.h"
#include "tapdisk-map/nbd/listener_spec.h"
#include "tapdisk-map/nbd/server.h"
#include "tapdisk-map/xen/real_platform.h"

namespace tapmap {
namespace {

std::vector<OptionSpec> Specs() {
  return {
      {"config", "/etc/tapmap/tapmap.conf", "config file ([tapdisk-map] section)"},
      {"server", "unix:/run/tapmap/mapserver.sock", "mapserver address: unix:PATH or tcp:HOST:PORT"},
      {"pool", "", "the storage pool shared with the mapserver: a file, a block device or "
                   "rados:CEPHPOOL/PREFIX[?conf=FILE&id=NAME&timeout=SECONDS]"},
      {"cache-size", "", "data cache size, e.g. 4G (default: 1/8 of memory, at least 64M)"},
      {"control", "/run/tapmap/tapdisk-map.sock", "control socket path"},
      {"nbd", "",
       "NBD listeners: unix:PATH or tcp:HOST:PORT, each optionally ?exports=NAME[:NAME...] to offer only "
       "those volumes (names or fnmatch patterns, e.g. tcp:0.0.0.0:10809?exports=vm1:web-*); repeatable or comma "
       "list"},
      {"nbd-tls-certificates", "",
       "NBD TLS with x509: DIR holding server-cert.pem, server-key.pem and ca-cert.pem (as qemu-nbd and nbdkit); "
       "tcp: listeners then require TLS, unix: ones offer it"},
      {"nbd-tls-verify-peer", "true",
       "NBD x509 TLS: clients must present a certificate signed by DIR/ca-cert.pem", true},
      {"nbd-tls-psk", "", "NBD TLS with pre-shared keys: FILE of IDENTITY:HEXKEY lines (psktool format)"},
      {"nbd-max-connections", "256",
       "NBD connections at once; at the limit a new client displaces the oldest one still negotiating"},
      {"nbd-inflight-per-connection", "64M",
       "request and reply data one NBD connection may hold (at least twice the 32M request maximum is best)"},
      {"nbd-insecure-plaintext-tcp", "false",
       "serve tcp: NBD listeners without TLS: whoever reaches the port reads and writes every volume it offers",
       true},
      {"secret-file", "/etc/tapmap/secret", "file holding the shared secret for the mapserver"},
      {"tls-dir", "", "mutual TLS to a tcp: mapserver: ca.crt, host.crt, host.key (mapserver/doc/trust.md)"},
      {"host-name", "", "name this host logs in with (default: the system host name)"},
      {"metrics", "", "Prometheus endpoint: unix:PATH or tcp:HOST:PORT (GET /metrics)"},
      {"metrics-max-connections", "16", "metrics connections open at once (the oldest idle one gives way)"},
      {"metrics-request-timeout-ms", "5000", "a metrics connection is closed this long after accept unless answered"},
      {"xen", "auto", "serve Xen blkif rings: on, off, or auto (on when running in a Xen dom0)"},
      {"blkif-inflight-per-disk", "64M", "request data held for one guest disk at once; beyond it its rings wait"},
      {"blkif-inflight-per-host", "512M", "request data held for all guest disks at once"},
      {"blkif-persistent-grants-per-host", "16384", "guest grants kept mapped at once (each one mapping); beyond, copied"},
      {"pool-io", "auto", "pool I/O back end: auto, io_uring or threads"},
      {"threads", "2", "I/O threads running the event loop"},
      {"commit-interval-ms", "200", "longest a write waits before its map commit starts (0 = at once)"},
      {"qos-default", "",
       "QoS limits of every volume without its own (tapmap volume qos): KEY=N,... with keys read_iops, write_iops, "
       "iops, read_bps, write_bps, bps and their _burst (PROTOCOL.md QosLimits); default unlimited"},
      {"log-level", "info", "debug, info, warning or error"},
  };
}

// Collects every --nbd value (it may be repeated; Options keeps only the last) and
// removes them from argv. Returns the comma-joined list.
std::string TakeRepeatedFlag(const char* flag, int* argc, char** argv) {
  std::string joined;
  std::string name = std::string("--") + flag;
  int out = 1;
  for (int i = 1; i < *argc; ++i) {
    std::string_view arg = argv[i];
    std::optional<std::string> value;
    if (arg == name && i + 1 < *argc) {
      value = argv[++i];
    } else if (arg.starts_with(name + "=")) {
      value = std::string(arg.substr(name.size() + 1));
    } else if (arg == "--") {
      for (; i < *argc; ++i) argv[out++] = argv[i];
      break;
    }
    if (value) {
      if (!joined.empty()) joined += ",";
      joined += *value;
    } else {
      argv[out++] = argv[i];
    }
  }
  *argc = out;
  return joined;
}

bool XenBlkbackLoaded() {
  struct stat st {};
  return ::stat("/sys/module/xen_blkback", &st) == 0;
}

int Fail(const Logger& log, const std::string& message) {
  log.Errorf("%s", message.c_str());
  return 1;
}

int Run(int argc, char** argv) {
  Options options("tapdisk-map", Specs());
  std::string nbd_flags = TakeRepeatedFlag("nbd", &argc, argv);
  // --config must be known before the file is read; flags then override the file.
  Options probe("tapdisk-map", Specs());
  if (Status s = probe.ParseArgs(argc, argv); !s.ok()) {
    std::fprintf(stderr, "tapdisk-map: %s\n", s.ToString().c_str());
    return 2;
  }
  if (probe.help_requested()) {
    std::printf("usage: tapdisk-map [flags]\n%s", options.FlagHelp().c_str());
    return 0;
  }
  const std::string config = probe.Get("config");
  const bool config_explicit = config != "/etc/tapmap/tapmap.conf";
  if (Status s = options.LoadFile(config, !config_explicit); !s.ok()) {
    std::fprintf(stderr, "tapdisk-map: %s\n", s.ToString().c_str());
    return 2;
  }
  if (Status s = options.ParseArgs(argc, argv); !s.ok()) {
    std::fprintf(stderr, "tapdisk-map: %s\n", s.ToString().c_str());
    return 2;
  }
  if (!nbd_flags.empty()) options.Set("nbd", nbd_flags);

  LogLevel level = LogLevel::kInfo;
  if (!ParseLogLevel(options.Get("log-level"), &level)) {
    std::fprintf(stderr, "tapdisk-map: bad --log-level '%s'\n", options.Get("log-level").c_str());
    return 2;
  }
  Logger log("tapdisk-map", level);

  // ---- settings
  engine::EngineOptions engine_options;
  engine_options.server = options.Get("server");
  engine_options.pool_path = options.Get("pool");
  engine_options.secret_file = options.Get("secret-file");
  engine_options.tls_dir = options.Get("tls-dir");
  engine_options.host = options.Get("host-name");
  if (engine_options.pool_path.empty()) return Fail(log, "--pool is required");
  if (options.Has("cache-size") && !options.Get("cache-size").empty()) {
    auto size = options.GetSize("cache-size");
    if (!size.ok()) return Fail(log, size.status().ToString());
    engine_options.cache_size_bytes = *size;
  }
  const std::string& pool_io = options.Get("pool-io");
  if (pool_io == "io_uring") engine_options.pool_io = pool::PoolIoKind::kUring;
  else if (pool_io == "threads") engine_options.pool_io = pool::PoolIoKind::kThreads;
  else if (pool_io != "auto") return Fail(log, "--pool-io must be auto, io_uring or threads");
  auto commit_interval = options.GetUint("commit-interval-ms");
  if (!commit_interval.ok() || *commit_interval > 60000) return Fail(log, "--commit-interval-ms must be 0..60000");
  engine_options.commit_interval = std::chrono::milliseconds(*commit_interval);
  auto qos_default = engine::ParseQosLimits(options.Get("qos-default"));
  if (!qos_default.ok()) return Fail(log, "--qos-default: " + qos_default.status().ToString());
  engine_options.qos_default = *qos_default;
  auto threads = options.GetUint("threads");
  if (!threads.ok() || *threads == 0 || *threads > 64) return Fail(log, "--threads must be 1..64");

  std::vector<nbd::NbdListenerSpec> nbd_listeners;
  if (!options.Get("nbd").empty()) {
    auto parsed = nbd::ParseNbdListeners(options.Get("nbd"));
    if (!parsed.ok()) return Fail(log, "--nbd: " + parsed.status().ToString());
    nbd_listeners = std::move(*parsed);
  }
  std::optional<ListenAddress> metrics_address;
  if (!options.Get("metrics").empty()) {
    auto parsed = ParseListenAddress(options.Get("metrics"));
    if (!parsed.ok()) return Fail(log, "--metrics: " + parsed.status().ToString());
    metrics_address = *parsed;
  }
  control::MetricsServerOptions metrics_options;
  auto metrics_connections = options.GetUint("metrics-max-connections");
  if (!metrics_connections.ok() || *metrics_connections == 0 || *metrics_connections > 4096)
    return Fail(log, "--metrics-max-connections must be 1..4096");
  metrics_options.max_connections = static_cast<uint32_t>(*metrics_connections);
  auto metrics_timeout = options.GetUint("metrics-request-timeout-ms");
  if (!metrics_timeout.ok() || *metrics_timeout == 0 || *metrics_timeout > 600000)
    return Fail(log, "--metrics-request-timeout-ms must be 1..600000");
  metrics_options.request_timeout = std::chrono::milliseconds(*metrics_timeout);
  const std::string& xen_mode = options.Get("xen");
  if (xen_mode != "on" && xen_mode != "off" && xen_mode != "auto") return Fail(log, "--xen must be on, off or auto");
  blkif::BackendOptions blkif_options;
  for (auto [flag, field] : {std::pair{"blkif-inflight-per-disk", &blkif_options.inflight_bytes_per_disk},
                             std::pair{"blkif-inflight-per-host", &blkif_options.inflight_bytes_per_host}}) {
    auto size = options.GetSize(flag);
    if (!size.ok() || *size < kMiB) return Fail(log, std::string("--") + flag + " must be a size of at least 1M");
    *field = *size;
  }
  auto grant_cap = options.GetUint("blkif-persistent-grants-per-host");
  if (!grant_cap.ok()) return Fail(log, "--blkif-persistent-grants-per-host: " + grant_cap.status().ToString());
  blkif_options.persistent_grants_per_host = *grant_cap;

  // ---- engine
  boost::asio::io_context io;
  auto engine = engine::Engine::Create(io, engine_options, log.WithContext("layer", "engine"));
  if (!engine.ok()) return Fail(log, "engine: " + engine.status().ToString());

  // ---- Xen back end
  std::optional<xen::XenPlatform> platform;
  std::unique_ptr<blkif::BackendManager> vbds;
  if (xen_mode != "off") {
    auto opened = xen::OpenRealXenPlatform(log.WithContext("layer", "xen"));
    if (!opened.ok()) {
      if (xen_mode == "on") return Fail(log, "--xen on: " + opened.status().ToString());
      log.Infof("Xen serving off: %s", opened.status().message().c_str());
    } else if (XenBlkbackLoaded()) {
      return Fail(log, "the kernel's xen_blkback module is loaded: it would race tapdisk-map for the "
                       "same vbd backends. Unload it (modprobe -r xen_blkback) or run with --xen off.");
    } else {
      platform.emplace(std::move(*opened));
      vbds = std::make_unique<blkif::BackendManager>(io, *platform, **engine, blkif_options,
                                                     log.WithContext("layer", "blkif"));
      if (Status s = vbds->Start(); !s.ok()) return Fail(log, "blkif: " + s.ToString());
    }
  }

  // ---- NBD
  nbd::VolumeExports exports(**engine);
  nbd::NbdServerOptions nbd_options;
  nbd_options.connection.handshake.max_request_bytes = nbd_options.connection.transmission.max_request_bytes;
  nbd::TlsSettings nbd_tls;
  nbd_tls.certificates_dir = options.Get("nbd-tls-certificates");
  nbd_tls.verify_peer = options.GetBool("nbd-tls-verify-peer");
  nbd_tls.psk_file = options.Get("nbd-tls-psk");
  if (nbd_tls.enabled()) {
    auto credentials = nbd::TlsCredentials::Load(nbd_tls);
    if (!credentials.ok()) return Fail(log, credentials.status().ToString());
    nbd_options.tls = std::move(*credentials);
    log.Infof("NBD TLS: %s", nbd_options.tls->description().c_str());
  }
  nbd_options.allow_plaintext_tcp = options.GetBool("nbd-insecure-plaintext-tcp");
  auto nbd_connections = options.GetUint("nbd-max-connections");
  if (!nbd_connections.ok() || *nbd_connections == 0 || *nbd_connections > 65536) {
    return Fail(log, "--nbd-max-connections must be 1..65536");
  }
  nbd_options.max_connections = static_cast<uint32_t>(*nbd_connections);
  auto nbd_inflight = options.GetSize("nbd-inflight-per-connection");
  if (!nbd_inflight.ok() || *nbd_inflight < kMiB) return Fail(log, "--nbd-inflight-per-connection must be at least 1M");
  nbd_options.connection.transmission.max_in_flight_bytes = *nbd_inflight;
  nbd::NbdServer nbd_server(io, exports, nbd_options, log.WithContext("layer", "nbd"));
  for (const auto& listener : nbd_listeners) {
    if (Status s = nbd_server.Listen(listener.address, {.allowed_exports = listener.exports}); !s.ok()) {
      return Fail(log, "nbd: " + s.ToString());
    }
  }

  // ---- control socket and metrics
  engine::Engine* engine_ptr = engine->get();
  control::ControlHandlers handlers;
  handlers.stats = [engine_ptr]() -> Result<nlohmann::json> { return engine::StatsToJson(engine_ptr->Stats()); };
  handlers.volume_qos = [engine_ptr](const std::string& volume, const nlohmann::json* limits,
                                     bool reset) -> Result<nlohmann::json> {
    if (limits != nullptr || reset) {
      auto parsed = engine::QosLimitsFromJson(limits ? *limits : nlohmann::json::object(),
                                              reset ? engine::QosLimits{} : engine_ptr->Qos(volume));
      if (!parsed.ok()) return parsed.status();
      engine_ptr->SetQos(volume, *parsed);
    }
    return nlohmann::json{{"volume", volume}, {"limits", engine::QosLimitsToJson(engine_ptr->Qos(volume))}};
  };
  handlers.volume_flatten = [engine_ptr](const std::string& volume, uint64_t rate, control::JsonReply reply) {
    engine::Flattener::Options options;
    options.rate_bytes_per_second = rate;
    engine_ptr->Flatten(volume, options, [reply](Result<engine::FlattenStatus> status) {
      if (!status.ok()) return reply(status.status());
      reply(nlohmann::json{{"flatten", engine::FlattenStatusToJson(*status)}});
    });
  };
  handlers.volume_flatten_status = [engine_ptr](const std::string& volume) -> Result<nlohmann::json> {
    auto status = engine_ptr->FlattenStatusOf(volume);
    if (!status.ok()) return status.status();
    return nlohmann::json{{"flatten", engine::FlattenStatusToJson(*status)}};
  };
  handlers.volume_flatten_cancel = [engine_ptr](const std::string& volume) -> Result<nlohmann::json> {
    if (Status s = engine_ptr->CancelFlatten(volume); !s.ok()) return s;
    auto status = engine_ptr->FlattenStatusOf(volume);
    if (!status.ok()) return status.status();
    return nlohmann::json{{"flatten", engine::FlattenStatusToJson(*status)}};
  };
  handlers.nbd_exports = [&nbd_server]() {
    nlohmann::json list = nlohmann::json::array();
    for (const auto& listener : nbd_server.Describe()) {
      nlohmann::json entry = {{"address", listener.address},
                              {"volumes_open", listener.volumes_open},
                              {"connections", listener.connections}};
      if (!listener.default_export.empty()) entry["export"] = listener.default_export;
      if (!listener.allowed_exports.empty()) entry["allowed_exports"] = listener.allowed_exports;
      entry["tls"] = nbd::TlsModeName(listener.tls);
      entry["replies_unwritten"] = listener.replies_unwritten;
      entry["reply_bytes_unwritten"] = listener.reply_bytes_unwritten;
      entry["readers_waiting"] = listener.readers_waiting;
      list.push_back(std::move(entry));
    }
    return list;
  };
  handlers.nbd_listen = [&nbd_server](const std::string& address, const std::string& volume) -> Status {
    auto parsed = ParseListenAddress(address);
    if (!parsed.ok()) return parsed.status();
    return nbd_server.Listen(*parsed, {.default_export = volume});
  };
  handlers.nbd_unlisten = [&nbd_server](const std::string& address) -> Status {
    auto parsed = ParseListenAddress(address);
    if (!parsed.ok()) return parsed.status();
    return nbd_server.Unlisten(parsed->ToString());
  };
  if (vbds) handlers.vbd = control::MakeVbdHandlers(*vbds);
  control::ControlServer control_server(io, std::move(handlers), log.WithContext("layer", "control"));
  if (Status s = control_server.Listen(options.Get("control")); !s.ok()) return Fail(log, s.ToString());
  std::unique_ptr<control::MetricsServer> metrics;
  if (metrics_address) {
    metrics = std::make_unique<control::MetricsServer>(
        io,
        [engine_ptr, &vbds, &metrics]() {
          std::string text = engine::StatsToPrometheus(engine_ptr->Stats());
          if (vbds) text += control::BlkifHostToPrometheus(vbds->Host());
          if (metrics) text += control::MetricsCountersToPrometheus(metrics->counters());
          return text;
        },
        log.WithContext("layer", "metrics"), metrics_options);
    if (Status s = metrics->Listen(*metrics_address); !s.ok()) return Fail(log, s.ToString());
  }

  // ---- orderly shutdown
  boost::asio::signal_set signals(io, SIGTERM, SIGINT);
  bool stopping = false;
  signals.async_wait([&](boost::system::error_code ec, int signal) {
    if (ec || stopping) return;
    stopping = true;
    log.Infof("signal %d: stopping (answering in-flight requests, committing pending writes)", signal);
    control_server.Stop();
    if (metrics) metrics->Stop();
    nbd_server.Stop([&]() {
      auto finish_engine = [&]() {
        engine_ptr->Shutdown([&]() {
          log.Infof("all volumes committed and closed; exiting");
          io.stop();
        });
      };
      if (vbds) {
        vbds->Stop(finish_engine);
      } else {
        finish_engine();
      }
    });
  });
  ::signal(SIGPIPE, SIG_IGN);

  log.Infof("tapdisk-map running: pool=%s server=%s nbd=%s control=%s xen=%s", engine_options.pool_path.c_str(),
            engine_options.server.c_str(), options.Get("nbd").empty() ? "-" : options.Get("nbd").c_str(),
            options.Get("control").c_str(), vbds ? "on" : "off");
  std::vector<std::thread> workers;
  for (uint64_t i = 1; i < *threads; ++i) workers.emplace_back([&io]() { io.run(); });
  io.run();
  for (auto& worker : workers) worker.join();
  return 0;
}

}  // namespace
}  // namespace tapmap

int main(int argc, char** argv) {
  tapmap::KeepLargeBuffersInHeap();  // before any thread starts
  return tapmap::Run(argc, argv);
}
