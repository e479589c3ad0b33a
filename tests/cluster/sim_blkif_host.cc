// cluster_sim_blkif_host: a tapmap "host" whose only front end is a simulated
// xen-blkfront, for the cluster rig (tests/cluster/blkif.sh). It runs its own
// engine::Engine (own mapserver login, own data cache, own leases) connected to the
// mapserver like tapdisk-map, and serves one volume at a time to a SimBlkfront guest
// through the real blkif back end: a RingWorker on the real ring ABI over the Xen
// simulator (tests/blkif/ring_harness.h RingRig). Every I/O is a ring request built by
// the SimBlkfront, validated and executed by the RingWorker on the engine's BlockDevice.
//
//   cluster_sim_blkif_host --server tcp:10.213.77.1:7300 --secret-file S
//                          --host-name h1-blkif --pool POOL [--cache-size 64M]
//
// Then line commands on stdin, exactly one reply line each on stdout:
//   open VOL rw|ro        -> ok SIZE_BYTES       open VOL and attach a fresh guest's ring
//   write OFFSET LEN BYTE -> ok                  LEN bytes of BYTE at OFFSET (512-aligned)
//   read OFFSET LEN       -> pattern 0xNN        every byte read is 0xNN
//                         -> mixed HASH          else: FNV-1a 64 of the bytes, 16 hex digits
//   flush                 -> ok                  BLKIF_OP_FLUSH_DISKCACHE
//   submit OFFSET LEN BYTE -> ok                 queues a write (<= 1 MiB) and kicks the
//                                                ring without waiting: it is in flight
//   suspend               -> unanswered [OFFSET:LEN:BYTE ...]
//                                                the guest suspends for a live migration:
//                                                its front end stops collecting answers,
//                                                so every submitted write is unanswered
//                                                (blkfront re-issues those on the new
//                                                back end); then as close
//   close                 -> ok                  ring stopped, device dropped, and the
//                                                volume's final commit and close at the
//                                                server done
//   quit                  -> ok                  closes (if open), shuts down, exits 0
// Any failure replies "error: <what>" and the program goes on. Numbers are decimal or
// 0x-prefixed hex; sizes may end in K/M/G (as the rest of tapmap parses them). End of
// input is a quit.
#include <algorithm>
#include <cerrno>
#include <cinttypes>
#include <cstdlib>
#include <cstdio>
#include <cstring>
#include <future>
#include <iostream>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "common/logging.h"
#include "common/options.h"
#include "common/units.h"
#include "tapdisk-map/engine/engine.h"
#include "tests/blkif/ring_harness.h"

namespace tapmap::testing {
namespace {

constexpr uint64_t kSector = 512;
constexpr uint64_t kMaxRequestBytes = 1 << 20;  // 256 indirect segments of 4 KiB
constexpr uint64_t kMaxIoBytes = 256ull << 20;  // one command's bound (memory of this test program)
constexpr auto kWait = std::chrono::seconds(60);

std::vector<OptionSpec> Specs() {
  return {
      {"server", "", "mapserver address: unix:PATH or tcp:HOST:PORT (as tapdisk-map --server)"},
      {"pool", "", "the storage pool shared with the mapserver (as tapdisk-map --pool)"},
      {"secret-file", "", "file holding the shared secret (as tapdisk-map --secret-file)"},
      {"tls-dir", "", "mutual TLS to a tcp: mapserver (as tapdisk-map --tls-dir); instead of --secret-file"},
      {"host-name", "", "name this host logs in with; a host of its own, e.g. h1-blkif"},
      {"cache-size", "64M", "data cache size (as tapdisk-map --cache-size)"},
      {"unavailable-timeout", "20", "seconds an open or I/O waits for the mapserver"},
      {"log-level", "warning", "debug, info, warning or error (to stderr)"},
  };
}

uint64_t Fnv1a64(std::span<const uint8_t> bytes) {
  uint64_t h = 1469598103934665603ull;
  for (uint8_t b : bytes) {
    h ^= b;
    h *= 1099511628211ull;
  }
  return h;
}

const char* RspName(int16_t status) {
  switch (status) {
    case BLKIF_RSP_OKAY: return "BLKIF_RSP_OKAY";
    case BLKIF_RSP_ERROR: return "BLKIF_RSP_ERROR";
    case BLKIF_RSP_EOPNOTSUPP: return "BLKIF_RSP_EOPNOTSUPP";
    default: return "an unknown status";
  }
}

// The host: one engine, one simulated hypervisor, at most one volume served to one
// guest at a time (each open gets a fresh guest domain).
class SimBlkifHost {
 public:
  SimBlkifHost(engine::EngineOptions options, LogLevel level)
      : options_(std::move(options)), level_(level) {
    runner_.emplace(io_, 2);
  }

