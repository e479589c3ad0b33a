// vbd_requests: the control socket's vbd-* operations (PROTOCOL.md) carried out by the
// blkif BackendManager — request JSON to AttachSpec/VbdKey, VbdInfo to JSON.
#pragma once

#include <nlohmann/json.hpp>

#include "tapdisk-map/blkif/backend_manager.h"
#include "tapdisk-map/control/control_server.h"

namespace tapmap::control {

// A ControlHandlers::vbd handler calling `manager`, which must outlive it.
std::function<void(const std::string& op, const nlohmann::json& request, JsonReply reply)> MakeVbdHandler(
    blkif::BackendManager& manager);

// The PROTOCOL.md `Vbd` object.
nlohmann::json VbdToJson(const blkif::VbdInfo& info);

// Parses domid/devid/layout of a request (kInvalidArgument naming the bad field).
Result<blkif::VbdKey> ParseVbdKey(const nlohmann::json& request);

}  // namespace tapmap::control
