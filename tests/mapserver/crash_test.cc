// Crash safety of `mapserver serve`: a client runs a random workload of
// prepareWrite/commit/discard/snapshot/clone/delete while another thread kill -9s the
// server at a random moment. After a restart every acknowledged change must be there,
// the one operation in flight may or may not have happened, and fsck must be clean.
//
// CRASH_ROUNDS rounds (a few in `make test`, many in the slow soak binary).
//
// Compiled with TAPMAP_TEST_RADOS_POOL (tests/rados: rados_crash_test) the pool is a
// RADOS pool of a one-node Ceph cluster, so the metadata's durable home is RADOS
// (mapserver/doc/metadata_rados.md): every start of the server gets an EMPTY local
// metadata directory, so what it finds is only what the RADOS journal and checkpoints
// hold; the restarted server takes the lock over from the killed one.
#include <signal.h>
#include <sys/stat.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <fstream>
#include <map>
#include <optional>
#include <random>
#include <thread>

#include "protocol/connection.h"
#include "protocol/remote_status.h"
#include "tests/support/child_process.h"
#include "tests/support/wait_until.h"
#ifdef TAPMAP_TEST_RADOS_POOL
#include "tests/rados/ceph_cluster.h"
#endif

#ifndef CRASH_ROUNDS
#define CRASH_ROUNDS 4
#endif

namespace tapmap::mapserver {
namespace {

using tapmap::testing::ChildProcess;
using tapmap::testing::RunCommand;
using tapmap::testing::WaitUntil;
constexpr uint64_t kBs = 4096;
constexpr uint64_t kVolumeBlocks = 512;
const std::string kMapserver = std::string(TAPMAP_BIN_DIR) + "/mapserver";

struct Entry {
  uint64_t physical = 0;
  uint64_t generation = 0;
  bool operator==(const Entry&) const = default;
};
using BlockMap = std::map<uint64_t, Entry>;  // logical block -> content name

// What the client knows was acknowledged.
struct Model {
  std::map<std::string, BlockMap> volumes;
  std::map<std::string, bool> read_only;
};

// The operation that was in flight when the server died.
struct Uncertain {
  enum class Kind { kNone, kCommit, kDiscard, kCreateLike, kDelete } kind = Kind::kNone;
  std::string volume;
  BlockMap new_entries;           // kCommit
  uint64_t first = 0, count = 0;  // kDiscard blocks
};

class Callback final : public proto::MapCallback::Server {
  kj::Promise<void> recall(RecallContext) override { return kj::READY_NOW; }
  kj::Promise<void> revoke(RevokeContext) override { return kj::READY_NOW; }
  kj::Promise<void> sizeChanged(SizeChangedContext) override { return kj::READY_NOW; }
};

BlockMap ReadMap(proto::Session::Client session, const std::string& name, kj::WaitScope& ws) {
  auto open = session.openRequest();
  open.setName(name);
  open.setMode(proto::OpenMode::READ_ONLY);
  open.setCallback(kj::heap<Callback>());
  auto volume = open.send().wait(ws).getVolume();
  auto req = volume.mapRequest();
  req.setOffset(0);
  req.setLength(kVolumeBlocks * kBs);
  BlockMap out;
  auto response = req.send().wait(ws);  // owns the message the readers point into
  for (auto e : response.getExtents()) {
    if (e.getState() == proto::ExtentState::HOLE) continue;
    for (uint64_t i = 0; i < e.getLength() / kBs; ++i) {
      out[e.getLogical() / kBs + i] = Entry{e.getPhysical() + i * kBs, e.getGeneration()};
    }
  }
  volume.closeRequest().send().wait(ws);
  return out;
}

class Round {
 public:
  Round(const std::string& dir, std::string pool, uint64_t seed) : dir_(dir), pool_(std::move(pool)), rng_(seed) {}

