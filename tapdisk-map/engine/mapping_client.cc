// MappingClient's implementation. (Longer than 600 lines on purpose: its KJ side — the
// connection loop, re-opening volumes after a loss, the Volume and MapCallback glue —
// and the asio-facing calls all share the Impl's state, which lives on the RPC thread.)
#include "tapdisk-map/engine/mapping_client.h"

#include <sys/eventfd.h>
#include <unistd.h>

#include <boost/asio/post.hpp>
#include <deque>
#include <kj/async-io.h>
#include <kj/async-unix.h>
#include <map>
#include <mutex>
#include <optional>
#include <random>
#include <thread>

#include "protocol/connection.h"
#include "protocol/remote_status.h"
#include "protocol/server_address.h"

namespace tapmap::engine {
namespace {

using Clock = std::chrono::steady_clock;
using protocol::StatusFromException;

// Functions queued from any thread to run on the RPC thread. An eventfd wakes the
// RPC thread's KJ loop. Shared with every handle that posts, so a handle outliving
// the thread finds the queue closed instead of a dangling pointer.
class RpcQueue {
 public:
  RpcQueue() : fd_(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {
    if (fd_ < 0) throw StatusError(Status::FromErrno("eventfd for the RPC thread", errno));
  }
  ~RpcQueue() { ::close(fd_); }
  int fd() const { return fd_; }

  // False (and `fn` dropped) once the RPC thread has stopped.
  bool Post(std::function<void()> fn) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (closed_) return false;
      queue_.push_back(std::move(fn));
    }
    uint64_t one = 1;
    ssize_t n = ::write(fd_, &one, sizeof(one));
    (void)n;  // an eventfd write only fails on counter overflow: it is then readable anyway
    return true;
  }
  std::deque<std::function<void()>> Take() {
    std::lock_guard<std::mutex> lock(mu_);
    return std::move(queue_);
  }
  void Close() {
    std::lock_guard<std::mutex> lock(mu_);
    closed_ = true;
  }

 private:
  int fd_;
  std::mutex mu_;
  bool closed_ = false;
  std::deque<std::function<void()>> queue_;
};

proto::OpenMode ModeOf(bool read_only) {
  return read_only ? proto::OpenMode::READ_ONLY : proto::OpenMode::READ_WRITE;
}

RecallReason FromProto(proto::RecallReason r) {
  switch (r) {
    case proto::RecallReason::SNAPSHOT: return RecallReason::kSnapshot;
    case proto::RecallReason::CLONE: return RecallReason::kClone;
    case proto::RecallReason::RESIZE: return RecallReason::kResize;
    case proto::RecallReason::DELETE: return RecallReason::kDelete;
    case proto::RecallReason::DISCARD: return RecallReason::kDiscard;
  }
  return RecallReason::kDiscard;
}

}  // namespace

// ---------------------------------------------------------------------------------------
// KJ-thread state

// One open volume as the RPC thread sees it. Fields are touched on the RPC thread only.
struct VolumeState {
  std::string name;
  bool read_only = false;
  std::weak_ptr<VolumeEvents> events;
  kj::Maybe<proto::Volume::Client> cap;  // live capability on the current connection
  bool needs_reopen = false;             // connection was lost since the last open
  bool reopening = false;
  bool reopen_warned = false;
  bool closed = false;
  uint64_t epoch = 0;                    // the rw lease's epoch (for a reclaim); 0 if ro
  bool standby = false;                  // a standby rw opener (live migration)
  Status failed;                         // reopening failed for good
};

// A random, non-zero host-lease instance for this process (mapping.capnp Gate.login).
static uint64_t NewInstance() {
  std::random_device rd;
  uint64_t v = 0;
  while (v == 0) v = (static_cast<uint64_t>(rd()) << 32) ^ rd();
  return v;
}

