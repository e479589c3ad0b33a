// OpenRealXenPlatform: the Xen seam as used on a Xen dom0 (libxenstore, libxengnttab,
// libxenevtchn, libxenctrl).
#pragma once

#include "common/logging.h"
#include "tapdisk-map/xen/xen_platform.h"

namespace tapmap::xen {

// Opens every Xen interface. Without a hypervisor (no /dev/xen/*) it fails with ONE
// kUnavailable error naming the first missing device, e.g. "no Xen hypervisor
// interface: /dev/xen/gntdev missing — run in dom0", and prints nothing itself.
// The libraries' own messages go to `logger` at debug level. `backend_domid` is the
// domain this process runs in (0 in dom0).
Result<XenPlatform> OpenRealXenPlatform(const Logger& logger, DomainId backend_domid = 0);

}  // namespace tapmap::xen
