// DaemonFixture: a real mapserver and a real tapdisk-map (as built) in a temp dir, for
// integration tests and benches of the NBD export with real NBD clients. The mapserver
// can be killed (-9) and restarted; tapdisk-map can be stopped and restarted. Volume
// administration goes through the `tapmap` CLI, as a person would do it.
//
// Compiled with TAPMAP_TEST_RADOS_POOL (tests/rados: rados_nbd_daemon_test) the pool is
// a RADOS pool in a one-node Ceph cluster of the fixture's own instead of a file.
#pragma once

#include <signal.h>
#include <sys/stat.h>

#include <catch2/catch.hpp>
#include <fstream>
#include <sstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "tests/support/child_process.h"
#ifdef TAPMAP_TEST_RADOS_POOL
#include "tests/rados/ceph_cluster.h"
#endif

namespace tapmap::nbd::testing {

using tapmap::testing::ChildProcess;
using tapmap::testing::RunCommand;
using tapmap::testing::TempDir;
using tapmap::testing::WaitForPath;

inline std::string Bin(const std::string& name) { return std::string(TAPMAP_BIN_DIR) + "/" + name; }

// Runs a command; on failure prints its output (so a failing test shows why).
inline int Run(const std::vector<std::string>& argv, std::string* out = nullptr) {
  std::string local;
  std::string* output = out ? out : &local;
  int rc = RunCommand(argv, output);
  if (rc != 0) {
    std::string line;
    for (const auto& a : argv) line += a + " ";
    std::fprintf(stderr, "command failed (%d): %s\n%s\n", rc, line.c_str(), output->c_str());
  }
  return rc;
}

class DaemonFixture {
 public:
  // `tapdisk_args` are added to tapdisk-map's command line (e.g. more --nbd listeners).
  explicit DaemonFixture(std::string pool_size = "1G", std::string cache_size = "64M",
                         std::vector<std::string> tapdisk_args = {})
      : dir_("tapmap-nbd-it"), cache_size_(std::move(cache_size)), tapdisk_args_(std::move(tapdisk_args)) {
    std::ofstream(secret()) << "nbd integration secret\n";
    ::chmod(secret().c_str(), 0600);
    std::ofstream(config()) << "# defaults only\n";
    REQUIRE(Run({Bin("mapserver"), "format", "--config", config(), "--pool", pool(), "--meta", dir_ / "meta",
                 "--size", pool_size, "--block-size", "64K"}) == 0);
    StartMapserver();
    StartTapdisk();
  }

  void StartMapserver() {
    ::unlink(mapserver_socket().c_str());
    mapserver_ = std::make_unique<ChildProcess>(
        std::vector<std::string>{Bin("mapserver"), "serve", "--config", config(), "--pool", pool(), "--meta",
                                 dir_ / "meta", "--listen", "unix:" + mapserver_socket(), "--secret-file", secret()},
        dir_ / "mapserver.log");
    REQUIRE(WaitForPath(mapserver_socket(), std::chrono::seconds(30)));
  }
  void KillMapserver() {
    mapserver_->Signal(SIGKILL);
    mapserver_->Wait(std::chrono::seconds(30));
    mapserver_.reset();
  }

  void StartTapdisk() {
    std::vector<std::string> argv{Bin("tapdisk-map"), "--config", config(), "--server", "unix:" + mapserver_socket(),
                                  "--pool", pool(), "--secret-file", secret(), "--host-name", "nbd-it",
                                  "--control", control_socket(), "--nbd", "unix:" + nbd_socket(), "--cache-size",
                                  cache_size_, "--xen", "off", "--metrics", "unix:" + (dir_ / "metrics.sock")};
    argv.insert(argv.end(), tapdisk_args_.begin(), tapdisk_args_.end());
    tapdisk_ = std::make_unique<ChildProcess>(std::move(argv), dir_ / "tapdisk-map.log");
    REQUIRE(WaitForPath(nbd_socket(), std::chrono::seconds(30)));
    REQUIRE(WaitForPath(control_socket(), std::chrono::seconds(30)));
  }
  // SIGTERM; returns the exit status as from waitpid.
  int StopTapdisk() {
    int status = tapdisk_->Stop(std::chrono::seconds(60));
    tapdisk_.reset();
    return status;
  }

  // `tapmap --json ARGS...` against this mapserver (volume commands) or this
  // tapdisk-map (`stats`, `vbd ...`: their flags differ); parsed output.
  nlohmann::json Tapmap(std::vector<std::string> args) {
    std::vector<std::string> argv = {Bin("tapmap"), "--config", config(), "--json"};
    if (args[0] == "volume") {
      argv.insert(argv.end(), {"--server", "unix:" + mapserver_socket(), "--secret-file", secret()});
    } else {
      argv.insert(argv.end(), {"--control", control_socket()});
    }
    argv.insert(argv.end(), args.begin(), args.end());
    std::string out;
    REQUIRE(Run(argv, &out) == 0);
    return nlohmann::json::parse(out);
  }

  pid_t tapdisk_pid() const { return tapdisk_->pid(); }

  // tapdisk-map's log so far (for a failing check's message).
  std::string TapdiskLog() const {
    std::ifstream in(dir_ / "tapdisk-map.log");
    std::stringstream text;
    text << in.rdbuf();
    return text.str();
  }

  std::string Url(const std::string& volume) const { return "nbd+unix:///" + volume + "?socket=" + nbd_socket(); }
  std::string path(const std::string& name) const { return dir_ / name; }
#ifdef TAPMAP_TEST_RADOS_POOL
  std::string pool() const { return ceph_.Location("nbd-it"); }
#else
  std::string pool() const { return dir_ / "pool"; }
#endif
  std::string secret() const { return dir_ / "secret"; }
  std::string config() const { return dir_ / "tapmap.conf"; }
  std::string mapserver_socket() const { return dir_ / "ms.sock"; }
  std::string nbd_socket() const { return dir_ / "nbd.sock"; }
  std::string control_socket() const { return dir_ / "ctl.sock"; }

 private:
#ifdef TAPMAP_TEST_RADOS_POOL
  tapmap::testing::CephCluster ceph_;  // first in, last out: the daemons use it
#endif
  TempDir dir_;
  std::string cache_size_;
  std::vector<std::string> tapdisk_args_;
  std::unique_ptr<ChildProcess> mapserver_;
  std::unique_ptr<ChildProcess> tapdisk_;
};

}  // namespace tapmap::nbd::testing
