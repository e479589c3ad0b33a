// MappingClient: the engine's side of the mapping protocol. Cap'n Proto RPC runs on a
// thread of its own with a KJ event loop; the engine's data path runs on the asio
// io_context. This class is the bridge, both ways:
//
//   asio -> KJ:  every call (Open, Map, PrepareWrite, ...) is queued to the RPC thread
//                (a mutex-protected queue plus an eventfd the KJ loop watches) and returns
//                at once. No data-path thread ever waits for an RPC.
//   KJ -> asio:  results and server events (recall, revoke, sizeChanged) are posted to
//                the io_context.
//
// Connection loss: the client reconnects (exponential backoff, 100 ms .. 5 s), logs in
// again, re-opens every open volume in its mode and tells the volume (OnReopened) that
// maps and reservations from before are void. Calls made meanwhile, and calls cut off
// by the loss, wait and are re-sent on the new connection; a call still unsent after
// `unavailable_timeout` fails with unavailable.
//
// Lifetime: destroy every RemoteVolume's users before the MappingClient; destroying it
// stops the RPC thread and closes the connection (the server then releases leases and
// reservations). Callbacks not yet run are dropped uncalled once the io_context stops.
#pragma once

#include <boost/asio/io_context.hpp>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "common/logging.h"
#include "common/status.h"
#include "tapdisk-map/engine/extent.h"
#include "protocol/tls.h"
#include "tapdisk-map/engine/host_lease.h"

namespace tapmap::engine {

struct PoolInfo {
  uint32_t block_size = 0;
  std::string uuid;
};

struct VolumeOpenInfo {
  std::string name;
  uint64_t size_bytes = 0;
  bool read_only = false;
  bool standby = false;  // a rw open made a standby: another host holds the lease
};

struct MapReply {
  std::vector<Extent> extents;
  uint64_t size_bytes = 0;
};

// One page of Session.diff (mapping.capnp): the byte ranges whose committed mapping
// differs between two volumes of one version set, in order; next_offset is where the
// next page starts, 0 when there is none.
struct ChangedExtent {
  uint64_t offset = 0;
  uint64_t length = 0;
  bool zero = false;  // reads as zeros in the later volume
};
struct DiffPage {
  std::vector<ChangedExtent> extents;
  uint64_t next_offset = 0;
};

// One page of Volume.sharedRanges (mapping.capnp): byte ranges of the volume whose
// committed blocks it shares with another volume; next_offset is where the next page
// starts, 0 when there is none (a page may be empty and still have a next one).
struct SharedPage {
  std::vector<ByteRange> ranges;
  uint64_t next_offset = 0;
};

// What the server tells an opener about its volume; implemented by Volume. Every
// method is called on an io_context thread.
class VolumeEvents {
 public:
  virtual ~VolumeEvents() = default;
  // Apply the recall, finish in-flight writes to the ranges, then call `done` (from any
  // thread, exactly once); the server waits for it.
  virtual void OnRecall(std::vector<ByteRange> ranges, RecallReason reason,
                        std::function<void()> done) = 0;
  // The rw lease is gone; uncommitted reservations are void.
  virtual void OnRevoke(std::string reason) = 0;
  virtual void OnSizeChanged(uint64_t size_bytes) = 0;
  // The volume was opened again on a new connection (after a loss). `kept`: the
  // server resumed the same opener (mapserver/doc/leases.md "Reclaim"): maps and
  // reservations are still good. Otherwise cached maps may be stale and uncommitted
  // reservations are gone.
  virtual void OnReopened(uint64_t size_bytes, bool kept) = 0;
  // Called on the RPC thread (unlike the others), before the host lease is renewed
  // after a login the server did not resume: the opener may be gone, so new requests
  // must wait until OnReopened or OnRevoke. Must not block.
  virtual void SuspendLease() = 0;
  // This opener, a standby, now holds the rw lease (mapping.capnp MapCallback.promoted).
  virtual void OnPromoted() = 0;
};

// One open volume on the server. Methods may be called from any thread; `done` is
// posted to the io_context. Calls made before the (re)open completes wait for it.
class RemoteVolume {
 public:
  virtual ~RemoteVolume() = default;
  virtual void Map(uint64_t offset, uint64_t length, std::function<void(Result<MapReply>)> done) = 0;
  virtual void PrepareWrite(std::vector<ByteRange> ranges,
                            std::function<void(Result<std::vector<Extent>>)> done) = 0;
  virtual void Commit(std::vector<Extent> extents, std::function<void(Status)> done) = 0;
  virtual void Discard(std::vector<ByteRange> ranges, std::function<void(Status)> done) = 0;
  // Ends the opener. No events are delivered after `done`.
  virtual void Close(std::function<void(Status)> done) = 0;
  // Session.diff from volume `from` to this one, from `start_offset`, at most
  // `max_extents` (1..65536) extents. Sees committed mappings only. The default (test
  // doubles): not-supported.
  virtual void Diff(std::string from, uint64_t start_offset, uint32_t max_extents,
                    std::function<void(Result<DiffPage>)> done) {
    (void)from;
    (void)start_offset;
    (void)max_extents;
    done(Status::NotSupported("diff"));
  }
  // Volume.sharedRanges from `start_offset`, at most `max_ranges` (1..65536) ranges.
  // The default (test doubles): not-supported.
  virtual void SharedRanges(uint64_t start_offset, uint32_t max_ranges,
                            std::function<void(Result<SharedPage>)> done) {
    (void)start_offset;
    (void)max_ranges;
    done(Status::NotSupported("sharedRanges"));
  }
};

class MappingClient {
 public:
  struct Options {
    // "unix:PATH" or "tcp:HOST:PORT", or several comma-separated (active and standby
    // mapservers, tried in turn: protocol/server_address.h ParseServerAddressList)
    std::string server;
    std::string host;      // login host name
    std::string secret;    // shared secret
    std::shared_ptr<protocol::TlsConfig> tls;  // mutual TLS for a TCP server (null: secret)
    std::chrono::milliseconds unavailable_timeout{60000};
    // Fencing on a RADOS pool (Gate.login poolClient, mapserver/pool_fencer.h): the
    // identity this host's pool I/O goes under, sent at every login, and how to replace
    // it. The client replaces it before logging in again after this host fenced itself
    // or the server refused a renewal (the server may blocklist the old one). Called
    // on the RPC thread (renew may block up to the pool's connect timeout). Null: none.
    std::function<std::string()> pool_identity;
    std::function<Status()> renew_pool_identity;
    // Longest a connection attempt (TCP, TLS, challenge, login) may take before it is
    // given up and the next address tried; once the server's lease time T is known, at
    // most T/4 (a host must reach a new active mapserver within its grace period).
    std::chrono::milliseconds connect_timeout{5000};
    std::chrono::milliseconds min_backoff{100};
    std::chrono::milliseconds max_backoff{5000};
  };

