// What a client that only asks, or is refused, leaves behind: NBD_OPT_INFO describes an
// export without opening it read-write (so the client's NBD_OPT_GO right after never
// finds the volume held by its own INFO), and every refused open is logged once, with
// the client's export name made printable, under a rate limit.
#include <sys/socket.h>
#include <sys/un.h>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <catch2/catch.hpp>
#include <atomic>
#include <cstdio>
#include <future>
#include <fstream>
#include <sstream>
#include <thread>

#include "tapdisk-map/nbd/export_catalog.h"
#include "tapdisk-map/nbd/refusal_log.h"
#include "tapdisk-map/nbd/server.h"
#include "tests/nbd/nbd_test_client.h"
#include "tests/support/child_process.h"
#include "tests/support/memory_volume_opener.h"
#include "tests/support/wait_until.h"

namespace tapmap::nbd {
namespace {

namespace asio = boost::asio;
using testing::NbdTestClient;
using tapmap::testing::WaitUntil;

struct IoThread {
  asio::io_context io;
  asio::executor_work_guard<asio::io_context::executor_type> work = asio::make_work_guard(io);
  std::thread thread{[this] { io.run(); }};
  ~IoThread() {
    work.reset();
    thread.join();
  }
};

// The MemoryVolumeOpener (busy for a second rw open while a rw handle lives), counting
// the read-write opens it is asked for. Describe is the interface's default.
class CountingOpener : public engine::BlockDeviceOpener {
 public:
  explicit CountingOpener(asio::io_context& io) : inner(io) {}
  void Open(const std::string& name, bool read_only, OpenDone done) override {
    if (!read_only) rw_opens++;
    inner.Open(name, read_only, std::move(done));
  }
  tapmap::testing::MemoryVolumeOpener inner;
  std::atomic<int> rw_opens{0};
};

UniqueFd ConnectUnix(const std::string& path) {
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", path.c_str());
  REQUIRE(::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0);
  return fd;
}

// Reads an option's replies up to its final one; returns that one's type and fills the
// export size and transmission flags from an NBD_INFO_EXPORT reply.
uint32_t ReadReplies(NbdTestClient& c, uint64_t* size = nullptr, uint16_t* flags = nullptr) {
  for (;;) {
    auto r = c.ReadOptionReply();
    REQUIRE(r);
    if (r->type != kRepInfo) return r->type;
    if (Result<InfoExport> info = DecodeInfoExport(r->data); info.ok()) {
      if (size) *size = info->size_bytes;
      if (flags) *flags = info->transmission_flags;
    }
  }
}

TEST_CASE("NBD_OPT_INFO describes an export without opening it read-write, GO right after gets it") {
  tapmap::testing::TempDir dir("nbd-reopen");
  IoThread runner;
  CountingOpener opener(runner.io);
  opener.inner.Add("disk", 1 << 20);
  opener.inner.Add("snap", 1 << 20, /*read_only=*/true);
  VolumeExports exports(opener);
  NbdServer server(runner.io, exports, NbdServerOptions{}, Logger("nbd-reopen-test", LogLevel::kError));
  std::string path = dir / "nbd.sock";
  REQUIRE(server.Listen(*ParseListenAddress("unix:" + path)).ok());

  for (int round = 0; round < 20; ++round) {  // what nbdinfo does, back to back
    INFO("round " << round);
    {
    NbdTestClient c(ConnectUnix(path));
    uint16_t gflags = 0;
    REQUIRE(c.ReadGreeting(&gflags));
    c.SendClientFlags(kClientFlagFixedNewstyle | kClientFlagNoZeroes);
    uint64_t size = 0;
    uint16_t flags = 0;
    c.SendOption(static_cast<uint32_t>(Option::kInfo), NbdTestClient::GoPayload("disk"));
    REQUIRE(ReadReplies(c, &size, &flags) == kRepAck);
    CHECK(size == (1u << 20));
    CHECK_FALSE(flags & kTxReadOnly);
    REQUIRE(opener.rw_opens == round);  // INFO asked for no read-write open
    c.SendOption(static_cast<uint32_t>(Option::kInfo), NbdTestClient::GoPayload("snap"));
    REQUIRE(ReadReplies(c, &size, &flags) == kRepAck);
    CHECK(flags & kTxReadOnly);
    c.SendOption(static_cast<uint32_t>(Option::kGo), NbdTestClient::GoPayload("disk"));
    REQUIRE(ReadReplies(c) == kRepAck);
    CHECK(opener.rw_opens == round + 1);
    c.SendRequest(static_cast<uint16_t>(Command::kDisconnect), 0, 1, 0, 0);
    CHECK(c.PeerClosed());
    }
    // The rw handle is released once the connection has ended.
    REQUIRE(WaitUntil([&] { return !opener.inner.OpenForWrite("disk"); }));
  }
  std::atomic<bool> stopped{false};
  server.Stop([&] { stopped = true; });
  CHECK(WaitUntil([&] { return stopped.load(); }));
}

TEST_CASE("a refused open is logged once with its reason, the client's name made printable") {
  tapmap::testing::TempDir dir("nbd-refused");
  std::string log_path = dir / "log";
  std::FILE* sink = std::fopen(log_path.c_str(), "w");
  REQUIRE(sink != nullptr);
  {
    IoThread runner;
    tapmap::testing::MemoryVolumeOpener opener(runner.io);
    opener.Add("disk", 1 << 20);
    VolumeExports exports(opener);
    NbdServerOptions options;
    auto refusals = std::make_shared<RefusalLog>();
    options.connection.handshake.refusals = refusals;
    NbdServer server(runner.io, exports, options, Logger("nbd", LogLevel::kWarning, sink));
    std::string path = dir / "nbd.sock";
    REQUIRE(server.Listen(*ParseListenAddress("unix:" + path)).ok());

    NbdTestClient c(ConnectUnix(path));
    uint16_t gflags = 0;
    REQUIRE(c.ReadGreeting(&gflags));
    c.SendClientFlags(kClientFlagFixedNewstyle | kClientFlagNoZeroes);
    c.SendOption(static_cast<uint32_t>(Option::kGo), NbdTestClient::GoPayload("no\nsuch"));
    CHECK(ReadReplies(c) == kRepErrUnknown);
    c.SendOption(static_cast<uint32_t>(Option::kInfo), NbdTestClient::GoPayload("nope"));
    CHECK(ReadReplies(c) == kRepErrUnknown);
    // A second rw open while the first holds the volume: refused (busy), and logged.
    auto held = [&] {
      std::promise<Result<std::shared_ptr<engine::BlockDevice>>> p;
      opener.Open("disk", false, [&](auto r) { p.set_value(std::move(r)); });
      return p.get_future().get();
    }();
    REQUIRE(held.ok());
    c.SendOption(static_cast<uint32_t>(Option::kGo), NbdTestClient::GoPayload("disk"));
    CHECK(ReadReplies(c) == kRepErrPolicy);
    CHECK(refusals->refused() == 3);
    CHECK(refusals->suppressed() == 0);
    c.SendOption(static_cast<uint32_t>(Option::kAbort), {});
    CHECK(ReadReplies(c) == kRepAck);
    std::atomic<bool> stopped{false};
    server.Stop([&] { stopped = true; });
    CHECK(WaitUntil([&] { return stopped.load(); }));
  }
  std::fclose(sink);
  std::ifstream in(log_path);
  std::stringstream text;
  text << in.rdbuf();
  std::string log = text.str();
  INFO(log);
  CHECK(log.find("refused NBD_OPT_GO of export 'no\\x0asuch': not-found") != std::string::npos);
  CHECK(log.find("refused NBD_OPT_INFO of export 'nope': not-found") != std::string::npos);
  CHECK(log.find("refused NBD_OPT_GO of export 'disk': busy") != std::string::npos);
  // Every line is a log line of its own: the client's newline forged none.
  CHECK(log.find("\nsuch") == std::string::npos);
}

TEST_CASE("refusal log: printable names, rate limit") {
  CHECK(PrintableText("vm1") == "vm1");
  CHECK(PrintableText(std::string("a\nb\0c\\", 6)) == "a\\x0ab\\x00c\\x5c");
  CHECK(PrintableText("\xff") == "\\xff");
  CHECK(PrintableText(std::string(300, 'x'), 4) == "xxxx...");
  CHECK(QuotedExportName("vm1") == "'vm1'");
  CHECK(QuotedExportName("a' b\n") == "'a\\x27 b\\x0a'");
  CHECK(QuotedExportName("") == "''");

  std::FILE* sink = std::tmpfile();
  REQUIRE(sink != nullptr);
  Logger log("nbd", LogLevel::kWarning, sink);
  RefusalLog refusals(3, std::chrono::hours(1));
  for (int i = 0; i < 10; ++i) refusals.Refused(log, "NBD_OPT_GO", "vm", Status::Busy("held"));
  CHECK(refusals.refused() == 10);
  CHECK(refusals.suppressed() == 7);
  std::fclose(sink);
}

}  // namespace
}  // namespace tapmap::nbd

