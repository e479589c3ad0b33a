#include "mapserver/mapping_service.h"

#include <capnp/message.h>

#include <algorithm>

#include "protocol/auth.h"
#include "protocol/remote_status.h"

namespace tapmap::mapserver {
namespace {

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

}  // namespace

// ---------------------------------------------------------------------------------------
// Volume

class VolumeImpl final : public proto::Volume::Server {
 public:
  VolumeImpl(MappingService& service, Opener opener)
      : service_(service), opener_(std::move(opener)) {
    service_.Register(&opener_);
  }
  ~VolumeImpl() { service_.Release(&opener_); }

  kj::Promise<void> map(MapContext context) override {
    CheckUsable(false);
    auto params = context.getParams();
    uint64_t size = 0;
    auto extents = OrFail(service_.store().Map(opener_.volume, params.getOffset(), params.getLength(),
                                              service_.leases().WriterEpochOf(opener_.volume), &size));
    auto results = context.getResults();
    ToProto(extents, results.initExtents(static_cast<unsigned>(extents.size())));
    results.setSizeBytes(size);
    return kj::READY_NOW;
  }

  kj::Promise<void> prepareWrite(PrepareWriteContext context) override {
    CheckUsable(true);
    auto ranges = RangesOf(context.getParams().getRanges());
    auto extents = OrFail(
        service_.store().PrepareWrite(opener_.id, opener_.volume, ranges, opener_.lease_epoch));
    ToProto(extents, context.getResults().initExtents(static_cast<unsigned>(extents.size())));
    return kj::READY_NOW;
  }

  kj::Promise<void> commit(CommitContext context) override {
    CheckUsable(true);
    auto list = context.getParams().getExtents();
    if (list.size() > kMaxExtentsPerCommit) {
      Fail(Status::InvalidArgument("at most " + std::to_string(kMaxExtentsPerCommit) +
                                   " extents per commit"));
    }
    std::vector<MapExtent> extents = FromProto(list);
    for (MapExtent& e : extents) e.state = ExtentState::kOwned;  // all a commit can install
    return service_.QueueCommit(
        VolumeStore::CommitRequest{opener_.id, opener_.volume, std::move(extents)});
  }

  kj::Promise<void> discard(DiscardContext context) override {
    CheckUsable(true);
    auto ranges = RangesOf(context.getParams().getRanges());
    std::vector<uint64_t> freed;
    OrFail(service_.store().Discard(opener_.volume, ranges, &freed));
    // Other openers may hold maps of what was just unmapped.
    return service_.RecallFromOthers(opener_.volume, opener_.id, kj::mv(ranges), kj::mv(freed),
                                     "recall(discard)");
  }

  kj::Promise<void> close(CloseContext) override {
    CheckUsable(false);
    service_.Release(&opener_);
    opener_.state = Opener::State::kClosed;
    return kj::READY_NOW;
  }

 private:
  void CheckUsable(bool write) {
    using State = Opener::State;
    if (opener_.state == State::kClosed) {
      Fail(Status::InvalidArgument("volume '" + opener_.volume + "' was closed by this opener"));
    }
    if (opener_.state == State::kRevoked) {
      Fail(Status::Aborted("the lease on volume '" + opener_.volume + "' was revoked"));
    }
    if (write && !opener_.writable) {
      Fail(Status::ReadOnly("volume '" + opener_.volume + "' is open read-only"));
    }
  }

  MappingService& service_;
  Opener opener_;
};

// ---------------------------------------------------------------------------------------
// Session

class SessionImpl final : public proto::Session::Server {
 public:
  SessionImpl(MappingService& service, std::string host)
      : service_(service),
        host_(std::move(host)),
        logger_(service.logger().WithContext("host", host_)) {}

