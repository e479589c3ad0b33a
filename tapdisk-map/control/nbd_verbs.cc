// The nbd-* verbs of the control socket: list the NBD listeners, add one serving a
// single volume as its default export, remove one (PROTOCOL.md). They check the
// request's arguments and call the daemon's NBD hooks in ControlHandlers; parsing the
// address and running the listener are the NBD server's business.
#include "tapdisk-map/control/verb_table.h"

namespace tapmap::control {

namespace {

using json = nlohmann::json;

// The non-empty string argument `name`, or nullptr.
const json* NonEmptyString(const json& request, const char* name) {
  auto it = request.find(name);
  if (it == request.end() || !it->is_string() || it->get_ref<const std::string&>().empty()) return nullptr;
  return &*it;
}

Status NotAvailable(const VerbCall& call) {
  return Status::NotSupported(std::string(call.op) + " is not available in this daemon");
}

Status BadAddress(const VerbCall& call) {
  return Status::InvalidArgument(std::string(call.op) + ": \"address\" must be a non-empty string");
}

void ReplyStatus(const Status& s, const JsonReply& reply) {
  if (s.ok()) {
    reply(json::object());
  } else {
    reply(s);
  }
}

void List(const VerbCall& call, JsonReply reply) {
  json exports = call.handlers.nbd_exports ? call.handlers.nbd_exports() : json::array();
  reply(json{{"exports", std::move(exports)}});
}

void Listen(const VerbCall& call, JsonReply reply) {
  if (!call.handlers.nbd_listen) return reply(NotAvailable(call));
  const json* address = NonEmptyString(call.request, "address");
  if (address == nullptr) return reply(BadAddress(call));
  const json* volume = NonEmptyString(call.request, "export");
  if (volume == nullptr) return reply(Status::InvalidArgument("nbd-listen: \"export\" must be a volume name"));
  ReplyStatus(call.handlers.nbd_listen(address->get<std::string>(), volume->get<std::string>()), reply);
}

void Unlisten(const VerbCall& call, JsonReply reply) {
  if (!call.handlers.nbd_unlisten) return reply(NotAvailable(call));
  const json* address = NonEmptyString(call.request, "address");
  if (address == nullptr) return reply(BadAddress(call));
  ReplyStatus(call.handlers.nbd_unlisten(address->get<std::string>()), reply);
}

constexpr Verb kNbdVerbs[] = {
    {"nbd-list", "—", R"({"exports": [{"address", "volumes_open", "connections", ["export"]}, …]})", &List},
    {"nbd-listen", "address (unix:PATH or tcp:HOST:PORT), export (a volume name)",
     "{} once listening, serving that one volume as the default export", &Listen},
    {"nbd-unlisten", "address", "{} once the listener is closed and its socket file removed", &Unlisten},
};

}  // namespace

std::span<const Verb> NbdVerbs() { return kNbdVerbs; }

}  // namespace tapmap::control
