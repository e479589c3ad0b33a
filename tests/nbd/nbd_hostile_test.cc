// Hostile NBD clients against the real tapdisk-map: garbage, silent and half-finished
// handshakes (more than the connection limit), floods of requests whose replies are
// never read, slow readers of large READs. The daemon's memory (peak RSS, VmHWM) and
// open fds stay under bounds that follow from its limits (--nbd-max-connections,
// --nbd-inflight-per-connection) while they are connected, a good client (qemu-io) is
// served meanwhile, and every fd is given back once they go.
#include <sys/socket.h>

#include <catch2/catch.hpp>
#include <dirent.h>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "tests/nbd/daemon_fixture.h"
#include "tests/nbd/nbd_test_client.h"
#include "tests/support/wait_until.h"

namespace tapmap::nbd {
namespace {

using testing::DaemonFixture;
using testing::NbdTestClient;
using testing::Run;
using tapmap::testing::WaitUntil;

constexpr uint64_t kMiB = 1u << 20;

// A /proc/PID/status field in bytes ("VmRSS", "VmHWM").
uint64_t ProcStatusBytes(pid_t pid, const std::string& field) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  for (std::string line; std::getline(in, line);) {
    if (line.rfind(field + ":", 0) == 0) return std::stoull(line.substr(field.size() + 1)) * 1024;
  }
  return 0;
}

size_t OpenFds(pid_t pid) {
  size_t n = 0;
  if (DIR* d = ::opendir(("/proc/" + std::to_string(pid) + "/fd").c_str())) {
    while (::readdir(d) != nullptr) ++n;
    ::closedir(d);
  }
  return n - 2;  // . and ..
}

TEST_CASE("hostile NBD clients: memory and fds stay bounded, a good client is served") {
  constexpr uint32_t kMaxConnections = 48;
  constexpr uint64_t kInflight = 16 * kMiB;
  DaemonFixture f("1G", "64M",
                  {"--nbd-max-connections", std::to_string(kMaxConnections), "--nbd-inflight-per-connection", "16M"});
  const pid_t pid = f.tapdisk_pid();
  f.Tapmap({"volume", "create", "vm", "64M"});
  const std::string url = f.Url("vm");
  std::string out;
  REQUIRE(Run({"qemu-io", "-f", "raw", "-c", "write -P 0x42 0 8M", "-c", "read -P 0x42 0 8M", url}, &out) == 0);
  const size_t fds_before = OpenFds(pid);
  const uint64_t rss_before = ProcStatusBytes(pid, "VmRSS");
  auto listener = [&] { return f.Tapmap({"nbd", "list"})["exports"][0]; };

  // 1. Garbage: the connection is closed at once (bad client flags / magic).
  std::mt19937 rng(7);
  for (int i = 0; i < 32; ++i) {
    NbdTestClient c(testing::ConnectUnixSocket(f.nbd_socket()));
    std::vector<uint8_t> junk(4096);
    for (auto& b : junk) b = static_cast<uint8_t>(rng());
    c.WriteRaw(junk.data(), junk.size());
    CHECK(c.PeerClosed());
  }
  // 3. Flooders: zero-length READs (each fails at once), replies never read.
  constexpr int kFlooders = 8;
  std::vector<NbdTestClient> flooders;
  std::vector<uint8_t> flood;
  for (uint32_t i = 0; i < 4096; ++i) {
    auto bytes = EncodeRequest({kRequestMagic, 0, static_cast<uint16_t>(Command::kRead), i, 0, 0});
    flood.insert(flood.end(), bytes.begin(), bytes.end());
  }
  for (int i = 0; i < kFlooders; ++i) {
    flooders.emplace_back(testing::ConnectUnixSocket(f.nbd_socket()));
    uint64_t size = 0;
    uint16_t flags = 0;
    REQUIRE(flooders.back().Handshake("vm", true, &size, &flags));
  }
  std::vector<uint64_t> sent(kFlooders, 0);
  auto pump = [&] {
    for (int i = 0; i < kFlooders; ++i) {
      for (size_t n; (n = flooders[i].SendSome(flood.data() + sent[i] % flood.size(),
                                                flood.size() - sent[i] % flood.size())) > 0;) {
        sent[i] += n;
      }
    }
  };
  // 4. Slow readers: 1 MiB READs, never read; each may hold its connection's budget
  // (16 MiB of read data) and no more.
  constexpr int kSlow = 2;
  std::vector<NbdTestClient> slow;
  for (int s = 0; s < kSlow; ++s) {
    slow.emplace_back(testing::ConnectUnixSocket(f.nbd_socket()));
    uint64_t size = 0;
    uint16_t flags = 0;
    REQUIRE(slow.back().Handshake("vm", false, &size, &flags));
    for (uint32_t i = 0; i < 64; ++i) {
      slow.back().SendRequest(static_cast<uint16_t>(Command::kRead), 0, i, (i % 64) * kMiB, kMiB);
    }
  }

  // 2. Silent clients and handshakes stopped halfway (an option header cut short),
  // three times as many as the daemon takes: at the limit each new one displaces the
  // oldest connection still negotiating.
  constexpr int kSilent = 80, kHalfway = 80;
  std::vector<NbdTestClient> idle;
  for (int i = 0; i < kSilent; ++i) idle.emplace_back(testing::ConnectUnixSocket(f.nbd_socket()));
  for (int i = 0; i < kHalfway; ++i) {
    idle.emplace_back(testing::ConnectUnixSocket(f.nbd_socket()));
    if (!idle.back().StartOptions()) continue;  // displaced before its greeting was read
    auto header = EncodeOptionHeader({kOptionMagic, static_cast<uint32_t>(Option::kGo), 1000});
    idle.back().WriteRaw(header.data(), header.size());  // and never the 1000 bytes
  }
  // The positive sign that the daemon has stopped taking requests from every flooder
  // and from the slow reader: they all wait for budget.
  const bool all_waiting = WaitUntil(
      [&] {
        pump();
        return listener()["readers_waiting"].get<uint64_t>() == kFlooders + kSlow;
      },
      std::chrono::seconds(60), std::chrono::milliseconds(20));
  auto state = listener();
  INFO(state.dump());
  REQUIRE(all_waiting);
  uint64_t requests_sent = 0;
  for (uint64_t s : sent) requests_sent += s / kRequestSize;
  INFO("zero-length READs sent: " << requests_sent);
  CHECK(requests_sent > kFlooders * 512);  // more than their budgets: the rest wait in sockets
  CHECK(state["replies_unwritten"].get<uint64_t>() <= (kFlooders + kSlow) * 512);
  // The handshakers displaced one another: the daemon holds at most its limit.
  CHECK(WaitUntil([&] { return listener()["connections"].get<uint64_t>() <= kMaxConnections; }));

  // A good client is served meanwhile.
  REQUIRE(Run({"qemu-io", "-f", "raw", "-c", "write -P 0x77 16M 4M", "-c", "read -P 0x77 16M 4M", "-c",
               "read -P 0x42 0 8M", url},
              &out) == 0);
  CHECK(out.find("failed") == std::string::npos);

  // Bounds. Peak memory: what it had, plus the data cache filling up (64 MiB, the
  // fixture's --cache-size), plus the slow readers' budgets (16 MiB of read data each),
  // plus 32 MiB for everything else (the flooders' unwritten replies, at most 512 x 4
  // KiB each; a 256 KiB input buffer per transmission; the good client's I/O).
  const uint64_t peak = ProcStatusBytes(pid, "VmHWM");
  INFO("RSS before " << rss_before / kMiB << " MiB, peak " << peak / kMiB << " MiB");
  CHECK(peak <= rss_before + 64 * kMiB + kSlow * kInflight + 32 * kMiB);
  // Fds: at most one per connection the daemon takes, and nothing else.
  const size_t clients = idle.size() + flooders.size() + slow.size();
  const size_t fds_during = OpenFds(pid);
  INFO("fds before " << fds_before << ", with " << clients << " hostile clients " << fds_during);
  CHECK(fds_during <= fds_before + kMaxConnections + 4);
  WARN("hostile NBD clients: " << requests_sent << " zero-length READs sent, "
                                 << state["replies_unwritten"].get<uint64_t>() << " replies unwritten ("
                                 << state["reply_bytes_unwritten"].get<uint64_t>() << " bytes); RSS "
                                 << rss_before / kMiB << " MiB before, peak " << peak / kMiB << " MiB; fds "
                                 << fds_before << " before, " << fds_during << " with " << clients << " clients");

  // They go: every fd comes back.
  idle.clear();
  flooders.clear();
  slow.clear();
  CHECK(WaitUntil([&] { return OpenFds(pid) <= fds_before + 1; }, std::chrono::seconds(30)));
  CHECK(WaitUntil([&] { return listener()["connections"].get<uint64_t>() == 0; }, std::chrono::seconds(30)));
  CHECK(listener()["replies_unwritten"].get<uint64_t>() == 0);
  CHECK(f.StopTapdisk() == 0);
}

}  // namespace
}  // namespace tapmap::nbd
