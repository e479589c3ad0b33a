#include "tapdisk-map/nbd/nbd_protocol.h"

#include <algorithm>
#include <cstdlib>
#include <optional>
#include <type_traits>

namespace tapmap::nbd {

namespace {

// Writes big-endian fields one after the other into a buffer the encoder sized for
// them. Writing past the end is a bug in this file: it aborts.
class WireWriter {
 public:
  explicit WireWriter(std::span<uint8_t> out) : out_(out) {}
  template <typename T>
  WireWriter& Field(T v) {
    static_assert(std::is_same_v<T, uint16_t> || std::is_same_v<T, uint32_t> || std::is_same_v<T, uint64_t>,
                  "fields are u16, u32 or u64");
    uint8_t* p = Advance(sizeof(T));
    if constexpr (sizeof(T) == 2) PutBe16(p, v);
    if constexpr (sizeof(T) == 4) PutBe32(p, v);
    if constexpr (sizeof(T) == 8) PutBe64(p, v);
    return *this;
  }
  WireWriter& Bytes(std::string_view bytes) {
    std::copy(bytes.begin(), bytes.end(), Advance(bytes.size()));
    return *this;
  }
  WireWriter& Zeros(size_t n) {
    std::fill_n(Advance(n), n, uint8_t{0});
    return *this;
  }
  // True once every byte of the buffer is written (encoders size it exactly).
  bool full() const { return at_ == out_.size(); }

 private:
  uint8_t* Advance(size_t n) {
    if (n > out_.size() - at_) std::abort();  // an encoder sized its buffer wrong
    uint8_t* p = out_.data() + at_;
    at_ += n;
    return p;
  }

  std::span<uint8_t> out_;
  size_t at_ = 0;
};

// Reads big-endian fields one after the other from untrusted bytes. A read past the
// end fails the reader (the field reads as zero / empty) instead of reading beyond `in`.
class WireReader {
 public:
  explicit WireReader(std::span<const uint8_t> in) : in_(in) {}
  template <typename T>
  WireReader& Field(T& v) {
    static_assert(std::is_same_v<T, uint16_t> || std::is_same_v<T, uint32_t> || std::is_same_v<T, uint64_t>,
                  "fields are u16, u32 or u64");
    v = 0;
    if (!Take(sizeof(T))) return *this;
    const uint8_t* p = in_.data() + at_ - sizeof(T);
    if constexpr (sizeof(T) == 2) v = GetBe16(p);
    if constexpr (sizeof(T) == 4) v = GetBe32(p);
    if constexpr (sizeof(T) == 8) v = GetBe64(p);
    return *this;
  }
  // `n` bytes as a string (n is untrusted: checked against what is left).
  WireReader& String(size_t n, std::string& s) {
    if (Take(n)) s.assign(reinterpret_cast<const char*>(in_.data() + at_ - n), n);
    return *this;
  }
  WireReader& Rest(std::string& s) { return String(remaining(), s); }
  size_t remaining() const { return in_.size() - at_; }
  std::span<const uint8_t> rest() const { return in_.subspan(at_); }
  bool ok() const { return ok_; }

 private:
  bool Take(size_t n) {
    if (!ok_ || n > remaining()) return ok_ = false;
    at_ += n;
    return true;
  }