class MappingClient::Impl : public kj::TaskSet::ErrorHandler,
                            public std::enable_shared_from_this<MappingClient::Impl> {
 public:
  Impl(boost::asio::io_context& io, Options options, std::vector<protocol::ServerAddress> addresses, Logger log)
      : io_(io), options_(std::move(options)), addresses_(std::move(addresses)), address_(addresses_.front()),
        log_(std::move(log)),
        queue_(std::make_shared<RpcQueue>()),
        lease_(std::make_shared<HostLease>(io, log_)),
        instance_(NewInstance()) {}

  void Start() { thread_ = std::thread([this] { Run(); }); }
  void Stop() {
    queue_->Post([this] { stopping_ = true; });
    if (thread_.joinable()) thread_.join();
  }

  // Any thread.
  bool Post(std::function<void()> fn) { return queue_->Post(std::move(fn)); }
  template <typename Fn>
  void PostToIo(Fn&& fn) {
    boost::asio::post(io_, std::forward<Fn>(fn));
  }
  const std::shared_ptr<RpcQueue>& queue() const { return queue_; }
  boost::asio::io_context& io() { return io_; }
  bool connected() const { return connected_.load(); }
  const std::shared_ptr<HostLease>& lease() const { return lease_; }
  Clock::time_point Deadline() const { return Clock::now() + options_.unavailable_timeout; }

  // ---- RPC thread only ----

  // A call waiting for the connection or a volume (re)open; retried on every state
  // change and every tick until it runs or its deadline passes.
  struct Parked {
    Clock::time_point deadline;
    std::function<void()> retry;
    std::function<void(Status)> fail;
  };
  void Park(Clock::time_point deadline, std::function<void()> retry, std::function<void(Status)> fail) {
    if (stopping_) return fail(Status::Aborted("mapping client is shutting down"));
    parked_.push_back(Parked{deadline, std::move(retry), std::move(fail)});
  }
  void Kick() {
    auto parked = std::move(parked_);
    parked_.clear();
    auto now = Clock::now();
    for (auto& p : parked) {
      if (now >= p.deadline) {
        p.fail(Status::Unavailable("mapserver at " + address_.ToString() + " unreachable for " +
                                   std::to_string(options_.unavailable_timeout.count() / 1000) + " s"));
      } else {
        p.retry();
      }
    }
  }

  void GetPoolInfo(Clock::time_point deadline, std::function<void(Result<PoolInfo>)> done) {
    if (connected_ && pool_info_) {
      PoolInfo info = *pool_info_;
      PostToIo([done = std::move(done), info]() { done(info); });
      return;
    }
    Park(deadline, [this, deadline, done]() { GetPoolInfo(deadline, done); },
         [this, done](Status s) { PostToIo([done, s]() { done(s); }); });
  }

  void Open(std::string name, bool read_only, std::weak_ptr<VolumeEvents> events,
            Clock::time_point deadline, std::function<void(Result<OpenResult>)> done);

  void Describe(std::string name, Clock::time_point deadline, std::function<void(Result<VolumeOpenInfo>)> done);

  // Session.diff (see RemoteVolume::Diff), waiting for the connection like Describe.
  void Diff(std::string from, std::string to, uint64_t start_offset, uint32_t max_extents,
            Clock::time_point deadline, std::function<void(Result<DiffPage>)> done);

  void Reopen(std::shared_ptr<VolumeState> v);

  // Sends a call on `v`'s capability once it is live. `send` issues the RPC and
  // delivers its success; failures other than a lost connection go to `fail`.
  void VolumeCall(std::shared_ptr<VolumeState> v, Clock::time_point deadline,
                  std::function<kj::Promise<void>(proto::Volume::Client)> send,
                  std::function<void(Status)> fail) {
    if (stopping_) return fail(Status::Aborted("mapping client is shutting down"));
    if (v->closed) return fail(Status::InvalidArgument("volume " + v->name + " is closed"));
    if (!v->failed.ok()) return fail(v->failed);
    KJ_IF_MAYBE(cap, v->cap) {
      tasks_->add(send(*cap).catch_([this, v, deadline, send, fail](kj::Exception&& e) {
        if (e.getType() == kj::Exception::Type::DISCONNECTED) {
          // Connection lost (or the server said unavailable): wait and send again.
          Park(deadline, [this, v, deadline, send, fail]() { VolumeCall(v, deadline, send, fail); }, fail);
          return;
        }
        fail(StatusFromException(e));
      }));
      return;
    }
    Park(deadline, [this, v, deadline, send, fail]() { VolumeCall(v, deadline, send, fail); }, fail);
  }

  void CloseVolume(std::shared_ptr<VolumeState> v, std::function<void(Status)> done) {
    if (v->closed) return done(Status::Ok());
    v->closed = true;
    volumes_.erase(std::remove(volumes_.begin(), volumes_.end(), v), volumes_.end());
    KJ_IF_MAYBE(cap, v->cap) {
      auto request = cap->closeRequest();
      v->cap = nullptr;
      tasks_->add(request.send().ignoreResult().then(
          [done]() { done(Status::Ok()); },
          [done](kj::Exception&& e) {
            // A lost connection closes the opener too.
            done(e.getType() == kj::Exception::Type::DISCONNECTED ? Status::Ok() : StatusFromException(e));
          }));
      return;
    }
    done(Status::Ok());
  }

  void FinishRecall(uint64_t id) {
    auto it = recall_waiters_.find(id);
    if (it == recall_waiters_.end()) return;
    it->second->fulfill();
    recall_waiters_.erase(it);
  }
  uint64_t AddRecallWaiter(kj::Own<kj::PromiseFulfiller<void>> f) {
    uint64_t id = next_recall_id_++;
    recall_waiters_.emplace(id, kj::mv(f));
    return id;
  }

  void taskFailed(kj::Exception&& exception) override {
    log_.Warnf("mapping client task failed: %s", exception.getDescription().cStr());
  }

  const Logger& log() const { return log_; }

 private:
  void Run();
  kj::Promise<void> ConnectLoop();
  kj::Promise<void> TickLoop();
  kj::Promise<void> RenewLoop();
  void LoseConnection();
  void MaybeReclaimComplete();
  // With several server addresses: the next one, for the next connection attempt.
  void NextAddress() {
    if (addresses_.size() < 2) return;
    current_ = (current_ + 1) % addresses_.size();
    address_ = addresses_[current_];
  }

  boost::asio::io_context& io_;
  const Options options_;
  // The pool's mapservers (active and standbys); address_ is the one tried or used
  // now. Each failed connection attempt or lost connection moves on to the next.
  const std::vector<protocol::ServerAddress> addresses_;
  size_t current_ = 0;
  protocol::ServerAddress address_;
  const Logger log_;
  std::shared_ptr<RpcQueue> queue_;
  const std::shared_ptr<HostLease> lease_;
  const uint64_t instance_;
  // Fencing on a RADOS pool (Options::pool_identity): the lease's fence count at the
  // last login, and whether the next login must go under a fresh pool client.
  uint64_t fences_seen_ = 0;
  bool renew_pool_identity_ = false;
  std::thread thread_;
  std::atomic<bool> connected_{false};

  // RPC thread only.
  bool stopping_ = false;
  kj::AsyncIoContext* aio_ = nullptr;
  kj::Own<kj::TaskSet> tasks_;
  kj::Own<protocol::Connection> conn_;
  std::optional<PoolInfo> pool_info_;
  std::chrono::milliseconds lease_time_{0};  // the server's, from the login
  // Fulfilled to drop the connection (a refused or long unanswered renewal).
  kj::Own<kj::PromiseFulfiller<void>> drop_connection_;
  std::optional<Clock::time_point> renew_outstanding_;  // when the pending renewal was sent
  // After a login the server did not resume: tell it (Session.reclaimComplete) once every
  // volume is re-opened or failed for good, so that its grace period can end.
  bool reclaim_complete_pending_ = false;
  std::chrono::milliseconds backoff_{0};
  std::vector<std::shared_ptr<VolumeState>> volumes_;
  std::vector<Parked> parked_;
  std::map<uint64_t, kj::Own<kj::PromiseFulfiller<void>>> recall_waiters_;
  uint64_t next_recall_id_ = 1;
};

