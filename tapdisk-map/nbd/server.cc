#include "tapdisk-map/nbd/server.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/stat.h>
#include <sys/socket.h>
#include <unistd.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <set>

namespace tapmap::nbd {

namespace asio = boost::asio;
using GenericEndpoint = asio::generic::stream_protocol::endpoint;

namespace {
NbdServerOptions WithPayloadBuffers(NbdServerOptions options) {
  if (options.connection.payload_buffers == nullptr && options.payload_buffer_retain_bytes > 0) {
    options.connection.payload_buffers = std::make_shared<pool::BufferRecycler>(options.payload_buffer_retain_bytes);
  }
  // One rate limit for the failed handshakes of all this server's connections.
  if (options.connection.failure_log_limiter == nullptr) {
    options.connection.failure_log_limiter = std::make_shared<RateLimiter>(20, std::chrono::seconds(10));
  }
  // One rate limit for the refused opens of all this server's connections.
  if (options.connection.handshake.refusals == nullptr) {
    options.connection.handshake.refusals = std::make_shared<RefusalLog>();
  }
  return options;
}
}  // namespace

NbdServer::NbdServer(asio::io_context& io, ExportCatalog& catalog, NbdServerOptions options, Logger log)
    : io_(io),
      accept_strand_(asio::make_strand(io)),
      catalog_(catalog),
      options_(WithPayloadBuffers(std::move(options))),
      log_(std::move(log)) {}

NbdServer::~NbdServer() {
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& listener : listeners_) {
    boost::system::error_code ec;
    listener->acceptor->close(ec);
    if (!listener->unix_path.empty()) ::unlink(listener->unix_path.c_str());
  }
}

Status NbdServer::Listen(const ListenAddress& address, ListenerOptions options) {
  auto listener = std::make_unique<Listener>();
  listener->address = address.ToString();
  listener->options = std::move(options);
  const ListenerOptions& o = listener->options;
  listener->catalog = &catalog_;
  const bool is_tcp = address.kind == ListenAddress::Kind::kTcp;
  if (options_.tls != nullptr) {
    listener->tls = is_tcp ? TlsMode::kRequired : TlsMode::kOptional;
  } else if (is_tcp && !options_.allow_plaintext_tcp) {
    return Status::PermissionDenied(
        "refusing to serve NBD on " + listener->address +
        " without TLS: anyone who can reach the port could read and write every volume. Give TLS "
        "credentials (--nbd-tls-certificates DIR or --nbd-tls-psk FILE), listen on a unix socket, or "
        "accept the risk with --nbd-insecure-plaintext-tcp");
  }
  if (!o.allowed_exports.empty()) {
    if (Status s = ValidateExportPatterns(o.allowed_exports); !s.ok()) return s;
    if (!o.default_export.empty() && !ExportAllowed(o.allowed_exports, o.default_export)) {
      return Status::InvalidArgument("export " + QuotedExportName(o.default_export) +
                                     " is not in the listener's allow-list");
    }
    listener->allowed = std::make_unique<AllowedExports>(catalog_, o.allowed_exports);
    listener->catalog = listener->allowed.get();
  }
  if (!o.default_export.empty()) {
    listener->single = std::make_unique<SingleExport>(*listener->catalog, o.default_export);
    listener->catalog = listener->single.get();
  }
  listener->acceptor = std::make_unique<Acceptor>(accept_strand_);
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& l : listeners_) {
      if (!l->removed && l->address == listener->address) {
        return Status::AlreadyExists("already listening on " + listener->address);
      }
    }
  }
  boost::system::error_code ec;
  GenericEndpoint endpoint;
  if (address.kind == ListenAddress::Kind::kUnix) {
    struct stat st {};
    if (::lstat(address.path.c_str(), &st) == 0) {
      if (!S_ISSOCK(st.st_mode)) {
        return Status::AlreadyExists(address.path + " exists and is not a socket");
      }
      ::unlink(address.path.c_str());  // a stale socket of an earlier run
    }
    endpoint = GenericEndpoint(asio::local::stream_protocol::endpoint(address.path));
    listener->unix_path = address.path;
  } else {
    asio::ip::tcp::resolver resolver(io_);
    auto results = resolver.resolve(address.host, std::to_string(address.port),
                                    asio::ip::tcp::resolver::passive, ec);
    if (ec || results.empty()) {
      return Status::InvalidArgument("cannot resolve " + address.ToString() + ": " + ec.message());
    }
    endpoint = GenericEndpoint(results.begin()->endpoint());
  }
  listener->acceptor->open(endpoint.protocol(), ec);
  if (!ec && address.kind == ListenAddress::Kind::kTcp) {
    listener->acceptor->set_option(asio::socket_base::reuse_address(true), ec);
  }
  if (!ec) listener->acceptor->bind(endpoint, ec);
  if (!ec) listener->acceptor->listen(asio::socket_base::max_listen_connections, ec);
  if (ec) return Status::IoError("listen on " + address.ToString() + ": " + ec.message());

  Listener* raw = listener.get();
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) return Status::Aborted("server is stopping");
    listeners_.push_back(std::move(listener));
    accept_loops_running_++;
  }
  const char* tls = raw->tls == TlsMode::kRequired   ? "TLS required"
                    : raw->tls == TlsMode::kOptional ? "TLS offered"
                    : raw->unix_path.empty()         ? "PLAINTEXT TCP (--nbd-insecure-plaintext-tcp)"
                                                     : "no TLS";
  if (!raw->options.default_export.empty()) {
    log_.Infof("listening on %s for export %s only (also as the default export), %s", raw->address.c_str(),
               QuotedExportName(raw->options.default_export).c_str(), tls);
  } else if (!raw->options.allowed_exports.empty()) {
    std::string list;
    for (const std::string& pattern : raw->options.allowed_exports) list += (list.empty() ? "" : " ") + pattern;
    log_.Infof("listening on %s for the exports %s only, %s", raw->address.c_str(), list.c_str(), tls);
  } else {
    log_.Infof("listening on %s, %s", raw->address.c_str(), tls);
  }
  if (raw->tls == TlsMode::kOff && raw->unix_path.empty()) {
    log_.Warnf("NBD on %s is plaintext TCP: every client that reaches it may read and write every volume "
               "it offers", raw->address.c_str());
  }
  asio::co_spawn(accept_strand_, [this, raw]() { return AcceptLoop(raw); }, asio::detached);
  return Status::Ok();
}

