// The capabilities the mapping service hands out (mapping.capnp): Gate (login), Session
// (what a logged-in host may do; its open applies leases.md: reclaim, standby, waits
// for an orphaned holder or the grace period) and Volume (one open), over
// MappingService's public interface.
#include "mapserver/capabilities.h"

#include <capnp/message.h>

#include <algorithm>

#include "protocol/auth.h"
#include "protocol/remote_status.h"

namespace tapmap::mapserver {
namespace {

// Mapped blocks one sharedRanges call examines at most (a page of an unshared 16 GiB
// at 64 KiB blocks): bounds the time one call holds the service's thread.
constexpr uint64_t kMaxSharedScanPerCall = 1 << 18;

[[noreturn]] void Fail(const Status& status) { kj::throwFatalException(protocol::ToException(status)); }

template <typename T>
T OrFail(Result<T> result) {
  if (!result.ok()) Fail(result.status());
  return std::move(result).value();
}

void OrFail(const Status& status) {
  if (!status.ok()) Fail(status);
}

std::string ToStd(capnp::Text::Reader text) { return std::string(text.cStr(), text.size()); }

// The ranges of a call, bounded before they are copied.
std::vector<ByteRange> RangesOf(capnp::List<proto::Range>::Reader ranges) {
  if (ranges.size() > kMaxRangesPerCall) {
    Fail(Status::InvalidArgument("at most " + std::to_string(kMaxRangesPerCall) +
                                 " ranges per call, got " + std::to_string(ranges.size())));
  }
  return FromProto(ranges);
}

// ---------------------------------------------------------------------------------------
// Volume

class VolumeImpl final : public proto::Volume::Server {
 public:
  // Serves the registered opener `id`, which it attaches (gives its callback).
  VolumeImpl(MappingService& service, OpenerId id, uint64_t attachment,
             std::shared_ptr<ConnectionState> connection)
      : service_(service), id_(id), attachment_(attachment), connection_(std::move(connection)) {}
  ~VolumeImpl() {
    if (closed_ || Mine() == nullptr) return;
    // Dropped by the host over a live connection: a close. Dropped because the
    // connection is gone: the opener stays, orphaned (leases.md).
    if (connection_->ended) service_.Orphan(id_);
    else service_.Release(id_);
  }

  kj::Promise<void> map(MapContext context) override {
    Opener& opener = Usable(false);
    auto params = context.getParams();
    uint64_t size = 0;
    auto extents = OrFail(service_.store().Map(opener.volume, params.getOffset(), params.getLength(),
                                              service_.leases().WriterEpochOf(opener.volume), &size));
    auto results = context.getResults();
    ToProto(extents, results.initExtents(static_cast<unsigned>(extents.size())));
    results.setSizeBytes(size);
    return kj::READY_NOW;
  }

  kj::Promise<void> prepareWrite(PrepareWriteContext context) override {
    Opener& opener = Usable(true);
    auto ranges = RangesOf(context.getParams().getRanges());
    auto extents = OrFail(
        service_.store().PrepareWrite(opener.id, opener.volume, ranges, opener.lease_epoch));
    ToProto(extents, context.getResults().initExtents(static_cast<unsigned>(extents.size())));
    return kj::READY_NOW;
  }

  kj::Promise<void> commit(CommitContext context) override {
    Opener& opener = Usable(true);
    auto list = context.getParams().getExtents();
    if (list.size() > kMaxExtentsPerCommit) {
      Fail(Status::InvalidArgument("at most " + std::to_string(kMaxExtentsPerCommit) +
                                   " extents per commit"));
    }
    std::vector<MapExtent> extents = FromProto(list);
    for (MapExtent& e : extents) e.state = ExtentState::kOwned;  // all a commit can install
    return service_.QueueCommit(
        VolumeStore::CommitRequest{opener.id, opener.volume, std::move(extents)});
  }