namespace {

// The MapCallback capability given to the server with each open. It lives on the RPC
// thread, inside the connection the Impl owns; it holds the Impl weakly all the same, so
// a callback the capnp runtime keeps past the connection finds nothing instead of a
// dangling pointer.
class MapCallbackImpl final : public proto::MapCallback::Server {
 public:
  MapCallbackImpl(std::weak_ptr<MappingClient::Impl> impl, std::weak_ptr<VolumeState> volume)
      : impl_(std::move(impl)), volume_(std::move(volume)) {}

  kj::Promise<void> recall(RecallContext context) override {
    auto impl = impl_.lock();
    auto events = Events();
    if (!impl || !events) return kj::READY_NOW;
    std::vector<ByteRange> ranges = tapmap::FromProto(context.getParams().getRanges());
    RecallReason reason = FromProto(context.getParams().getReason());
    auto paf = kj::newPromiseAndFulfiller<void>();
    uint64_t id = impl->AddRecallWaiter(kj::mv(paf.fulfiller));
    std::shared_ptr<RpcQueue> queue = impl->queue();
    std::weak_ptr<MappingClient::Impl> weak = impl_;
    impl->PostToIo([events, ranges = std::move(ranges), reason, queue, weak, id]() mutable {
      events->OnRecall(std::move(ranges), reason, [queue, weak, id]() {
        queue->Post([weak, id]() {
          if (auto impl = weak.lock()) impl->FinishRecall(id);
        });
      });
    });
    return kj::mv(paf.promise);
  }

  kj::Promise<void> revoke(RevokeContext context) override {
    auto impl = impl_.lock();
    auto events = Events();
    if (!impl || !events) return kj::READY_NOW;
    // Answered once the volume refuses new writes and none is in flight (a recall of
    // everything waits for them): the server then lets another host have the volume.
    std::string reason = context.getParams().getReason();
    auto paf = kj::newPromiseAndFulfiller<void>();
    uint64_t id = impl->AddRecallWaiter(kj::mv(paf.fulfiller));
    std::shared_ptr<RpcQueue> queue = impl->queue();
    std::weak_ptr<MappingClient::Impl> weak = impl_;
    impl->PostToIo([events, reason, queue, weak, id]() {
      events->OnRevoke(reason);
      events->OnRecall({ByteRange{0, uint64_t{1} << 62}}, RecallReason::kDelete, [queue, weak, id]() {
        queue->Post([weak, id]() {
          if (auto impl = weak.lock()) impl->FinishRecall(id);
        });
      });
    });
    return kj::mv(paf.promise);
  }

  kj::Promise<void> promoted(PromotedContext context) override {
    auto impl = impl_.lock();
    auto events = Events();
    if (!impl || !events) return kj::READY_NOW;
    if (auto v = volume_.lock()) {
      v->epoch = context.getParams().getLeaseEpoch();
      v->standby = false;
    }
    impl->log().Infof("a standby open was promoted: this host holds the rw lease now");
    impl->PostToIo([events]() { events->OnPromoted(); });
    return kj::READY_NOW;
  }

