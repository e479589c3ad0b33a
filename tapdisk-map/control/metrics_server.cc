#include "tapdisk-map/control/metrics_server.h"

#include <sys/stat.h>
#include <unistd.h>

#include <boost/asio/basic_socket_acceptor.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/generic/stream_protocol.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/streambuf.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <algorithm>
#include <atomic>
#include <list>

namespace tapmap::control {

namespace asio = boost::asio;
using Socket = asio::generic::stream_protocol::socket;

using Acceptor = asio::basic_socket_acceptor<asio::generic::stream_protocol>;

// One accepted connection; listed in MetricsServerState::connections while its socket is open.
struct MetricsConnection {
  explicit MetricsConnection(std::shared_ptr<Socket> s) : socket(std::move(s)) {}
  std::shared_ptr<Socket> socket;
  bool answering = false;  // its request was read; it is not displaced any more
};

struct MetricsServerState {
  MetricsServerState(asio::io_context& io_in, std::function<std::string()> render_in, Logger log_in,
                     MetricsServerOptions options_in)
      : io(io_in), strand(asio::make_strand(io_in)), render(std::move(render_in)), log(std::move(log_in)),
        options(options_in), acceptor(strand), accept_backoff(strand) {
    options.max_connections = std::max<uint32_t>(options.max_connections, 1);
  }
  ~MetricsServerState() {
    if (!unix_path.empty() && !unlinked) ::unlink(unix_path.c_str());
  }

