// `tapmap vbd …` and `tapmap stats` against the real tapdisk-map (and mapserver), and
// the xl replay: libxl 4.17's xenstore writes for
//   disk = ['vdev=xvda, access=rw, backendtype=phy, script=block-tapmap, target=vm1']
// against a real xenstored that tapdisk-map serves, with block-tapmap run as libxl
// runs it.
#include <sys/wait.h>
#include <catch2/catch.hpp>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "tests/support/child_process.h"
#include "tests/support/wait_until.h"
#include "tests/tools/libxl_replay.h"
#include "tests/tools/tapmap_stack.h"

namespace tapmap::testing {
namespace {

using nlohmann::json;
using xen::kNoTransaction;

json ParseJson(const std::string& text) {
  json doc = json::parse(text, nullptr, false);
  INFO(text);
  REQUIRE(!doc.is_discarded());
  return doc;
}

// The Stats object of tapdisk-map/control/PROTOCOL.md.
void CheckStatsSchema(const json& s) {
  INFO(s.dump());
  for (const char* k :
       {"logical_bytes_read", "logical_bytes_written", "logical_read_ops", "logical_write_ops",
        "pool_bytes_read", "pool_bytes_written", "pool_read_ops", "pool_write_ops", "cache_hits",
        "cache_misses", "cache_evictions", "cache_bytes", "cache_capacity_bytes",
        "io_eliminated_bytes", "map_fetches", "map_recalls", "commits", "write_throttle_waits"}) {
    INFO(k);
    CHECK(s[k].is_number_unsigned());
  }
  CHECK(s["volumes"].is_object());
}

int RunHotplug(TapmapStack& stack, const LibxlDisk& disk, const std::string& command,
               std::string* out) {
  return RunCommand(
      {"env", "XENBUS_PATH=" + disk.xenbus_path(), "XENBUS_TYPE=vbd", "XENBUS_BASE_PATH=backend",
       "TAPMAP_CLI=" TAPMAP_BIN_DIR "/tapmap", "TAPMAP_CONTROL=" + stack.control(),
       "TAPMAP_HOTPLUG_LOG=" + stack.path("xen-hotplug.log"), TAPMAP_BIN_DIR "/block-tapmap",
       command},
      out);
}

// libxl's removal of `disk`: online=0 and Closing, a wait for Closed, the hotplug
// script's "remove" (its exit code is returned, its output in `out`), then the
// frontend, backend and /libxl directories removed.
int ReplayRemoval(TapmapStack& stack, xen::XenStore& xs, const LibxlDisk& disk, std::string* out) {
  REQUIRE(ReplayDiskCloseRequest(xs, disk).ok());
  CHECK(WaitForValue(xs, disk.backend_path() + "/state", "6", 10000));
  int rc = RunHotplug(stack, disk, "remove", out);
  REQUIRE(ReplayDiskDestroy(xs, disk).ok());
  return rc;
}

}  // namespace

TEST_CASE("tapmap stats reports tapdisk-map's counters after NBD I/O") {
  TapmapStack stack({});
  REQUIRE(stack.Tapmap({"volume", "create", "vm1", "16M"}) == 0);
  std::string io_out;
  int rc = RunCommand({"qemu-io", "-f", "raw", "-c", "write -P 0x5a 0 1M", "-c",
                       "read -P 0x5a 0 1M", stack.NbdUrl("vm1")},
                      &io_out);
  INFO(io_out << stack.Logs());
  REQUIRE(rc == 0);

  std::string out;
  REQUIRE(stack.Tapmap({"stats", "--json"}, &out) == 0);
  json doc = ParseJson(out);
  CheckStatsSchema(doc["stats"]);
  CHECK(doc["stats"]["logical_bytes_written"].get<uint64_t>() >= 1024 * 1024);
  CHECK(doc["stats"]["logical_bytes_read"].get<uint64_t>() >= 1024 * 1024);
  CHECK(doc["stats"]["pool_bytes_written"].get<uint64_t>() >= 1024 * 1024);

  REQUIRE(stack.Tapmap({"stats"}, &out) == 0);
  CHECK(out.rfind("VOLUME", 0) == 0);
  CHECK(out.find("\ntotal ") != std::string::npos);
  CHECK(out.find("1 MiB") != std::string::npos);
  CHECK(out.find("cache: ") != std::string::npos);

  // --watch: the first sample at once, then one per interval, as JSON Lines.
  REQUIRE(stack.Tapmap({"stats", "--json", "--watch", "1", "--count", "2"}, &out) == 0);
  std::istringstream lines(out);
  std::string line;
  int samples = 0;
  while (std::getline(lines, line)) {
    json sample = ParseJson(line);
    CHECK(sample["interval_seconds"] == 1);
    CHECK(sample["unix_time"].is_number_unsigned());
    CheckStatsSchema(sample["stats"]);
    ++samples;
  }
  CHECK(samples == 3);
  REQUIRE(stack.Tapmap({"stats", "--watch", "1", "--count", "1"}, &out) == 0);
  CHECK(out.find("READ/s") != std::string::npos);
}

TEST_CASE("walkthrough: import a qcow2 image into a volume through NBD, snapshot and clone it") {
  TapmapStack stack({});
  std::string out;
  // A 16 MiB qcow2 "golden image" with data at two places.
  std::string image = stack.path("golden.qcow2");
  REQUIRE(RunCommand({"qemu-img", "create", "-q", "-f", "qcow2", image, "16M"}, &out) == 0);
  REQUIRE(RunCommand({"qemu-io", "-f", "qcow2", "-c", "write -P 0x42 0 2M", "-c",
                      "write -P 0x24 10M 64k", image},
                     &out) == 0);

  REQUIRE(stack.Tapmap({"volume", "create", "debian12-golden", "16M"}) == 0);
  int rc = RunCommand(
      {"qemu-img", "convert", "-n", "-O", "raw", image, stack.NbdUrl("debian12-golden")}, &out);
  INFO(out << stack.Logs());
  REQUIRE(rc == 0);
  REQUIRE(stack.Tapmap({"volume", "snapshot", "debian12-golden", "debian12-v1"}) == 0);
  REQUIRE(stack.Tapmap({"volume", "clone", "debian12-v1", "vm1"}) == 0);

  // The clone reads back exactly the image (qemu-img compare exits 0 when identical).
  rc = RunCommand({"qemu-img", "compare", "-f", "qcow2", "-F", "raw", image, stack.NbdUrl("vm1")},
                  &out);
  INFO(out);
  CHECK(rc == 0);
  // Only written blocks take space, and the clone shares them with the snapshot.
  REQUIRE(stack.Tapmap({"volume", "info", "vm1", "--json"}, &out) == 0);
  json vm1 = ParseJson(out)["volume"];
  CHECK(vm1["mapped_bytes"].get<uint64_t>() >= 2 * 1024 * 1024);
  CHECK(vm1["mapped_bytes"].get<uint64_t>() < 16 * 1024 * 1024);
  CHECK(vm1["exclusive_bytes"] == 0);
}

TEST_CASE("a snapshot taken under a sequential write workload holds exactly a prefix of it") {
  // qemu-io writes 64 KiB block i with byte (i % 250) + 1, one write after the other
  // (each acknowledged before the next is sent) while `tapmap volume snapshot` runs. The
  // snapshot must hold every write acknowledged before its point in time and none
  // after: blocks 0..k-1 written, blocks k.. still zero, for some k.
  TapmapStack stack({});
  constexpr int kBlocks = 256;
  constexpr size_t kBlock = 64 * 1024;
  REQUIRE(stack.Tapmap({"volume", "create", "busy", "16M"}) == 0);
  std::vector<std::string> argv = {"qemu-io", "-f", "raw"};
  for (int i = 0; i < kBlocks; ++i) {
    argv.push_back("-c");
    argv.push_back("write -P " + std::to_string(i % 250 + 1) + " " + std::to_string(i * kBlock) +
                   " 64k");
  }
  argv.push_back(stack.NbdUrl("busy"));
  ChildProcess writer(argv, stack.path("qemu-io.log"));

  // Let the workload get going (bounded polling on committed space) so the snapshot
  // usually falls in its middle; correctness does not depend on where it falls.
  std::string out, err;
  WaitUntil(
      [&] {
        return stack.Tapmap({"volume", "info", "busy", "--json"}, &out) == 0 &&
               ParseJson(out)["volume"]["mapped_bytes"].get<uint64_t>() >= 8 * kBlock;
      },
      std::chrono::seconds(6), std::chrono::milliseconds(20));
  int rc = stack.Tapmap({"volume", "snapshot", "busy", "busy-snap"}, &out, &err);
  INFO(err << stack.Logs());
  REQUIRE(rc == 0);
  auto status = writer.Wait(std::chrono::seconds(120));
  REQUIRE(status.has_value());
  CHECK(WIFEXITED(*status));
  CHECK(WEXITSTATUS(*status) == 0);

  std::string raw = stack.path("snap.raw");
  REQUIRE(RunCommand({"qemu-img", "convert", "-O", "raw", stack.NbdUrl("busy-snap"), raw}, &out) ==
          0);
  std::ifstream in(raw, std::ios::binary);
  std::vector<char> data((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  REQUIRE(data.size() == kBlocks * kBlock);
  int prefix = -1;
  for (int i = 0; i < kBlocks; ++i) {
    char want = static_cast<char>(i % 250 + 1);
    bool written = true, zero = true;
    for (size_t b = 0; b < kBlock; ++b) {
      char c = data[i * kBlock + b];
      written &= c == want;
      zero &= c == 0;
    }
    INFO("block " << i);
    REQUIRE((written || zero));  // never a torn or foreign block
    if (prefix < 0 && zero) prefix = i;
    if (prefix >= 0) CHECK(zero);  // nothing written after the first unwritten block
  }
  // Where the snapshot fell in the workload (informational; any k is correct).
  std::printf("snapshot under load: blocks 0..%d of %d written\n", prefix < 0 ? kBlocks : prefix,
              kBlocks);
  // And the live volume got every write.
  rc = RunCommand({"qemu-io", "-r", "-f", "raw", "-c",
                   "read -P " + std::to_string((kBlocks - 1) % 250 + 1) + " " +
                       std::to_string((kBlocks - 1) * kBlock) + " 64k",
                   stack.NbdUrl("busy")},
                  &out);
  CHECK(rc == 0);
  CHECK(out.find("Pattern verification failed") == std::string::npos);
}

// `tapmap ARGS --control <the stack's> --config <empty>`: for the commands that talk to
// tapdisk-map only (volume qos, vbd qos).
int TapmapLocal(TapmapStack& stack, std::vector<std::string> args, std::string* out, std::string* err = nullptr) {
  std::vector<std::string> argv = {"sh", "-c", "exec \"$@\" 2>\"$0\"", stack.path("tapmap-local.err"),
                                   TAPMAP_BIN_DIR "/tapmap"};
  argv.insert(argv.end(), args.begin(), args.end());
  for (const std::string& a : {std::string("--control"), stack.control(), std::string("--config"),
                               stack.path("empty.conf")}) {
    argv.push_back(a);
  }
  int rc = RunCommand(argv, out);
  if (err) {
    std::ifstream f(stack.path("tapmap-local.err"));
    *err = std::string(std::istreambuf_iterator<char>(f), {});
  }
  return rc;
}

TEST_CASE("tapmap volume qos sets a volume's limits live, stats show them and the throttling") {
  TapmapStack stack({});
  REQUIRE(stack.Tapmap({"volume", "create", "vm1", "16M"}) == 0);
  std::string out, err;
  // Unlimited at first; flags change only the limits they name.
  REQUIRE(TapmapLocal(stack, {"volume", "qos", "vm1", "--json"}, &out) == 0);
  json doc = ParseJson(out);
  CHECK(doc["volume"] == "vm1");
  CHECK(doc["limits"]["write_iops"] == 0);
  CHECK(doc["limits"].size() == 12);
  REQUIRE(TapmapLocal(stack, {"volume", "qos", "vm1", "--write-bps", "1M", "--write-iops", "5", "--write-iops-burst", "1",
                        "--json"},
                       &out) == 0);
  doc = ParseJson(out);
  CHECK(doc["limits"]["write_bps"] == 1048576);
  CHECK(doc["limits"]["write_iops"] == 5);
  REQUIRE(TapmapLocal(stack, {"volume", "qos", "vm1", "--read-iops", "700"}, &out) == 0);
  CHECK(out.find("read_iops=700") != std::string::npos);
  CHECK(out.find("write_bps=1 MiB") != std::string::npos);

  // Bad arguments are usage errors (exit 2), before any call.
  CHECK(TapmapLocal(stack, {"volume", "qos", "vm1", "--write-bps", "fast"}, &out, &err) == 2);
  CHECK(err.find("--write-bps") != std::string::npos);
  CHECK(TapmapLocal(stack, {"volume", "qos", "vm1", "--iops", "-3"}, &out, &err) == 2);
  CHECK(TapmapLocal(stack, {"volume", "qos"}, &out, &err) == 2);
  CHECK(TapmapLocal(stack, {"vbd", "qos", "not-a-disk", "--iops", "1"}, &out, &err) == 2);
  CHECK(TapmapLocal(stack, {"vbd", "attach", "4/xvda", "--volume", "vm1", "--qos", "write_bps"}, &out, &err) == 2);
  CHECK(err.find("--qos") != std::string::npos);
  // vbd qos on a daemon without Xen: the daemon's refusal, as for the other vbd verbs.
  CHECK(TapmapLocal(stack, {"vbd", "qos", "4/xvda", "--json"}, &out, &err) == 1);
  CHECK(ParseJson(out)["error"]["code"] == "not-supported");

  // 4 writes at 5/s with a bucket of one: 3 of them wait (about 0.6 s). The client
  // stays connected (qemu-io sleep) so the volume is open when stats are taken.
  ChildProcess io({"qemu-io", "-f", "raw", "-c", "write -P 0x11 0 4k", "-c", "write -P 0x11 4k 4k", "-c",
                   "write -P 0x11 8k 4k", "-c", "write -P 0x11 12k 4k", "-c", "sleep 20000", stack.NbdUrl("vm1")},
                  stack.path("qemu-io.log"));
  json qos;
  CHECK(WaitUntil(
      [&]() {
        if (stack.Tapmap({"stats", "--json"}, &out) != 0) return false;
        json v = ParseJson(out)["stats"]["volumes"];
        if (!v.contains("vm1") || !v["vm1"].contains("qos")) return false;
        qos = v["vm1"]["qos"];
        return qos["throttled_write_ops"].get<uint64_t>() == 3 && qos["queued"].get<uint64_t>() == 0;
      },
      std::chrono::seconds(10)));
  INFO(qos.dump());
  CHECK(qos["limits"]["write_iops"] == 5);
  CHECK(qos["wait_us"].get<uint64_t>() >= 500000);  // 0.2 + 0.2 + 0.2 s at the least, less the 3 ms slack
  CHECK(qos["peak_queued"].get<uint64_t>() >= 1);
  REQUIRE(stack.Tapmap({"stats"}, &out) == 0);
  CHECK(out.find("qos vm1:") != std::string::npos);
  io.Stop();
}

TEST_CASE("tapmap nbd list shows the export and how to reach a volume") {
  TapmapStack stack({});
  std::string out;
  REQUIRE(stack.Tapmap({"nbd", "list", "--json"}, &out) == 0);
  json exports = ParseJson(out)["exports"];
  REQUIRE(exports.size() == 1);
  CHECK(exports[0]["address"] == "unix:" + stack.nbd_socket());
  REQUIRE(stack.Tapmap({"nbd", "list"}, &out) == 0);
  CHECK(out.find("nbd+unix:///VOLUME?socket=" + stack.nbd_socket()) != std::string::npos);
}

TEST_CASE("tapmap nbd url, listen and unlisten: success and error paths") {
  TapmapStack stack({});
  REQUIRE(stack.Tapmap({"volume", "create", "vm1", "8M"}) == 0);
  std::string out, err;
  REQUIRE(stack.Tapmap({"nbd", "url", "vm1"}, &out) == 0);
  CHECK(out == "nbd+unix:///vm1?socket=" + stack.nbd_socket() + "\n");
  REQUIRE(stack.Tapmap({"nbd", "url", "vm1", "--json"}, &out) == 0);
  CHECK(ParseJson(out) == json({{"url", "nbd+unix:///vm1?socket=" + stack.nbd_socket()},
                                {"address", "unix:" + stack.nbd_socket()}}));

  const std::string sock = stack.path("vm1-own.sock");
  REQUIRE(stack.Tapmap({"nbd", "listen", "unix:" + sock, "--export", "vm1", "--json"}, &out) == 0);
  CHECK(ParseJson(out) == json({{"address", "unix:" + sock}, {"export", "vm1"}}));
  // The default export of that socket is vm1: written there, read on the shared one.
  REQUIRE(RunCommand({"qemu-io", "-f", "raw", "-c", "write -P 0x33 0 4k", "nbd+unix:///?socket=" + sock}, &out) == 0);
  REQUIRE(RunCommand({"qemu-io", "-f", "raw", "-c", "read -P 0x33 0 4k", "nbd+unix:///vm1?socket=" + stack.nbd_socket()},
                     &out) == 0);
  CHECK(out.find("Pattern verification failed") == std::string::npos);
  REQUIRE(stack.Tapmap({"nbd", "list", "--json"}, &out) == 0);
  json exports = ParseJson(out)["exports"];
  REQUIRE(exports.size() == 2);
  CHECK(exports[1]["address"] == "unix:" + sock);
  CHECK(exports[1]["export"] == "vm1");
  // `nbd url` names the shared export, never a per-device one.
  REQUIRE(stack.Tapmap({"nbd", "url", "vm1"}, &out) == 0);
  CHECK(out.find(stack.nbd_socket()) != std::string::npos);

  // Errors: listening twice, a missing --export (usage), a bad address, unknown unlisten.
  CHECK(stack.Tapmap({"nbd", "listen", "unix:" + sock, "--export", "vm1", "--json"}, &out, &err) == 1);
  CHECK(ParseJson(out)["error"]["code"] == "already-exists");
  CHECK(stack.Tapmap({"nbd", "listen", "unix:" + sock}, &out, &err) == 2);
  CHECK(err.find("--export") != std::string::npos);
  CHECK(stack.Tapmap({"nbd", "listen", "bogus:x", "--export", "vm1"}, &out, &err) == 1);
  CHECK(stack.Tapmap({"nbd", "unlisten", "unix:" + stack.path("nothing.sock"), "--json"}, &out, &err) == 1);
  CHECK(ParseJson(out)["error"]["code"] == "not-found");

  REQUIRE(stack.Tapmap({"nbd", "unlisten", "unix:" + sock, "--json"}, &out) == 0);
  CHECK(ParseJson(out) == json({{"address", "unix:" + sock}}));
  CHECK(!std::filesystem::exists(sock));
  REQUIRE(stack.Tapmap({"nbd", "list", "--json"}, &out) == 0);
  CHECK(ParseJson(out)["exports"].size() == 1);
  // The address is free again.
  CHECK(stack.Tapmap({"nbd", "listen", "unix:" + sock, "--export", "vm1"}, &out) == 0);
}

TEST_CASE("tapmap vbd commands report the daemon's refusal when it serves no Xen rings") {
  TapmapStack stack({});  // tapdisk-map --xen off
  std::string out, err;
  for (std::vector<std::string> args : {std::vector<std::string>{"vbd", "list"},
                                        {"vbd", "attach", "4/xvda", "--volume", "vm1"},
                                        {"vbd", "detach", "4/xvda"},
                                        {"vbd", "pause", "4/xvda"},
                                        {"vbd", "resume", "4/xvda"}}) {
    INFO(args[1]);
    args.push_back("--json");
    CHECK(stack.Tapmap(args, &out, &err) == 1);
    json e = ParseJson(out);
    CHECK(e["error"]["code"] == "not-supported");
    CHECK(!err.empty());
  }
}

TEST_CASE("tapmap vbd commands on disks tapdisk-map does not serve fail with not-found") {
  TapmapStack stack({.xen = true});
  std::string out, err;
  REQUIRE(stack.Tapmap({"vbd", "list", "--json"}, &out) == 0);
  CHECK(ParseJson(out) == json({{"vbds", json::array()}}));
  REQUIRE(stack.Tapmap({"vbd", "list"}, &out) == 0);
  CHECK(out == "no disks attached\n");
  for (const char* verb : {"detach", "pause", "resume"}) {
    INFO(verb);
    CHECK(stack.Tapmap({"vbd", verb, "4/xvda", "--json"}, &out, &err) == 1);
    CHECK(ParseJson(out)["error"]["code"] == "not-found");
    CHECK(err.find("4/51712") != std::string::npos);
  }
}

TEST_CASE("xl replay: libxl 4.17 disk add and remove with block-tapmap and tapdisk-map") {
  TapmapStack stack({.xen = true});
  REQUIRE(stack.Tapmap({"volume", "create", "vm1", "16M"}) == 0);
  xen::XenStore& xs = stack.xs();
  REQUIRE(ReplayDomainCreate(xs, 1).ok());
  LibxlDisk disk;  // domain 1, xvda = 51712, rw, target vm1, backend/vbd
  REQUIRE(ReplayDiskAdd(xs, disk).ok());

  // libxl waits at most 10 s for the backend to reach InitWait before running the script.
  bool initwait = WaitForValue(xs, disk.backend_path() + "/state", "2", 10000);
  INFO(stack.Logs());
  REQUIRE(initwait);

  std::string out;
  int rc = RunHotplug(stack, disk, "add", &out);
  INFO(out);
  REQUIRE(rc == 0);
  auto status = xs.Read(kNoTransaction, disk.backend_path() + "/hotplug-status");
  REQUIRE(status.ok());
  CHECK(*status == "connected");

  REQUIRE(stack.Tapmap({"vbd", "list", "--json"}, &out) == 0);
  json vbds = ParseJson(out)["vbds"];
  REQUIRE(vbds.size() == 1);
  CHECK(vbds[0]["domid"] == 1);
  CHECK(vbds[0]["devid"] == 51712);
  CHECK(vbds[0]["volume"] == "vm1");
  CHECK(vbds[0]["mode"] == "w");
  REQUIRE(stack.Tapmap({"volume", "info", "vm1", "--json"}, &out) == 0);
  CHECK(ParseJson(out)["volume"]["openers"] == 1);
  // An open volume has its own counters in stats, human and JSON.
  REQUIRE(stack.Tapmap({"stats", "--json"}, &out) == 0);
  json stats = ParseJson(out)["stats"];
  REQUIRE(stats["volumes"].contains("vm1"));
  CHECK(stats["volumes"]["vm1"]["logical_read_ops"].is_number_unsigned());
  REQUIRE(stack.Tapmap({"stats"}, &out) == 0);
  CHECK(out.find("\nvm1 ") != std::string::npos);

  // Removal as libxl does it: Closing, wait for Closed, script remove, rm the dirs.
  rc = ReplayRemoval(stack, xs, disk, &out);
  INFO(out);
  CHECK(rc == 0);
  REQUIRE(stack.Tapmap({"vbd", "list", "--json"}, &out) == 0);
  CHECK(ParseJson(out)["vbds"].empty());
  REQUIRE(stack.Tapmap({"volume", "info", "vm1", "--json"}, &out) == 0);
  CHECK(ParseJson(out)["volume"]["openers"] == 0);
}

TEST_CASE("xl replay: a PV guest's disk gets no physical-device-path") {
  TapmapStack stack({.xen = true});
  REQUIRE(stack.Tapmap({"volume", "create", "vm1", "16M"}) == 0);
  xen::XenStore& xs = stack.xs();
  REQUIRE(ReplayDomainCreate(xs, 1, "pv").ok());
  LibxlDisk disk;
  REQUIRE(ReplayDiskAdd(xs, disk).ok());
  REQUIRE(WaitForValue(xs, disk.backend_path() + "/state", "2", 10000));
  std::string out;
  REQUIRE(RunHotplug(stack, disk, "add", &out) == 0);
  auto status = xs.Read(kNoTransaction, disk.backend_path() + "/hotplug-status");
  CHECK((status.ok() && *status == "connected"));
  CHECK(xs.Read(kNoTransaction, disk.backend_path() + "/physical-device-path").status().code() ==
        StatusCode::kNotFound);
}

// What QEMU is given for an HVM guest's emulated disk, read through the real NBD
// client qemu-io exactly as QEMU would open it: the same bytes the PV disk serves.
TEST_CASE("xl replay: an HVM guest's disk gets physical-device-path, the volume over NBD (4.17 and 4.19+)") {
  TapmapStack stack({.xen = true});
  REQUIRE(stack.Tapmap({"volume", "create", "vm1", "16M"}) == 0);
  std::string out;
  // A pattern in the volume, written through the shared export.
  REQUIRE(RunCommand({"qemu-io", "-f", "raw", "-c", "write -P 0x5a 1M 64k",
                      "nbd+unix:///vm1?socket=" + stack.nbd_socket()},
                     &out) == 0);
  xen::XenStore& xs = stack.xs();
  const std::string layout = GENERATE(std::string("vbd"), std::string("vbd3"));
  INFO(layout);
  REQUIRE(ReplayDomainCreate(xs, 1, "hvm").ok());
  LibxlDisk disk;
  disk.layout = layout;
  REQUIRE(ReplayDiskAdd(xs, disk).ok());
  REQUIRE(WaitForValue(xs, disk.backend_path() + "/state", "2", 10000));
  int rc = RunHotplug(stack, disk, "add", &out);
  INFO(out);
  REQUIRE(rc == 0);
  auto path = xs.Read(kNoTransaction, disk.backend_path() + "/physical-device-path");
  REQUIRE(path.ok());
  // What libxl turns the path into for QEMU's -drive file=.
  std::string url;
  if (layout == "vbd") {
    CHECK(*path == "nbd+unix:///vm1?socket=" + stack.nbd_socket());  // 4.17: used as it is
    url = *path;
  } else {
    CHECK(*path == stack.path("nbd-1-51712.sock"));  // 4.19+: nbd+unix:///?socket=<path>
    url = "nbd+unix:///?socket=" + *path;
    REQUIRE(stack.Tapmap({"nbd", "list", "--json"}, &out) == 0);
    CHECK(out.find("\"export\": \"vm1\"") != std::string::npos);
  }
  out.clear();
  rc = RunCommand({"qemu-io", "-f", "raw", "-c", "read -P 0x5a 1M 64k", "-c", "read -P 0 0 64k", url}, &out);
  INFO(out);
  CHECK(rc == 0);
  CHECK(out.find("Pattern verification failed") == std::string::npos);
  if (layout == "vbd3") {
    // Only vm1 is reachable on the device's socket.
    CHECK(RunCommand({"qemu-io", "-f", "raw", "-c", "read 0 512", "nbd+unix:///other?socket=" + *path}, &out) != 0);
  }

  rc = ReplayRemoval(stack, xs, disk, &out);
  INFO(out);
  CHECK(rc == 0);
  // remove closed the device's own socket.
  CHECK(!std::filesystem::exists(stack.path("nbd-1-51712.sock")));
  REQUIRE(stack.Tapmap({"nbd", "list", "--json"}, &out) == 0);
  CHECK(ParseJson(out)["exports"].size() == 1);
}

TEST_CASE("xl replay: a disk naming a missing volume fails with hotplug-error") {
  TapmapStack stack({.xen = true});
  xen::XenStore& xs = stack.xs();
  REQUIRE(ReplayDomainCreate(xs, 1).ok());
  LibxlDisk disk;
  disk.target = "no-such-volume";
  REQUIRE(ReplayDiskAdd(xs, disk).ok());
  // The backend may or may not reach InitWait for an unknown volume; libxl runs the
  // script only if it does, but the script must fail cleanly either way.
  (void)WaitForValue(xs, disk.backend_path() + "/state", "2", 3000);
  std::string out;
  CHECK(RunHotplug(stack, disk, "add", &out) == 1);
  auto status = xs.Read(kNoTransaction, disk.backend_path() + "/hotplug-status");
  REQUIRE(status.ok());
  CHECK(*status == "error");
  auto error = xs.Read(kNoTransaction, disk.backend_path() + "/hotplug-error");
  REQUIRE(error.ok());
  CHECK(error->find("no-such-volume") != std::string::npos);
}

}  // namespace tapmap::testing

namespace tapmap::testing {
namespace {

// A stack with guest disk 1/xvda attached (xl replay + block-tapmap add) to volume
// vm1, whose first MiB holds 0x11 written through NBD before the attach.
struct AttachedDisk {
  explicit AttachedDisk(TapmapStack& stack) : disk() {
    REQUIRE(stack.Tapmap({"volume", "create", "vm1", "16M"}) == 0);
    std::string out;
    int rc =
        RunCommand({"qemu-io", "-f", "raw", "-c", "write -P 0x11 0 1M", stack.NbdUrl("vm1")}, &out);
    INFO(out);
    REQUIRE(rc == 0);
    REQUIRE(ReplayDomainCreate(stack.xs(), 1).ok());
    REQUIRE(ReplayDiskAdd(stack.xs(), disk).ok());
    REQUIRE(WaitForValue(stack.xs(), disk.backend_path() + "/state", "2", 10000));
    rc = RunHotplug(stack, disk, "add", &out);
    INFO(out);
    REQUIRE(rc == 0);
  }
  LibxlDisk disk;
};

bool DiskPaused(TapmapStack& stack) {
  std::string out;
  REQUIRE(stack.Tapmap({"vbd", "list", "--json"}, &out) == 0);
  json vbds = ParseJson(out)["vbds"];
  REQUIRE(vbds.size() == 1);
  return vbds[0]["paused"].get<bool>();
}

}  // namespace

TEST_CASE("snapshot-live snapshots the volume behind a guest disk and resumes it") {
  TapmapStack stack({.xen = true});
  AttachedDisk attached(stack);

  std::string out, err;
  int rc = stack.Tapmap({"snapshot-live", "1/xvda", "vm1-snap", "--json"}, &out, &err);
  INFO(err << stack.Logs());
  REQUIRE(rc == 0);
  json doc = ParseJson(out);
  CHECK(doc["source"] == "vm1");
  CHECK(doc["domid"] == 1);
  CHECK(doc["devid"] == 51712);
  CHECK(doc["layout"] == "vbd");
  CHECK(doc["paused_ms"].is_number_unsigned());
  CHECK(doc["snapshot"]["name"] == "vm1-snap");
  CHECK(doc["snapshot"]["kind"] == "snapshot");
  CHECK(doc["snapshot"]["parent"] == "vm1");
  CHECK(doc.size() == 6);
  CHECK_FALSE(DiskPaused(stack));

  // The snapshot holds what the volume held at the pause: 1 MiB of 0x11, then zeros.
  rc = RunCommand({"qemu-io", "-r", "-f", "raw", "-c", "read -P 0x11 0 1M", "-c",
                   "read -P 0 1M 15M", stack.NbdUrl("vm1-snap")},
                  &out);
  INFO(out);
  CHECK(rc == 0);
  CHECK(out.find("Pattern verification failed") == std::string::npos);

  REQUIRE(stack.Tapmap({"snapshot-live", "1/xvda", "vm1-snap2"}, &out) == 0);
  CHECK(out.find("created snapshot vm1-snap2 of vm1") != std::string::npos);
}

TEST_CASE("snapshot-live always resumes the disk, and never pauses it when it cannot snapshot") {
  TapmapStack stack({.xen = true});
  AttachedDisk attached(stack);
  std::string out, err;

  SECTION("the snapshot fails after the pause: the disk is resumed, exit 1") {
    REQUIRE(stack.Tapmap({"volume", "create", "taken", "1M"}) == 0);
    CHECK(stack.Tapmap({"snapshot-live", "1/xvda", "taken", "--json"}, &out, &err) == 1);
    CHECK(ParseJson(out)["error"]["code"] == "already-exists");
    CHECK_FALSE(DiskPaused(stack));
  }
  SECTION("a disk tapdisk-map does not serve: not-found, nothing paused") {
    CHECK(stack.Tapmap({"snapshot-live", "1/xvdb", "s", "--json"}, &out, &err) == 1);
    CHECK(ParseJson(out)["error"]["code"] == "not-found");
    CHECK_FALSE(DiskPaused(stack));
  }
  SECTION("a disk paused by the operator is resumed too (the command owns the pause)") {
    REQUIRE(stack.Tapmap({"vbd", "pause", "1/xvda"}) == 0);
    CHECK(DiskPaused(stack));
    REQUIRE(stack.Tapmap({"snapshot-live", "1/xvda", "s"}) == 0);
    CHECK_FALSE(DiskPaused(stack));
  }
}

}  // namespace tapmap::testing
