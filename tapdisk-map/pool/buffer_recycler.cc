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
    }
  }
  if (buffer == nullptr) buffer = std::make_unique<AlignedBuffer>(rounded, AlignedBuffer::Uninitialized{});
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
