#include "mapserver/fsck.h"

#include <algorithm>
#include <set>
#include <unordered_map>

#include "mapserver/free_space.h"
#include "mapserver/map_tree.h"

namespace tapmap::mapserver {
namespace {

class Checker {
 public:
  Checker(Txn* txn, const protocol::Superblock& sb, FsckReport* report)
      : txn_(txn), sb_(sb), report_(report) {}

  void Run();

 private:
  struct NodeFacts {
    uint64_t mapped = 0;
    uint64_t highest = 0;  // highest mapped logical block offset within the subtree + 1
    uint8_t level = 0;
  };

  void Problem(std::string text) {
    if (report_->problems.size() < FsckReport::kMaxProblems)
      report_->problems.push_back(std::move(text));
  }
  // Visits node `id` (expected at `level`) on its first reference; counts references.
  const NodeFacts* Visit(uint64_t id, uint8_t level);

  Txn* txn_;
  const protocol::Superblock& sb_;
  FsckReport* report_;
  std::unordered_map<uint64_t, uint32_t> node_refs_;
  std::unordered_map<uint64_t, NodeFacts> facts_;
  std::unordered_map<uint64_t, uint32_t> block_refs_;
  uint64_t max_generation_ = 0;
  uint64_t max_node_id_ = 0;
};

const Checker::NodeFacts* Checker::Visit(uint64_t id, uint8_t level) {
  ++node_refs_[id];
  auto known = facts_.find(id);
  if (known != facts_.end()) {
    if (known->second.level != level) {
      Problem("node " + std::to_string(id) + " is reached at levels " +
              std::to_string(known->second.level) + " and " + std::to_string(level));
    }
    return &known->second;
  }
  max_node_id_ = std::max(max_node_id_, id);
  auto bytes = txn_->Get(Table::kNodes, EncodeKey64(id));
  if (!bytes) {
    Problem("node " + std::to_string(id) + " is referenced but missing");
    return nullptr;
  }
  auto node = DecodeMapNode(*bytes);
  if (!node.ok()) {
    Problem("node " + std::to_string(id) + ": " + node.status().message());
    return nullptr;
  }
  NodeFacts facts;
  facts.level = level;
  if (node->level != level) {
    Problem("node " + std::to_string(id) + " has level " + std::to_string(node->level) +
            ", expected " + std::to_string(level));
    return nullptr;
  }
  const uint64_t span = uint64_t{1} << (kFanoutBits * level);
  for (uint32_t i = 0; i < kFanout; ++i) {
    if (!node->SlotUsed(i)) continue;
    if (node->IsLeaf()) {
      uint64_t block = node->child[i];
      if (block >= sb_.total_blocks) {
        Problem("node " + std::to_string(id) + " maps block " + std::to_string(block) +
                " beyond the pool");
      }
      ++block_refs_[block];
      max_generation_ = std::max(max_generation_, node->generation[i]);
      ++facts.mapped;
      facts.highest = i + 1;
    } else {
      const NodeFacts* child = Visit(node->child[i], static_cast<uint8_t>(level - 1));
      if (child == nullptr) continue;
      facts.mapped += child->mapped;
      if (child->highest > 0) facts.highest = i * span + child->highest;
    }
  }
  return &facts_.emplace(id, facts).first->second;
}

void Checker::Run() {
  report_->total_blocks = sb_.total_blocks;
  auto bs = txn_->Get(Table::kMeta, kMetaBlockSize);
  auto uuid = txn_->Get(Table::kMeta, kMetaPoolUuid);
  if (!bs || DecodeU32(*bs) != sb_.block_size) Problem("meta block-size disagrees with the pool");
  if (!uuid || uuid->size() != 16 ||
      !std::equal(uuid->begin(), uuid->end(), reinterpret_cast<const char*>(sb_.uuid.data()))) {
    Problem("meta pool-uuid disagrees with the pool");
  }
  if (txn_->GetMetaU64(kMetaTotalBlocks, 0) != sb_.total_blocks) {
    Problem("meta total-blocks disagrees with the pool");
  }

  // Volumes and their trees.
  std::set<uint64_t> version_sets;
  std::set<uint64_t> volume_ids;
  uint64_t next_volume_id = txn_->GetMetaU64(kMetaNextVolumeId, 1);
  auto cursor = txn_->OpenCursor(Table::kVolumes);
  for (bool ok = cursor->First(); ok; ok = cursor->Next()) {
    std::string name(cursor->key());
    auto record = DecodeVolumeRecord(cursor->value());
    if (!record.ok()) {
      Problem("volume '" + name + "': " + record.status().message());
      continue;
    }
    ++report_->volumes;
    version_sets.insert(record->version_set);
    if (!volume_ids.insert(record->id).second)
      Problem("volume id " + std::to_string(record->id) + " used twice");
    if (record->id >= next_volume_id) Problem("volume '" + name + "' id beyond next-volume-id");
    uint64_t nblocks = (record->size_bytes + sb_.block_size - 1) / sb_.block_size;
    if (BlocksCoveredByDepth(record->depth) < nblocks) {
      Problem("volume '" + name + "' tree depth " + std::to_string(record->depth) +
              " does not cover its size");
    }
    uint64_t mapped = 0;
    if (record->root != 0) {
      const NodeFacts* root = Visit(record->root, static_cast<uint8_t>(record->depth - 1));
      if (root != nullptr) {
        mapped = root->mapped;
        if (root->highest > nblocks) {
          Problem("volume '" + name + "' maps logical block " + std::to_string(root->highest - 1) +
                  " beyond its size");
        }
      }
    }
    if (mapped != record->mapped_blocks) {
      Problem("volume '" + name + "' records " + std::to_string(record->mapped_blocks) +
              " mapped blocks, its tree has " + std::to_string(mapped));
    }
  }
  cursor.reset();
  report_->version_sets = version_sets.size();

  // Nodes: stored vs counted references, leaks.
  MapTree tree(txn_, nullptr);
  auto nodes = txn_->OpenCursor(Table::kNodes);
  for (bool ok = nodes->First(); ok; ok = nodes->Next()) {
    auto id = DecodeKey64(nodes->key());
    if (!id) {
      Problem("nodes table: malformed key");
      continue;
    }
    ++report_->nodes;
    if (node_refs_.find(*id) == node_refs_.end())
      Problem("node " + std::to_string(*id) + " is unreachable (leaked)");
  }
  nodes.reset();
  for (auto& [id, counted] : node_refs_) {
    if (facts_.find(id) == facts_.end()) continue;  // missing node, reported
    uint32_t stored = tree.NodeRefs(id);
    if (stored != counted) {
      Problem("node " + std::to_string(id) + " refcount " + std::to_string(stored) + ", " +
              std::to_string(counted) + " references found");
    }
  }
  auto node_ref_cursor = txn_->OpenCursor(Table::kNodeRefs);
  for (bool ok = node_ref_cursor->First(); ok; ok = node_ref_cursor->Next()) {
    auto id = DecodeKey64(node_ref_cursor->key());
    if (!id || node_refs_.find(*id) == node_refs_.end()) {
      Problem("node-refs entry for an unreferenced node");
    }
  }
  node_ref_cursor.reset();
  if (max_node_id_ >= txn_->GetMetaU64(kMetaNextNodeId, 1)) Problem("node id beyond next-node-id");
  if (max_generation_ >= txn_->GetMetaU64(kMetaNextGeneration, 1)) {
    Problem("generation " + std::to_string(max_generation_) + " beyond next-generation");
  }

  // Held rw lease records (leases.md): an existing volume, an epoch handed out.
  auto lease_cursor = txn_->OpenCursor(Table::kMeta);
  for (bool ok = lease_cursor->SeekAtOrAfter(kMetaLeasePrefix); ok; ok = lease_cursor->Next()) {
    std::string_view key = lease_cursor->key();
    if (key.substr(0, kMetaLeasePrefix.size()) != kMetaLeasePrefix) break;
    auto record = DecodeLeaseRecord(key.substr(kMetaLeasePrefix.size()), lease_cursor->value());
    if (!record.ok()) {
      Problem(record.status().message());
      continue;
    }
    if (!txn_->Get(Table::kVolumes, record->volume)) {
      Problem("lease record of a volume that does not exist: " + record->volume);
    }
    if (record->epoch == 0 || record->epoch >= txn_->GetMetaU64(kMetaNextGeneration, 1)) {
      Problem("lease record of " + record->volume + " with epoch beyond next-generation");
    }
  }
  lease_cursor.reset();
  auto instance_cursor = txn_->OpenCursor(Table::kMeta);
  for (bool ok = instance_cursor->SeekAtOrAfter(kMetaInstancePrefix); ok; ok = instance_cursor->Next()) {
    if (instance_cursor->key().substr(0, kMetaInstancePrefix.size()) != kMetaInstancePrefix) break;
    auto record = DecodeInstanceKey(instance_cursor->key());
    if (!record.ok()) Problem(record.status().message());
  }
  instance_cursor.reset();

  // Blocks: stored vs counted references.
  for (auto& [block, counted] : block_refs_) {
    uint32_t stored = tree.BlockRefs(block);
    if (stored != counted) {
      Problem("block " + std::to_string(block) + " refcount " + std::to_string(stored) + ", " +
              std::to_string(counted) + " leaf entries reference it");
    }
    if (counted >= 2) ++report_->shared_blocks;
  }
  auto block_ref_cursor = txn_->OpenCursor(Table::kBlockRefs);
  for (bool ok = block_ref_cursor->First(); ok; ok = block_ref_cursor->Next()) {
    auto block = DecodeKey64(block_ref_cursor->key());
    if (!block || block_refs_.find(*block) == block_refs_.end()) {
      Problem("block-refs entry for an unreferenced block");
    }
  }
  block_ref_cursor.reset();
  report_->used_blocks = block_refs_.size();

  // Free space.
  std::vector<uint64_t> used;
  used.reserve(block_refs_.size());
  for (auto& [block, counted] : block_refs_) used.push_back(block);
  std::sort(used.begin(), used.end());
  uint64_t free_sum = 0;
  uint64_t prev_end = 0;
  bool first = true;
  std::vector<BlockRun> runs;
  try {
    runs = FreeSpace::AllExtents(txn_);
  } catch (const StatusError& e) {
    Problem(e.status().message());
  }
  for (const BlockRun& run : runs) {
    if (run.end() > sb_.total_blocks || run.end() < run.start) {
      Problem("free extent " + std::to_string(run.start) + "+" + std::to_string(run.length) +
              " lies beyond the pool");
    }
    if (!first && run.start < prev_end)
      Problem("free extents overlap at " + std::to_string(run.start));
    if (!first && run.start == prev_end)
      Problem("free extents not coalesced at " + std::to_string(run.start));
    auto in_use = std::lower_bound(used.begin(), used.end(), run.start);
    if (in_use != used.end() && *in_use < run.end()) {
      Problem("block " + std::to_string(*in_use) + " is both free and in use");
    }
    free_sum += run.length;
    prev_end = run.end();
    first = false;
  }
  report_->free_blocks = free_sum;
  if (free_sum != FreeSpace::FreeBlocks(txn_)) {
    Problem("free-blocks counter " + std::to_string(FreeSpace::FreeBlocks(txn_)) +
            " but free extents sum to " + std::to_string(free_sum));
  }
  if (free_sum + report_->used_blocks != sb_.total_blocks) {
    Problem("used (" + std::to_string(report_->used_blocks) + ") + free (" +
            std::to_string(free_sum) + ") != total (" + std::to_string(sb_.total_blocks) +
            ") blocks: " +
            (free_sum + report_->used_blocks < sb_.total_blocks ? "blocks leaked" : "double use"));
  }
}

}  // namespace

std::string FsckReport::Summary() const {
  std::string s =
      clean() ? "clean" : "NOT CLEAN (" + std::to_string(problems.size()) + " problems)";
  s += ": " + std::to_string(volumes) + " volumes in " + std::to_string(version_sets) +
       " version sets, " + std::to_string(nodes) + " map nodes, " + std::to_string(used_blocks) +
       " used blocks (" + std::to_string(shared_blocks) + " in several leaves), " +
       std::to_string(free_blocks) + " free of " + std::to_string(total_blocks) + " blocks";
  return s;
}

FsckReport CheckMetadata(MetadataStore& meta, const protocol::Superblock& sb) {
  FsckReport report;
  try {
    auto txn = meta.BeginRead();
    Checker checker(txn.get(), sb, &report);
    checker.Run();
  } catch (const StatusError& e) {
    report.problems.push_back("cannot read metadata: " + e.status().ToString());
  }
  return report;
}

}  // namespace tapmap::mapserver
