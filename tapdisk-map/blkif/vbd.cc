#include "tapdisk-map/blkif/vbd.h"

#include <boost/asio/post.hpp>
#include <cstdarg>
#include <cstdio>

#include "common/units.h"

namespace tapmap::blkif {

namespace asio = boost::asio;
using xen::kNoTransaction;
using xen::TransactionId;

namespace {

const char* StateName(int state) {
  switch (state) {
    case XenbusStateUnknown: return "unknown";
    case XenbusStateInitialising: return "initialising";
    case XenbusStateInitWait: return "initwait";
    case XenbusStateInitialised: return "initialised";
    case XenbusStateConnected: return "connected";
    case XenbusStateClosing: return "closing";
    case XenbusStateClosed: return "closed";
    default: return "other";
  }
}

// Reads an optional unsigned node: `fallback` if absent, an error if malformed or
// above `max`.
Result<uint64_t> ReadOptional(xen::XenStore& xs, const std::string& path, uint64_t fallback, uint64_t max) {
  auto v = xen::ReadUnsigned(xs, kNoTransaction, path);
  if (!v.ok()) {
    if (v.status().code() == StatusCode::kNotFound) return fallback;
    return v.status();
  }
  if (*v > max) {
    return Status::InvalidArgument(path + " = " + std::to_string(*v) + " exceeds " + std::to_string(max));
  }
  return *v;
}

}  // namespace

// The frontend's state as read by one Reconcile.
struct Vbd::FrontendView {
  int state = XenbusStateUnknown;
};

Vbd::Vbd(asio::io_context& io, Strand& strand, xen::XenPlatform& platform, const BackendOptions& options,
         std::shared_ptr<InflightBudget> host_inflight, std::shared_ptr<PersistentGrantQuota> grant_quota, VbdKey key,
         std::string backend_path, Logger logger)
    : io_(io), strand_(strand), platform_(platform), options_(options), key_(key), be_(std::move(backend_path)),
      logger_(std::move(logger)),
      reject_limiter_(std::make_shared<RateLimiter>(10, std::chrono::milliseconds(10000))),
      inflight_(host_inflight->NewAccount(options.inflight_bytes_per_disk)), grant_quota_(std::move(grant_quota)) {}

Vbd::~Vbd() {
  if (device_) device_->SetResizeListener(nullptr);
}

std::string Vbd::frontend_watch_token() const {
  return std::string("tapmap-fe:") + LayoutName(key_.layout) + ":" + std::to_string(key_.domid) + ":" +
         std::to_string(key_.devid);
}

Status Vbd::EnsureFrontendWatch() {
  if (watching_fe_ || fe_.empty()) return Status::Ok();
  TAPMAP_RETURN_IF_ERROR(platform_.xenstore->Watch(fe_ + "/state", frontend_watch_token()));
  watching_fe_ = true;
  return Status::Ok();
}

Status Vbd::UpdateBackend(const std::function<Status(TransactionId tx)>& body) {
  xen::XenStore& xs = *platform_.xenstore;
  return xen::RunTransaction(xs, [&](TransactionId tx) -> Status {
    auto dir = xs.Read(tx, be_);
    if (!dir.ok()) {
      if (dir.status().code() == StatusCode::kNotFound) return Status::NotFound(be_ + " was removed");
      return dir.status();
    }
    return body(tx);
  });
}

Status Vbd::PublishFeatures() {
  xen::XenStore& xs = *platform_.xenstore;
  int adopted = XenbusStateInitialising;
  Status s = UpdateBackend([&](TransactionId tx) -> Status {
    auto current = xen::ReadUnsigned(xs, tx, Node("state"));
    adopted = current.ok() && *current <= XenbusStateReconfigured ? static_cast<int>(*current)
                                                                   : XenbusStateInitialising;
    auto put = [&](const char* name, uint64_t value) { return xs.Write(tx, Node(name), std::to_string(value)); };
    TAPMAP_RETURN_IF_ERROR(put("feature-max-indirect-segments", options_.max_indirect_segments));
    TAPMAP_RETURN_IF_ERROR(put("max-ring-page-order", options_.max_ring_page_order));
    TAPMAP_RETURN_IF_ERROR(put("multi-queue-max-queues", options_.max_queues));
    TAPMAP_RETURN_IF_ERROR(put("feature-persistent", options_.persistent_grants ? 1 : 0));
    TAPMAP_RETURN_IF_ERROR(put("feature-flush-cache", 1));
    TAPMAP_RETURN_IF_ERROR(put("feature-barrier", 1));
    if (adopted <= XenbusStateInitialising) {
      // A new device: InitWait on sight. Otherwise (a restart of this daemon) the
      // state we had written stays, and Reconcile carries on from it.
      TAPMAP_RETURN_IF_ERROR(put("state", XenbusStateInitWait));
    }
    return Status::Ok();
  });
  if (!s.ok()) return s;
  features_published_ = true;
  state_ = adopted <= XenbusStateInitialising ? XenbusStateInitWait : adopted;
  logger_.Infof("features published, state %s", StateName(state_));
  return Status::Ok();
}

void Vbd::WriteState(int state) {
  if (gone_) return;
  Status s = UpdateBackend([&](TransactionId tx) {
    return platform_.xenstore->Write(tx, Node("state"), std::to_string(state));
  });
  if (!s.ok()) {
    if (s.code() == StatusCode::kNotFound) {
      logger_.Infof("not writing state %s: %s", StateName(state), s.ToString().c_str());
    } else {
      logger_.Warnf("write state %s: %s", StateName(state), s.ToString().c_str());
    }
    return;
  }
  if (state != state_) GuestLog(LogLevel::kInfo, "state %s -> %s", StateName(state_), StateName(state));
  state_ = state;
}

void Vbd::Reconcile() {
  if (gone_) return;
  xen::XenStore& xs = *platform_.xenstore;
  if (fe_.empty()) {
    auto fe = xs.Read(kNoTransaction, Node("frontend"));
    auto id = xen::ReadUnsigned(xs, kNoTransaction, Node("frontend-id"));
    if (!fe.ok() || !id.ok()) return;  // the toolstack has not written them yet
    if (fe->rfind("/local/domain/", 0) != 0 || *id > 0x7ff0) {
      logger_.Errorf("ignoring device: frontend '%s' id %llu are not a guest's", fe->c_str(),
                     static_cast<unsigned long long>(*id));
      return;
    }
    fe_ = *fe;
    fe_domid_ = static_cast<xen::DomainId>(*id);
  }
  Status s = EnsureFrontendWatch();
  if (!s.ok()) logger_.Warnf("watch frontend: %s", s.ToString().c_str());
  if (!features_published_) {
    s = PublishFeatures();
    if (!s.ok()) {
      logger_.Warnf("publish features: %s", s.ToString().c_str());
      return;
    }
  }
  if (disconnecting_) return;  // Reconcile runs again when the rings are released

  auto online_node = ReadOptional(xs, Node("online"), 1, 1);
  uint64_t online = online_node.ok() ? *online_node : 1;
  auto be_node = xen::ReadUnsigned(xs, kNoTransaction, Node("state"));
  FrontendView fe;
  auto fe_state = xen::ReadUnsigned(xs, kNoTransaction, fe_ + "/state");
  fe.state = fe_state.ok() && *fe_state <= XenbusStateReconfigured ? static_cast<int>(*fe_state)
                                                                   : XenbusStateUnknown;
  if (connected_ && fe.state != XenbusStateUnknown) {
    auto alive = platform_.domains->IsAlive(fe_domid_);
    if (alive.ok() && !*alive) {
      logger_.Infof("frontend domain %u is gone", fe_domid_);
      fe.state = XenbusStateClosed;
    }
  }
  auto self = shared_from_this();

  // libxl removes a device by writing online=0 and state=Closing to the backend.
  if (be_node.ok() && *be_node == XenbusStateClosing && state_ != XenbusStateClosing &&
      state_ != XenbusStateClosed) {
    logger_.Infof("toolstack asked to close (online=%llu)", static_cast<unsigned long long>(online));
    Disconnect([self] { self->WriteState(XenbusStateClosed); });
    return;
  }

  switch (fe.state) {
    case XenbusStateUnknown:
    case XenbusStateClosed:
      if (!rings_.empty()) {
        Disconnect([self] { self->WriteState(XenbusStateClosed); });
        return;
      }
      if (state_ == XenbusStateConnected || state_ == XenbusStateClosing ||
          (online == 0 && state_ != XenbusStateClosed)) {
        WriteState(XenbusStateClosed);
      }
      break;
    case XenbusStateClosing:
      if (!rings_.empty()) {
        Disconnect([self] { self->WriteState(XenbusStateClosing); });
        return;
      }
      if (state_ != XenbusStateClosing && state_ != XenbusStateClosed) WriteState(XenbusStateClosing);
      break;
    case XenbusStateInitialising:
      if (!rings_.empty()) {  // the frontend restarted without closing
        Disconnect([self] { self->WriteState(XenbusStateInitWait); });
        return;
      }
      if (online != 0 && state_ != XenbusStateInitWait) WriteState(XenbusStateInitWait);
      break;
    case XenbusStateInitialised:
    case XenbusStateConnected:
      if (!connected_ && device_ && online != 0 &&
          (state_ == XenbusStateInitWait || state_ == XenbusStateInitialised || state_ == XenbusStateConnected)) {
        Connect(fe);
      }
      break;
    default:
      break;
  }
}

void Vbd::Connect(const FrontendView&) {
  xen::XenStore& xs = *platform_.xenstore;
  auto order = ReadOptional(xs, fe_ + "/ring-page-order", 0, options_.max_ring_page_order);
  if (!order.ok()) return Fatal(order.status());
  auto queues = ReadOptional(xs, fe_ + "/multi-queue-num-queues", 1, options_.max_queues);
  if (!queues.ok()) return Fatal(queues.status());
  if (*queues == 0) return Fatal(Status::InvalidArgument("multi-queue-num-queues is 0"));
  std::optional<std::string> protocol;
  auto proto_node = xs.Read(kNoTransaction, fe_ + "/protocol");
  if (proto_node.ok()) {
    protocol = *proto_node;
  } else if (proto_node.status().code() != StatusCode::kNotFound) {
    return Fatal(proto_node.status());
  }
  auto abi = AbiFromProtocol(protocol);
  if (!abi.ok()) return Fatal(abi.status());
  auto persistent = ReadOptional(xs, fe_ + "/feature-persistent", 0, UINT32_MAX);
  bool use_persistent = options_.persistent_grants && persistent.ok() && *persistent == 1;

  std::vector<std::shared_ptr<RingWorker>> rings;
  auto abandon = [&](const Status& st) {
    for (auto& r : rings) r->Stop([] {});
    Fatal(st);
  };
  uint32_t pages = 1u << *order;
  for (uint64_t q = 0; q < *queues; ++q) {
    std::string base = *queues == 1 ? fe_ : fe_ + "/queue-" + std::to_string(q);
    RingConfig config;
    config.frontend_domid = fe_domid_;
    config.abi = *abi;
    config.persistent_grants = use_persistent;
    config.persistent_capacity = options_.persistent_grants_per_ring;
    config.persistent_quota = grant_quota_;
    config.max_per_wakeup = options_.max_requests_per_wakeup;
    config.budget = inflight_;
    config.limits.read_only = read_only_;
    config.limits.max_indirect_segments = options_.max_indirect_segments;
    for (uint32_t i = 0; i < pages; ++i) {
      std::string node = *order == 0 ? base + "/ring-ref" : base + "/ring-ref" + std::to_string(i);
      auto ref = ReadOptional(xs, node, UINT64_MAX, UINT32_MAX);
      if (ref.ok() && *ref == UINT64_MAX && *order == 0) ref = ReadOptional(xs, base + "/ring-ref0", UINT64_MAX, UINT32_MAX);
      if (!ref.ok()) return abandon(ref.status());
      if (*ref == UINT64_MAX) return abandon(Status::NotFound(node + " is missing"));
      config.ring_refs.push_back(static_cast<xen::GrantRef>(*ref));
    }
    auto port = ReadOptional(xs, base + "/event-channel", UINT64_MAX, UINT32_MAX);
    if (!port.ok()) return abandon(port.status());
    if (*port == UINT64_MAX) return abandon(Status::NotFound(base + "/event-channel is missing"));
    config.event_port = static_cast<xen::EventPort>(*port);
    std::weak_ptr<Vbd> weak = weak_from_this();
    auto ring = RingWorker::Connect(
        io_, platform_, device_, std::move(config), logger_.WithContext("queue", q), reject_limiter_,
        [weak, this](Status st) {
          asio::post(strand_, [weak, st] {
            if (auto self = weak.lock()) self->OnRingBroken(st);
          });
        });
    if (!ring.ok()) return abandon(ring.status().WithContext("queue " + std::to_string(q)));
    rings.push_back(std::move(*ring));
  }

  uint64_t size = device_->size_bytes();
  Status s = UpdateBackend([&](TransactionId tx) -> Status {
    auto put = [&](const char* name, uint64_t value) { return xs.Write(tx, Node(name), std::to_string(value)); };
    TAPMAP_RETURN_IF_ERROR(put("sectors", size >> kSectorShift));
    TAPMAP_RETURN_IF_ERROR(put("info", read_only_ ? VDISK_READONLY : 0));
    TAPMAP_RETURN_IF_ERROR(put("sector-size", sector_size_));
    TAPMAP_RETURN_IF_ERROR(put("physical-sector-size", std::max<uint32_t>(sector_size_, kPageSize)));
    TAPMAP_RETURN_IF_ERROR(put("feature-flush-cache", 1));
    TAPMAP_RETURN_IF_ERROR(put("feature-barrier", 1));
    TAPMAP_RETURN_IF_ERROR(put("feature-discard", read_only_ ? 0 : 1));
    if (!read_only_) {
      TAPMAP_RETURN_IF_ERROR(put("discard-granularity", std::max<uint32_t>(device_->block_size(), sector_size_)));
      TAPMAP_RETURN_IF_ERROR(put("discard-alignment", 0));
      TAPMAP_RETURN_IF_ERROR(put("discard-secure", 0));
    }
    return put("state", XenbusStateConnected);
  });
  if (!s.ok()) return abandon(s.WithContext("publish connection"));

  rings_ = std::move(rings);
  connected_ = true;
  if (state_ != XenbusStateConnected) GuestLog(LogLevel::kInfo, "state %s -> connected", StateName(state_));
  state_ = XenbusStateConnected;
  protocol_ = AbiName(*abi);
  GuestLog(LogLevel::kInfo, "connected: %llu queue(s) of %u page(s), protocol %s, %s grants, %llu sectors",
           static_cast<unsigned long long>(*queues), pages, protocol_.c_str(),
           use_persistent ? "persistent" : "copied", static_cast<unsigned long long>(size >> kSectorShift));
  for (auto& r : rings_) {
    if (paused_) r->Pause([] {});
    r->Start();
  }
}

void Vbd::Disconnect(std::function<void()> then) {
  connected_ = false;
  protocol_.clear();
  if (rings_.empty()) {
    then();
    return;
  }
  disconnecting_ = true;
  auto rings = std::move(rings_);
  rings_.clear();
  auto remaining = std::make_shared<size_t>(rings.size());
  auto self = shared_from_this();
  auto shared_then = std::make_shared<std::function<void()>>(std::move(then));
  for (auto& r : rings) {
    r->Stop([self, remaining, shared_then] {
      asio::post(self->strand_, [self, remaining, shared_then] {
        if (--*remaining != 0) return;
        self->disconnecting_ = false;
        self->GuestLog(LogLevel::kInfo, "rings released");
        (*shared_then)();
        self->Reconcile();
      });
    });
  }
}

void Vbd::GuestLog(LogLevel level, const char* fmt, ...) {
  if (!logger_.Enabled(level)) return;  // lines not written use none of the allowance
  uint64_t suppressed = 0;
  if (!guest_log_limiter_.Allow(&suppressed)) return;
  char buffer[1024];
  va_list args;
  va_start(args, fmt);
  std::vsnprintf(buffer, sizeof(buffer), fmt, args);
  va_end(args);
  std::string line = buffer;
  if (suppressed != 0) line += " (" + std::to_string(suppressed) + " lines this guest caused were suppressed)";
  logger_.Log(level, line);
}

void Vbd::Fatal(const Status& status) {
  GuestLog(LogLevel::kError, "%s", status.ToString().c_str());
  (void)UpdateBackend(
      [&](TransactionId tx) { return platform_.xenstore->Write(tx, Node("error"), status.ToString()); });
  auto self = shared_from_this();
  Disconnect([self] { self->WriteState(XenbusStateClosing); });
}

void Vbd::OnRingBroken(const Status& status) {
  if (gone_ || !connected_) return;
  Fatal(status);
}

void Vbd::OnResize(uint64_t new_size) {
  if (gone_ || !connected_) return;
  xen::XenStore& xs = *platform_.xenstore;
  Status s = UpdateBackend([&](TransactionId tx) -> Status {
    TAPMAP_RETURN_IF_ERROR(xs.Write(tx, Node("sectors"), std::to_string(new_size >> kSectorShift)));
    // Rewriting the state makes the frontend read the new size.
    return xs.Write(tx, Node("state"), std::to_string(XenbusStateConnected));
  });
  if (!s.ok()) {
    logger_.Warnf("publish new size: %s", s.ToString().c_str());
  } else {
    logger_.Infof("resized to %llu sectors", static_cast<unsigned long long>(new_size >> kSectorShift));
  }
}

void Vbd::SetDevice(std::shared_ptr<engine::BlockDevice> device, const AttachSpec& spec) {
  device_ = std::move(device);
  volume_ = spec.volume;
  read_only_ = spec.read_only || device_->read_only();
  sector_size_ = spec.sector_size;
  std::weak_ptr<Vbd> weak = weak_from_this();
  Strand* strand = &strand_;
  device_->SetResizeListener([weak, strand](uint64_t size) {
    asio::post(*strand, [weak, size] {
      if (auto self = weak.lock()) self->OnResize(size);
    });
  });
  xen::XenStore& xs = *platform_.xenstore;
  Status s = UpdateBackend([&](TransactionId tx) -> Status {
    TAPMAP_RETURN_IF_ERROR(xs.Write(tx, Node("tapmap-volume"), volume_));
    TAPMAP_RETURN_IF_ERROR(xs.Write(tx, Node("tapmap-mode"), read_only_ ? "r" : "w"));
    return xs.Write(tx, Node("tapmap-sector-size"), std::to_string(sector_size_));
  });
  if (!s.ok()) logger_.Warnf("record attachment: %s", s.ToString().c_str());
  logger_ = logger_.WithContext("volume", volume_);
}

void Vbd::Detach(std::function<void()> done) {
  auto self = shared_from_this();
  Disconnect([self, done = std::move(done)] {
    xen::XenStore& xs = *self->platform_.xenstore;
    Status s = self->UpdateBackend([&](TransactionId tx) -> Status {
      TAPMAP_RETURN_IF_ERROR(xs.Write(tx, self->Node("state"), std::to_string(XenbusStateClosed)));
      TAPMAP_RETURN_IF_ERROR(xs.Remove(tx, self->Node("tapmap-volume")));
      TAPMAP_RETURN_IF_ERROR(xs.Remove(tx, self->Node("tapmap-mode")));
      return xs.Remove(tx, self->Node("tapmap-sector-size"));
    });
    if (s.ok()) {
      self->state_ = XenbusStateClosed;
    } else if (s.code() != StatusCode::kNotFound) {
      self->logger_.Warnf("record detach: %s", s.ToString().c_str());
    }
    self->Shutdown(done);
  });
}

void Vbd::Shutdown(std::function<void()> done) {
  auto self = shared_from_this();
  Disconnect([self, done = std::move(done)] {
    if (self->watching_fe_) {
      (void)self->platform_.xenstore->Unwatch(self->fe_ + "/state", self->frontend_watch_token());
      self->watching_fe_ = false;
    }
    if (self->device_) {
      self->device_->SetResizeListener(nullptr);
      self->device_.reset();
    }
    self->gone_ = true;
    done();
  });
}

void Vbd::Pause(std::function<void(Status)> done) {
  paused_ = true;
  auto self = shared_from_this();
  auto flush = [self, done = std::move(done)]() mutable {
    if (!self->device_) {
      done(Status::Ok());
      return;
    }
    self->device_->Flush([self, done = std::move(done)](Status s) mutable {
      asio::post(self->strand_, [s = std::move(s), done = std::move(done)] { done(s); });
    });
  };
  if (rings_.empty()) {
    flush();
    return;
  }
  auto remaining = std::make_shared<size_t>(rings_.size());
  auto shared_flush = std::make_shared<decltype(flush)>(std::move(flush));
  for (auto& r : rings_) {
    r->Pause([self, remaining, shared_flush] {
      asio::post(self->strand_, [remaining, shared_flush] {
        if (--*remaining == 0) (*shared_flush)();
      });
    });
  }
}

void Vbd::Resume() {
  paused_ = false;
  for (auto& r : rings_) r->Resume();
}

VbdInfo Vbd::Info() const {
  VbdInfo info;
  info.key = key_;
  info.volume = volume_;
  info.read_only = read_only_;
  info.backend_path = std::string("backend/") + LayoutName(key_.layout) + "/" + std::to_string(key_.domid) + "/" +
                      std::to_string(key_.devid);
  info.state = StateName(state_);
  info.paused = paused_;
  info.standby = device_ != nullptr && device_->standby();
  info.rings = static_cast<uint32_t>(rings_.size());
  info.protocol = protocol_;
  InflightBudget::Usage usage = inflight_->usage();
  info.inflight_bytes = usage.in_flight;
  info.inflight_bytes_peak = usage.peak;
  info.inflight_bytes_limit = usage.limit;
  info.budget_waits = usage.waits;
  for (const auto& ring : rings_) {
    RingWorker::Counters c = ring->counters();
    info.queues.push_back(QueueStatus{c.requests, c.rejected, c.notifications, c.wakeups, c.budget_waits,
                                      c.spurious, c.storms, c.damped, c.in_flight,
                                      c.indices.req_prod, c.indices.req_cons, c.indices.req_event,
                                      c.indices.rsp_prod, c.indices.rsp_prod_pvt, c.indices.rsp_event});
  }
  return info;
}

}  // namespace tapmap::blkif
