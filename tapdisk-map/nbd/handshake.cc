#include "tapdisk-map/nbd/handshake.h"

#include <boost/asio/read.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <optional>
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
  co_return co_await SendReply(stream, option, type, EncodeOptionErrorMessage(message));
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

asio::awaitable<Status> SendInfoReplies(Stream& stream, uint32_t option, const InfoRequest& request,
                                        const ExportInfo& info, uint16_t flags,
                                        const HandshakeOptions& options) {
  TAPMAP_CO_RETURN_IF_ERROR(
      co_await SendReply(stream, option, kRepInfo, EncodeInfoExport({info.size_bytes, flags})));

  // Block sizes are always sent: requests must be multiples of 512 bytes.
  uint32_t preferred = std::max<uint32_t>(info.block_size, kSectorSize);
  uint32_t maximum = std::max(options.max_request_bytes, preferred);
  TAPMAP_CO_RETURN_IF_ERROR(co_await SendReply(stream, option, kRepInfo,
                                               EncodeInfoBlockSize({kSectorSize, preferred, maximum})));

  for (uint16_t item : request.items) {
    if (item != kInfoName) continue;  // description: none; others unknown: ignored
    TAPMAP_CO_RETURN_IF_ERROR(co_await SendReply(stream, option, kRepInfo, EncodeInfoName(request.name)));
    break;
  }
  co_return co_await SendReply(stream, option, kRepAck);
}

// Whether `query` of NBD_OPT_LIST_META_CONTEXT matches base:allocation (the context
// itself, or the whole base: namespace).
bool ListQueryMatches(std::string_view query) { return query == kBaseAllocationContext || query == "base:"; }

}  // namespace