  kj::Promise<void> open(OpenContext context) override {
    auto params = context.getParams();
    std::string name = ToStd(params.getName());
    bool writable = params.getMode() == proto::OpenMode::READ_WRITE;
    auto d = OrFail(service_.store().Describe(name));
    if (writable) {
      if (d.record.read_only) {
        Fail(Status::ReadOnly("volume '" + name + "' is a snapshot; open it read-only"));
      }
      if (auto* w = service_.leases().WriterOf(name)) {
        Fail(Status::Busy("volume '" + name + "' is already open read-write by host " + w->host));
      }
    }
    Opener opener;
    if (writable) opener.lease_epoch = OrFail(service_.store().NewLeaseEpoch());
    opener.id = service_.leases().NextId();
    opener.volume = name;
    opener.host = host_;
    opener.writable = writable;
    opener.callback = params.getCallback();
    auto results = context.getResults();
    results.setVolume(kj::heap<VolumeImpl>(service_, kj::mv(opener)));
    service_.FillInfo(results.initInfo(), d);
    logger_.Infof("opened %s %s", name.c_str(), writable ? "rw" : "ro");
    return kj::READY_NOW;
  }

  kj::Promise<void> create(CreateContext context) override {
    auto params = context.getParams();
    auto d = OrFail(service_.store().Create(ToStd(params.getName()), params.getSizeBytes()));
    service_.FillInfo(context.getResults().initInfo(), d);
    return kj::READY_NOW;
  }

  kj::Promise<void> snapshot(SnapshotContext context) override { return Copy(context, true); }

  kj::Promise<void> clone(CloneContext context) override { return Copy(context, false); }

  kj::Promise<void> delete_(DeleteContext context) override {
    std::string name = ToStd(context.getParams().getName());
    OrFail(ValidateVolumeName(name));
    auto openers = service_.leases().OpenersOf(name);
    if (!openers.empty()) {
      Fail(Status::Busy("volume '" + name + "' has " + std::to_string(openers.size()) +
                        " opener(s); close them first"));
    }
    OrFail(service_.store().Delete(name));
    return kj::READY_NOW;
  }

  kj::Promise<void> resize(ResizeContext context) override {
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
    auto all = OrFail(service_.store().List());
    auto list = context.getResults().initVolumes(static_cast<unsigned>(all.size()));
    for (size_t i = 0; i < all.size(); ++i)
      service_.FillInfo(list[static_cast<unsigned>(i)], all[i]);
    return kj::READY_NOW;
  }

  kj::Promise<void> info(InfoContext context) override {
    auto d = OrFail(service_.store().Describe(ToStd(context.getParams().getName())));
    service_.FillInfo(context.getResults().initInfo(), d);
    return kj::READY_NOW;
  }

  kj::Promise<void> poolStats(PoolStatsContext context) override {
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
      }
      auto made = OrFail(snapshot ? service_.store().Snapshot(source, name)
                                  : service_.store().Clone(source, name));
      service_.FillInfo(context.getResults().initInfo(), made);
    });
  }

  MappingService& service_;
  std::string host_;
  Logger logger_;
};

// ---------------------------------------------------------------------------------------
// Gate

class GateImpl final : public proto::Gate::Server {
 public:
  GateImpl(MappingService& service, std::string peer, kj::Own<kj::PromiseFulfiller<void>> close,
           std::shared_ptr<bool> authenticated)
      : service_(service),
        peer_(std::move(peer)),
        close_(kj::mv(close)),
        authenticated_(std::move(authenticated)) {}

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
    Status denied = service_.CheckLogin(peer_, params.getClientVersion(), nonce, host,
                                        kj::arrayPtr(proof.begin(), proof.size()));
    if (!denied.ok()) {
      ++failures_;
      if (failures_ >= service_.max_login_failures() && close_.get() != nullptr) {
        service_.CloseSoon(kj::mv(close_));
      }
      Fail(denied);
    }
    service_.logger().Infof("host %s logged in from %s", host.c_str(), peer_.c_str());
    *authenticated_ = true;
    context.getResults().setSession(kj::heap<SessionImpl>(service_, host));
    return kj::READY_NOW;
  }

 private:
  MappingService& service_;
  std::string peer_;
  kj::Own<kj::PromiseFulfiller<void>> close_;  // null once used
  std::shared_ptr<bool> authenticated_;
  std::vector<uint8_t> nonce_;
  uint32_t failures_ = 0;
};

// ---------------------------------------------------------------------------------------
// MappingService

MappingService::MappingService(VolumeStore& store, std::string secret, kj::Timer& timer,
                               Logger logger, ServiceOptions options)
    : store_(store),
      secret_(std::move(secret)),
      timer_(timer),
      logger_(std::move(logger)),
      options_(options),
      tasks_(*this) {}

MappingService::~MappingService() = default;