  // Starts the RPC thread, which connects in the background. `io` must outlive this.
  // Fails (invalid-argument) on a malformed server address.
  static Result<std::unique_ptr<MappingClient>> Create(boost::asio::io_context& io, Options options,
                                                       const Logger& log);
  ~MappingClient();
  MappingClient(const MappingClient&) = delete;
  MappingClient& operator=(const MappingClient&) = delete;

  bool connected() const;
  // This host's lease at the server (mapserver/doc/leases.md), renewed by the client.
  std::shared_ptr<HostLease> lease() const;

  // The pool's block size and uuid, once logged in (waits up to unavailable_timeout).
  void GetPoolInfo(std::function<void(Result<PoolInfo>)> done);

  using OpenResult = std::pair<std::shared_ptr<RemoteVolume>, VolumeOpenInfo>;
  // Opens `name`. `events` receives the server's callbacks for as long as it lives and
  // the volume is not closed.
  void Open(const std::string& name, bool read_only, std::weak_ptr<VolumeEvents> events,
            std::function<void(Result<OpenResult>)> done);

  // What the server says about volume `name` (size, whether it is a read-only
  // snapshot) without opening it: no opener, no lease. Waits for the connection like
  // Open; not-found for an unknown name.
  void Describe(const std::string& name, std::function<void(Result<VolumeOpenInfo>)> done);

  class Impl;

 private:
  explicit MappingClient(std::shared_ptr<Impl> impl) : impl_(std::move(impl)) {}
  std::shared_ptr<Impl> impl_;
};

}  // namespace tapmap::engine
