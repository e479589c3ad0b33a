// `tapmap volume import|export` (and the incremental export --since / import --diff)
// against a real mapserver and tapdisk-map: images made by qemu-img go in and come
// back out identical, sparse regions cost no pool space, every failure and interruption
// leaves nothing half-made behind, and an incremental reproduces its target exactly.
#include <sys/stat.h>
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

bool Exists(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0;
}

// Runs a shell command line; REQUIREs success.
void Sh(const std::string& line) {
  std::string out;
  int rc = RunCommand({"sh", "-c", line}, &out);
  INFO(line << "\n" << out);
  REQUIRE(rc == 0);
}

// --json output of import/export: JSON Lines, progress lines then one result (or error).
struct JsonStream {
  std::vector<json> progress;
  json result;
};
JsonStream ParseStream(const std::string& out) {
  INFO(out);
  JsonStream s;
  std::istringstream lines(out);
  std::string line;
  std::vector<json> docs;
  while (std::getline(lines, line)) {
    json doc = json::parse(line, nullptr, false);
    REQUIRE(!doc.is_discarded());
    docs.push_back(doc);
  }
  REQUIRE(!docs.empty());
  s.result = docs.back();
  docs.pop_back();
  for (auto& d : docs) {
    REQUIRE(d.contains("progress"));
    s.progress.push_back(d);
  }
  return s;
}

// Progress lines are {"progress": 0..100 non-decreasing, "phase", "volume"}.
void CheckProgress(const JsonStream& s, const std::string& volume, bool complete) {
  REQUIRE(!s.progress.empty());
  double last = -1;
  for (const auto& p : s.progress) {
    INFO(p.dump());
    CHECK(p.size() == 3);
    CHECK(p["phase"].is_string());
    CHECK(p["volume"] == volume);
    double v = p["progress"].get<double>();
    CHECK(v >= last);
    CHECK(v <= 100.0);
    last = v;
  }
  CHECK(s.progress.front()["progress"].get<double>() == 0.0);
  if (complete) CHECK(last == 100.0);
}

json Volume(TapmapStack& stack, const std::string& name) {
  std::string out;
  REQUIRE(stack.Tapmap({"volume", "info", name, "--json"}, &out) == 0);
  return json::parse(out)["volume"];
}

bool VolumeExists(TapmapStack& stack, const std::string& name) {
  std::string out;
  REQUIRE(stack.Tapmap({"volume", "list", "--json"}, &out) == 0);
  for (const auto& v : json::parse(out)["volumes"]) {
    if (v["name"] == name) return true;
  }
  return false;
}

std::string Md5(const std::string& url) {
  std::string out;
  REQUIRE(RunCommand({"sh", "-c", "nbdcopy '" + url + "' - | md5sum"}, &out) == 0);
  return out.substr(0, 32);
}

// A 64 MiB qcow2 with data at known offsets and big holes between: 2 MiB at 0, 1 MiB
// at 40 MiB, 64 KiB at 63 MiB (3.06 MiB of data).
std::string MakeQcow2(TapmapStack& stack, const std::string& name) {
  std::string image = stack.path(name);
  Sh("qemu-img create -q -f qcow2 " + image + " 64M");
  Sh("qemu-io -f qcow2 -c 'write -P 0x42 0 2M' -c 'write -P 0x24 40M 1M' -c 'write -P 0x99 63M 64k' " + image +
     " >/dev/null");
  return image;
}

}  // namespace