  kj::Promise<void> sizeChanged(SizeChangedContext context) override {
    auto impl = impl_.lock();
    auto events = Events();
    if (impl && events) {
      uint64_t size = context.getParams().getSizeBytes();
      impl->PostToIo([events, size]() { events->OnSizeChanged(size); });
    }
    return kj::READY_NOW;
  }

 private:
  std::shared_ptr<VolumeEvents> Events() {
    auto v = volume_.lock();
    if (!v || v->closed) return nullptr;
    return v->events.lock();
  }

  const std::weak_ptr<MappingClient::Impl> impl_;
  const std::weak_ptr<VolumeState> volume_;
};

// The handle the engine holds. Every method posts to the RPC thread. It shares the
// ownership of the Impl, so a handle that outlives its MappingClient (whose destructor
// stops the RPC thread) still reaches the io_context to fail its calls with "stopped"
// (the engine's io_context outlives every handle: see VolumeContext).
class RemoteVolumeImpl final : public RemoteVolume {
 public:
  RemoteVolumeImpl(std::shared_ptr<MappingClient::Impl> impl, std::shared_ptr<VolumeState> state)
      : impl_(std::move(impl)), state_(std::move(state)) {}
  ~RemoteVolumeImpl() override {
    // Close if the user did not; the state (and its capability) dies on the RPC thread.
    impl_->Post([impl = impl_, state = std::move(state_)]() { impl->CloseVolume(state, [](Status) {}); });
  }

  void Map(uint64_t offset, uint64_t length, std::function<void(Result<MapReply>)> done) override {
    auto fail = Failer(done);
    Run(fail, [impl = impl_, state = state_, offset, length, done, fail]() {
      impl->VolumeCall(
          state, impl->Deadline(),
          [impl, offset, length, done](proto::Volume::Client cap) {
            auto req = cap.mapRequest();
            req.setOffset(offset);
            req.setLength(length);
            return req.send().then([impl, done](auto reply) {
              MapReply r;
              r.extents = tapmap::FromProto(reply.getExtents());
              r.size_bytes = reply.getSizeBytes();
              impl->PostToIo([done, r = std::move(r)]() mutable { done(std::move(r)); });
            });
          },
          fail);
    });
  }

  void PrepareWrite(std::vector<ByteRange> ranges,
                    std::function<void(Result<std::vector<Extent>>)> done) override {
    auto fail = Failer(done);
    Run(fail, [impl = impl_, state = state_, ranges = std::move(ranges), done, fail]() {
      impl->VolumeCall(
          state, impl->Deadline(),
          [impl, ranges, done](proto::Volume::Client cap) {
            auto req = cap.prepareWriteRequest();
            tapmap::ToProto(ranges, req.initRanges(static_cast<unsigned>(ranges.size())));
            return req.send().then([impl, done](auto reply) {
              auto extents = tapmap::FromProto(reply.getExtents());
              impl->PostToIo([done, extents = std::move(extents)]() mutable { done(std::move(extents)); });
            });
          },
          fail);
    });
  }

  void Commit(std::vector<Extent> extents, std::function<void(Status)> done) override {
    auto fail = StatusFailer(done);
    Run(fail, [impl = impl_, state = state_, extents = std::move(extents), done, fail]() {
      impl->VolumeCall(
          state, impl->Deadline(),
          [impl, extents, done](proto::Volume::Client cap) {
            auto req = cap.commitRequest();
            tapmap::ToProto(extents, req.initExtents(static_cast<unsigned>(extents.size())));
            return req.send().ignoreResult().then([impl, done]() { impl->PostToIo([done]() { done(Status::Ok()); }); });
          },
          fail);
    });
  }

  void Discard(std::vector<ByteRange> ranges, std::function<void(Status)> done) override {
    auto fail = StatusFailer(done);
    Run(fail, [impl = impl_, state = state_, ranges = std::move(ranges), done, fail]() {
      impl->VolumeCall(
          state, impl->Deadline(),
          [impl, ranges, done](proto::Volume::Client cap) {
            auto req = cap.discardRequest();
            tapmap::ToProto(ranges, req.initRanges(static_cast<unsigned>(ranges.size())));
            return req.send().ignoreResult().then([impl, done]() { impl->PostToIo([done]() { done(Status::Ok()); }); });
          },
          fail);
    });
  }

  void SharedRanges(uint64_t start_offset, uint32_t max_ranges,
                    std::function<void(Result<SharedPage>)> done) override {
    auto fail = Failer(done);
    Run(fail, [impl = impl_, state = state_, start_offset, max_ranges, done, fail]() {
      impl->VolumeCall(
          state, impl->Deadline(),
          [impl, start_offset, max_ranges, done](proto::Volume::Client cap) {
            auto req = cap.sharedRangesRequest();
            req.setStartOffset(start_offset);
            req.setMaxRanges(max_ranges);
            return req.send().then([impl, done](auto reply) {
              SharedPage page;
              page.ranges = tapmap::FromProto(reply.getRanges());
              page.next_offset = reply.getNextOffset();
              impl->PostToIo([done, page = std::move(page)]() mutable { done(std::move(page)); });
            });
          },
          fail);
    });
  }

