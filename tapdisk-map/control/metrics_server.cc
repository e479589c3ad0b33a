#include "tapdisk-map/control/metrics_server.h"

#include <sys/stat.h>
#include <unistd.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/streambuf.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>

namespace tapmap::control {

namespace asio = boost::asio;
using Socket = asio::generic::stream_protocol::socket;

MetricsServer::MetricsServer(asio::io_context& io, std::function<std::string()> render, Logger log)
    : io_(io), strand_(asio::make_strand(io)), render_(std::move(render)), log_(std::move(log)), acceptor_(strand_) {}

MetricsServer::~MetricsServer() {
  boost::system::error_code ec;
  acceptor_.close(ec);
  if (!unix_path_.empty()) ::unlink(unix_path_.c_str());
}

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
    unix_path_ = address.path;
  } else {
    asio::ip::tcp::resolver resolver(io_);
    auto results = resolver.resolve(address.host, std::to_string(address.port), asio::ip::tcp::resolver::passive, ec);
    if (ec || results.empty()) return Status::InvalidArgument("cannot resolve " + address.ToString());
    endpoint = results.begin()->endpoint();
  }
  acceptor_.open(endpoint.protocol(), ec);
  if (!ec && address.kind == ListenAddress::Kind::kTcp) acceptor_.set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) acceptor_.bind(endpoint, ec);
  if (!ec) acceptor_.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) return Status::IoError("metrics on " + address.ToString() + ": " + ec.message());
  log_.Infof("metrics at %s/metrics", address.ToString().c_str());
  asio::co_spawn(strand_, [this]() { return AcceptLoop(); }, asio::detached);
  return Status::Ok();
}

void MetricsServer::Stop() {
  asio::post(strand_, [this]() {
    boost::system::error_code ec;
    acceptor_.close(ec);
    if (!unix_path_.empty()) ::unlink(unix_path_.c_str());
    unix_path_.clear();
  });
}

asio::awaitable<void> MetricsServer::AcceptLoop() {
  for (;;) {
    auto socket = std::make_shared<Socket>(strand_);
    boost::system::error_code ec;
    co_await acceptor_.async_accept(*socket, asio::redirect_error(asio::use_awaitable, ec));
    if (ec == asio::error::operation_aborted || !acceptor_.is_open()) co_return;
    if (ec) continue;
    asio::co_spawn(strand_, [this, socket]() { return Serve(socket); }, asio::detached);
  }
}

asio::awaitable<void> MetricsServer::Serve(std::shared_ptr<Socket> socket) {
  asio::steady_timer deadline(strand_, std::chrono::seconds(10));
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
      body = render_();
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

}  // namespace tapmap::control
