// Mutual TLS between hosts and the mapserver (protocol/doc/auth.md, "TLS").
//
// Every TCP connection to the mapserver runs over TLS 1.3 with certificates of one
// cluster CA on both sides: the server proves it is the mapserver (its certificate
// names kServerTlsName), each host proves which credential it holds (its certificate's
// common name is "HOST/CREDENTIAL-ID"). The server takes the host's name from the
// certificate, never from the client's word, and checks the credential id against its
// registry (mapserver/credential_registry.h), so one host's credential can be revoked
// without touching the others.
//
// A TLS directory holds PEM files:
//   ca.crt                   the cluster CA certificate (both sides)
//   server.crt, server.key   the mapserver's (LoadServerTls)
//   host.crt, host.key       a host's or an admin tool's (LoadClientTls)
// Keys must not be readable or writable by "other" (as the secret file).
//
// Thread-safety: a TlsConfig may be shared by threads (OpenSSL's SSL_CTX is), but each
// wrap must happen on the event loop that owns the stream.
#pragma once

#include <kj/async-io.h>
#include <kj/compat/tls.h>

#include <memory>
#include <string>
#include <string_view>

#include "common/status.h"

namespace tapmap::protocol {

// The name in the mapserver's certificate (a DNS subjectAltName) that hosts verify.
// Host certificates never carry it, so a host's key cannot impersonate the server.
inline constexpr std::string_view kServerTlsName = "tapmap-mapserver";
inline constexpr std::string_view kDefaultTlsDir = "/etc/tapmap/tls";

// What a host certificate's common name says: "HOST/CREDENTIAL-ID".
struct CertificateName {
  std::string host;           // a valid host name (auth.h IsValidHostName)
  std::string credential_id;  // 16 lowercase hex digits
};
// "HOST/ID" -> CertificateName; kInvalidArgument on anything else.
Result<CertificateName> ParseCertificateName(std::string_view common_name);
std::string FormatCertificateName(const CertificateName& name);
bool IsValidCredentialId(std::string_view id);

// A loaded TLS configuration: the context and the key material it was made from (which
// the context refers to).
class TlsConfig {
 public:
  TlsConfig(const TlsConfig&) = delete;
  TlsConfig& operator=(const TlsConfig&) = delete;
  ~TlsConfig();

  // The server side: ca.crt, server.crt, server.key of `dir`; clients must present a
  // certificate of the CA. Handshakes that take longer than `handshake_timeout` fail.
  static Result<std::unique_ptr<TlsConfig>> LoadServer(const std::string& dir, kj::Timer& timer,
                                                       kj::Duration handshake_timeout);
  // The client side: ca.crt, host.crt, host.key of `dir`. `name()` is the name in
  // host.crt.
  static Result<std::unique_ptr<TlsConfig>> LoadClient(const std::string& dir);

  kj::TlsContext& context() { return *context_; }
  // Client configs: the certificate's name (the host logs in as name().host).
  const CertificateName& name() const { return name_; }
  const std::string& dir() const { return dir_; }

  // Client side: TLS over `stream`, verifying the server's certificate against the CA
  // and kServerTlsName.
  kj::Promise<kj::Own<kj::AsyncIoStream>> WrapClient(kj::Own<kj::AsyncIoStream> stream);

 private:
  TlsConfig() = default;
  static Result<std::unique_ptr<TlsConfig>> Load(const std::string& dir, const char* cert_file,
                                                 const char* key_file, bool server, kj::Timer* timer,
                                                 kj::Duration handshake_timeout);

  std::string dir_;
  CertificateName name_;
  std::unique_ptr<kj::TlsCertificate> ca_;
  std::unique_ptr<kj::TlsKeypair> keypair_;
  std::unique_ptr<kj::TlsContext> context_;
};

// The common name of the first certificate in a PEM text (for tools and LoadClient).
Result<std::string> CertificateCommonName(std::string_view pem);

}  // namespace tapmap::protocol
