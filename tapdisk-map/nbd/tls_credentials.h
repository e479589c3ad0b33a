// TlsCredentials: what tapdisk-map's NBD export proves itself with, and checks clients
// against, when a client upgrades a connection with NBD_OPT_STARTTLS. The files are the
// ones qemu-nbd (--object tls-creds-x509 / tls-creds-psk) and nbdkit (--tls-certificates,
// --tls-psk) use, so one set of credentials serves them all:
//
//   x509   DIR/server-cert.pem   the server's certificate (chain), PEM
//          DIR/server-key.pem    its private key, PEM
//          DIR/ca-cert.pem       the CA client certificates must chain to (verify_peer)
//   PSK    FILE                  psktool(1) format: one "IDENTITY:HEXKEY" line per client
//                                (e.g. `echo "alice:$(openssl rand -hex 32)" > keys.psk`)
//
// TLS 1.2 or later, through OpenSSL (boost::asio::ssl). A PSK client is known by its
// identity; an x509 client (with verify_peer) by a certificate the CA signed. Either
// way a client that proves nothing gets no further than the TLS handshake.
//
// Threading: immutable after Load; shared by every connection of a server.
#pragma once

#include <boost/asio/ssl/context.hpp>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace tapmap::nbd {

struct TlsSettings {
  std::string certificates_dir;  // x509: the directory above ("" = not x509)
  bool verify_peer = true;       // x509: clients must present a certificate the CA signed
  std::string psk_file;          // PSK: the key file above ("" = not PSK)

  bool enabled() const { return !certificates_dir.empty() || !psk_file.empty(); }
};

// A PSK key file's contents: identity -> key. Lines are "IDENTITY:HEXKEY"; empty lines
// are skipped; an identity is 1..128 printable ASCII characters without ':'; a key is
// 16..64 bytes (32..128 hex digits). Errors name the line.
using PskKeys = std::map<std::string, std::vector<uint8_t>, std::less<>>;
Result<PskKeys> ParsePskKeys(std::string_view text);

class TlsCredentials {
 public:
  // Reads the files of `settings` (exactly one of x509 and PSK) and builds the server
  // TLS context. Errors name the file and what is wrong with it.
  static Result<std::shared_ptr<TlsCredentials>> Load(const TlsSettings& settings);
  TlsCredentials(const TlsCredentials&) = delete;
  TlsCredentials& operator=(const TlsCredentials&) = delete;

  // The server context for Stream::StartTls. Valid as long as this object.
  boost::asio::ssl::context& context() { return context_; }
  // Makes the PSK callback write the identity a client of `ssl` proved into
  // `*identity` (which must outlive the handshake): OpenSSL does not report it in TLS
  // 1.3 sessions made through the legacy callback.
  static void RecordPskIdentity(SSL* ssl, std::string* identity);
  // For the log: "x509, client certificates verified against DIR/ca-cert.pem" or
  // "PSK, 3 identities from FILE".
  const std::string& description() const { return description_; }

 private:
  TlsCredentials();
  // OpenSSL's server PSK callback (TLS 1.2, and TLS 1.3 with a SHA-256 suite).
  static unsigned int FindPsk(SSL* ssl, const char* identity, unsigned char* psk, unsigned int max_psk_len);

  boost::asio::ssl::context context_;
  PskKeys psk_keys_;
  std::string description_;
};

}  // namespace tapmap::nbd
