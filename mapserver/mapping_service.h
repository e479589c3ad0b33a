// MappingService: the mapping protocol's server side (include/tapmap/proto/mapping.capnp)
// over a VolumeStore. It owns what the store does not know about: authentication
// (Gate), sessions, openers and the one-writer lease per volume, and the callbacks
// to openers (recall before snapshot/clone/shrink/discard, sizeChanged, revoke).
//
// Leases (mapserver/doc/leases.md; recorded in a LeaseTable): host leases renewed by
// each host instance, expired 1.1 lease times after the last renewal; at most one rw
// opener per volume. An opener ends when closed, revoked or expired; a lost connection
// only orphans it (reclaimable by the same instance). Callbacks (recall, sizeChanged)
// to an orphaned opener wait for its reclaim or expiry; a callback a connected opener
// fails or does not answer within the recall timeout revokes it (revoke() is sent;
// if that is not answered either, its host instance is blocklisted and expires).
// After a restart with recorded rw holders, a grace period admits only their
// reclaims until they all reclaimed or 1.1 lease times passed.
//
// Commits are group-committed: all commits that arrive before the event queue drains
// share one LMDB transaction (one fsync); each is still answered only once durable.
//
// Errors are raised as kj::Exceptions carrying "<code>: <message>"
// (protocol/remote_status.h).
//
// Threading: everything runs on the event-loop thread of the server; the store,
// timer and service must outlive every capability handed out.
#pragma once

#include <kj/async-io.h>
#include <kj/async.h>
#include <kj/timer.h>

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <set>
#include <unordered_map>

#include "common/logging.h"
#include "mapserver/authority.h"
#include "mapserver/lease_table.h"
#include "mapserver/pool_fencer.h"
#include "mapserver/volume_store.h"
#include "tapmap/proto/mapping.capnp.h"

namespace tapmap::mapserver {

// What the server knows of one connection, shared by the capabilities served on it.
struct ConnectionState {
  // Over mutual TLS: the name in the client's certificate (the host logs in as it).
  std::optional<protocol::CertificateName> tls_name;
  bool authenticated = false;  // a login succeeded
  // The connection is gone (set before its capabilities are dropped): a Volume
  // capability dropped now orphans its opener; one dropped while the connection lives
  // was released by the host, which is a close.
  bool ended = false;
};

struct ServiceOptions {
  // How long a recall/sizeChanged callback may take before the lease is revoked.
  kj::Duration callback_timeout = 10 * kj::SECONDS;
  // The host lease time T (leases.md): an instance expires 1.1 T after its last
  // renewal; the grace period after a restart lasts at most 1.1 T.
  kj::Duration lease_time = 15 * kj::SECONDS;
  // Failed logins after which a connection is closed.
  uint32_t max_login_failures = 3;
  // The credential registry that TLS logins are checked against (authority.h);
  // nullopt: no TLS logins.
  std::optional<std::string> credentials_dir;
  // Cuts expired instances off the pool before their openers are released (a RADOS
  // pool: pool_fencer.h); null: hosts fence themselves (a file pool). Not owned; must
  // outlive the service.
  PoolFencer* fencer = nullptr;
  // After a failed fence, the next attempt comes this much later.
  kj::Duration fence_retry = 1 * kj::SECONDS;
};

class MappingService final : private kj::TaskSet::ErrorHandler {
 public:
  // `secret` is the shared secret hosts prove knowledge of.
  MappingService(VolumeStore& store, std::string secret, kj::Timer& timer, Logger logger,
                 ServiceOptions options = {});
  ~MappingService();
  MappingService(const MappingService&) = delete;
  MappingService& operator=(const MappingService&) = delete;

  // The bootstrap capability for a new connection from `peer` (for logs).
  // `close_connection` is fulfilled when the connection must be closed (too many
  // failed logins); the caller then drops the connection. `state->authenticated`
  // becomes true once a login succeeds (the caller closes connections that stay
  // anonymous); the caller sets `state->ended` when the connection is lost, before
  // dropping it.
  proto::Gate::Client NewGate(std::string peer,
                              kj::Own<kj::PromiseFulfiller<void>> close_connection,
                              std::shared_ptr<ConnectionState> state);

  VolumeStore& store() { return store_; }
  size_t opener_count() const { return leases_.size(); }

  // ---- for the capabilities it hands out (Gate, Session, Volume) --------------------
  LeaseTable& leases() { return leases_; }
  const Logger& logger() const { return logger_; }
  // Checks a login (version, an outstanding challenge, the host name, and either the
  // connection's TLS certificate and its credential record or the proof of the shared
  // secret) and says who logged in; a refusal is logged (rate-limited) with `peer`.
  Result<Principal> CheckLogin(const std::string& peer, const ConnectionState& connection,
                               uint32_t client_version, const std::vector<uint8_t>& nonce,
                               const std::string& host, kj::ArrayPtr<const kj::byte> proof);
  // Who may do what (the one place access is decided).
  const Authority& authority() const { return authority_; }
  uint32_t max_login_failures() const { return options_.max_login_failures; }
  // Fulfills `close` a moment later (so that a last refusal still reaches the peer).
  void CloseSoon(kj::Own<kj::PromiseFulfiller<void>> close);