  std::unique_ptr<ChildProcess> StartServer() {
#ifdef TAPMAP_TEST_RADOS_POOL
    ++starts_;  // a fresh, empty local directory each time: the metadata comes from RADOS only
#endif
    std::vector<std::string> argv = {kMapserver, "serve", "--config", "/dev/null", "--pool", pool_,
                                     "--meta", MetaDir(), "--listen", "unix:" + dir_ + "/sock",
                                     "--secret-file", dir_ + "/secret", "--log-level", "warning"};
#ifdef TAPMAP_TEST_RADOS_POOL
    // The killed server's active lock must expire before this one takes over.
    argv.insert(argv.end(), {"--lock-seconds", "2"});
#endif
    return std::make_unique<ChildProcess>(argv, dir_ + "/serve.log");
  }
  // The local metadata directory of the latest start ("meta" for a file pool).
  std::string MetaDir() const { return dir_ + "/meta" + (starts_ == 0 ? "" : "-" + std::to_string(starts_)); }

  kj::Own<protocol::Connection> ConnectWithRetry(kj::AsyncIoContext& io) {
    auto address = *protocol::ParseServerAddress("unix:" + dir_ + "/sock");
    kj::Own<protocol::Connection> conn;
    REQUIRE(WaitUntil(
        [&] {
          auto c = protocol::Connection::ConnectBlocking(io, address, "crash-host", "s3cret");
          if (c.ok()) conn = kj::mv(*c);
          return conn.get() != nullptr;
        },
        std::chrono::seconds(20), std::chrono::milliseconds(20)));
    return conn;
  }

  // Runs operations until the connection fails; returns the number acknowledged.
  int Workload(kj::AsyncIoContext& io, proto::Session::Client session, Model* model,
               Uncertain* uncertain) {
    auto& ws = io.waitScope;
    std::map<std::string, proto::Volume::Client> open;
    int acked = 0;
    for (int op = 0;; ++op) {
      *uncertain = Uncertain{};
      std::vector<std::string> names;
      for (auto& [n, m] : model->volumes) names.push_back(n);
      int choice = static_cast<int>(rng_() % 10);
      Status status = protocol::RunCatching([&] {
        if (names.empty() || (choice == 0 && names.size() < 12)) {
          std::string name = "v" + std::to_string(serial_++);
          uncertain->kind = Uncertain::Kind::kCreateLike;
          uncertain->volume = name;
          auto req = session.createRequest();
          req.setName(name);
          req.setSizeBytes(kVolumeBlocks * kBs);
          req.send().wait(ws);
          model->volumes[name];
          model->read_only[name] = false;
          return;
        }
        std::string v = names[rng_() % names.size()];
        if (choice <= 5 && !model->read_only[v]) {
          if (open.find(v) == open.end()) {
            auto req = session.openRequest();
            req.setName(v);
            req.setMode(proto::OpenMode::READ_WRITE);
            req.setCallback(kj::heap<Callback>());
            open.emplace(v, req.send().wait(ws).getVolume());
          }
          auto volume = open.find(v)->second;
          uint64_t first = rng_() % kVolumeBlocks;
          uint64_t count = 1 + rng_() % std::min<uint64_t>(32, kVolumeBlocks - first);
          if (choice == 5) {
            uncertain->kind = Uncertain::Kind::kDiscard;
            uncertain->volume = v;
            uncertain->first = first;
            uncertain->count = count;
            auto req = volume.discardRequest();
            auto r = req.initRanges(1)[0];
            r.setOffset(first * kBs);
            r.setLength(count * kBs);
            req.send().wait(ws);
            for (uint64_t i = 0; i < count; ++i) model->volumes[v].erase(first + i);
            return;
          }
          // One prepare+commit, or (every third time) four in flight at once so
          // that the kill can land inside a group commit.
          int chains = rng_() % 3 == 0 ? 4 : 1;
          struct Chain {
            BlockMap fresh;
            bool acked = false;
            Status status;
          };
          auto state = std::make_shared<std::vector<Chain>>(chains);
          kj::Vector<kj::Promise<void>> inflight;
          uint64_t base = chains == 1 ? first : rng_() % (kVolumeBlocks - 4 * 40);
          for (int k = 0; k < chains; ++k) {
            uint64_t start = chains == 1 ? first : base + 40 * k;
            uint64_t n = chains == 1 ? count : 1 + rng_() % 32;
            auto prep = volume.prepareWriteRequest();
            auto r = prep.initRanges(1)[0];
            r.setOffset(start * kBs);
            r.setLength(n * kBs);
            inflight.add(prep.send()
                             .then([volume, state, k](auto prepared) mutable {
                               auto extents = prepared.getExtents();
                               for (auto e : extents) {
                                 for (uint64_t i = 0; i < e.getLength() / kBs; ++i) {
                                   (*state)[k].fresh[e.getLogical() / kBs + i] =
                                       Entry{e.getPhysical() + i * kBs, e.getGeneration()};
                                 }
                               }
                               auto commit = volume.commitRequest();
                               commit.setExtents(extents);
                               return commit.send().then(
                                   [state, k](auto) { (*state)[k].acked = true; });
                             })
                             .catch_([state, k](kj::Exception&& e) {
                               // Each chain settles on its own, so the join waits for all of them.
                               (*state)[k].status = protocol::StatusFromException(e);
                             }));
          }
          uncertain->kind = Uncertain::Kind::kCommit;
          uncertain->volume = v;
          kj::joinPromises(inflight.releaseAsArray()).wait(ws);
          Status done;
          for (auto& chain : *state) {
            if (!chain.status.ok() && done.ok()) done = chain.status;
          }
          for (auto& chain : *state) {
            if (chain.acked) {
              for (auto& [lb, e] : chain.fresh) model->volumes[v][lb] = e;
            } else {
              uncertain->new_entries.insert(chain.fresh.begin(), chain.fresh.end());
            }
          }
          if (!done.ok()) kj::throwFatalException(protocol::ToException(done));
          return;
        }
        if (choice <= 8 && names.size() < 16) {
          bool snapshot = choice == 7;
          std::string name = (snapshot ? "s" : "c") + std::to_string(serial_++);
          uncertain->kind = Uncertain::Kind::kCreateLike;
          uncertain->volume = name;
          if (snapshot) {
            auto req = session.snapshotRequest();
            req.setSource(v);
            req.setName(name);
            req.send().wait(ws);
          } else {
            auto req = session.cloneRequest();
            req.setSource(v);
            req.setName(name);
            req.send().wait(ws);
          }
          model->volumes[name] = model->volumes[v];
          model->read_only[name] = snapshot;
          return;
        }
        auto it = open.find(v);
        if (it != open.end()) {
          it->second.closeRequest().send().wait(ws);
          open.erase(it);
        }
        uncertain->kind = Uncertain::Kind::kDelete;
        uncertain->volume = v;
        auto req = session.deleteRequest();
        req.setName(v);
        req.send().wait(ws);
        model->volumes.erase(v);
        model->read_only.erase(v);
      });
      if (status.code() == StatusCode::kNoSpace) continue;  // a full pool changes nothing
      if (!status.ok()) {
        INFO(status.ToString());
        REQUIRE(status.code() == StatusCode::kUnavailable);  // only the kill may fail us
        return acked;
      }
      ++acked;
    }
  }

