// MappingService: the mapping protocol's server side (include/tapmap/proto/mapping.capnp)
// over a VolumeStore. It owns what the store does not know about: authentication
// (Gate), sessions, openers and the one-writer lease per volume, and the callbacks
// to openers (recall before snapshot/clone/shrink/discard, sizeChanged, revoke).
//
// Leases (recorded in a LeaseTable): at most one rw opener per volume. The lease ends when its Volume
// capability is closed or dropped (the connection's loss drops it); its uncommitted
// reservations are then reclaimed. Before a snapshot or clone of a volume that has a
// writer, the writer's MapCallback.recall(whole volume, snapshot|clone) must answer
// within the recall timeout; if it fails or times out the lease is revoked (revoke()
// is sent, reservations are dropped, and every later call on that Volume fails with
// aborted) and the snapshot proceeds.
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
#include <memory>
#include <string>
#include <unordered_map>

#include "common/logging.h"
#include "mapserver/lease_table.h"
#include "mapserver/volume_store.h"
#include "tapmap/proto/mapping.capnp.h"

namespace tapmap::mapserver {

struct ServiceOptions {
  // How long a recall/sizeChanged callback may take before the lease is revoked.
  kj::Duration callback_timeout = 10 * kj::SECONDS;
  // Failed logins after which a connection is closed.
  uint32_t max_login_failures = 3;
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
  // failed logins); the caller then drops the connection. `*authenticated` becomes
  // true once a login succeeds (the caller closes connections that stay anonymous).
  proto::Gate::Client NewGate(std::string peer,
                              kj::Own<kj::PromiseFulfiller<void>> close_connection,
                              std::shared_ptr<bool> authenticated);

  VolumeStore& store() { return store_; }
  size_t opener_count() const { return leases_.size(); }

  // ---- for the capabilities it hands out (Gate, Session, Volume) --------------------
  LeaseTable& leases() { return leases_; }
  const Logger& logger() const { return logger_; }
  // Checks a login (version, an outstanding challenge, the host name, the proof of the
  // shared secret); a refusal is logged (rate-limited) with `peer`.
  Status CheckLogin(const std::string& peer, uint32_t client_version, const std::vector<uint8_t>& nonce,
                    const std::string& host, kj::ArrayPtr<const kj::byte> proof);
  uint32_t max_login_failures() const { return options_.max_login_failures; }
  // Fulfills `close` a moment later (so that a last refusal still reaches the peer).
  void CloseSoon(kj::Own<kj::PromiseFulfiller<void>> close);

  void Register(Opener* opener);
  // Ends `opener`'s registration (close, drop): lease and reservations go.
  void Release(Opener* opener);
  // Revokes a lease: reservations dropped, revoke() sent, later calls fail aborted.
  void Revoke(OpenerId id, const std::string& why);
  // Recalls `ranges` of `volume` from its openers other than `except` (their cached
  // maps), keeping `freed` pool blocks out of allocation until every one answered
  // (or was revoked): a host must never read a block through a stale map after the
  // block went to someone else.
  kj::Promise<void> RecallFromOthers(const std::string& volume, OpenerId except,
                                     std::vector<ByteRange> ranges, std::vector<uint64_t> freed,
                                     std::string what);
  void FillInfo(proto::VolumeInfo::Builder builder, const VolumeDescription& d);
  // Calls `make_call(callback)` on each listed opener (by id) and waits for all;
  // an opener that fails or times out is revoked.
  kj::Promise<void> CallOpeners(
      std::vector<OpenerId> ids, std::string what,
      kj::Function<kj::Promise<void>(proto::MapCallback::Client&)> make_call);
  // Group commit: commits arriving while the event queue is busy are applied together
  // in one durable transaction when it drains (kj::evalLast), so concurrent writers
  // share one fsync. Each commit still succeeds or fails on its own, and is answered
  // once durable and recalled from the volume's other openers.
  kj::Promise<void> QueueCommit(VolumeStore::CommitRequest request);

 private:
  void taskFailed(kj::Exception&& exception) override;
  void FlushCommits();
  struct PendingCommit {
    VolumeStore::CommitRequest request;
    kj::Own<kj::PromiseFulfiller<void>> done;
  };

  VolumeStore& store_;
  std::string secret_;
  kj::Timer& timer_;
  Logger logger_;
  ServiceOptions options_;
  RateLimiter auth_log_limiter_{10, std::chrono::seconds(60)};
  LeaseTable leases_;
  std::vector<PendingCommit> pending_commits_;
  bool flush_scheduled_ = false;
  kj::TaskSet tasks_;
};

}  // namespace tapmap::mapserver
