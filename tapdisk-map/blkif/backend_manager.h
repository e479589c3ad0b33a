// BackendManager: the blkif back end of tapdisk-map. It serves xen-blkfront rings of
// guests for the virtual block devices (VBDs) the toolstack creates in xenstore, and
// is what the control server's vbd-* operations call (control/PROTOCOL.md).
//
// How a VBD comes to be served (xl 4.17, disk with backendtype=phy and
// script=block-tapmap):
//  1. libxl writes the backend directory /local/domain/<self>/backend/vbd/<domid>/<devid>
//     (or .../backend/vbd3/...) and the guest's device/vbd/<devid>. The manager
//     watches backend/vbd and backend/vbd3; a new device whose `script` node ends in
//     "block-tapmap" is taken on at once: features are published and the backend goes
//     to InitWait (libxl waits up to 10 s for that before running the script).
//  2. The hotplug script calls vbd-attach (Attach below): the volume named by `params`
//     / the attach's `volume` is opened through the engine. Failure surfaces there (the
//     script reports hotplug-error). A device with another script can also be taken on
//     by an explicit Attach.
//  3. When the frontend is Initialised/Connected and the volume is open, the rings are
//     mapped and bound and the backend goes Connected.
//  Close, reconnect, frontend death and a restart of this daemon (all state is re-read
//  from xenstore; attached volumes are remembered in the backend's `tapmap-volume` and
//  `tapmap-mode` nodes) are handled as described in blkif/README.md.
//
// Threading: all methods may be called from any thread; callbacks are posted to `io`
// and never run inline. The manager's own work runs on `io` threads.
#pragma once

#include <boost/asio/io_context.hpp>
#include <compare>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "common/logging.h"
#include "common/status.h"
#include "tapdisk-map/blkif/inflight_budget.h"
#include "tapdisk-map/blkif/persistent_grant_quota.h"
#include "tapdisk-map/engine/block_device.h"
#include "tapdisk-map/xen/xen_platform.h"

