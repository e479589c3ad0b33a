// mapserver_bench: mapping-protocol throughput and the O(1) cost of snapshots/clones,
// against a real `mapserver serve` on a unix socket (spawned by this program on a
// sparse pool file in a temporary directory).
//
//   mapserver_bench --mapserver BUILD/bin/mapserver [--extents 1000000] [--clones 1000]
//                   [--seconds 2] [--transport unix|tcp|tls]
//
// --transport: the shared secret on a unix socket (default), plaintext TCP on 127.0.0.1
// (--insecure-plaintext-tcp), or mutual TLS on 127.0.0.1 with credentials made by
// `mapserver credential` (bench/mapserver/tls_overhead.sh compares the last two).
//
// Prints one table. Measured:
//  - map lookups/s: one 4 KiB map() at a time, and 64 in flight (pipelined);
//  - prepareWrite+commit pairs/s (each commit durable): one at a time, and 16 in flight;
//  - snapshot and clone time (median of 31) of a volume with 1 mapped extent vs one with
//    --extents mapped extents (metadata only: prepareWrite+commit of every other block,
//    no data written), and their ratio (O(1) means ~1);
//  - time to create --clones clones of one snapshot;
//  - volume diff (issue 16): a 1 TiB volume with --extents mapped blocks, snapshotted,
//    then 10 or 1,000 blocks changed anywhere in it: the diff's time (median of 11)
//    grows with the changes, not with the volume or its mapped blocks.
#include <signal.h>
#include <sys/stat.h>

#include <algorithm>
#include <map>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include <regex>
#include <sstream>

#include "common/options.h"
#include "protocol/connection.h"
#include "protocol/remote_status.h"
#include "tests/support/child_process.h"

namespace tapmap::mapserver {
namespace {

using Clock = std::chrono::steady_clock;
using protocol::Connection;
using protocol::ParseServerAddress;
constexpr uint64_t kBs = 4096;

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

class NullCallback final : public proto::MapCallback::Server {
  kj::Promise<void> recall(RecallContext) override { return kj::READY_NOW; }
  kj::Promise<void> revoke(RevokeContext) override { return kj::READY_NOW; }
  kj::Promise<void> sizeChanged(SizeChangedContext) override { return kj::READY_NOW; }
};

struct Bench {
  kj::AsyncIoContext& io;
  proto::Session::Client session;

  void Create(const std::string& name, uint64_t size) {
    auto req = session.createRequest();
    req.setName(name);
    req.setSizeBytes(size);
    req.send().wait(io.waitScope);
  }
  proto::Volume::Client Open(const std::string& name, bool rw) {
    auto req = session.openRequest();
    req.setName(name);
    req.setMode(rw ? proto::OpenMode::READ_WRITE : proto::OpenMode::READ_ONLY);
    req.setCallback(kj::heap<NullCallback>());
    return req.send().wait(io.waitScope).getVolume();
  }
  kj::Promise<void> PrepareCommit(proto::Volume::Client volume, std::vector<uint64_t> lblocks) {
    auto prep = volume.prepareWriteRequest();
    auto ranges = prep.initRanges(static_cast<unsigned>(lblocks.size()));
    for (size_t i = 0; i < lblocks.size(); ++i) {
      ranges[static_cast<unsigned>(i)].setOffset(lblocks[i] * kBs);
      ranges[static_cast<unsigned>(i)].setLength(kBs);
    }
    return prep.send().then([volume](auto response) mutable {
      auto commit = volume.commitRequest();
      commit.setExtents(response.getExtents());
      return commit.send().ignoreResult();
    });
  }
  double TimeCopy(bool snapshot, const std::string& source, const std::string& name) {
    auto start = Clock::now();
    if (snapshot) {
      auto req = session.snapshotRequest();
      req.setSource(source);
      req.setName(name);
      req.send().wait(io.waitScope);
    } else {
      auto req = session.cloneRequest();
      req.setSource(source);
      req.setName(name);
      req.send().wait(io.waitScope);
    }
    return Seconds(Clock::now() - start);
  }
};

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

void Row(const char* what, const std::string& value, const std::string& note = "") {
  std::printf("| %-52s | %16s | %-28s |\n", what, value.c_str(), note.c_str());
}

std::string Fmt(const char* fmt, double v) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), fmt, v);
  return buf;
}