  kj::Promise<void> discard(DiscardContext context) override {
    Opener& opener = Usable(true);
    auto ranges = RangesOf(context.getParams().getRanges());
    std::vector<uint64_t> freed;
    OrFail(service_.store().Discard(opener.volume, ranges, &freed));
    // Other openers may hold maps of what was just unmapped.
    return service_.RecallFromOthers(opener.volume, opener.id, kj::mv(ranges), kj::mv(freed),
                                     "recall(discard)");
  }

  kj::Promise<void> sharedRanges(SharedRangesContext context) override {
    Opener& opener = Usable(false);
    auto params = context.getParams();
    uint32_t max = params.getMaxRanges();
    if (max == 0 || max > 65536) Fail(Status::InvalidArgument("sharedRanges: maxRanges must be 1..65536"));
    const uint64_t bs = service_.store().superblock().block_size;
    uint64_t next_block = 0;
    auto ranges = OrFail(service_.store().SharedRanges(opener.volume, params.getStartOffset() / bs, max,
                                                       kMaxSharedScanPerCall, &next_block));
    auto results = context.getResults();
    tapmap::ToProto(ranges, results.initRanges(static_cast<unsigned>(ranges.size())));
    results.setNextOffset(next_block * bs);
    return kj::READY_NOW;
  }

  kj::Promise<void> close(CloseContext) override {
    if (closed_) Fail(Status::InvalidArgument("volume was closed by this opener"));
    closed_ = true;
    // Also ends a revoked opener: the host says it stopped using it.
    if (Mine() != nullptr) service_.Release(id_);
    return kj::READY_NOW;
  }

 private:
  // The opener, if this capability may still use it; renews its host lease.
  Opener& Usable(bool write) {
    if (closed_) Fail(Status::InvalidArgument("volume was closed by this opener"));
    Opener* opener = Mine();
    if (opener == nullptr) {
      Fail(Status::Aborted("the lease on this volume ended (expired or revoked)"));
    }
    if (opener->revoked) {
      Fail(Status::Aborted("the lease on volume '" + opener->volume + "' was revoked"));
    }
    if (write && !opener->writable) {
      Fail(Status::ReadOnly("volume '" + opener->volume + "' is open read-only"));
    }
    service_.Touch(opener->holder);
    return *opener;
  }

  // The opener while this capability is its attachment; null otherwise.
  Opener* Mine() {
    Opener* o = service_.leases().Find(id_);
    return o != nullptr && o->attached && o->attachment == attachment_ ? o : nullptr;
  }

  MappingService& service_;
  const OpenerId id_;
  const uint64_t attachment_;
  const std::shared_ptr<ConnectionState> connection_;
  bool closed_ = false;
};

// ---------------------------------------------------------------------------------------
// Session

class SessionImpl final : public proto::Session::Server {
 public:
  SessionImpl(MappingService& service, Principal principal, HostLeaseId lease,
              std::shared_ptr<ConnectionState> connection)
      : service_(service),
        principal_(std::move(principal)),
        host_(principal_.host),
        lease_(lease),
        connection_(std::move(connection)),
        logger_(service.logger().WithContext("host", host_)) {}

  kj::Promise<void> open(OpenContext context) override {
    service_.Touch(lease_);
    auto params = context.getParams();
    OpenArgs a;
    a.name = ToStd(params.getName());
    a.writable = params.getMode() == proto::OpenMode::READ_WRITE;
    Allow(a.writable ? Action::kOpenReadWrite : Action::kOpenReadOnly, a.name);
    a.reclaim = params.getReclaim();
    a.reclaim_epoch = params.getReclaimEpoch();
    a.callback = params.getCallback();
    // Waits (an orphaned holder, the grace period) are bounded by one expiry time.
    a.deadline = service_.timer().now() + service_.expiry() + 1 * kj::SECONDS;
    return TryOpen(context, kj::mv(a));
  }

  kj::Promise<void> reclaimComplete(ReclaimCompleteContext) override {
    service_.Touch(lease_);
    service_.ReclaimComplete(lease_);
    return kj::READY_NOW;
  }

