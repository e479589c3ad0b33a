// MetricsServer against hostile peers (issue 14, attack 4): idle connections must not
// pile up fds (a cap, the oldest idle connection displaced), a peer that does not send
// its request is closed at the deadline, and a scrape is still answered meanwhile.
#include <dirent.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <atomic>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <catch2/catch.hpp>
#include <thread>
#include <vector>

#include "common/unique_fd.h"
#include "tapdisk-map/control/metrics_server.h"
#include "tests/support/child_process.h"
#include "tests/support/wait_until.h"

namespace tapmap::control {
namespace {

namespace asio = boost::asio;
using tapmap::testing::WaitUntil;

struct IoThread {
  IoThread() : work(asio::make_work_guard(io)), thread([this] { io.run(); }) {}
  ~IoThread() {
    work.reset();
    io.stop();
    thread.join();
  }
  asio::io_context io;
  asio::executor_work_guard<asio::io_context::executor_type> work;
  std::thread thread;
};

// Open file descriptors of this process.
size_t OpenFds() {
  size_t n = 0;
  DIR* dir = ::opendir("/proc/self/fd");
  REQUIRE(dir != nullptr);
  while (dirent* e = ::readdir(dir)) {
    if (e->d_name[0] != '.') ++n;
  }
  ::closedir(dir);
  return n - 1;  // the directory's own fd
}

UniqueFd ConnectUnix(const std::string& path) {
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  REQUIRE(fd.valid());
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", path.c_str());
  REQUIRE(::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0);
  timeval tv{30, 0};  // a bound for a broken test only; every wait below ends on an event
  ::setsockopt(fd.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  return fd;
}

// True if the server closed the connection (EOF is readable now); never blocks.
bool PeerClosed(int fd) {
  char c;
  return ::recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT) == 0;
}

// Everything the server sends until it closes; `eof` tells whether it did close.
std::string ReadToEof(int fd, bool* eof) {
  std::string text;
  char buffer[4096];
  ssize_t n;
  while ((n = ::recv(fd, buffer, sizeof(buffer), 0)) > 0) text.append(buffer, n);
  *eof = n == 0;
  return text;
}

std::string Scrape(const std::string& path) {
  UniqueFd fd = ConnectUnix(path);
  const std::string request = "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n";
  REQUIRE(::send(fd.get(), request.data(), request.size(), MSG_NOSIGNAL) == ssize_t(request.size()));
  bool eof = false;
  std::string response = ReadToEof(fd.get(), &eof);
  CHECK(eof);
  return response;
}

struct Rig {
  explicit Rig(MetricsServerOptions options)
      : server(t.io, [] { return std::string("tapmap_up 1\n"); }, Logger("metrics-test", LogLevel::kError),
               options) {
    auto parsed = ParseListenAddress("unix:" + (dir / "metrics.sock"));
    REQUIRE(parsed.ok());
    address = *parsed;
    REQUIRE(server.Listen(address).ok());
  }
  ~Rig() { server.Stop(); }
  tapmap::testing::TempDir dir{"metrics-bounds"};
  IoThread t;
  MetricsServer server;
  ListenAddress address;
};

TEST_CASE("metrics: idle connections beyond the cap are closed, fds stay bounded, a scrape is answered") {
  MetricsServerOptions options;
  options.max_connections = 4;
  options.request_timeout = std::chrono::seconds(120);  // only the cap acts here
  Rig rig(options);
  const size_t baseline = OpenFds();

  constexpr size_t kIdle = 64;
  std::vector<UniqueFd> idle;
  for (size_t i = 0; i < kIdle; ++i) idle.push_back(ConnectUnix(rig.address.path));
  auto closed = [&] {
    size_t n = 0;
    for (const auto& fd : idle) n += PeerClosed(fd.get());
    return n;
  };
  // Every connection is accepted (none waits in the backlog); only the newest
  // max_connections stay open on the server, the oldest were closed.
  REQUIRE(WaitUntil([&] { return closed() == kIdle - options.max_connections; }));
  for (size_t i = 0; i < kIdle - options.max_connections; ++i) CHECK(PeerClosed(idle[i].get()));
  // Ours (kIdle) plus the server's (at most the cap).
  CHECK(OpenFds() <= baseline + kIdle + options.max_connections);
  CHECK(rig.server.counters().open == options.max_connections);

  // A scrape displaces the oldest idle connection and is answered.
  std::string response = Scrape(rig.address.path);
  CHECK(response.starts_with("HTTP/1.1 200 OK"));
  CHECK(response.ends_with("tapmap_up 1\n"));
  CHECK(PeerClosed(idle[kIdle - options.max_connections].get()));
  CHECK(closed() == kIdle - options.max_connections + 1);
  CHECK(OpenFds() <= baseline + kIdle + options.max_connections);
  MetricsServer::Counters c = rig.server.counters();
  CHECK(c.accepted == kIdle + 1);
  CHECK(c.displaced == kIdle - options.max_connections + 1);
  CHECK(c.answered == 1);
  std::string text = MetricsCountersToPrometheus(c);
  CHECK(text.find("\ntapmap_metrics_connections_displaced 61\n") != std::string::npos);
  CHECK(text.find("# TYPE tapmap_metrics_connections_open gauge\n") != std::string::npos);
}

TEST_CASE("metrics: a connection without a complete request is closed at the deadline") {
  MetricsServerOptions options;
  options.request_timeout = std::chrono::milliseconds(200);
  Rig rig(options);
  UniqueFd silent = ConnectUnix(rig.address.path);
  UniqueFd partial = ConnectUnix(rig.address.path);
  const std::string head = "GET /metrics HTTP/1.1\r\nHost:";
  REQUIRE(::send(partial.get(), head.data(), head.size(), MSG_NOSIGNAL) == ssize_t(head.size()));
  // The server closes both: each peer reads EOF (not a receive timeout) and no answer.
  for (int fd : {silent.get(), partial.get()}) {
    bool eof = false;
    CHECK(ReadToEof(fd, &eof).empty());
    CHECK(eof);
  }
  CHECK(rig.server.counters().timed_out == 2);
  CHECK(rig.server.counters().open == 0);
  // A prompt client is still served.
  CHECK(Scrape(rig.address.path).starts_with("HTTP/1.1 200 OK"));
}

TEST_CASE("metrics: a connection being answered is not displaced, a newcomer is closed instead") {
  // A response far larger than the socket buffers, to a client that does not read yet:
  // the one allowed connection stays in the middle of its answer.
  MetricsServerOptions options;
  options.max_connections = 1;
  options.request_timeout = std::chrono::seconds(120);
  const std::string body(8 << 20, 'x');
  std::atomic<bool> rendered{false};
  tapmap::testing::TempDir dir("metrics-busy");
  IoThread t;
  MetricsServer server(
      t.io,
      [&] {
        rendered = true;
        return body;
      },
      Logger("metrics-test", LogLevel::kError), options);
  auto address = ParseListenAddress("unix:" + (dir / "metrics.sock"));
  REQUIRE(address.ok());
  REQUIRE(server.Listen(*address).ok());
  UniqueFd scrape = ConnectUnix(address->path);
  const std::string request = "GET /metrics HTTP/1.1\r\n\r\n";
  REQUIRE(::send(scrape.get(), request.data(), request.size(), MSG_NOSIGNAL) == ssize_t(request.size()));
  REQUIRE(WaitUntil([&] { return rendered.load(); }));

  UniqueFd newcomer = ConnectUnix(address->path);
  REQUIRE(WaitUntil([&] { return PeerClosed(newcomer.get()); }));
  CHECK(server.counters().refused == 1);
  bool eof = false;
  std::string response = ReadToEof(scrape.get(), &eof);
  CHECK(eof);
  CHECK(response.starts_with("HTTP/1.1 200 OK"));
  CHECK(response.size() > body.size());
  CHECK(response.ends_with(body));
  server.Stop();
}

}  // namespace
}  // namespace tapmap::control
