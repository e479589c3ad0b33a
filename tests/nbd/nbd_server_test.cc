// NbdServer: listening on unix and TCP addresses, describing its exports, and stopping
// gracefully with clients connected (in-flight requests answered, then closed).
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <atomic>
#include <fstream>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <catch2/catch.hpp>
#include <thread>

#include "tapdisk-map/nbd/listener_spec.h"
#include "tapdisk-map/nbd/server.h"
#include "tests/nbd/memory_catalog.h"
#include "tests/nbd/nbd_test_client.h"
#include "tests/support/child_process.h"
#include "tests/support/wait_until.h"

namespace tapmap::nbd {
namespace {

namespace asio = boost::asio;
using testing::MemoryCatalog;
using testing::NbdTestClient;
using tapmap::testing::WaitUntil;

UniqueFd ConnectUnix(const std::string& path) {
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", path.c_str());
  REQUIRE(::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0);
  return fd;
}

// An io_context run by one thread until the end of the scope, which lets the thread
// finish what is queued (declare it first: it must outlive the server and catalog).
struct IoThread {
  asio::io_context io;
  asio::executor_work_guard<asio::io_context::executor_type> work = asio::make_work_guard(io);
  std::thread thread{[this] { io.run(); }};
  ~IoThread() {
    work.reset();
    thread.join();
  }
};

TEST_CASE("server: unix listener, Describe, graceful Stop with a client connected") {
  tapmap::testing::TempDir dir("nbd-server");
  IoThread runner;
  asio::io_context& io = runner.io;
  MemoryCatalog catalog;
  auto disk = catalog.Add(io, "disk", 1 << 20);
  {
    NbdServer server(io, catalog, NbdServerOptions{}, Logger("nbd-server-test", LogLevel::kError));
    std::string path = dir / "nbd.sock";
    REQUIRE(server.Listen(*ParseListenAddress("unix:" + path)).ok());
    // A second server cannot take over a path that is not a socket.
    std::string plain = dir / "plain";
    std::ofstream(plain) << "x";
    CHECK(server.Listen(*ParseListenAddress("unix:" + plain)).code() == StatusCode::kAlreadyExists);

    NbdTestClient client(ConnectUnix(path));
    uint64_t size = 0;
    uint16_t flags = 0;
    REQUIRE(client.Handshake("disk", false, &size, &flags));
    client.SendRequest(static_cast<uint16_t>(Command::kWrite), 0, 1, 0, 512, std::vector<uint8_t>(512, 7));
    REQUIRE(client.ReadSimpleReply(0)->error == 0);

    auto described = server.Describe();
    REQUIRE(described.size() == 1);
    CHECK(described[0].address == "unix:" + path);
    CHECK(described[0].connections == 1);
    CHECK(described[0].volumes_open == std::vector<std::string>{"disk"});

    std::atomic<bool> stopped{false};
    server.Stop([&] { stopped = true; });
    CHECK(client.PeerClosed());
    CHECK(WaitUntil([&] { return stopped.load(); }));
    CHECK(disk->counters().flushes == 1);  // the connection's unflushed write, at close
    CHECK(::access(path.c_str(), F_OK) != 0);  // socket file removed
  }
}

TEST_CASE("server: TCP listener on loopback") {
  IoThread runner;
  asio::io_context& io = runner.io;
  MemoryCatalog catalog;
  catalog.Add(io, "disk", 1 << 20);
  {
    NbdServerOptions options;
    options.allow_plaintext_tcp = true;
    NbdServer server(io, catalog, options, Logger("nbd-server-test", LogLevel::kError));
    // Find a free loopback port, then listen on it.
    UniqueFd probe(::socket(AF_INET, SOCK_STREAM, 0));
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::bind(probe.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0);
    socklen_t len = sizeof(addr);
    ::getsockname(probe.get(), reinterpret_cast<sockaddr*>(&addr), &len);
    uint16_t port = ntohs(addr.sin_port);
    probe.Reset();
    REQUIRE(server.Listen(*ParseListenAddress("tcp:127.0.0.1:" + std::to_string(port))).ok());

    UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    REQUIRE(::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0);
    NbdTestClient client(std::move(fd));
    uint64_t size = 0;
    uint16_t flags = 0;
    REQUIRE(client.Handshake("disk", true, &size, &flags));
    CHECK(size == (1u << 20));
    client.SendRequest(static_cast<uint16_t>(Command::kRead), 0, 9, 4096, 4096);
    auto reply = client.ReadStructuredReply();
    REQUIRE(reply);
    CHECK(reply->handle == 9);
    CHECK(reply->data.size() == 4096);
    std::atomic<bool> stopped{false};
    server.Stop([&] { stopped = true; });
    CHECK(WaitUntil([&] { return stopped.load(); }));
  }
}

TEST_CASE("server: a per-device listener serves one export, also as the default, until Unlisten") {
  tapmap::testing::TempDir dir("nbd-server");
  IoThread runner;
  asio::io_context& io = runner.io;
  MemoryCatalog catalog;
  auto disk = catalog.Add(io, "disk", 1 << 20);
  catalog.Add(io, "other", 1 << 20);
  {
    NbdServer server(io, catalog, NbdServerOptions{}, Logger("nbd-server-test", LogLevel::kError));
    std::string shared = dir / "nbd.sock";
    std::string own = dir / "disk.sock";
    REQUIRE(server.Listen(*ParseListenAddress("unix:" + shared)).ok());
    REQUIRE(server.Listen(*ParseListenAddress("unix:" + own), {.default_export = "disk"}).ok());
    CHECK(server.Listen(*ParseListenAddress("unix:" + own), {.default_export = "disk"}).code() == StatusCode::kAlreadyExists);

    uint64_t size = 0;
    uint16_t flags = 0;
    NbdTestClient by_default(ConnectUnix(own));
    REQUIRE(by_default.Handshake("", false, &size, &flags));  // the default export
    CHECK(size == (1u << 20));
    by_default.SendRequest(static_cast<uint16_t>(Command::kWrite), 0, 1, 0, 512, std::vector<uint8_t>(512, 9));
    REQUIRE(by_default.ReadSimpleReply(0)->error == 0);
    NbdTestClient by_name(ConnectUnix(own));
    CHECK(by_name.Handshake("disk", false, &size, &flags));
    NbdTestClient wrong(ConnectUnix(own));
    CHECK(!wrong.Handshake("other", false, &size, &flags));  // only "disk" is offered here
    NbdTestClient other(ConnectUnix(shared));
    CHECK(other.Handshake("other", false, &size, &flags));  // the shared listener is unchanged

    auto described = server.Describe();
    REQUIRE(described.size() == 2);
    CHECK(described[1].address == "unix:" + own);
    CHECK(described[1].default_export == "disk");
    CHECK(described[0].default_export.empty());

    REQUIRE(server.Unlisten("unix:" + own).ok());
    CHECK(::access(own.c_str(), F_OK) != 0);  // gone when Unlisten returns
    CHECK(server.Unlisten("unix:" + own).code() == StatusCode::kNotFound);
    CHECK(by_default.PeerClosed());  // its connections end (in-flight answered)
    CHECK(by_name.PeerClosed());
    CHECK(WaitUntil([&] { return server.Describe().size() == 1; }));
    // Unlisten then Listen at once on one path (what block-tapmap does): the new
    // socket file is not removed by the old listener's late close. Unlisten unlinks the
    // file itself and forgets the path; what runs after it returns (the acceptor's
    // close, posted to the accept strand, then the end of the old accept loop) unlinks
    // nothing. The close is posted to that strand before the new Listen starts its
    // accept loop there, so a handshake served on the new socket (accepted on that
    // strand) is the sign that the old listener's close has run: the file is checked
    // after it, not after a sleep.
    REQUIRE(server.Listen(*ParseListenAddress("unix:" + own), {.default_export = "disk"}).ok());
    REQUIRE(server.Unlisten("unix:" + own).ok());
    REQUIRE(server.Listen(*ParseListenAddress("unix:" + own), {.default_export = "disk"}).ok());
    NbdTestClient again(ConnectUnix(own));
    REQUIRE(again.Handshake("", false, &size, &flags));
    CHECK(::access(own.c_str(), F_OK) == 0);
    NbdTestClient again2(ConnectUnix(own));  // the file is still the listening socket
    CHECK(again2.Handshake("disk", false, &size, &flags));
    REQUIRE(server.Unlisten("unix:" + own).ok());
    CHECK(again.PeerClosed());
    CHECK(again2.PeerClosed());
    // The shared listener's client still works, and the address can be taken again.
    other.SendRequest(static_cast<uint16_t>(Command::kRead), 0, 2, 0, 512);
    CHECK(other.ReadSimpleReply(512)->error == 0);
    CHECK(server.Listen(*ParseListenAddress("unix:" + own), {.default_export = "disk"}).ok());

    std::atomic<bool> stopped{false};
    server.Stop([&] { stopped = true; });
    CHECK(WaitUntil([&] { return stopped.load(); }));
  }
}


TEST_CASE("server: at the connection limit a new client displaces the oldest one still negotiating") {
  tapmap::testing::TempDir dir("nbd-server");
  IoThread runner;
  asio::io_context& io = runner.io;
  MemoryCatalog catalog;
  catalog.Add(io, "disk", 1 << 20);
  {
    NbdServerOptions options;
    options.max_connections = 2;
    NbdServer server(io, catalog, options, Logger("nbd-server-test", LogLevel::kError));
    const std::string path = dir / "nbd.sock";
    REQUIRE(server.Listen(*ParseListenAddress("unix:" + path)).ok());
    uint16_t greeting_flags = 0;
    NbdTestClient silent1(ConnectUnix(path));
    REQUIRE(silent1.ReadGreeting(&greeting_flags));  // accepted
    NbdTestClient silent2(ConnectUnix(path));
    REQUIRE(silent2.ReadGreeting(&greeting_flags));
    // A third: the oldest silent one makes room.
    NbdTestClient good(ConnectUnix(path));
    uint64_t size = 0;
    uint16_t flags = 0;
    REQUIRE(good.Handshake("disk", false, &size, &flags));
    CHECK(silent1.PeerClosed());
    // Another: silent2 (still negotiating) makes room; `good` serves an export and stays.
    NbdTestClient good2(ConnectUnix(path));
    REQUIRE(good2.Handshake("disk", false, &size, &flags));
    CHECK(silent2.PeerClosed());
    // Both connections serve an export: a further client is closed at once.
    NbdTestClient refused(ConnectUnix(path));
    CHECK(refused.PeerClosed());
    for (NbdTestClient* c : {&good, &good2}) {
      c->SendRequest(static_cast<uint16_t>(Command::kRead), 0, 5, 0, 512);
      auto reply = c->ReadSimpleReply(512);
      REQUIRE(reply);
      CHECK(reply->error == 0);
    }
    std::atomic<bool> stopped{false};
    server.Stop([&] { stopped = true; });
    CHECK(WaitUntil([&] { return stopped.load(); }));
  }
}

TEST_CASE("server: failed handshakes are logged within a rate limit") {
  tapmap::testing::TempDir dir("nbd-server");
  const std::string log_path = dir / "log";
  std::FILE* sink = std::fopen(log_path.c_str(), "w");
  REQUIRE(sink != nullptr);
  {
    IoThread runner;
    MemoryCatalog catalog;
    NbdServerOptions options;
    options.connection.failure_log_limiter = std::make_shared<RateLimiter>(5, std::chrono::hours(1));
    NbdServer server(runner.io, catalog, options, Logger("nbd-server-test", LogLevel::kWarning, sink));
    const std::string path = dir / "nbd.sock";
    REQUIRE(server.Listen(*ParseListenAddress("unix:" + path)).ok());
    for (int i = 0; i < 50; ++i) {
      NbdTestClient c(ConnectUnix(path));
      const char junk[] = "GET / HTTP/1.0\r\n\r\n";  // bad client flags: the server hangs up
      c.WriteRaw(junk, sizeof(junk));
      CHECK(c.PeerClosed());
    }
    std::atomic<bool> stopped{false};
    server.Stop([&] { stopped = true; });
    CHECK(WaitUntil([&] { return stopped.load(); }));
  }
  std::fclose(sink);
  std::ifstream in(log_path);
  int failures = 0;
  for (std::string line; std::getline(in, line);) failures += line.find("negotiation failed") != std::string::npos;
  CHECK(failures == 5);
}

TEST_CASE("server: a listener's export allow-list: other exports are unknown and not listed") {
  tapmap::testing::TempDir dir("nbd-server");
  IoThread runner;
  asio::io_context& io = runner.io;
  MemoryCatalog catalog;
  for (const char* name : {"vm1", "vm2", "web-a", "web-b", "secret"}) catalog.Add(io, name, 1 << 20);
  {
    NbdServer server(io, catalog, NbdServerOptions{}, Logger("nbd-server-test", LogLevel::kError));
    const std::string all = dir / "all.sock", some = dir / "some.sock";
    REQUIRE(server.Listen(*ParseListenAddress("unix:" + all)).ok());
    REQUIRE(server.Listen(*ParseListenAddress("unix:" + some), {.allowed_exports = {"vm1", "web-*"}}).ok());
    // A bad list, or a per-device export outside the list, is refused at Listen.
    CHECK(server.Listen(*ParseListenAddress("unix:" + (dir / "x.sock")), {.allowed_exports = {"a/b"}}).code() ==
          StatusCode::kInvalidArgument);
    CHECK(server.Listen(*ParseListenAddress("unix:" + (dir / "y.sock")),
                        {.default_export = "secret", .allowed_exports = {"vm1"}})
              .code() == StatusCode::kInvalidArgument);

    NbdTestClient c(ConnectUnix(some));
    REQUIRE(c.StartOptions());
    CHECK(c.List() == std::vector<std::string>{"vm1", "web-a", "web-b"});
    uint64_t size = 0;
    CHECK(c.Ask(Option::kInfo, "secret") == kRepErrUnknown);
    CHECK(c.Ask(Option::kGo, "vm2") == kRepErrUnknown);
    CHECK(c.Ask(Option::kInfo, "web-b", &size) == kRepAck);
    CHECK(size == (1u << 20));
    CHECK(c.Ask(Option::kGo, "vm1") == kRepAck);
    c.SendRequest(static_cast<uint16_t>(Command::kRead), 0, 3, 0, 512);
    CHECK(c.ReadSimpleReply(512)->error == 0);

    // NBD_OPT_EXPORT_NAME of an export outside the list: the protocol's only answer
    // is to close.
    NbdTestClient old_style(ConnectUnix(some));
    REQUIRE(old_style.StartOptions());
    old_style.SendOption(static_cast<uint32_t>(Option::kExportName), EncodeExportNameOption("secret"));
    CHECK(old_style.PeerClosed());

    // The listener without a list offers everything.
    NbdTestClient open(ConnectUnix(all));
    REQUIRE(open.StartOptions());
    CHECK(open.List() == std::vector<std::string>{"secret", "vm1", "vm2", "web-a", "web-b"});
    CHECK(open.Ask(Option::kGo, "secret") == kRepAck);

    auto described = server.Describe();
    REQUIRE(described.size() == 2);
    CHECK(described[0].allowed_exports.empty());
    CHECK(described[1].allowed_exports == std::vector<std::string>{"vm1", "web-*"});
    std::atomic<bool> stopped{false};
    server.Stop([&] { stopped = true; });
    CHECK(WaitUntil([&] { return stopped.load(); }));
  }
}

TEST_CASE("export allow-lists: patterns, VOLUME@ro, and the --nbd listener syntax") {
  CHECK(ExportAllowed({"vm1"}, "vm1"));
  CHECK(ExportAllowed({"vm1"}, "vm1@ro"));  // the volume allows its read-only export
  CHECK_FALSE(ExportAllowed({"vm1"}, "vm10"));
  CHECK_FALSE(ExportAllowed({"vm1"}, ""));  // not the default export either
  CHECK(ExportAllowed({"vm1@ro"}, "vm1@ro"));
  CHECK_FALSE(ExportAllowed({"vm1@ro"}, "vm1"));  // read-only only
  CHECK(ExportAllowed({"db", "web-*"}, "web-front"));
  CHECK(ExportAllowed({"db-[0-9]"}, "db-7@ro"));
  CHECK_FALSE(ExportAllowed({"db-[0-9]"}, "db-x"));
  CHECK(ValidateExportPatterns({"vm1", "web-*", "a@ro", "db-[!x]?"}).ok());
  CHECK_FALSE(ValidateExportPatterns({}).ok());
  CHECK_FALSE(ValidateExportPatterns({""}).ok());
  CHECK_FALSE(ValidateExportPatterns({"a b"}).ok());
  CHECK_FALSE(ValidateExportPatterns({"a\nb"}).ok());

  auto plain = ParseNbdListeners("unix:/run/nbd.sock,tcp:0.0.0.0:10809");
  REQUIRE(plain.ok());
  REQUIRE(plain->size() == 2);
  CHECK((*plain)[0].exports.empty());
  CHECK((*plain)[1].address.port == 10809);
  auto listed = ParseNbdListeners("tcp:[::1]:10809?exports=vm1:web-*,unix:/a.sock?exports=db");
  REQUIRE(listed.ok());
  CHECK((*listed)[0].address.host == "::1");
  CHECK((*listed)[0].exports == std::vector<std::string>{"vm1", "web-*"});
  CHECK((*listed)[0].ToString() == "tcp:[::1]:10809?exports=vm1:web-*");
  CHECK((*listed)[1].exports == std::vector<std::string>{"db"});
  for (const char* bad : {"tcp:h:1?", "tcp:h:1?exports", "tcp:h:1?exports=", "tcp:h:1?exports=a::b",
                          "tcp:h:1?export=a", "tcp:h:1?exports=a&exports=b", "tcp:h:1?exports=a b", "tcp:h?exports=a",
                          "unix:/a,", ""}) {
    INFO(bad);
    CHECK(ParseNbdListeners(bad).status().code() == StatusCode::kInvalidArgument);
  }
}

}  // namespace
}  // namespace tapmap::nbd
