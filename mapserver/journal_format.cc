#include "mapserver/journal_format.h"

#include <array>
#include <cstring>

namespace tapmap::mapserver {
namespace {

constexpr std::array<uint32_t, 256> MakeCrcTable() {
  std::array<uint32_t, 256> table{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ 0x82f63b78u : c >> 1;
    table[i] = c;
  }
  return table;
}
constexpr std::array<uint32_t, 256> kCrcTable = MakeCrcTable();

void PutU8(std::string* out, uint8_t v) { out->push_back(static_cast<char>(v)); }
void PutU32(std::string* out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out->push_back(static_cast<char>(v >> (8 * i)));
}
void PutU64(std::string* out, uint64_t v) {
  for (int i = 0; i < 8; ++i) out->push_back(static_cast<char>(v >> (8 * i)));
}
uint64_t GetLe(std::string_view in, size_t at, int bytes) {
  uint64_t v = 0;
  for (int i = 0; i < bytes; ++i) v |= static_cast<uint64_t>(static_cast<uint8_t>(in[at + i])) << (8 * i);
  return v;
}

// A bounds-checked reader over a payload.
class Reader {
 public:
  explicit Reader(std::string_view in) : in_(in) {}
  bool U8(uint8_t* v) {
    if (pos_ + 1 > in_.size()) return false;
    *v = static_cast<uint8_t>(in_[pos_++]);
    return true;
  }
  bool U32(uint32_t* v) {
    if (pos_ + 4 > in_.size()) return false;
    *v = static_cast<uint32_t>(GetLe(in_, pos_, 4));
    pos_ += 4;
    return true;
  }
  bool Bytes(std::string* out) {
    uint32_t n = 0;
    if (!U32(&n) || n > in_.size() - pos_) return false;
    out->assign(in_.substr(pos_, n));
    pos_ += n;
    return true;
  }
  bool done() const { return pos_ == in_.size(); }

