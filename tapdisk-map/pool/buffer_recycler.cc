#include "tapdisk-map/pool/buffer_recycler.h"

#include <map>
#include <mutex>
#include <vector>

namespace tapmap::pool {

struct BufferRecycler::State {
  explicit State(size_t max) : max_retained_bytes(max) {}
  const size_t max_retained_bytes;
  std::mutex mu;
  std::map<size_t, std::vector<std::unique_ptr<AlignedBuffer>>> free_by_size;
  bool closed = false;  // the recycler is gone: returned buffers are freed
  Counters counters;
  // The slab new buffers of kHugeMinimum..kHugePageBytes are carved from, and how much
  // of it is handed out. Each buffer carved keeps the slab alive.
  std::shared_ptr<AlignedBuffer> slab;
  size_t slab_used = 0;

  // A new buffer of `rounded` bytes (a multiple of kGranule). Called under `mu`.
  std::unique_ptr<AlignedBuffer> Allocate(size_t rounded) {
    if (rounded < kHugeMinimum) {
      return std::make_unique<AlignedBuffer>(rounded, AlignedBuffer::Uninitialized{});
    }
    if (rounded > kHugePageBytes) {
      counters.huge_page_slabs++;
      return std::make_unique<AlignedBuffer>(rounded, AlignedBuffer::HugePageBacked{});
    }
    if (slab == nullptr || slab_used + rounded > kHugePageBytes) {
      slab = std::make_shared<AlignedBuffer>(kHugePageBytes, AlignedBuffer::HugePageBacked{});
      slab_used = 0;
      counters.huge_page_slabs++;
    }
    auto buffer = std::make_unique<AlignedBuffer>(AlignedBuffer::View(slab, slab_used, rounded));
    slab_used += rounded;
    return buffer;
  }

  // Takes back `buffer` (its last reference is gone) or frees it.
  void Return(std::unique_ptr<AlignedBuffer> buffer) {
    std::lock_guard<std::mutex> lock(mu);
    if (closed || counters.retained_bytes + buffer->size() > max_retained_bytes) {
      counters.dropped++;
      return;  // freed as `buffer` goes out of scope (under the lock: a plain free)
    }
    counters.retained_bytes += buffer->size();
    free_by_size[buffer->size()].push_back(std::move(buffer));
  }
};

BufferRecycler::BufferRecycler(size_t max_retained_bytes)
    : state_(std::make_shared<State>(max_retained_bytes)) {}

BufferRecycler::~BufferRecycler() {
  std::lock_guard<std::mutex> lock(state_->mu);
  state_->closed = true;
  state_->free_by_size.clear();
  state_->slab.reset();
  state_->counters.retained_bytes = 0;
}

std::shared_ptr<AlignedBuffer> BufferRecycler::Get(size_t size) {
  const size_t rounded = RoundUp(size == 0 ? 1 : size);
  std::unique_ptr<AlignedBuffer> buffer;
  {
    std::lock_guard<std::mutex> lock(state_->mu);
    auto it = state_->free_by_size.find(rounded);
    if (it != state_->free_by_size.end() && !it->second.empty()) {
      buffer = std::move(it->second.back());
      it->second.pop_back();
      state_->counters.retained_bytes -= rounded;
      state_->counters.reused++;
    } else {
      state_->counters.allocated++;
      buffer = state_->Allocate(rounded);
    }
  }
  // The deleter holds the state, not the recycler: a buffer may outlive both.
  std::weak_ptr<State> home = state_;
  AlignedBuffer* raw = buffer.release();
  return std::shared_ptr<AlignedBuffer>(raw, [home](AlignedBuffer* b) {
    std::unique_ptr<AlignedBuffer> owned(b);
    if (auto state = home.lock()) state->Return(std::move(owned));
  });
}

BufferRecycler::Counters BufferRecycler::counters() const {
  std::lock_guard<std::mutex> lock(state_->mu);
  return state_->counters;
}

}  // namespace tapmap::pool
