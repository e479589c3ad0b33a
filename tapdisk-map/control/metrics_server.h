// MetricsServer: a minimal HTTP/1.x endpoint serving `GET /metrics` (Prometheus text
// exposition format) on a ListenAddress (--metrics unix:PATH | tcp:HOST:PORT). Every
// other path is 404, every other method 405. One request per connection.
//
// The port may be reachable by others, so what a peer can hold is bounded
// (MetricsServerOptions): 8 KiB of request headers; at most `max_connections` open
// connections, every further one being accepted at once (nothing waits in the backlog)
// and displacing the oldest connection that has not sent its request yet (or, if all
// are being answered, closed at once); and a connection is closed `request_timeout`
// after it was accepted unless it has been answered by then. So idle connections can
// neither exhaust the daemon's fds nor lock a scraper out.
//
// Threading and lifetime: as ControlServer (the object may be destroyed while `io`
// runs; `render` must stay valid until `io`'s threads have stopped).
#pragma once

#include <boost/asio/io_context.hpp>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "common/listen_address.h"
#include "common/logging.h"
#include "common/status.h"

namespace tapmap::control {

// The server's state, shared with its accept loop and connections (metrics_server.cc).
struct MetricsServerState;

// Bounds on what a peer of the (possibly network-reachable) port can hold.
struct MetricsServerOptions {
  // Connections served at once (each holds one fd).
  uint32_t max_connections = 16;
  // A connection is closed this long after it was accepted unless it has been answered.
  std::chrono::milliseconds request_timeout{5000};
};

class MetricsServer {
 public:
  // `render` produces the exposition text; called on an io thread per request.
  MetricsServer(boost::asio::io_context& io, std::function<std::string()> render, Logger log,
                MetricsServerOptions options = {});
  ~MetricsServer();
  MetricsServer(const MetricsServer&) = delete;
  MetricsServer& operator=(const MetricsServer&) = delete;

  // Binds `address` (a stale unix socket file is replaced) and starts serving.
  Status Listen(const ListenAddress& address);
  // Stops accepting and removes a unix socket file; a response being written is
  // finished. Takes effect on `io` shortly after the call. Idempotent.
  void Stop();

  // What the bounds did so far; safe from any thread.
  struct Counters {
    uint64_t accepted = 0;   // connections accepted
    uint64_t answered = 0;   // responses written in full
    uint64_t displaced = 0;  // closed before their request to make room for a newcomer
    uint64_t refused = 0;    // closed at once: every slot was busy answering
    uint64_t timed_out = 0;  // closed at the request deadline
    uint32_t open = 0;       // connections open now
  };
  Counters counters() const;

 private:
  std::shared_ptr<MetricsServerState> state_;
};

// `counters` as Prometheus text (tapmap_metrics_connections_*), for the endpoint to
// report on itself.
std::string MetricsCountersToPrometheus(const MetricsServer::Counters& counters);

}  // namespace tapmap::control