asio::awaitable<void> NbdServer::AcceptLoop(Listener* listener) {
  // Runs until the server stops; its end may complete the stop (see Stop's contract).
  const bool is_tcp = listener->unix_path.empty();
  for (;;) {
    Stream::Socket peer(asio::make_strand(io_));
    boost::system::error_code ec;
    co_await listener->acceptor->async_accept(peer, asio::redirect_error(asio::use_awaitable, ec));
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stopping_ || listener->removed) break;
    }
    if (ec == asio::error::operation_aborted) break;
    if (ec) {
      // Out of fds or similar: back off instead of spinning.
      log_.Warnf("accept on %s failed: %s", listener->address.c_str(), ec.message().c_str());
      asio::steady_timer pause(accept_strand_, std::chrono::milliseconds(100));
      co_await pause.async_wait(asio::redirect_error(asio::use_awaitable, ec));
      continue;
    }
    if (is_tcp) {
      int one = 1;
      ::setsockopt(peer.native_handle(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    }
    std::shared_ptr<Connection> connection;
    std::shared_ptr<Connection> displaced;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (!MakeRoomLocked(&displaced)) {
        uint64_t suppressed = 0;
        if (limit_log_limiter_.Allow(&suppressed)) {
          log_.Warnf("connection limit (%u) reached, every connection serving an export: refusing a client on %s"
                     " (%llu more not logged)",
                     options_.max_connections, listener->address.c_str(), static_cast<unsigned long long>(suppressed));
        }
        peer.close(ec);
        continue;
      }
      uint64_t id = next_connection_id_++;
      Logger log = log_.WithContext("conn", id);
      auto holder = std::make_shared<Connection*>(nullptr);
      ConnectionOptions connection_options = options_.connection;
      connection_options.handshake.tls = listener->tls;
      connection_options.handshake.tls_credentials = options_.tls;
      if (connection_options.reply_backlog == nullptr) connection_options.reply_backlog = listener->backlog;
      connection = std::make_shared<Connection>(Stream(std::move(peer)), *listener->catalog, connection_options, log,
                                                [this, holder]() { ConnectionEnded(*holder); });
      *holder = connection.get();
      connections_[connection.get()] = Live{connection, listener, id, false};
    }
    if (displaced) displaced->Stop();  // ends its handshake; ConnectionEnded follows
    connection->Start();
  }
  std::vector<std::function<void()>> waiters;
  {
    std::lock_guard<std::mutex> lock(mu_);
    accept_loops_running_--;
    listener->loop_done = true;
    ReapListenersLocked();  // (`listener` may be gone after this)
    waiters = TakeStopWaitersLocked();
  }
  for (auto& waiter : waiters) asio::post(io_, std::move(waiter));
}

Status NbdServer::Unlisten(const std::string& address) {
  std::vector<std::shared_ptr<Connection>> to_stop;
  Listener* target = nullptr;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& l : listeners_) {
      if (!l->removed && l->address == address) target = l.get();
    }
    if (target == nullptr) return Status::NotFound("not listening on " + address);
    target->removed = true;
    // The socket file goes now, so that a Listen on the same path right after this
    // returns (block-tapmap re-creating a device's socket) binds a file of its own.
    if (!target->unix_path.empty()) {
      ::unlink(target->unix_path.c_str());
      target->unix_path.clear();
    }
    for (auto& [ptr, live] : connections_) {
      if (live.listener == target) to_stop.push_back(live.connection);
    }
  }
  log_.Infof("no longer listening on %s (%zu connections to end)", address.c_str(), to_stop.size());
  // The acceptor belongs to the accept strand. The listener is looked up again there:
  // it is freed only after its loop has returned, which closing the acceptor causes.
  asio::post(accept_strand_, [this, target]() {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& l : listeners_) {
      if (l.get() != target) continue;
      boost::system::error_code ec;
      l->acceptor->close(ec);
    }
  });
  for (auto& connection : to_stop) connection->Stop();
  return Status::Ok();
}

