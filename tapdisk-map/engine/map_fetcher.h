// MapFetcher: brings the maps an open volume's I/O needs into its MapCache. It finds
// what is missing, fetches an aligned read-ahead window around each miss (one fetch in
// flight per window: concurrent misses join it), refuses answers that name pool space
// outside the data area, and drops answers that a recall or a reconnection made stale
// (MapCache::epoch): their waiters look again and fetch again. Ensure loops until the
// whole range is mapped, with a bound, so a server that keeps answering short of a
// range cannot spin it.
//
//   auto fetcher = std::make_shared<MapFetcher>(cache, options, host_counters);
//   fetcher->Ensure(remote, size, offset, length, [](Status s) { ... map_->Find(...) });
//
// Ownership: shared; an answer in flight keeps the fetcher, and the cache it fills,
// alive. Threading: thread-safe; `done` runs on the thread that delivered the answer
// (the io_context's), or inline when nothing was missing.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "common/status.h"
#include "tapdisk-map/engine/extent.h"
#include "tapdisk-map/engine/map_cache.h"
#include "tapdisk-map/engine/mapping_client.h"
#include "tapdisk-map/engine/stats.h"

namespace tapmap::engine {

// The part of the pool the server may hand out: [start, end). Every extent an answer
// names must lie in it, block-aligned for O_DIRECT, or the answer is corrupt.
struct PoolDataArea {
  uint64_t start = 0;
  uint64_t end = 0;
  Status Check(uint64_t physical, uint64_t length) const;
};

class MapFetcher : public std::enable_shared_from_this<MapFetcher> {
 public:
  struct Options {
    std::string volume;                     // for messages
    uint64_t readahead_bytes = 64ull << 20;  // the window fetched around a miss
    PoolDataArea pool;
  };
  using Done = std::function<void(Status)>;

  // `host_counters` receives the map_fetches count too.
  MapFetcher(std::shared_ptr<MapCache> cache, Options options, std::shared_ptr<IoCounters> host_counters);

  // Makes sure the maps of [offset, offset+length) of a volume of `size` bytes are in
  // the cache, fetching what is missing through `remote`.
  void Ensure(std::shared_ptr<RemoteVolume> remote, uint64_t size, uint64_t offset, uint64_t length, Done done);

  // Map RPCs this fetcher sent.
  uint64_t fetches() const { return fetches_sent_.load(std::memory_order_relaxed); }

 private:
  struct Fetch {
    ByteRange window;
    std::vector<Done> waiters;
  };
  void EnsureFrom(std::shared_ptr<RemoteVolume> remote, uint64_t size, uint64_t offset, uint64_t length,
                  int fetches, Done done);
  void FetchWindow(const std::shared_ptr<RemoteVolume>& remote, uint64_t size, const ByteRange& missing, Done done);

  const std::shared_ptr<MapCache> cache_;
  const Options options_;
  const std::shared_ptr<IoCounters> host_counters_;
  std::atomic<uint64_t> fetches_sent_{0};
  std::mutex mu_;
  // Fetches whose answers are awaited; each is owned by its pending answer (weakly
  // held here, so a dropped answer leaves no cycle through its waiters). Guarded by mu_.
  std::vector<std::weak_ptr<Fetch>> in_flight_;
};

}  // namespace tapmap::engine