  ~SimBlkifHost() { (void)Quit(); }

  Status Start() {
    auto engine = engine::Engine::Create(io_, options_, Logger("engine", level_).WithContext("host", options_.host));
    if (!engine.ok()) return engine.status();
    engine_ = std::move(*engine);
    hv_ = std::make_shared<xen::SimulatedHypervisor>();
    return hv_->CreateDomain(kBackendDomid, 0);
  }

  // Executes one command line; returns its reply line.
  std::string Execute(const std::string& line) {
    std::istringstream in(line);
    std::string cmd;
    in >> cmd;
    std::vector<std::string> args;
    for (std::string a; in >> a;) args.push_back(a);
    Result<std::string> reply = Dispatch(cmd, args);
    if (!reply.ok()) return "error: " + reply.status().ToString();
    return *reply;
  }

  bool quitting() const { return quitting_; }

  Status Quit() {
    if (!engine_) return Status::Ok();
    Status s = Close(/*quiet_if_closed=*/true);
    std::promise<void> down;
    auto f = down.get_future();
    engine_->Shutdown([&down] { down.set_value(); });
    if (f.wait_for(kWait) != std::future_status::ready && s.ok()) {
      s = Status::Unavailable("engine shutdown: volumes still closing after 60 s");
    }
    if (f.wait_for(std::chrono::seconds(0)) == std::future_status::ready) {
      runner_.reset();
      engine_.reset();
    }  // else leak the engine: its threads still use it (exit follows)
    quitting_ = true;
    return s;
  }

 private:
  Result<std::string> Dispatch(const std::string& cmd, const std::vector<std::string>& args) {
    auto want = [&](size_t n, const char* usage) -> Status {
      if (args.size() != n) return Status::InvalidArgument(std::string("usage: ") + usage);
      return Status::Ok();
    };
    if (cmd == "open") {
      TAPMAP_RETURN_IF_ERROR(want(2, "open VOL rw|ro"));
      if (args[1] != "rw" && args[1] != "ro") return Status::InvalidArgument("open VOL rw|ro: mode must be rw or ro");
      return Open(args[0], args[1] == "ro");
    }
    if (cmd == "write") {
      TAPMAP_RETURN_IF_ERROR(want(3, "write OFFSET LEN BYTE"));
      auto offset = Number(args[0], "OFFSET");
      auto length = Number(args[1], "LEN");
      auto byte = Number(args[2], "BYTE");
      for (const auto* n : {&offset, &length, &byte}) TAPMAP_RETURN_IF_ERROR(n->status());
      if (*byte > 0xff) return Status::InvalidArgument("BYTE " + args[2] + " is not 0..255");
      return Write(*offset, *length, static_cast<uint8_t>(*byte));
    }
    if (cmd == "read") {
      TAPMAP_RETURN_IF_ERROR(want(2, "read OFFSET LEN"));
      auto offset = Number(args[0], "OFFSET");
      auto length = Number(args[1], "LEN");
      for (const auto* n : {&offset, &length}) TAPMAP_RETURN_IF_ERROR(n->status());
      return Read(*offset, *length);
    }
    if (cmd == "flush") {
      TAPMAP_RETURN_IF_ERROR(want(0, "flush"));
      TAPMAP_RETURN_IF_ERROR(RequireOpen());
      TAPMAP_RETURN_IF_ERROR(Answered(rig_->front->Simple(0, BLKIF_OP_FLUSH_DISKCACHE), "flush"));
      return std::string("ok");
    }
    if (cmd == "submit") {
      TAPMAP_RETURN_IF_ERROR(want(3, "submit OFFSET LEN BYTE"));
      auto offset = Number(args[0], "OFFSET");
      auto length = Number(args[1], "LEN");
      auto byte = Number(args[2], "BYTE");
      for (const auto* n : {&offset, &length, &byte}) TAPMAP_RETURN_IF_ERROR(n->status());
      if (*byte > 0xff) return Status::InvalidArgument("BYTE " + args[2] + " is not 0..255");
      return Submit(*offset, *length, static_cast<uint8_t>(*byte));
    }
    if (cmd == "suspend") {
      TAPMAP_RETURN_IF_ERROR(want(0, "suspend"));
      TAPMAP_RETURN_IF_ERROR(RequireOpen());
      std::string reply = "unanswered";
      for (const auto& w : submitted_) {
        reply += " " + std::to_string(w.offset) + ":" + std::to_string(w.length) + ":" + std::to_string(w.byte);
      }
      submitted_.clear();
      TAPMAP_RETURN_IF_ERROR(Close(false));
      return reply;
    }
    if (cmd == "close") {
      TAPMAP_RETURN_IF_ERROR(want(0, "close"));
      TAPMAP_RETURN_IF_ERROR(Close(false));
      return std::string("ok");
    }
    if (cmd == "quit") {
      TAPMAP_RETURN_IF_ERROR(want(0, "quit"));
      TAPMAP_RETURN_IF_ERROR(Quit());
      return std::string("ok");
    }
    return Status::InvalidArgument("unknown command '" + cmd +
                                   "' (open, write, read, flush, submit, suspend, close, quit)");
  }

