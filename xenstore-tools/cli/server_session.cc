#include "xenstore-tools/cli/server_session.h"

#include "protocol/auth.h"
#include "protocol/server_address.h"

namespace tapmap::cli {

ServerSession::ServerSession(uint64_t timeout_ms)
    : timeout_ms_(timeout_ms), io_(kj::setupAsyncIo()) {}

ServerSession::~ServerSession() { conn_ = nullptr; }

Result<std::unique_ptr<ServerSession>> ServerSession::Open(Invocation& inv) {
  auto address = protocol::ParseServerAddress(inv.options().Get("server"));
  if (!address.ok()) return inv.UsageError("--server: " + address.status().message());
  std::string host = inv.host_name();
  if (!protocol::IsValidHostName(host))
    return inv.UsageError("--host-name: bad host name '" + host + "'");
  auto secret = protocol::ReadSecretFile(inv.options().Get("secret-file"));
  if (!secret.ok()) return secret.status().WithContext("secret file");

  std::unique_ptr<ServerSession> s(new ServerSession(inv.timeout_ms()));
  auto conn = s->Wait(protocol::Connection::Connect(s->io_, *address, host, *secret));
  if (!conn.ok()) return conn.status();
  s->conn_ = kj::mv(*conn);
  return s;
}

}  // namespace tapmap::cli
