// The mapserver's metadata in RADOS (mapserver/doc/metadata_rados.md), with the real
// programs on a one-node Ceph cluster: every acknowledged change survives a kill -9 of
// the mapserver and a restart on an empty local directory; a standby takes over when
// the active is killed, within a bound, with nothing acknowledged lost; an active that
// was frozen while the standby took over cannot write metadata when it wakes up.
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <algorithm>
#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <mutex>
#include <set>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "tests/rados/ceph_cluster.h"

namespace tapmap::rados_test {
namespace {

using tapmap::testing::CephCluster;
using tapmap::testing::ChildProcess;
using tapmap::testing::RunCommand;
using tapmap::testing::WaitForPath;
using Clock = std::chrono::steady_clock;

std::string Bin(const std::string& name) { return std::string(TAPMAP_BIN_DIR) + "/" + name; }

// The active lock's duration: 4 s, or $LOCK_SECONDS (e.g. the default 6 for the soak).
std::string LockSeconds() { return std::getenv("LOCK_SECONDS") ? std::getenv("LOCK_SECONDS") : "4"; }

class Rig {
 public:
  explicit Rig(const CephCluster& cluster) : cluster_(cluster), location_(cluster.Location("md", 5)) {
    std::ofstream(path("secret")) << "rados metadata secret\n";
    ::chmod(path("secret").c_str(), 0600);
    std::ofstream(path("tapmap.conf")) << "# defaults only\n";
    std::string out;
    int rc = RunCommand({Bin("mapserver"), "format", "--config", path("tapmap.conf"), "--pool", location_, "--meta",
                         path("format-meta"), "--size", "1G", "--block-size", "64K", "--object-size", "1M"},
                        &out);
    INFO(out);
    REQUIRE(rc == 0);
  }

  // `mapserver serve` with local metadata in `meta` listening on unix:path(sock).
  std::unique_ptr<ChildProcess> Serve(const std::string& name, bool standby, int checkpoint_every = 1000) {
    ::unlink(path(name + ".sock").c_str());
    std::vector<std::string> argv{Bin("mapserver"), "serve", "--config", path("tapmap.conf"), "--pool", location_,
                                  "--meta", path(name + "-meta"), "--listen", "unix:" + path(name + ".sock"),
                                  "--secret-file", path("secret"), "--lock-seconds", LockSeconds(), "--checkpoint-every",
                                  std::to_string(checkpoint_every)};
    if (standby) argv.push_back("--standby");
    return std::make_unique<ChildProcess>(argv, path(name + ".log"));
  }
  bool WaitListening(const std::string& name, std::chrono::seconds timeout) {
    return WaitForPath(path(name + ".sock"), timeout);
  }

  // `tapmap --json volume ARGS` against server `name`; its exit status.
  int Volume(const std::string& name, std::vector<std::string> args, std::string* out = nullptr) {
    std::vector<std::string> argv{Bin("tapmap"), "--config", path("tapmap.conf"), "--json", "--server",
                                  "unix:" + path(name + ".sock"), "--secret-file", path("secret"), "volume"};
    argv.insert(argv.end(), args.begin(), args.end());
    std::string local;
    return RunCommand(argv, out ? out : &local, std::chrono::seconds(60));
  }
  std::set<std::string> VolumeNames(const std::string& name) {
    std::string out;
    int rc = Volume(name, {"list"}, &out);
    INFO(out);
    REQUIRE(rc == 0);
    std::set<std::string> names;
    auto j = nlohmann::json::parse(out.substr(out.find('{')));
    for (const auto& v : j["volumes"]) names.insert(v["name"].get<std::string>());
    return names;
  }
  int Fsck(std::string* out) {
    return RunCommand({Bin("mapserver"), "fsck", "--config", path("tapmap.conf"), "--pool", location_}, out,
                      std::chrono::seconds(60));
  }
  std::string Log(const std::string& name) {
    std::ifstream in(path(name + ".log"));
    return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  }
  std::string path(const std::string& name) const { return cluster_.path(name); }

