#include "tapdisk-map/control/control_server.h"

#include <sys/stat.h>
#include <unistd.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/streambuf.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <atomic>
#include <filesystem>
#include <set>

#include "tapdisk-map/control/verb_table.h"
#include "tapdisk-map/util/await_callback.h"

namespace tapmap::control {

namespace asio = boost::asio;
using Socket = asio::local::stream_protocol::socket;
using Acceptor = asio::local::stream_protocol::acceptor;
using json = nlohmann::json;

json ErrorResponse(const Status& status) {
  return json{{"ok", false},
              {"error", {{"code", std::string(StatusCodeName(status.code()))}, {"message", status.message()}}}};
}

namespace {

json OkResponse(json result) {
  json response = json::object();
  response["ok"] = true;
  if (result.is_object()) {
    for (auto& [key, value] : result.items()) response[key] = value;
  }
  return response;
}

}  // namespace

struct ControlServerState {
  ControlServerState(asio::io_context& io, ControlHandlers handlers_in, Logger log_in)
      : strand(asio::make_strand(io)), handlers(std::move(handlers_in)), log(std::move(log_in)), acceptor(strand) {}
  ~ControlServerState() {
    if (!path.empty() && !unlinked) ::unlink(path.c_str());
  }

  asio::strand<asio::io_context::executor_type> strand;
  const ControlHandlers handlers;
  Logger log;
  Acceptor acceptor;
  std::string path;  // set by Listen before the accept loop starts; then read-only
  std::atomic<bool> stop_requested{false};
  // On the strand only:
  bool stopped = false;
  bool unlinked = false;
  std::set<std::shared_ptr<Socket>> sockets;
};

namespace {

void HandleRequest(const ControlHandlers& handlers, const json& request, std::function<void(json)> done);

asio::awaitable<void> Serve(std::shared_ptr<ControlServerState> state, std::shared_ptr<Socket> socket);

asio::awaitable<void> AcceptLoop(std::shared_ptr<ControlServerState> state) {
  for (;;) {
    auto socket = std::make_shared<Socket>(state->strand);
    boost::system::error_code ec;
    co_await state->acceptor.async_accept(*socket, asio::redirect_error(asio::use_awaitable, ec));
    if (ec == asio::error::operation_aborted || state->stopped) co_return;
    if (ec) {
      state->log.Warnf("control accept failed: %s", ec.message().c_str());
      continue;
    }
    state->sockets.insert(socket);
    asio::co_spawn(state->strand, Serve(state, socket), asio::detached);
  }
}

asio::awaitable<void> Serve(std::shared_ptr<ControlServerState> state, std::shared_ptr<Socket> socket) {
  asio::streambuf buffer(kMaxControlLineBytes + 1);
  for (;;) {
    boost::system::error_code ec;
    size_t n = co_await asio::async_read_until(*socket, buffer, '\n', asio::redirect_error(asio::use_awaitable, ec));
    if (state->stopped) break;
    bool close_after = false;
    json response;
    if (ec == asio::error::not_found) {
      response = ErrorResponse(Status::InvalidArgument("request line longer than 64 KiB"));
      close_after = true;
    } else if (ec) {
      break;  // client closed (or the server is stopping)
    } else {
      std::string line(asio::buffers_begin(buffer.data()), asio::buffers_begin(buffer.data()) + n - 1);
      buffer.consume(n);
      json request = json::parse(line, nullptr, /*allow_exceptions=*/false);
      if (request.is_discarded() || !request.is_object()) {
        response = ErrorResponse(Status::InvalidArgument("request is not a JSON object"));
        close_after = true;
      } else {
        response = co_await AwaitCallback<json>(
            [&](auto done) { HandleRequest(state->handlers, request, std::move(done)); });
      }
    }
    std::string out = response.dump(-1, ' ', false, json::error_handler_t::replace) + "\n";
    co_await asio::async_write(*socket, asio::buffer(out), asio::redirect_error(asio::use_awaitable, ec));
    if (ec || close_after) break;
  }
  boost::system::error_code ignored;
  socket->close(ignored);
  state->sockets.erase(socket);
}

}  // namespace

ControlServer::ControlServer(asio::io_context& io, ControlHandlers handlers, Logger log)
    : state_(std::make_shared<ControlServerState>(io, std::move(handlers), std::move(log))) {}

ControlServer::~ControlServer() { Stop(); }

Status ControlServer::Listen(const std::string& path) {
  std::filesystem::path parent = std::filesystem::path(path).parent_path();
  std::error_code fec;
  if (!parent.empty() && !std::filesystem::exists(parent, fec)) {
    std::filesystem::create_directories(parent, fec);
    if (fec) return Status::IoError("create " + parent.string() + ": " + fec.message());
    ::chmod(parent.c_str(), 0755);
  }
  struct stat st {};
  if (::lstat(path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) return Status::AlreadyExists(path + " exists and is not a socket");
    ::unlink(path.c_str());
  }
  boost::system::error_code ec;
  asio::local::stream_protocol::endpoint endpoint(path);
  Acceptor& acceptor = state_->acceptor;
  acceptor.open(endpoint.protocol(), ec);
  // Bind with a restrictive umask so the socket is never briefly world-accessible.
  mode_t old_mask = ::umask(0177);
  if (!ec) acceptor.bind(endpoint, ec);
  ::umask(old_mask);
  if (!ec) acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) return Status::IoError("control socket " + path + ": " + ec.message());
  ::chmod(path.c_str(), 0600);
  state_->path = path;
  state_->log.Infof("control socket at %s", path.c_str());
  asio::co_spawn(state_->strand, AcceptLoop(state_), asio::detached);
  return Status::Ok();
}

void ControlServer::Stop() {
  if (state_->stop_requested.exchange(true)) return;
  asio::post(state_->strand, [state = state_]() {
    state->stopped = true;
    boost::system::error_code ec;
    state->acceptor.close(ec);
    for (const auto& socket : state->sockets) socket->close(ec);
    state->sockets.clear();
    if (!state->path.empty()) ::unlink(state->path.c_str());
    state->unlinked = true;
  });
}

void ControlServer::Handle(const json& request, std::function<void(json)> done) {
  HandleRequest(state_->handlers, request, std::move(done));
}

namespace {

void HandleRequest(const ControlHandlers& handlers, const json& request, std::function<void(json)> done) {
  auto op_it = request.find("op");
  if (op_it == request.end() || !op_it->is_string()) {
    done(ErrorResponse(Status::InvalidArgument("missing \"op\" string")));
    return;
  }
  const std::string op = op_it->get<std::string>();
  const Verb* verb = FindVerb(op);
  if (verb == nullptr) {
    done(ErrorResponse(Status::InvalidArgument("unknown op '" + op + "'")));
    return;
  }
  try {
    verb->handle(VerbCall{op, request, handlers}, [done](Result<json> result) {
      done(result.ok() ? OkResponse(std::move(*result)) : ErrorResponse(result.status()));
    });
  } catch (const std::exception& e) {
    // A handler choked on the request's JSON (wrong types): the caller's error.
    done(ErrorResponse(Status::InvalidArgument(op + ": " + e.what())));
  }
}

}  // namespace

}  // namespace tapmap::control
