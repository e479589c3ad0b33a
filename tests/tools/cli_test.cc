// The tapmap CLI's framework: argument parsing, exit codes, config file handling,
// JSON error documents, disk addresses, tables, and the control-socket client's
// handling of answers (against a scripted socket peer in this file; the real
// tapdisk-map is exercised by the integration tests).
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "common/unique_fd.h"
#include "tests/tools/scripted_control_peer.h"
#include "xenstore-tools/cli/command.h"
#include "xenstore-tools/cli/control_client.h"
#include "xenstore-tools/cli/exit_code.h"
#include "xenstore-tools/cli/nbd_command.h"
#include "xenstore-tools/cli/output.h"
#include "xenstore-tools/cli/snapshot_live_command.h"
#include "xenstore-tools/cli/stats_command.h"
#include "xenstore-tools/cli/vbd_address.h"
#include "xenstore-tools/cli/vbd_command.h"
#include "xenstore-tools/cli/volume_command.h"

namespace tapmap::cli {
namespace {

// A per-test temporary directory, removed with its content.
class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/tools_cli_test.XXXXXX";
    path_ = mkdtemp(tmpl);
  }
  ~TempDir() { std::system(("rm -rf '" + path_ + "'").c_str()); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

struct CliRun {
  int exit_code;
  std::string out;
  std::string err;
};

std::string ReadAll(std::FILE* f) {
  std::fflush(f);
  std::rewind(f);
  std::string text;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), f)) > 0) text.append(buf, n);
  std::fclose(f);
  return text;
}

CliRun Run(std::vector<std::string> args) {
  std::vector<CommandSpec> commands;
  AddVolumeCommands(&commands);
  AddVbdCommands(&commands);
  AddNbdCommands(&commands);
  AddStatsCommands(&commands);
  AddSnapshotLiveCommands(&commands);
  args.insert(args.begin(), "tapmap");
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  std::FILE* out = std::tmpfile();
  std::FILE* err = std::tmpfile();
  int code = RunCli(commands, static_cast<int>(args.size()), argv.data(), out, err);
  return {code, ReadAll(out), ReadAll(err)};
}

}  // namespace

TEST_CASE("disk addresses accept device numbers and Xen vdev names") {
  auto a = ParseVbdAddress("3/51712");
  REQUIRE(a.ok());
  CHECK(a->domid == 3);
  CHECK(a->devid == 51712);
  CHECK(ParseVbdAddress("3/xvda")->devid == 51712);
  CHECK(ParseVbdAddress("3/xvdb")->devid == 51728);
  CHECK(ParseVbdAddress("3/xvda1")->devid == 51713);
  CHECK(ParseVbdAddress("3/xvdq")->devid == ((1u << 28) | (16u << 8)));
  CHECK(ParseVbdAddress("3/xvdaa")->devid == ((1u << 28) | (26u << 8)));
  CHECK(ParseVbdAddress("7/hda")->devid == 768);
  CHECK(ParseVbdAddress("7/hdc")->devid == 5632);
  CHECK(ParseVbdAddress("7/sdb")->devid == 2064);
  for (const char* bad :
       {"3", "x/1", "3/", "/1", "3/foo", "3/xvd", "3/hde", "3/1x", "99999/1", "3/xvda-1"}) {
    INFO(bad);
    CHECK(ParseVbdAddress(bad).status().code() == StatusCode::kInvalidArgument);
  }
}

TEST_CASE("tables pad columns and right-align numbers") {
  Table t({{"NAME"}, {"SIZE", true}, {"WRITER"}});
  t.AddRow({"golden", "10 GiB", "-"});
  t.AddRow({"vm-1", "512 MiB", "host-a"});
  CHECK(t.Render() ==
        "NAME       SIZE  WRITER\n"
        "golden   10 GiB  -\n"
        "vm-1    512 MiB  host-a\n");
  CHECK_THROWS(t.AddRow({"too", "few"}));
}