proto::Gate::Client MappingService::NewGate(std::string peer,
                                            kj::Own<kj::PromiseFulfiller<void>> close_connection,
                                            std::shared_ptr<bool> authenticated) {
  return kj::heap<GateImpl>(*this, std::move(peer), kj::mv(close_connection),
                            std::move(authenticated));
}

Status MappingService::CheckLogin(const std::string& peer, uint32_t client_version,
                                  const std::vector<uint8_t>& nonce, const std::string& host,
                                  kj::ArrayPtr<const kj::byte> proof) {
  Status denied;
  if (client_version != proto::PROTOCOL_VERSION) {
    denied = Status::NotSupported("client protocol version " + std::to_string(client_version) +
                                  ", server " + std::to_string(proto::PROTOCOL_VERSION));
  } else if (nonce.empty()) {
    denied = Status::PermissionDenied("login without an outstanding challenge");
  } else if (!protocol::IsValidHostName(host)) {
    denied = Status::PermissionDenied("bad host name");
  } else {
    auto expected = protocol::ComputeLoginProof(secret_, nonce.data(), nonce.size(), host);
    if (!protocol::ProofsEqual(expected.data(), expected.size(), proof.begin(), proof.size())) {
      denied = Status::PermissionDenied("wrong proof: host does not know the shared secret");
    }
  }
  if (!denied.ok()) {
    uint64_t suppressed = 0;
    if (auth_log_limiter_.Allow(&suppressed)) {
      logger_.Warnf("login from %s refused: %s (%llu similar suppressed)", peer.c_str(),
                    denied.ToString().c_str(), static_cast<unsigned long long>(suppressed));
    }
  }
  return denied;
}

void MappingService::CloseSoon(kj::Own<kj::PromiseFulfiller<void>> close) {
  tasks_.add(timer_.afterDelay(50 * kj::MILLISECONDS).then([close = kj::mv(close)]() mutable {
    close->fulfill();
  }));
}

void MappingService::Register(Opener* opener) { leases_.Add(opener); }

void MappingService::Release(Opener* opener) {
  if (!leases_.Remove(opener->id)) return;
  store_.DropReservations(opener->id);
  logger_.Infof("host %s closed %s", opener->host.c_str(), opener->volume.c_str());
}

void MappingService::Revoke(OpenerId id, const std::string& why) {
  Opener* opener = leases_.Find(id);
  if (opener == nullptr) return;
  logger_.Warnf("revoking host %s's lease on %s: %s", opener->host.c_str(), opener->volume.c_str(),
                why.c_str());
  leases_.Remove(id);
  store_.DropReservations(id);
  opener->state = Opener::State::kRevoked;
  auto req = opener->callback.revokeRequest();
  req.setReason(why);
  tasks_.add(req.send().ignoreResult().catch_([](kj::Exception&&) {}));
}

void MappingService::FillInfo(proto::VolumeInfo::Builder b, const VolumeDescription& d) {
  const uint64_t bs = store_.superblock().block_size;
  b.setName(d.name);
  b.setSizeBytes(d.record.size_bytes);
  b.setReadOnly(d.record.read_only);
  switch (d.record.kind) {
    case VolumeRecord::Kind::kBase:
      b.setKind(proto::VolumeInfo::Kind::BASE);
      break;
    case VolumeRecord::Kind::kSnapshot:
      b.setKind(proto::VolumeInfo::Kind::SNAPSHOT);
      break;
    case VolumeRecord::Kind::kClone:
      b.setKind(proto::VolumeInfo::Kind::CLONE);
      break;
  }
  b.setParent(d.parent);
  b.setVersionSet(d.record.version_set);
  b.setMappedBytes(d.record.mapped_blocks * bs);
  b.setExclusiveBytes(d.exclusive_blocks * bs);
  b.setSharedBytes(d.shared_blocks * bs);
  b.setCreatedUnixSeconds(d.record.created_unix_seconds);
  auto openers = leases_.OpenersOf(d.name);
  b.setOpeners(static_cast<uint32_t>(openers.size()));
  for (auto* o : openers) {
    if (o->writable) b.setWriter(o->host);
  }
}