  kj::Promise<void> renew(RenewContext context) override {
    // A revoked credential ends the session at its next renewal (T/5 at most).
    if (Status s = service_.authority().Check(principal_, Action::kPoolStats, ""); !s.ok()) {
      logger_.Warnf("ending the session: %s", s.ToString().c_str());
      service_.Expire(lease_, "credential no longer valid");
      Fail(s);
    }
    if (!service_.Renew(lease_)) {
      Fail(Status::Aborted("host lease of " + host_ +
                           " expired or revoked: fence, drop every lease and log in afresh"));
    }
    context.getResults().setLeaseMs(
        static_cast<uint32_t>(service_.lease_time() / kj::MILLISECONDS));
    return kj::READY_NOW;
  }

  kj::Promise<void> create(CreateContext context) override {
    auto params = context.getParams();
    Allow(Action::kCreate, ToStd(params.getName()));
    auto d = OrFail(service_.store().Create(ToStd(params.getName()), params.getSizeBytes()));
    service_.FillInfo(context.getResults().initInfo(), d);
    return kj::READY_NOW;
  }

  // Snapshot, clone, delete and resize wait for the end of a grace period: the volume's
  // holder may not have reclaimed it yet (leases.md).
  kj::Promise<void> snapshot(SnapshotContext context) override {
    service_.Touch(lease_);
    AllowCopy(Action::kSnapshot, context.getParams());
    return service_.GraceOver().then([this, context]() mutable { return Copy(context, true); });
  }

  kj::Promise<void> clone(CloneContext context) override {
    service_.Touch(lease_);
    AllowCopy(Action::kClone, context.getParams());
    return service_.GraceOver().then([this, context]() mutable { return Copy(context, false); });
  }

  kj::Promise<void> delete_(DeleteContext context) override {
    service_.Touch(lease_);
    Allow(Action::kDelete, ToStd(context.getParams().getName()));
    return service_.GraceOver().then([this, context]() mutable { return Delete(context); });
  }

  kj::Promise<void> rename(RenameContext context) override {
    service_.Touch(lease_);
    Allow(Action::kRename, ToStd(context.getParams().getName()));
    Allow(Action::kRename, ToStd(context.getParams().getNewName()));
    return service_.GraceOver().then([this, context]() mutable {
      std::string name = ToStd(context.getParams().getName());
      RequireClosed(name);
      auto renamed = OrFail(service_.store().Rename(name, ToStd(context.getParams().getNewName())));
      service_.FillInfo(context.getResults().initInfo(), renamed);
    });
  }

  kj::Promise<void> resize(ResizeContext context) override {
    service_.Touch(lease_);
    Allow(Action::kResize, ToStd(context.getParams().getName()));
    return service_.GraceOver().then([this, context]() mutable { return Resize(context); });
  }

  kj::Promise<void> Delete(DeleteContext context) {
    std::string name = ToStd(context.getParams().getName());
    RequireClosed(name);
    OrFail(service_.store().Delete(name));
    return kj::READY_NOW;
  }