bool NbdServer::MakeRoomLocked(std::shared_ptr<Connection>* displaced) {
  if (connections_.size() - displaced_ < options_.max_connections) return true;
  Live* oldest = nullptr;
  for (auto& [ptr, live] : connections_) {
    if (live.displaced || !live.connection->negotiating()) continue;
    if (oldest == nullptr || live.id < oldest->id) oldest = &live;
  }
  if (oldest == nullptr) return false;
  oldest->displaced = true;
  displaced_++;
  *displaced = oldest->connection;
  uint64_t suppressed = 0;
  if (limit_log_limiter_.Allow(&suppressed)) {
    log_.Warnf("connection limit (%u) reached: closing the oldest connection still negotiating to make room "
               "(%llu more not logged)",
               options_.max_connections, static_cast<unsigned long long>(suppressed));
  }
  return true;
}

void NbdServer::ReapListenersLocked() {
  for (auto it = listeners_.begin(); it != listeners_.end();) {
    Listener* l = it->get();
    bool in_use = !l->removed || !l->loop_done;
    for (const auto& [ptr, live] : connections_) in_use = in_use || live.listener == l;
    it = in_use ? it + 1 : listeners_.erase(it);
  }
}

void NbdServer::ConnectionEnded(Connection* connection) {
  std::vector<std::function<void()>> waiters;
  std::shared_ptr<Connection> keep;  // destroyed outside the lock
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = connections_.find(connection);
    if (it == connections_.end()) return;
    keep = std::move(it->second.connection);
    if (it->second.displaced) displaced_--;
    connections_.erase(it);
    ReapListenersLocked();
    waiters = TakeStopWaitersLocked();
  }
  for (auto& waiter : waiters) asio::post(io_, std::move(waiter));
}

std::vector<std::function<void()>> NbdServer::TakeStopWaitersLocked() {
  std::vector<std::function<void()>> waiters;
  if (acceptors_closed_ && connections_.empty() && accept_loops_running_ == 0) waiters.swap(stop_waiters_);
  return waiters;
}

void NbdServer::Stop(std::function<void()> done) {
  std::vector<std::shared_ptr<Connection>> to_stop;
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
    if (done) stop_waiters_.push_back(std::move(done));
    for (auto& [ptr, live] : connections_) to_stop.push_back(live.connection);
  }
  // Closing an acceptor ends its accept loop (operation_aborted). The stop completes
  // no earlier than this handler, the server's last use of `this` outside the loops.
  asio::post(accept_strand_, [this]() {
    std::vector<std::function<void()>> waiters;
    {
      std::lock_guard<std::mutex> lock(mu_);
      for (auto& listener : listeners_) {
        boost::system::error_code ec;
        listener->acceptor->close(ec);
        if (!listener->unix_path.empty()) {
          ::unlink(listener->unix_path.c_str());
          listener->unix_path.clear();
        }
      }
      acceptors_closed_ = true;
      waiters = TakeStopWaitersLocked();
    }
    for (auto& waiter : waiters) asio::post(io_, std::move(waiter));
  });
  for (auto& connection : to_stop) connection->Stop();
}

std::vector<NbdServer::ListenerInfo> NbdServer::Describe() const {
  std::vector<std::pair<const Listener*, std::shared_ptr<Connection>>> live;
  std::vector<ListenerInfo> out;
  std::vector<const Listener*> order;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& listener : listeners_) {
      if (listener->removed) continue;
      order.push_back(listener.get());
      out.push_back(ListenerInfo{listener->address, listener->options.default_export,
                                 listener->options.allowed_exports, listener->tls, {}, 0,
                                 listener->backlog->replies.load(), listener->backlog->bytes.load(),
                                 listener->backlog->readers_waiting.load()});
    }
    for (const auto& [ptr, entry] : connections_) live.emplace_back(entry.listener, entry.connection);
  }
  for (size_t i = 0; i < order.size(); ++i) {
    std::set<std::string> volumes;
    for (const auto& [listener, connection] : live) {
      if (listener != order[i]) continue;
      out[i].connections++;
      std::string volume = connection->volume();
      if (!volume.empty()) volumes.insert(volume);
    }
    out[i].volumes_open.assign(volumes.begin(), volumes.end());
  }
  return out;
}

}  // namespace tapmap::nbd