kj::Promise<void> MappingService::CallOpeners(
    std::vector<OpenerId> ids, std::string what,
    kj::Function<kj::Promise<void>(proto::MapCallback::Client&)> make_call) {
  kj::Vector<kj::Promise<void>> calls;
  for (OpenerId id : ids) {
    Opener* opener = leases_.Find(id);
    if (opener == nullptr) continue;
    kj::Promise<bool> answered =
        make_call(opener->callback)
            .then([]() { return true; }, [](kj::Exception&&) { return false; });
    auto timed = answered.exclusiveJoin(
        timer_.afterDelay(options_.callback_timeout).then([]() { return false; }));
    calls.add(timed.then([this, id, what](bool ok) {
      if (!ok) Revoke(id, what + " was not answered in time or failed");
    }));
  }
  return kj::joinPromises(calls.releaseAsArray());
}

kj::Promise<void> MappingService::QueueCommit(VolumeStore::CommitRequest request) {
  auto paf = kj::newPromiseAndFulfiller<void>();
  pending_commits_.push_back(PendingCommit{std::move(request), kj::mv(paf.fulfiller)});
  if (!flush_scheduled_) {
    flush_scheduled_ = true;
    tasks_.add(kj::evalLast([this]() { FlushCommits(); }));
  }
  return kj::mv(paf.promise);
}

void MappingService::FlushCommits() {
  flush_scheduled_ = false;
  std::vector<PendingCommit> batch = std::move(pending_commits_);
  pending_commits_.clear();
  std::vector<VolumeStore::CommitRequest> requests;
  requests.reserve(batch.size());
  for (auto& p : batch) requests.push_back(std::move(p.request));
  std::vector<VolumeStore::CommitEffects> effects;
  std::vector<Status> results = store_.CommitBatch(requests, &effects);
  // Other openers of a volume may hold maps of blocks a commit just mapped or
  // replaced (read-only openers of a live volume, on this host or others): recall
  // those ranges from them before the commit is answered, so that a reader anywhere
  // sees everything a writer flushed before the read (the writer's flush waits for
  // its commit). The blocks the commit freed stay quarantined until then.
  const uint64_t bs = store_.superblock().block_size;
  for (size_t i = 0; i < batch.size(); ++i) {
    if (!results[i].ok()) {
      batch[i].done->reject(protocol::ToException(results[i]));
      continue;
    }
    std::vector<ByteRange> ranges;
    std::vector<uint64_t>& changed = effects[i].changed;
    std::sort(changed.begin(), changed.end());
    for (uint64_t lb : changed) {
      if (!ranges.empty() && ranges.back().offset + ranges.back().length == lb * bs) {
        ranges.back().length += bs;
      } else if (ranges.size() < kMaxRangesPerCall) {
        ranges.push_back(ByteRange{lb * bs, bs});
      } else {
        ranges.back().length = lb * bs + bs - ranges.back().offset;  // cover the rest
      }
    }
    auto recalled = RecallFromOthers(requests[i].volume, requests[i].opener, kj::mv(ranges),
                                     kj::mv(effects[i].freed), "recall(commit)");
    tasks_.add(recalled.then([done = kj::mv(batch[i].done)]() mutable { done->fulfill(); }));
  }
}

kj::Promise<void> MappingService::RecallFromOthers(const std::string& volume, OpenerId except,
                                                   std::vector<ByteRange> ranges,
                                                   std::vector<uint64_t> freed, std::string what) {
  std::vector<OpenerId> others;
  for (auto* o : leases_.OpenersOf(volume)) {
    if (o->id != except) others.push_back(o->id);
  }
  if (others.empty() || ranges.empty()) return kj::READY_NOW;
  store_.Quarantine(freed);
  auto recalled =
      CallOpeners(kj::mv(others), kj::mv(what), [ranges](proto::MapCallback::Client& cb) {
        auto req = cb.recallRequest();
        ToProto(ranges, req.initRanges(static_cast<unsigned>(ranges.size())));
        req.setReason(proto::RecallReason::DISCARD);  // "drop your maps of these ranges"
        return req.send().ignoreResult();
      });
  return recalled.attach(kj::defer([this, freed = kj::mv(freed)]() { store_.EndQuarantine(freed); }));
}

void MappingService::taskFailed(kj::Exception&& exception) {
  logger_.Warnf("background task failed: %s", exception.getDescription().cStr());
}

}  // namespace tapmap::mapserver
