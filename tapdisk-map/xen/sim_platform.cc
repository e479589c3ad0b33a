#include "tapdisk-map/xen/sim_platform.h"

namespace tapmap::xen {

namespace {

class SimGrantAccess : public GrantAccess {
 public:
  SimGrantAccess(std::shared_ptr<SimulatedHypervisor> hv, DomainId self) : hv_(std::move(hv)), self_(self) {}
  Result<std::unique_ptr<GrantMapping>> Map(DomainId domid, std::span<const GrantRef> refs,
                                            bool writable) override {
    return hv_->Map(self_, domid, refs, writable);
  }
  Status CopyIn(DomainId domid, std::span<const GrantCopySegment> segments) override {
    return hv_->Copy(self_, domid, segments, /*into_local=*/true);
  }
  Status CopyOut(DomainId domid, std::span<const GrantCopySegment> segments) override {
    return hv_->Copy(self_, domid, segments, /*into_local=*/false);
  }

 private:
  std::shared_ptr<SimulatedHypervisor> hv_;
  const DomainId self_;
};

class SimEventChannelBinder : public EventChannelBinder {
 public:
  SimEventChannelBinder(std::shared_ptr<SimulatedHypervisor> hv, DomainId self)
      : hv_(std::move(hv)), self_(self) {}
  Result<std::unique_ptr<EventChannel>> BindInterdomain(DomainId domid, EventPort remote_port) override {
    return hv_->BindInterdomain(self_, domid, remote_port);
  }

 private:
  std::shared_ptr<SimulatedHypervisor> hv_;
  const DomainId self_;
};

class SimDomainInfo : public DomainInfo {
 public:
  explicit SimDomainInfo(std::shared_ptr<SimulatedHypervisor> hv) : hv_(std::move(hv)) {}
  Result<bool> IsAlive(DomainId domid) override { return hv_->IsAlive(domid); }

 private:
  std::shared_ptr<SimulatedHypervisor> hv_;
};

}  // namespace

XenPlatform MakeSimulatedPlatform(std::shared_ptr<SimulatedHypervisor> hv, DomainId backend_domid,
                                  std::unique_ptr<XenStore> xenstore) {
  XenPlatform p;
  p.backend_domid = backend_domid;
  p.xenstore = std::move(xenstore);
  p.grants = std::make_unique<SimGrantAccess>(hv, backend_domid);
  p.event_channels = std::make_unique<SimEventChannelBinder>(hv, backend_domid);
  p.domains = std::make_unique<SimDomainInfo>(hv);
  p.keep_alive = std::move(hv);
  return p;
}

}  // namespace tapmap::xen
