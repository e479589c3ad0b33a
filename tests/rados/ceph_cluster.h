// CephCluster: a real one-node Ceph cluster (tests/support/ceph_cluster.sh: one
// monitor, one memstore OSD, 127.0.0.1, auth none) for the duration of one test, with
// a Ceph pool of its own. RAII: the destructor stops both daemons.
//
// Where Ceph cannot run (packages missing, the daemons do not start) the constructor
// prints "SKIPPED: ceph: <reason>" and ends the test program with exit status 77,
// which CTest reports as skipped (SKIP_RETURN_CODE), never as passed.
//
// Ports: the monitor takes MON_PORT and MON_PORT+1, the OSD MON_PORT+2..+49. A test
// picks a 50-port window from 20000..34999 starting at one derived from its pid and
// moves on while the monitor's ports are taken, so parallel tests do not collide.
#pragma once

#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "tests/support/child_process.h"

namespace tapmap::testing {

class CephCluster {
 public:
  static constexpr const char* kPool = "tapmap-test";

  CephCluster() : dir_("tapmap-ceph") {
    const std::string script = std::string(TAPMAP_SOURCE_DIR) + "/tests/support/ceph_cluster.sh";
    const auto t0 = std::chrono::steady_clock::now();
    std::string out;
    int port = PickPort();
    int rc = RunCommand({script, "start", cluster_dir(), std::to_string(port)}, &out, std::chrono::seconds(90));
    if (rc == 0) {
      started_ = true;
      // Stops the cluster if this process dies before its destructor runs.
      watcher_ = std::make_unique<ChildProcess>(
          std::vector<std::string>{script, "watch", cluster_dir(), std::to_string(::getpid())},
          cluster_dir() + "/log/watch.log");
      rc = RunCommand({script, "pool", cluster_dir(), kPool}, &out, std::chrono::seconds(90));
    }
    if (rc != 0) Skip(rc == 77 ? out : "the cluster did not start (exit " + std::to_string(rc) + "): " + out);
    start_seconds_ = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf("ceph cluster on port %d up in %.2f s\n", port, start_seconds_);
  }
  ~CephCluster() { Stop(); }
  CephCluster(const CephCluster&) = delete;
  CephCluster& operator=(const CephCluster&) = delete;

  // Stops the daemons (idempotent); the test may go on without a cluster.
  void Stop() {
    if (!started_) return;
    started_ = false;
    Resume();  // a stopped (SIGSTOP) OSD would not see SIGTERM
    std::string out;
    if (RunCommand({std::string(TAPMAP_SOURCE_DIR) + "/tests/support/ceph_cluster.sh", "stop", cluster_dir()}, &out,
                   std::chrono::seconds(60)) != 0) {
      std::fprintf(stderr, "ceph_cluster.sh stop: %s\n", out.c_str());
    }
    watcher_.reset();
  }
  // Freezes / thaws the OSD (SIGSTOP / SIGCONT): its operations stall meanwhile.
  void Pause() { SignalOsd(SIGSTOP); }
  void Resume() { SignalOsd(SIGCONT); }

  std::string conf() const { return cluster_dir() + "/ceph.conf"; }
  // "rados:tapmap-test/PREFIX?conf=...&timeout=SECONDS"
  std::string Location(const std::string& prefix, unsigned timeout_seconds = 10) const {
    return "rados:" + std::string(kPool) + "/" + prefix + "?conf=" + conf() + "&timeout=" +
           std::to_string(timeout_seconds);
  }
  double start_seconds() const { return start_seconds_; }
  // A scratch directory for the test (removed with the cluster).
  std::string path(const std::string& name) const { return dir_ / name; }

 private:
  std::string cluster_dir() const { return dir_ / "ceph"; }

  [[noreturn]] void Skip(const std::string& reason) {
    std::string text = reason;
    const std::string tag = "SKIPPED: ceph: ";
    if (text.rfind(tag, 0) != 0) text = tag + text;
    std::printf("%s\n", text.c_str());
    std::fflush(stdout);
    Stop();
    std::error_code ec;
    std::filesystem::remove_all(dir_.path(), ec);
    std::_Exit(77);
  }

  void SignalOsd(int signal) {
    std::ifstream in(cluster_dir() + "/run/osd.0.pid");
    pid_t pid = 0;
    if (in >> pid && pid > 0) {
      std::ifstream cmdline("/proc/" + std::to_string(pid) + "/cmdline");
      std::string text((std::istreambuf_iterator<char>(cmdline)), std::istreambuf_iterator<char>());
      if (text.find(conf()) != std::string::npos) ::kill(pid, signal);
    }
  }

  static bool PortFree(int port) {
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return false;
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(port));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bool ok = ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
    ::close(fd);
    return ok;
  }
  static int PickPort() {
    constexpr int kBase = 20000, kWindows = 300, kWidth = 50;
    int first = static_cast<int>(::getpid()) % kWindows;
    for (int i = 0; i < kWindows; ++i) {
      int port = kBase + ((first + i) % kWindows) * kWidth;
      if (PortFree(port) && PortFree(port + 1) && PortFree(port + 2)) return port;
    }
    return kBase;
  }

  TempDir dir_;
  std::unique_ptr<ChildProcess> watcher_;
  bool started_ = false;
  double start_seconds_ = 0;
};

}  // namespace tapmap::testing
