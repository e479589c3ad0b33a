// Server: accepts connections on a unix socket or TCP address and serves the mapping
// protocol on each, with a fresh Gate (MappingService::NewGate) as the bootstrap
// capability. A connection ends when the peer goes away or the Gate asks for it
// (failed logins); its capabilities are then dropped, ending its leases.
//
// Threading: runs on the event loop of the `io` it is given; `io` and `service` must
// outlive it. Destroying the Server closes the listener and every connection.
#pragma once

#include <kj/async-io.h>

#include <string>
#include <vector>

#include "common/logging.h"
#include "common/status.h"
#include "protocol/server_address.h"
#include "protocol/tls.h"
#include "mapserver/mapping_service.h"

namespace tapmap::mapserver {

// What one server lets its peers hold (doc/trust.md, "Bounded resources"). A
// connection over a limit is accepted and closed at once, with a rate-limited warning,
// so neither the listen backlog nor this process keeps its fd — except that when all
// `max_anonymous` slots are taken, the oldest connection not logged in gives way to
// the new one: silent peers from many addresses cannot lock hosts out (a real login
// takes milliseconds). "Anonymous" means no
// login has succeeded on it yet; "peer" is the remote IP address (unix-socket peers
// count only towards the global limits: the socket's file mode guards them).
struct ServerLimits {
  kj::Duration login_timeout = 10 * kj::SECONDS;
  size_t max_connections = 1024;
  size_t max_connections_per_peer = 64;
  size_t max_anonymous = 64;
  size_t max_anonymous_per_peer = 8;
  // Bytes a connection may send before a login succeeds; a Gate challenge + login
  // takes well under 1 KiB. Past it the connection is closed, so a peer that has not
  // logged in can never make the server buffer one of the large messages that logged
  // in hosts may send (capnp's reader accepts up to 64 MiB).
  uint64_t max_bytes_before_login = 16 * 1024;
  // Words of calls a logged-in peer may have in flight (not yet answered) before the
  // server stops reading from it (capnp's flow limit): 32 MiB, far above what a host
  // sends (its commits are bounded by its pinned bytes), so a peer that floods calls
  // cannot grow the server without bound. High enough that a call waiting for a
  // callback answered on the same connection never starves it.
  size_t max_call_words_in_flight = 4u << 20;
};

class Server final : private kj::TaskSet::ErrorHandler {
 public:
  Server(kj::AsyncIoContext& io, MappingService& service, Logger logger,
         ServerLimits limits = ServerLimits());
  ~Server();

  // Binds `address` and starts accepting. A stale unix socket file at the path is
  // replaced; the socket is made mode 0660. Blocks on `wait_scope` only to resolve
  // the address; must not be called from inside a promise callback. With `tls`
  // (which must outlive the server) every connection is TLS with a client
  // certificate of the CA, whose name the connection's logins must use
  // (protocol/tls.h); a peer that does not complete the handshake within the login
  // timeout is dropped.
  Status Listen(const protocol::ServerAddress& address, kj::WaitScope& wait_scope,
                protocol::TlsConfig* tls = nullptr);

  // The address actually bound ("tcp:127.0.0.1:41234" when port 0 was asked for).
  const std::string& bound_address() const { return bound_address_; }
  size_t connection_count() const { return connections_; }
  // Connections closed at accept because a limit was reached (ServerLimits).
  uint64_t refused_connections() const { return refused_; }
  // Connections not logged in that gave way to a newer one (ServerLimits).
  uint64_t evicted_connections() const { return evicted_; }

 private:
  struct Connection;
  struct LiveConnection {
    std::weak_ptr<ConnectionState> state;
    std::string peer_ip;  // "" for a unix-socket peer
    kj::Own<kj::PromiseFulfiller<void>> evict;  // ends the connection (while anonymous)
  };
  kj::Promise<void> AcceptLoop();
  // Serves the mapping protocol on an accepted (and, with TLS, handshaken) stream.
  void Serve(kj::Own<kj::AsyncIoStream> stream, std::shared_ptr<ConnectionState> state, std::string peer,
             kj::Promise<void> evicted);
  // Forgets ended connections, then names the limit, if any, that a new connection
  // from `peer_ip` ("" for unix) would exceed; makes room by evicting the oldest
  // anonymous connection when that is the only limit reached.
  const char* LimitReached(const std::string& peer_ip);
  void taskFailed(kj::Exception&& exception) override;

  kj::AsyncIoContext& io_;
  MappingService& service_;
  Logger logger_;
  ServerLimits limits_;
  kj::Own<kj::ConnectionReceiver> listener_;
  protocol::TlsConfig* tls_ = nullptr;
  std::string bound_address_;
  std::string unix_path_;  // unlinked at destruction
  size_t connections_ = 0;
  uint64_t refused_ = 0;
  uint64_t evicted_ = 0;
  RateLimiter refusal_log_{5, std::chrono::seconds(10)};
  // The live connections: counted against ServerLimits, and marked ended when the
  // server goes (so their openers are orphaned, and their rw lease records kept for
  // the next grace period).
  std::vector<LiveConnection> states_;
  kj::TaskSet tasks_;
};

}  // namespace tapmap::mapserver