 private:
  const CephCluster& cluster_;
  std::string location_;
};

TEST_CASE("Metadata in RADOS: kill -9, then a server on an EMPTY local directory has every acknowledged change") {
  CephCluster cluster;
  Rig rig(cluster);
  auto a = rig.Serve("a", false, /*checkpoint_every=*/7);
  REQUIRE(rig.WaitListening("a", std::chrono::seconds(30)));
  std::set<std::string> made;
  for (int i = 0; i < 12; ++i) {
    std::string name = "v" + std::to_string(i);
    REQUIRE(rig.Volume("a", {"create", name, "4M"}) == 0);
    made.insert(name);
  }
  REQUIRE(rig.Volume("a", {"snapshot", "v3", "v3-snap"}) == 0);
  REQUIRE(rig.Volume("a", {"clone", "v3-snap", "v3-clone"}) == 0);
  REQUIRE(rig.Volume("a", {"delete", "v5"}) == 0);
  made.insert("v3-snap");
  made.insert("v3-clone");
  made.erase("v5");
  a->Signal(SIGKILL);
  REQUIRE(a->Wait(std::chrono::seconds(10)).has_value());
  a.reset();

  // A fresh server, empty local directory "b-meta": waits out the dead one's lock.
  const auto t0 = Clock::now();
  auto b = rig.Serve("b", false);
  REQUIRE(rig.WaitListening("b", std::chrono::seconds(30)));
  std::printf("restart on an empty directory: serving %.2f s after start\n",
              std::chrono::duration<double>(Clock::now() - t0).count());
  CHECK(rig.VolumeNames("b") == made);
  CHECK(rig.Log("b").find("restored metadata from RADOS") != std::string::npos);
  REQUIRE(b->Stop(std::chrono::seconds(30)) == 0);  // a clean stop: a last checkpoint

  std::string out;
  CHECK(rig.Fsck(&out) == 0);
  INFO(out);
  CHECK(out.find("fsck clean") != std::string::npos);
}

// Creates volumes w0, w1, ... on server `name` until stopped; records the acknowledged.
class Writer {
 public:
  Writer(Rig& rig, std::string name) : rig_(rig), name_(std::move(name)), thread_([this] { Run(); }) {}
  ~Writer() { Stop(); }
  void Stop() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }
  std::set<std::string> acknowledged() {
    std::lock_guard<std::mutex> guard(mu_);
    return acked_;
  }

