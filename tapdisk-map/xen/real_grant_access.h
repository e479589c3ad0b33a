// RealGrantAccess: GrantAccess over libxengnttab (/dev/xen/gntdev), used on a Xen host.
#pragma once

#include <memory>

#include "tapdisk-map/xen/grant_access.h"
#include "tapdisk-map/xen/toollog_bridge.h"

struct xengntdev_handle;

namespace tapmap::xen {

class RealGrantAccess : public GrantAccess {
 public:
  // Opens /dev/xen/gntdev. `log` must outlive the returned object. Fails with
  // kUnavailable when the device is missing (not on a Xen dom0).
  static Result<std::unique_ptr<RealGrantAccess>> Open(ToollogBridge& log);
  ~RealGrantAccess() override;

  Result<std::unique_ptr<GrantMapping>> Map(DomainId domid, std::span<const GrantRef> refs,
                                            bool writable) override;
  Status CopyIn(DomainId domid, std::span<const GrantCopySegment> segments) override;
  Status CopyOut(DomainId domid, std::span<const GrantCopySegment> segments) override;

 private:
  explicit RealGrantAccess(xengntdev_handle* handle) : handle_(handle) {}
  Status Copy(DomainId domid, std::span<const GrantCopySegment> segments, bool in);
  xengntdev_handle* const handle_;  // owned; the gntdev ioctls are thread-safe
};

}  // namespace tapmap::xen
