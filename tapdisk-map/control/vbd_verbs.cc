// The vbd-* verbs of the control socket (PROTOCOL.md): each hands the whole request to
// its hook in ControlHandlers::vbd — the blkif back end, whose types its arguments are
// parsed against (vbd_requests.cc) — or, in a daemon serving no Xen rings, answers
// not-supported.
#include "tapdisk-map/control/verb_table.h"

namespace tapmap::control {

namespace {

template <VbdHook VbdHandlers::*kHook>
void CallBackend(const VerbCall& call, JsonReply reply) {
  const VbdHook& hook = call.handlers.vbd.*kHook;
  if (!hook) {
    reply(Status::NotSupported(std::string(call.op) +
                               ": Xen block serving is not enabled in this tapdisk-map (no blkif back end)"));
    return;
  }
  hook(call.request, std::move(reply));
}

constexpr const char* kKey = "domid, devid, layout (\"vbd\" or \"vbd3\", default \"vbd\")";

constexpr Verb kVbdVerbs[] = {
    {"vbd-list", "—", R"({"vbds": [Vbd, …]})", &CallBackend<&VbdHandlers::list>},
    {"vbd-attach", "domid, devid, volume, mode (\"r\"/\"w\", default \"w\"), layout, sector_size (512 or 4096)",
     R"({"vbd": Vbd} once the volume is open and the backend is in InitWait or later)",
     &CallBackend<&VbdHandlers::attach>},
    {"vbd-detach", kKey, "{} once the frontend was disconnected and the volume closed",
     &CallBackend<&VbdHandlers::detach>},
    {"vbd-pause", kKey, "{} once the ring is quiesced and the volume flushed", &CallBackend<&VbdHandlers::pause>},
    {"vbd-resume", kKey, "{}", &CallBackend<&VbdHandlers::resume>},
};

}  // namespace

std::span<const Verb> VbdVerbs() { return kVbdVerbs; }

}  // namespace tapmap::control
