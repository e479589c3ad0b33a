#include "tapdisk-map/engine/fenced_pool_io.h"

namespace tapmap::engine {

void FencedPoolIo::Gate(std::function<void()> issue, pool::PoolDone done) {
  lease_->WhenValid(HostLease::Clock::now() + hold_, [issue = std::move(issue), done = std::move(done)](Status s) {
    if (!s.ok()) return done(s);
    issue();
  });
}

// (Each checks the lease first: the common, valid case costs no allocation.)
void FencedPoolIo::Read(uint64_t offset, std::span<uint8_t> buffer, pool::PoolDone done) {
  if (lease_->Valid()) return inner_.Read(offset, buffer, std::move(done));
  Gate([this, offset, buffer, done]() { inner_.Read(offset, buffer, done); }, done);
}

void FencedPoolIo::Write(uint64_t offset, std::span<const uint8_t> data, pool::PoolDone done) {
  if (lease_->Valid()) return inner_.Write(offset, data, std::move(done));
  Gate([this, offset, data, done]() { inner_.Write(offset, data, done); }, done);
}

void FencedPoolIo::WriteV(uint64_t offset, std::vector<std::span<const uint8_t>> pieces, pool::PoolDone done) {
  if (lease_->Valid()) return inner_.WriteV(offset, std::move(pieces), std::move(done));
  auto shared = std::make_shared<std::vector<std::span<const uint8_t>>>(std::move(pieces));
  Gate([this, offset, shared, done]() { inner_.WriteV(offset, std::move(*shared), done); }, done);
}

}  // namespace tapmap::engine
