#include "protocol/connection.h"

#include <unistd.h>

#include "protocol/auth.h"
#include "protocol/remote_status.h"

namespace tapmap::protocol {

Connection::Connection(ServerAddress address, std::string host, kj::Own<kj::AsyncIoStream> stream,
                       std::shared_ptr<TlsConfig> tls)
    : address_(std::move(address)),
      host_(std::move(host)),
      tls_(std::move(tls)),
      stream_(kj::mv(stream)),
      rpc_(kj::heap<capnp::TwoPartyClient>(*stream_)),
      session_(nullptr) {}

Connection::~Connection() {
  // Drop the capability and the RPC system before the stream they run on.
  session_ = nullptr;
  rpc_ = nullptr;
  stream_ = nullptr;
}

kj::Promise<void> Connection::Login(std::string secret, uint64_t instance, std::string pool_client) {
  auto gate = rpc_->bootstrap().castAs<proto::Gate>();
  auto challenge = gate.challengeRequest().send();
  return challenge.then([this, gate, secret = kj::mv(secret), instance,
                         pool_client = kj::mv(pool_client)](auto response) mutable {
    if (response.getServerVersion() != proto::PROTOCOL_VERSION) {
      throw ToException(Status::NotSupported(
          "server speaks protocol version " + std::to_string(response.getServerVersion()) +
          ", this client " + std::to_string(proto::PROTOCOL_VERSION)));
    }
    auto nonce = response.getNonce();
    std::vector<uint8_t> proof = ComputeLoginProof(secret, nonce.begin(), nonce.size(), host_);
    auto login = gate.loginRequest();
    login.setHost(host_);
    login.setProof(kj::arrayPtr(proof.data(), proof.size()));
    login.setClientVersion(proto::PROTOCOL_VERSION);
    login.setInstance(instance);
    login.setPoolClient(pool_client);
    return login.send().then([this](auto reply) {
      session_ = reply.getSession();
      login_ = LoginAnswer{reply.getLeaseMs(), reply.getResumed(), reply.getInGrace()};
    });
  });
}

kj::Promise<kj::Own<Connection>> Connection::Connect(kj::AsyncIoContext& io,
                                                     const ServerAddress& address, std::string host,
                                                     std::string secret, uint64_t instance) {
  return Connect(io, address, ClientAuth{kj::mv(host), kj::mv(secret), nullptr, ""}, instance);
}

kj::Promise<kj::Own<Connection>> Connection::Connect(kj::AsyncIoContext& io, const ServerAddress& address,
                                                     ClientAuth auth, uint64_t instance) {
  std::shared_ptr<TlsConfig> tls = address.kind == ServerAddress::Kind::kTcp ? auth.tls : nullptr;
  if (tls != nullptr && auth.host != tls->name().host) {
    return ToException(Status::InvalidArgument("host name '" + auth.host + "' differs from the name in " +
                                               tls->dir() + "/host.crt (" + tls->name().host + ")"));
  }
  if (!IsValidHostName(auth.host)) {
    return ToException(Status::InvalidArgument("bad host name '" + auth.host + "'"));
  }
  std::string where = address.ToString();
  return io.provider->getNetwork()
      .parseAddress(address.ToKjAddress())
      .then([](kj::Own<kj::NetworkAddress> addr) {
        auto connecting = addr->connect();
        return connecting.attach(kj::mv(addr));
      })
      .then([tls](kj::Own<kj::AsyncIoStream> stream) -> kj::Promise<kj::Own<kj::AsyncIoStream>> {
        if (tls == nullptr) return kj::mv(stream);
        return tls->WrapClient(kj::mv(stream));
      })
      .catch_([where, tls](kj::Exception&& e) -> kj::Promise<kj::Own<kj::AsyncIoStream>> {
        return ToException(Status::Unavailable("cannot connect to mapserver at " + where +
                                               (tls != nullptr ? " over TLS" : "") + ": " +
                                               e.getDescription().cStr()));
      })
      .then([address, auth = kj::mv(auth), tls, instance](kj::Own<kj::AsyncIoStream> stream) mutable {
        auto conn = kj::heap<Connection>(address, kj::mv(auth.host), kj::mv(stream), tls);
        auto login = conn->Login(kj::mv(auth.secret), instance, kj::mv(auth.pool_client));
        return login.then([conn = kj::mv(conn)]() mutable { return kj::mv(conn); });
      });
}

Result<kj::Own<Connection>> Connection::ConnectBlocking(kj::AsyncIoContext& io,
                                                        const ServerAddress& address,
                                                        std::string host, std::string secret,
                                                        uint64_t instance) {
  return ConnectBlocking(io, address, ClientAuth{kj::mv(host), kj::mv(secret), nullptr, ""}, instance);
}

Result<kj::Own<Connection>> Connection::ConnectBlocking(kj::AsyncIoContext& io, const ServerAddress& address,
                                                        ClientAuth auth, uint64_t instance) {
  kj::Own<Connection> conn;
  Status status =
      RunCatching([&] { conn = Connect(io, address, kj::mv(auth), instance).wait(io.waitScope); });
  if (!status.ok()) return status;
  return kj::mv(conn);
}

std::string LocalHostName() {
  char name[256] = {};
  if (::gethostname(name, sizeof(name) - 1) != 0 || name[0] == '\0') return "localhost";
  return name;
}

}  // namespace tapmap::protocol
