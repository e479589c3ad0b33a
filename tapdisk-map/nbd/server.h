// NbdServer: the NBD export of tapdisk-map. Listens on unix sockets and/or TCP
// addresses (ListenAddress), accepts clients and runs one Connection per client; the
// export name a client asks for is a volume name, resolved by the ExportCatalog.
//
// TLS (handshake.h): with credentials, a TCP listener requires TLS (FORCEDTLS) and a
// unix socket offers it (a local client may upgrade). Without credentials a TCP
// listener is refused — anyone who can reach the port could read and write every
// volume — unless the server was built with allow_plaintext_tcp (tapdisk-map's
// --nbd-insecure-plaintext-tcp); unix sockets, guarded by file permissions, stay
// plaintext.
//
// Threading: construct, Listen and Stop from any thread; the server's work runs on
// `io` (any number of threads may run it; each connection is on its own strand).
#pragma once

#include <utility>  // before asio: boost 1.74's awaitable.hpp needs std::exchange

#include <boost/asio/generic/stream_protocol.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/basic_socket_acceptor.hpp>
#include <boost/asio/strand.hpp>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "common/listen_address.h"
#include "common/logging.h"
#include "common/status.h"
#include "tapdisk-map/nbd/connection.h"
#include "tapdisk-map/nbd/export_allow_list.h"
#include "tapdisk-map/nbd/export_catalog.h"

namespace tapmap::nbd {

struct NbdServerOptions {
  ConnectionOptions connection;
  // Connections at once. At the limit a new client displaces the oldest connection
  // still negotiating (one that has not chosen an export: a silent or half-finished
  // handshake cannot lock clients out); if every connection has chosen an export, the
  // new client is closed at once.
  uint32_t max_connections = 1024;
  // WRITE payload buffers kept for reuse by all connections (pool/buffer_recycler.h),
  // unless connection.payload_buffers is given; 0: no reuse.
  size_t payload_buffer_retain_bytes = 128u << 20;
  // NBD_OPT_STARTTLS credentials; null: no TLS.
  std::shared_ptr<TlsCredentials> tls;
  // Serve TCP listeners in plaintext when `tls` is null (otherwise Listen refuses them).
  bool allow_plaintext_tcp = false;
};

// How one listener serves (NbdServer::Listen).
struct ListenerOptions {
  // Non-empty: the listener offers this one export only, also as NBD's default export
  // (the empty name); see Listen.
  std::string default_export = {};
  // Non-empty: the exports this listener offers (export_allow_list.h); others are
  // not-found and not listed. Must be valid (ValidateExportPatterns).
  std::vector<std::string> allowed_exports = {};
};

class NbdServer {
 public:
  // `io` and `catalog` must outlive the server.
  NbdServer(boost::asio::io_context& io, ExportCatalog& catalog, NbdServerOptions options,
            Logger log);
  ~NbdServer();  // stops accepting; connections must have ended (call Stop first)
  NbdServer(const NbdServer&) = delete;
  NbdServer& operator=(const NbdServer&) = delete;

  // Binds and listens on `address` and starts accepting. A unix socket path that
  // exists as a stale socket is replaced; any other existing file is an error, and so
  // is an address this server already listens on (already-exists).
  //
  // With a non-empty `options.default_export` the listener offers that one export
  // only: a client asking for the empty name (NBD's default export, which is what
  // libxl >= 4.19 hands QEMU for the emulated disk of a `backendtype=tap` HVM guest) or
  // for that name gets it, any other name is not-found, and NBD_OPT_LIST lists just it.
  // Such per-device listeners come and go with the device (Unlisten). With
  // `options.allowed_exports`, only the exports the list allows are offered (both may
  // be given: the default export must then be allowed too). A TCP address without TLS
  // credentials is refused (permission-denied) unless allow_plaintext_tcp.
  Status Listen(const ListenAddress& address, ListenerOptions options = {});