TEST_CASE("volume import of qcow2, vmdk and vpc images made by qemu-img, and export back") {
  TapmapStack stack({});
  std::string qcow2 = MakeQcow2(stack, "golden.qcow2");
  const std::string format = GENERATE(as<std::string>{}, "qcow2", "vmdk", "vpc");
  std::string image = qcow2;
  if (format != "qcow2") {
    image = stack.path("golden." + format);
    Sh("qemu-img convert -O " + format + " " + qcow2 + " " + image);
  }
  std::string out, err;
  int rc = stack.Tapmap({"volume", "import", image, "golden", "--json"}, &out, &err);
  INFO(err << stack.Logs());
  REQUIRE(rc == 0);
  JsonStream s = ParseStream(out);
  CheckProgress(s, "golden", true);
  const json& v = s.result["volume"];
  CHECK(v["name"] == "golden");
  CHECK(s.result["source"]["format"] == format);
  CHECK(s.result["source"]["location"] == image);
  uint64_t virtual_size = s.result["source"]["virtual_size_bytes"].get<uint64_t>();
  CHECK(v["size_bytes"].get<uint64_t>() == (virtual_size + 511) / 512 * 512);
  // Sparse: only the data (3.06 MiB, whole 64 KiB pool blocks) took pool space.
  CHECK(v["mapped_bytes"].get<uint64_t>() >= 3 * kMiB);
  CHECK(v["mapped_bytes"].get<uint64_t>() <= 4 * kMiB);
  CHECK(RunCommand({"qemu-img", "compare", "-f", format, "-F", "raw", image, stack.NbdUrl("golden")}, &out) == 0);

  // Export back in every format; qemu-img compare says identical.
  for (std::string to : {"raw", "qcow2", "vmdk", "vpc"}) {
    std::string dest = stack.path("back-" + format + "." + to);
    rc = stack.Tapmap({"volume", "export", "golden", dest, "--format", to, "--json"}, &out, &err);
    INFO(to << ": " << err);
    REQUIRE(rc == 0);
    JsonStream e = ParseStream(out);
    CheckProgress(e, "golden", true);
    CHECK(e.result["exported"] ==
          json({{"volume", "golden"}, {"location", dest}, {"format", to}, {"size_bytes", v["size_bytes"]}}));
    CHECK(RunCommand({"qemu-img", "compare", "-f", format, "-F", to, image, dest}, &out) == 0);
  }
  // The raw export is sparse too.
  struct stat st {};
  REQUIRE(::stat(stack.path("back-" + format + ".raw").c_str(), &st) == 0);
  CHECK(static_cast<uint64_t>(st.st_blocks) * 512 <= 8 * kMiB);

  // Text mode: one line each.
  rc = stack.Tapmap({"volume", "import", image, "golden2"}, &out, &err);
  REQUIRE(rc == 0);
  CHECK(out.rfind("imported " + image + " (" + format, 0) == 0);
  rc = stack.Tapmap({"volume", "export", "golden2", stack.path("text.raw")}, &out, &err);
  REQUIRE(rc == 0);
  CHECK(out.rfind("exported golden2 (", 0) == 0);
  CHECK(out.find(") to " + stack.path("text.raw") + " (raw)\n") != std::string::npos);
}

TEST_CASE("a sparse import costs only the data: a 4 GiB image with 8 MiB of data in a 128 MiB pool") {
  TapmapStack stack({});
  std::string image = stack.path("big.qcow2");
  Sh("qemu-img create -q -f qcow2 " + image + " 4G");
  Sh("qemu-io -f qcow2 -c 'write -P 0x11 0 4M' -c 'write -P 0x22 3G 4M' " + image + " >/dev/null");
  std::string out, err;
  int rc = stack.Tapmap({"volume", "import", image, "big", "--json"}, &out, &err);
  INFO(err << stack.Logs());
  REQUIRE(rc == 0);
  json v = ParseStream(out).result["volume"];
  CHECK(v["size_bytes"] == 4096 * kMiB);
  CHECK(v["mapped_bytes"] == 8 * kMiB);
  CHECK(Volume(stack, "big")["mapped_bytes"] == 8 * kMiB);
  CHECK(RunCommand({"qemu-img", "compare", "-f", "qcow2", "-F", "raw", image, stack.NbdUrl("big")}, &out) == 0);
}

