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
#include <atomic>

namespace tapmap::control {

namespace asio = boost::asio;
using Socket = asio::generic::stream_protocol::socket;

using Acceptor = asio::basic_socket_acceptor<asio::generic::stream_protocol>;

struct MetricsServerState {
  MetricsServerState(asio::io_context& io_in, std::function<std::string()> render_in, Logger log_in)
      : io(io_in), strand(asio::make_strand(io_in)), render(std::move(render_in)), log(std::move(log_in)), acceptor(strand) {}
  ~MetricsServerState() {
    if (!unix_path.empty() && !unlinked) ::unlink(unix_path.c_str());
  }

  asio::io_context& io;
  asio::strand<asio::io_context::executor_type> strand;
  const std::function<std::string()> render;
  Logger log;
  Acceptor acceptor;
  std::string unix_path;  // set by Listen before the accept loop starts; then read-only
  std::atomic<bool> stop_requested{false};
  bool unlinked = false;  // on the strand only
};

namespace {

asio::awaitable<void> Serve(std::shared_ptr<MetricsServerState> state, std::shared_ptr<Socket> socket);

asio::awaitable<void> AcceptLoop(std::shared_ptr<MetricsServerState> state) {
  for (;;) {
    auto socket = std::make_shared<Socket>(state->strand);
    boost::system::error_code ec;
    co_await state->acceptor.async_accept(*socket, asio::redirect_error(asio::use_awaitable, ec));
    if (ec == asio::error::operation_aborted || !state->acceptor.is_open()) co_return;
    if (ec) continue;
    asio::co_spawn(state->strand, Serve(state, socket), asio::detached);
  }
}

}  // namespace

MetricsServer::MetricsServer(asio::io_context& io, std::function<std::string()> render, Logger log)
    : state_(std::make_shared<MetricsServerState>(io, std::move(render), std::move(log))) {}

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
    if (!state->unix_path.empty()) ::unlink(state->unix_path.c_str());
    state->unlinked = true;
  });
}

namespace {

asio::awaitable<void> Serve(std::shared_ptr<MetricsServerState> state, std::shared_ptr<Socket> socket) {
  asio::steady_timer deadline(state->strand, std::chrono::seconds(10));
  deadline.async_wait([socket](boost::system::error_code ec) {
    if (!ec) {
      boost::system::error_code ignored;
      socket->close(ignored);
    }
  });
  asio::streambuf buffer(8192);
  boost::system::error_code ec;
  size_t n = co_await asio::async_read_until(*socket, buffer, "\r\n\r\n", asio::redirect_error(asio::use_awaitable, ec));
  std::string status_line, body, content_type = "text/plain; charset=utf-8";
  if (ec) {
    if (ec != asio::error::not_found) {
      deadline.cancel();
      co_return;
    }
    status_line = "431 Request Header Fields Too Large";
  } else {
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
  socket->shutdown(Socket::shutdown_both, ec);
  socket->close(ec);
}

}  // namespace

}  // namespace tapmap::control