  kj::Promise<void> Resize(ResizeContext context) {
    auto params = context.getParams();
    std::string name = ToStd(params.getName());
    uint64_t size = params.getSizeBytes();
    bool allow_shrink = params.getAllowShrink();
    auto d = OrFail(service_.store().Describe(name));
    if (d.record.read_only) Fail(Status::ReadOnly("volume '" + name + "' is a read-only snapshot"));
    if (size == 0 || size % 512 != 0 || size > kMaxVolumeBytes) {
      Fail(Status::InvalidArgument("volume size must be a positive multiple of 512 up to 1 PiB"));
    }
    if (size < d.record.size_bytes && !allow_shrink) {
      Fail(Status::InvalidArgument("shrinking volume '" + name + "' needs allowShrink"));
    }
    const uint32_t bs = service_.store().superblock().block_size;
    if (size < d.record.size_bytes && size % bs != 0) {
      Fail(Status::InvalidArgument(ShrinkAlignmentError(name, size, bs)));
    }
    std::vector<OpenerId> ids;
    for (auto* o : service_.leases().OpenersOf(name)) ids.push_back(o->id);
    kj::Promise<void> recalled = kj::READY_NOW;
    if (size < d.record.size_bytes && !ids.empty()) {
      uint64_t old_size = d.record.size_bytes;
      recalled = service_.CallOpeners(ids, "recall(resize)",
                                      [size, old_size](proto::MapCallback::Client& cb) {
                                        auto req = cb.recallRequest();
                                        auto r = req.initRanges(1)[0];
                                        r.setOffset(size);
                                        r.setLength(old_size - size);
                                        req.setReason(proto::RecallReason::RESIZE);
                                        return req.send().ignoreResult();
                                      });
    }
    return recalled.then([this, context, name, size, allow_shrink]() mutable {
      auto resized = OrFail(service_.store().Resize(name, size, allow_shrink));
      service_.FillInfo(context.getResults().initInfo(), resized);
      std::vector<OpenerId> ids;
      for (auto* o : service_.leases().OpenersOf(name)) ids.push_back(o->id);
      if (ids.empty()) return kj::Promise<void>(kj::READY_NOW);
      return service_.CallOpeners(kj::mv(ids), "sizeChanged",
                                  [size](proto::MapCallback::Client& cb) {
                                    auto req = cb.sizeChangedRequest();
                                    req.setSizeBytes(size);
                                    return req.send().ignoreResult();
                                  });
    });
  }

  kj::Promise<void> list(ListContext context) override {
    Allow(Action::kList, "");
    auto all = OrFail(service_.store().List());
    std::erase_if(all, [this](const auto& d) { return !service_.authority().InScope(principal_, d.name); });
    auto list = context.getResults().initVolumes(static_cast<unsigned>(all.size()));
    for (size_t i = 0; i < all.size(); ++i)
      service_.FillInfo(list[static_cast<unsigned>(i)], all[i]);
    return kj::READY_NOW;
  }

  kj::Promise<void> info(InfoContext context) override {
    Allow(Action::kInfo, ToStd(context.getParams().getName()));
    auto d = OrFail(service_.store().Describe(ToStd(context.getParams().getName())));
    service_.FillInfo(context.getResults().initInfo(), d);
    return kj::READY_NOW;
  }

  kj::Promise<void> diff(DiffContext context) override {
    auto params = context.getParams();
    std::string from = ToStd(params.getFrom()), to = ToStd(params.getTo());
    Allow(Action::kInfo, from);
    Allow(Action::kInfo, to);
    uint32_t max = params.getMaxExtents();
    if (max == 0 || max > 65536) Fail(Status::InvalidArgument("diff: maxExtents must be 1..65536"));
    const uint64_t bs = service_.store().superblock().block_size;
    uint64_t next_block = 0;
    auto extents = OrFail(service_.store().Diff(from, to, params.getStartOffset() / bs, max, &next_block));
    auto results = context.getResults();
    auto list = results.initExtents(static_cast<unsigned>(extents.size()));
    for (size_t i = 0; i < extents.size(); ++i) {
      auto e = list[static_cast<unsigned>(i)];
      e.setOffset(extents[i].offset);
      e.setLength(extents[i].length);
      e.setZero(extents[i].zero);
    }
    results.setNextOffset(next_block * bs);
    return kj::READY_NOW;
  }

  kj::Promise<void> poolStats(PoolStatsContext context) override {
    Allow(Action::kPoolStats, "");
    auto f = OrFail(service_.store().Stats());
    const protocol::Superblock& sb = service_.store().superblock();
    auto s = context.getResults().initStats();
    s.setPoolBytes(sb.total_blocks * sb.block_size);
    s.setBlockSize(sb.block_size);
    s.setTotalBlocks(f.total_blocks);
    s.setFreeBlocks(f.free_blocks);
    s.setReservedBlocks(f.reserved_blocks);
    s.setVolumes(f.volumes);
    s.setVersionSets(f.version_sets);
    s.setUuid(protocol::FormatUuid(sb.uuid));
    s.setMetadataBytes(f.metadata_bytes);
    return kj::READY_NOW;
  }

