// Compiled as gnu++20: xenctrl.h needs GNU extensions (anonymous unions, aligned attributes).
#include "tapdisk-map/xen/real_domain_info.h"

#include <cerrno>

extern "C" {
#include <xenctrl.h>
}

namespace tapmap::xen {

Result<std::unique_ptr<RealDomainInfo>> RealDomainInfo::Open(ToollogBridge& log) {
  xc_interface* xc = xc_interface_open(log.get(), log.get(), 0);
  if (xc == nullptr) {
    int err = errno;
    if (err == ENOENT) {
      return Status::Unavailable("no Xen hypervisor interface: /dev/xen/privcmd missing — run in dom0");
    }
    return Status::FromErrno("open xen control interface", err);
  }
  return std::unique_ptr<RealDomainInfo>(new RealDomainInfo(xc));
}

RealDomainInfo::~RealDomainInfo() { xc_interface_close(static_cast<xc_interface*>(xc_)); }

Result<bool> RealDomainInfo::IsAlive(DomainId domid) {
  xc_dominfo_t info{};
  int n = xc_domain_getinfo(static_cast<xc_interface*>(xc_), domid, 1, &info);
  if (n < 0) return Status::FromErrno("xc_domain_getinfo", errno);
  return n == 1 && info.domid == domid && !info.dying && !info.shutdown;
}

}  // namespace tapmap::xen
