#include "tapdisk-map/blkif/ring_worker.h"

#include <unistd.h>

#include <boost/asio/bind_executor.hpp>
#include <boost/asio/post.hpp>

#include "common/units.h"

namespace tapmap::blkif {

namespace asio = boost::asio;

struct RingWorker::InFlight {
  BlkifIo io;
  std::vector<uint8_t> buffer;
  InflightBudget::Grant grant;  // the buffer's bytes
};

RingWorker::RingWorker(asio::io_context& io, xen::XenPlatform& platform, std::shared_ptr<engine::BlockDevice> device,
                       RingConfig config, Logger logger, std::shared_ptr<RateLimiter> reject_limiter,
                       std::function<void(Status)> on_broken)
    : io_(io), strand_(asio::make_strand(io)), platform_(platform), device_(std::move(device)),
      config_(std::move(config)), logger_(std::move(logger)), reject_limiter_(std::move(reject_limiter)),
      on_broken_(std::move(on_broken)) {}

RingWorker::~RingWorker() = default;

Result<std::shared_ptr<RingWorker>> RingWorker::Connect(asio::io_context& io, xen::XenPlatform& platform,
                                                        std::shared_ptr<engine::BlockDevice> device,
                                                        RingConfig config, Logger logger,
                                                        std::shared_ptr<RateLimiter> reject_limiter,
                                                        std::function<void(Status)> on_broken) {
  size_t pages = config.ring_refs.size();
  if (pages == 0 || !IsPowerOfTwo(pages)) {
    return Status::InvalidArgument("ring of " + std::to_string(pages) + " pages");
  }
  std::shared_ptr<RingWorker> w(new RingWorker(io, platform, std::move(device), std::move(config),
                                               std::move(logger), std::move(reject_limiter), std::move(on_broken)));
  const RingConfig& c = w->config_;
  auto mapping = platform.grants->Map(c.frontend_domid, c.ring_refs, /*writable=*/true);
  if (!mapping.ok()) return mapping.status().WithContext("map ring");
  w->ring_mapping_ = std::move(*mapping);
  auto channel = platform.event_channels->BindInterdomain(c.frontend_domid, c.event_port);
  if (!channel.ok()) return channel.status().WithContext("bind event channel");
  w->channel_ = std::move(*channel);
  int fd = dup(w->channel_->fd());
  if (fd < 0) return Status::FromErrno("dup event channel fd", errno);
  w->event_fd_ = std::make_unique<asio::posix::stream_descriptor>(w->strand_, fd);
  w->ring_ = BackRing::Attach(c.abi, w->ring_mapping_->data(), pages);
  w->last_req_prod_ = w->ring_->indices().req_prod;
  w->damp_timer_ = std::make_unique<asio::steady_timer>(w->strand_);
  w->on_granted_ = [weak = std::weak_ptr<RingWorker>(w)](InflightBudget::Grant g) {
    // Runs on whichever thread returned the bytes: post to the strand.
    if (auto self = weak.lock()) {
      asio::post(self->strand_, [self, g = std::move(g)]() mutable { self->OnGranted(std::move(g)); });
    }
  };
  if (c.persistent_grants) {
    w->transfer_ = std::make_unique<PersistentGrantTransfer>(*platform.grants, c.frontend_domid, c.persistent_capacity,
                                                             c.persistent_quota);
  } else {
    w->transfer_ = std::make_unique<GrantCopyTransfer>(*platform.grants, c.frontend_domid);
  }
  return w;
}

void RingWorker::Start() {
  asio::post(strand_, [self = shared_from_this()] {
    if (self->started_ || self->stopping_) return;
    self->started_ = true;
    self->ArmWait();
    self->Process();
  });
}

void RingWorker::Pause(std::function<void()> drained) {
  asio::post(strand_, [self = shared_from_this(), drained = std::move(drained)]() mutable {
    self->paused_ = true;
    self->drained_waiters_.push_back(std::move(drained));
    self->MaybeDrained();
  });
}

void RingWorker::Resume() {
  asio::post(strand_, [self = shared_from_this()] {
    if (!self->paused_) return;
    self->paused_ = false;
    self->Process();
  });
}

void RingWorker::Stop(std::function<void()> done) {
  asio::post(strand_, [self = shared_from_this(), done = std::move(done)]() mutable {
    if (self->stopping_) {  // a second Stop: chain
      auto prev = std::move(self->stop_done_);
      self->stop_done_ = [prev = std::move(prev), done = std::move(done)] {
        if (prev) prev();
        done();
      };
      if (!self->ring_mapping_) {
        auto d = std::move(self->stop_done_);
        asio::post(self->io_, std::move(d));
      }
      return;
    }
    self->stopping_ = true;
    self->stop_done_ = std::move(done);
    if (self->event_fd_) {
      boost::system::error_code ec;
      self->event_fd_->cancel(ec);
    }
    if (self->damp_timer_) self->damp_timer_->cancel();
    self->MaybeDrained();
  });
}

void RingWorker::ArmWait() {
  if (waiting_ || stopping_ || broken_ || !event_fd_) return;
  waiting_ = true;
  event_fd_->async_wait(asio::posix::stream_descriptor::wait_read,
                        asio::bind_executor(strand_, [self = shared_from_this()](boost::system::error_code ec) {
                          self->waiting_ = false;
                          if (ec || self->stopping_) {
                            self->MaybeDrained();
                            return;
                          }
                          self->OnEvent();
                        }));
}

void RingWorker::OnEvent() {
  if (!damping_) {
    TakeEvent();
    return;
  }
  // Damped: leave the event pending (the port masked) until the backoff is over.
  if (damp_waiting_) return;
  damp_waiting_ = true;
  Bump(counters_.damped);
  damp_timer_->expires_after(config_.storm.backoff);
  damp_timer_->async_wait(asio::bind_executor(strand_, [self = shared_from_this()](boost::system::error_code ec) {
    self->damp_waiting_ = false;
    if (ec || self->stopping_ || self->broken_ || !self->channel_) {
      self->MaybeDrained();
      return;
    }
    self->TakeEvent();
  }));
}

void RingWorker::TakeEvent() {
  auto pending = channel_->ConsumePending();
  if (!pending.ok()) logger_.Warnf("event channel: %s", pending.status().ToString().c_str());
  NoteEvent();
  // Last, with release: whoever sees this wakeup also sees what NoteEvent counted.
  counters_.wakeups.fetch_add(1, std::memory_order_release);
  ArmWait();
  Process();
}

void RingWorker::NoteEvent() {
  auto now = std::chrono::steady_clock::now();
  if (now - window_start_ >= config_.storm.interval) {
    window_start_ = now;
    spurious_in_window_ = 0;
    damping_ = false;
  }
  uint32_t prod = ring_->indices().req_prod;
  bool spurious = prod == last_req_prod_;
  last_req_prod_ = prod;
  if (!spurious) return;
  Bump(counters_.spurious);
  if (++spurious_in_window_ <= config_.storm.spurious_threshold || damping_) return;
  damping_ = true;
  Bump(counters_.storms);
  uint64_t suppressed = 0;
  if (storm_log_.Allow(&suppressed)) {
    logger_.Warnf("event storm: more than %u notifications with nothing new on the ring within %lld ms; "
                  "handling this ring's events at most every %lld ms until the interval ends "
                  "(%llu similar messages suppressed)",
                  config_.storm.spurious_threshold, static_cast<long long>(config_.storm.interval.count()),
                  static_cast<long long>(config_.storm.backoff.count()), static_cast<unsigned long long>(suppressed));
  }
}

void RingWorker::Process() {
  process_posted_ = false;
  if (!started_ || paused_ || stopping_ || broken_ || budget_waiting_) return;
  config_.limits.sectors = device_->size_bytes() >> kSectorShift;
  uint32_t taken = 0;
  while (taken < config_.max_per_wakeup) {
    if (!parked_) {
      batch_.clear();
      auto fetched = ring_->Fetch(1, &batch_);
      if (!fetched.ok()) {
        Broken(fetched.status());
        return;
      }
      if (*fetched == 0) break;
      ++taken;
      Bump(counters_.requests);
      auto verdict = ValidateRequest(batch_[0], config_.limits,
                                     [this](std::span<const grant_ref_t> refs, std::span<uint8_t> dest) {
                                       return transfer_->FetchPages(refs, dest);
                                     });
      if (auto* rej = std::get_if<Rejection>(&verdict)) {
        Reject(*rej);
        continue;
      }
      parked_ = std::move(std::get<BlkifIo>(verdict));
    }
    InflightBudget::Grant grant;
    if (parked_grant_) {
      grant = std::move(*parked_grant_);
      parked_grant_.reset();
    } else if (config_.budget && parked_->length > 0) {
      auto now = config_.budget->Acquire(parked_->length, on_granted_);
      if (!now) {
        budget_waiting_ = true;  // OnGranted continues
        Bump(counters_.budget_waits);
        NoteIndices();
        return;
      }
      grant = std::move(*now);
    }
    BlkifIo io = std::move(*parked_);
    parked_.reset();
    Execute(std::move(io), std::move(grant));
  }
  if (taken == config_.max_per_wakeup) {
    // Bounded work per wakeup: let other rings and completions run, then continue.
    if (!process_posted_) {
      process_posted_ = true;
      asio::post(strand_, [self = shared_from_this()] { self->Process(); });
    }
    return;
  }
  if (ring_->FinalCheckForRequests() && !process_posted_) {
    process_posted_ = true;
    asio::post(strand_, [self = shared_from_this()] { self->Process(); });
  }
  NoteIndices();
}

void RingWorker::OnGranted(InflightBudget::Grant grant) {
  budget_waiting_ = false;
  if (!parked_ || stopping_ || broken_) return;  // the bytes go back with `grant`
  parked_grant_ = std::move(grant);
  Process();  // executes parked_ unless paused (then it keeps the grant until Resume)
}

RingWorker::Counters RingWorker::counters() const {
  constexpr auto r = std::memory_order_relaxed;
  Counters c;
  c.wakeups = counters_.wakeups.load(std::memory_order_acquire);
  c.requests = counters_.requests.load(r);
  c.rejected = counters_.rejected.load(r);
  c.notifications = counters_.notifications.load(r);
  c.budget_waits = counters_.budget_waits.load(r);
  c.spurious = counters_.spurious.load(r);
  c.storms = counters_.storms.load(r);
  c.damped = counters_.damped.load(r);
  c.in_flight = counters_.in_flight.load(r);
  c.indices = BackRing::Indices{counters_.req_prod.load(r), counters_.req_event.load(r),
                                counters_.rsp_prod.load(r), counters_.rsp_event.load(r),
                                counters_.req_cons.load(r), counters_.rsp_prod_pvt.load(r)};
  return c;
}

void RingWorker::NoteIndices() {
  if (!ring_) return;
  constexpr auto r = std::memory_order_relaxed;
  BackRing::Indices i = ring_->indices();
  counters_.req_prod.store(i.req_prod, r);
  counters_.req_event.store(i.req_event, r);
  counters_.rsp_prod.store(i.rsp_prod, r);
  counters_.rsp_event.store(i.rsp_event, r);
  counters_.req_cons.store(i.req_cons, r);
  counters_.rsp_prod_pvt.store(i.rsp_prod_pvt, r);
  counters_.in_flight.store(in_flight_, r);
}

void RingWorker::Execute(BlkifIo io, InflightBudget::Grant grant) {
  auto req = std::make_shared<InFlight>();
  req->io = std::move(io);
  req->grant = std::move(grant);
  ++in_flight_;
  auto done = [self = shared_from_this(), req](Status s) {
    asio::post(self->strand_, [self, req, s = std::move(s)] { self->Complete(req, s); });
  };
  BlkifIo& b = req->io;
  switch (b.kind) {
    case BlkifIo::Kind::kRead:
      req->buffer.resize(b.length);
      device_->Read(b.offset, req->buffer, std::move(done));
      return;
    case BlkifIo::Kind::kWrite: {
      req->buffer.resize(b.length);
      Status copied = transfer_->CopyFromGuest(b.segments, req->buffer);
      if (!copied.ok()) {
        Complete(req, copied.WithContext("grant"));
        return;
      }
      if (b.preflush) {
        auto device = device_;
        device_->Flush([device, req, done = std::move(done)](Status s) mutable {
          if (!s.ok()) {
            done(s);
            return;
          }
          device->Write(req->io.offset, req->buffer, req->io.fua, std::move(done));
        });
      } else {
        device_->Write(b.offset, req->buffer, b.fua, std::move(done));
      }
      return;
    }
    case BlkifIo::Kind::kFlush:
      device_->Flush(std::move(done));
      return;
    case BlkifIo::Kind::kDiscard:
      if (b.length == 0) {
        Complete(req, Status::Ok());
        return;
      }
      device_->Discard(b.offset, b.length, std::move(done));
      return;
  }
}

void RingWorker::Complete(const std::shared_ptr<InFlight>& req, Status status) {
  --in_flight_;
  if (status.ok() && req->io.kind == BlkifIo::Kind::kRead) {
    status = transfer_->CopyToGuest(req->io.segments, req->buffer);
  }
  if (!status.ok()) {
    uint64_t suppressed = 0;
    if (reject_limiter_->Allow(&suppressed)) {
      logger_.Warnf("request id=%llu op=%u failed: %s (%llu similar messages suppressed)",
                    static_cast<unsigned long long>(req->io.id), req->io.operation, status.ToString().c_str(),
                    static_cast<unsigned long long>(suppressed));
    }
  }
  Respond(req->io.id, req->io.operation, status.ok() ? BLKIF_RSP_OKAY : BLKIF_RSP_ERROR);
  req->buffer = {};
  req->grant.Reset();  // may hand the bytes to a ring waiting for them (posted)
  MaybeDrained();
}

void RingWorker::Reject(const Rejection& r) {
  Bump(counters_.rejected);
  uint64_t suppressed = 0;
  if (reject_limiter_->Allow(&suppressed)) {
    logger_.Warnf("rejected request id=%llu op=%u: %s (%llu similar messages suppressed)",
                  static_cast<unsigned long long>(r.id), r.operation, r.reason.c_str(),
                  static_cast<unsigned long long>(suppressed));
  }
  Respond(r.id, r.operation, r.status);
}

void RingWorker::Respond(uint64_t id, uint8_t op, int16_t status) {
  if (!ring_) return;  // released (cannot happen while requests are in flight)
  ring_->PutResponse(id, op, status);
  SchedulePush();
}

void RingWorker::SchedulePush() {
  if (push_posted_) return;
  push_posted_ = true;
  asio::post(strand_, [self = shared_from_this()] { self->Push(); });
}

void RingWorker::Push() {
  push_posted_ = false;
  if (!ring_) return;
  if (ring_->PushResponses()) {
    Bump(counters_.notifications);
    Status s = channel_->Notify();
    if (!s.ok()) logger_.Warnf("notify: %s", s.ToString().c_str());
  }
  NoteIndices();
  // Responses free slots: requests the guest queued meanwhile may now be taken.
  if (!process_posted_ && !paused_ && !stopping_ && !broken_) {
    process_posted_ = true;
    asio::post(strand_, [self = shared_from_this()] { self->Process(); });
  }
}

void RingWorker::Broken(Status status) {
  if (broken_) return;
  broken_ = true;
  logger_.Errorf("%s: disconnecting the ring", status.ToString().c_str());
  if (event_fd_) {
    boost::system::error_code ec;
    event_fd_->cancel(ec);
  }
  if (damp_timer_) damp_timer_->cancel();
  if (on_broken_) asio::post(io_, [cb = std::move(on_broken_), status] { cb(status); });
  MaybeDrained();
}

void RingWorker::MaybeDrained() {
  if (in_flight_ != 0) return;
  if (!drained_waiters_.empty()) {
    for (auto& w : drained_waiters_) asio::post(io_, std::move(w));
    drained_waiters_.clear();
  }
  if (stopping_ && ring_mapping_) Release();
}

void RingWorker::Release() {
  if (ring_ && ring_->PushResponses()) (void)channel_->Notify();  // nothing stays unpublished
  event_fd_.reset();
  parked_.reset();  // taken off the ring, never answered: a reconnecting frontend re-issues it
  parked_grant_.reset();
  transfer_.reset();
  ring_.reset();
  channel_.reset();
  ring_mapping_.reset();
  if (stop_done_) asio::post(io_, std::move(stop_done_));
  stop_done_ = nullptr;
}

}  // namespace tapmap::blkif
