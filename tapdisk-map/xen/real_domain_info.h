// RealDomainInfo: DomainInfo over libxenctrl (xc_domain_getinfo), used on a Xen host.
#pragma once

#include <memory>

#include "tapdisk-map/xen/domain_info.h"
#include "tapdisk-map/xen/toollog_bridge.h"

namespace tapmap::xen {

class RealDomainInfo : public DomainInfo {
 public:
  // Opens the hypervisor control interface. `log` must outlive the object. Fails with
  // kUnavailable when /dev/xen/privcmd is missing.
  static Result<std::unique_ptr<RealDomainInfo>> Open(ToollogBridge& log);
  ~RealDomainInfo() override;

  Result<bool> IsAlive(DomainId domid) override;

 private:
  explicit RealDomainInfo(void* xc) : xc_(xc) {}
  void* const xc_;  // xc_interface*, owned (xenctrl.h is kept out of this header)
};

}  // namespace tapmap::xen