  asio::io_context& io;
  asio::strand<asio::io_context::executor_type> strand;
  const std::function<std::string()> render;
  Logger log;
  MetricsServerOptions options;
  Acceptor acceptor;
  asio::steady_timer accept_backoff;  // after an accept error (EMFILE): retry later, do not spin
  RateLimiter limit_log{5, std::chrono::seconds(60)};
  std::list<std::shared_ptr<MetricsConnection>> connections;  // on the strand; oldest first
  struct {
    std::atomic<uint64_t> accepted{0}, answered{0}, displaced{0}, refused{0}, timed_out{0};
    std::atomic<uint32_t> open{0};
  } counters;
  std::string unix_path;  // set by Listen before the accept loop starts; then read-only
  std::atomic<bool> stop_requested{false};
  bool unlinked = false;  // on the strand only
};

namespace {

asio::awaitable<void> Serve(std::shared_ptr<MetricsServerState> state, std::shared_ptr<MetricsConnection> conn);

void CloseSocket(Socket& socket) {
  boost::system::error_code ignored;
  socket.shutdown(Socket::shutdown_both, ignored);
  socket.close(ignored);
}

bool Listed(const MetricsServerState& state, const std::shared_ptr<MetricsConnection>& conn) {
  return std::find(state.connections.begin(), state.connections.end(), conn) != state.connections.end();
}

// Closes `conn` and unlists it; false if it was no longer listed. On the strand.
// Counters are bumped before, so that a peer seeing the close sees them too.
bool Forget(MetricsServerState& state, const std::shared_ptr<MetricsConnection>& conn) {
  auto it = std::find(state.connections.begin(), state.connections.end(), conn);
  if (it == state.connections.end()) return false;
  state.connections.erase(it);
  state.counters.open.fetch_sub(1, std::memory_order_relaxed);
  CloseSocket(*conn->socket);
  return true;
}

// Makes room for one more connection: below the cap there is room; at the cap the
// oldest connection still waiting for its request is closed. False if every
// connection is being answered. On the strand.
bool MakeRoom(MetricsServerState& state) {
  if (state.connections.size() < state.options.max_connections) return true;
  auto idle = std::find_if(state.connections.begin(), state.connections.end(),
                           [](const auto& c) { return !c->answering; });
  bool room = idle != state.connections.end();
  if (room) {
    state.counters.displaced.fetch_add(1, std::memory_order_relaxed);
    Forget(state, std::shared_ptr<MetricsConnection>(*idle));
  } else {
    state.counters.refused.fetch_add(1, std::memory_order_relaxed);
  }
  uint64_t suppressed = 0;
  if (state.limit_log.Allow(&suppressed)) {
    state.log.Warnf("%u connections open (--metrics-max-connections): %s (%llu similar messages suppressed)",
                    state.options.max_connections,
                    room ? "closed the oldest one still waiting for its request" : "refused a new one",
                    static_cast<unsigned long long>(suppressed));
  }
  return room;
}

asio::awaitable<void> AcceptLoop(std::shared_ptr<MetricsServerState> state) {
  for (;;) {
    auto socket = std::make_shared<Socket>(state->strand);
    boost::system::error_code ec;
    co_await state->acceptor.async_accept(*socket, asio::redirect_error(asio::use_awaitable, ec));
    if (ec == asio::error::operation_aborted || !state->acceptor.is_open()) co_return;
    if (ec) {
      // EMFILE, ENFILE, ENOBUFS...: the connection stays in the backlog; retrying at
      // once would spin.
      uint64_t suppressed = 0;
      if (state->limit_log.Allow(&suppressed)) {
        state->log.Warnf("accept: %s (%llu similar messages suppressed)", ec.message().c_str(),
                         static_cast<unsigned long long>(suppressed));
      }
      state->accept_backoff.expires_after(std::chrono::milliseconds(100));
      co_await state->accept_backoff.async_wait(asio::redirect_error(asio::use_awaitable, ec));
      if (!state->acceptor.is_open()) co_return;
      continue;
    }
    state->counters.accepted.fetch_add(1, std::memory_order_relaxed);
    state->counters.open.fetch_add(1, std::memory_order_relaxed);  // first: `open` never dips below the truth
    if (!MakeRoom(*state)) {
      state->counters.open.fetch_sub(1, std::memory_order_relaxed);
      CloseSocket(*socket);
      continue;
    }
    auto conn = std::make_shared<MetricsConnection>(std::move(socket));
    state->connections.push_back(conn);
    asio::co_spawn(state->strand, Serve(state, conn), asio::detached);
  }
}

}  // namespace

MetricsServer::MetricsServer(asio::io_context& io, std::function<std::string()> render, Logger log,
                             MetricsServerOptions options)
    : state_(std::make_shared<MetricsServerState>(io, std::move(render), std::move(log), options)) {}

std::string MetricsCountersToPrometheus(const MetricsServer::Counters& c) {
  std::string out;
  auto metric = [&out](const char* name, const char* type, const char* help, uint64_t value) {
    out += std::string("# HELP tapmap_metrics_connections_") + name + " " + help + "\n# TYPE tapmap_metrics_connections_" +
           name + " " + type + "\ntapmap_metrics_connections_" + name + " " + std::to_string(value) + "\n";
  };
  metric("open", "gauge", "connections to this endpoint open now", c.open);
  metric("accepted", "counter", "connections accepted", c.accepted);
  metric("displaced", "counter", "idle connections closed to make room (--metrics-max-connections)", c.displaced);
  metric("refused", "counter", "connections closed at once, every slot being answered", c.refused);
  metric("timed_out", "counter", "connections closed at --metrics-request-timeout-ms", c.timed_out);
  return out;
}

MetricsServer::Counters MetricsServer::counters() const {
  constexpr auto r = std::memory_order_relaxed;
  const auto& c = state_->counters;
  return Counters{c.accepted.load(r), c.answered.load(r), c.displaced.load(r),
                  c.refused.load(r),  c.timed_out.load(r), c.open.load(r)};
}

MetricsServer::~MetricsServer() { Stop(); }

Status MetricsServer::Listen(const ListenAddress& address) {
  asio::generic::stream_protocol::endpoint endpoint;
  boost::system::error_code ec;
  if (address.kind == ListenAddress::Kind::kUnix) {
    struct stat st {};
    if (::lstat(address.path.c_str(), &st) == 0) {
      if (!S_ISSOCK(st.st_mode)) return Status::AlreadyExists(address.path + " exists and is not a socket");
      ::unlink(address.path.c_str());
    }
    endpoint = asio::local::stream_protocol::endpoint(address.path);
  } else {
    asio::ip::tcp::resolver resolver(state_->io);
    auto results = resolver.resolve(address.host, std::to_string(address.port), asio::ip::tcp::resolver::passive, ec);
    if (ec || results.empty()) return Status::InvalidArgument("cannot resolve " + address.ToString());
    endpoint = results.begin()->endpoint();
  }
  Acceptor& acceptor = state_->acceptor;
  acceptor.open(endpoint.protocol(), ec);
  if (!ec && address.kind == ListenAddress::Kind::kTcp) acceptor.set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) acceptor.bind(endpoint, ec);
  if (!ec) acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) return Status::IoError("metrics on " + address.ToString() + ": " + ec.message());
  if (address.kind == ListenAddress::Kind::kUnix) state_->unix_path = address.path;
  state_->log.Infof("metrics at %s/metrics", address.ToString().c_str());
  asio::co_spawn(state_->strand, AcceptLoop(state_), asio::detached);
  return Status::Ok();
}

