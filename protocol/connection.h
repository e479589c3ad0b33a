// Connection: an authenticated RPC connection from a host to the mapserver.
//
//   auto io = kj::setupAsyncIo();
//   auto secret = ReadSecretFile("/etc/tapmap/secret");           // Result<std::string>
//   auto addr = ParseServerAddress("unix:/run/tapmap/mapserver.sock");
//   kj::Own<Connection> conn =
//       Connection::Connect(io, *addr, LocalHostName(), *secret).wait(io.waitScope);
//   proto::Session::Client session = conn->session();
//   ... session.openRequest() ...
//   conn->onDisconnect().then(...);       // learn of a lost connection
//   conn = nullptr;                       // disconnects
//
// Errors: every failed promise carries a kj::Exception; turn it into a Status with
// StatusFromException (protocol/remote_status.h). A server that cannot be
// reached gives kUnavailable, a wrong secret kPermissionDenied.
//
// Threading: a Connection belongs to the thread whose KJ event loop (the `io` passed
// to Connect) it was made on; use and destroy it only there. Capabilities obtained
// through it (Session, Volume) stop working when the Connection is destroyed or the
// connection is lost; calls then fail with kUnavailable (DISCONNECTED).
#pragma once

#include <capnp/rpc-twoparty.h>
#include <kj/async-io.h>

#include <string>

#include "common/status.h"
#include "protocol/server_address.h"
#include "protocol/tls.h"
#include "tapmap/proto/mapping.capnp.h"

namespace tapmap::protocol {

// What the server said at login about this instance's host lease
// (mapserver/doc/leases.md).
struct LoginAnswer {
  uint32_t lease_ms = 0;
  bool resumed = false;   // the server still held this instance's openers
  bool in_grace = false;  // the server restarted recently: reclaim now
};

// How a client proves who it is (doc/auth.md): mutual TLS on TCP (`tls`: the host
// name is the one in its certificate) or the shared secret (unix sockets, and plaintext
// TCP where the server allows it).
struct ClientAuth {
  std::string host;
  std::string secret;
  std::shared_ptr<TlsConfig> tls;  // used for TCP addresses when set
  // Gate.login's poolClient: the host's pool I/O identity ("" for a file pool).
  std::string pool_client;
};

class Connection {
 public:
  // Connects to `address` (over TLS for a TCP address when `auth.tls` is set), asks the
  // Gate for a challenge and logs in as `auth.host`. The promise resolves once the
  // Session capability is held. `io` must outlive the returned Connection.
  static kj::Promise<kj::Own<Connection>> Connect(kj::AsyncIoContext& io, const ServerAddress& address,
                                                  ClientAuth auth, uint64_t instance = 0);
  static Result<kj::Own<Connection>> ConnectBlocking(kj::AsyncIoContext& io, const ServerAddress& address,
                                                     ClientAuth auth, uint64_t instance = 0);

  // Connects to `address`, asks the Gate for a challenge and logs in as `host` with
  // the proof HMAC-SHA256(secret, nonce || host). The promise resolves once the
  // Session capability is held. `io` must outlive the returned Connection.
  // `instance`: this process's random host-lease instance (0 for a tool that holds no
  // lease across connections; see mapping.capnp Gate.login).
  static kj::Promise<kj::Own<Connection>> Connect(kj::AsyncIoContext& io,
                                                  const ServerAddress& address, std::string host,
                                                  std::string secret, uint64_t instance = 0);

  // Blocking convenience for command-line tools: Connect(...).wait(io.waitScope),
  // with any failure returned as a Status.
  static Result<kj::Own<Connection>> ConnectBlocking(kj::AsyncIoContext& io,
                                                     const ServerAddress& address, std::string host,
                                                     std::string secret, uint64_t instance = 0);

  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;
  // Closes the connection; the server keeps this instance's openers (orphaned) until
  // they are reclaimed or its host lease expires (mapserver/doc/leases.md).
  ~Connection();

  // The logged-in session (a cheap reference-counted capability handle).
  proto::Session::Client session() { return session_; }

  // Resolves when the connection is lost (peer closed, network error). May be called
  // any number of times. It never resolves just because this object is destroyed
  // (the promise is then cancelled with it: drop such promises before the Connection).
  kj::Promise<void> onDisconnect() { return rpc_->onDisconnect(); }

  const ServerAddress& address() const { return address_; }
  const std::string& host() const { return host_; }
  const LoginAnswer& login() const { return login_; }

  // Use Connect(); public only for kj::heap.
  Connection(ServerAddress address, std::string host, kj::Own<kj::AsyncIoStream> stream,
             std::shared_ptr<TlsConfig> tls = nullptr);

 private:
  kj::Promise<void> Login(std::string secret, uint64_t instance, std::string pool_client);

  ServerAddress address_;
  std::string host_;
  std::shared_ptr<TlsConfig> tls_;  // what the TLS stream was made with
  kj::Own<kj::AsyncIoStream> stream_;
  kj::Own<capnp::TwoPartyClient> rpc_;
  proto::Session::Client session_;
  LoginAnswer login_;
};

// This machine's host name (gethostname), for use as the login host; "localhost" if
// it cannot be determined.
std::string LocalHostName();

}  // namespace tapmap::protocol