 private:
  std::string_view in_;
  size_t pos_ = 0;
};

uint32_t RecordCrc(uint64_t seq, uint32_t length, std::string_view payload) {
  std::string fields;
  PutU64(&fields, seq);
  PutU32(&fields, length);
  return Crc32c(Crc32c(0, fields), payload);
}

}  // namespace

uint32_t Crc32c(uint32_t crc, std::string_view data) {
  crc = ~crc;
  for (unsigned char c : data) crc = kCrcTable[(crc ^ c) & 0xff] ^ (crc >> 8);
  return ~crc;
}

std::string EncodeJournalRecord(const JournalRecord& record) {
  std::string payload;
  PutU32(&payload, static_cast<uint32_t>(record.ops.size()));
  for (const JournalOp& op : record.ops) {
    PutU8(&payload, op.value ? 1 : 2);
    PutU8(&payload, static_cast<uint8_t>(op.table));
    PutU32(&payload, static_cast<uint32_t>(op.key.size()));
    payload += op.key;
    if (op.value) {
      PutU32(&payload, static_cast<uint32_t>(op.value->size()));
      payload += *op.value;
    }
  }
  std::string out;
  out.reserve(kJournalRecordHeaderBytes + payload.size());
  PutU32(&out, kJournalRecordMagic);
  PutU8(&out, kJournalVersion);
  out.append(3, '\0');
  PutU64(&out, record.seq);
  PutU32(&out, static_cast<uint32_t>(payload.size()));
  PutU32(&out, RecordCrc(record.seq, static_cast<uint32_t>(payload.size()), payload));
  out += payload;
  return out;
}

Result<JournalRecord> DecodeJournalRecord(std::string_view bytes) {
  if (bytes.size() < kJournalRecordHeaderBytes) {
    return Status::Corruption("journal record: " + std::to_string(bytes.size()) + " bytes, shorter than its header");
  }
  if (GetLe(bytes, 0, 4) != kJournalRecordMagic) return Status::Corruption("journal record: bad magic");
  if (static_cast<uint8_t>(bytes[4]) != kJournalVersion) {
    return Status::Corruption("journal record: unknown version " + std::to_string(static_cast<uint8_t>(bytes[4])));
  }
  if (bytes[5] != 0 || bytes[6] != 0 || bytes[7] != 0) return Status::Corruption("journal record: reserved bytes not zero");
  JournalRecord record;
  record.seq = GetLe(bytes, 8, 8);
  const uint32_t length = static_cast<uint32_t>(GetLe(bytes, 16, 4));
  const uint32_t crc = static_cast<uint32_t>(GetLe(bytes, 20, 4));
  std::string_view payload = bytes.substr(kJournalRecordHeaderBytes);
  const std::string where = "journal record " + std::to_string(record.seq) + ": ";
  if (payload.size() != length) {
    return Status::Corruption(where + "payload is " + std::to_string(payload.size()) + " bytes, header says " +
                              std::to_string(length) + " (truncated or trailing bytes)");
  }
  if (RecordCrc(record.seq, length, payload) != crc) return Status::Corruption(where + "checksum mismatch");
  Reader in(payload);
  uint32_t count = 0;
  if (!in.U32(&count)) return Status::Corruption(where + "no op count");
  for (uint32_t i = 0; i < count; ++i) {
    uint8_t kind = 0, table = 0;
    JournalOp op;
    if (!in.U8(&kind) || !in.U8(&table) || !in.Bytes(&op.key)) {
      return Status::Corruption(where + "op " + std::to_string(i) + " overruns the payload");
    }
    if (table >= kTableCount) return Status::Corruption(where + "op " + std::to_string(i) + ": unknown table " + std::to_string(table));
    op.table = static_cast<Table>(table);
    if (kind == 1) {
      std::string value;
      if (!in.Bytes(&value)) return Status::Corruption(where + "op " + std::to_string(i) + " overruns the payload");
      op.value = std::move(value);
    } else if (kind != 2) {
      return Status::Corruption(where + "op " + std::to_string(i) + ": unknown kind " + std::to_string(kind));
    }
    record.ops.push_back(std::move(op));
  }
  if (!in.done()) return Status::Corruption(where + "bytes after the last op");
  return record;
}

std::string EncodeJournalHead(const JournalHead& head) {
  std::string out;
  PutU32(&out, kJournalHeadMagic);
  PutU32(&out, kJournalVersion);
  PutU64(&out, head.checkpoint_generation);
  PutU64(&out, head.first_seq);
  PutU64(&out, head.checkpoint_bytes);
  PutU32(&out, head.checkpoint_chunks);
  PutU32(&out, head.checkpoint_crc);
  PutU64(&out, head.checkpoint_writer);
  out.append(12, '\0');
  PutU32(&out, Crc32c(0, out));
  return out;
}

Result<JournalHead> DecodeJournalHead(std::string_view bytes) {
  if (bytes.size() != kJournalHeadBytes) {
    return Status::Corruption("journal head: " + std::to_string(bytes.size()) + " bytes, not " +
                              std::to_string(kJournalHeadBytes));
  }
  if (GetLe(bytes, 0, 4) != kJournalHeadMagic) return Status::Corruption("journal head: bad magic");
  if (GetLe(bytes, 4, 4) != kJournalVersion) return Status::Corruption("journal head: unknown version");
  if (Crc32c(0, bytes.substr(0, 60)) != GetLe(bytes, 60, 4)) return Status::Corruption("journal head: checksum mismatch");
  JournalHead head;
  head.checkpoint_generation = GetLe(bytes, 8, 8);
  head.first_seq = GetLe(bytes, 16, 8);
  head.checkpoint_bytes = GetLe(bytes, 24, 8);
  head.checkpoint_chunks = static_cast<uint32_t>(GetLe(bytes, 32, 4));
  head.checkpoint_crc = static_cast<uint32_t>(GetLe(bytes, 36, 4));
  head.checkpoint_writer = GetLe(bytes, 40, 8);
  return head;
}

}  // namespace tapmap::mapserver
