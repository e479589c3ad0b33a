// Consistency check of a pool's metadata (`mapserver fsck`, and the tests after every
// scenario). Verifies, in one read transaction:
//  - the meta table: format version, pool identity and geometry, counters;
//  - every volume record decodes, its tree has the record's depth, every map node
//    decodes and sits at the level its parent implies, mapped logical blocks lie
//    within the volume's size and their count equals the record's mapped_blocks;
//  - every node's stored refcount equals the number of parents and volume roots
//    pointing at it, and no node is unreachable (leaked);
//  - every block's stored refcount equals the number of leaf entries referencing it,
//    and no refcount entry exists for an unreferenced block;
//  - free extents are in the pool, disjoint and coalesced, no free block is in use,
//    their sum equals the free-blocks counter, and used + free = total blocks;
//  - node ids and generations are below their persisted counters.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "mapserver/metadata_store.h"
#include "protocol/pool_format.h"

namespace tapmap::mapserver {

struct FsckReport {
  std::vector<std::string> problems;  // empty when clean (capped at kMaxProblems)
  uint64_t volumes = 0;
  uint64_t version_sets = 0;
  uint64_t nodes = 0;
  uint64_t used_blocks = 0;
  // Used blocks with refcount >= 2, i.e. referenced from several leaves. (Blocks shared
  // only through a shared node are referenced from one leaf and not counted here.)
  uint64_t shared_blocks = 0;
  uint64_t free_blocks = 0;
  uint64_t total_blocks = 0;

  static constexpr size_t kMaxProblems = 100;
  bool clean() const { return problems.empty(); }
  // "clean: 3 volumes in 1 version sets, 12 nodes, 100 used blocks (40 shared),
  //  900 free of 1000 blocks" ("NOT CLEAN (n problems): ..." otherwise).
  std::string Summary() const;
};

// Never throws; metadata it cannot even read is reported as a problem.
FsckReport CheckMetadata(MetadataStore& meta, const protocol::Superblock& sb);

}  // namespace tapmap::mapserver
