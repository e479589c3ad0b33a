#include "tapdisk-map/nbd/handshake.h"

#include <boost/asio/read.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <vector>

#include "common/units.h"
#include "tapdisk-map/nbd/nbd_protocol.h"
#include "tapdisk-map/util/await_callback.h"
#include "tapdisk-map/util/co_return_if_error.h"

namespace tapmap::nbd {
namespace {

namespace asio = boost::asio;
using Device = std::shared_ptr<engine::BlockDevice>;

// Reads exactly buffer.size() bytes. EOF or an error become kAborted.
asio::awaitable<Status> ReadExact(Stream& stream, std::span<uint8_t> buffer, const char* what) {
  boost::system::error_code ec;
  co_await asio::async_read(stream, asio::buffer(buffer.data(), buffer.size()),
                            asio::redirect_error(asio::use_awaitable, ec));
  if (ec) co_return Status::Aborted(std::string("client went away while sending ") + what + ": " + ec.message());
  co_return Status::Ok();
}

asio::awaitable<Status> WriteAll(Stream& stream, std::span<const uint8_t> a,
                                 std::span<const uint8_t> b = {}) {
  std::array<asio::const_buffer, 2> buffers{asio::buffer(a.data(), a.size()),
                                            asio::buffer(b.data(), b.size())};
  boost::system::error_code ec;
  co_await asio::async_write(stream, buffers, asio::redirect_error(asio::use_awaitable, ec));
  if (ec) co_return Status::Aborted("client went away: " + ec.message());
  co_return Status::Ok();
}

asio::awaitable<Status> SendReply(Stream& stream, uint32_t option, uint32_t type,
                                  std::span<const uint8_t> data = {}) {
  auto header = EncodeOptionReplyHeader(option, type, static_cast<uint32_t>(data.size()));
  co_return co_await WriteAll(stream, header, data);
}

asio::awaitable<Status> SendError(Stream& stream, uint32_t option, uint32_t type,
                                  std::string_view message) {
  if (message.size() > kMaxStringLength) message = message.substr(0, kMaxStringLength);
  co_return co_await SendReply(
      stream, option, type,
      std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(message.data()), message.size()));
}

// True if `name` is an acceptable NBD string (length already bounded by the caller).
bool ValidString(std::string_view name) {
  return name.size() <= kMaxStringLength && name.find('\0') == std::string_view::npos;
}

uint32_t OptionErrorFor(const Status& status) {
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

asio::awaitable<Result<Device>> OpenExport(ExportCatalog& catalog, const std::string& name) {
  co_return co_await AwaitCallback<Result<Device>>(
      [&](auto done) { catalog.Open(name, std::move(done)); });
}

using ExportInfo = ExportCatalog::ExportInfo;
asio::awaitable<Result<ExportInfo>> DescribeExport(ExportCatalog& catalog, const std::string& name) {
  co_return co_await AwaitCallback<Result<ExportInfo>>(
      [&](auto done) { catalog.Describe(name, std::move(done)); });
}

void LogRefusal(const HandshakeOptions& options, const Logger& log, uint32_t option, std::string_view name,
                const Status& status) {
  static RefusalLog process_wide;
  RefusalLog& refusals = options.refusals ? *options.refusals : process_wide;
  refusals.Refused(log, OptionName(option), name, status);
}

// NBD_OPT_INFO / NBD_OPT_GO payload: u32 name length, name, u16 count, count x u16.
struct InfoRequest {
  std::string name;
  std::vector<uint16_t> items;
};
bool ParseInfoRequest(std::span<const uint8_t> data, InfoRequest* out) {
  if (data.size() < 6) return false;
  uint32_t name_length = GetBe32(data.data());
  if (name_length > data.size() - 6 || name_length > kMaxStringLength) return false;
  out->name.assign(reinterpret_cast<const char*>(data.data() + 4), name_length);
  size_t at = 4 + name_length;
  uint16_t count = GetBe16(data.data() + at);
  at += 2;
  if (data.size() - at != size_t{count} * 2) return false;
  for (uint16_t i = 0; i < count; ++i, at += 2) out->items.push_back(GetBe16(data.data() + at));
  return ValidString(out->name);
}

asio::awaitable<Status> SendInfoReplies(Stream& stream, uint32_t option, const InfoRequest& request,
                                        const ExportInfo& info, uint16_t flags,
                                        const HandshakeOptions& options) {
  std::array<uint8_t, 12> export_info{};
  PutBe16(export_info.data(), kInfoExport);
  PutBe64(export_info.data() + 2, info.size_bytes);
  PutBe16(export_info.data() + 10, flags);
  TAPMAP_CO_RETURN_IF_ERROR(co_await SendReply(stream, option, kRepInfo, export_info));

  // Block sizes are always sent: requests must be multiples of 512 bytes.
  uint32_t preferred = std::max<uint32_t>(info.block_size, kSectorSize);
  uint32_t maximum = std::max(options.max_request_bytes, preferred);
  std::array<uint8_t, 14> block_info{};
  PutBe16(block_info.data(), kInfoBlockSize);
  PutBe32(block_info.data() + 2, kSectorSize);
  PutBe32(block_info.data() + 6, preferred);
  PutBe32(block_info.data() + 10, maximum);
  TAPMAP_CO_RETURN_IF_ERROR(co_await SendReply(stream, option, kRepInfo, block_info));

  for (uint16_t item : request.items) {
    if (item != kInfoName) continue;  // description: none; others unknown: ignored
    std::vector<uint8_t> name_info(2 + request.name.size());
    PutBe16(name_info.data(), kInfoName);
    std::copy(request.name.begin(), request.name.end(), name_info.begin() + 2);
    TAPMAP_CO_RETURN_IF_ERROR(co_await SendReply(stream, option, kRepInfo, name_info));
    break;
  }
  co_return co_await SendReply(stream, option, kRepAck);
}

}  // namespace

uint16_t TransmissionFlagsFor(const engine::BlockDevice& device, bool structured_replies) {
  return TransmissionFlagsFor(device.read_only(), structured_replies);
}

uint16_t TransmissionFlagsFor(bool read_only, bool structured_replies) {
  uint16_t flags = kTxHasFlags | kTxSendFlush | kTxSendFua | kTxSendTrim | kTxSendWriteZeroes |
                   kTxCanMultiConn;
  if (read_only) flags |= kTxReadOnly;
  if (structured_replies) flags |= kTxSendDf;
  return flags;
}

asio::awaitable<Result<NegotiatedExport>> Negotiate(Stream& stream, ExportCatalog& catalog,
                                                    const HandshakeOptions& options,
                                                    const Logger& log) {
  auto greeting = EncodeGreeting(kFlagFixedNewstyle | kFlagNoZeroes);
  TAPMAP_CO_RETURN_IF_ERROR(co_await WriteAll(stream, greeting));

  std::array<uint8_t, 4> client_flags_bytes{};
  TAPMAP_CO_RETURN_IF_ERROR(co_await ReadExact(stream, client_flags_bytes, "client flags"));
  uint32_t client_flags = GetBe32(client_flags_bytes.data());
  if (client_flags & ~kKnownClientFlags) {
    co_return Status::InvalidArgument("unknown client flags " + std::to_string(client_flags));
  }
  const bool fixed = client_flags & kClientFlagFixedNewstyle;
  const bool no_zeroes = client_flags & kClientFlagNoZeroes;

  bool structured = false;
  std::vector<uint8_t> data;
  for (uint32_t count = 0; count < options.max_options; ++count) {
    std::array<uint8_t, kOptionHeaderSize> header_bytes{};
    TAPMAP_CO_RETURN_IF_ERROR(co_await ReadExact(stream, header_bytes, "an option"));
    OptionHeader header = DecodeOptionHeader(header_bytes);
    if (header.magic != kOptionMagic) co_return Status::InvalidArgument("bad option magic");
    if (header.length > options.max_option_bytes) {
      // Not worth consuming: say why and hang up.
      if (fixed) {
        (void)co_await SendError(stream, header.option, kRepErrTooBig, "option data too long");
      }
      co_return Status::InvalidArgument(OptionName(header.option) + " with " +
                                        std::to_string(header.length) + " bytes of data");
    }
    data.assign(header.length, 0);
    TAPMAP_CO_RETURN_IF_ERROR(co_await ReadExact(stream, data, "option data"));
    const uint32_t option = header.option;
    log.Debugf("option %s (%u bytes)", OptionName(option).c_str(), header.length);

    if (!fixed && option != static_cast<uint32_t>(Option::kExportName)) {
      co_return Status::InvalidArgument("non-fixed newstyle client sent " + OptionName(option));
    }

    switch (static_cast<Option>(option)) {
      case Option::kExportName: {
        std::string name(data.begin(), data.end());
        if (!ValidString(name)) co_return Status::InvalidArgument("bad export name");
        Result<Device> device = co_await OpenExport(catalog, name);
        if (!device.ok()) {
          LogRefusal(options, log, option, name, device.status());
          co_return device.status().WithContext("export '" + PrintableText(name) + "'");
        }
        // EXPORT_NAME clients get simple replies only.
        uint16_t flags = TransmissionFlagsFor(**device, false);
        std::vector<uint8_t> reply(kExportNameReplySize + (no_zeroes ? 0 : kExportNameReplyPadding), 0);
        PutBe64(reply.data(), (*device)->size_bytes());
        PutBe16(reply.data() + 8, flags);
        TAPMAP_CO_RETURN_IF_ERROR(co_await WriteAll(stream, reply));
        co_return NegotiatedExport{name, std::move(*device), false, flags};
      }
      case Option::kAbort:
        (void)co_await SendReply(stream, option, kRepAck);
        co_return Status::Aborted("client aborted the negotiation");
      case Option::kList: {
        if (!data.empty()) {
          TAPMAP_CO_RETURN_IF_ERROR(co_await SendError(stream, option, kRepErrInvalid, "NBD_OPT_LIST takes no data"));
          break;
        }
        Result<std::vector<std::string>> names = co_await AwaitCallback<Result<std::vector<std::string>>>(
            [&](auto done) { catalog.List(std::move(done)); });
        if (!names.ok()) {
          TAPMAP_CO_RETURN_IF_ERROR(co_await SendError(stream, option, kRepErrPlatform, names.status().ToString()));
          break;
        }
        for (const std::string& name : *names) {
          if (!ValidString(name)) continue;
          std::vector<uint8_t> entry(4 + name.size());
          PutBe32(entry.data(), static_cast<uint32_t>(name.size()));
          std::copy(name.begin(), name.end(), entry.begin() + 4);
          TAPMAP_CO_RETURN_IF_ERROR(co_await SendReply(stream, option, kRepServer, entry));
        }
        TAPMAP_CO_RETURN_IF_ERROR(co_await SendReply(stream, option, kRepAck));
        break;
      }
      case Option::kStartTls:
        TAPMAP_CO_RETURN_IF_ERROR(co_await SendError(stream, option, kRepErrPolicy, "TLS is not offered by this server"));
        break;
      case Option::kStructuredReply:
        if (!data.empty()) {
          TAPMAP_CO_RETURN_IF_ERROR(co_await SendError(stream, option, kRepErrInvalid, "takes no data"));
          break;
        }
        structured = true;
        TAPMAP_CO_RETURN_IF_ERROR(co_await SendReply(stream, option, kRepAck));
        break;
      case Option::kInfo:
      case Option::kGo: {
        InfoRequest request;
        if (!ParseInfoRequest(data, &request)) {
          TAPMAP_CO_RETURN_IF_ERROR(co_await SendError(stream, option, kRepErrInvalid, "malformed request"));
          break;
        }
        if (option == static_cast<uint32_t>(Option::kInfo)) {
          // Only asks: described without opening, so no lease is taken or left behind.
          Result<ExportInfo> info = co_await DescribeExport(catalog, request.name);
          if (!info.ok()) {
            LogRefusal(options, log, option, request.name, info.status());
            TAPMAP_CO_RETURN_IF_ERROR(co_await SendError(stream, option, OptionErrorFor(info.status()),
                                                      info.status().ToString()));
            break;
          }
          uint16_t flags = TransmissionFlagsFor(info->read_only, structured);
          TAPMAP_CO_RETURN_IF_ERROR(co_await SendInfoReplies(stream, option, request, *info, flags, options));
          break;
        }
        Result<Device> device = co_await OpenExport(catalog, request.name);
        if (!device.ok()) {
          LogRefusal(options, log, option, request.name, device.status());
          TAPMAP_CO_RETURN_IF_ERROR(co_await SendError(stream, option, OptionErrorFor(device.status()),
                                                    device.status().ToString()));
          break;
        }
        uint16_t flags = TransmissionFlagsFor(**device, structured);
        ExportInfo info{(*device)->size_bytes(), (*device)->block_size(), (*device)->read_only()};
        TAPMAP_CO_RETURN_IF_ERROR(co_await SendInfoReplies(stream, option, request, info, flags, options));
        co_return NegotiatedExport{request.name, std::move(*device), structured, flags};
      }
      default:
        TAPMAP_CO_RETURN_IF_ERROR(co_await SendError(stream, option, kRepErrUnsup,
                                                  OptionName(option) + " is not supported"));
        break;
    }
  }
  co_return Status::InvalidArgument("too many options");
}

}  // namespace tapmap::nbd
