#include "mapserver/server.h"

#include <arpa/inet.h>
#include <capnp/rpc-twoparty.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

#include "protocol/remote_status.h"

namespace tapmap::mapserver {
namespace {

// The peer's address: `ip` alone (for per-peer limits; "" for a unix-socket peer) and
// `name` with the port, for logs.
struct PeerAddress {
  std::string ip;
  std::string name;
};

PeerAddress PeerOf(kj::AsyncIoStream& stream) {
  struct sockaddr_storage addr;
  kj::uint len = sizeof(addr);
  try {
    stream.getpeername(reinterpret_cast<struct sockaddr*>(&addr), &len);
  } catch (...) {
    return {"", "unknown"};
  }
  char buf[INET6_ADDRSTRLEN] = {};
  if (addr.ss_family == AF_INET) {
    auto* in = reinterpret_cast<struct sockaddr_in*>(&addr);
    inet_ntop(AF_INET, &in->sin_addr, buf, sizeof(buf));
    return {buf, std::string(buf) + ":" + std::to_string(ntohs(in->sin_port))};
  }
  if (addr.ss_family == AF_INET6) {
    auto* in6 = reinterpret_cast<struct sockaddr_in6*>(&addr);
    inet_ntop(AF_INET6, &in6->sin6_addr, buf, sizeof(buf));
    return {buf, "[" + std::string(buf) + "]:" + std::to_string(ntohs(in6->sin6_port))};
  }
  return {"", "unix"};
}

// The connection's stream, marking the connection ended as soon as a read or write
// finds it gone — before the RPC system learns of it and drops the capabilities it
// serves, so that their openers are orphaned rather than released (leases.md). Until a
// login succeeds it reads at most `pre_login_budget` bytes in all: a read past it fails
// the connection before the bytes are taken in (ServerLimits::max_bytes_before_login).
// It reads nothing while a write is in progress: a peer that does not read its answers
// stalls the write, and then the server takes no further calls from it, so answers
// cannot pile up in the server (the RPC system queues outgoing messages without bound).
// A peer that reads is not slowed: a write into a socket with room completes at once.
class WatchedStream final : public kj::AsyncIoStream {
 public:
  WatchedStream(kj::Own<kj::AsyncIoStream> inner, std::shared_ptr<ConnectionState> state,
                uint64_t pre_login_budget)
      : inner_(kj::mv(inner)), state_(std::move(state)), pre_login_left_(pre_login_budget) {}

  kj::Promise<size_t> tryRead(void* buffer, size_t min_bytes, size_t max_bytes) override {
    if (writing_ > 0) {
      auto paf = kj::newPromiseAndFulfiller<void>();
      drained_ = kj::mv(paf.fulfiller);
      return paf.promise.then(
          [this, buffer, min_bytes, max_bytes] { return tryRead(buffer, min_bytes, max_bytes); });
    }
    bool anonymous = !state_->authenticated;
    if (anonymous) {
      if (pre_login_left_ == 0) {
        state_->ended = true;
        return KJ_EXCEPTION(DISCONNECTED, "more data than a login takes before logging in");
      }
      max_bytes = static_cast<size_t>(std::min<uint64_t>(max_bytes, pre_login_left_));
    }
    size_t asked_min = min_bytes;
    min_bytes = std::min(min_bytes, max_bytes);
    return inner_->tryRead(buffer, min_bytes, max_bytes)
        .then(
            [this, anonymous, asked_min, min_bytes](size_t n) -> size_t {
              if (anonymous) {
                pre_login_left_ -= std::min<uint64_t>(n, pre_login_left_);
                if (n >= min_bytes && n < asked_min) {  // the budget, not the peer, ended it
                  state_->ended = true;
                  kj::throwFatalException(
                      KJ_EXCEPTION(DISCONNECTED, "more data than a login takes before logging in"));
                }
              }
              if (n < min_bytes) state_->ended = true;  // end of stream
              return n;
            },
            [this](kj::Exception&& e) -> size_t {
              state_->ended = true;
              kj::throwFatalException(kj::mv(e));
            });
  }
  kj::Promise<void> write(const void* buffer, size_t size) override {
    return Watch(inner_->write(buffer, size));
  }
  kj::Promise<void> write(kj::ArrayPtr<const kj::ArrayPtr<const kj::byte>> pieces) override {
    return Watch(inner_->write(pieces));
  }
  kj::Promise<void> whenWriteDisconnected() override { return inner_->whenWriteDisconnected(); }
  void shutdownWrite() override { inner_->shutdownWrite(); }
  void abortRead() override { inner_->abortRead(); }
  void getsockopt(int level, int option, void* value, kj::uint* length) override {
    inner_->getsockopt(level, option, value, length);
  }
  void setsockopt(int level, int option, const void* value, kj::uint length) override {
    inner_->setsockopt(level, option, value, length);
  }
  void getsockname(struct sockaddr* addr, kj::uint* length) override { inner_->getsockname(addr, length); }
  void getpeername(struct sockaddr* addr, kj::uint* length) override { inner_->getpeername(addr, length); }