TEST_CASE("usage errors exit 2 and say what is wrong") {
  CHECK(Run({}).exit_code == kExitUsage);
  auto unknown = Run({"frobnicate"});
  CHECK(unknown.exit_code == kExitUsage);
  CHECK(unknown.err.find("unknown command 'frobnicate'") != std::string::npos);
  CHECK(Run({"volume"}).exit_code == kExitUsage);
  CHECK(Run({"volume", "explode"}).exit_code == kExitUsage);
  CHECK(Run({"volume", "create", "vm1"}).exit_code == kExitUsage);                 // SIZE missing
  CHECK(Run({"volume", "create", "vm1", "1G", "extra"}).exit_code == kExitUsage);  // one too many
  auto size = Run({"volume", "create", "vm1", "12X"});
  CHECK(size.exit_code == kExitUsage);
  CHECK(size.err.find("bad size '12X'") != std::string::npos);
  CHECK(Run({"volume", "create", "vm1", "1000"}).exit_code == kExitUsage);  // not a multiple of 512
  CHECK(Run({"volume", "list", "--no-such-flag"}).exit_code == kExitUsage);
  CHECK(Run({"volume", "list", "--control", "/x"}).exit_code == kExitUsage);  // not a volume flag
  CHECK(Run({"volume", "list", "--server", "ftp:x"}).exit_code == kExitUsage);
  CHECK(Run({"vbd", "attach", "3/xvda"}).exit_code == kExitUsage);  // --volume missing
  CHECK(Run({"vbd", "attach", "3/xvda", "--volume", "v", "--mode", "x"}).exit_code == kExitUsage);
  CHECK(Run({"vbd", "pause", "3:1"}).exit_code == kExitUsage);
  CHECK(Run({"vbd", "pause", "3/1", "--layout", "qdisk"}).exit_code == kExitUsage);
  CHECK(Run({"stats", "--watch", "0"}).exit_code == kExitUsage);
  CHECK(Run({"stats", "--count", "2"}).exit_code == kExitUsage);  // --count without --watch
  CHECK(Run({"vbd", "list", "--timeout", "0"}).exit_code == kExitUsage);
}

TEST_CASE("flags may precede the command words") {
  TempDir dir;
  std::string sock = dir.path() + "/none.sock";
  auto r = Run({"--json", "--control", sock, "vbd", "list"});
  CHECK(r.exit_code == kExitUnreachable);
  CHECK(nlohmann::json::parse(r.out)["error"]["code"] == "unavailable");
  CHECK(r.err.find(sock) != std::string::npos);
  CHECK(Run({"--timeout=5", "vbd", "list", "--control", sock}).exit_code == kExitUnreachable);
  CHECK(Run({"--control", sock}).exit_code == kExitUsage);  // flags but no command
}

TEST_CASE("--help prints usage on stdout and exits 0") {
  auto top = Run({"--help"});
  CHECK(top.exit_code == kExitOk);
  CHECK(top.out.find("snapshot-live DOMID/DEVID NAME") != std::string::npos);
  CHECK(top.out.find("Exit codes") != std::string::npos);
  auto family = Run({"vbd", "--help"});
  CHECK(family.exit_code == kExitOk);
  CHECK(family.out.find("tapmap vbd attach DOMID/DEVID") != std::string::npos);
  auto cmd = Run({"vbd", "attach", "--help"});
  CHECK(cmd.exit_code == kExitOk);
  CHECK(cmd.out.find("--volume") != std::string::npos);
  CHECK(cmd.out.find("--server") == std::string::npos);  // not a vbd flag
}

TEST_CASE("an unreachable daemon exits 3 and --json prints the error document") {
  TempDir dir;
  std::string sock = dir.path() + "/none.sock";
  auto r = Run({"vbd", "list", "--control", sock, "--json"});
  CHECK(r.exit_code == kExitUnreachable);
  auto doc = nlohmann::json::parse(r.out);
  CHECK(doc["error"]["code"] == "unavailable");
  CHECK(doc["error"]["message"].get<std::string>().find(sock) != std::string::npos);
  CHECK(Run({"stats", "--control", sock}).exit_code == kExitUnreachable);
  CHECK(
      Run({"volume", "list", "--server", "unix:" + sock, "--secret-file", "/dev/null"}).exit_code ==
      kExitFailed);  // the empty secret is refused before connecting
}

