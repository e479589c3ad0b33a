#include "tapdisk-map/engine/map_fetcher.h"

#include <algorithm>

#include "common/units.h"
#include "tapdisk-map/pool/aligned_buffer.h"

namespace tapmap::engine {

Status PoolDataArea::Check(uint64_t physical, uint64_t length) const {
  if (physical < start || physical > end || length > end - physical ||
      !IsAligned(physical, pool::kDirectIoAlignment)) {
    return Status::Corruption("mapserver handed out pool offset " + std::to_string(physical) +
                              " outside the pool's data area [" + std::to_string(start) + ", " +
                              std::to_string(end) + ")");
  }
  return Status::Ok();
}

MapFetcher::MapFetcher(std::shared_ptr<MapCache> cache, Options options, std::shared_ptr<IoCounters> host_counters)
    : cache_(std::move(cache)), options_(std::move(options)), host_counters_(std::move(host_counters)) {}

void MapFetcher::Ensure(std::shared_ptr<RemoteVolume> remote, uint64_t size, uint64_t offset, uint64_t length,
                        Done done) {
  EnsureFrom(std::move(remote), size, offset, length, 0, std::move(done));
}

void MapFetcher::EnsureFrom(std::shared_ptr<RemoteVolume> remote, uint64_t size, uint64_t offset, uint64_t length,
                            int fetches, Done done) {
  auto missing = cache_->FirstMissing(offset, length);
  if (!missing) return done(Status::Ok());
  // Each fetch maps at least the first missing block unless a recall or reconnection
  // intervened; a bound stops a server answering short of the range from looping us.
  const int max_fetches = 64 + static_cast<int>(length / options_.readahead_bytes);
  if (fetches >= max_fetches) {
    return done(Status::Unavailable("map of " + options_.volume + " at " + std::to_string(missing->offset) +
                                    " keeps missing after " + std::to_string(fetches) + " fetches"));
  }
  auto self = shared_from_this();
  // (The continuation holds the remote weakly: the remote's pending answer holds this
  // fetcher, and a strong reference back would make a cycle if it is never answered.)
  std::weak_ptr<RemoteVolume> weak_remote = remote;
  FetchWindow(remote, size, *missing, [self, weak_remote, size, offset, length, fetches, done](Status s) {
    if (!s.ok()) return done(s);
    auto remote = weak_remote.lock();
    if (!remote) return done(Status::Unavailable("volume " + self->options_.volume + " was closed"));
    self->EnsureFrom(std::move(remote), size, offset, length, fetches + 1, done);  // the next gap, or a re-fetch
  });
}

void MapFetcher::FetchWindow(const std::shared_ptr<RemoteVolume>& remote, uint64_t size, const ByteRange& missing,
                             Done done) {
  std::shared_ptr<Fetch> fetch;
  {
    std::lock_guard<std::mutex> lock(mu_);
    std::erase_if(in_flight_, [](const std::weak_ptr<Fetch>& f) { return f.expired(); });
    for (auto& weak : in_flight_) {
      auto f = weak.lock();
      if (f && missing.offset >= f->window.offset && missing.offset < f->window.end()) {
        f->waiters.push_back(std::move(done));  // single flight per window
        return;
      }
    }
    // Read-ahead: the aligned window of readahead_bytes around the miss, but at least
    // the missing range itself, within the volume. (The volume's size need not be a
    // multiple of the block size; the server rounds the request out to whole blocks.)
    uint64_t start = AlignDown(missing.offset, options_.readahead_bytes);
    uint64_t end = std::min(std::max(start + options_.readahead_bytes, missing.end()), size);
    if (end > missing.offset) {
      fetch = std::make_shared<Fetch>();
      fetch->window = ByteRange{start, end - start};
      fetch->waiters.push_back(std::move(done));
      in_flight_.push_back(fetch);
    }
  }
  if (!fetch) {
    // The volume shrank under the request.
    return done(Status::InvalidArgument("range at " + std::to_string(missing.offset) + " is beyond the end of " +
                                        options_.volume));
  }
  fetches_sent_.fetch_add(1, std::memory_order_relaxed);
  host_counters_->map_fetches.fetch_add(1, std::memory_order_relaxed);
  const uint64_t epoch = cache_->epoch();
  auto self = shared_from_this();
  remote->Map(fetch->window.offset, fetch->window.length, [self, fetch, epoch](Result<MapReply> reply) {
    Status status;
    if (reply.ok()) {
      for (const Extent& e : reply->extents) {
        if (e.state != ExtentState::kHole) {
          Status s = self->options_.pool.Check(e.physical, e.length);
          if (!s.ok()) status = s;
        }
      }
      // A stale answer (a recall or reconnection happened meanwhile) is not installed;
      // the waiters find the range still missing and fetch again.
      if (status.ok()) self->cache_->Insert(reply->extents, epoch);
    } else {
      status = reply.status().WithContext("map " + self->options_.volume);
    }
    std::vector<Done> waiters;
    {
      std::lock_guard<std::mutex> lock(self->mu_);
      waiters = std::move(fetch->waiters);
      std::erase_if(self->in_flight_, [&](const std::weak_ptr<Fetch>& f) {
        auto locked = f.lock();
        return !locked || locked == fetch;
      });
    }
    for (auto& w : waiters) w(status);
  });
}

}  // namespace tapmap::engine
