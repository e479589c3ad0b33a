// The daemon verbs of the control socket: `ping` (is the daemon there, which version,
// which pid) and `stats` (the engine's counters through ControlHandlers::stats), as
// PROTOCOL.md specifies them.
#include <unistd.h>

#include "tapdisk-map/control/verb_table.h"

#ifndef TAPMAP_VERSION
#define TAPMAP_VERSION "unknown"
#endif

namespace tapmap::control {

namespace {

using json = nlohmann::json;

void Ping(const VerbCall&, JsonReply reply) {
  reply(json{{"version", TAPMAP_VERSION}, {"pid", static_cast<int64_t>(::getpid())}});
}

void Stats(const VerbCall& call, JsonReply reply) {
  if (!call.handlers.stats) {
    reply(Status::NotSupported("statistics are not available"));
    return;
  }
  Result<json> stats = call.handlers.stats();
  if (!stats.ok()) {
    reply(stats.status());
    return;
  }
  reply(json{{"stats", std::move(*stats)}});
}

constexpr Verb kDaemonVerbs[] = {
    {"ping", "—", R"({"version": "<tapmap version>", "pid": N})", &Ping},
    {"stats", "—", R"({"stats": Stats}: the engine's counters)", &Stats},
};

}  // namespace

std::span<const Verb> DaemonVerbs() { return kDaemonVerbs; }

}  // namespace tapmap::control
