// The metadata journal's formats (mapserver/doc/metadata_rados.md): a journal record
// (the operations of one committed metadata transaction) and the head (which
// checkpoint holds the metadata, and the first journal record not in it). Written by
// the active mapserver, read by a standby, a restarting server and fsck; defined here
// once for all of them.
//
// Record, all integers little-endian:
//   u32 magic "TMJR" (0x524a4d54) | u8 version (1) | u8[3] zero | u64 seq |
//   u32 payload length | u32 crc32c(seq, length, payload) | payload
//   payload: u32 op count, then per op:
//     u8 kind (1 put, 2 delete) | u8 table (metadata_format.h Table) |
//     u32 key length | key | (put only) u32 value length | value
//
// Head, 64 bytes:
//   u32 magic "TMJH" (0x484a4d54) | u32 version (1) | u64 checkpoint generation |
//   u64 first journal seq not in the checkpoint | u64 checkpoint bytes |
//   u32 checkpoint chunk count | u32 crc32c of the checkpoint bytes |
//   u64 checkpoint writer (the librados instance id that wrote the chunks) |
//   u8[12] zero | u32 crc32c of the 60 bytes before it
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "mapserver/metadata_format.h"

namespace tapmap::mapserver {

inline constexpr uint32_t kJournalRecordMagic = 0x524a4d54;  // "TMJR"
inline constexpr uint32_t kJournalHeadMagic = 0x484a4d54;    // "TMJH"
inline constexpr uint8_t kJournalVersion = 1;
inline constexpr size_t kJournalRecordHeaderBytes = 24;
inline constexpr size_t kJournalHeadBytes = 64;

// One change of a transaction: a put of `value` under `key`, or (no value) a delete.
struct JournalOp {
  Table table = Table::kMeta;
  std::string key;
  std::optional<std::string> value;  // nullopt: delete

  bool operator==(const JournalOp&) const = default;
};

struct JournalRecord {
  uint64_t seq = 0;
  std::vector<JournalOp> ops;
};

struct JournalHead {
  uint64_t checkpoint_generation = 0;
  uint64_t first_seq = 1;         // the first journal record NOT in the checkpoint
  uint64_t checkpoint_bytes = 0;  // size of the LMDB copy (0: an empty checkpoint)
  uint32_t checkpoint_chunks = 0;
  uint32_t checkpoint_crc = 0;    // crc32c of the checkpoint's bytes
  uint64_t checkpoint_writer = 0;

  bool operator==(const JournalHead&) const = default;
};

// CRC-32C (Castagnoli), continuing from `crc` (0 to start).
uint32_t Crc32c(uint32_t crc, std::string_view data);

std::string EncodeJournalRecord(const JournalRecord& record);
// Decodes one whole record. kCorruption naming the fault on a bad magic or version, a
// length that disagrees with the text (truncation or trailing bytes), a checksum
// mismatch, an unknown op kind or table, or ops that overrun the payload.
Result<JournalRecord> DecodeJournalRecord(std::string_view bytes);

std::string EncodeJournalHead(const JournalHead& head);
// kCorruption on a bad size, magic, version or checksum.
Result<JournalHead> DecodeJournalHead(std::string_view bytes);

}  // namespace tapmap::mapserver
