// ControlServer: tapdisk-map's local control socket — JSON lines over a unix stream
// socket, exactly as specified in PROTOCOL.md next to this file (that document is the
// contract with the `tapmap` CLI and the hotplug script).
//
// The server parses and answers requests; what the operations do is supplied by the
// daemon as ControlHandlers, so this file knows nothing of the engine or Xen.
//
// Threading: Listen/Stop from any thread; connections run on `io` (one strand each).
// Handlers are called on a connection's strand and may complete on any thread.
#pragma once

#include <utility>  // before asio: boost 1.74's awaitable.hpp needs std::exchange

#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/strand.hpp>
#include <functional>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>
#include <string>

#include "common/logging.h"
#include "common/status.h"

namespace tapmap::control {

// Replies to an asynchronous operation: the result object (merged into the
// `{"ok": true, ...}` response) or the error.
using JsonReply = std::function<void(Result<nlohmann::json>)>;

struct ControlHandlers {
  // `stats`: the engine's counters (PROTOCOL.md `Stats`). Null: not-supported.
  std::function<Result<nlohmann::json>()> stats;
  // `nbd-list`: the array of {"address", "volumes_open", ...}. Null: empty list.
  std::function<nlohmann::json()> nbd_exports;
  // vbd-list / vbd-attach / vbd-detach / vbd-pause / vbd-resume: called with the op
  // name and the whole request; must call `reply` exactly once. Null: every vbd-* op
  // answers not-supported (Xen serving is not enabled in this daemon).
  std::function<void(const std::string& op, const nlohmann::json& request, JsonReply reply)> vbd;
};

// Longest request line accepted (PROTOCOL.md: 64 KiB).
inline constexpr size_t kMaxControlLineBytes = 64 * 1024;

class ControlServer {
 public:
  // `io` must outlive the server.
  ControlServer(boost::asio::io_context& io, ControlHandlers handlers, Logger log);
  ~ControlServer();
  ControlServer(const ControlServer&) = delete;
  ControlServer& operator=(const ControlServer&) = delete;

  // Creates the socket at `path` (mode 0600; the parent directory is created with
  // mode 0755 if missing; a stale socket file is replaced) and starts accepting.
  Status Listen(const std::string& path);

  // Stops accepting, closes open connections and removes the socket file.
  void Stop();

  // Handles one request object and produces the response object (no I/O); exposed
  // for tests. `done` gets the full response ({"ok": ...}).
  void Handle(const nlohmann::json& request, std::function<void(nlohmann::json)> done);

 private:
  boost::asio::awaitable<void> AcceptLoop();
  boost::asio::awaitable<void> Serve(std::shared_ptr<boost::asio::local::stream_protocol::socket> socket);

  boost::asio::io_context& io_;
  boost::asio::strand<boost::asio::io_context::executor_type> strand_;
  const ControlHandlers handlers_;
  Logger log_;
  boost::asio::local::stream_protocol::acceptor acceptor_;
  std::string path_;
  std::mutex mu_;
  bool stopped_ = false;
  std::set<std::shared_ptr<boost::asio::local::stream_protocol::socket>> sockets_;
};

// The error response for `status`:
// {"ok": false, "error": {"code": "<name>", "message": "..."}}.
nlohmann::json ErrorResponse(const Status& status);

}  // namespace tapmap::control
