// CertificateAuthority: the cluster CA that the mapserver tooling keeps (doc/trust.md),
// and the certificates it issues — the mapserver's (server.crt, naming
// protocol::kServerTlsName) and one per host credential (host.crt, common name
// "HOST/CREDENTIAL-ID", protocol/tls.h). Keys are ECDSA P-256, signatures SHA-256
// (OpenSSL). The CA directory holds ca.key and ca.crt; keep it off the storage
// network's hosts (only `mapserver credential` needs it, not `mapserver serve`).
//
// Every file is written 0600 (certificates 0644) and replaced atomically; an existing
// CA is never overwritten.
#pragma once

#include <string>

#include "common/status.h"
#include "protocol/tls.h"

namespace tapmap::mapserver {

class CertificateAuthority {
 public:
  // Creates ca.key and ca.crt in `ca_dir` (made 0700 if missing); kAlreadyExists if
  // ca.key is already there.
  static Status Init(const std::string& ca_dir, const std::string& cluster_name, int days);

  // Loads the CA of `ca_dir`.
  static Result<CertificateAuthority> Load(const std::string& ca_dir);

  // Writes ca.crt, server.crt and server.key into `out_dir` (a mapserver's TLS dir).
  Status IssueServer(const std::string& out_dir, int days) const;
  // Writes ca.crt, host.crt and host.key into `out_dir` (a host's TLS dir).
  Status IssueHost(const protocol::CertificateName& name, const std::string& out_dir, int days) const;

 private:
  CertificateAuthority(std::string key_pem, std::string cert_pem)
      : key_pem_(std::move(key_pem)), cert_pem_(std::move(cert_pem)) {}
  Status Issue(const std::string& common_name, bool server, const std::string& out_dir, const char* cert_file,
               const char* key_file, int days) const;

  std::string key_pem_;
  std::string cert_pem_;
};

}  // namespace tapmap::mapserver
