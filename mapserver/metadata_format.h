// On-disk format of the mapserver metadata store: every LMDB table, key and value.
// Defined here and in mapserver/doc/metadata_format.md only. Integers in values are
// little-endian; integer keys are big-endian so that LMDB's byte order is numeric
// order.
//
// Tables (LMDB named databases in one environment, directory --meta):
//
//   meta       text key -> value     pool identity and counters (kMeta* keys below)
//   volumes    volume name -> VolumeRecord
//   nodes      u64 node id -> MapNode           radix-tree nodes of volume maps
//   node-refs  u64 node id -> u32 refcount      only for refcounts >= 2 (absent = 1)
//   block-refs u64 block   -> u32 refcount      only for refcounts >= 2 (absent = 1
//                                               for a block in use, i.e. not free)
//   free       u64 first block -> u64 length    free extents, disjoint, never adjacent
//                                               (always coalesced)
//
// Block numbers count pool blocks from the data area's start (pool_format.h):
// block b is at byte data_offset + b * block_size of the pool.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "common/status.h"

namespace tapmap::mapserver {

inline constexpr uint32_t kMetadataFormatVersion = 1;

enum class Table : uint8_t { kMeta = 0, kVolumes, kNodes, kNodeRefs, kBlockRefs, kFree };
inline constexpr int kTableCount = 6;
// LMDB database name of each table.
std::string_view TableName(Table table);

// ---------------------------------------------------------------------------------------
// meta table keys. Values: u32/u64 little-endian unless said otherwise.

inline constexpr std::string_view kMetaFormatVersion = "format-version";  // u32
inline constexpr std::string_view kMetaPoolUuid = "pool-uuid";            // 16 bytes
inline constexpr std::string_view kMetaBlockSize = "block-size";          // u32
inline constexpr std::string_view kMetaTotalBlocks = "total-blocks";      // u64
inline constexpr std::string_view kMetaFreeBlocks = "free-blocks";  // u64, sum of free lengths
// Generation high-water mark: every generation ever handed out is < this. The server
// persists a new mark (+kGenerationBatch) before handing out the last one below it.
inline constexpr std::string_view kMetaNextGeneration = "next-generation";   // u64, starts at 1
inline constexpr std::string_view kMetaNextNodeId = "next-node-id";          // u64, starts at 1
inline constexpr std::string_view kMetaNextVolumeId = "next-volume-id";      // u64, starts at 1
inline constexpr std::string_view kMetaNextVersionSet = "next-version-set";  // u64, starts at 1

inline constexpr uint64_t kGenerationBatch = 4096;

// Held rw leases (mapserver/doc/leases.md), one key per volume whose rw lease is held
// by a host instance that can reclaim it after a restart: "lease/" + volume name ->
// LeaseRecord. Written before the lease is granted, deleted when it ends, so after a
// restart the grace period knows whom to wait for.
inline constexpr std::string_view kMetaLeasePrefix = "lease/";

//   offset size field
//        0    8 instance (the holder's login instance, != 0)
//        8    8 lease epoch
//       16    n host name (the rest of the value, 1..255 bytes)
struct LeaseRecord {
  std::string volume;  // from the key
  std::string host;
  uint64_t instance = 0;
  uint64_t epoch = 0;
};
std::string EncodeLeaseRecord(const LeaseRecord& record);

// Host instances that have held openers (leases.md "Grace period"): "instance/" + host +
// "/" + 16 hex digits of the instance -> empty. Written when an instance (instance != 0)
// gets its first opener, deleted when it expires or a new instance of its host logs
// in; after a restart the grace period waits for each to reclaim (or 1.1 T).
inline constexpr std::string_view kMetaInstancePrefix = "instance/";
struct InstanceRecord {
  std::string host;
  uint64_t instance = 0;
};
std::string InstanceKey(const InstanceRecord& record);
// From a key (with its prefix); kCorruption if malformed.
Result<InstanceRecord> DecodeInstanceKey(std::string_view key);
// `volume` is taken from the key.
Result<LeaseRecord> DecodeLeaseRecord(std::string_view volume, std::string_view bytes);

// ---------------------------------------------------------------------------------------
// Map tree geometry: a radix tree of fanout 256. Level 0 nodes are leaves whose slots
// are logical blocks; a level-L node's slot i covers 256^L logical blocks. A volume of
// depth d has a root at level d-1 and covers 256^d blocks (d >= 1, the least depth
// covering the volume's size; it only grows).

inline constexpr uint32_t kFanoutBits = 8;
inline constexpr uint32_t kFanout = 1u << kFanoutBits;
inline constexpr uint32_t kMaxDepth = 8;

// ---------------------------------------------------------------------------------------
// volumes table value.
//
//   offset size field
//        0    1 record version (1)
//        1    1 kind: 0 base, 1 snapshot, 2 clone (= proto VolumeInfo.Kind)
//        2    1 flags: bit 0 read-only
//        3    1 depth of the map tree (1..kMaxDepth)
//        4    4 zero
//        8    8 size in bytes (multiple of 512, > 0)
//       16    8 root node id (0 = empty map: all holes)
//       24    8 volume id (unique, never reused)
//       32    8 version set id
//       40    8 created, unix seconds
//       48    8 mapped blocks (non-hole leaf entries reachable from the root)
//       56    8 parent volume id (0 = none)
//       64    2 parent name length n
//       66    n parent name

struct VolumeRecord {
  enum class Kind : uint8_t { kBase = 0, kSnapshot = 1, kClone = 2 };
  Kind kind = Kind::kBase;
  bool read_only = false;
  uint8_t depth = 1;
  uint64_t size_bytes = 0;
  uint64_t root = 0;
  uint64_t id = 0;
  uint64_t version_set = 0;
  uint64_t created_unix_seconds = 0;
  uint64_t mapped_blocks = 0;
  uint64_t parent_id = 0;
  std::string parent_name;
};

std::string EncodeVolumeRecord(const VolumeRecord& record);
Result<VolumeRecord> DecodeVolumeRecord(std::string_view bytes);

// ---------------------------------------------------------------------------------------
// nodes table value: a map node, storing only its non-empty slots.
//
//   offset size field
//        0    1 level (0 = leaf)
//        1    1 zero
//        2    2 number of entries n (1..256; an empty node is deleted, not stored)
//        4    4 zero
//        8      n entries in increasing slot order:
//               leaf:     u8 slot, u64 block, u64 generation (>= 1)  (17 bytes)
//               interior: u8 slot, u64 child node id (>= 1)          (9 bytes)

struct MapNode {
  uint8_t level = 0;
  // Leaf: block[i] is the pool block of slot i and generation[i] its generation;
  // generation 0 marks a hole. Interior: child[i] is a node id, 0 for none.
  std::array<uint64_t, kFanout> child{};       // interior: child id; leaf: block number
  std::array<uint64_t, kFanout> generation{};  // leaf only

  bool IsLeaf() const { return level == 0; }
  bool SlotUsed(uint32_t i) const { return IsLeaf() ? generation[i] != 0 : child[i] != 0; }
  uint32_t CountUsed() const;
};

std::string EncodeMapNode(const MapNode& node);
Result<MapNode> DecodeMapNode(std::string_view bytes);

// ---------------------------------------------------------------------------------------
// Integer encodings.

std::string EncodeKey64(uint64_t v);  // 8 bytes big-endian
std::optional<uint64_t> DecodeKey64(std::string_view key);
std::string EncodeU64(uint64_t v);  // 8 bytes little-endian
std::optional<uint64_t> DecodeU64(std::string_view bytes);
std::string EncodeU32(uint32_t v);  // 4 bytes little-endian
std::optional<uint32_t> DecodeU32(std::string_view bytes);

}  // namespace tapmap::mapserver