  void Diff(std::string from, uint64_t start_offset, uint32_t max_extents,
            std::function<void(Result<DiffPage>)> done) override {
    auto fail = Failer(done);
    Run(fail, [impl = impl_, state = state_, from = std::move(from), start_offset, max_extents, done]() {
      impl->Diff(from, state->name, start_offset, max_extents, impl->Deadline(), done);
    });
  }

  void Close(std::function<void(Status)> done) override {
    auto fail = StatusFailer(done);
    Run(fail, [impl = impl_, state = state_, done]() {
      impl->CloseVolume(state, [impl, done](Status s) { impl->PostToIo([done, s]() { done(s); }); });
    });
  }

 private:
  template <typename T>
  std::function<void(Status)> Failer(std::function<void(Result<T>)> done) {
    return [impl = impl_, done](Status s) { impl->PostToIo([done, s]() { done(s); }); };
  }
  std::function<void(Status)> StatusFailer(std::function<void(Status)> done) {
    return [impl = impl_, done](Status s) { impl->PostToIo([done, s]() { done(s); }); };
  }
  void Run(const std::function<void(Status)>& fail, std::function<void()> fn) {
    if (!impl_->Post(std::move(fn))) fail(Status::Aborted("mapping client stopped"));
  }

  const std::shared_ptr<MappingClient::Impl> impl_;
  std::shared_ptr<VolumeState> state_;
};

}  // namespace

void MappingClient::Impl::Open(std::string name, bool read_only, std::weak_ptr<VolumeEvents> events,
                               Clock::time_point deadline,
                               std::function<void(Result<OpenResult>)> done) {
  auto fail = [this, done](Status s) { PostToIo([done, s]() { done(s); }); };
  if (stopping_) return fail(Status::Aborted("mapping client is shutting down"));
  if (!conn_ || !connected_) {
    Park(deadline, [this, name, read_only, events, deadline, done]() { Open(name, read_only, events, deadline, done); }, fail);
    return;
  }
  auto v = std::make_shared<VolumeState>();
  v->name = name;
  v->read_only = read_only;
  v->events = events;
  auto req = conn_->session().openRequest();
  req.setName(name);
  req.setMode(ModeOf(read_only));
  req.setCallback(kj::heap<MapCallbackImpl>(weak_from_this(), v));
  req.setReclaim(false);
  tasks_->add(req.send().then(
      [this, v, done](auto reply) {
        v->cap = reply.getVolume();
        v->epoch = reply.getLeaseEpoch();
        volumes_.push_back(v);
        auto info = reply.getInfo();
        VolumeOpenInfo oi{info.getName(), info.getSizeBytes(), info.getReadOnly() || v->read_only,
                          reply.getStandby()};
        v->standby = reply.getStandby();
        auto handle = std::make_shared<RemoteVolumeImpl>(shared_from_this(), v);
        PostToIo([done, handle, oi]() { done(OpenResult{handle, oi}); });
      },
      [this, name, read_only, events, deadline, done, fail](kj::Exception&& e) {
        if (e.getType() == kj::Exception::Type::DISCONNECTED) {
          Park(deadline, [this, name, read_only, events, deadline, done]() { Open(name, read_only, events, deadline, done); }, fail);
          return;
        }
        fail(StatusFromException(e));
      }));
}

void MappingClient::Impl::Describe(std::string name, Clock::time_point deadline,
                                   std::function<void(Result<VolumeOpenInfo>)> done) {
  auto fail = [this, done](Status s) { PostToIo([done, s]() { done(s); }); };
  if (stopping_) return fail(Status::Aborted("mapping client is shutting down"));
  if (!conn_ || !connected_) {
    Park(deadline, [this, name, deadline, done]() { Describe(name, deadline, done); }, fail);
    return;
  }
  auto req = conn_->session().infoRequest();
  req.setName(name);
  tasks_->add(req.send().then(
      [this, done](auto reply) {
        auto info = reply.getInfo();
        VolumeOpenInfo oi{info.getName(), info.getSizeBytes(), info.getReadOnly()};
        PostToIo([done, oi]() { done(oi); });
      },
      [this, name, deadline, done, fail](kj::Exception&& e) {
        if (e.getType() == kj::Exception::Type::DISCONNECTED) {
          Park(deadline, [this, name, deadline, done]() { Describe(name, deadline, done); }, fail);
          return;
        }
        fail(StatusFromException(e));
      }));
}