TEST_CASE("volume import: error paths leave no volume behind") {
  TapmapStack stack({});
  std::string out, err;
  std::string qcow2 = MakeQcow2(stack, "good.qcow2");

  SECTION("a missing source") {
    CHECK(stack.Tapmap({"volume", "import", stack.path("nothing.qcow2"), "v", "--json"}, &out, &err) == 1);
    CHECK(json::parse(out)["error"]["code"] == "not-found");
    CHECK(err.find("does not exist") != std::string::npos);
  }
  SECTION("a file that is no image qemu-img can read as the format asked for") {
    Sh("echo hello > " + stack.path("text.qcow2"));
    CHECK(stack.Tapmap({"volume", "import", stack.path("text.qcow2"), "v", "--format", "qcow2", "--json"}, &out,
                       &err) == 1);
    CHECK(json::parse(out)["error"]["code"] == "invalid-argument");
    CHECK(err.find("qemu-img cannot read") != std::string::npos);
  }
  SECTION("a truncated qcow2 is refused before anything is created (qemu would read zeros)") {
    Sh("truncate -s 1M " + qcow2);
    CHECK(stack.Tapmap({"volume", "import", qcow2, "v", "--json"}, &out, &err) == 1);
    CHECK(json::parse(out)["error"]["code"] == "corruption");
    CHECK(err.find("is corrupt") != std::string::npos);
  }
  SECTION("a bad --format is a usage error") {
    CHECK(stack.Tapmap({"volume", "import", qcow2, "v", "--format", "raw,file.x=1", "--json"}, &out, &err) == 2);
    CHECK(json::parse(out)["error"]["code"] == "invalid-argument");
  }
  SECTION("tapdisk-map not reachable: a clear error, exit 3, nothing created") {
    std::vector<std::string> argv = stack.TapmapArgv({"volume", "import", qcow2, "v", "--json"});
    argv.push_back("--control");  // the last one wins
    argv.push_back(stack.path("no-such.sock"));
    std::vector<std::string> sh = {"sh", "-c", "exec \"$@\" 2>" + stack.path("err.txt"), "sh"};
    sh.insert(sh.end(), argv.begin(), argv.end());
    CHECK(RunCommand(sh, &out) == 3);
    CHECK(json::parse(out)["error"]["code"] == "unavailable");
    err = Slurp(stack.path("err.txt"));
    CHECK(err.find("is tapdisk-map running?") != std::string::npos);
    CHECK(err.find("NBD export of tapdisk-map") != std::string::npos);
  }
  SECTION("NAME exists: already-exists, the existing volume untouched") {
    REQUIRE(stack.Tapmap({"volume", "create", "v", "1M"}) == 0);
    CHECK(stack.Tapmap({"volume", "import", qcow2, "v", "--json"}, &out, &err) == 1);
    CHECK(json::parse(out)["error"]["code"] == "already-exists");
    CHECK(Volume(stack, "v")["size_bytes"] == kMiB);
    return;
  }
  CHECK_FALSE(VolumeExists(stack, "v"));
}

TEST_CASE("volume import: a source that fails mid-way leaves no volume behind") {
  TapmapStack stack({});
  // nbdkit serving 64 MiB whose reads past 32 MiB fail with EIO.
  std::string sock = stack.path("failing.sock");
  ChildProcess nbdkit({"nbdkit", "-f", "-U", sock, "eval", "get_size=echo 64M",
                       "pread=if [ $4 -ge 33554432 ]; then echo 'EIO injected' >&2; exit 1; fi; "
                       "head -c $3 /dev/zero | tr '\\000' 'A'"},
                      stack.path("nbdkit.log"));
  REQUIRE(WaitForPath(sock, std::chrono::seconds(20)));
  std::string out, err;
  int rc = stack.Tapmap({"volume", "import", "nbd+unix:///?socket=" + sock, "half", "--format", "raw", "--json"},
                        &out, &err);
  INFO(err << stack.Logs());
  CHECK(rc == 1);
  JsonStream s = ParseStream(out);
  CheckProgress(s, "half", false);
  CHECK(s.progress.back()["progress"].get<double>() < 100.0);
  CHECK(s.result["error"]["code"] == "io-error");
  std::string message = s.result["error"]["message"];
  CHECK(message.find("Input/output error") != std::string::npos);
  CHECK(message.find("the half-made volume half was deleted") != std::string::npos);
  CHECK_FALSE(VolumeExists(stack, "half"));
}

