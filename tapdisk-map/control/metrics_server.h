// MetricsServer: a minimal HTTP/1.x endpoint serving `GET /metrics` (Prometheus text
// exposition format) on a ListenAddress (--metrics unix:PATH | tcp:HOST:PORT). Every
// other path is 404, every other method 405. One request per connection; requests are
// bounded (8 KiB of headers, 10 s) since the port may be reachable by others.
//
// Threading: as ControlServer.
#pragma once

#include <utility>  // before asio: boost 1.74's awaitable.hpp needs std::exchange

#include <boost/asio/awaitable.hpp>
#include <boost/asio/basic_socket_acceptor.hpp>
#include <boost/asio/generic/stream_protocol.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/strand.hpp>
#include <functional>
#include <memory>
#include <string>

#include "common/listen_address.h"
#include "common/logging.h"
#include "common/status.h"

namespace tapmap::control {

class MetricsServer {
 public:
  // `render` produces the exposition text; called on an io thread per request.
  MetricsServer(boost::asio::io_context& io, std::function<std::string()> render, Logger log);
  ~MetricsServer();
  MetricsServer(const MetricsServer&) = delete;
  MetricsServer& operator=(const MetricsServer&) = delete;

  Status Listen(const ListenAddress& address);
  void Stop();

 private:
  using Acceptor = boost::asio::basic_socket_acceptor<boost::asio::generic::stream_protocol>;
  boost::asio::awaitable<void> AcceptLoop();
  boost::asio::awaitable<void> Serve(std::shared_ptr<boost::asio::generic::stream_protocol::socket> socket);

  boost::asio::io_context& io_;
  boost::asio::strand<boost::asio::io_context::executor_type> strand_;
  std::function<std::string()> render_;
  Logger log_;
  Acceptor acceptor_;
  std::string unix_path_;
};

}  // namespace tapmap::control
