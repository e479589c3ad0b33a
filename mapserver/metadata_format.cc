#include "mapserver/metadata_format.h"

#include <cstdio>

namespace tapmap::mapserver {
namespace {

void PutLE(std::string* out, uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) out->push_back(static_cast<char>(v >> (8 * i)));
}
uint64_t GetLE(std::string_view in, size_t pos, int bytes) {
  uint64_t v = 0;
  for (int i = bytes - 1; i >= 0; --i) v = (v << 8) | static_cast<uint8_t>(in[pos + i]);
  return v;
}

constexpr size_t kVolumeFixedSize = 66;
constexpr size_t kNodeHeaderSize = 8;
constexpr size_t kLeafEntrySize = 17;
constexpr size_t kInteriorEntrySize = 9;

}  // namespace

std::string_view TableName(Table table) {
  switch (table) {
    case Table::kMeta:
      return "meta";
    case Table::kVolumes:
      return "volumes";
    case Table::kNodes:
      return "nodes";
    case Table::kNodeRefs:
      return "node-refs";
    case Table::kBlockRefs:
      return "block-refs";
    case Table::kFree:
      return "free";
  }
  return "?";
}

std::string EncodeKey64(uint64_t v) {
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>(v >> (8 * (7 - i)));
  return out;
}

std::optional<uint64_t> DecodeKey64(std::string_view key) {
  if (key.size() != 8) return std::nullopt;
  uint64_t v = 0;
  for (char c : key) v = (v << 8) | static_cast<uint8_t>(c);
  return v;
}

std::string EncodeU64(uint64_t v) {
  std::string out;
  PutLE(&out, v, 8);
  return out;
}
std::optional<uint64_t> DecodeU64(std::string_view bytes) {
  if (bytes.size() != 8) return std::nullopt;
  return GetLE(bytes, 0, 8);
}
std::string EncodeU32(uint32_t v) {
  std::string out;
  PutLE(&out, v, 4);
  return out;
}
std::optional<uint32_t> DecodeU32(std::string_view bytes) {
  if (bytes.size() != 4) return std::nullopt;
  return static_cast<uint32_t>(GetLE(bytes, 0, 4));
}

std::string EncodeVolumeRecord(const VolumeRecord& r) {
  std::string out;
  out.reserve(kVolumeFixedSize + r.parent_name.size());
  PutLE(&out, 1, 1);
  PutLE(&out, static_cast<uint8_t>(r.kind), 1);
  PutLE(&out, r.read_only ? 1 : 0, 1);
  PutLE(&out, r.depth, 1);
  PutLE(&out, 0, 4);
  PutLE(&out, r.size_bytes, 8);
  PutLE(&out, r.root, 8);
  PutLE(&out, r.id, 8);
  PutLE(&out, r.version_set, 8);
  PutLE(&out, r.created_unix_seconds, 8);
  PutLE(&out, r.mapped_blocks, 8);
  PutLE(&out, r.parent_id, 8);
  PutLE(&out, r.parent_name.size(), 2);
  out += r.parent_name;
  return out;
}

Result<VolumeRecord> DecodeVolumeRecord(std::string_view in) {
  if (in.size() < kVolumeFixedSize) return Status::Corruption("volume record too short");
  if (GetLE(in, 0, 1) != 1) return Status::Corruption("volume record: unknown version");
  VolumeRecord r;
  uint64_t kind = GetLE(in, 1, 1);
  if (kind > 2) return Status::Corruption("volume record: bad kind");
  r.kind = static_cast<VolumeRecord::Kind>(kind);
  r.read_only = (GetLE(in, 2, 1) & 1) != 0;
  r.depth = static_cast<uint8_t>(GetLE(in, 3, 1));
  if (r.depth < 1 || r.depth > kMaxDepth) return Status::Corruption("volume record: bad depth");
  r.size_bytes = GetLE(in, 8, 8);
  r.root = GetLE(in, 16, 8);
  r.id = GetLE(in, 24, 8);
  r.version_set = GetLE(in, 32, 8);
  r.created_unix_seconds = GetLE(in, 40, 8);
  r.mapped_blocks = GetLE(in, 48, 8);
  r.parent_id = GetLE(in, 56, 8);
  uint64_t n = GetLE(in, 64, 2);
  if (in.size() != kVolumeFixedSize + n) return Status::Corruption("volume record: bad length");
  r.parent_name = std::string(in.substr(kVolumeFixedSize, n));
  return r;
}

