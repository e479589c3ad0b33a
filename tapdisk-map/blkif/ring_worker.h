// RingWorker: serves one blkif ring (one queue of a VBD): waits for the guest's
// event, fetches requests (at most `max_per_wakeup` per wakeup, then yields to other
// work), validates each (request_validator), takes its bytes from the in-flight
// budget (inflight_budget.h), executes it on the BlockDevice with private buffers
// (segment_transfer), answers in the guest's ABI and notifies the guest only when the
// ring protocol says so.
//
// When the budget has no room for a request, the worker keeps that one request (taken
// off the ring, validated, no buffer yet) and consumes nothing more; the guest's other
// requests stay on the ring. The budget hands the bytes over once they are returned
// and the worker goes on. A request kept this way is not in flight: Pause and Stop do
// not wait for it, and Stop leaves it unanswered (a reconnecting frontend re-issues
// it, as for requests left on the ring).
//
// Lifetime: created connected (ring mapped, port bound) by Connect; Stop() releases
// the ring after the in-flight requests completed. Hold it by shared_ptr; callbacks
// keep it alive.
//
// Threading: all work runs on the worker's own strand of `io`; the public methods may
// be called from any thread and post to it. Callbacks are posted to `io`.
#pragma once

#include <atomic>
#include <chrono>

#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <functional>
#include <memory>
#include <optional>
#include <vector>

#include "common/logging.h"
#include "tapdisk-map/blkif/back_ring.h"
#include "tapdisk-map/blkif/inflight_budget.h"
#include "tapdisk-map/blkif/request_validator.h"
#include "tapdisk-map/blkif/segment_transfer.h"
#include "tapdisk-map/engine/block_device.h"
#include "tapdisk-map/xen/xen_platform.h"

namespace tapmap::blkif {

// Damping of event storms (cf. XSA-332): a notification after which the ring holds
// nothing new since the previous one is spurious. Beyond `spurious_threshold` of them
// within `interval`, the ring handles its events at most once per `backoff` for the
// rest of the interval: the port stays masked meanwhile (notifications coalesce in
// it) and requests are still taken whenever it is handled or a completion frees a slot.
struct StormDamping {
  uint32_t spurious_threshold = 256;
  std::chrono::milliseconds interval{1000};
  std::chrono::milliseconds backoff{10};
};

struct RingConfig {
  xen::DomainId frontend_domid = 0;
  std::vector<xen::GrantRef> ring_refs;  // 1 << ring_page_order references
  xen::EventPort event_port = 0;         // the frontend's port
  Abi abi = Abi::kNative;
  bool persistent_grants = false;        // negotiated feature-persistent
  uint32_t persistent_capacity = 1024;   // grants kept mapped by this ring at most
  // The host-wide cap on persistently mapped grants (shared by every ring); null: none.
  std::shared_ptr<PersistentGrantQuota> persistent_quota;
  uint32_t max_per_wakeup = 64;
  RequestLimits limits;                  // `sectors` is refreshed from the device
  // The disk's share of the in-flight byte budget (shared by its rings); null: none.
  std::shared_ptr<InflightBudget::Account> budget;
  StormDamping storm;
};

class RingWorker : public std::enable_shared_from_this<RingWorker> {
 public:
  // Maps the ring and binds the event channel. `platform` must outlive the worker.
  // `on_broken` is posted (once) if the guest breaks the ring protocol; the owner
  // should then disconnect. `reject_limiter` limits the log lines of rejected
  // requests (shared by the VBD's rings).
  static Result<std::shared_ptr<RingWorker>> Connect(boost::asio::io_context& io, xen::XenPlatform& platform,
                                                     std::shared_ptr<engine::BlockDevice> device,
                                                     RingConfig config, Logger logger,
                                                     std::shared_ptr<RateLimiter> reject_limiter,
                                                     std::function<void(Status)> on_broken);
  ~RingWorker();

  // Starts serving (processes requests already on the ring).
  void Start();
  // Stops consuming new requests; `drained` runs once none is in flight.
  void Pause(std::function<void()> drained);
  // Consumes again after Pause.
  void Resume();
  // Stops for good: no new request is consumed, in-flight ones complete and are
  // answered, then the ring is unmapped and the port unbound; `done` runs after that.
  void Stop(std::function<void()> done);

  Abi abi() const { return config_.abi; }

