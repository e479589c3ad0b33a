// ControlServer: tapdisk-map's local control socket — JSON lines over a unix stream
// socket, exactly as specified in PROTOCOL.md next to this file (that document is the
// contract with the `tapmap` CLI and the hotplug script).
//
// The server frames, parses and answers requests; which op does what is the verb
// table (verb_table.h, one file per verb family), and what the verbs need from the
// daemon is supplied as ControlHandlers (control_handlers.h), so this file knows
// nothing of the engine or Xen.
//
// Threading: Listen/Stop from any thread; connections run on `io` (one strand each).
// Handlers are called on a connection's strand and may complete on any thread.
//
// Lifetime: the accept loop and the connections share the server's state, never the
// ControlServer object, so the object may be destroyed at any time, from any thread,
// even while `io` runs (destruction implies Stop). A handler already running, or an
// asynchronous vbd reply still pending, completes afterwards on `io`; what handlers
// reference must therefore stay valid until `io`'s threads have stopped (or until the
// daemon has waited for its own vbd work, as tapdisk-map's shutdown does).
#pragma once

#include <boost/asio/io_context.hpp>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "common/logging.h"
#include "common/status.h"
#include "tapdisk-map/control/control_handlers.h"

namespace tapmap::control {

// Longest request line accepted (PROTOCOL.md: 64 KiB).
inline constexpr size_t kMaxControlLineBytes = 64 * 1024;

// The server's state, shared with its accept loop and every connection; defined in
// control_server.cc.
struct ControlServerState;

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

  // Stops accepting, closes open connections and removes the socket file. Takes
  // effect on `io` shortly after the call; from then on no handler is called for a new
  // request. Idempotent.
  void Stop();

  // Handles one request object and produces the response object (no I/O); exposed
  // for tests. `done` gets the full response ({"ok": ...}).
  void Handle(const nlohmann::json& request, std::function<void(nlohmann::json)> done);

 private:
  std::shared_ptr<ControlServerState> state_;
};

// The error response for `status`:
// {"ok": false, "error": {"code": "<name>", "message": "..."}}.
nlohmann::json ErrorResponse(const Status& status);

}  // namespace tapmap::control