  // Decimal with an optional K/M/G suffix (ParseSize), or 0x-prefixed hex.
  static Result<uint64_t> Number(const std::string& text, const char* what) {
    if (text.size() > 2 && (text.starts_with("0x") || text.starts_with("0X"))) {
      char* end = nullptr;
      errno = 0;
      uint64_t v = std::strtoull(text.c_str() + 2, &end, 16);
      if (errno == 0 && end != nullptr && *end == '\0') return v;
      return Status::InvalidArgument(std::string(what) + " '" + text + "' is not a hex number");
    }
    auto v = ParseSize(text);
    if (!v.ok()) return Status::InvalidArgument(std::string(what) + " '" + text + "': " + v.status().message());
    return *v;
  }

  Status RequireOpen() const {
    if (!rig_) return Status::InvalidArgument("no volume is open (open VOL rw|ro first)");
    return Status::Ok();
  }

  // The range must be whole sectors inside the disk (the ring addresses sectors; the
  // back end would reject the rest, and this reports it more clearly).
  Status CheckRange(uint64_t offset, uint64_t length) const {
    TAPMAP_RETURN_IF_ERROR(RequireOpen());
    if (offset % kSector != 0 || length % kSector != 0 || length == 0) {
      return Status::InvalidArgument("OFFSET and LEN must be multiples of 512, LEN > 0");
    }
    if (length > kMaxIoBytes) return Status::InvalidArgument("LEN above 256 MiB");
    uint64_t size = device_->size_bytes();
    if (offset > size || length > size - offset) {
      return Status::InvalidArgument("range [" + std::to_string(offset) + ", +" + std::to_string(length) +
                                ") is beyond the volume's end " + std::to_string(size));
    }
    return Status::Ok();
  }

  static Status Answered(const Result<int16_t>& r, const std::string& what) {
    if (!r.ok()) return Status::Unavailable(what + ": " + r.status().ToString());
    if (*r != BLKIF_RSP_OKAY) {
      return Status::Internal(what + ": the back end answered " + RspName(*r) + " (" + std::to_string(*r) + ")");
    }
    return Status::Ok();
  }