 private:
  void Run() {
    for (int i = 0; !stop_; ++i) {
      std::string volume = "w" + std::to_string(i);
      if (rig_.Volume(name_, {"create", volume, "1M"}) == 0) {
        std::lock_guard<std::mutex> guard(mu_);
        acked_.insert(volume);
      }
    }
  }
  Rig& rig_;
  std::string name_;
  std::atomic<bool> stop_{false};
  std::mutex mu_;
  std::set<std::string> acked_;
  std::thread thread_;
};

TEST_CASE("Fail-over: kill -9 of the active under writes, the standby serves within 10 s and loses nothing acknowledged") {
  CephCluster cluster;
  Rig rig(cluster);
  auto a = rig.Serve("a", false, /*checkpoint_every=*/10);
  REQUIRE(rig.WaitListening("a", std::chrono::seconds(30)));
  auto b = rig.Serve("b", true);
  std::this_thread::sleep_for(std::chrono::seconds(1));
  CHECK(!WaitForPath(rig.path("b.sock"), std::chrono::milliseconds(100)));  // a standby does not listen

  std::set<std::string> acked;
  {
    Writer writer(rig, "a");
    std::this_thread::sleep_for(std::chrono::seconds(2));
    a->Signal(SIGKILL);
    REQUIRE(a->Wait(std::chrono::seconds(10)).has_value());
    const auto killed = Clock::now();
    bool listening = rig.WaitListening("b", std::chrono::seconds(30));
    INFO("standby's log:\n" << rig.Log("b"));
    REQUIRE(listening);
    const double takeover = std::chrono::duration<double>(Clock::now() - killed).count();
    std::printf("fail-over: the standby listens %.2f s after kill -9 of the active (lock %s s)\n", takeover,
                LockSeconds().c_str());
    CHECK(takeover < 10.0);
    writer.Stop();
    acked = writer.acknowledged();
  }
  REQUIRE(acked.size() >= 3);
  std::set<std::string> present = rig.VolumeNames("b");
  for (const auto& v : acked) {
    INFO("acknowledged volume " << v);
    CHECK(present.count(v) == 1);
  }
  CHECK(rig.Log("b").find("fenced the previous active mapserver") != std::string::npos);
  REQUIRE(rig.Volume("b", {"create", "after-failover", "1M"}) == 0);
  REQUIRE(b->Stop(std::chrono::seconds(30)) == 0);
  std::string out;
  CHECK(rig.Fsck(&out) == 0);
  INFO(out);
}

TEST_CASE("Zombie: an active frozen (SIGSTOP) during the takeover cannot write metadata when it wakes up") {
  CephCluster cluster;
  Rig rig(cluster);
  auto a = rig.Serve("a", false);
  REQUIRE(rig.WaitListening("a", std::chrono::seconds(30)));
  REQUIRE(rig.Volume("a", {"create", "before", "1M"}) == 0);
  auto b = rig.Serve("b", true);
  std::this_thread::sleep_for(std::chrono::seconds(1));

  a->Signal(SIGSTOP);
  const auto stopped = Clock::now();
  REQUIRE(rig.WaitListening("b", std::chrono::seconds(30)));
  std::printf("zombie: the standby listens %.2f s after SIGSTOP of the active\n",
              std::chrono::duration<double>(Clock::now() - stopped).count());
  REQUIRE(rig.Volume("b", {"create", "after", "1M"}) == 0);

  a->Signal(SIGCONT);
  // Whatever reaches the zombie first, a client's change or its lock renewal, it must
  // not acknowledge the change, and it must stop.
  std::string out;
  CHECK(rig.Volume("a", {"create", "zombie-write", "1M"}, &out) != 0);
  INFO(out);
  auto status = a->Wait(std::chrono::seconds(20));
  REQUIRE(status.has_value());
  CHECK(WIFEXITED(*status));
  CHECK(WEXITSTATUS(*status) == 3);
  INFO(rig.Log("a"));
  CHECK(rig.Log("a").find("FATAL") != std::string::npos);

  std::set<std::string> present = rig.VolumeNames("b");
  CHECK(present == std::set<std::string>{"before", "after"});
  REQUIRE(b->Stop(std::chrono::seconds(30)) == 0);
  CHECK(rig.Fsck(&out) == 0);
  INFO(out);
}

TEST_CASE("Fail-over with two hosts: tapdisk-maps given both addresses write on through the takeover") {
  CephCluster cluster;
  Rig rig(cluster);
  const std::string location = cluster.Location("md", 5);
  auto a = rig.Serve("a", false);
  REQUIRE(rig.WaitListening("a", std::chrono::seconds(30)));
  auto b = rig.Serve("b", true);
  const std::string both = "unix:" + rig.path("a.sock") + ",unix:" + rig.path("b.sock");
  const std::vector<std::string> hosts{"host1", "host2"};
  std::vector<std::unique_ptr<ChildProcess>> tapdisks;
  for (const auto& host : hosts) {
    REQUIRE(rig.Volume("a", {"create", "vm-" + host, "8M"}) == 0);
    tapdisks.push_back(std::make_unique<ChildProcess>(
        std::vector<std::string>{Bin("tapdisk-map"), "--config", rig.path("tapmap.conf"), "--server", both, "--pool",
                                 location, "--secret-file", rig.path("secret"), "--host-name", host, "--control",
                                 rig.path(host + ".ctl"), "--nbd", "unix:" + rig.path(host + ".nbd"), "--cache-size",
                                 "32M", "--xen", "off"},
        rig.path(host + ".log")));
  }
  for (const auto& host : hosts) REQUIRE(WaitForPath(rig.path(host + ".nbd"), std::chrono::seconds(30)));
  // qemu-io on host's volume through its NBD export.
  auto qemu_io = [&](const std::string& host, const std::vector<std::string>& commands, std::string* out) {
    std::vector<std::string> argv{"qemu-io", "-f", "raw"};
    for (const auto& c : commands) {
      argv.push_back("-c");
      argv.push_back(c);
    }
    argv.push_back("nbd+unix:///vm-" + host + "?socket=" + rig.path(host + ".nbd"));
    return RunCommand(argv, out, std::chrono::seconds(90));
  };
  std::string out;
  for (const auto& host : hosts) REQUIRE(qemu_io(host, {"write -P 0x11 0 2M", "flush"}, &out) == 0);

  a->Signal(SIGKILL);
  REQUIRE(a->Wait(std::chrono::seconds(10)).has_value());
  const auto killed = Clock::now();
  // New blocks need the (new) active: these writes, from both hosts at once, wait for
  // the takeover, then go on.
  std::vector<int> rcs(hosts.size(), -1);
  std::vector<std::string> outs(hosts.size());
  std::vector<double> seconds(hosts.size());
  {
    std::vector<std::thread> writers;
    for (size_t i = 0; i < hosts.size(); ++i) {
      writers.emplace_back([&, i] {
        rcs[i] = qemu_io(hosts[i], {"write -P 0x22 4M 2M", "flush"}, &outs[i]);
        seconds[i] = std::chrono::duration<double>(Clock::now() - killed).count();
      });
    }
    for (auto& w : writers) w.join();
  }
  for (size_t i = 0; i < hosts.size(); ++i) {
    INFO(hosts[i] << ": " << outs[i] << "\nits log:\n" << rig.Log(hosts[i]) << "\nstandby's log:\n" << rig.Log("b"));
    REQUIRE(rcs[i] == 0);
    std::printf("fail-over with two hosts: %s's write after kill -9 of the active completed %.2f s later\n",
                hosts[i].c_str(), seconds[i]);
  }
  for (const auto& host : hosts) {
    REQUIRE(qemu_io(host, {"read -P 0x11 0 2M", "read -P 0x22 4M 2M"}, &out) == 0);
    CHECK(out.find("fail") == std::string::npos);
  }
  // The CLI takes the list too: the first that answers.
  std::string cli_out;
  CHECK(RunCommand({Bin("tapmap"), "--config", rig.path("tapmap.conf"), "--json", "--server", both, "--secret-file",
                    rig.path("secret"), "volume", "list"},
                   &cli_out) == 0);
  CHECK(cli_out.find("\"vm-host2\"") != std::string::npos);
  for (auto& t : tapdisks) CHECK(t->Stop(std::chrono::seconds(30)) == 0);
  REQUIRE(b->Stop(std::chrono::seconds(30)) == 0);
  CHECK(rig.Fsck(&out) == 0);
  INFO(out);
}

TEST_CASE("A standby stops on SIGTERM without ever becoming active") {
  CephCluster cluster;
  Rig rig(cluster);
  auto a = rig.Serve("a", false);
  REQUIRE(rig.WaitListening("a", std::chrono::seconds(30)));
  auto b = rig.Serve("b", true);
  std::this_thread::sleep_for(std::chrono::seconds(1));
  const auto t0 = Clock::now();
  CHECK(b->Stop(std::chrono::seconds(10)) == 0);
  CHECK(std::chrono::duration<double>(Clock::now() - t0).count() < 2.0);
  CHECK(rig.Log("b").find("stopped by a signal") != std::string::npos);
  CHECK(rig.Volume("a", {"create", "still-active", "1M"}) == 0);
  REQUIRE(a->Stop(std::chrono::seconds(30)) == 0);
}

// The fail-over soak (hidden: run it with `rados_metadata_test "[.soak]"`, about 2
// minutes): ROUNDS rounds, alternately kill -9 and SIGSTOP (then SIGCONT once the
// standby took over) of the active under a writer; each round a fresh standby joins.
// Nothing acknowledged lost, every frozen old active exits 3, fsck clean; prints the
// takeover times' median and maximum.
TEST_CASE("Fail-over soak", "[.soak]") {
  const int rounds = std::getenv("ROUNDS") ? std::atoi(std::getenv("ROUNDS")) : 20;
  CephCluster cluster;
  Rig rig(cluster);
  std::string active = "s0";
  auto current = rig.Serve(active, false, /*checkpoint_every=*/25);
  REQUIRE(rig.WaitListening(active, std::chrono::seconds(30)));
  std::mutex mu;
  std::string target = active;
  std::set<std::string> acked;
  std::atomic<bool> stop{false};
  std::thread writer([&] {
    for (int i = 0; !stop; ++i) {
      std::string server;
      {
        std::lock_guard<std::mutex> guard(mu);
        server = target;
      }
      std::string volume = "w" + std::to_string(i);
      if (rig.Volume(server, {"create", volume, "1M"}) == 0) {
        std::lock_guard<std::mutex> guard(mu);
        acked.insert(volume);
      } else {
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
      }
    }
  });
  std::vector<double> takeovers;
  for (int round = 1; round <= rounds; ++round) {
    const std::string next = "s" + std::to_string(round);
    auto standby = rig.Serve(next, true, 25);
    std::this_thread::sleep_for(std::chrono::milliseconds(1500));
    const bool freeze = round % 2 == 0;
    current->Signal(freeze ? SIGSTOP : SIGKILL);
    const auto t0 = Clock::now();
    bool listening = rig.WaitListening(next, std::chrono::seconds(30));
    INFO("round " << round << " standby's log:\n" << rig.Log(next));
    REQUIRE(listening);
    takeovers.push_back(std::chrono::duration<double>(Clock::now() - t0).count());
    {
      std::lock_guard<std::mutex> guard(mu);
      target = next;
    }
    if (freeze) current->Signal(SIGCONT);
    auto status = current->Wait(std::chrono::seconds(20));
    REQUIRE(status.has_value());
    if (freeze) CHECK((WIFEXITED(*status) && WEXITSTATUS(*status) == 3));
    current = std::move(standby);
    active = next;
  }
  stop = true;
  writer.join();
  std::set<std::string> present = rig.VolumeNames(active);
  size_t lost = 0;
  for (const auto& v : acked) lost += present.count(v) == 0;
  CHECK(lost == 0);
  std::sort(takeovers.begin(), takeovers.end());
  std::printf("fail-over soak: %d rounds, %zu acknowledged creates, %zu lost, takeover median %.2f s max %.2f s "
              "(lock %s s)\n",
              rounds, acked.size(), lost, takeovers[takeovers.size() / 2], takeovers.back(), LockSeconds().c_str());
  REQUIRE(current->Stop(std::chrono::seconds(30)) == 0);
  std::string out;
  CHECK(rig.Fsck(&out) == 0);
  INFO(out);
}

}  // namespace
}  // namespace tapmap::rados_test
