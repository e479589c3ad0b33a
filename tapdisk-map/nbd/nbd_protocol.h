// The NBD wire format as tapdisk-map speaks it: every magic number, flag, option,
// command, reply type and error value, and the fixed-size messages with their
// encoders/decoders. This is the ONE place the format is defined; the handshake
// (handshake.h) and the transmission phase (transmission.h) both use it. The format is
// described in prose in doc/nbd_wire.md.
//
// All integers travel in network byte order (big-endian). Decoders take exactly the
// message's size in bytes and never read beyond it; they do not validate semantics
// (that is the callers' job at the trust boundary).
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

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
inline constexpr uint16_t kReplyTypeError = (1u << 15) | 1;
inline constexpr uint16_t kReplyTypeErrorOffset = (1u << 15) | 2;

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
// Fixed-size messages

// Server greeting: NBDMAGIC, IHAVEOPT, 16-bit handshake flags.
inline constexpr size_t kGreetingSize = 18;
std::array<uint8_t, kGreetingSize> EncodeGreeting(uint16_t handshake_flags);

// Client option header: IHAVEOPT, u32 option, u32 data length (data follows).
inline constexpr size_t kOptionHeaderSize = 16;
struct OptionHeader {
  uint64_t magic = 0;
  uint32_t option = 0;
  uint32_t length = 0;
};
OptionHeader DecodeOptionHeader(std::span<const uint8_t, kOptionHeaderSize> bytes);
std::array<uint8_t, kOptionHeaderSize> EncodeOptionHeader(const OptionHeader& header);

// Server option reply header: magic, u32 option, u32 reply type, u32 data length.
inline constexpr size_t kOptionReplyHeaderSize = 20;
std::array<uint8_t, kOptionReplyHeaderSize> EncodeOptionReplyHeader(uint32_t option, uint32_t type,
                                                                    uint32_t length);

// Reply to NBD_OPT_EXPORT_NAME: u64 size, u16 transmission flags, then 124 zero bytes
// unless both sides agreed on NO_ZEROES.
inline constexpr size_t kExportNameReplySize = 10;
inline constexpr size_t kExportNameReplyPadding = 124;

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
std::array<uint8_t, kSimpleReplySize> EncodeSimpleReply(uint32_t error, uint64_t handle);

// Structured reply chunk header: magic, u16 flags, u16 type, u64 handle, u32 length.
inline constexpr size_t kStructuredReplyHeaderSize = 20;
std::array<uint8_t, kStructuredReplyHeaderSize> EncodeStructuredReplyHeader(uint16_t flags,
                                                                            uint16_t type,
                                                                            uint64_t handle,
                                                                            uint32_t length);

// ---------------------------------------------------------------------------------------
// Mapping

// The NBD error value that best describes `status` (EINVAL, EPERM, ENOSPC, EIO...).
uint32_t ErrorFromStatus(const Status& status);
// Short names for logs ("READ", "NBD_OPT_GO"); "unknown(N)" for anything else.
std::string CommandName(uint16_t type);
std::string OptionName(uint32_t option);

}  // namespace tapmap::nbd