TEST_CASE("volume import: SIGTERM or SIGINT to the CLI mid-copy is forwarded to qemu-img and the volume deleted") {
  TapmapStack stack({});
  const int sig = GENERATE(SIGTERM, SIGINT);
  // A data-heavy source (every byte non-zero) whose every read takes 5 s: 256 MiB at
  // 8 reads of 2 MiB at a time cannot be copied before the signal arrives.
  std::string sock = stack.path("slow.sock");
  ChildProcess nbdkit({"nbdkit", "-f", "-U", sock, "--filter=delay", "pattern", "256M", "rdelay=5"},
                      stack.path("nbdkit.log"));
  REQUIRE(WaitForPath(sock, std::chrono::seconds(20)));
  std::string log = stack.path("import.log");
  ChildProcess cli(stack.TapmapArgv({"volume", "import", "nbd+unix:///?socket=" + sock, "slow", "--format", "raw",
                                     "--json"}),
                   log);
  // The volume exists and the copy has started: the first progress line is out.
  REQUIRE(WaitUntil([&] { return Slurp(log).find("\"progress\"") != std::string::npos; }, std::chrono::seconds(60)));
  cli.Signal(sig);
  auto status = cli.Wait(std::chrono::seconds(60));
  REQUIRE(status.has_value());
  INFO(Slurp(log) << stack.Logs());
  REQUIRE(WIFEXITED(*status));
  CHECK(WEXITSTATUS(*status) == 1);
  std::string text = Slurp(log);
  CHECK(text.find(std::string("interrupted by ") + (sig == SIGTERM ? "SIGTERM" : "SIGINT")) != std::string::npos);
  CHECK(text.find("the half-made volume slow was deleted") != std::string::npos);
  CHECK(text.find("\"code\":\"aborted\"") != std::string::npos);
  CHECK_FALSE(VolumeExists(stack, "slow"));
}

TEST_CASE("volume export: error paths") {
  TapmapStack stack({});
  std::string out, err;
  REQUIRE(stack.Tapmap({"volume", "create", "vm1", "4M"}) == 0);
  REQUIRE(RunCommand({"qemu-io", "-f", "raw", "-c", "write -P 0x5a 0 1M", stack.NbdUrl("vm1")}, &out) == 0);
  std::string dest = stack.path("vm1.raw");

  SECTION("an existing DEST is refused and left as it was; --force overwrites it") {
    Sh("echo precious > " + dest);
    CHECK(stack.Tapmap({"volume", "export", "vm1", dest, "--json"}, &out, &err) == 1);
    CHECK(json::parse(out)["error"]["code"] == "already-exists");
    CHECK(err.find("use --force") != std::string::npos);
    CHECK(Slurp(dest) == "precious\n");
    REQUIRE(stack.Tapmap({"volume", "export", "vm1", dest, "--force"}, &out, &err) == 0);
    CHECK(RunCommand({"qemu-img", "compare", "-f", "raw", "-F", "raw", dest, stack.NbdUrl("vm1")}, &out) == 0);
  }
  SECTION("a missing volume: not-found, no DEST created") {
    CHECK(stack.Tapmap({"volume", "export", "nope", dest, "--json"}, &out, &err) == 1);
    CHECK(json::parse(out)["error"]["code"] == "not-found");
    CHECK_FALSE(Exists(dest));
  }
  SECTION("a failing copy removes the partial DEST") {
    // DEST in a directory qemu-img cannot create a vmdk extent file in is hard to set up
    // as root; a DEST whose image format rejects the size does it: vpc is limited to
    // ~2 TiB, so a 3 TiB volume cannot be exported as vpc.
    REQUIRE(stack.Tapmap({"volume", "create", "huge", "3T"}) == 0);
    CHECK(stack.Tapmap({"volume", "export", "huge", dest, "--format", "vpc", "--json"}, &out, &err) == 1);
    json e = ParseStream(out).result;
    CHECK(e["error"]["code"] == "io-error");
    CHECK(e["error"]["message"].get<std::string>().find("was removed") != std::string::npos);
    CHECK_FALSE(Exists(dest));
  }
  SECTION("usage errors") {
    CHECK(stack.Tapmap({"volume", "export", "vm1", dest, "--format", "qed", "--json"}, &out, &err) == 2);
    CHECK(stack.Tapmap({"volume", "export", "vm1", "nbd://localhost/x", "--format", "qcow2"}, &out, &err) == 2);
    CHECK(stack.Tapmap({"volume", "export", "vm1", dest, "--since", "s", "--format", "raw"}, &out, &err) == 2);
    CHECK_FALSE(Exists(dest));
  }
}

