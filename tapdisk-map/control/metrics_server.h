// MetricsServer: a minimal HTTP/1.x endpoint serving `GET /metrics` (Prometheus text
// exposition format) on a ListenAddress (--metrics unix:PATH | tcp:HOST:PORT). Every
// other path is 404, every other method 405. One request per connection; requests are
// bounded (8 KiB of headers, 10 s) since the port may be reachable by others.
//
// Threading and lifetime: as ControlServer (the object may be destroyed while `io`
// runs; `render` must stay valid until `io`'s threads have stopped).
#pragma once

#include <boost/asio/io_context.hpp>
#include <functional>
#include <memory>
#include <string>

#include "common/listen_address.h"
#include "common/logging.h"
#include "common/status.h"

namespace tapmap::control {

// The server's state, shared with its accept loop and connections (metrics_server.cc).
struct MetricsServerState;

class MetricsServer {
 public:
  // `render` produces the exposition text; called on an io thread per request.
  MetricsServer(boost::asio::io_context& io, std::function<std::string()> render, Logger log);
  ~MetricsServer();
  MetricsServer(const MetricsServer&) = delete;
  MetricsServer& operator=(const MetricsServer&) = delete;

  // Binds `address` (a stale unix socket file is replaced) and starts serving.
  Status Listen(const ListenAddress& address);
  // Stops accepting and removes a unix socket file; a response being written is
  // finished. Takes effect on `io` shortly after the call. Idempotent.
  void Stop();

 private:
  std::shared_ptr<MetricsServerState> state_;
};

}  // namespace tapmap::control
