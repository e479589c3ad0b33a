// vbd_requests: the hooks of the control socket's vbd-* verbs (vbd_verbs.cc,
// PROTOCOL.md) carried out by the blkif BackendManager — request JSON to
// AttachSpec/VbdKey, VbdInfo to JSON. A library of its own (tapmap_control_vbd) so that
// the control socket builds without the blkif back end.
#pragma once

#include <nlohmann/json.hpp>

#include "tapdisk-map/blkif/backend_manager.h"
#include "tapdisk-map/control/control_handlers.h"

namespace tapmap::control {

// The ControlHandlers::vbd hooks, calling `manager`, which must outlive them.
VbdHandlers MakeVbdHandlers(blkif::BackendManager& manager);

// The PROTOCOL.md `Vbd` object.
nlohmann::json VbdToJson(const blkif::VbdInfo& info);

// The host-wide blkif bounds (vbd-list's `host`) as Prometheus text (tapmap_blkif_*).
std::string BlkifHostToPrometheus(const blkif::HostStatus& host);

// Parses domid/devid/layout of a request (kInvalidArgument naming the bad field).
Result<blkif::VbdKey> ParseVbdKey(const nlohmann::json& request);

}  // namespace tapmap::control