namespace tapmap::nbd {
namespace {

TEST_CASE("export names: VOLUME@ro asks for a read-only open", "[nbd][export]") {
  CHECK(ParseExportName("vm").volume == "vm");
  CHECK_FALSE(ParseExportName("vm").read_only);
  CHECK(ParseExportName("vm@ro").volume == "vm");
  CHECK(ParseExportName("vm@ro").read_only);
  // "@ro" alone names no volume: it is looked up (and not found) as it is.
  CHECK(ParseExportName("@ro").volume == "@ro");
  CHECK_FALSE(ParseExportName("@ro").read_only);
  CHECK(ParseExportName("vm@rw").volume == "vm@rw");
}

TEST_CASE("VOLUME@ro opens the volume read-only beside a read-write opener", "[nbd][export]") {
  IoThread t;
  tapmap::testing::MemoryVolumeOpener opener(t.io);
  opener.Add("vm", 1 << 20);
  VolumeExports exports(opener);
  auto open = [&](const std::string& name) {
    std::promise<Result<std::shared_ptr<engine::BlockDevice>>> p;
    exports.Open(name, [&](Result<std::shared_ptr<engine::BlockDevice>> r) { p.set_value(std::move(r)); });
    return p.get_future().get();
  };
  auto rw = open("vm");
  REQUIRE(rw.ok());
  auto ro = open("vm@ro");
  REQUIRE(ro.ok());
  CHECK(exports.OpenVolumeNames() == std::vector<std::string>{"vm", "vm@ro"});
  std::promise<Result<ExportCatalog::ExportInfo>> described;
  rw->reset();
  exports.Describe("vm@ro", [&](Result<ExportCatalog::ExportInfo> i) { described.set_value(std::move(i)); });
  auto info = described.get_future().get();
  REQUIRE(info.ok());
  CHECK(info->size_bytes == 1 << 20);
}

}  // namespace
}  // namespace tapmap::nbd