TEST_CASE("the config file's [tapmap] section supplies defaults that flags override") {
  TempDir dir;
  std::string conf = dir.path() + "/tapmap.conf";
  std::string from_file = dir.path() + "/from-file.sock";
  std::ofstream(conf) << "[mapserver]\nwhatever = 1\n[tapmap]\ncontrol = " << from_file
                      << "\ntimeout = 5\n";
  auto r = Run({"vbd", "list", "--config", conf});
  CHECK(r.exit_code == kExitUnreachable);
  CHECK(r.err.find(from_file) != std::string::npos);
  std::string from_flag = dir.path() + "/from-flag.sock";
  auto r2 = Run({"vbd", "list", "--config", conf, "--control", from_flag});
  CHECK(r2.err.find(from_flag) != std::string::npos);

  std::ofstream(conf) << "[tapmap]\ncontroll = /x\n";
  auto typo = Run({"vbd", "list", "--config", conf});
  CHECK(typo.exit_code == kExitUsage);
  CHECK(typo.err.find("controll") != std::string::npos);
  CHECK(Run({"vbd", "list", "--config", dir.path() + "/missing.conf"}).exit_code == kExitUsage);
}

TEST_CASE("control answers: results, daemon errors, garbage and silence") {
  TempDir dir;
  std::string sock = dir.path() + "/control.sock";
  ScriptedControlPeer peer(sock, [](const nlohmann::json& req) -> std::string {
    std::string op = req["op"];
    if (op == "vbd-list") {
      return R"({"ok": true, "vbds": [{"domid": 3, "devid": 51712, "layout": "vbd", "volume": "vm1",)"
             R"( "mode": "w", "state": "connected", "paused": false, "rings": 1, "protocol": "x86_64-abi"}]})";
    }
    if (op == "vbd-detach")
      return R"({"ok": false, "error": {"code": "not-found", "message": "no disk 3/5"}})";
    if (op == "vbd-pause") return "this is not json";
    if (op == "vbd-resume") return "";  // never answers
    return R"({"ok": false, "error": {"code": "not-supported", "message": "?"}})";
  });

  auto list = Run({"vbd", "list", "--control", sock});
  REQUIRE(list.exit_code == kExitOk);
  CHECK(list.out.find("3/51712") != std::string::npos);
  CHECK(list.out.find("vm1") != std::string::npos);
  auto json = Run({"vbd", "list", "--control", sock, "--json"});
  REQUIRE(json.exit_code == kExitOk);
  auto doc = nlohmann::json::parse(json.out);
  CHECK(doc["vbds"][0]["volume"] == "vm1");
  CHECK(doc["vbds"][0]["devid"] == 51712);

  auto detach = Run({"vbd", "detach", "3/5", "--control", sock, "--json"});
  CHECK(detach.exit_code == kExitFailed);
  CHECK(nlohmann::json::parse(detach.out)["error"]["code"] == "not-found");
  CHECK(detach.err.find("no disk 3/5") != std::string::npos);

  auto garbage = Run({"vbd", "pause", "3/5", "--control", sock});
  CHECK(garbage.exit_code == kExitFailed);
  CHECK(garbage.err.find("malformed") != std::string::npos);

  auto silent = Run({"vbd", "resume", "3/5", "--control", sock, "--timeout", "1"});
  CHECK(silent.exit_code == kExitUnreachable);
  CHECK(silent.err.find("within 1s") != std::string::npos);

  // Requests carry the documented fields.
  bool saw_detach = false;
  for (const auto& req : peer.requests()) {
    if (req["op"] == "vbd-detach") {
      saw_detach = true;
      CHECK(req["domid"] == 3);
      CHECK(req["devid"] == 5);
      CHECK(req["layout"] == "vbd");
    }
  }
  CHECK(saw_detach);
}

}  // namespace tapmap::cli