void MappingClient::Impl::Diff(std::string from, std::string to, uint64_t start_offset, uint32_t max_extents,
                               Clock::time_point deadline, std::function<void(Result<DiffPage>)> done) {
  auto fail = [this, done](Status s) { PostToIo([done, s]() { done(s); }); };
  auto again = [this, from, to, start_offset, max_extents, deadline, done]() {
    Diff(from, to, start_offset, max_extents, deadline, done);
  };
  if (stopping_) return fail(Status::Aborted("mapping client is shutting down"));
  if (!conn_ || !connected_) return Park(deadline, again, fail);
  auto req = conn_->session().diffRequest();
  req.setFrom(from);
  req.setTo(to);
  req.setStartOffset(start_offset);
  req.setMaxExtents(max_extents);
  tasks_->add(req.send().then(
      [this, done](auto reply) {
        DiffPage page;
        for (auto e : reply.getExtents()) page.extents.push_back({e.getOffset(), e.getLength(), e.getZero()});
        page.next_offset = reply.getNextOffset();
        PostToIo([done, page = std::move(page)]() mutable { done(std::move(page)); });
      },
      [this, deadline, again, fail](kj::Exception&& e) {
        if (e.getType() == kj::Exception::Type::DISCONNECTED) return Park(deadline, again, fail);
        fail(StatusFromException(e));
      }));
}

void MappingClient::Impl::Reopen(std::shared_ptr<VolumeState> v) {
  if (!conn_ || v->reopening || v->closed) return;
  v->reopening = true;
  auto req = conn_->session().openRequest();
  req.setName(v->name);
  req.setMode(ModeOf(v->read_only));
  req.setCallback(kj::heap<MapCallbackImpl>(weak_from_this(), v));
  req.setReclaim(true);  // leases.md "Reclaim": the same opener if the server kept it
  req.setReclaimEpoch(v->epoch);
  tasks_->add(req.send().then(
      [this, v](auto reply) {
        v->reopening = false;
        if (v->closed) return;  // closed meanwhile: the new capability is dropped here
        v->cap = reply.getVolume();
        v->epoch = reply.getLeaseEpoch();
        v->needs_reopen = false;
        v->reopen_warned = false;
        uint64_t size = reply.getInfo().getSizeBytes();
        bool kept = reply.getReservationsKept();
        // A standby promoted while the connection was down learns it here.
        bool promoted = v->standby && !reply.getStandby();
        v->standby = reply.getStandby();
        log_.Infof("volume %s re-opened on the new connection (%s)", v->name.c_str(),
                   kept ? "same opener, reclaimed" : "new opener");
        MaybeReclaimComplete();
        if (auto events = v->events.lock()) {
          PostToIo([events, size, kept, promoted]() {
            events->OnReopened(size, kept);
            if (promoted) events->OnPromoted();
          });
        }
        Kick();
      },
      [this, v](kj::Exception&& e) {
        v->reopening = false;
        Status s = StatusFromException(e);
        if (e.getType() == kj::Exception::Type::DISCONNECTED || s.code() == StatusCode::kBusy ||
            s.code() == StatusCode::kUnavailable) {
          // Lost again, or the server has not yet noticed our old connection's end:
          // the tick loop tries again.
          if (!v->reopen_warned) {  // once per outage: the tick loop retries every 250 ms
            log_.Warnf("re-opening volume %s: %s (retrying)", v->name.c_str(), s.ToString().c_str());
            v->reopen_warned = true;
          }
          return;
        }
        log_.Errorf("re-opening volume %s failed: %s", v->name.c_str(), s.ToString().c_str());
        v->failed = s;
        MaybeReclaimComplete();
        if (auto events = v->events.lock()) {
          std::string reason = "re-open failed: " + s.ToString();
          PostToIo([events, reason]() { events->OnRevoke(reason); });
        }
        Kick();
      }));
}

void MappingClient::Impl::MaybeReclaimComplete() {
  if (!reclaim_complete_pending_ || !connected_ || conn_.get() == nullptr) return;
  for (auto& v : volumes_) {
    if (v->reopening || (v->needs_reopen && v->failed.ok())) return;
  }
  reclaim_complete_pending_ = false;
  tasks_->add(conn_->session().reclaimCompleteRequest().send().ignoreResult().catch_([](kj::Exception&&) {}));
}

void MappingClient::Impl::LoseConnection() {
  if (connected_) log_.Warnf("lost the connection to mapserver at %s", address_.ToString().c_str());
  connected_ = false;
  for (auto& v : volumes_) {
    v->cap = nullptr;
    v->needs_reopen = true;
  }
  // Drop the connection outside of any of its own callbacks.
  auto old = kj::mv(conn_);
  if (old.get() != nullptr) tasks_->add(kj::evalLater([old = kj::mv(old)]() mutable { old = nullptr; }));
}