  std::span<const uint8_t> in_;
  size_t at_ = 0;
  bool ok_ = true;
};

// ---------------------------------------------------------------------------------------
// The fixed layouts, each written once: the same field list drives the encoder (Io =
// WireWriter) and the decoder (Io = WireReader).

template <typename Io> void Fields(Io& io, Greeting& m) {
  io.Field(m.init_magic).Field(m.option_magic).Field(m.handshake_flags);
}
template <typename Io> void Fields(Io& io, OptionHeader& m) {
  io.Field(m.magic).Field(m.option).Field(m.length);
}
template <typename Io> void Fields(Io& io, OptionReplyHeader& m) {
  io.Field(m.magic).Field(m.option).Field(m.type).Field(m.length);
}
// NBD_INFO_EXPORT after its type, and the NBD_OPT_EXPORT_NAME reply before its padding.
template <typename Io> void Fields(Io& io, InfoExport& m) {
  io.Field(m.size_bytes).Field(m.transmission_flags);
}
// NBD_INFO_BLOCK_SIZE after its type.
template <typename Io> void Fields(Io& io, InfoBlockSize& m) {
  io.Field(m.minimum).Field(m.preferred).Field(m.maximum);
}
template <typename Io> void Fields(Io& io, Request& m) {
  io.Field(m.magic).Field(m.flags).Field(m.type).Field(m.handle).Field(m.offset).Field(m.length);
}
template <typename Io> void Fields(Io& io, SimpleReply& m) {
  io.Field(m.magic).Field(m.error).Field(m.handle);
}
template <typename Io> void Fields(Io& io, StructuredReplyHeader& m) {
  io.Field(m.magic).Field(m.flags).Field(m.type).Field(m.handle).Field(m.length);
}

// An N-byte message written by `write`, which must fill it.
template <size_t N>
std::array<uint8_t, N> Encoded(auto&& write) {
  std::array<uint8_t, N> out{};
  WireWriter w(out);
  write(w);
  if (!w.full()) std::abort();  // an encoder left a field out
  return out;
}

std::vector<uint8_t> EncodedVector(size_t size, auto&& write) {
  std::vector<uint8_t> out(size);
  WireWriter w(out);
  write(w);
  if (!w.full()) std::abort();
  return out;
}

template <size_t N, typename T>
std::array<uint8_t, N> EncodeFixed(T message) {
  return Encoded<N>([&](WireWriter& w) { Fields(w, message); });
}

template <typename T, size_t N>
T DecodeFixed(std::span<const uint8_t, N> bytes) {
  T message;
  WireReader r(bytes);
  Fields(r, message);
  return message;
}

Status Malformed(std::string_view what, std::span<const uint8_t> data, std::string_view why) {
  return Status::InvalidArgument(std::string(what) + " of " + std::to_string(data.size()) +
                                 " bytes: " + std::string(why));
}

std::string_view AsText(std::span<const uint8_t> bytes) {
  return {reinterpret_cast<const char*>(bytes.data()), bytes.size()};
}

// The payload of an NBD_REP_INFO item after checking its type (and, for a fixed-size
// item, `size`, the type included).
Result<std::span<const uint8_t>> InfoItemBody(std::span<const uint8_t> data, uint16_t type,
                                              std::optional<size_t> size, const char* what) {
  Result<uint16_t> actual = DecodeInfoType(data);
  if (!actual.ok()) return actual.status();
  if (*actual != type) return Malformed(what, data, "information type " + std::to_string(*actual));
  if (size && data.size() != *size) return Malformed(what, data, "expected " + std::to_string(*size));
  return data.subspan(2);
}

template <typename T>
Result<T> DecodeInfoItem(std::span<const uint8_t> data, uint16_t type, size_t size, const char* what) {
  Result<std::span<const uint8_t>> body = InfoItemBody(data, type, size, what);
  if (!body.ok()) return body.status();
  T value;
  WireReader r(*body);
  Fields(r, value);
  return value;
}

template <size_t N, typename T>
std::array<uint8_t, N> EncodeInfoItem(uint16_t type, T value) {
  return Encoded<N>([&](WireWriter& w) { Fields(w.Field(type), value); });
}

}  // namespace

bool IsValidString(std::string_view s) {
  return s.size() <= kMaxStringLength && s.find('\0') == std::string_view::npos;
}

std::string_view ClampString(std::string_view s) { return s.substr(0, kMaxStringLength); }

// --- Handshake messages

std::array<uint8_t, kGreetingSize> EncodeGreeting(uint16_t handshake_flags) {
  return EncodeFixed<kGreetingSize>(Greeting{kInitMagic, kOptionMagic, handshake_flags});
}
Greeting DecodeGreeting(std::span<const uint8_t, kGreetingSize> bytes) {
  return DecodeFixed<Greeting>(bytes);
}

std::array<uint8_t, kClientFlagsSize> EncodeClientFlags(uint32_t client_flags) {
  return Encoded<kClientFlagsSize>([&](WireWriter& w) { w.Field(client_flags); });
}
uint32_t DecodeClientFlags(std::span<const uint8_t, kClientFlagsSize> bytes) {
  uint32_t flags = 0;
  WireReader(bytes).Field(flags);
  return flags;
}

std::array<uint8_t, kOptionHeaderSize> EncodeOptionHeader(const OptionHeader& header) {
  return EncodeFixed<kOptionHeaderSize>(header);
}
OptionHeader DecodeOptionHeader(std::span<const uint8_t, kOptionHeaderSize> bytes) {
  return DecodeFixed<OptionHeader>(bytes);
}

std::vector<uint8_t> EncodeExportNameOption(std::string_view name) {
  return EncodedVector(name.size(), [&](WireWriter& w) { w.Bytes(name); });
}

Result<std::string> DecodeExportNameOption(std::span<const uint8_t> data) {
  if (!IsValidString(AsText(data))) return Malformed("export name", data, "not a valid NBD string");
  return std::string(AsText(data));
}

std::vector<uint8_t> EncodeInfoRequest(const InfoRequest& request) {
  return EncodedVector(4 + request.name.size() + 2 + 2 * request.items.size(), [&](WireWriter& w) {
    w.Field(static_cast<uint32_t>(request.name.size())).Bytes(request.name);
    w.Field(static_cast<uint16_t>(request.items.size()));
    for (uint16_t item : request.items) w.Field(item);
  });
}

Result<InfoRequest> DecodeInfoRequest(std::span<const uint8_t> data) {
  constexpr const char* kWhat = "NBD_OPT_INFO/GO data";
  InfoRequest out;
  WireReader r(data);
  uint32_t name_length = 0;
  r.Field(name_length);
  if (name_length > kMaxStringLength) {
    return Malformed(kWhat, data, "name length " + std::to_string(name_length));
  }
  uint16_t count = 0;
  r.String(name_length, out.name).Field(count);
  if (!r.ok()) return Malformed(kWhat, data, "name length " + std::to_string(name_length));
  if (r.remaining() != size_t{count} * 2) {
    return Malformed(kWhat, data, std::to_string(count) + " information requests");
  }
  out.items.resize(count);
  for (uint16_t& item : out.items) r.Field(item);
  if (!IsValidString(out.name)) return Malformed(kWhat, data, "name is not a valid NBD string");
  return out;
}

std::vector<uint8_t> EncodeMetaContextRequest(const MetaContextRequest& request) {
  size_t size = 4 + request.name.size() + 4;
  for (const std::string& q : request.queries) size += 4 + q.size();
  return EncodedVector(size, [&](WireWriter& w) {
    w.Field(static_cast<uint32_t>(request.name.size())).Bytes(request.name);
    w.Field(static_cast<uint32_t>(request.queries.size()));
    for (const std::string& q : request.queries) w.Field(static_cast<uint32_t>(q.size())).Bytes(q);
  });
}

Result<MetaContextRequest> DecodeMetaContextRequest(std::span<const uint8_t> data) {
  constexpr const char* kWhat = "NBD_OPT_*_META_CONTEXT data";
  MetaContextRequest out;
  WireReader r(data);
  uint32_t name_length = 0;
  r.Field(name_length);
  if (name_length > kMaxStringLength) return Malformed(kWhat, data, "name length " + std::to_string(name_length));
  uint32_t count = 0;
  r.String(name_length, out.name).Field(count);
  if (!r.ok()) return Malformed(kWhat, data, "name length " + std::to_string(name_length));
  if (!IsValidString(out.name)) return Malformed(kWhat, data, "name is not a valid NBD string");
  // Each query takes at least its 4-byte length: a count beyond that is a lie.
  if (count > r.remaining() / 4) return Malformed(kWhat, data, std::to_string(count) + " queries");
  out.queries.reserve(count);
  for (uint32_t i = 0; i < count; ++i) {
    uint32_t length = 0;
    std::string query;
    r.Field(length);
    if (length > kMaxStringLength) return Malformed(kWhat, data, "query length " + std::to_string(length));
    r.String(length, query);
    if (!r.ok()) return Malformed(kWhat, data, "query " + std::to_string(i) + " length " + std::to_string(length));
    if (!IsValidString(query)) return Malformed(kWhat, data, "query " + std::to_string(i) + " is not a valid NBD string");
    out.queries.push_back(std::move(query));
  }
  if (r.remaining() != 0) return Malformed(kWhat, data, std::to_string(r.remaining()) + " bytes after the queries");
  return out;
}

std::vector<uint8_t> EncodeMetaContextReply(uint32_t id, std::string_view name) {
  return EncodedVector(4 + name.size(), [&](WireWriter& w) { w.Field(id).Bytes(name); });
}

Result<MetaContextReply> DecodeMetaContextReply(std::span<const uint8_t> data) {
  MetaContextReply out;
  WireReader r(data);
  r.Field(out.id).Rest(out.name);
  if (!r.ok() || !IsValidString(out.name)) return Malformed("NBD_REP_META_CONTEXT data", data, "context name");
  return out;
}

std::array<uint8_t, kOptionReplyHeaderSize> EncodeOptionReplyHeader(uint32_t option, uint32_t type,
                                                                    uint32_t length) {
  return EncodeFixed<kOptionReplyHeaderSize>(OptionReplyHeader{kOptionReplyMagic, option, type, length});
}
OptionReplyHeader DecodeOptionReplyHeader(std::span<const uint8_t, kOptionReplyHeaderSize> bytes) {
  return DecodeFixed<OptionReplyHeader>(bytes);
}

std::vector<uint8_t> EncodeOptionErrorMessage(std::string_view message) {
  message = ClampString(message);
  return EncodedVector(message.size(), [&](WireWriter& w) { w.Bytes(message); });
}

Result<std::string> DecodeOptionErrorMessage(std::span<const uint8_t> data) {
  if (data.size() > kMaxStringLength) return Malformed("error message", data, "too long");
  return std::string(AsText(data));
}

std::vector<uint8_t> EncodeServerReply(std::string_view name) {
  return EncodedVector(4 + name.size(), [&](WireWriter& w) {
    w.Field(static_cast<uint32_t>(name.size())).Bytes(name);
  });
}

Result<std::string> DecodeServerReply(std::span<const uint8_t> data) {
  WireReader r(data);
  uint32_t name_length = 0;
  std::string name;
  r.Field(name_length).String(name_length, name);
  if (!r.ok() || !IsValidString(name)) {
    return Malformed("NBD_REP_SERVER data", data, "name length " + std::to_string(name_length));
  }
  return name;
}

std::array<uint8_t, kInfoExportSize> EncodeInfoExport(const InfoExport& info) {
  return EncodeInfoItem<kInfoExportSize>(kInfoExport, info);
}

std::array<uint8_t, kInfoBlockSizeSize> EncodeInfoBlockSize(const InfoBlockSize& info) {
  return EncodeInfoItem<kInfoBlockSizeSize>(kInfoBlockSize, info);
}

std::vector<uint8_t> EncodeInfoName(std::string_view name) {
  return EncodedVector(2 + name.size(), [&](WireWriter& w) { w.Field(kInfoName).Bytes(name); });
}

Result<uint16_t> DecodeInfoType(std::span<const uint8_t> data) {
  uint16_t type = 0;
  if (!WireReader(data).Field(type).ok()) return Malformed("NBD_REP_INFO data", data, "no type");
  return type;
}

Result<InfoExport> DecodeInfoExport(std::span<const uint8_t> data) {
  return DecodeInfoItem<InfoExport>(data, kInfoExport, kInfoExportSize, "NBD_INFO_EXPORT");
}

Result<InfoBlockSize> DecodeInfoBlockSize(std::span<const uint8_t> data) {
  return DecodeInfoItem<InfoBlockSize>(data, kInfoBlockSize, kInfoBlockSizeSize, "NBD_INFO_BLOCK_SIZE");
}

Result<std::string> DecodeInfoName(std::span<const uint8_t> data) {
  Result<std::span<const uint8_t>> body = InfoItemBody(data, kInfoName, std::nullopt, "NBD_INFO_NAME");
  if (!body.ok()) return body.status();
  if (!IsValidString(AsText(*body))) return Malformed("NBD_INFO_NAME", data, "not a valid NBD string");
  return std::string(AsText(*body));
}

std::vector<uint8_t> EncodeExportNameReply(const InfoExport& info, bool padded) {
  const size_t padding = padded ? kExportNameReplyPadding : 0;
  return EncodedVector(kExportNameReplySize + padding, [&](WireWriter& w) {
    InfoExport fields = info;
    Fields(w, fields);
    w.Zeros(padding);
  });
}

InfoExport DecodeExportNameReply(std::span<const uint8_t, kExportNameReplySize> bytes) {
  return DecodeFixed<InfoExport>(bytes);
}

// --- Transmission messages

std::array<uint8_t, kRequestSize> EncodeRequest(const Request& request) {
  return EncodeFixed<kRequestSize>(request);
}
Request DecodeRequest(std::span<const uint8_t, kRequestSize> bytes) {
  return DecodeFixed<Request>(bytes);
}

std::array<uint8_t, kSimpleReplySize> EncodeSimpleReply(uint32_t error, uint64_t handle) {
  return EncodeFixed<kSimpleReplySize>(SimpleReply{kSimpleReplyMagic, error, handle});
}
SimpleReply DecodeSimpleReply(std::span<const uint8_t, kSimpleReplySize> bytes) {
  return DecodeFixed<SimpleReply>(bytes);
}

std::array<uint8_t, kStructuredReplyHeaderSize> EncodeStructuredReplyHeader(uint16_t flags,
                                                                            uint16_t type,
                                                                            uint64_t handle,
                                                                            uint32_t length) {
  return EncodeFixed<kStructuredReplyHeaderSize>(
      StructuredReplyHeader{kStructuredReplyMagic, flags, type, handle, length});
}
StructuredReplyHeader DecodeStructuredReplyHeader(
    std::span<const uint8_t, kStructuredReplyHeaderSize> bytes) {
  return DecodeFixed<StructuredReplyHeader>(bytes);
}

std::array<uint8_t, kOffsetDataChunkHeadSize> EncodeOffsetDataChunkHead(uint16_t flags,
                                                                        uint64_t handle,
                                                                        uint64_t offset,
                                                                        uint32_t data_length) {
  StructuredReplyHeader header{kStructuredReplyMagic, flags, kReplyTypeOffsetData, handle, 8 + data_length};
  return Encoded<kOffsetDataChunkHeadSize>([&](WireWriter& w) { Fields(w, header); w.Field(offset); });
}

Result<OffsetData> DecodeOffsetData(std::span<const uint8_t> payload) {
  OffsetData out;
  WireReader r(payload);
  if (!r.Field(out.offset).ok()) return Malformed("NBD_REPLY_TYPE_OFFSET_DATA payload", payload, "no offset");
  out.data = r.rest();
  return out;
}

std::vector<uint8_t> EncodeErrorChunk(uint16_t flags, uint64_t handle, uint32_t error,
                                      std::string_view message) {
  message = ClampString(message);
  const uint16_t message_length = static_cast<uint16_t>(message.size());
  StructuredReplyHeader header{kStructuredReplyMagic, flags, kReplyTypeError, handle, 6u + message_length};
  return EncodedVector(kStructuredReplyHeaderSize + header.length, [&](WireWriter& w) {
    Fields(w, header);
    w.Field(error).Field(message_length).Bytes(message);
  });
}

Result<ErrorChunk> DecodeErrorChunk(std::span<const uint8_t> payload) {
  ErrorChunk out;
  uint16_t message_length = 0;
  WireReader r(payload);
  r.Field(out.error).Field(message_length);
  if (!r.ok() || r.remaining() != message_length) {
    return Malformed("NBD_REPLY_TYPE_ERROR payload", payload,
                     "message length " + std::to_string(message_length));
  }
  r.Rest(out.message);
  return out;
}

std::vector<uint8_t> EncodeBlockStatusChunk(uint16_t flags, uint64_t handle, uint32_t context_id,
                                            std::span<const BlockStatusDescriptor> descriptors) {
  const uint32_t length = static_cast<uint32_t>(4 + 8 * descriptors.size());
  StructuredReplyHeader header{kStructuredReplyMagic, flags, kReplyTypeBlockStatus, handle, length};
  return EncodedVector(kStructuredReplyHeaderSize + length, [&](WireWriter& w) {
    Fields(w, header);
    w.Field(context_id);
    for (const BlockStatusDescriptor& d : descriptors) w.Field(d.length).Field(d.flags);
  });
}

Result<BlockStatus> DecodeBlockStatus(std::span<const uint8_t> payload) {
  if (payload.size() < 4 || (payload.size() - 4) % 8 != 0) {
    return Malformed("NBD_REPLY_TYPE_BLOCK_STATUS payload", payload, std::to_string(payload.size()) + " bytes");
  }
  BlockStatus out;
  WireReader r(payload);
  r.Field(out.context_id);
  out.descriptors.resize((payload.size() - 4) / 8);
  for (BlockStatusDescriptor& d : out.descriptors) r.Field(d.length).Field(d.flags);
  return out;
}

// --- Mapping

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

uint32_t OptionErrorFromStatus(const Status& status) {
  switch (status.code()) {
    case StatusCode::kNotFound: return kRepErrUnknown;
    case StatusCode::kInvalidArgument: return kRepErrInvalid;
    case StatusCode::kBusy:
    case StatusCode::kPermissionDenied:
    case StatusCode::kReadOnly: return kRepErrPolicy;
    case StatusCode::kAborted: return kRepErrShutdown;
    default: return kRepErrPlatform;
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