int Run(int argc, char** argv) {
  Options options("mapserver_bench", {{"mapserver", "", "path of the mapserver binary"},
                                      {"extents", "1000000", "mapped extents of the big volume"},
                                      {"clones", "1000", "clones to create"},
                                      {"seconds", "2", "seconds per throughput measurement"},
                                      {"transport", "unix", "unix, tcp (plaintext) or tls"}});
  if (Status s = options.ParseArgs(argc, argv); !s.ok() || !options.Has("mapserver")) {
    std::fprintf(stderr, "usage: mapserver_bench --mapserver PATH [flags]\n%s",
                 options.FlagHelp().c_str());
    return 2;
  }
  const uint64_t extents = *options.GetUint("extents");
  const uint64_t clones = *options.GetUint("clones");
  const double seconds = static_cast<double>(*options.GetUint("seconds"));
  const std::string mapserver = options.Get("mapserver");

  tapmap::testing::TempDir dir("tapmap-mapserver-bench");
  {
    std::ofstream(dir / "secret") << "bench-secret\n";
    ::chmod((dir / "secret").c_str(), 0600);
  }
  const uint64_t pool_blocks = 2 * extents + 200000;
  std::string out;
  if (tapmap::testing::RunCommand(
          {mapserver, "format", "--config", "/dev/null", "--pool", dir / "pool", "--meta",
           dir / "meta", "--size", std::to_string((pool_blocks + 256) * kBs), "--block-size", "4K"},
          &out) != 0) {
    std::fprintf(stderr, "format failed: %s\n", out.c_str());
    return 1;
  }
  const std::string transport = options.Get("transport");
  std::vector<std::string> serve = {mapserver, "serve", "--config", "/dev/null", "--pool", dir / "pool",
                                    "--meta", dir / "meta", "--secret-file", dir / "secret", "--log-level",
                                    "info", "--listen"};
  protocol::ClientAuth auth{"bench", "bench-secret", nullptr, ""};
  if (transport == "unix") {
    serve.push_back("unix:" + (dir / "sock"));
  } else if (transport == "tcp" || transport == "tls") {
    serve.push_back("tcp:127.0.0.1:0");
    if (transport == "tcp") serve.push_back("--insecure-plaintext-tcp");
  } else {
    std::fprintf(stderr, "--transport must be unix, tcp or tls\n");
    return 2;
  }
  if (transport == "tls") {
    for (std::vector<std::string> cmd :
         {std::vector<std::string>{mapserver, "credential", "init-ca", "--config", "/dev/null", "--ca", dir / "ca"},
          {mapserver, "credential", "issue-server", "--config", "/dev/null", "--ca", dir / "ca", "--out", dir / "tls"},
          {mapserver, "credential", "issue", "--config", "/dev/null", "--ca", dir / "ca", "--credentials",
           dir / "creds", "--host", "bench", "--role", "admin", "--out", dir / "client"}}) {
      if (tapmap::testing::RunCommand(cmd, &out) != 0) {
        std::fprintf(stderr, "%s failed: %s\n", cmd[2].c_str(), out.c_str());
        return 1;
      }
    }
    serve.insert(serve.end(), {"--tls-dir", dir / "tls", "--credentials", dir / "creds"});
    auto tls = protocol::TlsConfig::LoadClient(dir / "client");
    if (!tls.ok()) {
      std::fprintf(stderr, "%s\n", tls.status().ToString().c_str());
      return 1;
    }
    auth.tls = std::move(*tls);
  }
  tapmap::testing::ChildProcess server(serve, dir / "serve.log");
  auto io = kj::setupAsyncIo();
  std::string listen = serve[serve.size() - (transport == "unix" ? 1 : transport == "tcp" ? 2 : 5)];
  kj::Own<Connection> conn;
  for (int i = 0; i < 500 && !conn; ++i) {
    if (transport != "unix") {  // the port the server chose
      std::ifstream log(dir / "serve.log");
      std::stringstream text;
      text << log.rdbuf();
      std::smatch m;
      std::string t = text.str();
      if (!std::regex_search(t, m, std::regex(R"(listening on (tcp:127\.0\.0\.1:\d+))"))) {
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
        continue;
      }
      listen = m[1];
    }
    auto c = Connection::ConnectBlocking(io, *ParseServerAddress(listen), auth);
    if (c.ok())
      conn = kj::mv(*c);
    else
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  if (!conn) {
    std::fprintf(stderr, "cannot connect to the mapserver\n");
    return 1;
  }
  Bench b{io, conn->session()};
  auto& ws = io.waitScope;

  std::printf("| %-52s | %16s | %-28s |\n",
              ("measurement (mapserver over " +
               std::string(transport == "unix" ? "a unix socket" : transport == "tcp" ? "plaintext TCP" : "mutual TLS") +
               ")")
                  .c_str(),
              "result", "note");
  std::printf("|%s|%s|%s|\n", std::string(54, '-').c_str(), std::string(18, '-').c_str(),
              std::string(30, '-').c_str());

  // --- map lookups ------------------------------------------------------------------
  b.Create("small", 1024 * kBs);
  auto small = b.Open("small", true);
  b.PrepareCommit(small, {0}).wait(ws);
  auto measure = [&](auto&& one_round, uint64_t per_round) {
    uint64_t done = 0;
    auto start = Clock::now();
    while (Seconds(Clock::now() - start) < seconds) {
      one_round();
      done += per_round;
    }
    return static_cast<double>(done) / Seconds(Clock::now() - start);
  };
  double map_seq = measure(
      [&] {
        auto req = small.mapRequest();
        req.setOffset(0);
        req.setLength(kBs);
        req.send().wait(ws);
      },
      1);
  double map_pipe = measure(
      [&] {
        kj::Vector<kj::Promise<void>> inflight;
        for (int i = 0; i < 64; ++i) {
          auto req = small.mapRequest();
          req.setOffset(static_cast<uint64_t>(i % 1024) * kBs);
          req.setLength(kBs);
          inflight.add(req.send().ignoreResult());
        }
        kj::joinPromises(inflight.releaseAsArray()).wait(ws);
      },
      64);
  Row("map lookups/s, one at a time", Fmt("%.0f", map_seq));
  Row("map lookups/s, 64 in flight", Fmt("%.0f", map_pipe),
      Fmt("%.1fx the sequential rate", map_pipe / map_seq));

  // --- commits ------------------------------------------------------------------------
  b.Create("commits", 65536 * kBs);
  auto cvol = b.Open("commits", true);
  uint64_t next_block = 0;
  double commit_seq = measure([&] { b.PrepareCommit(cvol, {next_block++ % 65536}).wait(ws); }, 1);
  double commit_pipe = measure(
      [&] {
        kj::Vector<kj::Promise<void>> inflight;
        for (int i = 0; i < 16; ++i) inflight.add(b.PrepareCommit(cvol, {next_block++ % 65536}));
        kj::joinPromises(inflight.releaseAsArray()).wait(ws);
      },
      16);
  Row("prepareWrite+commit pairs/s, one at a time", Fmt("%.0f", commit_seq), "each commit fsynced");
  Row("prepareWrite+commit pairs/s, 16 in flight", Fmt("%.0f", commit_pipe),
      Fmt("%.1fx the sequential rate", commit_pipe / commit_seq));
  // Batching: 4096 blocks per commit.
  {
    auto start = Clock::now();
    uint64_t blocks = 0;
    for (int round = 0; round < 4; ++round) {
      std::vector<uint64_t> lbs;
      for (uint64_t i = 0; i < 4096; ++i) lbs.push_back((next_block++) % 65536);
      b.PrepareCommit(cvol, lbs).wait(ws);
      blocks += lbs.size();
    }
    Row("blocks committed/s, 4096 blocks per commit",
        Fmt("%.0f", static_cast<double>(blocks) / Seconds(Clock::now() - start)),
        Fmt("%.0fx one block per commit",
            static_cast<double>(blocks) / Seconds(Clock::now() - start) / commit_seq));
  }
  cvol.closeRequest().send().wait(ws);

  // --- snapshot/clone: 1 extent vs many -----------------------------------------------
  b.Create("big", 2 * extents * kBs);
  auto big = b.Open("big", true);
  {
    auto start = Clock::now();
    for (uint64_t done = 0; done < extents;) {
      std::vector<uint64_t> lbs;
      for (; done < extents && lbs.size() < 4096; ++done) lbs.push_back(2 * done);  // every other
      b.PrepareCommit(big, lbs).wait(ws);
    }
    double t = Seconds(Clock::now() - start);
    Row(("populate: " + std::to_string(extents) + " one-block extents").c_str(), Fmt("%.1f s", t),
        Fmt("%.0f blocks/s", static_cast<double>(extents) / t));
  }
  {
    auto req = big.mapRequest();
    req.setOffset(0);
    req.setLength(std::min<uint64_t>(2 * extents, 4096) * kBs);
    auto response = req.send().wait(ws);
    if (response.getExtents().size() < std::min<uint64_t>(2 * extents, 4096) - 1) {
      std::fprintf(stderr, "big volume is not fragmented as intended\n");
      return 1;
    }
  }
  big.closeRequest().send().wait(ws);
  small.closeRequest().send().wait(ws);
  const int kReps = 31;
  std::vector<double> snap_small, snap_big, clone_small, clone_big;
  for (int i = 0; i < kReps; ++i) {
    snap_small.push_back(b.TimeCopy(true, "small", "small-s" + std::to_string(i)));
    snap_big.push_back(b.TimeCopy(true, "big", "big-s" + std::to_string(i)));
    clone_small.push_back(b.TimeCopy(false, "small", "small-c" + std::to_string(i)));
    clone_big.push_back(b.TimeCopy(false, "big", "big-c" + std::to_string(i)));
  }
  double ss = Median(snap_small), sb = Median(snap_big), cs = Median(clone_small),
         cb = Median(clone_big);
  std::string big_label = std::to_string(extents) + " extents";
  Row("snapshot, volume with 1 mapped extent (median)", Fmt("%.2f ms", ss * 1e3));
  Row(("snapshot, volume with " + big_label + " (median)").c_str(), Fmt("%.2f ms", sb * 1e3),
      Fmt("ratio to 1 extent: %.2f", sb / ss));
  Row("clone, volume with 1 mapped extent (median)", Fmt("%.2f ms", cs * 1e3));
  Row(("clone, volume with " + big_label + " (median)").c_str(), Fmt("%.2f ms", cb * 1e3),
      Fmt("ratio to 1 extent: %.2f", cb / cs));

  // --- many clones --------------------------------------------------------------------
  {
    auto start = Clock::now();
    for (uint64_t i = 0; i < clones; ++i) b.TimeCopy(false, "big-s0", "vm" + std::to_string(i));
    double t = Seconds(Clock::now() - start);
    Row(("create " + std::to_string(clones) + " clones of one snapshot").c_str(), Fmt("%.2f s", t),
        Fmt("%.2f ms per clone", t * 1e3 / static_cast<double>(clones)));
  }
  // --- diff: 1 TiB, --extents mapped, then 10 / 1,000 changed blocks -----------------
  {
    const uint64_t tib_blocks = (1ull << 40) / kBs;
    b.Create("tib", tib_blocks * kBs);
    auto tib = b.Open("tib", true);
    for (uint64_t done = 0; done < extents;) {
      std::vector<uint64_t> lbs;
      for (; done < extents && lbs.size() < 4096; ++done) lbs.push_back(2 * done);
      b.PrepareCommit(tib, lbs).wait(ws);
    }
    uint64_t seed = 12345;
    auto random_block = [&] {
      seed = seed * 6364136223846793005ull + 1442695040888963407ull;
      return (seed >> 17) % tib_blocks;
    };
    std::map<uint64_t, double> median_ms;
    uint64_t changed = 0;
    for (uint64_t target : {10, 1000}) {
      b.TimeCopy(true, "tib", "tib-base-" + std::to_string(target));
      std::vector<uint64_t> lbs;
      while (lbs.size() < target) lbs.push_back(random_block());
      std::sort(lbs.begin(), lbs.end());
      lbs.erase(std::unique(lbs.begin(), lbs.end()), lbs.end());
      b.PrepareCommit(tib, lbs).wait(ws);
      std::vector<double> times;
      for (int i = 0; i < 11; ++i) {
        auto start = Clock::now();
        auto req = b.session.diffRequest();
        req.setFrom("tib-base-" + std::to_string(target));
        req.setTo("tib");
        req.setMaxExtents(65536);
        auto r = req.send().wait(ws);
        times.push_back(Seconds(Clock::now() - start));
        changed = r.getExtents().size();
      }
      median_ms[target] = Median(times) * 1e3;
      if (changed > target || changed * 2 < target) {
        std::fprintf(stderr, "diff found %llu extents for %llu changed blocks\n",
                     static_cast<unsigned long long>(changed), static_cast<unsigned long long>(target));
        return 1;
      }
    }
    tib.closeRequest().send().wait(ws);
    Row(("diff, 1 TiB volume, " + std::to_string(extents) + " mapped, 10 changed").c_str(),
        Fmt("%.2f ms", median_ms[10]));
    Row(("diff, 1 TiB volume, " + std::to_string(extents) + " mapped, 1000 changed").c_str(),
        Fmt("%.2f ms", median_ms[1000]), Fmt("%.0f us per changed block", median_ms[1000] * 1e3 / 1000));
  }

  auto stats_response = b.session.poolStatsRequest().send().wait(ws);
  auto stats = stats_response.getStats();
  Row("metadata size at the end",
      Fmt("%.1f MiB", static_cast<double>(stats.getMetadataBytes()) / (1 << 20)),
      std::to_string(stats.getVolumes()) + " volumes");
  conn = nullptr;
  server.Stop();
  return 0;
}

}  // namespace
}  // namespace tapmap::mapserver

int main(int argc, char** argv) {
  try {
    return tapmap::mapserver::Run(argc, argv);
  } catch (const kj::Exception& e) {
    std::fprintf(stderr, "mapserver_bench: %s\n",
                 tapmap::protocol::StatusFromException(e).ToString().c_str());
    return 1;
  }
}