 private:
  struct OpenArgs {
    std::string name;
    bool writable = false;
    bool reclaim = false;
    uint64_t reclaim_epoch = 0;
    proto::MapCallback::Client callback = nullptr;
    kj::TimePoint deadline = kj::origin<kj::TimePoint>();
  };

  // One attempt at an open (leases.md "Who may write when", "Reclaim"); waits and
  // tries again while an orphaned holder or the grace period stands in the way.
  kj::Promise<void> TryOpen(OpenContext context, OpenArgs a) {
    auto d = OrFail(service_.store().Describe(a.name));
    if (a.writable && d.record.read_only) {
      Fail(Status::ReadOnly("volume '" + a.name + "' is a snapshot; open it read-only"));
    }
    LeaseTable& table = service_.leases();
    HostLease* me = table.FindHost(lease_);
    if (me == nullptr || me->blocklisted) {
      Fail(Status::Aborted("host lease of " + host_ + " expired or revoked: log in afresh"));
    }
    // This instance's own opener (orphaned by a lost connection, or attached to a
    // connection the server has not yet seen die): take it over.
    if (Opener* mine = table.FindReclaimable(lease_, a.name, a.writable)) {
      if (a.reclaim || !mine->attached) return Attach(context, *mine, d, true, "reclaimed");
    }
    if (a.writable && a.reclaim && a.reclaim_epoch == 0) {
      a.reclaim = false;  // a standby that was never promoted: nothing to reclaim, open again
    }
    if (a.writable && a.reclaim) {
      // No opener left: in the grace period the durable record may vouch for it.
      if (table.WriterOf(a.name) == nullptr && service_.in_grace()) {
        if (auto epoch = service_.ClaimRecordedLease(a.name, *me, a.reclaim_epoch)) {
          return Grant(context, kj::mv(a), d, *epoch, "reclaimed after restart");
        }
      }
      Fail(Status::Aborted("lease on '" + a.name + "' lost: it expired or the server forgot it"));
    }
    if (a.writable) {
      if (Opener* w = table.WriterOf(a.name)) {
        HostLease* holder = table.FindHost(w->holder);
        bool alive = w->attached && !w->revoked && holder != nullptr && !holder->blocklisted;
        if (alive && w->holder != lease_ && table.StandbyOf(a.name) == nullptr) {
          // Live migration: the destination's open waits as a standby for the
          // source's release (leases.md "Standby").
          return Grant(context, kj::mv(a), d, kNoWriter, "opened (standby: another host holds it rw)", true);
        }
        if (alive || service_.timer().now() >= a.deadline) {
          Fail(Status::Busy("volume '" + a.name + "' is already open read-write by host " + w->host +
                            (table.StandbyOf(a.name) != nullptr ? " (with a standby)" : "")));
        }
        // Orphaned or revoked: it is reclaimed (busy then) or expires (ours then).
        return WaitAndRetry(context, kj::mv(a), service_.LeaseChanged());
      }
      if (service_.in_grace()) {
        return WaitAndRetry(context, kj::mv(a), service_.GraceOver());
      }
      uint64_t epoch = OrFail(service_.store().NewLeaseEpoch());
      return Grant(context, kj::mv(a), d, epoch, "opened");
    }
    return Grant(context, kj::mv(a), d, kNoWriter, "opened");
  }

  // Waits for `event`, at most a quarter lease (the waiting host's own lease is renewed
  // at each try: a host waiting in an open is alive), then tries again.
  kj::Promise<void> WaitAndRetry(OpenContext context, OpenArgs a, kj::Promise<void> event) {
    kj::TimePoint wake = std::min(a.deadline, service_.timer().now() + service_.lease_time() / 4);
    return event.exclusiveJoin(service_.timer().atTime(wake))
        .then([this, context, a = kj::mv(a)]() mutable {
          service_.Touch(lease_);
          return TryOpen(context, kj::mv(a));
        });
  }

