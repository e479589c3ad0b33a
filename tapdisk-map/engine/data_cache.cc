#include "tapdisk-map/engine/data_cache.h"

#include <algorithm>
#include <cstring>

namespace tapmap::engine {

DataCache::DataCache(uint64_t capacity_bytes, uint32_t block_size)
    : block_size_(block_size),
      max_blocks_(std::max<uint64_t>(1, capacity_bytes / block_size)),
      max_in_blocks_(std::max<uint64_t>(1, max_blocks_ / 4)),
      max_ghost_keys_(std::max<uint64_t>(1, max_blocks_ / 2)) {
  counters_.capacity_bytes = max_blocks_ * block_size;
}

DataCacheCounters DataCache::counters() const {
  std::lock_guard<std::mutex> lock(mu_);
  return counters_;
}

BlockData DataCache::Lookup(const BlockKey& key) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = index_.find(key);
  if (it == index_.end()) return nullptr;
  EntryList::iterator e = it->second;
  if (e->queue == Queue::kMain) main_.splice(main_.begin(), main_, e);
  // A hit in A1in leaves the entry where it is: a burst of correlated references
  // (one VM reading a block twice in quick succession) must not make it "hot".
  counters_.hits++;
  return e->data;
}

void DataCache::Get(const BlockKey& key, const Loader& loader, GetDone done) {
  {
    std::unique_lock<std::mutex> lock(mu_);
    auto it = index_.find(key);
    if (it != index_.end()) {
      EntryList::iterator e = it->second;
      if (e->queue == Queue::kMain) main_.splice(main_.begin(), main_, e);
      counters_.hits++;
      BlockData data = e->data;
      lock.unlock();
      done(std::move(data), GetInfo{true, 0});
      return;
    }
    auto p = pending_.find(key);
    if (p != pending_.end()) {
      counters_.coalesced++;
      p->second->waiters.push_back(std::move(done));
      return;
    }
    counters_.misses++;
    auto pending = std::make_shared<Pending>();
    pending->to_main = TakeGhostLocked(key);
    pending->waiters.push_back(std::move(done));
    pending_.emplace(key, std::move(pending));
  }
  loader([this, key](Result<BlockData> result) { LoadFinished(key, std::move(result)); });
}

void DataCache::LoadFinished(const BlockKey& key, Result<BlockData> result) {
  std::shared_ptr<Pending> pending;
  uint32_t evicted = 0;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto p = pending_.find(key);
    if (p == pending_.end()) return;  // cannot happen: one load per pending entry
    pending = std::move(p->second);
    pending_.erase(p);
    if (result.ok() && !pending->overtaken && index_.find(key) == index_.end()) {
      evicted = InsertLocked(key, *result, pending->to_main ? Queue::kMain : Queue::kIn);
    }
  }
  // The first waiter caused the pool read; the others were spared it.
  bool first = true;
  for (auto& waiter : pending->waiters) {
    if (result.ok()) waiter(*result, GetInfo{!first, first ? evicted : 0});
    else waiter(result.status(), GetInfo{});
    first = false;
  }
}

uint32_t DataCache::Put(const BlockKey& key, BlockData data) {
  std::lock_guard<std::mutex> lock(mu_);
  auto p = pending_.find(key);
  if (p != pending_.end()) p->second->overtaken = true;
  auto it = index_.find(key);
  if (it != index_.end()) {
    it->second->data = std::move(data);
    return 0;
  }
  return InsertLocked(key, std::move(data), TakeGhostLocked(key) ? Queue::kMain : Queue::kIn);
}

void DataCache::Invalidate(const BlockKey& key) {
  std::lock_guard<std::mutex> lock(mu_);
  auto p = pending_.find(key);
  if (p != pending_.end()) p->second->overtaken = true;
  auto it = index_.find(key);
  if (it != index_.end()) RemoveLocked(it->second);
}

void DataCache::Patch(const BlockKey& key, size_t offset, std::span<const uint8_t> data) {
  std::lock_guard<std::mutex> lock(mu_);
  auto p = pending_.find(key);
  if (p != pending_.end()) p->second->overtaken = true;
  auto it = index_.find(key);
  if (it == index_.end()) return;
  const BlockData& old = it->second->data;
  if (offset > old->size() || data.size() > old->size() - offset) {
    RemoveLocked(it->second);  // cannot patch what does not fit: forget the block
    return;
  }
  auto patched = std::make_shared<pool::AlignedBuffer>(old->size(), pool::AlignedBuffer::Uninitialized{});
  std::memcpy(patched->data(), old->data(), old->size());
  std::memcpy(patched->data() + offset, data.data(), data.size());
  it->second->data = std::move(patched);
}

uint32_t DataCache::InsertLocked(const BlockKey& key, BlockData data, Queue queue) {
  uint32_t evicted = 0;
  while (index_.size() >= max_blocks_ && EvictLocked()) evicted++;
  EntryList& list = queue == Queue::kMain ? main_ : in_;
  list.push_front(Entry{key, std::move(data), queue});
  index_.emplace(key, list.begin());
  counters_.bytes += block_size_;
  return evicted;
}

bool DataCache::EvictLocked() {
  // 2Q "reclaimfor": drain A1in while it is over its share (remembering the keys, so a
  // second reference soon after goes to Am), otherwise the LRU end of Am.
  if (!in_.empty() && (in_.size() > max_in_blocks_ || main_.empty())) {
    EntryList::iterator victim = std::prev(in_.end());
    RememberGhostLocked(victim->key);
    RemoveLocked(victim);
  } else if (!main_.empty()) {
    RemoveLocked(std::prev(main_.end()));
  } else {
    return false;
  }
  counters_.evictions++;
  return true;
}

void DataCache::RemoveLocked(EntryList::iterator it) {
  index_.erase(it->key);
  (it->queue == Queue::kMain ? main_ : in_).erase(it);
  counters_.bytes -= block_size_;
}

void DataCache::RememberGhostLocked(const BlockKey& key) {
  if (ghost_index_.count(key) != 0) return;
  ghosts_.push_front(key);
  ghost_index_.emplace(key, ghosts_.begin());
  while (ghosts_.size() > max_ghost_keys_) {
    ghost_index_.erase(ghosts_.back());
    ghosts_.pop_back();
  }
}

bool DataCache::TakeGhostLocked(const BlockKey& key) {
  auto g = ghost_index_.find(key);
  if (g == ghost_index_.end()) return false;
  ghosts_.erase(g->second);
  ghost_index_.erase(g);
  return true;
}

}  // namespace tapmap::engine
