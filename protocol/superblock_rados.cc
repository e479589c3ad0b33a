#include "protocol/superblock_rados.h"

#include <vector>

#include "common/units.h"
#include "rados/rados_cluster.h"

namespace tapmap::protocol {
namespace {

std::string Describe(const PoolLocation& location) {
  return std::string(kRadosScheme) + location.rados.pool + "/" + location.prefix;
}

}  // namespace

Result<Superblock> FormatRadosPool(const PoolLocation& location, const FormatOptions& options) {
  const std::string where = Describe(location);
  if (!IsPowerOfTwo(options.block_size) || options.block_size < kMinBlockSize ||
      options.block_size > kMaxBlockSize) {
    return Status::InvalidArgument("block size must be a power of two in 4K..1M, not " +
                                   std::to_string(options.block_size));
  }
  if (!IsPowerOfTwo(options.object_bytes) || options.object_bytes < options.block_size ||
      options.object_bytes > kMaxObjectBytes) {
    return Status::InvalidArgument("object size must be a power of two from the block size (" +
                                   FormatSize(options.block_size) + ") to " + FormatSize(kMaxObjectBytes) +
                                   ", not " + std::to_string(options.object_bytes));
  }
  if (options.size_bytes == 0) return Status::InvalidArgument("--size is required for a RADOS pool");
  if (options.size_bytes < kDataOffset + options.block_size) {
    return Status::InvalidArgument("pool size " + FormatSize(options.size_bytes) + " is too small (minimum " +
                                   FormatSize(kDataOffset + options.block_size) + ")");
  }
  if (options.preallocate) return Status::NotSupported("--preallocate applies to pool files, not " + where);

  auto cluster = rados::RadosCluster::Connect(location.rados);
  if (!cluster.ok()) return cluster.status().WithContext("pool " + where);
  auto sb = NewSuperblock(options.block_size, options.size_bytes, options.object_bytes);
  if (!sb.ok()) return sb.status();
  auto encoded = EncodeSuperblock(*sb);
  const std::string oid = RadosSuperblockObject(location.prefix);
  Status written = (*cluster)->WriteObject(oid, std::vector<uint8_t>(encoded.begin(), encoded.end()),
                                           /*exclusive=*/!options.force);
  if (written.code() == StatusCode::kAlreadyExists) {
    auto old = (*cluster)->ReadObject(oid, kSuperblockSize);
    std::string what = "an object " + oid;
    if (old.ok()) {
      auto existing = DecodeSuperblock(old->data(), old->size());
      if (existing.ok()) {
        what = "tapmap pool " + FormatUuid(existing->uuid);
      } else if (existing.status().code() != StatusCode::kNotFound) {
        what = "a damaged tapmap superblock (" + existing.status().message() + ")";
      }
    }
    return Status::AlreadyExists(where + " already holds " + what + " (use --force to overwrite)");
  }
  if (!written.ok()) return written.WithContext("pool " + where);
  return sb;
}

Result<Superblock> ReadRadosPoolSuperblock(const PoolLocation& location) {
  const std::string where = Describe(location);
  auto cluster = rados::RadosCluster::Connect(location.rados);
  if (!cluster.ok()) return cluster.status().WithContext("pool " + where);
  const std::string oid = RadosSuperblockObject(location.prefix);
  auto data = (*cluster)->ReadObject(oid, kSuperblockSize);
  if (!data.ok()) {
    if (data.status().code() == StatusCode::kNotFound) {
      return Status::NotFound("pool " + where + ": no tapmap pool superblock (object " + oid + " does not exist)");
    }
    return data.status().WithContext("pool " + where);
  }
  auto sb = DecodeSuperblock(data->data(), data->size());
  if (!sb.ok()) return sb.status().WithContext("pool " + where);
  if (sb->object_bytes == 0) {
    return Status::Corruption("pool " + where + ": its superblock describes a file pool (no object size)");
  }
  return sb;
}

}  // namespace tapmap::protocol