  // Checks the restarted server against the model; then adopts the server's state for
  // the uncertain operation.
  void Verify(kj::AsyncIoContext& io, proto::Session::Client session, Model* model,
              const Uncertain& uncertain) {
    auto& ws = io.waitScope;
    std::map<std::string, bool> present;
    auto listed = session.listRequest().send().wait(ws);
    for (auto info : listed.getVolumes()) {
      present[info.getName().cStr()] = info.getReadOnly();
    }
    for (auto& [name, blocks] : model->volumes) {
      INFO("volume " << name);
      bool maybe_absent =
          uncertain.kind == Uncertain::Kind::kCreateLike && uncertain.volume == name;
      bool maybe_deleted = uncertain.kind == Uncertain::Kind::kDelete && uncertain.volume == name;
      if (present.find(name) == present.end()) {
        REQUIRE((maybe_absent || maybe_deleted));
        continue;
      }
      BlockMap actual = ReadMap(session, name, ws);
      if (maybe_absent) {
        blocks = actual;  // created just before the kill: adopt
        continue;
      }
      if (uncertain.volume == name && uncertain.kind == Uncertain::Kind::kCommit) {
        for (auto& [lb, e] : uncertain.new_entries) {
          auto got = actual.find(lb);
          auto old = blocks.find(lb);
          bool is_new = got != actual.end() && got->second == e;
          bool is_old = (got == actual.end() && old == blocks.end()) ||
                        (got != actual.end() && old != blocks.end() && got->second == old->second);
          REQUIRE((is_new || is_old));
          if (got == actual.end())
            blocks.erase(lb);
          else
            blocks[lb] = got->second;
        }
      }
      if (uncertain.volume == name && uncertain.kind == Uncertain::Kind::kDiscard) {
        for (uint64_t lb = uncertain.first; lb < uncertain.first + uncertain.count; ++lb) {
          auto got = actual.find(lb);
          auto old = blocks.find(lb);
          REQUIRE((got == actual.end() || (old != blocks.end() && got->second == old->second)));
          if (got == actual.end()) blocks.erase(lb);
        }
      }
      REQUIRE(actual == blocks);
    }
    for (auto it = model->volumes.begin(); it != model->volumes.end();) {
      if (present.find(it->first) == present.end()) {
        model->read_only.erase(it->first);
        it = model->volumes.erase(it);
      } else {
        ++it;
      }
    }
    // Volumes the server has that the model does not: only the uncertain operation's
    // (a delete that did not happen, a create/snapshot/clone that did).
    for (auto& [name, ro] : present) {
      if (model->volumes.count(name)) continue;
      INFO("unexpected volume " << name);
      REQUIRE(uncertain.volume == name);
      REQUIRE((uncertain.kind == Uncertain::Kind::kDelete ||
               uncertain.kind == Uncertain::Kind::kCreateLike));
      model->volumes[name] = ReadMap(session, name, ws);
      model->read_only[name] = ro;
    }
  }