  struct Counters {
    uint64_t requests = 0, rejected = 0, notifications = 0, wakeups = 0;
    uint64_t budget_waits = 0;  // times consumption stopped for want of in-flight bytes
    uint64_t spurious = 0;      // events handled (wakeups) that found nothing new on the ring
    uint64_t storms = 0;        // times damping started (more than the threshold of spurious events)
    uint64_t damped = 0;        // events whose handling was put off by a backoff
    uint32_t in_flight = 0;
    BackRing::Indices indices;  // as of the ring's last activity
  };
  // A snapshot, safe from any thread (each field is read atomically; together they
  // may be a moment apart). For stats and diagnostics.
  Counters counters() const;

 private:
  struct InFlight;
  RingWorker(boost::asio::io_context& io, xen::XenPlatform& platform, std::shared_ptr<engine::BlockDevice> device,
             RingConfig config, Logger logger, std::shared_ptr<RateLimiter> reject_limiter,
             std::function<void(Status)> on_broken);

  void ArmWait();                 // strand
  void OnEvent();                 // strand: the port fired
  void TakeEvent();               // strand: consume (unmask) and handle it
  void NoteEvent();               // strand: spurious or not; starts or ends damping
  void Process();                 // strand
  void Execute(BlkifIo io, InflightBudget::Grant grant);  // strand
  void OnGranted(InflightBudget::Grant grant);  // strand
  void Complete(const std::shared_ptr<InFlight>& req, Status status);  // strand
  void Respond(uint64_t id, uint8_t op, int16_t status);  // strand
  void SchedulePush();            // strand
  void Push();                    // strand
  void Reject(const Rejection& r);  // strand
  void Broken(Status status);     // strand
  void MaybeDrained();            // strand
  void Release();                 // strand

  boost::asio::io_context& io_;
  boost::asio::strand<boost::asio::io_context::executor_type> strand_;
  xen::XenPlatform& platform_;
  std::shared_ptr<engine::BlockDevice> device_;
  RingConfig config_;
  Logger logger_;
  std::shared_ptr<RateLimiter> reject_limiter_;
  std::function<void(Status)> on_broken_;

  std::unique_ptr<xen::GrantMapping> ring_mapping_;
  std::unique_ptr<xen::EventChannel> channel_;
  std::unique_ptr<boost::asio::posix::stream_descriptor> event_fd_;
  std::unique_ptr<BackRing> ring_;
  std::unique_ptr<SegmentTransfer> transfer_;

  std::vector<RingRequest> batch_;
  std::optional<BlkifIo> parked_;  // validated, waiting for its budget
  std::optional<InflightBudget::Grant> parked_grant_;  // its bytes, granted while paused
  bool budget_waiting_ = false;    // the budget owes parked_ a grant
  std::function<void(InflightBudget::Grant)> on_granted_;  // made once: posts OnGranted
  // Storm damping (StormDamping).
  uint32_t last_req_prod_ = 0;     // the guest's producer index at the last event
  std::chrono::steady_clock::time_point window_start_{};
  uint32_t spurious_in_window_ = 0;
  bool damping_ = false;
  std::unique_ptr<boost::asio::steady_timer> damp_timer_;
  bool damp_waiting_ = false;      // damp_timer_ runs; the port stays masked until it fires
  RateLimiter storm_log_{1, std::chrono::seconds(60)};
  uint32_t in_flight_ = 0;
  bool started_ = false;
  bool paused_ = false;
  bool stopping_ = false;
  bool broken_ = false;
  bool waiting_ = false;        // an async_wait is outstanding
  bool process_posted_ = false;
  bool push_posted_ = false;
  std::vector<std::function<void()>> drained_waiters_;
  std::function<void()> stop_done_;

  // Written on the strand, read by counters() from anywhere.
  struct AtomicCounters {
    std::atomic<uint64_t> requests{0}, rejected{0}, notifications{0}, wakeups{0}, budget_waits{0};
    std::atomic<uint64_t> spurious{0}, storms{0}, damped{0};
    std::atomic<uint32_t> in_flight{0};
    std::atomic<uint32_t> req_prod{0}, req_event{0}, rsp_prod{0}, rsp_event{0}, req_cons{0}, rsp_prod_pvt{0};
  };
  void Bump(std::atomic<uint64_t>& counter) { counter.fetch_add(1, std::memory_order_relaxed); }
  void NoteIndices();  // strand
  AtomicCounters counters_;
};

}  // namespace tapmap::blkif