const char* TlsModeName(TlsMode mode) {
  switch (mode) {
    case TlsMode::kOff: return "off";
    case TlsMode::kOptional: return "optional";
    case TlsMode::kRequired: return "required";
  }
  return "?";
}

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

  std::array<uint8_t, kClientFlagsSize> client_flags_bytes{};
  TAPMAP_CO_RETURN_IF_ERROR(co_await ReadExact(stream, client_flags_bytes, "client flags"));
  uint32_t client_flags = DecodeClientFlags(client_flags_bytes);
  if (client_flags & ~kKnownClientFlags) {
    co_return Status::InvalidArgument("unknown client flags " + std::to_string(client_flags));
  }
  const bool fixed = client_flags & kClientFlagFixedNewstyle;
  const bool no_zeroes = client_flags & kClientFlagNoZeroes;

  bool structured = false;
  // The export of the last NBD_OPT_SET_META_CONTEXT that selected base:allocation.
  std::optional<std::string> meta_export;
  bool meta_base_allocation = false;  // base:allocation selected for meta_export
  std::string meta_changed_since;  // the snapshot of tapmap:changed-since:, if selected
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
    if (options.tls == TlsMode::kRequired && !stream.tls()) {
      // FORCEDTLS: nothing but STARTTLS (or ABORT) before TLS.
      if (option == static_cast<uint32_t>(Option::kExportName)) {
        co_return Status::PermissionDenied("NBD_OPT_EXPORT_NAME before TLS on a listener that requires TLS");
      }
      if (option != static_cast<uint32_t>(Option::kStartTls) && option != static_cast<uint32_t>(Option::kAbort)) {
        log.Debugf("%s before TLS: TLS required", OptionName(option).c_str());
        TAPMAP_CO_RETURN_IF_ERROR(co_await SendError(stream, option, kRepErrTlsReqd,
                                                  "TLS is required: send NBD_OPT_STARTTLS first"));
        continue;
      }
    }

    switch (static_cast<Option>(option)) {
      case Option::kExportName: {
        Result<std::string> decoded = DecodeExportNameOption(data);
        if (!decoded.ok()) co_return Status::InvalidArgument("bad export name");
        const std::string& name = *decoded;
        Result<Device> device = co_await OpenExport(catalog, name);
        if (!device.ok()) {
          LogRefusal(options, log, option, name, device.status());
          co_return device.status().WithContext("export " + QuotedExportName(name));
        }
        // EXPORT_NAME clients get simple replies only.
        uint16_t flags = TransmissionFlagsFor(**device, false);
        TAPMAP_CO_RETURN_IF_ERROR(
            co_await WriteAll(stream, EncodeExportNameReply({(*device)->size_bytes(), flags}, !no_zeroes)));
        co_return NegotiatedExport{name, std::move(*device), false, false, std::string(), flags};
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
          if (!IsValidString(name)) continue;
          TAPMAP_CO_RETURN_IF_ERROR(co_await SendReply(stream, option, kRepServer, EncodeServerReply(name)));
        }
        TAPMAP_CO_RETURN_IF_ERROR(co_await SendReply(stream, option, kRepAck));
        break;
      }
      case Option::kStartTls: {
        if (options.tls == TlsMode::kOff || options.tls_credentials == nullptr) {
          TAPMAP_CO_RETURN_IF_ERROR(
              co_await SendError(stream, option, kRepErrPolicy, "TLS is not offered on this listener"));
          break;
        }
        if (stream.tls()) {
          TAPMAP_CO_RETURN_IF_ERROR(co_await SendError(stream, option, kRepErrInvalid, "TLS is already on"));
          break;
        }
        if (!data.empty()) {
          TAPMAP_CO_RETURN_IF_ERROR(co_await SendError(stream, option, kRepErrInvalid, "takes no data"));
          break;
        }
        TAPMAP_CO_RETURN_IF_ERROR(co_await SendReply(stream, option, kRepAck));
        TAPMAP_CO_RETURN_IF_ERROR(co_await stream.StartTls(*options.tls_credentials));
        log.Debugf("TLS on: %s", stream.TlsDescription().c_str());
        structured = false;  // what was negotiated in the clear does not count
        meta_export.reset();
        meta_changed_since.clear();
        meta_base_allocation = false;
        break;
      }
      case Option::kStructuredReply:
        if (!data.empty()) {
          TAPMAP_CO_RETURN_IF_ERROR(co_await SendError(stream, option, kRepErrInvalid, "takes no data"));
          break;
        }
        structured = true;
        TAPMAP_CO_RETURN_IF_ERROR(co_await SendReply(stream, option, kRepAck));
        break;
      case Option::kListMetaContext:
      case Option::kSetMetaContext: {
        const bool set = option == static_cast<uint32_t>(Option::kSetMetaContext);
        Result<MetaContextRequest> decoded = DecodeMetaContextRequest(data);
        if (!decoded.ok()) {
          log.Debugf("%s", decoded.status().ToString().c_str());
          TAPMAP_CO_RETURN_IF_ERROR(co_await SendError(stream, option, kRepErrInvalid, "malformed request"));
          break;
        }
        if (set && !structured) {
          TAPMAP_CO_RETURN_IF_ERROR(co_await SendError(stream, option, kRepErrInvalid,
                                                    "NBD_OPT_STRUCTURED_REPLY must come first"));
          break;
        }
        // The export must exist; described only, nothing is opened.
        Result<ExportInfo> info = co_await DescribeExport(catalog, decoded->name);
        if (!info.ok()) {
          TAPMAP_CO_RETURN_IF_ERROR(co_await SendError(stream, option, OptionErrorFromStatus(info.status()),
                                                    info.status().ToString()));
          break;
        }
        bool selected = false;
        // tapmap:changed-since:SNAPSHOT, for a snapshot that exists (the last one named).
        std::string changed_since;
        for (const std::string& q : decoded->queries) {
          if (!q.starts_with(kChangedSincePrefix) || q.size() == kChangedSincePrefix.size()) continue;
          std::string snapshot = q.substr(kChangedSincePrefix.size());
          Result<ExportInfo> snap = co_await DescribeExport(catalog, snapshot);
          if (snap.ok()) changed_since = snapshot;
        }
        if (set) {
          for (const std::string& q : decoded->queries) selected = selected || q == kBaseAllocationContext;
          meta_export.reset();
          meta_changed_since = changed_since;
          meta_base_allocation = selected;
          if (selected || !changed_since.empty()) meta_export = decoded->name;
        } else {
          selected = decoded->queries.empty();
          for (const std::string& q : decoded->queries) selected = selected || ListQueryMatches(q);
        }
        if (selected) {
          // LIST: the id means nothing yet (0); SET: the one BLOCK_STATUS replies carry.
          TAPMAP_CO_RETURN_IF_ERROR(co_await SendReply(
              stream, option, kRepMetaContext,
              EncodeMetaContextReply(set ? kBaseAllocationContextId : 0, kBaseAllocationContext)));
        }
        if (!changed_since.empty()) {
          TAPMAP_CO_RETURN_IF_ERROR(co_await SendReply(
              stream, option, kRepMetaContext,
              EncodeMetaContextReply(set ? kChangedSinceContextId : 0,
                                     std::string(kChangedSincePrefix) + changed_since)));
        }
        TAPMAP_CO_RETURN_IF_ERROR(co_await SendReply(stream, option, kRepAck));
        break;
      }
      case Option::kInfo:
      case Option::kGo: {
        Result<InfoRequest> decoded = DecodeInfoRequest(data);
        if (!decoded.ok()) {
          log.Debugf("%s", decoded.status().ToString().c_str());
          TAPMAP_CO_RETURN_IF_ERROR(co_await SendError(stream, option, kRepErrInvalid, "malformed request"));
          break;
        }
        const InfoRequest& request = *decoded;
        if (option == static_cast<uint32_t>(Option::kInfo)) {
          // Only asks: described without opening, so no lease is taken or left behind.
          Result<ExportInfo> info = co_await DescribeExport(catalog, request.name);
          if (!info.ok()) {
            LogRefusal(options, log, option, request.name, info.status());
            TAPMAP_CO_RETURN_IF_ERROR(co_await SendError(stream, option, OptionErrorFromStatus(info.status()),
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
          TAPMAP_CO_RETURN_IF_ERROR(co_await SendError(stream, option, OptionErrorFromStatus(device.status()),
                                                    device.status().ToString()));
          break;
        }
        uint16_t flags = TransmissionFlagsFor(**device, structured);
        ExportInfo info{(*device)->size_bytes(), (*device)->block_size(), (*device)->read_only()};
        TAPMAP_CO_RETURN_IF_ERROR(co_await SendInfoReplies(stream, option, request, info, flags, options));
        const bool contexts = structured && meta_export == request.name;
        const bool base_allocation = contexts && meta_base_allocation;
        co_return NegotiatedExport{request.name, std::move(*device), structured, base_allocation,
                                   contexts ? meta_changed_since : std::string(), flags};
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
