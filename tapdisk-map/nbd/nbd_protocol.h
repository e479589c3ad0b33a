// The NBD wire format as tapdisk-map speaks it: every magic number, flag, option,
// command, reply type and error value, and every message and payload layout with its
// encoder and decoder. This is the ONE place the format is defined: no other file puts
// a field at an offset. The handshake (handshake.h) and the transmission phase
// (transmission.h) build and parse every byte they exchange through these functions;
// PutBe*/GetBe* serve nbd_protocol.cc and tests that check byte positions
// independently of the codec. The format is described in prose in doc/nbd_wire.md,
// which follows the NBD protocol specification (nbd/doc/proto.md upstream).
//
// All integers travel in network byte order (big-endian). Decoders of fixed-size
// messages take exactly the message's size in bytes; decoders of variable-length
// payloads check every length against the bytes given. None reads beyond its input.
// Decoders check the layout only (lengths, strings), not semantics such as magic
// numbers or flag bits: that is the callers' job at the trust boundary.
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace tapmap::nbd {

// ---------------------------------------------------------------------------------------
// Big-endian field access

inline void PutBe16(uint8_t* p, uint16_t v) {
  p[0] = static_cast<uint8_t>(v >> 8);
  p[1] = static_cast<uint8_t>(v);
}
inline void PutBe32(uint8_t* p, uint32_t v) {
  for (int i = 3; i >= 0; --i, v >>= 8) p[i] = static_cast<uint8_t>(v);
}
inline void PutBe64(uint8_t* p, uint64_t v) {
  for (int i = 7; i >= 0; --i, v >>= 8) p[i] = static_cast<uint8_t>(v);
}
inline uint16_t GetBe16(const uint8_t* p) { return static_cast<uint16_t>((p[0] << 8) | p[1]); }
inline uint32_t GetBe32(const uint8_t* p) {
  uint32_t v = 0;
  for (int i = 0; i < 4; ++i) v = (v << 8) | p[i];
  return v;
}
inline uint64_t GetBe64(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v = (v << 8) | p[i];
  return v;
}

// ---------------------------------------------------------------------------------------
// Handshake

inline constexpr uint64_t kInitMagic = 0x4e42444d41474943ull;    // "NBDMAGIC"
inline constexpr uint64_t kOptionMagic = 0x49484156454f5054ull;  // "IHAVEOPT"
inline constexpr uint64_t kOptionReplyMagic = 0x0003e889045565a9ull;

// Handshake flags (server -> client, 16 bits).
inline constexpr uint16_t kFlagFixedNewstyle = 1u << 0;
inline constexpr uint16_t kFlagNoZeroes = 1u << 1;
// Client flags (client -> server, 32 bits).
inline constexpr uint32_t kClientFlagFixedNewstyle = 1u << 0;
inline constexpr uint32_t kClientFlagNoZeroes = 1u << 1;
inline constexpr uint32_t kKnownClientFlags = kClientFlagFixedNewstyle | kClientFlagNoZeroes;

// Options (client requests during negotiation).
enum class Option : uint32_t {
  kExportName = 1,
  kAbort = 2,
  kList = 3,
  kPeekExport = 4,
  kStartTls = 5,
  kInfo = 6,
  kGo = 7,
  kStructuredReply = 8,
  kListMetaContext = 9,
  kSetMetaContext = 10,
  kExtendedHeaders = 11,
};

// Option reply types. Errors have bit 31 set.
inline constexpr uint32_t kRepAck = 1;
inline constexpr uint32_t kRepServer = 2;
inline constexpr uint32_t kRepInfo = 3;
inline constexpr uint32_t kRepMetaContext = 4;
inline constexpr uint32_t kRepErrorBit = 1u << 31;
inline constexpr uint32_t kRepErrUnsup = kRepErrorBit | 1;
inline constexpr uint32_t kRepErrPolicy = kRepErrorBit | 2;
inline constexpr uint32_t kRepErrInvalid = kRepErrorBit | 3;
inline constexpr uint32_t kRepErrPlatform = kRepErrorBit | 4;
inline constexpr uint32_t kRepErrTlsReqd = kRepErrorBit | 5;
inline constexpr uint32_t kRepErrUnknown = kRepErrorBit | 6;
inline constexpr uint32_t kRepErrShutdown = kRepErrorBit | 7;
inline constexpr uint32_t kRepErrBlockSizeReqd = kRepErrorBit | 8;
inline constexpr uint32_t kRepErrTooBig = kRepErrorBit | 9;

// Information items of NBD_OPT_INFO / NBD_OPT_GO (16-bit type tags).
inline constexpr uint16_t kInfoExport = 0;       // u64 size, u16 transmission flags
inline constexpr uint16_t kInfoName = 1;         // string
inline constexpr uint16_t kInfoDescription = 2;  // string
inline constexpr uint16_t kInfoBlockSize = 3;    // u32 minimum, u32 preferred, u32 maximum

// Transmission flags (16 bits, per export).
inline constexpr uint16_t kTxHasFlags = 1u << 0;
inline constexpr uint16_t kTxReadOnly = 1u << 1;
inline constexpr uint16_t kTxSendFlush = 1u << 2;
inline constexpr uint16_t kTxSendFua = 1u << 3;
inline constexpr uint16_t kTxRotational = 1u << 4;
inline constexpr uint16_t kTxSendTrim = 1u << 5;
inline constexpr uint16_t kTxSendWriteZeroes = 1u << 6;
inline constexpr uint16_t kTxSendDf = 1u << 7;
inline constexpr uint16_t kTxCanMultiConn = 1u << 8;

// Strings (export names, messages) are at most this long on the wire.
inline constexpr uint32_t kMaxStringLength = 4096;

// ---------------------------------------------------------------------------------------
// Transmission

inline constexpr uint32_t kRequestMagic = 0x25609513u;
inline constexpr uint32_t kSimpleReplyMagic = 0x67446698u;
inline constexpr uint32_t kStructuredReplyMagic = 0x668e33efu;

enum class Command : uint16_t {
  kRead = 0,
  kWrite = 1,
  kDisconnect = 2,
  kFlush = 3,
  kTrim = 4,
  kCache = 5,
  kWriteZeroes = 6,
  kBlockStatus = 7,
};

// Command flags (16 bits, per request).
inline constexpr uint16_t kCmdFlagFua = 1u << 0;
inline constexpr uint16_t kCmdFlagNoHole = 1u << 1;
inline constexpr uint16_t kCmdFlagDf = 1u << 2;
inline constexpr uint16_t kCmdFlagReqOne = 1u << 3;
inline constexpr uint16_t kCmdFlagFastZero = 1u << 4;

// Structured reply chunk types and flags.
inline constexpr uint16_t kReplyFlagDone = 1u << 0;
inline constexpr uint16_t kReplyTypeNone = 0;
inline constexpr uint16_t kReplyTypeOffsetData = 1;
inline constexpr uint16_t kReplyTypeOffsetHole = 2;
inline constexpr uint16_t kReplyTypeBlockStatus = 5;
inline constexpr uint16_t kReplyTypeError = (1u << 15) | 1;
inline constexpr uint16_t kReplyTypeErrorOffset = (1u << 15) | 2;

// Metadata contexts (NBD_OPT_SET_META_CONTEXT, NBD_CMD_BLOCK_STATUS). tapdisk-map
// serves one, base:allocation, under this context id (ids are the server's choice).
inline constexpr std::string_view kBaseAllocationContext = "base:allocation";
inline constexpr uint32_t kBaseAllocationContextId = 1;
// tapmap:changed-since:SNAPSHOT — the extents that differ from snapshot SNAPSHOT
// (doc/block_status.md), under this id; its one status flag:
inline constexpr std::string_view kChangedSincePrefix = "tapmap:changed-since:";
inline constexpr uint32_t kChangedSinceContextId = 2;
inline constexpr uint32_t kStateChanged = 1u << 0;
// base:allocation status flags of a block status descriptor.
inline constexpr uint32_t kStateHole = 1u << 0;  // not allocated
inline constexpr uint32_t kStateZero = 1u << 1;  // reads as zeros

// Error values carried in replies (Linux errno numbering, fixed by the protocol).
inline constexpr uint32_t kErrPerm = 1;
inline constexpr uint32_t kErrIo = 5;
inline constexpr uint32_t kErrNoMem = 12;
inline constexpr uint32_t kErrInval = 22;
inline constexpr uint32_t kErrNoSpc = 28;
inline constexpr uint32_t kErrOverflow = 75;
inline constexpr uint32_t kErrNotSup = 95;
inline constexpr uint32_t kErrShutdown = 108;

// ---------------------------------------------------------------------------------------
// Handshake messages
//
// Every message of the negotiation phase, in the order doc/nbd_wire.md ("Phase 1")
// describes them. Fixed-size messages are encoded into arrays and decoded from spans of
// exactly their size. Variable-length payloads are decoded from whatever the peer sent:
// the decoder checks every length against the bytes present and returns
// kInvalidArgument naming the bad value instead of reading past the end.

// Strings (export names, messages) carry no terminator and are at most
// kMaxStringLength bytes. A valid one also contains no NUL byte.
bool IsValidString(std::string_view s);
// `s` cut to kMaxStringLength bytes (error messages are truncated, not refused).
std::string_view ClampString(std::string_view s);

// Server greeting: NBDMAGIC, IHAVEOPT, 16-bit handshake flags.
inline constexpr size_t kGreetingSize = 18;
struct Greeting {
  uint64_t init_magic = 0;    // kInitMagic
  uint64_t option_magic = 0;  // kOptionMagic
  uint16_t handshake_flags = 0;
};
std::array<uint8_t, kGreetingSize> EncodeGreeting(uint16_t handshake_flags);
Greeting DecodeGreeting(std::span<const uint8_t, kGreetingSize> bytes);

// Client flags (the client's answer to the greeting): a 32-bit flag word.
inline constexpr size_t kClientFlagsSize = 4;
std::array<uint8_t, kClientFlagsSize> EncodeClientFlags(uint32_t client_flags);
uint32_t DecodeClientFlags(std::span<const uint8_t, kClientFlagsSize> bytes);

// Client option header: IHAVEOPT, u32 option, u32 data length (data follows).
inline constexpr size_t kOptionHeaderSize = 16;
struct OptionHeader {
  uint64_t magic = 0;
  uint32_t option = 0;
  uint32_t length = 0;
};
OptionHeader DecodeOptionHeader(std::span<const uint8_t, kOptionHeaderSize> bytes);
std::array<uint8_t, kOptionHeaderSize> EncodeOptionHeader(const OptionHeader& header);

// NBD_OPT_EXPORT_NAME data: the export name, all of it (no length field).
// Decoding fails unless it is a valid string.
std::vector<uint8_t> EncodeExportNameOption(std::string_view name);
Result<std::string> DecodeExportNameOption(std::span<const uint8_t> data);

// NBD_OPT_INFO / NBD_OPT_GO data: u32 name length, name, u16 count of information
// requests, count x u16 information type. Decoding fails unless the lengths add up to
// exactly data.size() and the name is a valid string.
struct InfoRequest {
  std::string name;
  std::vector<uint16_t> items;  // kInfo* values the client asks for (may be unknown)
};
std::vector<uint8_t> EncodeInfoRequest(const InfoRequest& request);
Result<InfoRequest> DecodeInfoRequest(std::span<const uint8_t> data);

// Server option reply header: magic, u32 option, u32 reply type, u32 data length.
inline constexpr size_t kOptionReplyHeaderSize = 20;
struct OptionReplyHeader {
  uint64_t magic = 0;  // kOptionReplyMagic
  uint32_t option = 0;
  uint32_t type = 0;  // kRep*
  uint32_t length = 0;
};
std::array<uint8_t, kOptionReplyHeaderSize> EncodeOptionReplyHeader(uint32_t option, uint32_t type,
                                                                    uint32_t length);
OptionReplyHeader DecodeOptionReplyHeader(std::span<const uint8_t, kOptionReplyHeaderSize> bytes);

// Data of an error reply (kRep* with kRepErrorBit): a human-readable message, clamped
// to kMaxStringLength bytes when encoded. Decoding fails for a longer one.
std::vector<uint8_t> EncodeOptionErrorMessage(std::string_view message);
Result<std::string> DecodeOptionErrorMessage(std::span<const uint8_t> data);

// NBD_REP_SERVER data (one per export, answering NBD_OPT_LIST): u32 name length, name.
// The protocol lets a server append free-form details after the name; we send none and
// the decoder ignores them. `name` must be a valid string.
std::vector<uint8_t> EncodeServerReply(std::string_view name);
Result<std::string> DecodeServerReply(std::span<const uint8_t> data);

// NBD_REP_INFO data: u16 information type (kInfo*), then per type:
//   kInfoExport:    u64 size in bytes, u16 transmission flags (12 bytes in all);
//   kInfoName:      the export name, to the end of the data (no length field);
//   kInfoBlockSize: u32 minimum, u32 preferred, u32 maximum block size (14 bytes).
// Each Decode* fails unless the data has that type and that exact size.
inline constexpr size_t kInfoExportSize = 12;
inline constexpr size_t kInfoBlockSizeSize = 14;
struct InfoExport {
  uint64_t size_bytes = 0;
  uint16_t transmission_flags = 0;
};
struct InfoBlockSize {
  uint32_t minimum = 0;
  uint32_t preferred = 0;
  uint32_t maximum = 0;
};
std::array<uint8_t, kInfoExportSize> EncodeInfoExport(const InfoExport& info);
std::array<uint8_t, kInfoBlockSizeSize> EncodeInfoBlockSize(const InfoBlockSize& info);
// `name` must be a valid string.
std::vector<uint8_t> EncodeInfoName(std::string_view name);
// The information type of any NBD_REP_INFO data (fails if shorter than 2 bytes).
Result<uint16_t> DecodeInfoType(std::span<const uint8_t> data);
Result<InfoExport> DecodeInfoExport(std::span<const uint8_t> data);
Result<InfoBlockSize> DecodeInfoBlockSize(std::span<const uint8_t> data);
Result<std::string> DecodeInfoName(std::span<const uint8_t> data);

// NBD_OPT_LIST_META_CONTEXT / NBD_OPT_SET_META_CONTEXT data: u32 export name length,
// export name, u32 number of queries, then per query u32 length and the query string.
// Decoding fails unless the lengths add up to exactly data.size() and every string is
// valid.
struct MetaContextRequest {
  std::string name;
  std::vector<std::string> queries;
};
std::vector<uint8_t> EncodeMetaContextRequest(const MetaContextRequest& request);
Result<MetaContextRequest> DecodeMetaContextRequest(std::span<const uint8_t> data);

// NBD_REP_META_CONTEXT data: u32 context id, the context name to the end of the data.
struct MetaContextReply {
  uint32_t id = 0;
  std::string name;
};
std::vector<uint8_t> EncodeMetaContextReply(uint32_t id, std::string_view name);
Result<MetaContextReply> DecodeMetaContextReply(std::span<const uint8_t> data);

// Reply to NBD_OPT_EXPORT_NAME: u64 size, u16 transmission flags, then 124 zero bytes
// unless both sides agreed on NO_ZEROES (`padded` false).
inline constexpr size_t kExportNameReplySize = 10;
inline constexpr size_t kExportNameReplyPadding = 124;
std::vector<uint8_t> EncodeExportNameReply(const InfoExport& info, bool padded);
InfoExport DecodeExportNameReply(std::span<const uint8_t, kExportNameReplySize> bytes);

// ---------------------------------------------------------------------------------------
// Transmission messages

// Request: magic, u16 command flags, u16 type, u64 handle, u64 offset, u32 length.
inline constexpr size_t kRequestSize = 28;
struct Request {
  uint32_t magic = 0;
  uint16_t flags = 0;
  uint16_t type = 0;
  uint64_t handle = 0;
  uint64_t offset = 0;
  uint32_t length = 0;
};
Request DecodeRequest(std::span<const uint8_t, kRequestSize> bytes);
std::array<uint8_t, kRequestSize> EncodeRequest(const Request& request);

// Simple reply: magic, u32 error, u64 handle (read data follows on success).
inline constexpr size_t kSimpleReplySize = 16;
struct SimpleReply {
  uint32_t magic = 0;  // kSimpleReplyMagic
  uint32_t error = 0;  // kErr*, 0 = success
  uint64_t handle = 0;
};
std::array<uint8_t, kSimpleReplySize> EncodeSimpleReply(uint32_t error, uint64_t handle);
SimpleReply DecodeSimpleReply(std::span<const uint8_t, kSimpleReplySize> bytes);

// Structured reply chunk header: magic, u16 flags, u16 type, u64 handle, u32 length.
inline constexpr size_t kStructuredReplyHeaderSize = 20;
struct StructuredReplyHeader {
  uint32_t magic = 0;  // kStructuredReplyMagic
  uint16_t flags = 0;  // kReplyFlag*
  uint16_t type = 0;   // kReplyType*
  uint64_t handle = 0;
  uint32_t length = 0;  // of the chunk's payload
};
std::array<uint8_t, kStructuredReplyHeaderSize> EncodeStructuredReplyHeader(uint16_t flags,
                                                                            uint16_t type,
                                                                            uint64_t handle,
                                                                            uint32_t length);
StructuredReplyHeader DecodeStructuredReplyHeader(
    std::span<const uint8_t, kStructuredReplyHeaderSize> bytes);

// NBD_REPLY_TYPE_OFFSET_DATA chunk: header, then the payload u64 offset followed by the
// data. EncodeOffsetDataChunkHead encodes all but the data (`data_length` bytes, sent
// after it; at most UINT32_MAX - 8). DecodeOffsetData splits a chunk's payload (fails
// if shorter than 8 bytes); `data` views `payload`.
inline constexpr size_t kOffsetDataChunkHeadSize = kStructuredReplyHeaderSize + 8;
struct OffsetData {
  uint64_t offset = 0;
  std::span<const uint8_t> data;
};
std::array<uint8_t, kOffsetDataChunkHeadSize> EncodeOffsetDataChunkHead(uint16_t flags,
                                                                        uint64_t handle,
                                                                        uint64_t offset,
                                                                        uint32_t data_length);
Result<OffsetData> DecodeOffsetData(std::span<const uint8_t> payload);

// NBD_REPLY_TYPE_ERROR chunk: header, then the payload u32 error, u16 message length,
// message. EncodeErrorChunk encodes header and payload, `message` clamped to
// kMaxStringLength bytes. DecodeErrorChunk decodes a payload (fails unless the message
// length matches the payload's size).
struct ErrorChunk {
  uint32_t error = 0;  // kErr*
  std::string message;
};
std::vector<uint8_t> EncodeErrorChunk(uint16_t flags, uint64_t handle, uint32_t error,
                                      std::string_view message);
Result<ErrorChunk> DecodeErrorChunk(std::span<const uint8_t> payload);

// NBD_REPLY_TYPE_BLOCK_STATUS chunk: header, then the payload u32 context id followed
// by descriptors of u32 length, u32 status flags (kState* for base:allocation).
// EncodeBlockStatusChunk encodes header and payload; DecodeBlockStatus decodes a
// payload (fails unless it is 4 + a multiple of 8 bytes).
struct BlockStatusDescriptor {
  uint32_t length = 0;
  uint32_t flags = 0;
  bool operator==(const BlockStatusDescriptor&) const = default;
};
struct BlockStatus {
  uint32_t context_id = 0;
  std::vector<BlockStatusDescriptor> descriptors;
};
std::vector<uint8_t> EncodeBlockStatusChunk(uint16_t flags, uint64_t handle, uint32_t context_id,
                                            std::span<const BlockStatusDescriptor> descriptors);
Result<BlockStatus> DecodeBlockStatus(std::span<const uint8_t> payload);

// ---------------------------------------------------------------------------------------
// Mapping

// The NBD error value that best describes `status` (EINVAL, EPERM, ENOSPC, EIO...).
uint32_t ErrorFromStatus(const Status& status);
// The option error reply (kRepErr*) that best describes why an export could not be
// described or opened: unknown, invalid, policy (busy, not allowed), shutdown, platform.
uint32_t OptionErrorFromStatus(const Status& status);
// Short names for logs ("READ", "NBD_OPT_GO"); "unknown(N)" for anything else.
std::string CommandName(uint16_t type);
std::string OptionName(uint32_t option);

}  // namespace tapmap::nbd
