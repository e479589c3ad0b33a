// The real tapdisk-map daemon and a real mapserver, driven by real NBD clients: golden
// image import, clones isolated from each other and from the golden image, discard
// returning space, a mapserver killed mid-workload, and flushed writes surviving a
// daemon restart.
#include <catch2/catch.hpp>
#include <fstream>
#include <random>
#include <sys/wait.h>
#include <thread>

#include "tests/nbd/daemon_fixture.h"
#include "tests/nbd/nbd_test_client.h"
#include "tests/support/wait_until.h"

namespace tapmap::nbd {
namespace {

using testing::ChildProcess;
using testing::DaemonFixture;
using testing::Run;
using tapmap::testing::RunCommand;

// A raw image with random data and some zero megabytes.
void WriteImage(const std::string& path, int megabytes, uint64_t seed) {
  std::ofstream f(path, std::ios::binary);
  std::mt19937_64 rng(seed);
  std::vector<uint64_t> block(131072);
  for (int mb = 0; mb < megabytes; ++mb) {
    if (mb % 4 == 3) {
      std::fill(block.begin(), block.end(), 0);
    } else {
      for (auto& v : block) v = rng();
    }
    f.write(reinterpret_cast<const char*>(block.data()), block.size() * 8);
  }
}

std::vector<std::string> QemuIo(const std::string& url, std::vector<std::string> commands) {
  std::vector<std::string> argv = {"qemu-io", "-f", "raw"};
  for (auto& c : commands) {
    argv.push_back("-c");
    argv.push_back(c);
  }
  argv.push_back(url);
  return argv;
}

bool Clean(const std::string& out) {
  return out.find("Pattern verification failed") == std::string::npos && out.find("error") == std::string::npos &&
         out.find("failed") == std::string::npos;
}

TEST_CASE("clones through NBD: each reads its own data, sibling and golden image untouched") {
  DaemonFixture f;
  WriteImage(f.path("golden.raw"), 32, 1);
  f.Tapmap({"volume", "create", "golden", "32M"});
  REQUIRE(Run({"qemu-img", "convert", "-n", "-f", "raw", "-O", "raw", f.path("golden.raw"), f.Url("golden")}) == 0);
  f.Tapmap({"volume", "snapshot", "golden", "golden-v1"});
  f.Tapmap({"volume", "clone", "golden-v1", "c1"});
  f.Tapmap({"volume", "clone", "golden-v1", "c2"});

  std::string out;
  // Whole blocks, a partial block (copy-on-write merges the old content) and a write
  // into a zero (hole) area of the golden image.
  REQUIRE(Run(QemuIo(f.Url("c1"), {"write -P 0x5a 1048576 2097152", "write -P 0x77 5246976 8192",
                                   "write -P 0x33 3145728 65536", "flush"}),
              &out) == 0);
  REQUIRE(Clean(out));
  REQUIRE(Run(QemuIo(f.Url("c1"), {"read -P 0x5a 1048576 2097152", "read -P 0x77 5246976 8192",
                                   "read -P 0x33 3145728 65536"}),
              &out) == 0);
  CHECK(Clean(out));
  // The rest of c1 is still the golden image: compare the untouched tail.
  REQUIRE(Run({"qemu-img", "compare", "-f", "raw", "-F", "raw", f.path("golden.raw"), f.Url("c2")}, &out) == 0);
  REQUIRE(Run({"qemu-img", "compare", "-f", "raw", "-F", "raw", f.path("golden.raw"), f.Url("golden-v1")}, &out) == 0);
  REQUIRE(Run({"qemu-img", "compare", "-f", "raw", "-F", "raw", f.path("golden.raw"), f.Url("golden")}, &out) == 0);
  std::string c1copy = f.path("c1.raw");
  REQUIRE(Run({"nbdcopy", f.Url("c1"), c1copy}, &out) == 0);
  REQUIRE(Run({"cmp", "-n", "1048576", c1copy, f.path("golden.raw")}, &out) == 0);
  REQUIRE(Run({"cmp", "-i", "6291456", c1copy, f.path("golden.raw")}, &out) == 0);
  // A snapshot is exported read-only.
  CHECK(Run({"nbdinfo", "--json", f.Url("golden-v1")}, &out) == 0);
  CHECK(out.find("\"is_read_only\": true") != std::string::npos);

  // The control socket reports the reads and the export.
  auto stats = f.Tapmap({"stats"});
  INFO(stats.dump());
  CHECK(stats.dump().find("logical_bytes_read") != std::string::npos);
  CHECK(f.StopTapdisk() == 0);
}

// Reads NBD_OPT_INFO/GO replies up to the ACK; the export size, or nullopt if the
// option was refused (`*error` gets the NBD_REP_ERR_*).
std::optional<uint64_t> AskExport(testing::NbdTestClient& client, Option option, const std::string& name,
                                  uint32_t* error = nullptr) {
  client.SendOption(static_cast<uint32_t>(option), testing::NbdTestClient::GoPayload(name));
  uint64_t size = 0;
  for (;;) {
    auto reply = client.ReadOptionReply();
    if (!reply) return std::nullopt;
    if (reply->type == kRepAck) return size;
    if (reply->type != kRepInfo) {
      if (error) *error = reply->type;
      return std::nullopt;
    }
    if (Result<InfoExport> info = DecodeInfoExport(reply->data); info.ok()) size = info->size_bytes;
  }
}

// A client past the greeting, in the option phase, on the unix socket `path`.
testing::NbdTestClient Negotiating(const std::string& path) {
  UniqueFd fd = testing::ConnectUnixSocket(path);
  REQUIRE(fd.valid());
  testing::NbdTestClient client(std::move(fd));
  uint16_t server_flags = 0;
  REQUIRE(client.ReadGreeting(&server_flags));
  client.SendClientFlags(kClientFlagFixedNewstyle | kClientFlagNoZeroes);
  return client;
}

// Lines of `path` containing every one of `needles`.
int CountLines(const std::string& path, std::initializer_list<std::string_view> needles) {
  std::ifstream in(path);
  int count = 0;
  for (std::string line; std::getline(in, line);) {
    bool all = true;
    for (std::string_view needle : needles) all = all && line.find(needle) != std::string::npos;
    count += all;
  }
  return count;
}

TEST_CASE("NBD_OPT_INFO takes no lease: it describes a volume another host writes, which keeps it") {
  DaemonFixture f;
  f.Tapmap({"volume", "create", "vm", "16M"});
  // Host "other": a second tapdisk-map on the same mapserver and pool, whose NBD client
  // holds the volume read-write (GO) for the whole test.
  const std::string other_nbd = f.path("other-nbd.sock");
  ChildProcess other({testing::Bin("tapdisk-map"), "--config", f.config(), "--server", "unix:" + f.mapserver_socket(),
                      "--pool", f.pool(), "--secret-file", f.secret(), "--host-name", "other", "--control",
                      f.path("other-ctl.sock"), "--nbd", "unix:" + other_nbd, "--cache-size", "64M", "--xen", "off"},
                     f.path("other.log"));
  REQUIRE(tapmap::testing::WaitForPath(other_nbd, std::chrono::seconds(30)));
  testing::NbdTestClient writer = Negotiating(other_nbd);
  REQUIRE(AskExport(writer, Option::kGo, "vm") == (16u << 20));
  auto info = f.Tapmap({"volume", "info", "vm"})["volume"];
  INFO(info.dump());
  REQUIRE(info["writer"] == "other");

  // This host only asks: it is told the size, and the writer is still "other" with its
  // one opener; the writer's connection still serves.
  testing::NbdTestClient asker = Negotiating(f.nbd_socket());
  uint32_t error = 0;
  CHECK(AskExport(asker, Option::kInfo, "vm", &error) == (16u << 20));
  CHECK(error == 0);
  info = f.Tapmap({"volume", "info", "vm"})["volume"];
  CHECK(info["writer"] == "other");
  CHECK(info["openers"] == 1);
  CHECK(info["standby"] == "");
  CHECK(f.Tapmap({"stats"})["stats"]["volumes_open"] == 0);
  // The mapserver logs every open before answering it, and this host's INFO was
  // answered: had it opened the volume, the line would be there.
  const std::string mapserver_log = f.path("mapserver.log");
  CHECK(CountLines(mapserver_log, {"[host=nbd-it]", "opened", " vm "}) == 0);
  writer.SendRequest(static_cast<uint16_t>(Command::kWrite), 0, 7, 0, 4096, std::vector<uint8_t>(4096, 0x5a));
  auto written = writer.ReadSimpleReply(0);
  REQUIRE(written);
  CHECK(written->error == 0);
  // Opening it is GO's business, and the same observations see it: this host becomes
  // the volume's standby (mapserver/doc/leases.md), the writer stays.
  CHECK(AskExport(asker, Option::kGo, "vm") == (16u << 20));
  info = f.Tapmap({"volume", "info", "vm"})["volume"];
  CHECK(info["writer"] == "other");
  CHECK(info["standby"] == "nbd-it");
  CHECK(f.Tapmap({"stats"})["stats"]["volumes_open"] == 1);
  CHECK(CountLines(mapserver_log, {"[host=nbd-it]", "opened", " vm "}) == 1);
  asker.SendRequest(static_cast<uint16_t>(Command::kDisconnect), 0, 1, 0, 0);
  CHECK(asker.PeerClosed());
  writer.SendRequest(static_cast<uint16_t>(Command::kDisconnect), 0, 1, 0, 0);
  CHECK(writer.PeerClosed());
  CHECK(other.Stop(std::chrono::seconds(60)) == 0);
  CHECK(f.StopTapdisk() == 0);
}

TEST_CASE("a listener with an export allow-list: nbdinfo lists and opens only those, others are refused") {
  // dir_ is only known once the fixture exists: the limited listener goes in /tmp
  // under a name of its own.
  tapmap::testing::TempDir sockets("tapmap-nbd-allow");
  const std::string limited = sockets / "limited.sock";
  DaemonFixture f("1G", "64M", {"--nbd", "unix:" + limited + "?exports=vm1:web-*"});
  for (const char* name : {"vm1", "vm2", "web-a", "secret"}) f.Tapmap({"volume", "create", name, "8M"});
  // NBD_OPT_LIST lists the volumes open here: hold some open on the unlimited socket.
  std::vector<testing::NbdTestClient> holders;
  for (const char* name : {"vm1", "vm2", "secret"}) {
    holders.emplace_back(testing::ConnectUnixSocket(f.nbd_socket()));
    uint64_t size = 0;
    uint16_t flags = 0;
    REQUIRE(holders.back().Handshake(name, false, &size, &flags));
  }
  auto list = [&](const std::string& socket) {
    std::string out;
    REQUIRE(Run({"nbdinfo", "--list", "--json", "nbd+unix:///?socket=" + socket}, &out) == 0);
    std::vector<std::string> names;
    const nlohmann::json listed = nlohmann::json::parse(out);
    for (const auto& e : listed["exports"]) names.push_back(e["export-name"]);
    std::sort(names.begin(), names.end());
    return names;
  };
  CHECK(list(limited) == std::vector<std::string>{"vm1"});
  CHECK(list(f.nbd_socket()) == std::vector<std::string>{"secret", "vm1", "vm2"});
  std::string out;
  // Listed volumes open for I/O; vm1@ro too (the list names volumes).
  REQUIRE(Run(QemuIo("nbd+unix:///vm1?socket=" + limited, {"write -P 0x11 0 65536", "read -P 0x11 0 65536"}),
              &out) == 0);
  CHECK(Clean(out));
  REQUIRE(Run({"nbdinfo", "--json", "nbd+unix:///vm1@ro?socket=" + limited}, &out) == 0);
  CHECK(out.find("\"is_read_only\": true") != std::string::npos);
  // Others are refused as unknown, through this listener only.
  CHECK(RunCommand({"nbdinfo", "nbd+unix:///secret?socket=" + limited}, &out) != 0);
  CHECK(out.find("secret") != std::string::npos);
  CHECK(RunCommand({"qemu-io", "-f", "raw", "-c", "read 0 512", "nbd+unix:///vm2?socket=" + limited}, &out) != 0);
  REQUIRE(Run({"nbdinfo", f.Url("secret")}, &out) == 0);
  auto listeners = f.Tapmap({"nbd", "list"});
  INFO(listeners.dump());
  CHECK(listeners.dump().find("\"allowed_exports\":[\"vm1\",\"web-*\"]") != std::string::npos);
  holders.clear();
  CHECK(f.StopTapdisk() == 0);
}

TEST_CASE("discard through NBD returns space to the pool") {
  DaemonFixture f;
  f.Tapmap({"volume", "create", "base", "64M"});
  f.Tapmap({"volume", "snapshot", "base", "base-v1"});
  f.Tapmap({"volume", "clone", "base-v1", "scratch"});
  std::string out;
  REQUIRE(Run(QemuIo(f.Url("scratch"), {"write -P 0x42 0 16777216", "flush"}), &out) == 0);
  auto before = f.Tapmap({"volume", "info", "scratch"});
  INFO(before.dump());
  uint64_t mapped_before = before["volume"]["mapped_bytes"];
  CHECK(mapped_before >= 16u << 20);
  uint64_t free_before = f.Tapmap({"volume", "list"})["pool"]["free_blocks"];
  REQUIRE(Run(QemuIo(f.Url("scratch"), {"discard 0 8388608", "write -z -u 8388608 4194304", "flush",
                                        "read -P 0 0 12582912", "read -P 0x42 12582912 4194304"}),
              &out) == 0);
  CHECK(Clean(out));
  auto after = f.Tapmap({"volume", "info", "scratch"});
  INFO(after.dump());
  uint64_t mapped_after = after["volume"]["mapped_bytes"];
  CHECK(mapped_after + (12u << 20) <= mapped_before);
  uint64_t free_after = f.Tapmap({"volume", "list"})["pool"]["free_blocks"];
  CHECK(free_after >= free_before + (12u << 20) / 65536);
  CHECK(f.StopTapdisk() == 0);
}

TEST_CASE("mapserver killed mid-workload: I/O resumes, flushed writes survive a daemon restart") {
  DaemonFixture f;
  f.Tapmap({"volume", "create", "g", "160M"});
  f.Tapmap({"volume", "snapshot", "g", "g-v1"});
  f.Tapmap({"volume", "clone", "g-v1", "vm"});
  std::vector<std::string> writes, reads;
  for (int i = 0; i < 150; ++i) {
    char w[64], r[64];
    uint64_t offset = uint64_t(i) * 1048576 + (i % 3) * 4096;  // some not block-aligned
    std::snprintf(w, sizeof(w), "write -P 0x%02x %llu 1040384", (0x20 + i) & 0xff, static_cast<unsigned long long>(offset));
    std::snprintf(r, sizeof(r), "read -P 0x%02x %llu 1040384", (0x20 + i) & 0xff, static_cast<unsigned long long>(offset));
    writes.push_back(w);
    reads.push_back(r);
    if (i % 4 == 3) writes.push_back("flush");
  }
  writes.push_back("flush");
  {
    ChildProcess workload(QemuIo(f.Url("vm"), writes), f.path("workload.log"));
    // Kill the mapserver once writes are flowing (bounded poll of the daemon's stats).
    tapmap::testing::WaitUntil(
        [&] { return f.Tapmap({"stats"})["stats"]["logical_write_ops"].get<uint64_t>() > 0; },
        std::chrono::seconds(5), std::chrono::milliseconds(10));
    CHECK(workload.Running());  // else this test would not test a loss mid-workload
    f.KillMapserver();
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    f.StartMapserver();
    auto status = workload.Wait(std::chrono::seconds(120));
    REQUIRE(status.has_value());
    CHECK(WIFEXITED(*status));
    CHECK(WEXITSTATUS(*status) == 0);
  }
  std::string out;
  REQUIRE(Run(QemuIo(f.Url("vm"), reads), &out) == 0);
  CHECK(Clean(out));
  CHECK(f.StopTapdisk() == 0);
  f.StartTapdisk();
  REQUIRE(Run(QemuIo(f.Url("vm"), reads), &out) == 0);
  CHECK(Clean(out));
  CHECK(f.StopTapdisk() == 0);
}

}  // namespace
}  // namespace tapmap::nbd
