// FencedPoolIo: the pool as the volumes see it — every read and write waits while
// this host's lease is not valid (HostLease: the host is fenced), so that no pool I/O
// is issued after the point where the mapserver may give this host's volumes to
// another host (mapserver/doc/leases.md). An I/O waits at most `hold` and then fails
// with unavailable; one waiting when the lease turns out lost (the server did not
// resume this host) fails with aborted. Syncs pass (they write nothing new).
//
// Threading and callbacks: as PoolIo (pool_io.h); the inner PoolIo and the lease must
// outlive this object.
#pragma once

#include <chrono>
#include <memory>

#include "tapdisk-map/engine/host_lease.h"
#include "tapdisk-map/pool/pool_io.h"

namespace tapmap::engine {

class FencedPoolIo final : public pool::PoolIo {
 public:
  FencedPoolIo(pool::PoolIo& inner, std::shared_ptr<HostLease> lease, std::chrono::milliseconds hold)
      : inner_(inner), lease_(std::move(lease)), hold_(hold) {}

  void Read(uint64_t offset, std::span<uint8_t> buffer, pool::PoolDone done) override;
  void Write(uint64_t offset, std::span<const uint8_t> data, pool::PoolDone done) override;
  void WriteV(uint64_t offset, std::vector<std::span<const uint8_t>> pieces, pool::PoolDone done) override;
  void Sync(pool::PoolDone done) override { inner_.Sync(std::move(done)); }
  std::string_view kind() const override { return inner_.kind(); }
  bool direct() const override { return inner_.direct(); }
  pool::PoolIoCounters counters() const override { return inner_.counters(); }
  std::string client_identity() const override { return inner_.client_identity(); }
  Status RenewClient() override { return inner_.RenewClient(); }

 private:
  // Runs `issue` now if the lease is valid, else once it is (or fails `done`).
  void Gate(std::function<void()> issue, pool::PoolDone done);

  pool::PoolIo& inner_;
  const std::shared_ptr<HostLease> lease_;
  const std::chrono::milliseconds hold_;
};

}  // namespace tapmap::engine