namespace tapmap::blkif {

// Which xenstore directory a VBD lives in: backend/vbd (xl's phy/script disks) or
// backend/vbd3 (tapdisk3-style).
enum class Layout : uint8_t { kVbd, kVbd3 };
// "vbd" / "vbd3".
const char* LayoutName(Layout layout);
// Inverse of LayoutName; kInvalidArgument otherwise.
Result<Layout> ParseLayout(std::string_view name);

// Identifies a VBD: guest domain, device id (xenstore devid, e.g. 51712 = xvda) and
// layout.
struct VbdKey {
  xen::DomainId domid = 0;
  uint32_t devid = 0;
  Layout layout = Layout::kVbd;
  auto operator<=>(const VbdKey&) const = default;
};

// What vbd-attach asks for.
struct AttachSpec {
  VbdKey key;
  std::string volume;        // volume name for the engine's BlockDeviceOpener
  bool read_only = false;    // mode "r"
  uint32_t sector_size = 512;  // logical sector size announced to the guest: 512 or 4096
};

// One connected queue (ring) of a vbd: totals and the ring's indices, which tell
// at a glance whether a stalled guest is waiting on us or we on it.
struct QueueStatus {
  uint64_t requests = 0, rejected = 0, notifications = 0, wakeups = 0;
  uint64_t budget_waits = 0;  // times the ring stopped consuming for want of in-flight bytes
  uint64_t spurious = 0, storms = 0, damped = 0;  // event-storm damping (ring_worker.h StormDamping)
  uint32_t in_flight = 0;
  uint32_t req_prod = 0, req_cons = 0, req_event = 0;      // requests: guest's, ours, guest's wake-up mark
  uint32_t rsp_prod = 0, rsp_prod_pvt = 0, rsp_event = 0;  // responses: published, written, guest's mark
};

// What vbd-list / vbd-attach report (the `Vbd` object of control/PROTOCOL.md).
struct VbdInfo {
  VbdKey key;
  std::string volume;        // empty until attached
  bool read_only = false;
  std::string backend_path;  // "backend/vbd/1/51712" (relative to the backend domain)
  std::string state;         // "initialising", "initwait", "connected", "closing", "closed", ...
  bool paused = false;
  bool standby = false;      // the volume is a standby rw open (live migration)
  uint32_t rings = 0;        // queues connected
  // The disk's in-flight request data (inflight_budget.h): now, the most at once, the
  // limit, and how often a ring stopped consuming for want of bytes.
  uint64_t inflight_bytes = 0, inflight_bytes_peak = 0, inflight_bytes_limit = 0, budget_waits = 0;
  std::string protocol;      // "native", "x86_32-abi", "x86_64-abi" once connected; else ""
  std::vector<QueueStatus> queues;  // one per connected ring
};

// Tunables (defaults are what the daemon uses).
struct BackendOptions {
  uint32_t max_ring_page_order = 4;         // advertised max-ring-page-order (16 pages)
  uint32_t max_queues = 4;                  // advertised multi-queue-max-queues
  uint32_t max_indirect_segments = 256;     // advertised feature-max-indirect-segments
  bool persistent_grants = true;            // advertise feature-persistent
  uint32_t persistent_grants_per_ring = 1024;  // LRU bound of persistently mapped grants
  // Persistently mapped grants of all rings of all disks (each is one mapping, counted
  // against vm.max_map_count); beyond it grants are copied per request instead.
  uint64_t persistent_grants_per_host = 16384;
  uint32_t max_requests_per_wakeup = 64;    // bounded work per ring wakeup
  // Request data held for guests at once (private buffers of requests being executed),
  // per disk and for all disks of this daemon; beyond it rings stop consuming.
  uint64_t inflight_bytes_per_disk = 64ull << 20;
  uint64_t inflight_bytes_per_host = 512ull << 20;
  std::vector<std::string> script_suffixes = {"block-tapmap"};  // devices taken on sight
};

// What every disk of this daemon shares (thread-safe to read at any time).
struct HostStatus {
  InflightBudget::Usage inflight;                // request data held for guests
  PersistentGrantQuota::Usage persistent_grants;  // persistently mapped grants
};

class BackendManager {
 public:
  // `io`, `platform` and `opener` must outlive the manager. Call Start() before use.
  BackendManager(boost::asio::io_context& io, xen::XenPlatform& platform,
                 engine::BlockDeviceOpener& opener, BackendOptions options, Logger logger);
  // Must be Stop()ped first (and the io_context run until `done`).
  ~BackendManager();
  BackendManager(const BackendManager&) = delete;
  BackendManager& operator=(const BackendManager&) = delete;

  // Registers the xenstore watches and takes on the devices already present
  // (including those of a previous run of this daemon, which are re-attached).
  // Returns an error if the watches cannot be registered.
  Status Start();

  // Stops serving: rings stop consuming, in-flight requests complete and are
  // answered, mappings and ports are released, volumes closed. Xenstore is left as is
  // (a restarted daemon takes over). `done` runs once everything is released.
  void Stop(std::function<void()> done);

  // vbd-attach: opens `spec.volume` (read-only if the spec or the backend's `mode`
  // node says so) and serves the device. Replies once the volume is
  // open and the backend is in InitWait or later. Errors: kNotFound if the backend
  // directory does not exist in xenstore; kAlreadyExists if attached to another
  // volume; the opener's error (kBusy, kNotFound...) if the volume cannot be opened.
  // Attaching again with the same volume and mode is a no-op returning the VBD.
  void Attach(AttachSpec spec, std::function<void(Result<VbdInfo>)> done);

  // vbd-detach: disconnects the frontend (in-flight requests are completed first),
  // writes Closed, closes the volume and stops serving the device. kNotFound if the
  // device is not served.
  void Detach(VbdKey key, std::function<void(Status)> done);

  // vbd-pause: stops consuming requests, waits for the in-flight ones, flushes the
  // volume. vbd-resume: consumes again. kNotFound if not served; Resume of a device
  // that is not paused is a no-op.
  void Pause(VbdKey key, std::function<void(Status)> done);
  void Resume(VbdKey key, std::function<void(Status)> done);

  // vbd-list: every served device.
  void List(std::function<void(std::vector<VbdInfo>)> done);
  // The host-wide budgets' usage (vbd-list's "host"). Any thread; returns at once.
  HostStatus Host() const;

  class Impl;

 private:
  std::shared_ptr<Impl> impl_;
};

}  // namespace tapmap::blkif