 private:
  kj::Promise<void> Watch(kj::Promise<void> p) {
    ++writing_;
    // Runs when the write is done or dropped.
    auto done = kj::defer([this] {
      if (--writing_ == 0) {
        KJ_IF_MAYBE(f, drained_) {
          (*f)->fulfill();
          drained_ = nullptr;
        }
      }
    });
    return p
        .catch_([this](kj::Exception&& e) {
          state_->ended = true;
          kj::throwFatalException(kj::mv(e));
        })
        .attach(kj::mv(done));
  }

  kj::Own<kj::AsyncIoStream> inner_;
  std::shared_ptr<ConnectionState> state_;
  uint64_t pre_login_left_;
  size_t writing_ = 0;                                      // writes not yet done
  kj::Maybe<kj::Own<kj::PromiseFulfiller<void>>> drained_;  // a read waiting for them
};

}  // namespace

struct Server::Connection {
  Connection(kj::Own<kj::AsyncIoStream> s, capnp::Capability::Client bootstrap, size_t* counter)
      : stream(kj::mv(s)),
        network(*stream, capnp::rpc::twoparty::Side::SERVER),
        rpc(capnp::makeRpcServer(network, kj::mv(bootstrap))),
        counter(counter) {
    ++*counter;
  }
  ~Connection() { --*counter; }

