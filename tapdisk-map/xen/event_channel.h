// Event channels (one side of the Xen seam): binding a port another domain allocated
// for us, notifying it, and waiting for its notifications on a pollable fd.
//
// Implemented by RealEventChannelBinder (libxenevtchn, /dev/xen/evtchn) and by the
// simulator (eventfd pairs).
//
// Threading: an EventChannel is used by one thread at a time (its ring's strand);
// Notify() may be called from any thread. The binder is thread-safe.
#pragma once

#include <cstdint>
#include <memory>

#include "common/status.h"
#include "tapdisk-map/xen/grant_access.h"

namespace tapmap::xen {

using EventPort = uint32_t;

// A bound interdomain port; unbound on destruction.
class EventChannel {
 public:
  virtual ~EventChannel() = default;
  EventChannel() = default;
  EventChannel(const EventChannel&) = delete;
  EventChannel& operator=(const EventChannel&) = delete;

  virtual EventPort local_port() const = 0;
  // Sends a notification to the other end.
  virtual Status Notify() = 0;
  // Becomes readable when a notification may be pending. Owned by this object. Poll
  // it (asio / epoll), then call ConsumePending().
  virtual int fd() const = 0;
  // Takes the pending notification (if any) and unmasks the port so the next one is
  // delivered. Returns true if one was pending. Never blocks.
  virtual Result<bool> ConsumePending() = 0;
};

class EventChannelBinder {
 public:
  virtual ~EventChannelBinder() = default;
  // Binds to `remote_port` of domain `domid` (a port that domain allocated for us).
  virtual Result<std::unique_ptr<EventChannel>> BindInterdomain(DomainId domid,
                                                                EventPort remote_port) = 0;
};

}  // namespace tapmap::xen
