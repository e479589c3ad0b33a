// MappingService's implementation: host leases and their expiry, the grace period,
// openers (orphan, release, revoke, promote), callbacks to openers and group commit.
// The capabilities it hands out are in capabilities.cc.
#include "mapserver/mapping_service.h"

#include <algorithm>

#include "mapserver/capabilities.h"
#include "protocol/auth.h"
#include "protocol/remote_status.h"

namespace tapmap::mapserver {
// ---------------------------------------------------------------------------------------
// MappingService

MappingService::MappingService(VolumeStore& store, std::string secret, kj::Timer& timer,
                               Logger logger, ServiceOptions options)
    : store_(store),
      secret_(std::move(secret)),
      timer_(timer),
      logger_(std::move(logger)),
      options_(options),
      authority_(options.credentials_dir ? std::optional<CredentialRegistry>(CredentialRegistry(*options.credentials_dir))
                                         : std::nullopt,
                 [this](std::string_view volume) -> std::optional<uint64_t> {
                   auto record = store_.Record(volume);
                   if (!record.ok()) return std::nullopt;
                   return record->version_set;
                 }),
      changed_promise_(nullptr),
      tasks_(*this) {
  auto paf = kj::newPromiseAndFulfiller<void>();
  changed_ = kj::mv(paf.fulfiller);
  changed_promise_ = paf.promise.fork();
  // A grace period if the previous run left host instances with openers (and rw leases)
  // that may reclaim them (leases.md "Grace period").
  auto records = store_.LeaseRecords();
  auto instances = store_.InstanceRecords();
  if (!records.ok() || !instances.ok()) {
    logger_.Errorf("reading the recorded leases: %s; no grace period",
                   (!records.ok() ? records.status() : instances.status()).ToString().c_str());
  } else if (!records->empty() || !instances->empty()) {
    in_grace_ = true;
    grace_end_ = timer_.now() + expiry();
    for (auto& r : *records) {
      unreclaimed_instances_.emplace(r.host, r.instance);
      unclaimed_.emplace(r.volume, std::move(r));
    }
    for (auto& i : *instances) unreclaimed_instances_.emplace(i.host, i.instance);
    logger_.Infof("grace period of at most %lld ms: waiting for %zu host instance(s) to reclaim "
                  "(%zu rw lease(s))",
                  static_cast<long long>(expiry() / kj::MILLISECONDS), unreclaimed_instances_.size(),
                  unclaimed_.size());
  }
  tasks_.add(ExpiryLoop());
}

MappingService::~MappingService() = default;

proto::Gate::Client MappingService::NewGate(std::string peer,
                                            kj::Own<kj::PromiseFulfiller<void>> close_connection,
                                            std::shared_ptr<ConnectionState> state) {
  return NewGateCapability(*this, std::move(peer), kj::mv(close_connection), std::move(state));
}

Result<Principal> MappingService::CheckLogin(const std::string& peer, const ConnectionState& connection,
                                             uint32_t client_version, const std::vector<uint8_t>& nonce,
                                             const std::string& host, kj::ArrayPtr<const kj::byte> proof) {
  Status denied;
  Principal principal;
  if (client_version != proto::PROTOCOL_VERSION) {
    denied = Status::NotSupported("client protocol version " + std::to_string(client_version) +
                                  ", server " + std::to_string(proto::PROTOCOL_VERSION));
  } else if (nonce.empty()) {
    denied = Status::PermissionDenied("login without an outstanding challenge");
  } else if (!protocol::IsValidHostName(host)) {
    denied = Status::PermissionDenied("bad host name");
  } else if (connection.tls_name.has_value()) {
    // The certificate says who this is; the client's word must agree with it.
    if (host != connection.tls_name->host) {
      denied = Status::PermissionDenied("login as '" + host + "' with the certificate of host " +
                                        connection.tls_name->host);
    } else if (auto admitted = authority_.AdmitCertificate(*connection.tls_name); !admitted.ok()) {
      denied = admitted.status();
    } else {
      principal = std::move(*admitted);
    }
  } else {
    auto expected = protocol::ComputeLoginProof(secret_, nonce.data(), nonce.size(), host);
    if (!protocol::ProofsEqual(expected.data(), expected.size(), proof.begin(), proof.size())) {
      denied = Status::PermissionDenied("wrong proof: host does not know the shared secret");
    } else {
      principal = Authority::SharedSecret(host);
    }
  }
  if (!denied.ok()) {
    uint64_t suppressed = 0;
    if (auth_log_limiter_.Allow(&suppressed)) {
      logger_.Warnf("login from %s refused: %s (%llu similar suppressed)", peer.c_str(),
                    denied.ToString().c_str(), static_cast<unsigned long long>(suppressed));
    }
    return denied;
  }
  return principal;
}

void MappingService::CloseSoon(kj::Own<kj::PromiseFulfiller<void>> close) {
  tasks_.add(timer_.afterDelay(50 * kj::MILLISECONDS).then([close = kj::mv(close)]() mutable {
    close->fulfill();
  }));
}

// ---- host leases ----

HostLeaseId MappingService::Login(const std::string& host, uint64_t instance, bool* resumed,
                                  const std::string& pool_client) {
  std::vector<HostLeaseId> superseded;
  HostLeaseId id = leases_.Login(host, instance, timer_.now(), resumed, &superseded);
  if (!pool_client.empty()) {
    if (HostLease* h = leases_.FindHost(id)) {
      auto& clients = h->pool_clients;
      if (std::find(clients.begin(), clients.end(), pool_client) == clients.end()) {
        if (clients.size() == kMaxPoolClients) {
          logger_.Warnf("host %s (instance %016llx) logged in under more than %zu pool clients; forgetting %s",
                        host.c_str(), static_cast<unsigned long long>(instance), kMaxPoolClients,
                        clients.front().c_str());
          clients.erase(clients.begin());
        }
        clients.push_back(pool_client);
      }
    }
  }
  for (HostLeaseId old : superseded) Expire(old, "superseded by a new instance of the host (restarted)");
  if (instance != 0 && in_grace_) {
    // A recorded instance of this host other than this one died: nothing to wait for.
    for (auto it = unreclaimed_instances_.begin(); it != unreclaimed_instances_.end();) {
      if (it->first == host && it->second != instance) {
        Status s = store_.ForgetInstance(InstanceRecord{it->first, it->second});
        if (!s.ok()) logger_.Errorf("forgetting an instance record of %s: %s", host.c_str(), s.ToString().c_str());
        it = unreclaimed_instances_.erase(it);
      } else {
        if (it->first == host) leases_.FindHost(id)->recorded = true;  // its record is still there
        ++it;
      }
    }
    if (unreclaimed_instances_.empty()) EndGrace("every recorded host instance reclaimed or restarted");
  }
  return id;
}

void MappingService::ReclaimComplete(HostLeaseId id) {
  HostLease* h = leases_.FindHost(id);
  if (h == nullptr || !in_grace_) return;
  if (unreclaimed_instances_.erase({h->host, h->instance}) != 0) {
    logger_.Infof("host %s reclaimed everything (%zu instance(s) still to come)", h->host.c_str(),
                  unreclaimed_instances_.size());
  }
  if (unreclaimed_instances_.empty()) EndGrace("every recorded host instance reclaimed");
}

Status MappingService::RecordHolder(HostLeaseId holder) {
  HostLease* h = leases_.FindHost(holder);
  if (h == nullptr || !h->resumable() || h->recorded) return Status::Ok();
  Status s = store_.RecordInstance(InstanceRecord{h->host, h->instance});
  if (s.ok()) h->recorded = true;
  return s;
}

bool MappingService::Renew(HostLeaseId id) { return leases_.Renew(id, timer_.now()); }

kj::Promise<void> MappingService::GraceOver() {
  if (!in_grace_) return kj::READY_NOW;
  return LeaseChanged().then([this]() { return GraceOver(); });
}

kj::Promise<void> MappingService::LeaseChanged() { return changed_promise_.addBranch(); }

void MappingService::NotifyChanged() {
  auto paf = kj::newPromiseAndFulfiller<void>();
  auto old = kj::mv(changed_);
  changed_ = kj::mv(paf.fulfiller);
  changed_promise_ = paf.promise.fork();
  old->fulfill();
}

std::optional<uint64_t> MappingService::ClaimRecordedLease(const std::string& volume, const HostLease& holder,
                                                           uint64_t epoch) {
  auto it = unclaimed_.find(volume);
  if (it == unclaimed_.end()) return std::nullopt;
  const LeaseRecord r = it->second;
  // The holder's epoch may be older than the record's: a snapshot or clone moved its
  // lease to a new epoch it was not told about (the record was). Never newer.
  if (r.host != holder.host || r.instance != holder.instance || epoch > r.epoch ||
      !store_.EpochIssued(r.epoch)) {
    return std::nullopt;
  }
  unclaimed_.erase(it);
  return r.epoch;
}

Status MappingService::RecordWriter(const Opener& opener) {
  const HostLease* holder = leases_.FindHost(opener.holder);
  if (holder == nullptr || !holder->resumable()) return Status::Ok();
  return store_.RecordLease(LeaseRecord{opener.volume, holder->host, holder->instance, opener.lease_epoch});
}

void MappingService::EndGrace(const std::string& why) {
  if (!in_grace_) return;
  in_grace_ = false;
  for (const auto& [volume, r] : unclaimed_) {
    logger_.Warnf("grace period over: host %s did not reclaim its rw lease on %s; it is lost",
                  r.host.c_str(), volume.c_str());
    Status s = store_.ForgetLease(volume);
    if (!s.ok()) logger_.Errorf("forgetting the lease record of %s: %s", volume.c_str(), s.ToString().c_str());
  }
  unclaimed_.clear();
  for (const auto& [host, instance] : unreclaimed_instances_) {
    logger_.Warnf("grace period over: host %s (instance %016llx) did not come back", host.c_str(),
                  static_cast<unsigned long long>(instance));
    Status s = store_.ForgetInstance(InstanceRecord{host, instance});
    if (!s.ok()) logger_.Errorf("forgetting an instance record of %s: %s", host.c_str(), s.ToString().c_str());
  }
  unreclaimed_instances_.clear();
  logger_.Infof("grace period over: %s", why.c_str());
  NotifyChanged();
}

kj::Promise<void> MappingService::ExpiryLoop() {
  kj::Duration tick = std::min<kj::Duration>(options_.lease_time / 10, 250 * kj::MILLISECONDS);
  return timer_.afterDelay(tick).then([this]() {
    kj::TimePoint now = timer_.now();
    for (HostLeaseId id : leases_.RenewedBefore(now - expiry())) {
      Expire(id, "no renewal for " + std::to_string(expiry() / kj::MILLISECONDS) + " ms");
    }
    if (in_grace_ && now >= grace_end_) EndGrace("its time ran out");
    return ExpiryLoop();
  });
}

void MappingService::Expire(HostLeaseId id, const std::string& why) {
  HostLease* h = leases_.FindHost(id);
  if (h == nullptr || h->fencing) return;
  if (options_.fencer == nullptr || h->pool_clients.empty()) return FinishExpire(id, why);
  // Cut its pool clients off first; until then its openers stay (nobody else may be
  // granted its volumes) and it may not renew.
  h->fencing = true;
  h->blocklisted = true;
  std::string clients;
  for (const auto& c : h->pool_clients) clients += (clients.empty() ? "" : ", ") + c;
  logger_.Warnf("host %s (instance %016llx) expires (%s): fencing its pool clients %s first", h->host.c_str(),
                static_cast<unsigned long long>(h->instance), why.c_str(), clients.c_str());
  tasks_.add(options_.fencer->Fence(h->pool_clients)
                 .then(
                     [this, id, why]() -> kj::Promise<void> {
                       FinishExpire(id, why);
                       return kj::READY_NOW;
                     },
                       [this, id, why](kj::Exception&& e) {
                         logger_.Errorf("fencing failed (%s); its openers stay, trying again in %lld ms",
                                        e.getDescription().cStr(),
                                        static_cast<long long>(options_.fence_retry / kj::MILLISECONDS));
                         return timer_.afterDelay(options_.fence_retry).then([this, id, why]() {
                           if (HostLease* again = leases_.FindHost(id)) again->fencing = false;
                           Expire(id, why);
                         });
                       }));
}

void MappingService::FinishExpire(HostLeaseId id, const std::string& why) {
  HostLease* h = leases_.FindHost(id);
  if (h == nullptr) return;
  std::vector<OpenerId> held = leases_.OpenersHeldBy(id);
  if (!held.empty() || h->resumable()) {  // (a tool session that held nothing goes quietly)
    logger_.Warnf("host %s (instance %016llx) expired: %s; %zu opener(s) released", h->host.c_str(),
                  static_cast<unsigned long long>(h->instance), why.c_str(), held.size());
  }
  for (OpenerId o : held) DropOpener(o);
  if (h->recorded) {
    Status s = store_.ForgetInstance(InstanceRecord{h->host, h->instance});
    if (!s.ok()) logger_.Errorf("forgetting an instance record of %s: %s", h->host.c_str(), s.ToString().c_str());
  }
  leases_.EraseHost(id);
  NotifyChanged();
}

// ---- openers ----

Opener& MappingService::Register(Opener opener) { return leases_.Add(std::move(opener)); }

void MappingService::Orphan(OpenerId id) {
  Opener* o = leases_.Find(id);
  if (o == nullptr) return;
  o->attached = false;
  o->callback = nullptr;
  logger_.Infof("host %s lost its connection; %s stays %s until reclaimed or expired", o->host.c_str(),
                o->volume.c_str(), o->writable ? "rw" : "ro");
  NotifyChanged();
}

void MappingService::Release(OpenerId id) {
  Opener* o = leases_.Find(id);
  if (o == nullptr) return;
  logger_.Infof("host %s closed %s", o->host.c_str(), o->volume.c_str());
  DropOpener(id);
  NotifyChanged();
}

void MappingService::DropOpener(OpenerId id) {
  Opener* o = leases_.Find(id);
  if (o == nullptr) return;
  std::string volume = o->volume;
  bool writable = o->writable;
  store_.DropReservations(id);
  leases_.Remove(id);
  if (writable) {
    Status s = store_.ForgetLease(volume);
    if (!s.ok()) logger_.Errorf("forgetting the lease record of %s: %s", volume.c_str(), s.ToString().c_str());
    if (Opener* standby = leases_.StandbyOf(volume)) Promote(*standby);
  }
}

void MappingService::Promote(Opener& opener) {
  auto epoch = store_.NewLeaseEpoch();
  if (!epoch.ok()) {
    logger_.Errorf("promoting host %s's standby open of %s: %s", opener.host.c_str(), opener.volume.c_str(),
                   epoch.status().ToString().c_str());
    return;
  }
  opener.standby = false;
  opener.writable = true;
  opener.lease_epoch = *epoch;
  Status s = RecordWriter(opener);
  if (!s.ok()) logger_.Errorf("recording the lease of %s: %s", opener.volume.c_str(), s.ToString().c_str());
  logger_.Infof("host %s's standby open of %s now holds the rw lease", opener.host.c_str(), opener.volume.c_str());
  if (opener.attached) {
    // (If it is orphaned, its reclaim tells it: the answer says standby = false.)
    auto req = opener.callback.promotedRequest();
    req.setLeaseEpoch(*epoch);
    tasks_.add(req.send().ignoreResult().catch_([](kj::Exception&&) {}));
  }
}

void MappingService::Revoke(OpenerId id, const std::string& why) {
  Opener* opener = leases_.Find(id);
  if (opener == nullptr || opener->revoked) return;
  logger_.Warnf("revoking host %s's lease on %s: %s", opener->host.c_str(), opener->volume.c_str(),
                why.c_str());
  opener->revoked = true;
  HostLeaseId holder = opener->holder;
  kj::Promise<bool> answered = kj::Promise<bool>(false);
  if (opener->attached) {
    auto req = opener->callback.revokeRequest();
    req.setReason(why);
    answered = req.send().then([](auto) { return true; }, [](kj::Exception&&) { return false; });
  }
  // The host answers once it stopped using the volume: then the opener ends. If it
  // does not, it cannot be trusted to stop: its instance is blocklisted (renewals
  // refused) and expires, fencing itself first.
  auto timed = answered.exclusiveJoin(timer_.afterDelay(options_.callback_timeout).then([]() { return false; }));
  tasks_.add(timed.then([this, id, holder](bool ok) {
    if (ok) {
      Release(id);
      return;
    }
    HostLease* h = leases_.FindHost(holder);
    if (h == nullptr || h->blocklisted) return;
    logger_.Warnf("blocklisting host %s (instance %016llx): it did not answer a revoke; it expires in %lld ms",
                  h->host.c_str(), static_cast<unsigned long long>(h->instance),
                  static_cast<long long>(expiry() / kj::MILLISECONDS));
    h->blocklisted = true;
  }));
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
    if (o->standby) b.setStandby(o->host);
  }
}