  kj::Own<kj::AsyncIoStream> stream;
  capnp::TwoPartyVatNetwork network;
  capnp::RpcSystem<capnp::rpc::twoparty::VatId> rpc;
  size_t* counter;
};

Server::Server(kj::AsyncIoContext& io, MappingService& service, Logger logger, ServerLimits limits)
    : io_(io),
      service_(service),
      logger_(std::move(logger)),
      limits_(limits),
      tasks_(*this) {}

Server::~Server() {
  for (auto& live : states_) {
    if (auto state = live.state.lock()) state->ended = true;
  }
  if (!unix_path_.empty()) ::unlink(unix_path_.c_str());
}

Status Server::Listen(const protocol::ServerAddress& address, kj::WaitScope& wait_scope,
                      protocol::TlsConfig* tls) {
  tls_ = tls;
  if (address.kind == protocol::ServerAddress::Kind::kUnix) {
    struct stat st;
    if (::lstat(address.path.c_str(), &st) == 0) {
      if (!S_ISSOCK(st.st_mode)) {
        return Status::AlreadyExists(address.path + " exists and is not a socket");
      }
      ::unlink(address.path.c_str());  // stale socket of a previous run
    }
  }
  Status status = protocol::RunCatching([&] {
    auto addr = io_.provider->getNetwork().parseAddress(address.ToKjAddress()).wait(wait_scope);
    listener_ = addr->listen();
  });
  if (!status.ok()) {
    return Status::Unavailable("cannot listen on " + address.ToString() + ": " + status.message());
  }
  if (address.kind == protocol::ServerAddress::Kind::kUnix) {
    unix_path_ = address.path;
    ::chmod(address.path.c_str(), 0660);
    bound_address_ = address.ToString();
  } else {
    protocol::ServerAddress bound = address;
    bound.port = static_cast<uint16_t>(listener_->getPort());
    bound_address_ = bound.ToString();
  }
  tasks_.add(AcceptLoop());
  return Status::Ok();
}

const char* Server::LimitReached(const std::string& peer_ip) {
  std::erase_if(states_, [](const LiveConnection& c) {
    auto state = c.state.lock();
    return state == nullptr || state->ended;
  });
  size_t all = 0, anonymous = 0, peer_all = 0, peer_anonymous = 0;
  for (const LiveConnection& c : states_) {
    bool anon = !c.state.lock()->authenticated;
    ++all;
    anonymous += anon;
    if (!peer_ip.empty() && c.peer_ip == peer_ip) {
      ++peer_all;
      peer_anonymous += anon;
    }
  }
  if (all >= limits_.max_connections) return "connections";
  if (!peer_ip.empty()) {
    if (peer_all >= limits_.max_connections_per_peer) return "connections from one address";
    if (peer_anonymous >= limits_.max_anonymous_per_peer) return "connections not logged in from one address";
  }
  if (anonymous >= limits_.max_anonymous) {
    // The oldest anonymous connection gives way (states_ is in accept order).
    for (LiveConnection& c : states_) {
      auto state = c.state.lock();
      if (state->authenticated) continue;
      state->ended = true;
      c.evict->fulfill();
      ++evicted_;
      uint64_t suppressed = 0;
      if (refusal_log_.Allow(&suppressed)) {
        logger_.Warnf("%zu connections not logged in: dropping the oldest for a new one (%llu similar suppressed)",
                      anonymous, static_cast<unsigned long long>(suppressed));
      }
      break;
    }
  }
  return nullptr;
}

kj::Promise<void> Server::AcceptLoop() {
  return listener_->acceptAuthenticated().then([this](kj::AuthenticatedStream accepted) {
    PeerAddress peer = PeerOf(*accepted.stream);
    if (const char* limit = LimitReached(peer.ip)) {
      ++refused_;
      uint64_t suppressed = 0;
      if (refusal_log_.Allow(&suppressed)) {
        logger_.Warnf("refusing a connection from %s: too many %s (%llu similar refusals suppressed)",
                      peer.name.c_str(), limit, static_cast<unsigned long long>(suppressed));
      }
      return AcceptLoop();  // `accepted.stream` is closed here
    }
    auto state = std::make_shared<ConnectionState>();
    auto evict = kj::newPromiseAndFulfiller<void>();
    states_.push_back({state, peer.ip, kj::mv(evict.fulfiller)});  // counted as not logged in from now on
    kj::ForkedPromise<void> evicted = evict.promise.fork();
    if (tls_ == nullptr) {
      Serve(kj::mv(accepted.stream), state, peer.name, evicted.addBranch());
      return AcceptLoop();
    }
    // The handshake runs beside the accept loop; it is bounded by the TLS context's
    // accept timeout (the login timeout), and by an eviction.
    auto evicted_in_handshake = evicted.addBranch().then([]() -> kj::AuthenticatedStream {
      kj::throwFatalException(KJ_EXCEPTION(DISCONNECTED, "gave way to a newer connection"));
    });
    tasks_.add(tls_->context()
                   .wrapServer(kj::mv(accepted))
                   .exclusiveJoin(kj::mv(evicted_in_handshake))
                   .then(
                       [this, state, name = peer.name,
                        evicted = kj::mv(evicted)](kj::AuthenticatedStream secured) mutable {
                         auto& identity = kj::downcast<kj::TlsPeerIdentity>(*secured.peerIdentity);
                         auto cert_name = protocol::ParseCertificateName(
                             identity.hasCertificate() ? std::string(identity.getCommonName().cStr()) : "");
                         if (!cert_name.ok()) {
                           state->ended = true;
                           logger_.Warnf("TLS peer %s refused: %s", name.c_str(),
                                         cert_name.status().message().c_str());
                           return;
                         }
                         state->tls_name = *cert_name;
                         Serve(kj::mv(secured.stream), state, name + " (" + cert_name->host + ")",
                               evicted.addBranch());
                       },
                       [this, state, name = peer.name](kj::Exception&& e) {
                         state->ended = true;
                         uint64_t suppressed = 0;
                         if (refusal_log_.Allow(&suppressed)) {
                           logger_.Warnf("TLS handshake with %s failed: %s (%llu similar suppressed)",
                                         name.c_str(), e.getDescription().cStr(),
                                         static_cast<unsigned long long>(suppressed));
                         }
                       }));
    return AcceptLoop();
  });
}

void Server::Serve(kj::Own<kj::AsyncIoStream> stream, std::shared_ptr<ConnectionState> state, std::string peer,
                   kj::Promise<void> evicted) {
  auto close = kj::newPromiseAndFulfiller<void>();
  stream = kj::heap<WatchedStream>(kj::mv(stream), state, limits_.max_bytes_before_login);
  auto gate = service_.NewGate(peer, kj::mv(close.fulfiller), state);
  auto connection = kj::heap<Connection>(kj::mv(stream), kj::mv(gate), &connections_);
  connection->rpc.setFlowLimit(limits_.max_call_words_in_flight);
  // An anonymous connection may not linger: close it if no login succeeded in time.
  auto login_deadline =
      io_.provider->getTimer()
          .afterDelay(limits_.login_timeout)
          .then([this, state, peer]() -> kj::Promise<void> {
            if (state->authenticated) return kj::NEVER_DONE;
            logger_.Warnf("closing connection from %s: no login within the timeout", peer.c_str());
            return kj::READY_NOW;
          });
  auto ended = connection->network.onDisconnect()
                   .exclusiveJoin(kj::mv(close.promise))
                   .exclusiveJoin(kj::mv(login_deadline))
                   .exclusiveJoin(kj::mv(evicted));
  // `ended` is set before the connection (and the capabilities it serves) goes.
  tasks_.add(ended.then([state]() { state->ended = true; }).attach(kj::mv(connection)));
}

void Server::taskFailed(kj::Exception&& exception) {
  logger_.Warnf("connection task failed: %s", exception.getDescription().cStr());
}

}  // namespace tapmap::mapserver
