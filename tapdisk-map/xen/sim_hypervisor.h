// SimulatedHypervisor: the parts of Xen a block backend relies on, simulated in one
// process for tests and benchmarks: domains with their own memory, per-domain grant
// tables, and interdomain event channels.
//
//  - Guest memory is a memfd per domain; a backend's grant mapping mmaps the granted
//    pages of that memfd (MAP_SHARED), so backend and simulated guest really share the
//    pages, and a read-only grant is mapped PROT_READ.
//  - Each domain has a grant table. Mapping or copying a reference is refused (like Xen
//    does) when the reference was never granted, was revoked, was granted to another
//    domain, or is read-only and write access was asked for. A reference cannot be
//    revoked while mapped (EndAccess fails with kBusy), as with Xen's end-foreign-access.
//  - Event channels are eventfd pairs: the guest allocates an unbound port for the
//    backend's domain; the backend binds it; each side's Notify makes the other's fd
//    readable.
//
// The backend uses it only through the seam (MakeSimulatedPlatform in sim_platform.h);
// simulated guests (tests/support/sim_blkfront.h) use the guest-side calls below.
//
// Threading: all methods are thread-safe. Objects it hands out keep the shared state
// alive, so they may outlive the SimulatedHypervisor object itself.
#pragma once

#include <cstdint>
#include <memory>
#include <span>

#include "common/status.h"
#include "tapdisk-map/xen/event_channel.h"
#include "tapdisk-map/xen/grant_access.h"

namespace tapmap::xen {

class SimulatedHypervisor {
 public:
  SimulatedHypervisor();
  ~SimulatedHypervisor();
  SimulatedHypervisor(const SimulatedHypervisor&) = delete;
  SimulatedHypervisor& operator=(const SimulatedHypervisor&) = delete;

  // --- domains ---
  // Creates domain `domid` with `memory_pages` zeroed 4 KiB pages. kAlreadyExists if
  // it exists.
  Status CreateDomain(DomainId domid, size_t memory_pages);
  // Destroys a domain: its grant table and event channels vanish (later maps, copies
  // and notifications involving them fail); existing mappings stay readable as with
  // Xen (the pages are only freed when unmapped).
  void DestroyDomain(DomainId domid);
  bool IsAlive(DomainId domid) const;

  // --- guest side ---
  // Address of page `pfn` of the domain's memory in this process (the guest's view);
  // valid while the SimulatedHypervisor lives. kNotFound / kInvalidArgument.
  Result<uint8_t*> GuestPage(DomainId domid, size_t pfn) const;
  // Grants domain `grantee` access to page `pfn` of `granter`; returns the reference.
  Result<GrantRef> GrantAccess(DomainId granter, DomainId grantee, size_t pfn, bool read_only);
  // Revokes a grant. kBusy while the grantee still maps it; kNotFound if not granted.
  Status EndAccess(DomainId granter, GrantRef ref);
  // Allocates an unbound port of `owner` that `remote` may bind; the returned channel
  // is the owner's end (its local_port() is what the guest publishes in xenstore).
  Result<std::unique_ptr<EventChannel>> AllocUnbound(DomainId owner, DomainId remote);

  // --- backend side (used through sim_platform.h) ---
  Result<std::unique_ptr<GrantMapping>> Map(DomainId mapper, DomainId granter,
                                            std::span<const GrantRef> refs, bool writable);
  Status Copy(DomainId copier, DomainId granter, std::span<const GrantCopySegment> segments,
              bool into_local);
  Result<std::unique_ptr<EventChannel>> BindInterdomain(DomainId binder, DomainId remote,
                                                        EventPort remote_port);

  // Number of pages of `granter` currently mapped by anyone (tests check for leaks).
  size_t ActiveMappings(DomainId granter) const;

  struct State;  // shared with the handed-out objects

 private:
  std::shared_ptr<State> state_;
};

}  // namespace tapmap::xen
