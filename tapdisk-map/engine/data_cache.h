// DataCache: the host's cache of pool blocks, keyed by PHYSICAL location and
// allocation generation, shared by every volume the process has open. A golden-image
// block that 200 clones map to is one entry, read from the pool once.
//
// Keys: (pool, physical offset of the block, generation). The generation comes from
// the mapserver's Extent; a block freed and allocated again gets a new generation, so
// an entry can never be served for a later owner's data.
//
// What may be cached is the caller's decision (see volume.cc): `shared` blocks, and
// `owned` blocks of a volume this host holds the rw lease of (after writing such a
// block in place the writer calls Put or Invalidate). Never an `owned` block seen by a
// read-only opener.
//
// Policy: 2Q (Johnson & Shasha, VLDB '94) — a FIFO for blocks seen once, an LRU for
// blocks referenced again, and a ghost list remembering recently evicted once-seen
// keys. See doc/cache.md for why it suits boot storms and scans.
//
// Misses are single-flight: concurrent Get()s of one missing key run the loader once
// and all receive its result.
//
// Threading: all methods are thread-safe. Callbacks are invoked without internal
// locks held, either inline (hit) or from the loader's completion.
#pragma once

#include <cstdint>
#include <functional>
#include <list>
#include <memory>
#include <mutex>
#include <span>
#include <unordered_map>
#include <vector>

#include "common/status.h"
#include "tapdisk-map/pool/aligned_buffer.h"

namespace tapmap::engine {

struct BlockKey {
  uint32_t pool = 0;        // which pool (an engine has one; kept for clarity of the key)
  uint64_t physical = 0;    // byte offset of the block in the pool
  uint64_t generation = 0;  // allocation generation of the block
  bool operator==(const BlockKey&) const = default;
};

struct BlockKeyHash {
  size_t operator()(const BlockKey& k) const {
    uint64_t h = k.physical * 0x9E3779B97F4A7C15ull;
    h ^= (k.generation + 0x632BE59BD9B4E019ull + (uint64_t(k.pool) << 48)) * 0xC2B2AE3D27D4EB4Full;
    return static_cast<size_t>(h ^ (h >> 31));
  }
};

// One block's content. Immutable once published: a write makes a new BlockData.
using BlockData = std::shared_ptr<const pool::AlignedBuffer>;

struct DataCacheCounters {
  uint64_t hits = 0;          // served from the cache
  uint64_t coalesced = 0;     // missed, but joined a load already in flight (no pool read)
  uint64_t misses = 0;        // started a load
  uint64_t evictions = 0;
  uint64_t bytes = 0;         // currently cached
  uint64_t capacity_bytes = 0;
};

class DataCache {
 public:
  // Holds at most max(1, capacity_bytes / block_size) blocks of `block_size` bytes.
  DataCache(uint64_t capacity_bytes, uint32_t block_size);
  DataCache(const DataCache&) = delete;
  DataCache& operator=(const DataCache&) = delete;

  // What Get did for one caller.
  struct GetInfo {
    bool hit = false;       // no pool read was needed on behalf of this caller
    uint32_t evicted = 0;   // entries evicted to make room for this caller's load
  };
  // Delivers the block (or the load's error) to `done`.
  using GetDone = std::function<void(Result<BlockData> block, GetInfo info)>;
  using LoadDone = std::function<void(Result<BlockData>)>;
  // Starts reading a block; must call its argument exactly once.
  using Loader = std::function<void(LoadDone loaded)>;

  // Returns the cached block (calls `done` inline), or joins the load in flight for
  // `key`, or calls `loader` (inline, outside locks) and caches what it loads. A load
  // error is not cached. A load overtaken by Put/Invalidate of its key is delivered
  // to its waiters but not cached.
  void Get(const BlockKey& key, const Loader& loader, GetDone done);

  // Non-blocking lookup that counts as a reference; nullptr if absent.
  BlockData Lookup(const BlockKey& key);

  // Installs `data` (block_size bytes) as the content of `key`, replacing any entry.
  // Returns the number of entries evicted to make room.
  uint32_t Put(const BlockKey& key, BlockData data);
  // Drops `key` if present.
  void Invalidate(const BlockKey& key);
  // The host wrote `data` at byte `offset` inside block `key`: a cached copy is
  // replaced by a patched copy (readers holding the old BlockData are unaffected); a
  // load in flight is kept out of the cache. Does nothing else if `key` is absent.
  void Patch(const BlockKey& key, size_t offset, std::span<const uint8_t> data);

  uint32_t block_size() const { return block_size_; }
  DataCacheCounters counters() const;

 private:
  enum class Queue : uint8_t { kIn, kMain };  // A1in (FIFO) or Am (LRU)
  struct Entry {
    BlockKey key;
    BlockData data;
    Queue queue;
  };
  using EntryList = std::list<Entry>;
  struct Pending {
    std::vector<GetDone> waiters;
    bool overtaken = false;  // Put/Invalidate ran while loading: do not cache
    bool to_main = false;    // key was in the ghost list: goes straight to Am
  };

  // Both return the number of entries evicted.
  uint32_t InsertLocked(const BlockKey& key, BlockData data, Queue queue);
  bool EvictLocked();
  void RemoveLocked(EntryList::iterator it);
  void RememberGhostLocked(const BlockKey& key);
  bool TakeGhostLocked(const BlockKey& key);
  void LoadFinished(const BlockKey& key, Result<BlockData> result);

  const uint32_t block_size_;
  const uint64_t max_blocks_;
  const uint64_t max_in_blocks_;     // Kin: 25% of the capacity
  const uint64_t max_ghost_keys_;    // Kout: 50% of the capacity (keys only)

  mutable std::mutex mu_;
  EntryList in_;     // A1in: front = newest
  EntryList main_;   // Am: front = most recently used
  std::unordered_map<BlockKey, EntryList::iterator, BlockKeyHash> index_;
  std::list<BlockKey> ghosts_;       // A1out: front = newest
  std::unordered_map<BlockKey, std::list<BlockKey>::iterator, BlockKeyHash> ghost_index_;
  std::unordered_map<BlockKey, std::shared_ptr<Pending>, BlockKeyHash> pending_;
  DataCacheCounters counters_;
};

}  // namespace tapmap::engine