  kj::Promise<void> Grant(OpenContext context, OpenArgs a, const VolumeDescription& d, uint64_t epoch,
                          const char* what, bool standby = false) {
    Opener opener;
    opener.id = service_.leases().NextId();
    opener.volume = a.name;
    opener.holder = lease_;
    opener.host = host_;
    opener.writable = a.writable && !standby;
    opener.standby = standby;
    opener.lease_epoch = opener.writable ? epoch : kNoWriter;
    OrFail(service_.RecordHolder(lease_));
    if (opener.writable) OrFail(service_.RecordWriter(opener));
    Opener& registered = service_.Register(kj::mv(opener));
    registered.callback = kj::mv(a.callback);
    return Attach(context, registered, d, false, what);
  }

  // Gives `opener` a new Volume capability (taking it over from an older one).
  kj::Promise<void> Attach(OpenContext context, Opener& opener, const VolumeDescription& d,
                           bool kept, const char* what) {
    auto params = context.getParams();
    if (kept) opener.callback = params.getCallback();
    opener.attached = true;
    ++opener.attachment;
    auto results = context.getResults();
    results.setVolume(kj::heap<VolumeImpl>(service_, opener.id, opener.attachment, connection_));
    service_.FillInfo(results.initInfo(), d);
    results.setLeaseEpoch(opener.writable ? opener.lease_epoch : 0);
    results.setReservationsKept(kept);
    results.setStandby(opener.standby);
    logger_.Infof("%s %s %s", what, opener.volume.c_str(),
                  opener.writable ? "rw" : opener.standby ? "standby" : "ro");
    service_.NotifyChanged();
    return kj::READY_NOW;
  }

  template <typename Context>
  kj::Promise<void> Copy(Context context, bool snapshot) {
    auto params = context.getParams();
    std::string source = ToStd(params.getSource());
    std::string name = ToStd(params.getName());
    OrFail(ValidateVolumeName(name));
    auto d = OrFail(service_.store().Describe(source));
    (void)d;
    kj::Promise<void> recalled = kj::READY_NOW;
    if (auto* writer = service_.leases().WriterOf(source)) {
      uint64_t size = d.record.size_bytes;
      auto reason = snapshot ? proto::RecallReason::SNAPSHOT : proto::RecallReason::CLONE;
      recalled = service_.CallOpeners({writer->id}, snapshot ? "recall(snapshot)" : "recall(clone)",
                                      [size, reason](proto::MapCallback::Client& cb) {
                                        auto req = cb.recallRequest();
                                        auto r = req.initRanges(1)[0];
                                        r.setOffset(0);
                                        r.setLength(size);
                                        req.setReason(reason);
                                        return req.send().ignoreResult();
                                      });
    }
    // The copy runs in the same event-loop turn as the recall's completion, so no
    // prepareWrite of the writer can slip in between.
    return recalled.then([this, context, source, name, snapshot]() mutable {
      // The writer's blocks become shared now and must stay immutable even if the
      // copy is deleted later (making them exclusive again): its lease goes on under
      // a new epoch, after all of them, so none of them is owned by it any more.
      if (auto* writer = service_.leases().WriterOf(source)) {
        writer->lease_epoch = OrFail(service_.store().NewLeaseEpoch());
        OrFail(service_.RecordWriter(*writer));
      }
      auto made = OrFail(snapshot ? service_.store().Snapshot(source, name)
                                  : service_.store().Clone(source, name));
      service_.FillInfo(context.getResults().initInfo(), made);
    });
  }

  // Fails the call (permission-denied) unless the principal may do `action` to
  // `volume` (authority.h decides).
  void Allow(Action action, const std::string& volume) {
    if (Status s = service_.authority().Check(principal_, action, volume); !s.ok()) {
      logger_.Warnf("refused %s of '%s': %s", ActionName(action), volume.c_str(), s.message().c_str());
      Fail(s);
    }
  }
  // Fails the call (busy) while volume `name` (a valid name) has openers: delete and
  // rename need it closed everywhere.
  void RequireClosed(const std::string& name) {
    OrFail(ValidateVolumeName(name));
    auto openers = service_.leases().OpenersOf(name);
    if (!openers.empty()) {
      Fail(Status::Busy("volume '" + name + "' has " + std::to_string(openers.size()) +
                        " opener(s); close them first"));
    }
  }
  template <typename Params>
  void AllowCopy(Action action, Params params) {
    Allow(action, ToStd(params.getSource()));
    Allow(action, ToStd(params.getName()));
  }

