// `tapmap volume ...` against a real mapserver (formatted and served from a temporary
// directory): every subcommand's success and error paths, exit codes, and the JSON
// schema documented in tapmap(1).
#include <sys/stat.h>

#include <catch2/catch.hpp>
#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "protocol/connection.h"
#include "tests/support/child_process.h"

namespace tapmap::testing {
namespace {

using nlohmann::json;

struct CliResult {
  int exit_code;
  std::string out;  // stdout only
};

class MapserverFixture {
 public:
  MapserverFixture() : dir_("tools-volume") {
    std::ofstream(dir_ / "empty.conf") << "# no settings\n";
    std::ofstream(dir_ / "secret") << "correct horse battery staple\n";
    REQUIRE(::chmod((dir_ / "secret").c_str(), 0600) == 0);
    std::ofstream(dir_ / "wrong-secret") << "not the secret\n";
    REQUIRE(::chmod((dir_ / "wrong-secret").c_str(), 0600) == 0);
    std::string out;
    int rc = RunCommand({TAPMAP_BIN_DIR "/mapserver", "format", "--pool", dir_ / "pool", "--meta",
                         dir_ / "meta", "--size", "64M", "--config", dir_ / "empty.conf"},
                        &out);
    INFO(out);
    REQUIRE(rc == 0);
    server_ = std::make_unique<ChildProcess>(
        std::vector<std::string>{TAPMAP_BIN_DIR "/mapserver", "serve", "--pool", dir_ / "pool",
                                 "--meta", dir_ / "meta", "--listen", "unix:" + socket(),
                                 "--secret-file", dir_ / "secret", "--config", dir_ / "empty.conf"},
        dir_ / "mapserver.log");
    REQUIRE(WaitForPath(socket(), std::chrono::seconds(20)));
  }

  std::string socket() const { return dir_ / "ms.sock"; }
  std::string path(const std::string& name) const { return dir_ / name; }

  // Runs tapmap with the fixture's server settings; stdout only (stderr dropped).
  CliResult Tapmap(std::vector<std::string> args, const std::string& secret = "secret") {
    std::vector<std::string> argv = {"sh", "-c", "exec \"$@\" 2>/dev/null", "sh",
                                     TAPMAP_BIN_DIR "/tapmap"};
    argv.insert(argv.end(), args.begin(), args.end());
    for (const std::string& a :
         {std::string("--server"), "unix:" + socket(), std::string("--secret-file"), dir_ / secret,
          std::string("--config"), dir_ / "empty.conf", std::string("--host-name"),
          std::string("test-host")}) {
      argv.push_back(a);
    }
    CliResult r;
    r.exit_code = RunCommand(argv, &r.out);
    return r;
  }

  json TapmapJson(std::vector<std::string> args, int expect_exit = 0) {
    args.push_back("--json");
    CliResult r = Tapmap(args);
    INFO(r.out);
    REQUIRE(r.exit_code == expect_exit);
    json doc = json::parse(r.out, nullptr, false);
    REQUIRE(!doc.is_discarded());
    return doc;
  }

