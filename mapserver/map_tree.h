// MapTree: the copy-on-write, reference-counted radix trees that map each volume's
// logical blocks to pool blocks (node format: metadata_format.h; design:
// mapserver/doc/metadata_format.md "Volume maps").
//
// Reference counting is lazy, as in btrfs (Rodeh, "B-trees, shadowing, and clones"):
//  - a node's refcount is the number of parents (nodes or volume records) pointing at
//    it; a block's refcount is the number of leaf entries pointing at it;
//  - a snapshot or clone adds a volume record pointing at the same root and bumps the
//    root's refcount: O(1) whatever the volume's size;
//  - a write reaching a node with refcount > 1 first copies it (the copy's children
//    each gain a reference, the original loses one) and repoints the parent;
//  - dropping a reference to a node with refcount 1 deletes it and drops its
//    children's references, recursively; a block whose refcount reaches 0 returns to
//    free space.
// A mapped block is *exclusive* to a volume iff every node on its path and the block
// itself have refcount 1; anything below a shared node is shared.
//
// A MapTree works inside one Txn and caches decoded nodes; writes reach the Txn only
// in Flush(), which must be called before committing. Errors throw StatusError.
#pragma once

#include <cstdint>
#include <functional>
#include <unordered_map>

#include "mapserver/free_space.h"
#include "mapserver/metadata_format.h"
#include "mapserver/metadata_store.h"

namespace tapmap::mapserver {

struct LeafEntry {
  uint64_t block = 0;
  uint64_t generation = 0;  // 0 = hole
  bool hole() const { return generation == 0; }
};

// Least tree depth covering `blocks` logical blocks (>= 1).
uint8_t DepthForBlocks(uint64_t blocks);
// Logical blocks covered by a tree of `depth` (saturating at UINT64_MAX).
uint64_t BlocksCoveredByDepth(uint8_t depth);

class MapTree {
 public:
  // `free_space` receives blocks whose refcount drops to 0; may be null for a tree
  // used only for reading. Both must outlive this object.
  MapTree(Txn* txn, FreeSpace* free_space) : txn_(txn), free_space_(free_space) {}

  // ---- reading -------------------------------------------------------------------
  // Returns false to stop the walk.
  using MappedFn = std::function<bool(uint64_t lblock, const LeafEntry& entry, bool shared)>;
  // Calls fn for every mapped logical block in [first, last), in increasing order,
  // until fn returns false.
  void ForEachMapped(const VolumeRecord& volume, uint64_t first, uint64_t last, const MappedFn& fn);
  // Calls fn(lblock, entry of b) for every logical block in [first, last) that `b` maps
  // differently from `a` (another pool block or generation, or a hole where the other
  // has data: entry.hole()), in increasing order, until fn returns false. Subtrees the
  // two share (the same node id) are skipped without being read, so two volumes of one
  // version set are compared in time proportional to the nodes that differ, not to
  // their size (the trees may differ in depth: a grown tree's old root is its slot 0
  // chain).
  using DiffFn = std::function<bool(uint64_t lblock, const LeafEntry& b_entry)>;
  void Diff(const VolumeRecord& a, const VolumeRecord& b, uint64_t first, uint64_t last, const DiffFn& fn);
  // Nodes read by Diff so far (for the O(changed) check in tests and benches).
  uint64_t diff_nodes_visited() const { return diff_nodes_visited_; }

  // Number of mapped blocks exclusive to `volume` (visits only exclusive nodes).
  uint64_t CountExclusive(const VolumeRecord& volume);
  // Number of mapped blocks in the subtree of node `id`.
  uint64_t CountMapped(uint64_t id);

  uint32_t NodeRefs(uint64_t id);
  uint32_t BlockRefs(uint64_t block);
  // The decoded node `id` (cached). Throws kCorruption if it does not exist.
  const MapNode& Node(uint64_t id) { return Load(id); }

  // ---- writing -------------------------------------------------------------------
  // Points `lblock` (< the volume's covered blocks) at `entry` (not a hole), taking a
  // reference on entry.block on behalf of the leaf (the caller has allocated it, so
  // its refcount becomes 1) and dropping the reference of the entry replaced.
  // Updates volume->root and volume->mapped_blocks.
  void Set(VolumeRecord* volume, uint64_t lblock, const LeafEntry& entry);
  // Makes [first, last) holes, dropping the references of what was there.
  void Clear(VolumeRecord* volume, uint64_t first, uint64_t last);
  // Adds levels on top until the tree has `depth` levels (O(added levels)).
  void Grow(VolumeRecord* volume, uint8_t depth);
  // A new volume record now points at `id`'s tree too.
  void AddRootRef(uint64_t id) {
    if (id != 0) IncNodeRef(id);
  }
  // The volume is going away: drop its root reference (recursively freeing).
  void DropRoot(VolumeRecord* volume);

  // Writes cached dirty nodes and the node id counter to the Txn.
  void Flush();

 private:
  struct CachedNode {
    MapNode node;
    bool dirty = false;
  };

  MapNode& Load(uint64_t id);
  uint64_t NewNode(uint8_t level);
  void IncNodeRef(uint64_t id);
  void DecNodeRef(uint64_t id);  // recursive when the count reaches 0
  void SetNodeRefs(uint64_t id, uint32_t refs);
  void IncBlockRef(uint64_t block);
  void DecBlockRef(uint64_t block);
  // Ensures the node in `*slot` (a parent slot or a volume root) has refcount 1,
  // copying it if shared; returns the (possibly new) node.
  MapNode& MakeExclusive(uint64_t* slot);
  void ClearIn(uint64_t* slot, uint8_t level, uint64_t base, uint64_t first, uint64_t last,
               uint64_t* cleared);
  bool Walk(uint64_t id, uint8_t level, uint64_t base, uint64_t first, uint64_t last, bool shared,
            const MappedFn& fn);
  uint64_t CountExclusiveIn(uint64_t id);
  bool DiffIn(uint64_t a, uint8_t a_level, uint64_t b, uint8_t b_level, uint64_t base, uint64_t first,
              uint64_t last, const DiffFn& fn);

  Txn* txn_;
  FreeSpace* free_space_;
  std::unordered_map<uint64_t, CachedNode> cache_;
  uint64_t next_node_id_ = 0;  // 0 = not loaded yet
  uint64_t diff_nodes_visited_ = 0;
};

}  // namespace tapmap::mapserver
