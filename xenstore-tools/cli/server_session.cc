#include "xenstore-tools/cli/server_session.h"

#include "protocol/auth.h"
#include "protocol/server_address.h"

namespace tapmap::cli {

ServerSession::ServerSession(uint64_t timeout_ms)
    : timeout_ms_(timeout_ms), io_(kj::setupAsyncIo()) {}

ServerSession::~ServerSession() { conn_ = nullptr; }

Result<std::unique_ptr<ServerSession>> ServerSession::Open(Invocation& inv) {
  // Several addresses (active and standby mapservers): the first that answers.
  auto addresses = protocol::ParseServerAddressList(inv.options().Get("server"));
  if (!addresses.ok()) return inv.UsageError("--server: " + addresses.status().message());
  bool any_tcp = false;
  for (const auto& a : *addresses) any_tcp |= a.kind == protocol::ServerAddress::Kind::kTcp;
  protocol::ClientAuth auth;
  auth.host = inv.host_name();
  std::string tls_dir = inv.options().Get("tls-dir");
  if (!tls_dir.empty() && any_tcp) {
    auto tls = protocol::TlsConfig::LoadClient(tls_dir);
    if (!tls.ok()) return tls.status();
    auth.tls = std::move(*tls);
    if (!inv.options().Has("host-name")) auth.host = auth.tls->name().host;
  } else {
    auto secret = protocol::ReadSecretFile(inv.options().Get("secret-file"));
    if (!secret.ok()) return secret.status().WithContext("secret file");
    auth.secret = std::move(*secret);
  }
  if (!protocol::IsValidHostName(auth.host))
    return inv.UsageError("--host-name: bad host name '" + auth.host + "'");

  std::unique_ptr<ServerSession> s(new ServerSession(inv.timeout_ms()));
  Status failed;
  for (const auto& address : *addresses) {
    auto conn = s->Wait(protocol::Connection::Connect(s->io_, address, auth));
    if (conn.ok()) {
      s->conn_ = kj::mv(*conn);
      return s;
    }
    failed = conn.status();
  }
  return failed;
}

}  // namespace tapmap::cli