kj::Promise<void> MappingClient::Impl::ConnectLoop() {
  if (stopping_) return kj::READY_NOW;
  std::string pool_client;
  if (options_.pool_identity) {
    // After a fence (or a refused renewal) the server may blocklist the pool client this
    // host used: log in under a fresh one.
    const uint64_t fences = lease_->figures().fences;
    if (fences != fences_seen_) renew_pool_identity_ = true;
    fences_seen_ = fences;
    if (renew_pool_identity_) {
      Status s = options_.renew_pool_identity();
      if (s.ok()) {
        renew_pool_identity_ = false;
        log_.Infof("pool: new client %s after this host's lease was in doubt", options_.pool_identity().c_str());
      } else {
        log_.Errorf("pool: could not replace the pool client (%s); trying again at the next login",
                    s.ToString().c_str());
      }
    }
    pool_client = options_.pool_identity();
  }
  const Clock::time_point sent_at = Clock::now();
  // Bounded: a server that accepts TCP but never answers (a hung or SIGSTOPped process:
  // the kernel completes the handshake for it) must not keep this host from trying the
  // next address.
  // Once the lease time T is known, at most T/4: after a fail-over the hosts must find
  // the new active within its grace period (1.1 T), past a hung old one.
  auto bound = options_.connect_timeout;
  if (lease_time_.count() > 0) bound = std::min(bound, std::max(lease_time_ / 4, std::chrono::milliseconds(200)));
  const std::string where = address_.ToString();
  return protocol::Connection::Connect(
             *aio_, address_, protocol::ClientAuth{options_.host, options_.secret, options_.tls, pool_client},
             instance_)
      .exclusiveJoin(aio_->provider->getTimer()
                         .afterDelay(bound.count() * kj::MILLISECONDS)
                         .then([bound, where]() -> kj::Own<protocol::Connection> {
                           kj::throwFatalException(protocol::ToException(Status::Unavailable(
                               "no login answer from " + where + " within " + std::to_string(bound.count()) + " ms")));
                         }))
      .then([this, sent_at](kj::Own<protocol::Connection> conn) {
        conn_ = kj::mv(conn);
        const protocol::LoginAnswer& login = conn_->login();
        lease_time_ = std::chrono::milliseconds(login.lease_ms);
        if (!login.resumed) {
          // The server holds nothing of ours any more (it expired us, or restarted):
          // every opener is in doubt until re-opened — before the lease turns valid.
          for (auto& v : volumes_) {
            if (auto events = v->events.lock()) events->SuspendLease();
          }
        }
        lease_->Renewed(sent_at, lease_time_, login.resumed);
        reclaim_complete_pending_ = !login.resumed;
        log_.Infof("lease: %s (lease %u ms%s)", login.resumed ? "resumed" : "new", login.lease_ms,
                   login.in_grace ? ", server in its grace period" : "");
        auto dropped = kj::newPromiseAndFulfiller<void>();
        drop_connection_ = kj::mv(dropped.fulfiller);
        renew_outstanding_.reset();
        return conn_->session().poolStatsRequest().send().then([this, dropped = kj::mv(dropped.promise)](auto reply) mutable {
          auto stats = reply.getStats();
          pool_info_ = PoolInfo{stats.getBlockSize(), stats.getUuid()};
          connected_ = true;
          backoff_ = std::chrono::milliseconds(0);
          log_.Infof("connected to mapserver at %s (pool %s, block size %u)", address_.ToString().c_str(),
                     pool_info_->uuid.c_str(), pool_info_->block_size);
          for (auto& v : volumes_) {
            if (v->needs_reopen) Reopen(v);
          }
          MaybeReclaimComplete();
          Kick();
          return conn_->onDisconnect().exclusiveJoin(kj::mv(dropped));
        });
      })
      .then(
          [this]() -> kj::Promise<void> {
            LoseConnection();
            NextAddress();
            return ConnectLoop();
          },
          [this](kj::Exception&& e) -> kj::Promise<void> {
            Status s = StatusFromException(e);
            LoseConnection();
            // (At most a quarter lease once the lease time is known: a host must be
            // back within a restarted server's grace period, 1.1 T.)
            auto max_backoff = options_.max_backoff;
            if (lease_time_.count() > 0) max_backoff = std::min(max_backoff, std::max(options_.min_backoff, lease_time_ / 4));
            backoff_ = backoff_.count() == 0 ? options_.min_backoff : std::min(max_backoff, backoff_ * 2);
            log_.Warnf("mapserver at %s: %s; retrying in %lld ms", address_.ToString().c_str(),
                       s.ToString().c_str(), static_cast<long long>(backoff_.count()));
            NextAddress();
            return aio_->provider->getTimer()
                .afterDelay(backoff_.count() * kj::MILLISECONDS)
                .then([this]() { return ConnectLoop(); });
          });
}

