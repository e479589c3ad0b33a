// ControlHandlers: what the daemon plugs into its control socket — one hook per thing
// a verb needs from the engine, the NBD server or the blkif back end. The verbs
// (verb_table.h) read the request's arguments and call these hooks; the control
// library itself knows nothing of the engine or Xen. A hook left null makes its verbs
// answer as PROTOCOL.md says for a daemon without that part (not-supported, or an
// empty list for nbd-list).
//
// Threading: hooks are called on a control connection's strand; replies (JsonReply)
// may be given later, from any thread.
#pragma once

#include <functional>
#include <nlohmann/json.hpp>
#include <string>

#include "common/status.h"

namespace tapmap::control {

// Replies to an operation: the result object (merged into the `{"ok": true, ...}`
// response) or the error.
using JsonReply = std::function<void(Result<nlohmann::json>)>;

// A vbd-* verb's hook: gets the whole request (its arguments are parsed against the
// blkif back end's types, in vbd_requests.cc) and must call `reply` exactly once.
using VbdHook = std::function<void(const nlohmann::json& request, JsonReply reply)>;

// The vbd-* verbs' hooks (PROTOCOL.md), all set by MakeVbdHandlers (vbd_requests.h)
// or all null: Xen serving is not enabled in this daemon, every vbd-* op answers
// not-supported.
struct VbdHandlers {
  VbdHook list;
  VbdHook attach;
  VbdHook detach;
  VbdHook pause;
  VbdHook resume;
};

struct ControlHandlers {
  // `stats`: the engine's counters (PROTOCOL.md `Stats`). Null: not-supported.
  std::function<Result<nlohmann::json>()> stats;
  // `nbd-list`: the array of {"address", "volumes_open", ...}. Null: empty list.
  std::function<nlohmann::json()> nbd_exports;
  // `nbd-listen` (address, export) / `nbd-unlisten` (address): add or remove an NBD
  // listener serving one volume as its default export. Null: not-supported.
  std::function<Status(const std::string& address, const std::string& volume)> nbd_listen;
  std::function<Status(const std::string& address)> nbd_unlisten;
  // `volume-qos`: applies `limits` (QosLimits keys, a partial update over the volume's
  // current limits, or over all-zero ones when `reset`; null: no change) and answers
  // {"volume", "limits"} with the limits now in force. Null: not-supported.
  std::function<Result<nlohmann::json>(const std::string& volume, const nlohmann::json* limits, bool reset)>
      volume_qos;
  // volume-flatten (volume, rate in bytes/s, 0 = unbounded): starts a flatten job (or
  // finds the running one) and replies {"flatten": FlattenStatus}.
  std::function<void(const std::string& volume, uint64_t rate, JsonReply reply)> volume_flatten;
  // volume-flatten-status / volume-flatten-cancel: {"flatten": FlattenStatus}.
  std::function<Result<nlohmann::json>(const std::string& volume)> volume_flatten_status;
  std::function<Result<nlohmann::json>(const std::string& volume)> volume_flatten_cancel;
  // vbd-list / vbd-attach / vbd-detach / vbd-pause / vbd-resume.
  VbdHandlers vbd;
};

}  // namespace tapmap::control
