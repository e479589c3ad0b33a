// XenPlatform: the whole Xen seam as one bundle handed to the backend. Built either by
// OpenRealXenPlatform (real_platform.h, on a Xen dom0) or by the simulator
// (sim_platform.h, tests and benchmarks). Code above the seam receives a XenPlatform&
// and never learns which one it got.
#pragma once

#include <memory>

#include "tapdisk-map/xen/domain_info.h"
#include "tapdisk-map/xen/event_channel.h"
#include "tapdisk-map/xen/grant_access.h"
#include "tapdisk-map/xen/xenstore.h"

namespace tapmap::xen {

struct XenPlatform {
  // Whatever the implementation needs kept alive longer than the objects below
  // (declared first, so destroyed last).
  std::shared_ptr<void> keep_alive;
  // The domain this backend runs in (0 for dom0); backend paths live under
  // /local/domain/<backend_domid>/backend/.
  DomainId backend_domid = 0;
  std::unique_ptr<XenStore> xenstore;
  std::unique_ptr<GrantAccess> grants;
  std::unique_ptr<EventChannelBinder> event_channels;
  std::unique_ptr<DomainInfo> domains;
};

}  // namespace tapmap::xen