  // Stops accepting on the listener of `address` (spelled as ListenerInfo::address),
  // removes its unix socket file and asks its connections to end (in-flight requests
  // are answered). not-found if this server has no such listener. Thread-safe.
  Status Unlisten(const std::string& address);

  // Stops accepting, asks every connection to end (in-flight requests are answered),
  // removes unix socket files, and calls `done` (on an io thread) once all connections
  // have closed and every accept loop has returned: after `done` no work of the server
  // remains on `io`, so the server may be destroyed. Idempotent; `done` may be null.
  void Stop(std::function<void()> done);

  struct ListenerInfo {
    std::string address;
    std::string default_export;  // "" for a listener that serves every volume
    std::vector<std::string> allowed_exports;  // the allow-list; empty: no list
    TlsMode tls = TlsMode::kOff;
    std::vector<std::string> volumes_open;  // sorted, unique
    uint32_t connections = 0;
    // Replies the listener's connections have not written yet (clients that do not
    // read), their bytes, and connections not reading requests for want of budget.
    uint64_t replies_unwritten = 0;
    uint64_t reply_bytes_unwritten = 0;
    uint64_t readers_waiting = 0;
  };
  // One entry per listen address. Thread-safe.
  std::vector<ListenerInfo> Describe() const;

 private:
  using Acceptor = boost::asio::basic_socket_acceptor<boost::asio::generic::stream_protocol>;
  struct Listener {
    std::string address;
    std::string unix_path;  // removed at Stop / Unlisten
    ListenerOptions options;
    std::unique_ptr<ExportCatalog> allowed;  // set iff options.allowed_exports is
    std::unique_ptr<ExportCatalog> single;   // set iff options.default_export is: its one export
    ExportCatalog* catalog = nullptr;        // what the listener's connections open
    TlsMode tls = TlsMode::kOff;
    std::shared_ptr<ReplyBacklog> backlog = std::make_shared<ReplyBacklog>();  // its connections'
    std::unique_ptr<Acceptor> acceptor;
    bool removed = false;    // Unlisten was called (mu_)
    bool loop_done = false;  // its accept loop has returned (mu_)
  };
  boost::asio::awaitable<void> AcceptLoop(Listener* listener);
  void ConnectionEnded(Connection* connection);
  // With mu_ held: frees the listeners that were removed and that neither an accept
  // loop nor a connection uses any more.
  void ReapListenersLocked();
  // With mu_ held: the stop waiters to call if the stop is complete (none otherwise).
  std::vector<std::function<void()>> TakeStopWaitersLocked();

  boost::asio::io_context& io_;
  boost::asio::strand<boost::asio::io_context::executor_type> accept_strand_;  // acceptors
  ExportCatalog& catalog_;
  const NbdServerOptions options_;  // (connection.payload_buffers set by the constructor)
  Logger log_;

  mutable std::mutex mu_;
  std::vector<std::unique_ptr<Listener>> listeners_;
  struct Live {
    std::shared_ptr<Connection> connection;
    const Listener* listener;
    uint64_t id = 0;           // accept order
    bool displaced = false;    // asked to end to make room (mu_)
  };
  // With mu_ held: room for one more connection, displacing the oldest negotiating
  // one if needed (returned, to be stopped outside the lock); false if there is none.
  bool MakeRoomLocked(std::shared_ptr<Connection>* displaced);
  RateLimiter limit_log_limiter_{5, std::chrono::seconds(10)};
  uint32_t displaced_ = 0;  // connections displaced and not yet ended (mu_)
  std::map<Connection*, Live> connections_;
  uint64_t next_connection_id_ = 1;
  bool stopping_ = false;
  bool acceptors_closed_ = false;  // set on accept_strand_ by Stop
  int accept_loops_running_ = 0;
  std::vector<std::function<void()>> stop_waiters_;
};

}  // namespace tapmap::nbd
