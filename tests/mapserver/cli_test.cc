// The `mapserver` program: format, serve and fsck as a user runs them.
#include <signal.h>
#include <sys/stat.h>

#include <catch2/catch.hpp>
#include <fstream>
#include <thread>

#include "protocol/connection.h"
#include "protocol/remote_status.h"
#include "mapserver/metadata_format.h"
#include "mapserver/metadata_store.h"
#include "tests/support/child_process.h"
#include "tests/support/wait_until.h"

namespace tapmap::mapserver {
namespace {

using tapmap::testing::ChildProcess;
using tapmap::testing::RunCommand;
using tapmap::testing::WaitUntil;
const std::string kMapserver = std::string(TAPMAP_BIN_DIR) + "/mapserver";

std::vector<std::string> Cmd(std::vector<std::string> args) {
  std::vector<std::string> argv = {kMapserver};
  argv.insert(argv.end(), args.begin(), args.end());
  argv.push_back("--config");
  argv.push_back("/dev/null");
  return argv;
}

TEST_CASE("mapserver --help and usage errors") {
  std::string out;
  CHECK(RunCommand({kMapserver, "--help"}, &out) == 0);
  CHECK(out.find("format") != std::string::npos);
  CHECK(out.find("--secret-file") != std::string::npos);
  CHECK(RunCommand({kMapserver, "fsck", "--help"}, &out) == 0);
  CHECK(RunCommand({kMapserver, "frobnicate"}, &out) == 2);
  CHECK(RunCommand(Cmd({"serve", "--bogus"}), &out) == 1);
  CHECK(out.find("unknown flag") != std::string::npos);
  CHECK(RunCommand(Cmd({"fsck"}), &out) == 1);
  CHECK(out.find("--pool is required") != std::string::npos);
}

TEST_CASE("mapserver format, serve, fsck end to end") {
  tapmap::testing::TempDir dir("tapmap-mapserver-cli");
  std::string out;
  auto pool = dir / "pool", meta = dir / "meta";
  CHECK(RunCommand(Cmd({"format", "--pool", pool, "--meta", meta}), &out) == 1);
  CHECK(out.find("--size is required") != std::string::npos);
  REQUIRE(RunCommand(Cmd({"format", "--pool", pool, "--meta", meta, "--size", "32M"}), &out) == 0);
  CHECK(out.find("blocks of 64 KiB") != std::string::npos);
  CHECK(RunCommand(Cmd({"format", "--pool", pool, "--meta", meta, "--size", "32M"}), &out) == 1);
  CHECK(out.find("already-exists") != std::string::npos);
  REQUIRE(RunCommand(Cmd({"fsck", "--pool", pool, "--meta", meta}), &out) == 0);
  CHECK(out.find("fsck clean: 0 volumes") != std::string::npos);

  // A world-readable secret is refused.
  std::ofstream(dir / "secret") << "topsecret\n";
  ::chmod((dir / "secret").c_str(), 0644);
  auto serve_args = Cmd({"serve", "--pool", pool, "--meta", meta, "--listen",
                         "unix:" + (dir / "sock"), "--secret-file", dir / "secret"});
  CHECK(RunCommand(serve_args, &out) == 1);
  CHECK(out.find("permission-denied") != std::string::npos);
  ::chmod((dir / "secret").c_str(), 0600);

  {
    ChildProcess server(serve_args, dir / "serve.log");
    auto io = kj::setupAsyncIo();
    auto address = *protocol::ParseServerAddress("unix:" + (dir / "sock"));
    kj::Own<protocol::Connection> conn;
    REQUIRE(WaitUntil(
        [&] {
          auto c = protocol::Connection::ConnectBlocking(io, address, "cli-test", "topsecret");
          if (c.ok()) conn = kj::mv(*c);
          return conn.get() != nullptr;
        },
        std::chrono::seconds(10), std::chrono::milliseconds(20)));
    auto req = conn->session().createRequest();
    req.setName("disk");
    req.setSizeBytes(1 << 20);
    req.send().wait(io.waitScope);
    // fsck refuses while the server holds the metadata.
    CHECK(RunCommand(Cmd({"fsck", "--pool", pool, "--meta", meta}), &out) == 1);
    CHECK(out.find("busy") != std::string::npos);
    bool disconnected = false;
    auto watch = conn->onDisconnect().then([&] { disconnected = true; }).eagerlyEvaluate(nullptr);
    server.Signal(SIGTERM);
    auto status = server.Wait(std::chrono::milliseconds(20000));
    REQUIRE(status.has_value());
    CHECK(WIFEXITED(*status));
    CHECK(WEXITSTATUS(*status) == 0);
    // The client library reports the lost connection, and calls fail as unavailable.
    for (int i = 0; i < 1000 && !disconnected; ++i) {
      io.provider->getTimer().afterDelay(10 * kj::MILLISECONDS).wait(io.waitScope);
    }
    CHECK(disconnected);
    auto after = protocol::RunCatching([&] { conn->session().listRequest().send().wait(io.waitScope); });
    CHECK(after.code() == StatusCode::kUnavailable);
    watch = kj::Promise<void>(kj::READY_NOW);
    conn = nullptr;
  }
  std::ifstream log(dir / "serve.log");
  std::string log_text((std::istreambuf_iterator<char>(log)), std::istreambuf_iterator<char>());
  CHECK(log_text.find("listening on unix:") != std::string::npos);
  REQUIRE(RunCommand(Cmd({"fsck", "--pool", pool, "--meta", meta}), &out) == 0);
  CHECK(out.find("fsck clean: 1 volumes") != std::string::npos);

  // Damage: fsck exits 2 and names the problem.
  {
    auto store = MetadataStore::Open(meta);
    REQUIRE(store.ok());
    auto txn = (*store)->BeginWrite();
    txn->PutMetaU64(kMetaFreeBlocks, 3);
    txn->Commit();
  }
  CHECK(RunCommand(Cmd({"fsck", "--pool", pool, "--meta", meta}), &out) == 2);
  CHECK(out.find("problem: free-blocks counter") != std::string::npos);
}

}  // namespace
}  // namespace tapmap::mapserver
