#include "tapdisk-map/xen/real_event_channel.h"

#include <fcntl.h>

#include <cerrno>

extern "C" {
#include <xenevtchn.h>
}

namespace tapmap::xen {

namespace {

Status OpenError(int err) {
  if (err == ENOENT) {
    return Status::Unavailable("no Xen hypervisor interface: /dev/xen/evtchn missing — run in dom0");
  }
  return Status::FromErrno("open /dev/xen/evtchn", err);
}

class RealEventChannel : public EventChannel {
 public:
  RealEventChannel(xenevtchn_handle* handle, EventPort port) : handle_(handle), port_(port) {}
  ~RealEventChannel() override {
    xenevtchn_unbind(handle_, port_);
    xenevtchn_close(handle_);
  }
  EventPort local_port() const override { return port_; }
  Status Notify() override {
    if (xenevtchn_notify(handle_, port_) != 0) return Status::FromErrno("evtchn notify", errno);
    return Status::Ok();
  }
  int fd() const override { return xenevtchn_fd(handle_); }
  Result<bool> ConsumePending() override {
    xenevtchn_port_or_error_t p = xenevtchn_pending(handle_);
    if (p < 0) {
      if (errno == EAGAIN) return false;
      return Status::FromErrno("evtchn pending", errno);
    }
    if (xenevtchn_unmask(handle_, static_cast<evtchn_port_t>(p)) != 0) {
      return Status::FromErrno("evtchn unmask", errno);
    }
    return static_cast<EventPort>(p) == port_;
  }

 private:
  xenevtchn_handle* const handle_;  // owned
  const EventPort port_;
};

}  // namespace

Result<std::unique_ptr<RealEventChannelBinder>> RealEventChannelBinder::Open(ToollogBridge& log) {
  xenevtchn_handle* h = xenevtchn_open(log.get(), 0);
  if (h == nullptr) return OpenError(errno);
  xenevtchn_close(h);
  return std::unique_ptr<RealEventChannelBinder>(new RealEventChannelBinder(log));
}

Result<std::unique_ptr<EventChannel>> RealEventChannelBinder::BindInterdomain(DomainId domid,
                                                                              EventPort remote_port) {
  xenevtchn_handle* h = xenevtchn_open(log_.get(), 0);
  if (h == nullptr) return OpenError(errno);
  // Non-blocking, so that ConsumePending (a read of the fd) never waits.
  int fd = xenevtchn_fd(h);
  int flags = fcntl(fd, F_GETFL);
  if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0) {
    int err = errno;
    xenevtchn_close(h);
    return Status::FromErrno("evtchn fcntl", err);
  }
  xenevtchn_port_or_error_t port = xenevtchn_bind_interdomain(h, domid, remote_port);
  if (port < 0) {
    int err = errno;
    xenevtchn_close(h);
    return Status::PermissionDenied("bind event channel " + std::to_string(remote_port) +
                                    " of domain " + std::to_string(domid) + ": " +
                                    Status::FromErrno("evtchn", err).message());
  }
  return std::unique_ptr<EventChannel>(new RealEventChannel(h, static_cast<EventPort>(port)));
}

}  // namespace tapmap::xen