  MappingService& service_;
  const Principal principal_;
  std::string host_;
  const HostLeaseId lease_;
  const std::shared_ptr<ConnectionState> connection_;
  Logger logger_;
};

// ---------------------------------------------------------------------------------------
// Gate

class GateImpl final : public proto::Gate::Server {
 public:
  GateImpl(MappingService& service, std::string peer, kj::Own<kj::PromiseFulfiller<void>> close,
           std::shared_ptr<ConnectionState> state)
      : service_(service),
        peer_(std::move(peer)),
        close_(kj::mv(close)),
        state_(std::move(state)) {}

  kj::Promise<void> challenge(ChallengeContext context) override {
    nonce_ = protocol::GenerateNonce();
    auto results = context.getResults();
    results.setNonce(kj::arrayPtr(nonce_.data(), nonce_.size()));
    results.setServerVersion(proto::PROTOCOL_VERSION);
    return kj::READY_NOW;
  }

  kj::Promise<void> login(LoginContext context) override {
    auto params = context.getParams();
    std::string host = ToStd(params.getHost());
    auto proof = params.getProof();
    std::vector<uint8_t> nonce = std::move(nonce_);
    nonce_.clear();
    auto principal = service_.CheckLogin(peer_, *state_, params.getClientVersion(), nonce, host,
                                         kj::arrayPtr(proof.begin(), proof.size()));
    if (!principal.ok()) {
      ++failures_;
      if (failures_ >= service_.max_login_failures() && close_.get() != nullptr) {
        service_.CloseSoon(kj::mv(close_));
      }
      Fail(principal.status());
    }
    uint64_t instance = params.getInstance();
    // The pool I/O identity (a librados client address), copied once and checked:
    // bounded, printable, no spaces.
    std::string pool_client = ToStd(params.getPoolClient());
    if (pool_client.size() > 256 ||
        std::any_of(pool_client.begin(), pool_client.end(), [](char c) { return c <= ' ' || c > '~'; })) {
      Fail(Status::InvalidArgument("login: poolClient must be at most 256 printable characters without spaces"));
    }
    bool resumed = false;
    HostLeaseId lease = service_.Login(host, instance, &resumed, pool_client);
    service_.logger().Infof("host %s logged in from %s (instance %016llx%s; %s)", host.c_str(), peer_.c_str(),
                            static_cast<unsigned long long>(instance), resumed ? ", resumed" : "",
                            principal->credential_id.empty()
                                ? "shared secret"
                                : ("credential " + principal->credential_id + ", role " +
                                   RoleName(principal->role))
                                      .c_str());
    state_->authenticated = true;
    auto results = context.getResults();
    results.setSession(kj::heap<SessionImpl>(service_, std::move(*principal), lease, state_));
    results.setLeaseMs(static_cast<uint32_t>(service_.lease_time() / kj::MILLISECONDS));
    results.setResumed(resumed);
    results.setInGrace(service_.in_grace());
    return kj::READY_NOW;
  }

 private:
  MappingService& service_;
  std::string peer_;
  kj::Own<kj::PromiseFulfiller<void>> close_;  // null once used
  std::shared_ptr<ConnectionState> state_;
  std::vector<uint8_t> nonce_;
  uint32_t failures_ = 0;
};


}  // namespace

proto::Gate::Client NewGateCapability(MappingService& service, std::string peer,
                                      kj::Own<kj::PromiseFulfiller<void>> close_connection,
                                      std::shared_ptr<ConnectionState> state) {
  return kj::heap<GateImpl>(service, std::move(peer), kj::mv(close_connection), std::move(state));
}

}  // namespace tapmap::mapserver