TEST_CASE("incremental: export --since S1 of S2, import --diff onto a clone of S1 gives S2 exactly (md5)") {
  TapmapStack stack({});
  std::string out, err;
  std::string image = MakeQcow2(stack, "base.qcow2");
  REQUIRE(stack.Tapmap({"volume", "import", image, "vm"}, &out, &err) == 0);
  REQUIRE(stack.Tapmap({"volume", "snapshot", "vm", "s1"}) == 0);
  // Changes: new data, overwritten data, a discarded range, zeros written, the last block.
  REQUIRE(RunCommand({"qemu-io", "-f", "raw", "-c", "write -P 0x77 8M 1M", "-c", "write -P 0x43 1M 128k", "-c",
                      "discard 40M 512k", "-c", "write -z 0 64k", "-c", "write -P 0x11 63M 64k",
                      stack.NbdUrl("vm")},
                     &out) == 0);
  REQUIRE(stack.Tapmap({"volume", "snapshot", "vm", "s2"}) == 0);
  REQUIRE(stack.Tapmap({"volume", "diff", "s1", "s2", "--json"}, &out) == 0);
  json diff = json::parse(out);
  REQUIRE(diff["extents"].size() >= 3);

  std::string file = stack.path("s1-s2.tapmap-incr");
  int rc = stack.Tapmap({"volume", "export", "--since", "s1", "s2", file, "--json"}, &out, &err);
  INFO(err << stack.Logs());
  REQUIRE(rc == 0);
  JsonStream e = ParseStream(out);
  CheckProgress(e, "s2", true);
  const json& incr = e.result["exported"]["incremental"];
  CHECK(e.result["exported"]["format"] == "tapmap-incremental");
  CHECK(incr["from"] == "s1");
  CHECK(incr["to"] == "s2");
  CHECK(incr["extents"] == diff["extents"].size());
  CHECK(incr["data_bytes"] == diff["changed_bytes"]);
  CHECK(incr["zero_bytes"] == diff["zero_bytes"]);
  // Only the changed data is in the file: header (4 KiB-aligned) + data_bytes.
  struct stat st {};
  REQUIRE(::stat(file.c_str(), &st) == 0);
  CHECK(static_cast<uint64_t>(st.st_size) < incr["data_bytes"].get<uint64_t>() + 64 * 1024);
  CHECK(Slurp(file).rfind("tapmap-incremental 1\n{", 0) == 0);

  REQUIRE(stack.Tapmap({"volume", "clone", "s1", "restore"}) == 0);
  const std::string s1_md5 = Md5(stack.NbdUrl("s1@ro"));
  const std::string s2_md5 = Md5(stack.NbdUrl("s2@ro"));
  REQUIRE(s1_md5 != s2_md5);
  CHECK(Md5(stack.NbdUrl("restore@ro")) == s1_md5);
  rc = stack.Tapmap({"volume", "import", "--diff", file, "restore", "--json"}, &out, &err);
  INFO(err);
  REQUIRE(rc == 0);
  JsonStream a = ParseStream(out);
  CheckProgress(a, "restore", true);
  CHECK(a.result["incremental"] == incr);
  CHECK(a.result["volume"]["name"] == "restore");
  CHECK(Md5(stack.NbdUrl("restore@ro")) == s2_md5);
  // Applying it again changes nothing (an interrupted apply is finished by a re-run).
  REQUIRE(stack.Tapmap({"volume", "import", "--diff", file, "restore"}, &out, &err) == 0);
  CHECK(out.rfind("applied " + file + " (s1 -> s2) to restore", 0) == 0);
  CHECK(Md5(stack.NbdUrl("restore@ro")) == s2_md5);

  SECTION("an empty incremental (nothing changed) is valid and applies as a no-op") {
    std::string none = stack.path("none.tapmap-incr");
    REQUIRE(stack.Tapmap({"volume", "snapshot", "vm", "s3"}) == 0);
    REQUIRE(stack.Tapmap({"volume", "export", "--since", "s2", "s3", none, "--json"}, &out, &err) == 0);
    CHECK(ParseStream(out).result["exported"]["incremental"]["extents"] == 0);
    REQUIRE(stack.Tapmap({"volume", "import", "--diff", none, "restore"}, &out, &err) == 0);
    CHECK(Md5(stack.NbdUrl("restore@ro")) == s2_md5);
  }
  SECTION("a grown volume: the incremental resizes the copy") {
    REQUIRE(stack.Tapmap({"volume", "resize", "vm", "80M"}) == 0);
    REQUIRE(RunCommand({"qemu-io", "-f", "raw", "-c", "write -P 0x66 70M 1M", stack.NbdUrl("vm")}, &out) == 0);
    REQUIRE(stack.Tapmap({"volume", "snapshot", "vm", "s4"}) == 0);
    std::string grown = stack.path("grown.tapmap-incr");
    REQUIRE(stack.Tapmap({"volume", "export", "--since", "s2", "s4", grown}, &out, &err) == 0);
    REQUIRE(stack.Tapmap({"volume", "import", "--diff", grown, "restore"}, &out, &err) == 0);
    CHECK(Volume(stack, "restore")["size_bytes"] == 80 * kMiB);
    CHECK(Md5(stack.NbdUrl("restore@ro")) == Md5(stack.NbdUrl("s4@ro")));
  }
  SECTION("error paths") {
    // An existing file is refused; a truncated or foreign file is refused before writing.
    CHECK(stack.Tapmap({"volume", "export", "--since", "s1", "s2", file, "--json"}, &out, &err) == 1);
    CHECK(json::parse(out)["error"]["code"] == "already-exists");
    std::string cut = stack.path("cut.tapmap-incr");
    Sh("head -c 8192 " + file + " > " + cut);
    CHECK(stack.Tapmap({"volume", "import", "--diff", cut, "restore", "--json"}, &out, &err) == 1);
    CHECK(json::parse(out)["error"]["code"] == "corruption");
    CHECK(err.find("truncated") != std::string::npos);
    CHECK(stack.Tapmap({"volume", "import", "--diff", image, "restore", "--json"}, &out, &err) == 1);
    CHECK(json::parse(out)["error"]["code"] == "corruption");
    // Onto a missing volume, a snapshot, or a volume of another size.
    CHECK(stack.Tapmap({"volume", "import", "--diff", file, "nope", "--json"}, &out, &err) == 1);
    CHECK(json::parse(out)["error"]["code"] == "not-found");
    CHECK(err.find("tapmap volume clone s1 nope") != std::string::npos);
    CHECK(stack.Tapmap({"volume", "import", "--diff", file, "s1", "--json"}, &out, &err) == 1);
    CHECK(json::parse(out)["error"]["code"] == "read-only");
    REQUIRE(stack.Tapmap({"volume", "create", "small", "1M"}) == 0);
    CHECK(stack.Tapmap({"volume", "import", "--diff", file, "small", "--json"}, &out, &err) == 1);
    CHECK(json::parse(out)["error"]["code"] == "invalid-argument");
    // Snapshots of different version sets cannot be diffed; nothing is written.
    std::string other = stack.path("other.tapmap-incr");
    CHECK(stack.Tapmap({"volume", "export", "--since", "small", "s2", other, "--json"}, &out, &err) == 1);
    CHECK(json::parse(out)["error"]["code"] == "invalid-argument");
    CHECK_FALSE(Exists(other));
    // --format does not go with --diff.
    CHECK(stack.Tapmap({"volume", "import", "--diff", file, "restore", "--format", "raw"}, &out, &err) == 2);
  }
}

}  // namespace tapmap::testing
