#include "tapdisk-map/nbd/nbd_protocol.h"

namespace tapmap::nbd {

std::array<uint8_t, kGreetingSize> EncodeGreeting(uint16_t handshake_flags) {
  std::array<uint8_t, kGreetingSize> out{};
  PutBe64(out.data(), kInitMagic);
  PutBe64(out.data() + 8, kOptionMagic);
  PutBe16(out.data() + 16, handshake_flags);
  return out;
}

OptionHeader DecodeOptionHeader(std::span<const uint8_t, kOptionHeaderSize> bytes) {
  OptionHeader h;
  h.magic = GetBe64(bytes.data());
  h.option = GetBe32(bytes.data() + 8);
  h.length = GetBe32(bytes.data() + 12);
  return h;
}

std::array<uint8_t, kOptionHeaderSize> EncodeOptionHeader(const OptionHeader& header) {
  std::array<uint8_t, kOptionHeaderSize> out{};
  PutBe64(out.data(), header.magic);
  PutBe32(out.data() + 8, header.option);
  PutBe32(out.data() + 12, header.length);
  return out;
}

std::array<uint8_t, kOptionReplyHeaderSize> EncodeOptionReplyHeader(uint32_t option, uint32_t type,
                                                                    uint32_t length) {
  std::array<uint8_t, kOptionReplyHeaderSize> out{};
  PutBe64(out.data(), kOptionReplyMagic);
  PutBe32(out.data() + 8, option);
  PutBe32(out.data() + 12, type);
  PutBe32(out.data() + 16, length);
  return out;
}

Request DecodeRequest(std::span<const uint8_t, kRequestSize> bytes) {
  Request r;
  r.magic = GetBe32(bytes.data());
  r.flags = GetBe16(bytes.data() + 4);
  r.type = GetBe16(bytes.data() + 6);
  r.handle = GetBe64(bytes.data() + 8);
  r.offset = GetBe64(bytes.data() + 16);
  r.length = GetBe32(bytes.data() + 24);
  return r;
}

std::array<uint8_t, kRequestSize> EncodeRequest(const Request& request) {
  std::array<uint8_t, kRequestSize> out{};
  PutBe32(out.data(), request.magic);
  PutBe16(out.data() + 4, request.flags);
  PutBe16(out.data() + 6, request.type);
  PutBe64(out.data() + 8, request.handle);
  PutBe64(out.data() + 16, request.offset);
  PutBe32(out.data() + 24, request.length);
  return out;
}

std::array<uint8_t, kSimpleReplySize> EncodeSimpleReply(uint32_t error, uint64_t handle) {
  std::array<uint8_t, kSimpleReplySize> out{};
  PutBe32(out.data(), kSimpleReplyMagic);
  PutBe32(out.data() + 4, error);
  PutBe64(out.data() + 8, handle);
  return out;
}

std::array<uint8_t, kStructuredReplyHeaderSize> EncodeStructuredReplyHeader(uint16_t flags,
                                                                            uint16_t type,
                                                                            uint64_t handle,
                                                                            uint32_t length) {
  std::array<uint8_t, kStructuredReplyHeaderSize> out{};
  PutBe32(out.data(), kStructuredReplyMagic);
  PutBe16(out.data() + 4, flags);
  PutBe16(out.data() + 6, type);
  PutBe64(out.data() + 8, handle);
  PutBe32(out.data() + 16, length);
  return out;
}

uint32_t ErrorFromStatus(const Status& status) {
  switch (status.code()) {
    case StatusCode::kOk: return 0;
    case StatusCode::kInvalidArgument: return kErrInval;
    case StatusCode::kReadOnly:
    case StatusCode::kPermissionDenied: return kErrPerm;
    case StatusCode::kNoSpace: return kErrNoSpc;
    case StatusCode::kNotSupported: return kErrNotSup;
    case StatusCode::kAborted: return kErrShutdown;
    default: return kErrIo;
  }
}

std::string CommandName(uint16_t type) {
  switch (static_cast<Command>(type)) {
    case Command::kRead: return "READ";
    case Command::kWrite: return "WRITE";
    case Command::kDisconnect: return "DISC";
    case Command::kFlush: return "FLUSH";
    case Command::kTrim: return "TRIM";
    case Command::kCache: return "CACHE";
    case Command::kWriteZeroes: return "WRITE_ZEROES";
    case Command::kBlockStatus: return "BLOCK_STATUS";
  }
  return "unknown(" + std::to_string(type) + ")";
}

std::string OptionName(uint32_t option) {
  switch (static_cast<Option>(option)) {
    case Option::kExportName: return "NBD_OPT_EXPORT_NAME";
    case Option::kAbort: return "NBD_OPT_ABORT";
    case Option::kList: return "NBD_OPT_LIST";
    case Option::kPeekExport: return "NBD_OPT_PEEK_EXPORT";
    case Option::kStartTls: return "NBD_OPT_STARTTLS";
    case Option::kInfo: return "NBD_OPT_INFO";
    case Option::kGo: return "NBD_OPT_GO";
    case Option::kStructuredReply: return "NBD_OPT_STRUCTURED_REPLY";
    case Option::kListMetaContext: return "NBD_OPT_LIST_META_CONTEXT";
    case Option::kSetMetaContext: return "NBD_OPT_SET_META_CONTEXT";
    case Option::kExtendedHeaders: return "NBD_OPT_EXTENDED_HEADERS";
  }
  return "unknown(" + std::to_string(option) + ")";
}

}  // namespace tapmap::nbd
