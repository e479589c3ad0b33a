// The control socket (PROTOCOL.md) and the metrics endpoint, with handlers supplied by
// the test: framing, errors, closing on malformed input, asynchronous vbd replies.
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <catch2/catch.hpp>
#include <fstream>
#include <thread>

#include "common/unique_fd.h"
#include "tapdisk-map/control/control_server.h"
#include "tapdisk-map/control/metrics_server.h"
#include "tapdisk-map/control/verb_table.h"
#include "tests/support/child_process.h"

namespace tapmap::control {
namespace {

using json = nlohmann::json;
namespace asio = boost::asio;

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

UniqueFd ConnectUnix(const std::string& path) {
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", path.c_str());
  REQUIRE(::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0);
  timeval tv{10, 0};
  ::setsockopt(fd.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  return fd;
}

void Send(int fd, const std::string& text) { REQUIRE(::send(fd, text.data(), text.size(), MSG_NOSIGNAL) == ssize_t(text.size())); }

// Reads one line; "" on EOF/timeout.
std::string ReadLine(int fd) {
  std::string line;
  char c;
  while (::recv(fd, &c, 1, 0) == 1) {
    if (c == '\n') return line;
    line.push_back(c);
  }
  return "";
}

bool Closed(int fd) {
  char c;
  return ::recv(fd, &c, 1, 0) == 0;
}

TEST_CASE("control socket: ping, stats, nbd-list, errors and framing") {
  tapmap::testing::TempDir dir("nbd-control");
  IoThread t;
  ControlHandlers handlers;
  handlers.stats = []() -> Result<json> { return json{{"cache_hits", 7}}; };
  handlers.nbd_exports = []() { return json::array({{{"address", "unix:/x"}, {"volumes_open", {"a"}}}}); };
  ControlServer server(t.io, handlers, Logger("control-test", LogLevel::kError));
  std::string path = dir / "run/ctl.sock";
  REQUIRE(server.Listen(path).ok());
  struct stat st {};
  REQUIRE(::stat(path.c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0600);

  UniqueFd fd = ConnectUnix(path);
  Send(fd.get(), "{\"op\":\"ping\"}\n{\"op\":\"stats\"}\n");
  json ping = json::parse(ReadLine(fd.get()));
  CHECK(ping["ok"] == true);
  CHECK(ping["pid"] == ::getpid());
  CHECK(ping["version"].is_string());
  json stats = json::parse(ReadLine(fd.get()));
  CHECK(stats["stats"]["cache_hits"] == 7);
  Send(fd.get(), "{\"op\":\"nbd-list\"}\n");
  json list = json::parse(ReadLine(fd.get()));
  CHECK(list["exports"][0]["volumes_open"][0] == "a");
  Send(fd.get(), "{\"op\":\"frobnicate\"}\n");
  json unknown = json::parse(ReadLine(fd.get()));
  CHECK(unknown["ok"] == false);
  CHECK(unknown["error"]["code"] == "invalid-argument");
  Send(fd.get(), "{\"op\":\"vbd-list\"}\n");
  json vbd = json::parse(ReadLine(fd.get()));
  CHECK(vbd["error"]["code"] == "not-supported");
  // A malformed line: error response, then the connection is closed.
  Send(fd.get(), "this is not json\n");
  json bad = json::parse(ReadLine(fd.get()));
  CHECK(bad["error"]["code"] == "invalid-argument");
  CHECK(Closed(fd.get()));

  // An over-long line is refused and the connection closed.
  UniqueFd fd2 = ConnectUnix(path);
  std::string huge(kMaxControlLineBytes + 100, 'x');
  ::send(fd2.get(), huge.data(), huge.size(), MSG_NOSIGNAL);
  json too_long = json::parse(ReadLine(fd2.get()));
  CHECK(too_long["error"]["code"] == "invalid-argument");
  server.Stop();
}

TEST_CASE("control socket: vbd ops are delegated with the whole request, replies may be async") {
  tapmap::testing::TempDir dir("nbd-control");
  IoThread t;
  ControlHandlers handlers;
  std::string seen_op;
  json seen_request;
  std::vector<std::thread> repliers;  // replies come from other threads, as from the manager
  auto hook = [&](std::string op) {
    return [&, op](const json& request, JsonReply reply) {
      seen_op = op;
      seen_request = request;
      if (request.value("volume", "") == "missing") {
        repliers.emplace_back([reply] { reply(Status::NotFound("volume 'missing' does not exist")); });
        return;
      }
      repliers.emplace_back([reply] { reply(json{{"vbd", {{"domid", 3}}}}); });
    };
  };
  handlers.vbd = {hook("vbd-list"), hook("vbd-attach"), hook("vbd-detach"), hook("vbd-pause"), hook("vbd-resume")};
  ControlServer server(t.io, handlers, Logger("control-test", LogLevel::kError));
  std::string path = dir / "ctl.sock";
  REQUIRE(server.Listen(path).ok());
  UniqueFd fd = ConnectUnix(path);
  Send(fd.get(), R"({"op":"vbd-attach","domid":3,"devid":51712,"volume":"vm1","mode":"w"})" "\n");
  json r = json::parse(ReadLine(fd.get()));
  CHECK(r["ok"] == true);
  CHECK(r["vbd"]["domid"] == 3);
  CHECK(seen_op == "vbd-attach");
  CHECK(seen_request["devid"] == 51712);
  Send(fd.get(), R"({"op":"vbd-attach","domid":3,"devid":51712,"volume":"missing"})" "\n");
  r = json::parse(ReadLine(fd.get()));
  CHECK(r["ok"] == false);
  CHECK(r["error"]["code"] == "not-found");
  CHECK(r["error"]["message"] == "volume 'missing' does not exist");
  server.Stop();
  for (auto& thread : repliers) thread.join();
}

TEST_CASE("control verbs: the verb table and PROTOCOL.md list the same ops, each once, with a contract") {
  std::ifstream doc(TAPMAP_SOURCE_DIR "/tapdisk-map/control/PROTOCOL.md");
  REQUIRE(doc.good());
  std::vector<std::string> documented;  // the first column of the "## Operations" table
  bool in_operations = false;
  for (std::string line; std::getline(doc, line);) {
    if (line.starts_with("## ")) in_operations = line == "## Operations";
    if (in_operations && line.starts_with("| `")) {
      size_t end = line.find('`', 3);
      REQUIRE(end != std::string::npos);
      documented.push_back(line.substr(3, end - 3));
    }
  }
  std::vector<std::string> table;
  for (const Verb* verb : AllVerbs()) {
    table.emplace_back(verb->name);
    CHECK(FindVerb(verb->name) == verb);
    CHECK(!verb->arguments.empty());
    CHECK(!verb->result.empty());
    CHECK(verb->handle != nullptr);
  }
  CHECK(table == documented);
  CHECK(FindVerb("frobnicate") == nullptr);
}

TEST_CASE("metrics endpoint serves GET /metrics and nothing else") {
  tapmap::testing::TempDir dir("nbd-metrics");
  IoThread t;
  MetricsServer server(t.io, [] { return std::string("tapmap_cache_hits 5\n"); }, Logger("metrics-test", LogLevel::kError));
  auto address = ParseListenAddress("unix:" + (dir / "metrics.sock"));
  REQUIRE(address.ok());
  REQUIRE(server.Listen(*address).ok());
  auto request = [&](const std::string& text) {
    UniqueFd fd = ConnectUnix(address->path);
    Send(fd.get(), text);
    std::string response;
    char buffer[1024];
    ssize_t n;
    while ((n = ::recv(fd.get(), buffer, sizeof(buffer), 0)) > 0) response.append(buffer, n);
    return response;
  };
  std::string ok = request("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
  CHECK(ok.starts_with("HTTP/1.1 200 OK"));
  CHECK(ok.find("version=0.0.4") != std::string::npos);
  CHECK(ok.ends_with("tapmap_cache_hits 5\n"));
  CHECK(request("GET / HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404"));
  CHECK(request("POST /metrics HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 405"));
  CHECK(request(std::string(9000, 'a')).starts_with("HTTP/1.1 431"));
  server.Stop();
}

}  // namespace
}  // namespace tapmap::control
