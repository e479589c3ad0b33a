// DomainInfo (one side of the Xen seam): whether a domain still exists. A backend asks
// it to tell a dead frontend from a slow one.
#pragma once

#include "common/status.h"
#include "tapdisk-map/xen/grant_access.h"

namespace tapmap::xen {

class DomainInfo {
 public:
  virtual ~DomainInfo() = default;
  // True if `domid` exists and is not dying. Thread-safe.
  virtual Result<bool> IsAlive(DomainId domid) = 0;
};

}  // namespace tapmap::xen
