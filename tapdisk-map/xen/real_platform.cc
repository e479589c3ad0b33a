#include "tapdisk-map/xen/real_platform.h"

#include "tapdisk-map/xen/real_domain_info.h"
#include "tapdisk-map/xen/real_event_channel.h"
#include "tapdisk-map/xen/real_grant_access.h"
#include "tapdisk-map/xen/real_xenstore.h"

namespace tapmap::xen {


Result<XenPlatform> OpenRealXenPlatform(const Logger& logger, DomainId backend_domid) {
  auto bridge = std::make_shared<ToollogBridge>(logger.WithContext("lib", "xen"));
  auto grants = RealGrantAccess::Open(*bridge);
  if (!grants.ok()) return grants.status();
  auto evtchn = RealEventChannelBinder::Open(*bridge);
  if (!evtchn.ok()) return evtchn.status();
  auto domains = RealDomainInfo::Open(*bridge);
  if (!domains.ok()) return domains.status();
  auto store = RealXenStore::Open(/*socket_only=*/false);
  if (!store.ok()) return store.status();

  XenPlatform p;
  p.backend_domid = backend_domid;
  p.xenstore = std::move(*store);
  p.grants = std::move(*grants);
  p.event_channels = std::move(*evtchn);
  p.domains = std::move(*domains);
  p.keep_alive = std::move(bridge);  // the objects above log through it
  return p;
}

}  // namespace tapmap::xen
