// `tapmap volume flatten` against a real mapserver and tapdisk-map: a clone ends up
// sharing no block (mapserver's own count), reads exactly as before, survives the
// deletion of its golden image, keeps every write a front end makes during the job,
// and a cancelled job is continued by a second run. Error paths exit 1 or 2 with the
// status code in --json.
#include <sys/wait.h>

#include <catch2/catch.hpp>
#include <csignal>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "tests/support/child_process.h"
#include "tests/support/wait_until.h"
#include "tests/tools/tapmap_stack.h"

namespace tapmap::testing {
namespace {

using nlohmann::json;
constexpr uint64_t kMiB = 1024 * 1024;

std::string Slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// qemu-io on the NBD export `volume` (read-only for a "@ro" one); every command must
// succeed (a "read -P" whose data differs fails).
void QemuIo(TapmapStack& stack, const std::string& volume, std::vector<std::string> commands) {
  std::vector<std::string> argv = {"sh", "-c", "exec \"$@\" 2>&1", "sh", "qemu-io", "-f", "raw"};
  if (volume.find("@ro") != std::string::npos) argv.push_back("-r");
  for (auto& c : commands) {
    argv.push_back("-c");
    argv.push_back(c);
  }
  argv.push_back(stack.NbdUrl(volume));
  std::string out;
  int rc = RunCommand(argv, &out);
  INFO(out << stack.Logs());
  REQUIRE(rc == 0);
  REQUIRE(out.find("error") == std::string::npos);
  REQUIRE(out.find("Pattern verification failed") == std::string::npos);
}

json Info(TapmapStack& stack, const std::string& name) {
  std::string out;
  REQUIRE(stack.Tapmap({"volume", "info", name, "--json"}, &out) == 0);
  return json::parse(out)["volume"];
}

std::string Md5(TapmapStack& stack, const std::string& volume) {
  std::string out;
  const std::string file = stack.path("md5.raw");
  int rc = RunCommand({"sh", "-c", "nbdcopy '" + stack.NbdUrl(volume) + "' " + file + " 2>&1 && md5sum " + file +
                                       " && rm -f " + file},
                      &out);
  INFO(out << stack.Logs());
  REQUIRE(rc == 0);
  return out.substr(0, 32);
}

// The last JSON line of --json output.
json LastLine(const std::string& out) {
  INFO(out);
  std::istringstream lines(out);
  std::string line, last;
  while (std::getline(lines, line)) {
    if (!line.empty()) last = line;
  }
  json doc = json::parse(last, nullptr, false);
  REQUIRE(!doc.is_discarded());
  return doc;
}

// A 32 MiB golden image with 6 MiB of data in three places, and a clone of it that
// wrote 1 MiB of its own over part of it.
void MakeGoldenAndClone(TapmapStack& stack) {
  REQUIRE(stack.Tapmap({"volume", "create", "gold", "32M"}) == 0);
  QemuIo(stack, "gold", {"write -P 0x42 0 4M", "write -P 0x24 16M 1M", "write -P 0x99 31M 1M"});
  REQUIRE(stack.Tapmap({"volume", "snapshot", "gold", "gold-s"}) == 0);
  REQUIRE(stack.Tapmap({"volume", "clone", "gold-s", "vm"}) == 0);
  QemuIo(stack, "vm", {"write -P 0x55 1M 1M"});
}

}  // namespace

TEST_CASE("volume flatten: the clone shares nothing afterwards, reads the same, outlives its golden image") {
  TapmapStack stack({});
  MakeGoldenAndClone(stack);
  json before = Info(stack, "vm");
  const std::string md5 = Md5(stack, "vm@ro");
  // Written by vm: 1 MiB (its own), shared with gold-s: the other 5 MiB.
  REQUIRE(before["mapped_bytes"] == 6 * kMiB);
  REQUIRE(before["shared_bytes"] == 5 * kMiB);

  std::string out, err;
  int rc = stack.Tapmap({"volume", "flatten", "vm", "--rate", "0", "--json"}, &out, &err);
  INFO(err << stack.Logs());
  REQUIRE(rc == 0);
  // JSON Lines: progress lines, then {"flatten": FlattenStatus}.
  json result = LastLine(out);
  const json& job = result["flatten"];
  CHECK(job["volume"] == "vm");
  CHECK(job["state"] == "done");
  CHECK(job["copied_bytes"] == 5 * kMiB);
  CHECK(job["pass"] == 2);  // one copying pass, then a survey that found nothing
  CHECK(job["rate"] == 0);
  CHECK(out.find("\"progress\"") != std::string::npos);

  json after = Info(stack, "vm");
  CHECK(after["mapped_bytes"] == 6 * kMiB);
  CHECK(after["shared_bytes"] == 0);
  CHECK(after["exclusive_bytes"] == 6 * kMiB);
  CHECK(Md5(stack, "vm@ro") == md5);
  // gold-s is untouched and now shares nothing with vm either.
  CHECK(Info(stack, "gold-s")["shared_bytes"] == 6 * kMiB);  // with gold only

  // Delete the golden image and its snapshot: the clone reads the same.
  REQUIRE(stack.Tapmap({"volume", "delete", "gold-s"}) == 0);
  REQUIRE(stack.Tapmap({"volume", "delete", "gold"}) == 0);
  CHECK(Md5(stack, "vm@ro") == md5);

  // Flattening a volume that shares nothing is a quick no-op; text mode says so.
  rc = stack.Tapmap({"volume", "flatten", "vm"}, &out, &err);
  REQUIRE(rc == 0);
  CHECK(out.rfind("flattened vm: 0 B copied in ", 0) == 0);
  CHECK(out.find("it shares no block with another volume now") != std::string::npos);
  rc = stack.Tapmap({"volume", "flatten", "vm", "--status", "--json"}, &out, &err);
  REQUIRE(rc == 0);
  CHECK(json::parse(out)["flatten"]["state"] == "done");
}

TEST_CASE("volume flatten keeps every write made to the volume while it runs") {
  TapmapStack stack({});
  MakeGoldenAndClone(stack);
  // Slow (1 MiB/s over 5 MiB shared): the writes below land while it copies.
  std::string out, err;
  REQUIRE(stack.Tapmap({"volume", "flatten", "vm", "--rate", "1M", "--no-wait", "--json"}, &out, &err) == 0);
  CHECK(json::parse(out)["flatten"]["state"].is_string());
  // Writes over shared blocks (partial ones too) and over the clone's own block.
  QemuIo(stack, "vm", {"write -P 0x61 0 64k", "write -P 0x62 3M 4k", "write -P 0x63 16M 1M",
                       "write -P 0x64 31M 512", "write -P 0x65 1M 64k"});
  json job;
  REQUIRE(WaitUntil(
      [&] {
        REQUIRE(stack.Tapmap({"volume", "flatten", "vm", "--status", "--json"}, &out, &err) == 0);
        job = json::parse(out)["flatten"];
        return job["state"] == "done" || job["state"] == "failed";
      },
      std::chrono::seconds(120)));
  INFO(job.dump() << stack.Logs());
  REQUIRE(job["state"] == "done");
  CHECK(Info(stack, "vm")["shared_bytes"] == 0);
  // Every byte: the writes, then the clone's own data, then gold's.
  QemuIo(stack, "vm@ro",
         {"read -P 0x61 0 64k", "read -P 0x42 64k 960k", "read -P 0x65 1M 64k", "read -P 0x55 1088k 960k",
          "read -P 0x42 2M 1M", "read -P 0x62 3M 4k", "read -P 0x42 3076k 1020k", "read -P 0 4M 12M",
          "read -P 0x63 16M 1M", "read -P 0 17M 14M", "read -P 0x64 31M 512", "read -P 0x99 32506368 1048064"});
  QemuIo(stack, "gold-s@ro", {"read -P 0x42 0 4M", "read -P 0x24 16M 1M", "read -P 0x99 31M 1M"});
}

TEST_CASE("volume flatten: SIGINT cancels the job, what was copied is kept, a second run finishes it") {
  TapmapStack stack({});
  MakeGoldenAndClone(stack);
  const std::string md5 = Md5(stack, "vm@ro");
  std::string log = stack.path("flatten.log");
  // 256 KiB/s over 5 MiB: 20 s, far longer than the test waits before the signal.
  ChildProcess cli(stack.TapmapArgv({"volume", "flatten", "vm", "--rate", "256K", "--json"}), log);
  REQUIRE(WaitUntil([&] { return Slurp(log).find("\"progress\"") != std::string::npos; }, std::chrono::seconds(60)));
  cli.Signal(SIGINT);
  auto status = cli.Wait(std::chrono::seconds(60));
  REQUIRE(status.has_value());
  INFO(Slurp(log) << stack.Logs());
  REQUIRE(WIFEXITED(*status));
  CHECK(WEXITSTATUS(*status) == 1);
  CHECK(Slurp(log).find("cancelled by SIGINT") != std::string::npos);
  CHECK(Slurp(log).find("\"code\":\"aborted\"") != std::string::npos);
  std::string out, err;
  REQUIRE(stack.Tapmap({"volume", "flatten", "vm", "--status", "--json"}, &out, &err) == 0);
  json job = json::parse(out)["flatten"];
  CHECK(job["state"] == "cancelled");
  const uint64_t first = job["copied_bytes"].get<uint64_t>();
  CHECK(first < 5 * kMiB);
  // What was copied is committed: the mapserver counts it as the clone's own.
  CHECK(Info(stack, "vm")["shared_bytes"].get<uint64_t>() == 5 * kMiB - first);
  CHECK(Md5(stack, "vm@ro") == md5);
  // A second run copies the rest, and only the rest.
  REQUIRE(stack.Tapmap({"volume", "flatten", "vm", "--rate", "0", "--json"}, &out, &err) == 0);
  job = LastLine(out)["flatten"];
  CHECK(job["state"] == "done");
  CHECK(job["copied_bytes"].get<uint64_t>() == 5 * kMiB - first);
  CHECK(Info(stack, "vm")["shared_bytes"] == 0);
  CHECK(Md5(stack, "vm@ro") == md5);
}

TEST_CASE("volume flatten: --rate bounds the copy rate") {
  TapmapStack stack({});
  MakeGoldenAndClone(stack);
  std::string out, err;
  // 5 MiB at 4 MiB/s: the job paces itself, so it cannot end in less than
  // (5 MiB - one 1 MiB chunk of burst) / 4 MiB/s = 1 s whatever the machine's speed.
  REQUIRE(stack.Tapmap({"volume", "flatten", "vm", "--rate", "4M", "--json"}, &out, &err) == 0);
  json job = LastLine(out)["flatten"];
  REQUIRE(job["state"] == "done");
  CHECK(job["rate"] == 4 * kMiB);
  CHECK(job["elapsed_seconds"].get<double>() >= 1.0);
}

TEST_CASE("volume flatten: error paths") {
  TapmapStack stack({});
  MakeGoldenAndClone(stack);
  std::string out, err;
  // Unknown volume; a read-only snapshot.
  CHECK(stack.Tapmap({"volume", "flatten", "nope", "--json"}, &out, &err) == 1);
  CHECK(LastLine(out)["error"]["code"] == "not-found");
  CHECK(stack.Tapmap({"volume", "flatten", "gold-s", "--json"}, &out, &err) == 1);
  CHECK(LastLine(out)["error"]["code"] == "read-only");
  // No job yet: --status and --cancel say so.
  CHECK(stack.Tapmap({"volume", "flatten", "vm", "--status", "--json"}, &out, &err) == 1);
  CHECK(LastLine(out)["error"]["code"] == "not-found");
  CHECK(stack.Tapmap({"volume", "flatten", "vm", "--cancel"}, &out, &err) == 1);
  CHECK(err.find("no flatten of 'vm' is running on this host") != std::string::npos);
  // Usage errors: exit 2.
  CHECK(stack.Tapmap({"volume", "flatten", "vm", "--rate", "fast"}, &out, &err) == 2);
  CHECK(err.find("--rate must be a whole number") != std::string::npos);
  CHECK(stack.Tapmap({"volume", "flatten", "vm", "--status", "--cancel"}, &out, &err) == 2);
  CHECK(stack.Tapmap({"volume", "flatten", "vm", "--status", "--rate", "1M"}, &out, &err) == 2);
  CHECK(stack.Tapmap({"volume", "flatten"}, &out, &err) == 2);
  // Nothing was changed by any of these.
  CHECK(Info(stack, "vm")["shared_bytes"] == 5 * kMiB);
}

}  // namespace tapmap::testing
