// RealEventChannelBinder: EventChannelBinder over libxenevtchn (/dev/xen/evtchn), used
// on a Xen host. Each bound port gets its own evtchn handle, hence its own fd, so every
// ring waits on its own descriptor.
#pragma once

#include <memory>

#include "tapdisk-map/xen/event_channel.h"
#include "tapdisk-map/xen/toollog_bridge.h"

namespace tapmap::xen {

class RealEventChannelBinder : public EventChannelBinder {
 public:
  // Checks that /dev/xen/evtchn can be opened. `log` must outlive the binder and
  // every channel it binds. Fails with kUnavailable when the device is missing.
  static Result<std::unique_ptr<RealEventChannelBinder>> Open(ToollogBridge& log);

  Result<std::unique_ptr<EventChannel>> BindInterdomain(DomainId domid, EventPort remote_port) override;

 private:
  explicit RealEventChannelBinder(ToollogBridge& log) : log_(log) {}
  ToollogBridge& log_;
};

}  // namespace tapmap::xen