uint32_t MapNode::CountUsed() const {
  uint32_t n = 0;
  for (uint32_t i = 0; i < kFanout; ++i) n += SlotUsed(i) ? 1 : 0;
  return n;
}

std::string EncodeMapNode(const MapNode& node) {
  uint32_t n = node.CountUsed();
  std::string out;
  out.reserve(kNodeHeaderSize + n * (node.IsLeaf() ? kLeafEntrySize : kInteriorEntrySize));
  PutLE(&out, node.level, 1);
  PutLE(&out, 0, 1);
  PutLE(&out, n, 2);
  PutLE(&out, 0, 4);
  for (uint32_t i = 0; i < kFanout; ++i) {
    if (!node.SlotUsed(i)) continue;
    PutLE(&out, i, 1);
    PutLE(&out, node.child[i], 8);
    if (node.IsLeaf()) PutLE(&out, node.generation[i], 8);
  }
  return out;
}

Result<MapNode> DecodeMapNode(std::string_view in) {
  if (in.size() < kNodeHeaderSize) return Status::Corruption("map node too short");
  MapNode node;
  node.level = static_cast<uint8_t>(GetLE(in, 0, 1));
  if (node.level >= kMaxDepth) return Status::Corruption("map node: bad level");
  uint64_t n = GetLE(in, 2, 2);
  size_t entry = node.IsLeaf() ? kLeafEntrySize : kInteriorEntrySize;
  if (n == 0 || n > kFanout || in.size() != kNodeHeaderSize + n * entry) {
    return Status::Corruption("map node: bad entry count or length");
  }
  int last_slot = -1;
  for (uint64_t k = 0; k < n; ++k) {
    size_t pos = kNodeHeaderSize + k * entry;
    int slot = static_cast<int>(GetLE(in, pos, 1));
    if (slot <= last_slot) return Status::Corruption("map node: slots out of order");
    last_slot = slot;
    node.child[slot] = GetLE(in, pos + 1, 8);
    if (node.IsLeaf()) {
      node.generation[slot] = GetLE(in, pos + 9, 8);
      if (node.generation[slot] == 0) return Status::Corruption("map node: generation 0");
    } else if (node.child[slot] == 0) {
      return Status::Corruption("map node: child id 0");
    }
  }
  return node;
}

std::string EncodeLeaseRecord(const LeaseRecord& record) {
  std::string out;
  PutLE(&out, record.instance, 8);
  PutLE(&out, record.epoch, 8);
  out += record.host;
  return out;
}

Result<LeaseRecord> DecodeLeaseRecord(std::string_view volume, std::string_view bytes) {
  if (bytes.size() < 17 || bytes.size() > 16 + 255) {
    return Status::Corruption("lease record of " + std::string(volume) + ": " +
                              std::to_string(bytes.size()) + " bytes");
  }
  LeaseRecord r;
  r.volume = std::string(volume);
  r.instance = GetLE(bytes, 0, 8);
  r.epoch = GetLE(bytes, 8, 8);
  r.host = std::string(bytes.substr(16));
  if (r.instance == 0) return Status::Corruption("lease record of " + r.volume + ": instance 0");
  return r;
}

std::string InstanceKey(const InstanceRecord& record) {
  char hex[17];
  std::snprintf(hex, sizeof(hex), "%016llx", static_cast<unsigned long long>(record.instance));
  return std::string(kMetaInstancePrefix) + record.host + "/" + hex;
}

Result<InstanceRecord> DecodeInstanceKey(std::string_view key) {
  auto bad = [&]() { return Status::Corruption("instance record key '" + std::string(key) + "'"); };
  if (key.substr(0, kMetaInstancePrefix.size()) != kMetaInstancePrefix) return bad();
  std::string_view rest = key.substr(kMetaInstancePrefix.size());
  size_t slash = rest.rfind('/');
  if (slash == std::string_view::npos || slash == 0 || rest.size() - slash - 1 != 16) return bad();
  InstanceRecord r;
  r.host = std::string(rest.substr(0, slash));
  for (char c : rest.substr(slash + 1)) {
    int v = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
    if (v < 0) return bad();
    r.instance = (r.instance << 4) | static_cast<uint64_t>(v);
  }
  if (r.instance == 0) return bad();
  return r;
}

}  // namespace tapmap::mapserver
