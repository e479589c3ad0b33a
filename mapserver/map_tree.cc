#include "mapserver/map_tree.h"

#include <algorithm>
#include <limits>
#include <optional>

namespace tapmap::mapserver {
namespace {

// Logical blocks covered by one slot of a level-`level` node.
uint64_t SlotSpan(uint8_t level) { return uint64_t{1} << (kFanoutBits * level); }

uint32_t SlotOf(uint64_t lblock, uint8_t level) {
  return static_cast<uint32_t>((lblock >> (kFanoutBits * level)) & (kFanout - 1));
}

}  // namespace

uint8_t DepthForBlocks(uint64_t blocks) {
  uint8_t depth = 1;
  while (depth < kMaxDepth && BlocksCoveredByDepth(depth) < blocks) ++depth;
  return depth;
}

uint64_t BlocksCoveredByDepth(uint8_t depth) {
  if (depth * kFanoutBits >= 64) return std::numeric_limits<uint64_t>::max();
  return uint64_t{1} << (depth * kFanoutBits);
}

MapNode& MapTree::Load(uint64_t id) {
  auto it = cache_.find(id);
  if (it != cache_.end()) return it->second.node;
  auto bytes = txn_->Get(Table::kNodes, EncodeKey64(id));
  if (!bytes) throw StatusError(Status::Corruption("map node " + std::to_string(id) + " missing"));
  auto node = DecodeMapNode(*bytes);
  if (!node.ok()) throw StatusError(node.status().WithContext("map node " + std::to_string(id)));
  return cache_.emplace(id, CachedNode{*node, false}).first->second.node;
}

uint64_t MapTree::NewNode(uint8_t level) {
  if (next_node_id_ == 0) next_node_id_ = txn_->GetMetaU64(kMetaNextNodeId, 1);
  uint64_t id = next_node_id_++;
  CachedNode& cached = cache_[id];
  cached.node = MapNode{};
  cached.node.level = level;
  cached.dirty = true;
  return id;
}

uint32_t MapTree::NodeRefs(uint64_t id) {
  auto v = txn_->Get(Table::kNodeRefs, EncodeKey64(id));
  if (!v) return 1;
  auto n = DecodeU32(*v);
  if (!n || *n < 2) throw StatusError(Status::Corruption("node-refs entry malformed"));
  return *n;
}

uint32_t MapTree::BlockRefs(uint64_t block) {
  auto v = txn_->Get(Table::kBlockRefs, EncodeKey64(block));
  if (!v) return 1;
  auto n = DecodeU32(*v);
  if (!n || *n < 2) throw StatusError(Status::Corruption("block-refs entry malformed"));
  return *n;
}

void MapTree::SetNodeRefs(uint64_t id, uint32_t refs) {
  if (refs <= 1) {
    txn_->Delete(Table::kNodeRefs, EncodeKey64(id));
  } else {
    txn_->Put(Table::kNodeRefs, EncodeKey64(id), EncodeU32(refs));
  }
}

void MapTree::IncNodeRef(uint64_t id) {
  uint32_t refs = NodeRefs(id);
  if (refs == std::numeric_limits<uint32_t>::max()) {
    throw StatusError(Status::NoSpace("map node reference count overflow"));
  }
  SetNodeRefs(id, refs + 1);
}

void MapTree::DecNodeRef(uint64_t id) {
  uint32_t refs = NodeRefs(id);
  if (refs > 1) {
    SetNodeRefs(id, refs - 1);
    return;
  }
  MapNode node = Load(id);  // copy: the cache entry is erased below
  cache_.erase(id);
  txn_->Delete(Table::kNodes, EncodeKey64(id));
  for (uint32_t i = 0; i < kFanout; ++i) {
    if (!node.SlotUsed(i)) continue;
    if (node.IsLeaf()) {
      DecBlockRef(node.child[i]);
    } else {
      DecNodeRef(node.child[i]);
    }
  }
}

void MapTree::IncBlockRef(uint64_t block) {
  uint32_t refs = BlockRefs(block);
  if (refs == std::numeric_limits<uint32_t>::max()) {
    throw StatusError(Status::NoSpace("block reference count overflow"));
  }
  txn_->Put(Table::kBlockRefs, EncodeKey64(block), EncodeU32(refs + 1));
}

void MapTree::DecBlockRef(uint64_t block) {
  uint32_t refs = BlockRefs(block);
  if (refs > 2) {
    txn_->Put(Table::kBlockRefs, EncodeKey64(block), EncodeU32(refs - 1));
  } else if (refs == 2) {
    txn_->Delete(Table::kBlockRefs, EncodeKey64(block));
  } else {
    if (free_space_ == nullptr) throw StatusError(Status::Internal("freeing in a read-only tree"));
    free_space_->Release(block);
  }
}

MapNode& MapTree::MakeExclusive(uint64_t* slot) {
  uint64_t id = *slot;
  uint32_t refs = NodeRefs(id);
  if (refs == 1) {
    Load(id);
    CachedNode& cached = cache_.find(id)->second;
    cached.dirty = true;
    return cached.node;
  }
  MapNode copy = Load(id);
  for (uint32_t i = 0; i < kFanout; ++i) {
    if (!copy.SlotUsed(i)) continue;
    if (copy.IsLeaf()) {
      IncBlockRef(copy.child[i]);
    } else {
      IncNodeRef(copy.child[i]);
    }
  }
  SetNodeRefs(id, refs - 1);
  uint64_t new_id = NewNode(copy.level);
  CachedNode& cached = cache_[new_id];
  cached.node = copy;
  *slot = new_id;
  return cached.node;
}

void MapTree::Set(VolumeRecord* volume, uint64_t lblock, const LeafEntry& entry) {
  if (lblock >= BlocksCoveredByDepth(volume->depth)) {
    throw StatusError(Status::Internal("Set beyond the tree's reach"));
  }
  uint8_t level = static_cast<uint8_t>(volume->depth - 1);
  if (volume->root == 0) volume->root = NewNode(level);
  uint64_t* slot = &volume->root;
  for (;;) {
    MapNode& node = MakeExclusive(slot);
    uint32_t i = SlotOf(lblock, level);
    if (node.IsLeaf()) {
      if (node.generation[i] != 0) {
        DecBlockRef(node.child[i]);
      } else {
        ++volume->mapped_blocks;
      }
      node.child[i] = entry.block;
      node.generation[i] = entry.generation;
      return;
    }
    if (node.child[i] == 0) node.child[i] = NewNode(static_cast<uint8_t>(level - 1));
    slot = &node.child[i];
    --level;
  }
}

void MapTree::ClearIn(uint64_t* slot, uint8_t level, uint64_t base, uint64_t first, uint64_t last,
                      uint64_t* cleared) {
  if (*slot == 0) return;
  uint64_t span = SlotSpan(level);
  uint64_t covered_end = span > (std::numeric_limits<uint64_t>::max() - base) / kFanout
                             ? std::numeric_limits<uint64_t>::max()
                             : base + span * kFanout;
  if (first <= base && last >= covered_end) {
    *cleared += CountMapped(*slot);
    DecNodeRef(*slot);
    *slot = 0;
    return;
  }
  MapNode& node = MakeExclusive(slot);
  for (uint32_t i = 0; i < kFanout; ++i) {
    uint64_t slot_base = base + i * span;
    if (slot_base >= last) break;
    if (slot_base + span <= first || !node.SlotUsed(i)) continue;
    if (node.IsLeaf()) {
      DecBlockRef(node.child[i]);
      node.child[i] = 0;
      node.generation[i] = 0;
      ++*cleared;
    } else {
      ClearIn(&node.child[i], static_cast<uint8_t>(level - 1), slot_base, first, last, cleared);
    }
  }
  if (node.CountUsed() == 0) {
    uint64_t id = *slot;
    cache_.erase(id);
    txn_->Delete(Table::kNodes, EncodeKey64(id));
    *slot = 0;
  }
}

void MapTree::Clear(VolumeRecord* volume, uint64_t first, uint64_t last) {
  if (first >= last) return;
  uint64_t cleared = 0;
  ClearIn(&volume->root, static_cast<uint8_t>(volume->depth - 1), 0, first, last, &cleared);
  if (cleared > volume->mapped_blocks)
    throw StatusError(Status::Corruption("mapped count underflow"));
  volume->mapped_blocks -= cleared;
}

void MapTree::Grow(VolumeRecord* volume, uint8_t depth) {
  while (volume->depth < depth) {
    if (volume->root != 0) {
      uint64_t id = NewNode(volume->depth);
      cache_[id].node.child[0] = volume->root;  // the root's reference moves here
      volume->root = id;
    }
    ++volume->depth;
  }
}

void MapTree::DropRoot(VolumeRecord* volume) {
  if (volume->root != 0) DecNodeRef(volume->root);
  volume->root = 0;
  volume->mapped_blocks = 0;
}

void MapTree::Flush() {
  for (auto& [id, cached] : cache_) {
    if (!cached.dirty) continue;
    txn_->Put(Table::kNodes, EncodeKey64(id), EncodeMapNode(cached.node));
    cached.dirty = false;
  }
  if (next_node_id_ != 0) txn_->PutMetaU64(kMetaNextNodeId, next_node_id_);
}

bool MapTree::Walk(uint64_t id, uint8_t level, uint64_t base, uint64_t first, uint64_t last,
                   bool shared, const MappedFn& fn) {
  shared = shared || NodeRefs(id) > 1;
  const MapNode& node = Load(id);
  uint64_t span = SlotSpan(level);
  uint32_t i = first > base ? static_cast<uint32_t>((first - base) / span) : 0;
  for (; i < kFanout; ++i) {
    uint64_t slot_base = base + i * span;
    if (slot_base >= last) break;
    if (!node.SlotUsed(i)) continue;
    if (node.IsLeaf()) {
      LeafEntry e{node.child[i], node.generation[i]};
      if (!fn(slot_base, e, shared || BlockRefs(e.block) > 1)) return false;
    } else if (!Walk(node.child[i], static_cast<uint8_t>(level - 1), slot_base, first, last, shared,
                     fn)) {
      return false;
    }
  }
  return true;
}

// `a` and `b` are node ids (0: nothing mapped) at levels a_level and b_level; the
// subtree compared covers SlotSpan(level + 1) blocks from `base`, level = the higher
// of the two. A node below that level stands for the chain of slot-0 nodes above it
// that Grow would add.
bool MapTree::DiffIn(uint64_t a, uint8_t a_level, uint64_t b, uint8_t b_level, uint64_t base, uint64_t first,
                     uint64_t last, const DiffFn& fn) {
  if (a == b && (a == 0 || a_level == b_level)) return true;  // shared (or both empty)
  const uint8_t level = a == 0 ? b_level : b == 0 ? a_level : std::max(a_level, b_level);
  const uint64_t span = SlotSpan(level);
  // Copies: the recursion may evict nothing, but grows the cache (references move).
  std::optional<MapNode> na, nb;
  if (a != 0 && a_level == level) {
    na = Load(a);
    ++diff_nodes_visited_;
  }
  if (b != 0 && b_level == level) {
    nb = Load(b);
    ++diff_nodes_visited_;
  }
  uint32_t i = first > base ? static_cast<uint32_t>(std::min<uint64_t>((first - base) / span, kFanout)) : 0;
  for (; i < kFanout; ++i) {
    uint64_t slot_base = base + i * span;
    if (slot_base >= last) break;
    if (level == 0) {
      LeafEntry ea = na && na->SlotUsed(i) ? LeafEntry{na->child[i], na->generation[i]} : LeafEntry{};
      LeafEntry eb = nb && nb->SlotUsed(i) ? LeafEntry{nb->child[i], nb->generation[i]} : LeafEntry{};
      bool same = ea.hole() ? eb.hole() : (!eb.hole() && ea.block == eb.block && ea.generation == eb.generation);
      if (slot_base >= first && !same && !fn(slot_base, eb)) return false;
      continue;
    }
    // The children at slot i: a node's child, or the lower node itself at slot 0.
    auto child = [&](uint64_t id, uint8_t id_level, const std::optional<MapNode>& node) -> std::pair<uint64_t, uint8_t> {
      if (id == 0) return {0, 0};
      if (node) return {node->child[i], static_cast<uint8_t>(level - 1)};
      return i == 0 ? std::pair<uint64_t, uint8_t>{id, id_level} : std::pair<uint64_t, uint8_t>{0, 0};
    };
    auto [ca, cla] = child(a, a_level, na);
    auto [cb, clb] = child(b, b_level, nb);
    if (ca == 0 && cb == 0) continue;
    if (!DiffIn(ca, cla, cb, clb, slot_base, first, last, fn)) return false;
  }
  return true;
}

void MapTree::Diff(const VolumeRecord& a, const VolumeRecord& b, uint64_t first, uint64_t last, const DiffFn& fn) {
  if (first >= last) return;
  DiffIn(a.root, static_cast<uint8_t>(a.depth - 1), b.root, static_cast<uint8_t>(b.depth - 1), 0, first, last, fn);
}

void MapTree::ForEachMapped(const VolumeRecord& volume, uint64_t first, uint64_t last,
                            const MappedFn& fn) {
  if (volume.root == 0 || first >= last) return;
  Walk(volume.root, static_cast<uint8_t>(volume.depth - 1), 0, first, last, false, fn);
}

uint64_t MapTree::CountMapped(uint64_t id) {
  const MapNode& node = Load(id);
  if (node.IsLeaf()) return node.CountUsed();
  uint64_t total = 0;
  MapNode copy = node;  // recursion may grow the cache
  for (uint32_t i = 0; i < kFanout; ++i) {
    if (copy.child[i] != 0) total += CountMapped(copy.child[i]);
  }
  return total;
}

uint64_t MapTree::CountExclusiveIn(uint64_t id) {
  if (NodeRefs(id) > 1) return 0;
  MapNode node = Load(id);
  uint64_t total = 0;
  for (uint32_t i = 0; i < kFanout; ++i) {
    if (!node.SlotUsed(i)) continue;
    if (node.IsLeaf()) {
      total += BlockRefs(node.child[i]) == 1 ? 1 : 0;
    } else {
      total += CountExclusiveIn(node.child[i]);
    }
  }
  return total;
}

uint64_t MapTree::CountExclusive(const VolumeRecord& volume) {
  return volume.root == 0 ? 0 : CountExclusiveIn(volume.root);
}

}  // namespace tapmap::mapserver
