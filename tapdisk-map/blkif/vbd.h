// Vbd: one virtual block device served to a guest — the backend half of the xenbus
// handshake for backend/vbd{,3}/<domid>/<devid> and the rings of its queues.
// Internal to BackendManager (which owns every Vbd and runs them on its strand).
//
// The state machine is level-triggered: Reconcile() re-reads the backend's and
// frontend's nodes and does whatever the current combination requires, so skipped
// states, coalesced watch events and a restart of the daemon (all state re-read) need
// no special path. See blkif/README.md for the nodes and transitions.
//
// Threading: every method must be called on the manager's strand.
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/strand.hpp>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "common/logging.h"
#include "tapdisk-map/blkif/backend_manager.h"
#include "tapdisk-map/blkif/ring_worker.h"

namespace tapmap::blkif {

class Vbd : public std::enable_shared_from_this<Vbd> {
 public:
  using Strand = boost::asio::strand<boost::asio::io_context::executor_type>;
  // `backend_path` is absolute. Everything referenced must outlive the Vbd.
  // `host_inflight` is the budget of all disks (the VBD takes an account of
  // options.inflight_bytes_per_disk on it), `grant_quota` their cap on persistent grants.
  Vbd(boost::asio::io_context& io, Strand& strand, xen::XenPlatform& platform, const BackendOptions& options,
      std::shared_ptr<InflightBudget> host_inflight, std::shared_ptr<PersistentGrantQuota> grant_quota, VbdKey key,
      std::string backend_path, Logger logger);
  ~Vbd();

  const VbdKey& key() const { return key_; }
  const std::string& backend_path() const { return be_; }
  // The token of this VBD's frontend-state watch (also used to route events).
  std::string frontend_watch_token() const;

  // Re-reads xenstore and acts. Calls are coalesced by the manager.
  void Reconcile();

  // Takes the opened volume; Reconcile() then connects when the frontend is ready.
  // Records the volume in the backend's tapmap-volume / tapmap-mode nodes.
  void SetDevice(std::shared_ptr<engine::BlockDevice> device, const AttachSpec& spec);
  bool attached() const { return device_ != nullptr; }
  const std::string& volume() const { return volume_; }
  bool read_only() const { return read_only_; }

  // Disconnects the rings (in-flight requests answered first), writes Closed, closes
  // the volume, removes the tapmap-* nodes and the frontend watch. `done` on the strand.
  void Detach(std::function<void()> done);
  // Stops the rings and closes the volume, leaving xenstore untouched (shutdown).
  void Shutdown(std::function<void()> done);
  void Pause(std::function<void(Status)> done);
  void Resume();

  VbdInfo Info() const;
  // True once the VBD has published its features and reached InitWait or later.
  bool past_initwait() const { return state_ >= XenbusStateInitWait; }

 private:
  struct FrontendView;
  Status EnsureFrontendWatch();
  Status PublishFeatures();
  void Connect(const FrontendView& fe);
  void Disconnect(std::function<void()> then);
  void WriteState(int state);
  // Runs `body` in a xenstore transaction that first checks the backend directory
  // still exists: kNotFound, with nothing written, once the toolstack has removed it
  // (a plain write would re-create the directory and keep the device alive). A
  // removal racing the transaction makes it conflict and be retried.
  Status UpdateBackend(const std::function<Status(xen::TransactionId tx)>& body);
  void Fatal(const Status& status);
  // Logs a line the guest can cause at will (a fatal error naming its xenstore values,
  // its state changes): through guest_log_limiter_, so at most 10 a minute per disk
  // whatever the guest does; the next line allowed says how many were dropped.
  void GuestLog(LogLevel level, const char* fmt, ...) __attribute__((format(printf, 3, 4)));
  void OnRingBroken(const Status& status);
  void OnResize(uint64_t new_size);
  std::string Node(const std::string& name) const { return be_ + "/" + name; }

  boost::asio::io_context& io_;
  Strand& strand_;
  xen::XenPlatform& platform_;
  const BackendOptions& options_;
  const VbdKey key_;
  const std::string be_;
  Logger logger_;
  std::shared_ptr<RateLimiter> reject_limiter_;
  RateLimiter guest_log_limiter_{10, std::chrono::seconds(60)};
  const std::shared_ptr<InflightBudget::Account> inflight_;  // shared by the rings
  const std::shared_ptr<PersistentGrantQuota> grant_quota_;   // shared by every disk

  std::string fe_;  // frontend path, once read
  xen::DomainId fe_domid_ = 0;
  bool watching_fe_ = false;
  bool features_published_ = false;
  int state_ = XenbusStateInitialising;  // what we last wrote

  std::shared_ptr<engine::BlockDevice> device_;
  std::string volume_;
  bool read_only_ = false;
  uint32_t sector_size_ = 512;

  std::vector<std::shared_ptr<RingWorker>> rings_;
  bool connected_ = false;
  bool disconnecting_ = false;
  bool paused_ = false;
  std::string protocol_;
  bool gone_ = false;  // detached or shut down
};

}  // namespace tapmap::blkif