  Result<std::string> Open(const std::string& name, bool read_only) {
    if (rig_) return Status::Busy("volume " + device_->name() + " is open (close it first)");
    std::promise<Result<std::shared_ptr<engine::BlockDevice>>> opened;
    auto f = opened.get_future();
    engine_->Open(name, read_only, [&opened](Result<std::shared_ptr<engine::BlockDevice>> r) {
      opened.set_value(std::move(r));
    });
    if (f.wait_for(kWait) != std::future_status::ready) {
      return Status::Unavailable("open " + name + ": no answer within 60 s");
    }
    Result<std::shared_ptr<engine::BlockDevice>> result = f.get();
    if (!result.ok()) return result.status();  // names the volume
    std::shared_ptr<engine::BlockDevice> device = *result;

    SimBlkfrontOptions o;
    o.indirect_segments = 256;
    blkif::RequestLimits limits;
    limits.read_only = read_only || device->read_only();
    limits.sectors = device->size_bytes() / kSector;
    auto rig = std::make_unique<RingRig>();
    xen::DomainId guest = next_guest_++;
    // 2048 pages: rings and up to 1 MiB of data in flight, with room to spare.
    Status made = RingRig::Make(rig.get(), io_, device, guest, o, limits, hv_, 2048);
    if (!made.ok()) {
      rig->StopAll();
      rig->front.reset();
      hv_->DestroyDomain(guest);
      return Status(made.code(), "attaching the ring: " + made.message());
    }
    rig_ = std::move(rig);
    guest_ = guest;
    device_ = std::move(device);
    return "ok " + std::to_string(device_->size_bytes());
  }

  Result<std::string> Write(uint64_t offset, uint64_t length, uint8_t byte) {
    TAPMAP_RETURN_IF_ERROR(CheckRange(offset, length));
    std::vector<uint8_t> chunk(std::min(length, kMaxRequestBytes), byte);
    for (uint64_t done = 0; done < length;) {
      uint64_t n = std::min(length - done, kMaxRequestBytes);
      auto r = rig_->front->Write(0, (offset + done) / kSector, std::span<const uint8_t>(chunk.data(), n));
      TAPMAP_RETURN_IF_ERROR(Answered(r, "write at " + std::to_string(offset + done)));
      done += n;
    }
    return std::string("ok");
  }

  // A write put on the ring and kicked; its answer is never collected (see suspend).
  Result<std::string> Submit(uint64_t offset, uint64_t length, uint8_t byte) {
    TAPMAP_RETURN_IF_ERROR(CheckRange(offset, length));
    if (length > kMaxRequestBytes) return Status::InvalidArgument("submit: LEN above 1 MiB");
    std::vector<uint8_t> data(length, byte);
    SimIo io;
    io.operation = BLKIF_OP_WRITE;
    io.sector = offset / kSector;
    io.sectors = static_cast<uint32_t>(length / kSector);
    auto id = rig_->front->Submit(0, io, data);
    if (!id.ok()) return id.status();
    TAPMAP_RETURN_IF_ERROR(rig_->front->Kick(0));
    submitted_.push_back(Submitted{offset, length, byte});
    return std::string("ok");
  }

  Result<std::string> Read(uint64_t offset, uint64_t length) {
    TAPMAP_RETURN_IF_ERROR(CheckRange(offset, length));
    std::vector<uint8_t> data(length);
    for (uint64_t done = 0; done < length;) {
      uint64_t n = std::min(length - done, kMaxRequestBytes);
      auto r = rig_->front->Read(0, (offset + done) / kSector, std::span<uint8_t>(data.data() + done, n));
      TAPMAP_RETURN_IF_ERROR(Answered(r, "read at " + std::to_string(offset + done)));
      done += n;
    }
    char line[64];
    if (std::all_of(data.begin(), data.end(), [&](uint8_t b) { return b == data[0]; })) {
      std::snprintf(line, sizeof line, "pattern 0x%02x", data[0]);
    } else {
      std::snprintf(line, sizeof line, "mixed %016" PRIx64, Fnv1a64(data));
    }
    return std::string(line);
  }

