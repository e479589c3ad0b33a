// Connection: one accepted NBD client, from the greeting to the close: runs the
// handshake (under a deadline, so a silent client cannot hold a socket forever) and
// then the transmission phase on the chosen export.
//
// Threading: the connection runs on its own strand (the stream's executor); Stop() and
// volume() may be called from any thread.
#pragma once

#include <utility>  // before asio: boost 1.74's awaitable.hpp needs std::exchange

#include <boost/asio/awaitable.hpp>
#include <boost/asio/steady_timer.hpp>
#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <string>

#include "common/logging.h"
#include "tapdisk-map/nbd/export_catalog.h"
#include "tapdisk-map/nbd/handshake.h"
#include "tapdisk-map/nbd/stream.h"
#include "tapdisk-map/nbd/transmission.h"
#include "tapdisk-map/pool/buffer_recycler.h"

namespace tapmap::nbd {

struct ConnectionOptions {
  HandshakeOptions handshake;
  TransmissionLimits transmission;
  // Where WRITE payload buffers come from and go back to (shared by the server's
  // connections); null: a fresh allocation per request.
  std::shared_ptr<pool::BufferRecycler> payload_buffers;
  // Gauges of the replies not yet written (shared by a server's connections); may be null.
  std::shared_ptr<ReplyBacklog> reply_backlog;
  std::chrono::milliseconds handshake_timeout{30000};
  // Rate limit of the warnings about failed or timed-out handshakes (any client can
  // cause one per connection); shared by a server's connections. Null: a limit of
  // this connection's own, i.e. none across connections.
  std::shared_ptr<RateLimiter> failure_log_limiter;
};

class Connection : public std::enable_shared_from_this<Connection> {
 public:
  // `stream` is connected; its executor must be a strand. `catalog` must outlive the
  // connection. `on_end` runs once, on the strand, when the connection is closed.
  Connection(Stream stream, ExportCatalog& catalog, ConnectionOptions options, Logger log,
             std::function<void()> on_end);

  // Starts serving (spawns the connection's coroutine). Call once.
  void Start();
  // Ends the connection gracefully: a handshake in progress is cut, a transmission
  // stops reading and answers what is in flight. Thread-safe; idempotent.
  void Stop();
  // The volume exported on this connection ("" until the handshake chose one).
  std::string volume() const;
  // True until the handshake has chosen an export (a client that has not yet proved
  // anything, or never will). Thread-safe.
  bool negotiating() const { return negotiating_.load(); }

 private:
  boost::asio::awaitable<void> Serve();
  // Logs a failed handshake as a warning, within the rate limit.
  void WarnFailure(const std::string& what);

  boost::asio::any_io_executor executor_;  // the connection's strand
  Stream stream_;  // moved into transmission_ after the handshake
  ExportCatalog& catalog_;
  const ConnectionOptions options_;
  Logger log_;
  std::function<void()> on_end_;
  boost::asio::steady_timer deadline_;
  bool stopped_ = false;  // strand only
  std::shared_ptr<Transmission> transmission_;  // strand only
  mutable std::mutex volume_mu_;
  std::string volume_;
  std::atomic<bool> negotiating_{true};
};

}  // namespace tapmap::nbd