 private:
  std::string dir_;
  std::string pool_;
  int starts_ = 0;
  std::mt19937_64 rng_;
  int serial_ = 0;
};

TEST_CASE("kill -9 at random moments loses no acknowledged change and leaves fsck clean") {
  tapmap::testing::TempDir dir("tapmap-mapserver-crash");
  {
    std::ofstream(dir / "secret") << "s3cret\n";
    ::chmod((dir / "secret").c_str(), 0600);
  }
#ifdef TAPMAP_TEST_RADOS_POOL
  tapmap::testing::CephCluster ceph;
  const std::string pool = ceph.Location("crash");
#else
  const std::string pool = dir / "pool";
#endif
  std::string out;
  int formatted = RunCommand({kMapserver, "format", "--config", "/dev/null", "--pool", pool, "--meta", dir / "meta",
                              "--size", "64M", "--block-size", "4K"},
                             &out);
  INFO(out);
  REQUIRE(formatted == 0);
  uint64_t seed = std::random_device{}();
  INFO("seed " << seed);
  Round round(dir.path(), pool, seed);
  std::mt19937_64 timing(seed ^ 0x9e3779b97f4a7c15ull);
  Model model;
  int total_acked = 0;
  auto io = kj::setupAsyncIo();
  for (int r = 0; r < CRASH_ROUNDS; ++r) {
    INFO("round " << r);
    auto server = round.StartServer();
    Uncertain uncertain;
    {
      auto conn = round.ConnectWithRetry(io);
      if (r > 0) round.Verify(io, conn->session(), &model, uncertain);
      // Kill after a random delay while the workload runs.
      auto delay = std::chrono::milliseconds(30 + timing() % 400);
      pid_t pid = server->pid();
      // jthread: joined even if the workload's checks fail (no std::terminate).
      std::jthread killer([pid, delay] {
        std::this_thread::sleep_for(delay);
        ::kill(pid, SIGKILL);
      });
      total_acked += round.Workload(io, conn->session(), &model, &uncertain);
      killer.join();
    }
    server->Wait(std::chrono::milliseconds(10000));
    server.reset();

    // Restart: everything acknowledged must be there.
    server = round.StartServer();
    {
      auto conn = round.ConnectWithRetry(io);
      round.Verify(io, conn->session(), &model, uncertain);
      auto stats_response = conn->session().poolStatsRequest().send().wait(io.waitScope);
      auto stats = stats_response.getStats();
      CHECK(stats.getReservedBlocks() == 0);
    }
    REQUIRE(server->Stop() == 0);
    server.reset();
    std::string fsck;
    int rc = RunCommand({kMapserver, "fsck", "--config", "/dev/null", "--pool", pool, "--meta", round.MetaDir()},
                        &fsck);
    INFO(fsck);
    REQUIRE(rc == 0);
  }
  CHECK(total_acked > 0);
}

}  // namespace
}  // namespace tapmap::mapserver