 private:
  TempDir dir_;
  std::unique_ptr<ChildProcess> server_;
};

// The Volume object of tapmap(1): every key, with its type.
void CheckVolumeSchema(const json& v) {
  INFO(v.dump());
  REQUIRE(v.is_object());
  for (const char* k : {"name", "kind", "parent", "writer", "standby"}) CHECK(v[k].is_string());
  CHECK(v["read_only"].is_boolean());
  for (const char* k : {"size_bytes", "version_set", "mapped_bytes", "exclusive_bytes",
                        "shared_bytes", "created_unix_seconds", "openers"}) {
    CHECK(v[k].is_number_unsigned());
  }
  CHECK(v.size() == 13);
}

void CheckError(const json& doc, const std::string& code) {
  INFO(doc.dump());
  REQUIRE(doc.contains("error"));
  CHECK(doc["error"]["code"] == code);
  CHECK(doc["error"]["message"].is_string());
}

}  // namespace

TEST_CASE("volume commands create, copy, resize, list and delete volumes on mapserver") {
  MapserverFixture f;

  json created = f.TapmapJson({"volume", "create", "golden", "16M"});
  CheckVolumeSchema(created["volume"]);
  CHECK(created["volume"]["name"] == "golden");
  CHECK(created["volume"]["size_bytes"] == 16 * 1024 * 1024);
  CHECK(created["volume"]["kind"] == "base");
  CHECK(created["volume"]["read_only"] == false);

  json snap = f.TapmapJson({"volume", "snapshot", "golden", "golden-v1"});
  CheckVolumeSchema(snap["volume"]);
  CHECK(snap["volume"]["kind"] == "snapshot");
  CHECK(snap["volume"]["read_only"] == true);
  CHECK(snap["volume"]["parent"] == "golden");
  CHECK(snap["volume"]["version_set"] == created["volume"]["version_set"]);

  json clone = f.TapmapJson({"volume", "clone", "golden-v1", "vm1"});
  CheckVolumeSchema(clone["volume"]);
  CHECK(clone["volume"]["kind"] == "clone");
  CHECK(clone["volume"]["read_only"] == false);
  CHECK(clone["volume"]["parent"] == "golden-v1");

  json grown = f.TapmapJson({"volume", "resize", "vm1", "32M"});
  CHECK(grown["volume"]["size_bytes"] == 32 * 1024 * 1024);
  json info = f.TapmapJson({"volume", "info", "vm1"});
  CheckVolumeSchema(info["volume"]);
  CHECK(info["volume"]["size_bytes"] == 32 * 1024 * 1024);
  json shrunk = f.TapmapJson({"volume", "resize", "vm1", "8M", "--allow-shrink"});
  CHECK(shrunk["volume"]["size_bytes"] == 8 * 1024 * 1024);

  json list = f.TapmapJson({"volume", "list"});
  REQUIRE(list["volumes"].is_array());
  std::vector<std::string> names;
  for (const auto& v : list["volumes"]) {
    CheckVolumeSchema(v);
    names.push_back(v["name"]);
  }
  std::sort(names.begin(), names.end());
  CHECK(names == std::vector<std::string>{"golden", "golden-v1", "vm1"});
  const json& pool = list["pool"];
  for (const char* k : {"pool_bytes", "block_size", "total_blocks", "free_blocks",
                        "reserved_blocks", "volumes", "version_sets", "metadata_bytes"}) {
    INFO(k);
    CHECK(pool[k].is_number_unsigned());
  }
  CHECK(pool["uuid"].is_string());
  CHECK(pool["volumes"] == 3);
  CHECK(pool["block_size"] == 64 * 1024);

  json deleted = f.TapmapJson({"volume", "delete", "vm1"});
  CHECK(deleted == json({{"deleted", "vm1"}}));
  CheckError(f.TapmapJson({"volume", "info", "vm1"}, 1), "not-found");
}

TEST_CASE("volume commands print aligned tables and one-line results for people") {
  MapserverFixture f;
  auto created = f.Tapmap({"volume", "create", "golden", "16M"});
  REQUIRE(created.exit_code == 0);
  CHECK(created.out == "created golden (16 MiB)\n");
  REQUIRE(f.Tapmap({"volume", "snapshot", "golden", "golden-v1"}).exit_code == 0);
  auto list = f.Tapmap({"volume", "list"});
  REQUIRE(list.exit_code == 0);
  INFO(list.out);
  CHECK(list.out.rfind("NAME", 0) == 0);
  CHECK(list.out.find("golden-v1") != std::string::npos);
  CHECK(list.out.find("16 MiB") != std::string::npos);
  CHECK(list.out.find("pool: ") != std::string::npos);
  // Columns line up: "SIZE" ends where each size ends (right-aligned numbers).
  std::string header = list.out.substr(0, list.out.find('\n'));
  size_t size_end = header.find("SIZE") + 4;
  size_t row_start = list.out.find("\ngolden ") + 1;
  CHECK(list.out.substr(row_start + size_end - 6, 6) == "16 MiB");
  auto info = f.Tapmap({"volume", "info", "golden-v1"});
  REQUIRE(info.exit_code == 0);
  CHECK(info.out.find("kind") != std::string::npos);
  CHECK(info.out.find("snapshot") != std::string::npos);
}

// Maps `blocks` (64 KiB pool blocks) of `volume` through the protocol, as a host's
// writes would (prepareWrite + commit; the data itself does not matter to a diff).
void WriteBlocks(const MapserverFixture& f, const std::string& volume, std::vector<uint64_t> blocks) {
  auto io = kj::setupAsyncIo();
  auto address = protocol::ParseServerAddress("unix:" + f.socket());
  REQUIRE(address.ok());
  auto conn = protocol::Connection::ConnectBlocking(io, *address, "writer", "correct horse battery staple");
  REQUIRE(conn.ok());
  auto open = (*conn)->session().openRequest();
  open.setName(volume);
  open.setMode(proto::OpenMode::READ_WRITE);
  auto vol = open.send().wait(io.waitScope).getVolume();
  for (uint64_t b : blocks) {
    auto prep = vol.prepareWriteRequest();
    auto r = prep.initRanges(1)[0];
    r.setOffset(b * 65536);
    r.setLength(65536);
    auto extents = prep.send().wait(io.waitScope).getExtents();
    auto commit = vol.commitRequest();
    commit.setExtents(extents);
    commit.send().wait(io.waitScope);
  }
  // Closed, not dropped with the connection: a dropped opener is orphaned and keeps
  // the rw lease until its host lease expires (leases.md), which would hold up the
  // snapshot that follows.
  vol.closeRequest().send().wait(io.waitScope);
}

TEST_CASE("volume diff lists the extents changed between two volumes of a version set") {
  MapserverFixture f;
  f.TapmapJson({"volume", "create", "vm", "16M"});
  WriteBlocks(f, "vm", {0, 1, 2, 10});
  f.TapmapJson({"volume", "snapshot", "vm", "monday"});
  WriteBlocks(f, "vm", {2, 3, 100});
  f.TapmapJson({"volume", "snapshot", "vm", "tuesday"});
  auto d = f.TapmapJson({"volume", "diff", "monday", "tuesday"});
  REQUIRE(d["extents"].size() == 2);
  CHECK(d["extents"][0] == json({{"offset", 2 * 65536}, {"length", 2 * 65536}, {"zero", false}}));
  CHECK(d["extents"][1] == json({{"offset", 100 * 65536}, {"length", 65536}, {"zero", false}}));
  CHECK(d["changed_bytes"] == 3 * 65536);
  CHECK(f.TapmapJson({"volume", "diff", "tuesday", "vm"})["extents"].empty());
  // Backwards: what monday has that tuesday has not reads as zeros in monday.
  auto back = f.TapmapJson({"volume", "diff", "tuesday", "monday"});
  CHECK(back["zero_bytes"] == 2 * 65536);
  CHECK(back["changed_bytes"] == 65536);
  CliResult text = f.Tapmap({"volume", "diff", "monday", "tuesday"});
  CHECK(text.exit_code == 0);
  CHECK(text.out.find("2 extents: 192 KiB of data and 0 B of zeros changed from monday to tuesday") !=
        std::string::npos);
  // Errors: unknown volume, volumes of two version sets.
  CheckError(f.TapmapJson({"volume", "diff", "monday", "nope"}, 1), "not-found");
  f.TapmapJson({"volume", "create", "other", "16M"});
  CheckError(f.TapmapJson({"volume", "diff", "monday", "other"}, 1), "invalid-argument");
  CHECK(f.Tapmap({"volume", "diff", "monday"}).exit_code == 2);
}

TEST_CASE("volume rename renames a closed volume and its clones follow") {
  MapserverFixture f;
  f.TapmapJson({"volume", "create", "golden", "16M"});
  WriteBlocks(f, "golden", {0, 5});
  f.TapmapJson({"volume", "snapshot", "golden", "golden-snap"});
  f.TapmapJson({"volume", "clone", "golden-snap", "vm1"});
  auto r = f.TapmapJson({"volume", "rename", "golden-snap", "gold-2026"});
  CHECK(r["volume"]["name"] == "gold-2026");
  CHECK(r["renamed_from"] == "golden-snap");
  CHECK(f.TapmapJson({"volume", "info", "vm1"})["volume"]["parent"] == "gold-2026");
  CheckError(f.TapmapJson({"volume", "info", "golden-snap"}, 1), "not-found");
  CHECK(f.TapmapJson({"volume", "diff", "gold-2026", "golden"})["extents"].empty());
  CheckError(f.TapmapJson({"volume", "rename", "vm1", "golden"}, 1), "already-exists");
  CheckError(f.TapmapJson({"volume", "rename", "nope", "x"}, 1), "not-found");
  CheckError(f.TapmapJson({"volume", "rename", "vm1", "bad name"}, 1), "invalid-argument");
  CHECK(f.Tapmap({"volume", "rename", "vm1"}).exit_code == 2);
}

TEST_CASE("volume command failures exit 1 with the server's status code") {
  MapserverFixture f;
  f.TapmapJson({"volume", "create", "golden", "16M"});
  CheckError(f.TapmapJson({"volume", "create", "golden", "16M"}, 1), "already-exists");
  CheckError(f.TapmapJson({"volume", "info", "nope"}, 1), "not-found");
  CheckError(f.TapmapJson({"volume", "delete", "nope"}, 1), "not-found");
  CheckError(f.TapmapJson({"volume", "snapshot", "nope", "x"}, 1), "not-found");
  CheckError(f.TapmapJson({"volume", "clone", "nope", "x"}, 1), "not-found");
  CheckError(f.TapmapJson({"volume", "resize", "nope", "1G"}, 1), "not-found");
  // Shrinking needs --allow-shrink.
  auto shrink = f.TapmapJson({"volume", "resize", "golden", "8M"}, 1);
  CHECK(shrink["error"]["code"] != "ok");
  CHECK(f.TapmapJson({"volume", "info", "golden"})["volume"]["size_bytes"] == 16 * 1024 * 1024);

  auto wrong = f.Tapmap({"volume", "list", "--json"}, "wrong-secret");
  CHECK(wrong.exit_code == 1);
  CheckError(json::parse(wrong.out), "permission-denied");
}

TEST_CASE("volume commands exit 3 when mapserver is not reachable") {
  TempDir dir("tools-volume-down");
  std::ofstream(dir / "secret") << "s\n";
  REQUIRE(::chmod((dir / "secret").c_str(), 0600) == 0);
  std::string out;
  int rc = RunCommand(
      {"sh", "-c", "exec \"$@\" 2>/dev/null", "sh", TAPMAP_BIN_DIR "/tapmap", "volume", "list",
       "--server", "unix:" + (dir / "none.sock"), "--secret-file", dir / "secret", "--json"},
      &out);
  CHECK(rc == 3);
  CheckError(json::parse(out), "unavailable");
}

}  // namespace tapmap::testing
