// MakeSimulatedPlatform: the Xen seam over a SimulatedHypervisor (grants, event
// channels, domain liveness) and a given XenStore (in tests: RealXenStore connected to
// a private real xenstored). For tests and benchmarks only.
#pragma once

#include <memory>

#include "tapdisk-map/xen/sim_hypervisor.h"
#include "tapdisk-map/xen/xen_platform.h"

namespace tapmap::xen {

// The backend runs as domain `backend_domid`, which must exist in `hv` (create it
// first, with 0 pages if it grants nothing). `hv` is kept alive by the platform.
XenPlatform MakeSimulatedPlatform(std::shared_ptr<SimulatedHypervisor> hv, DomainId backend_domid,
                                  std::unique_ptr<XenStore> xenstore);

}  // namespace tapmap::xen
