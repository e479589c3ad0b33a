#include "protocol/pool_format.h"

#include <openssl/sha.h>

#include <cstdio>
#include <cstring>

#include "common/units.h"

namespace tapmap::protocol {
namespace {

void Put32(uint8_t* p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}
void Put64(uint8_t* p, uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}
uint32_t Get32(const uint8_t* p) {
  uint32_t v = 0;
  for (int i = 3; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}
uint64_t Get64(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}
uint64_t Checksum(const uint8_t* data) {
  uint8_t digest[SHA256_DIGEST_LENGTH];
  SHA256(data, kSuperblockChecksumOffset, digest);
  return Get64(digest);
}

}  // namespace

std::string FormatUuid(const PoolUuid& uuid) {
  char buf[37];
  std::snprintf(buf, sizeof(buf),
                "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", uuid[0],
                uuid[1], uuid[2], uuid[3], uuid[4], uuid[5], uuid[6], uuid[7], uuid[8], uuid[9],
                uuid[10], uuid[11], uuid[12], uuid[13], uuid[14], uuid[15]);
  return buf;
}

std::string RadosSuperblockObject(std::string_view prefix) {
  return std::string(prefix) + ".superblock";
}

std::string RadosDataObject(std::string_view prefix, uint64_t index) {
  char hex[17];
  std::snprintf(hex, sizeof(hex), "%016llx", static_cast<unsigned long long>(index));
  return std::string(prefix) + ".data." + hex;
}

std::array<uint8_t, kSuperblockSize> EncodeSuperblock(const Superblock& sb) {
  std::array<uint8_t, kSuperblockSize> out{};
  uint8_t* p = out.data();
  std::memcpy(p, kPoolMagic, sizeof(kPoolMagic));
  Put32(p + 8, sb.format_version);
  Put32(p + 12, sb.block_size);
  std::memcpy(p + 16, sb.uuid.data(), sb.uuid.size());
  Put64(p + 32, sb.pool_bytes);
  Put64(p + 40, sb.data_offset);
  Put64(p + 48, sb.total_blocks);
  Put64(p + 56, sb.created_unix_seconds);
  Put64(p + kObjectBytesOffset, sb.object_bytes);
  Put64(p + kSuperblockChecksumOffset, Checksum(p));
  return out;
}

Result<Superblock> DecodeSuperblock(const uint8_t* p, size_t size) {
  if (size < kSuperblockSize || std::memcmp(p, kPoolMagic, sizeof(kPoolMagic)) != 0) {
    return Status::NotFound("no tapmap pool superblock (magic missing)");
  }
  if (Get64(p + kSuperblockChecksumOffset) != Checksum(p)) {
    return Status::Corruption("pool superblock checksum mismatch");
  }
  Superblock sb;
  sb.format_version = Get32(p + 8);
  if (sb.format_version != kPoolFormatVersion) {
    return Status::NotSupported("pool format version " + std::to_string(sb.format_version) +
                                " (this program knows " + std::to_string(kPoolFormatVersion) + ")");
  }
  sb.block_size = Get32(p + 12);
  std::memcpy(sb.uuid.data(), p + 16, sb.uuid.size());
  sb.pool_bytes = Get64(p + 32);
  sb.data_offset = Get64(p + 40);
  sb.total_blocks = Get64(p + 48);
  sb.created_unix_seconds = Get64(p + 56);
  sb.object_bytes = Get64(p + kObjectBytesOffset);
  if (!IsPowerOfTwo(sb.block_size) || sb.block_size < kMinBlockSize ||
      sb.block_size > kMaxBlockSize) {
    return Status::Corruption("pool superblock: bad block size " + std::to_string(sb.block_size));
  }
  if (sb.data_offset < kSuperblockSize || !IsAligned(sb.data_offset, sb.block_size) ||
      sb.total_blocks == 0 || sb.data_offset > sb.pool_bytes ||
      sb.total_blocks > (sb.pool_bytes - sb.data_offset) / sb.block_size) {
    return Status::Corruption("pool superblock: inconsistent geometry");
  }
  if (sb.object_bytes != 0 && (!IsPowerOfTwo(sb.object_bytes) || sb.object_bytes < sb.block_size ||
                               sb.object_bytes > kMaxObjectBytes)) {
    return Status::Corruption("pool superblock: bad object size " + std::to_string(sb.object_bytes));
  }
  return sb;
}

}  // namespace tapmap::protocol