  // Stops the ring (in-flight requests answered), destroys the guest, drops the device
  // and waits until the engine finished the volume's final commit and server close.
  Status Close(bool quiet_if_closed) {
    if (!rig_) return quiet_if_closed ? Status::Ok() : RequireOpen();
    rig_->StopAll();
    rig_->front.reset();
    hv_->DestroyDomain(guest_);
    rig_.reset();
    submitted_.clear();
    device_.reset();
    std::promise<void> closed;
    auto f = closed.get_future();
    engine_->Shutdown([&closed] { closed.set_value(); });  // only waits; the engine stays usable
    if (f.wait_for(kWait) != std::future_status::ready) {
      return Status::Unavailable("close: the volume's final commit did not finish within 60 s");
    }
    return Status::Ok();
  }

  const engine::EngineOptions options_;
  const LogLevel level_;
  boost::asio::io_context io_;
  std::optional<IoRunner> runner_;  // emplaced in the constructor, reset before the engine
  std::unique_ptr<engine::Engine> engine_;
  std::shared_ptr<xen::SimulatedHypervisor> hv_;
  std::unique_ptr<RingRig> rig_;
  std::shared_ptr<engine::BlockDevice> device_;
  xen::DomainId guest_ = 0;
  xen::DomainId next_guest_ = 1;
  bool quitting_ = false;
  struct Submitted {
    uint64_t offset, length;
    uint8_t byte;
  };
  std::vector<Submitted> submitted_;  // writes in flight whose answers the guest never took
};

int Run(int argc, char** argv) {
  Options options("cluster_sim_blkif_host", Specs());
  if (Status s = options.ParseArgs(argc, argv); !s.ok()) {
    std::fprintf(stderr, "cluster_sim_blkif_host: %s\n", s.ToString().c_str());
    return 2;
  }
  if (options.help_requested()) {
    std::printf("usage: cluster_sim_blkif_host [flags] < commands\n%s", options.FlagHelp().c_str());
    return 0;
  }
  LogLevel level = LogLevel::kWarning;
  if (!ParseLogLevel(options.Get("log-level"), &level)) {
    std::fprintf(stderr, "cluster_sim_blkif_host: bad --log-level '%s'\n", options.Get("log-level").c_str());
    return 2;
  }
  engine::EngineOptions eo;
  eo.server = options.Get("server");
  eo.pool_path = options.Get("pool");
  eo.secret_file = options.Get("secret-file");
  eo.tls_dir = options.Get("tls-dir");
  eo.host = options.Get("host-name");
  const char* credential = eo.tls_dir.empty() ? "secret-file" : "tls-dir";
  for (const char* required : {"server", "pool", credential, "host-name"}) {
    if (options.Get(required).empty()) {
      std::fprintf(stderr, "cluster_sim_blkif_host: --%s is required\n", required);
      return 2;
    }
  }
  auto cache = options.GetSize("cache-size");
  auto timeout = options.GetUint("unavailable-timeout");
  if (!cache.ok() || !timeout.ok()) {
    std::fprintf(stderr, "cluster_sim_blkif_host: bad --cache-size or --unavailable-timeout\n");
    return 2;
  }
  eo.cache_size_bytes = *cache;
  eo.unavailable_timeout = std::chrono::seconds(*timeout);

  SimBlkifHost host(eo, level);
  if (Status s = host.Start(); !s.ok()) {
    std::fprintf(stderr, "cluster_sim_blkif_host: engine: %s\n", s.ToString().c_str());
    return 1;
  }
  std::string line;
  while (!host.quitting() && std::getline(std::cin, line)) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    std::string reply;
    try {
      reply = host.Execute(line);
    } catch (const std::exception& e) {
      reply = std::string("error: ") + e.what();
    }
    std::printf("%s\n", reply.c_str());
    std::fflush(stdout);
  }
  if (Status s = host.Quit(); !s.ok()) {
    std::fprintf(stderr, "cluster_sim_blkif_host: %s\n", s.ToString().c_str());
    return 1;
  }
  return 0;
}

}  // namespace
}  // namespace tapmap::testing

int main(int argc, char** argv) { return tapmap::testing::Run(argc, argv); }
