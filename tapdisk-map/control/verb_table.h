// The control verbs: every op of PROTOCOL.md, once, as a table of name → handler with
// a one-line contract of its arguments and result (blktap's `message_infos[]`). The
// handlers live one file per verb family — daemon_verbs.cc (ping, stats),
// vbd_verbs.cc (vbd-*), nbd_verbs.cc (nbd-*) — and the ControlServer only looks a
// request's op up here, so adding a verb is one table entry and its handler, plus its
// row in PROTOCOL.md (nbd_control_test checks that the two list the same ops).
#pragma once

#include <nlohmann/json.hpp>
#include <span>
#include <string_view>
#include <vector>

#include "tapdisk-map/control/control_handlers.h"

namespace tapmap::control {

// What a verb's handler is called with. References are valid for the call only.
struct VerbCall {
  std::string_view op;              // the verb's name (for messages)
  const nlohmann::json& request;    // the whole request object, "op" included
  const ControlHandlers& handlers;  // the daemon's hooks
};

struct Verb {
  std::string_view name;       // the request's "op"
  std::string_view arguments;  // one line: the arguments it reads ("—" for none)
  std::string_view result;     // one line: what it answers on success
  // Carries out `call` and calls `reply` exactly once, now or later from any thread.
  // Bad arguments are replied as errors naming the field. An exception thrown before
  // replying (nlohmann::json's, for an argument of the wrong JSON type) is answered by
  // the server as invalid-argument naming the op.
  void (*handle)(const VerbCall& call, JsonReply reply);
};

// Each family's verbs, in PROTOCOL.md's order (defined in <family>_verbs.cc).
std::span<const Verb> DaemonVerbs();
std::span<const Verb> VbdVerbs();
std::span<const Verb> NbdVerbs();
std::span<const Verb> VolumeVerbs();

// Every verb: the families above, in that order.
std::vector<const Verb*> AllVerbs();

// The verb called `name`; nullptr if there is none.
const Verb* FindVerb(std::string_view name);

}  // namespace tapmap::control