  // ---- host leases (leases.md) ----
  kj::Timer& timer() { return timer_; }
  kj::Duration lease_time() const { return options_.lease_time; }
  // How long after its last renewal an instance expires (1.1 T).
  kj::Duration expiry() const { return options_.lease_time * 11 / 10; }
  // A login of `host`'s `instance`: renews or creates its host lease (`*resumed` says
  // which); other instances of the host are expired at once.
  // `pool_client`: the instance's pool I/O identity now (Gate.login poolClient; "" for
  // none), remembered for fencing it when it expires.
  HostLeaseId Login(const std::string& host, uint64_t instance, bool* resumed, const std::string& pool_client = "");
  // Explicit renewal (Session.renew): false if the instance expired or is blocklisted.
  bool Renew(HostLeaseId id);
  // Implicit renewal by any call of the instance.
  void Touch(HostLeaseId id) { leases_.Renew(id, timer_.now()); }
  bool in_grace() const { return in_grace_; }
  // Resolves when the grace period is over (at once if there is none).
  kj::Promise<void> GraceOver();
  // Resolves at the next change of any opener (released, orphaned, reclaimed, expired)
  // or of the grace period: waiters re-check their condition.
  kj::Promise<void> LeaseChanged();
  void NotifyChanged();
  // In the grace period: if `holder` may reclaim `volume`'s rw lease, claimed with
  // `epoch` (the durable record says it held it, with that epoch or a later one), the
  // recorded epoch (which the lease goes on with); consumes the record's claim.
  std::optional<uint64_t> ClaimRecordedLease(const std::string& volume, const HostLease& holder,
                                             uint64_t epoch);
  // Durably records a new rw opener (resumable holders only) before it is granted.
  Status RecordWriter(const Opener& opener);
  // Durably records that `holder` (if resumable) holds openers, once per instance.
  Status RecordHolder(HostLeaseId holder);
  // Session.reclaimComplete: the instance re-opened all it had (grace period).
  void ReclaimComplete(HostLeaseId id);

  // ---- openers ----
  Opener& Register(Opener opener);
  // The opener's Volume capability was dropped without close (connection lost): the
  // opener stays, orphaned, until reclaimed or expired.
  void Orphan(OpenerId id);
  // Ends an opener (close): lease, record and reservations go.
  void Release(OpenerId id);
  // Revokes a lease: later calls fail aborted and revoke() is sent; once answered the
  // opener is released; unanswered, its instance is blocklisted and expires.
  void Revoke(OpenerId id, const std::string& why);
  // Expires a host instance: every opener it held is released — with a fencer and
  // pool clients known, only once they are fenced (renewals are refused meanwhile; a
  // failed fence is retried after fence_retry, the openers kept).
  void Expire(HostLeaseId id, const std::string& why);
  // Recalls `ranges` of `volume` from its openers other than `except` (their cached
  // maps), keeping `freed` pool blocks out of allocation until every one answered
  // (or was revoked): a host must never read a block through a stale map after the
  // block went to someone else.
  kj::Promise<void> RecallFromOthers(const std::string& volume, OpenerId except,
                                     std::vector<ByteRange> ranges, std::vector<uint64_t> freed,
                                     std::string what);
  void FillInfo(proto::VolumeInfo::Builder builder, const VolumeDescription& d);
  // Calls `make_call(callback)` on each listed opener (by id) and waits for all: an
  // orphaned opener is called once reclaimed (or counts as answered once expired); a
  // connected one that fails or times out is revoked and counts as answered once
  // released.
  using MakeCall = std::function<kj::Promise<void>(proto::MapCallback::Client&)>;
  kj::Promise<void> CallOpeners(std::vector<OpenerId> ids, std::string what, MakeCall make_call);
  // Group commit: commits arriving while the event queue is busy are applied together
  // in one durable transaction when it drains (kj::evalLast), so concurrent writers
  // share one fsync. Each commit still succeeds or fails on its own, and is answered
  // once durable and recalled from the volume's other openers.
  kj::Promise<void> QueueCommit(VolumeStore::CommitRequest request);

 private:
  void taskFailed(kj::Exception&& exception) override;
  void FlushCommits();
  kj::Promise<void> CallOpener(OpenerId id, std::shared_ptr<std::string> what,
                               std::shared_ptr<MakeCall> make_call);
  void DropOpener(OpenerId id);
  // The part of Expire after the fence.
  void FinishExpire(HostLeaseId id, const std::string& why);
  void Promote(Opener& standby);
  void EndGrace(const std::string& why);
  kj::Promise<void> ExpiryLoop();
  struct PendingCommit {
    VolumeStore::CommitRequest request;
    kj::Own<kj::PromiseFulfiller<void>> done;
  };

  VolumeStore& store_;
  std::string secret_;
  kj::Timer& timer_;
  Logger logger_;
  ServiceOptions options_;
  Authority authority_;
  RateLimiter auth_log_limiter_{10, std::chrono::seconds(60)};
  LeaseTable leases_;
  // The grace period after a restart: recorded rw leases not yet reclaimed, and the
  // recorded host instances that have not said reclaimComplete (nor died).
  bool in_grace_ = false;
  kj::TimePoint grace_end_ = kj::origin<kj::TimePoint>();
  std::unordered_map<std::string, LeaseRecord> unclaimed_;
  std::set<std::pair<std::string, uint64_t>> unreclaimed_instances_;
  kj::Own<kj::PromiseFulfiller<void>> changed_;
  kj::ForkedPromise<void> changed_promise_;
  std::vector<PendingCommit> pending_commits_;
  bool flush_scheduled_ = false;
  kj::TaskSet tasks_;
};

}  // namespace tapmap::mapserver
