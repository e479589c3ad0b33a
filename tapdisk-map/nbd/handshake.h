// Handshake: the option-negotiation phase of an NBD connection (fixed newstyle), from
// the server greeting until the client picks an export (NBD_OPT_GO or
// NBD_OPT_EXPORT_NAME) or goes away. Supported options: EXPORT_NAME, ABORT, LIST, INFO,
// GO, STRUCTURED_REPLY, STARTTLS, LIST_META_CONTEXT, SET_META_CONTEXT; every other
// option is answered NBD_REP_ERR_UNSUP.
//
// Metadata contexts (doc/block_status.md): base:allocation, and
// tapmap:changed-since:SNAPSHOT for a query naming an existing volume (the last such
// query of an option; selected by SET like base:allocation). LIST_META_CONTEXT
// lists it for no query, "base:" or "base:allocation"; SET_META_CONTEXT (structured
// replies first, else NBD_REP_ERR_INVALID) selects it for "base:allocation", for the
// export named, which must exist (NBD_REP_ERR_UNKNOWN otherwise). Each SET replaces
// the last one. It holds for the transmission phase only if NBD_OPT_GO then names the
// same export; STARTTLS forgets it, as it forgets structured replies.
// The wire format is in nbd_protocol.h / doc/nbd_wire.md.
//
// TLS (the NBD spec's "TLS support"), per listener (TlsMode):
//   kOff       NOTLS: STARTTLS is answered NBD_REP_ERR_POLICY.
//   kOptional  STARTTLS upgrades the connection; nothing requires it (SELECTIVETLS
//              with no TLS-only export).
//   kRequired  FORCEDTLS: before STARTTLS every option but STARTTLS and ABORT is
//              answered NBD_REP_ERR_TLS_REQD, and NBD_OPT_EXPORT_NAME (which cannot be
//              refused) closes the connection.
// After the ACK of STARTTLS the TLS handshake runs; if it fails the connection ends.
// Options negotiated before TLS (structured replies) are forgotten: a man in the
// middle could have sent them.
//
// Everything the client sends is untrusted: option lengths are bounded, strings are
// checked, a malformed option is answered NBD_REP_ERR_INVALID; a violation that leaves
// the byte stream ambiguous (bad magic, unknown client flags, an oversized option)
// ends the connection. Deadlines (a slow client) are the caller's business: close the
// stream to abort a negotiation in progress.
#pragma once

#include <utility>  // before asio: boost 1.74's awaitable.hpp needs std::exchange

#include <boost/asio/awaitable.hpp>
#include <cstdint>
#include <memory>
#include <string>

#include "common/logging.h"
#include "common/status.h"
#include "tapdisk-map/engine/block_device.h"
#include "tapdisk-map/nbd/export_catalog.h"
#include "tapdisk-map/nbd/refusal_log.h"
#include "tapdisk-map/nbd/stream.h"
#include "tapdisk-map/nbd/tls_credentials.h"

namespace tapmap::nbd {

enum class TlsMode : uint8_t { kOff, kOptional, kRequired };
const char* TlsModeName(TlsMode mode);  // "off", "optional", "required"

struct HandshakeOptions {
  // Largest READ/WRITE payload the transmission phase accepts; advertised as the
  // maximum block size.
  uint32_t max_request_bytes = 32u << 20;
  // Options a client may send before choosing an export (a loop guard).
  uint32_t max_options = 1024;
  // Largest option payload read; longer ones end the connection.
  uint32_t max_option_bytes = 16 * 1024;
  // Where refused opens are logged (shared by a server's connections, for its rate
  // limit); null: a process-wide one.
  std::shared_ptr<RefusalLog> refusals;
  // TLS: the mode, and the credentials (required unless the mode is kOff).
  TlsMode tls = TlsMode::kOff;
  std::shared_ptr<TlsCredentials> tls_credentials;
};

// What the negotiation settled on.
struct NegotiatedExport {
  std::string name;
  std::shared_ptr<engine::BlockDevice> device;
  bool structured_replies = false;
  // base:allocation was selected (under kBaseAllocationContextId) for this export.
  bool base_allocation = false;
  // tapmap:changed-since:SNAPSHOT was selected (kChangedSinceContextId): SNAPSHOT,
  // else empty.
  std::string changed_since;
  uint16_t transmission_flags = 0;  // as sent to the client
};

// The transmission flags tapdisk-map advertises for `device` (or for an export that is
// read-only or not).
uint16_t TransmissionFlagsFor(const engine::BlockDevice& device, bool structured_replies);
uint16_t TransmissionFlagsFor(bool read_only, bool structured_replies);

// Runs the negotiation on `stream` (which must stay valid until the coroutine ends),
// opening the chosen export through `catalog` (NBD_OPT_INFO only describes one: it
// opens nothing). Every refused INFO, GO or EXPORT_NAME is logged with its reason
// (options.refusals). Returns the export on success (the stream may now be a TLS
// stream); kAborted when the client aborted or closed the connection;
// kInvalidArgument/kCorruption on a protocol violation (the caller closes the stream);
// kNotFound when a client using NBD_OPT_EXPORT_NAME named an unknown export (which the
// protocol can only answer by closing); kPermissionDenied when TLS was required and the
// client chose an export without it, or the TLS handshake failed. Must run on the
// stream's executor.
boost::asio::awaitable<Result<NegotiatedExport>> Negotiate(Stream& stream, ExportCatalog& catalog,
                                                           const HandshakeOptions& options,
                                                           const Logger& log);

}  // namespace tapmap::nbd