kj::Promise<void> MappingClient::Impl::RenewLoop() {
  // Every lease/5 (leases.md "Timers"); until the first login, once a second.
  auto interval = lease_time_.count() > 0 ? std::max<int64_t>(lease_time_.count() / 5, 20) : 1000;
  return aio_->provider->getTimer().afterDelay(interval * kj::MILLISECONDS).then([this]() {
    if (connected_ && conn_.get() != nullptr && renew_outstanding_) {
      // A renewal unanswered for 0.4 T: the connection is as good as dead (a cut link
      // keeps TCP quiet for many minutes). Drop it, so that a new one can resume the
      // lease as soon as the server is reachable again.
      auto waited = Clock::now() - *renew_outstanding_;
      if (waited > lease_time_ * 2 / 5 && drop_connection_.get() != nullptr) {
        log_.Warnf("lease: renewal unanswered for %lld ms; dropping the connection",
                   static_cast<long long>(std::chrono::duration_cast<std::chrono::milliseconds>(waited).count()));
        drop_connection_->fulfill();
        renew_outstanding_.reset();
      }
    } else if (connected_ && conn_.get() != nullptr) {
      const Clock::time_point sent_at = Clock::now();
      renew_outstanding_ = sent_at;
      tasks_->add(conn_->session().renewRequest().send().then(
          [this, sent_at](auto reply) {
            renew_outstanding_.reset();
            lease_->Renewed(sent_at, std::chrono::milliseconds(reply.getLeaseMs()), true);
          },
          [this](kj::Exception&& e) {
            renew_outstanding_.reset();
            if (e.getType() == kj::Exception::Type::DISCONNECTED) return;  // the connect loop sees it
            log_.Errorf("lease: renewal refused (%s); starting over with a new login",
                        StatusFromException(e).ToString().c_str());
            renew_pool_identity_ = true;
            if (drop_connection_.get() != nullptr) drop_connection_->fulfill();
          }));
    }
    return RenewLoop();
  });
}

kj::Promise<void> MappingClient::Impl::TickLoop() {
  return aio_->provider->getTimer().afterDelay(250 * kj::MILLISECONDS).then([this]() {
    if (connected_) {
      for (auto& v : volumes_) {
        if (v->needs_reopen && !v->reopening && v->failed.ok()) Reopen(v);
      }
      MaybeReclaimComplete();
    }
    Kick();
    return TickLoop();
  });
}

void MappingClient::Impl::Run() {
  auto aio = kj::setupAsyncIo();
  aio_ = &aio;
  tasks_ = kj::heap<kj::TaskSet>(*this);
  tasks_->add(ConnectLoop());
  tasks_->add(TickLoop());
  tasks_->add(RenewLoop());
  auto wake = aio.lowLevelProvider->wrapInputFd(queue_->fd());
  uint64_t counter = 0;
  while (!stopping_) {
    for (auto& fn : queue_->Take()) {
      KJ_IF_MAYBE(e, kj::runCatchingExceptions([&]() { fn(); })) {
        log_.Errorf("RPC thread task threw: %s", e->getDescription().cStr());
      }
      if (stopping_) break;
    }
    if (stopping_) break;
    wake->tryRead(&counter, sizeof(counter), sizeof(counter)).wait(aio.waitScope);
  }
  queue_->Close();
  // Whatever was queued after the stop request is dropped here, on this thread.
  queue_->Take();
  auto parked = std::move(parked_);
  parked_.clear();
  for (auto& p : parked) p.fail(Status::Aborted("mapping client is shutting down"));
  recall_waiters_.clear();
  drop_connection_ = nullptr;
  for (auto& v : volumes_) {
    v->closed = true;
    v->cap = nullptr;
  }
  volumes_.clear();
  wake = nullptr;
  tasks_ = nullptr;
  conn_ = nullptr;
  connected_ = false;
  aio_ = nullptr;
}

// ---------------------------------------------------------------------------------------
// MappingClient

Result<std::unique_ptr<MappingClient>> MappingClient::Create(boost::asio::io_context& io, Options options,
                                                            const Logger& log) {
  auto addresses = protocol::ParseServerAddressList(options.server);
  if (!addresses.ok()) return addresses.status();
  auto impl = std::make_shared<Impl>(io, std::move(options), std::move(*addresses), log);
  impl->Start();
  return std::unique_ptr<MappingClient>(new MappingClient(std::move(impl)));
}

MappingClient::~MappingClient() { impl_->Stop(); }

bool MappingClient::connected() const { return impl_->connected(); }

std::shared_ptr<HostLease> MappingClient::lease() const { return impl_->lease(); }

void MappingClient::GetPoolInfo(std::function<void(Result<PoolInfo>)> done) {
  std::shared_ptr<Impl> impl = impl_;
  auto deadline = impl->Deadline();
  if (!impl->Post([impl, deadline, done]() { impl->GetPoolInfo(deadline, done); })) {
    impl->PostToIo([done]() { done(Status::Aborted("mapping client stopped")); });
  }
}

void MappingClient::Open(const std::string& name, bool read_only, std::weak_ptr<VolumeEvents> events,
                         std::function<void(Result<OpenResult>)> done) {
  std::shared_ptr<Impl> impl = impl_;
  auto deadline = impl->Deadline();
  if (!impl->Post([impl, name, read_only, events, deadline, done]() {
        impl->Open(name, read_only, events, deadline, done);
      })) {
    impl->PostToIo([done]() { done(Status::Aborted("mapping client stopped")); });
  }
}

void MappingClient::Describe(const std::string& name, std::function<void(Result<VolumeOpenInfo>)> done) {
  std::shared_ptr<Impl> impl = impl_;
  auto deadline = impl->Deadline();
  if (!impl->Post([impl, name, deadline, done]() { impl->Describe(name, deadline, done); })) {
    impl->PostToIo([done]() { done(Status::Aborted("mapping client stopped")); });
  }
}

}  // namespace tapmap::engine