kj::Promise<void> MappingService::CallOpeners(std::vector<OpenerId> ids, std::string what,
                                              MakeCall make_call) {
  auto shared_what = std::make_shared<std::string>(kj::mv(what));
  auto shared_call = std::make_shared<MakeCall>(kj::mv(make_call));
  kj::Vector<kj::Promise<void>> calls;
  for (OpenerId id : ids) calls.add(CallOpener(id, shared_what, shared_call));
  return kj::joinPromises(calls.releaseAsArray());
}

kj::Promise<void> MappingService::CallOpener(OpenerId id, std::shared_ptr<std::string> what,
                                             std::shared_ptr<MakeCall> make_call) {
  Opener* opener = leases_.Find(id);
  if (opener == nullptr) return kj::READY_NOW;  // ended: nothing of it is left to recall
  if (opener->revoked || !opener->attached) {
    // Unreachable: it is called again once reclaimed, or counts as answered once
    // released or expired (it may read its old maps until it fences, before that).
    return LeaseChanged().then([this, id, what, make_call]() { return CallOpener(id, what, make_call); });
  }
  const uint64_t attachment = opener->attachment;
  enum class Outcome { kAnswered, kDisconnected, kFailed };
  kj::Promise<Outcome> answered = (*make_call)(opener->callback)
                                      .then([]() { return Outcome::kAnswered; },
                                            [](kj::Exception&& e) {
                                              return e.getType() == kj::Exception::Type::DISCONNECTED
                                                         ? Outcome::kDisconnected
                                                         : Outcome::kFailed;
                                            });
  auto timed = answered.exclusiveJoin(
      timer_.afterDelay(options_.callback_timeout).then([]() { return Outcome::kFailed; }));
  return timed.then([this, id, what, make_call, attachment](Outcome outcome) -> kj::Promise<void> {
    if (outcome == Outcome::kAnswered) return kj::READY_NOW;
    Opener* o = leases_.Find(id);
    if (o == nullptr) return kj::READY_NOW;
    if (outcome == Outcome::kDisconnected) {
      // Its connection is going: wait for the orphaning (or a reclaim) and go again.
      if (o->attached && o->attachment == attachment) {
        return LeaseChanged().then([this, id, what, make_call]() { return CallOpener(id, what, make_call); });
      }
      return CallOpener(id, what, make_call);
    }
    Revoke(id, *what + " was not answered in time or failed");
    return CallOpener(id, what, make_call);
  });
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
