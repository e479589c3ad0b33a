#include "tapdisk-map/engine/pending_blocks.h"

namespace tapmap::engine {

PendingBlocks::PendingBlocks(uint32_t block_size, std::shared_ptr<std::atomic<uint64_t>> host_pinned)
    : block_size_(block_size), host_pinned_(std::move(host_pinned)) {}

PendingBlocks::~PendingBlocks() { Unpin(blocks_.size()); }

void PendingBlocks::Unpin(size_t blocks) {
  if (blocks != 0) host_pinned_->fetch_sub(uint64_t{blocks} * block_size_);
}

const PendingBlocks::Block* PendingBlocks::Find(uint64_t start) const {
  auto it = blocks_.find(start);
  return it == blocks_.end() ? nullptr : &it->second;
}

bool PendingBlocks::AnyIn(uint64_t first, uint64_t last) const {
  auto it = blocks_.lower_bound(first);
  return it != blocks_.end() && it->first < last;
}

void PendingBlocks::Put(uint64_t start, const Extent& extent, BlockData data) {
  auto [it, inserted] = blocks_.insert_or_assign(start, Block{extent, std::move(data), false});
  (void)it;
  if (inserted) host_pinned_->fetch_add(block_size_);
}

void PendingBlocks::Rewritten(uint64_t start, const Extent& extent, BlockData data) {
  auto it = blocks_.find(start);
  if (it != blocks_.end() && it->second.extent == extent) it->second.data = std::move(data);
}

std::vector<Extent> PendingBlocks::CommitBatch(size_t max) const {
  std::vector<Extent> batch;
  for (const auto& [start, b] : blocks_) {
    if (batch.size() >= max) break;
    if (!b.needs_prepare) batch.push_back(b.extent);
  }
  return batch;
}

std::vector<uint64_t> PendingBlocks::NeedingPrepare() const {
  std::vector<uint64_t> out;
  for (const auto& [start, b] : blocks_) {
    if (b.needs_prepare) out.push_back(start);
  }
  return out;
}

void PendingBlocks::MarkAllNeedPrepare() {
  for (auto& [start, b] : blocks_) b.needs_prepare = true;
}

void PendingBlocks::MarkNeedsPrepare(const Extent& extent) {
  auto it = blocks_.find(extent.logical);
  if (it != blocks_.end() && it->second.extent == extent) it->second.needs_prepare = true;
}

void PendingBlocks::Reprepared(uint64_t start, const Extent& extent) {
  auto it = blocks_.find(start);
  if (it == blocks_.end()) return;
  it->second.extent = extent;
  it->second.needs_prepare = false;
}

bool PendingBlocks::Committed(const Extent& extent) {
  auto it = blocks_.find(extent.logical);
  if (it == blocks_.end() || !(it->second.extent == extent)) return false;
  blocks_.erase(it);
  Unpin(1);
  return true;
}

size_t PendingBlocks::DropFrom(uint64_t start) {
  size_t dropped = 0;
  for (auto it = blocks_.lower_bound(start); it != blocks_.end();) {
    it = blocks_.erase(it);
    dropped++;
  }
  Unpin(dropped);
  return dropped;
}

}  // namespace tapmap::engine