void MetricsServer::Stop() {
  if (state_->stop_requested.exchange(true)) return;
  asio::post(state_->strand, [state = state_]() {
    boost::system::error_code ec;
    state->acceptor.close(ec);
    state->accept_backoff.cancel();
    if (!state->unix_path.empty()) ::unlink(state->unix_path.c_str());
    state->unlinked = true;
  });
}

namespace {

asio::awaitable<void> Serve(std::shared_ptr<MetricsServerState> state, std::shared_ptr<MetricsConnection> conn) {
  Socket* socket = conn->socket.get();
  asio::steady_timer deadline(state->strand, state->options.request_timeout);
  deadline.async_wait([state, conn](boost::system::error_code ec) {
    if (ec || !Listed(*state, conn)) return;
    state->counters.timed_out.fetch_add(1, std::memory_order_relaxed);
    Forget(*state, conn);
  });
  asio::streambuf buffer(8192);
  boost::system::error_code ec;
  size_t n = co_await asio::async_read_until(*socket, buffer, "\r\n\r\n", asio::redirect_error(asio::use_awaitable, ec));
  std::string status_line, body, content_type = "text/plain; charset=utf-8";
  if (ec) {
    if (ec != asio::error::not_found) {
      deadline.cancel();
      Forget(*state, conn);
      co_return;
    }
    status_line = "431 Request Header Fields Too Large";
    conn->answering = true;
  } else {
    conn->answering = true;
    std::string head(asio::buffers_begin(buffer.data()), asio::buffers_begin(buffer.data()) + n);
    std::string request_line = head.substr(0, head.find("\r\n"));
    size_t sp1 = request_line.find(' ');
    size_t sp2 = sp1 == std::string::npos ? std::string::npos : request_line.find(' ', sp1 + 1);
    std::string method = request_line.substr(0, sp1);
    std::string target = sp2 == std::string::npos ? "" : request_line.substr(sp1 + 1, sp2 - sp1 - 1);
    if (method != "GET" && method != "HEAD") {
      status_line = "405 Method Not Allowed";
    } else if (target != "/metrics" && !target.starts_with("/metrics?")) {
      status_line = "404 Not Found";
    } else {
      status_line = "200 OK";
      content_type = "text/plain; version=0.0.4; charset=utf-8";
      body = state->render();
      if (method == "HEAD") body.clear();
    }
  }
  if (body.empty() && !status_line.starts_with("200")) body = status_line + "\n";
  std::string response = "HTTP/1.1 " + status_line + "\r\nContent-Type: " + content_type +
                         "\r\nContent-Length: " + std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n" + body;
  co_await asio::async_write(*socket, asio::buffer(response), asio::redirect_error(asio::use_awaitable, ec));
  deadline.cancel();
  if (!ec) state->counters.answered.fetch_add(1, std::memory_order_relaxed);
  Forget(*state, conn);
}

}  // namespace

}  // namespace tapmap::control
