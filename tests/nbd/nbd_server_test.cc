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
    NbdServer server(io, catalog, NbdServerOptions{}, Logger("nbd-server-test", LogLevel::kError));
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
    REQUIRE(server.Listen(*ParseListenAddress("unix:" + own), "disk").ok());
    CHECK(server.Listen(*ParseListenAddress("unix:" + own), "disk").code() == StatusCode::kAlreadyExists);

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
    REQUIRE(server.Listen(*ParseListenAddress("unix:" + own), "disk").ok());
    REQUIRE(server.Unlisten("unix:" + own).ok());
    REQUIRE(server.Listen(*ParseListenAddress("unix:" + own), "disk").ok());
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
    CHECK(server.Listen(*ParseListenAddress("unix:" + own), "disk").ok());

    std::atomic<bool> stopped{false};
    server.Stop([&] { stopped = true; });
    CHECK(WaitUntil([&] { return stopped.load(); }));
  }
}

}  // namespace
}  // namespace tapmap::nbd
