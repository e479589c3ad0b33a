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
#include "mapserver/mapping_service.h"

namespace tapmap::mapserver {

class Server final : private kj::TaskSet::ErrorHandler {
 public:
  inline static constexpr kj::Duration kDefaultLoginTimeout = 30 * kj::SECONDS;

  Server(kj::AsyncIoContext& io, MappingService& service, Logger logger,
         kj::Duration login_timeout = kDefaultLoginTimeout);
  ~Server();

  // Binds `address` and starts accepting. A stale unix socket file at the path is
  // replaced; the socket is made mode 0660. Blocks on `wait_scope` only to resolve
  // the address; must not be called from inside a promise callback.
  Status Listen(const protocol::ServerAddress& address, kj::WaitScope& wait_scope);

  // The address actually bound ("tcp:127.0.0.1:41234" when port 0 was asked for).
  const std::string& bound_address() const { return bound_address_; }
  size_t connection_count() const { return connections_; }

 private:
  struct Connection;
  kj::Promise<void> AcceptLoop();
  void taskFailed(kj::Exception&& exception) override;

  kj::AsyncIoContext& io_;
  MappingService& service_;
  Logger logger_;
  kj::Duration login_timeout_;
  kj::Own<kj::ConnectionReceiver> listener_;
  std::string bound_address_;
  std::string unix_path_;  // unlinked at destruction
  size_t connections_ = 0;
  // Each connection's state, to mark them ended when the server goes (so their
  // openers are orphaned, and their rw lease records kept for the next grace period).
  std::vector<std::weak_ptr<ConnectionState>> states_;
  kj::TaskSet tasks_;
};

}  // namespace tapmap::mapserver
