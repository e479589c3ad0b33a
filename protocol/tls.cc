#include "protocol/tls.h"

#include <openssl/bio.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <sys/stat.h>

#include <fstream>
#include <sstream>

#include "protocol/auth.h"
#include "protocol/remote_status.h"

namespace tapmap::protocol {
namespace {

constexpr size_t kMaxPemFile = 1 << 20;

// Reads a PEM file of `dir`. Private keys must not be accessible to "other".
Result<std::string> ReadPem(const std::string& dir, const char* file, bool secret) {
  std::string path = dir + "/" + file;
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return Status::NotFound("TLS file " + path + " not found");
  if (!S_ISREG(st.st_mode)) return Status::InvalidArgument("TLS file " + path + " is not a regular file");
  if (secret && (st.st_mode & 0007) != 0) {
    return Status::PermissionDenied("TLS key " + path + " is accessible to other users (chmod 600 it)");
  }
  if (static_cast<size_t>(st.st_size) > kMaxPemFile) {
    return Status::InvalidArgument("TLS file " + path + " is larger than 1 MiB");
  }
  std::ifstream in(path);
  if (!in) return Status::IoError("cannot read " + path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

}  // namespace

bool IsValidCredentialId(std::string_view id) {
  if (id.size() != 16) return false;
  for (char c : id) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

Result<CertificateName> ParseCertificateName(std::string_view common_name) {
  size_t slash = common_name.rfind('/');
  if (slash == std::string_view::npos) {
    return Status::InvalidArgument("certificate name '" + std::string(common_name) +
                                   "' is not HOST/CREDENTIAL-ID");
  }
  CertificateName name{std::string(common_name.substr(0, slash)), std::string(common_name.substr(slash + 1))};
  if (!IsValidHostName(name.host) || name.host.find('/') != std::string::npos ||
      !IsValidCredentialId(name.credential_id)) {
    return Status::InvalidArgument("certificate name '" + std::string(common_name) +
                                   "' is not HOST/CREDENTIAL-ID");
  }
  return name;
}

std::string FormatCertificateName(const CertificateName& name) {
  return name.host + "/" + name.credential_id;
}

Result<std::string> CertificateCommonName(std::string_view pem) {
  BIO* bio = BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size()));
  if (bio == nullptr) return Status::Internal("out of memory");
  X509* cert = PEM_read_bio_X509(bio, nullptr, nullptr, nullptr);
  BIO_free(bio);
  if (cert == nullptr) return Status::InvalidArgument("not a PEM certificate");
  char cn[256] = {};
  int n = X509_NAME_get_text_by_NID(X509_get_subject_name(cert), NID_commonName, cn, sizeof(cn));
  X509_free(cert);
  if (n <= 0 || static_cast<size_t>(n) >= sizeof(cn)) {
    return Status::InvalidArgument("certificate has no usable common name");
  }
  return std::string(cn, static_cast<size_t>(n));
}

TlsConfig::~TlsConfig() = default;

Result<std::unique_ptr<TlsConfig>> TlsConfig::LoadServer(const std::string& dir, kj::Timer& timer,
                                                         kj::Duration handshake_timeout) {
  return Load(dir, "server.crt", "server.key", /*server=*/true, &timer, handshake_timeout);
}

Result<std::unique_ptr<TlsConfig>> TlsConfig::LoadClient(const std::string& dir) {
  return Load(dir, "host.crt", "host.key", /*server=*/false, nullptr, 0 * kj::SECONDS);
}

Result<std::unique_ptr<TlsConfig>> TlsConfig::Load(const std::string& dir, const char* cert_file,
                                                   const char* key_file, bool server, kj::Timer* timer,
                                                   kj::Duration handshake_timeout) {
  auto ca = ReadPem(dir, "ca.crt", false);
  if (!ca.ok()) return ca.status();
  auto cert = ReadPem(dir, cert_file, false);
  if (!cert.ok()) return cert.status();
  auto key = ReadPem(dir, key_file, true);
  if (!key.ok()) return key.status();
  std::unique_ptr<TlsConfig> config(new TlsConfig());
  config->dir_ = dir;
  if (!server) {
    auto cn = CertificateCommonName(*cert);
    if (!cn.ok()) return Status::InvalidArgument(dir + "/" + cert_file + ": " + cn.status().message());
    auto name = ParseCertificateName(*cn);
    if (!name.ok()) return Status::InvalidArgument(dir + "/" + cert_file + ": " + name.status().message());
    config->name_ = *name;
  }
  Status made = RunCatching([&] {
    config->ca_ = std::make_unique<kj::TlsCertificate>(kj::StringPtr(ca->c_str()));
    config->keypair_ = std::unique_ptr<kj::TlsKeypair>(new kj::TlsKeypair{
        kj::TlsPrivateKey(kj::StringPtr(key->c_str())), kj::TlsCertificate(kj::StringPtr(cert->c_str()))});
    kj::TlsContext::Options options;
    options.useSystemTrustStore = false;
    options.verifyClients = server;
    options.trustedCertificates = kj::arrayPtr(config->ca_.get(), 1);
    options.minVersion = kj::TlsVersion::TLS_1_2;
    options.defaultKeypair = *config->keypair_;
    if (timer != nullptr) {
      options.timer = *timer;
      options.acceptTimeout = handshake_timeout;
    }
    config->context_ = std::make_unique<kj::TlsContext>(kj::mv(options));
  });
  if (!made.ok()) return Status::InvalidArgument("TLS files in " + dir + ": " + made.message());
  return config;
}

kj::Promise<kj::Own<kj::AsyncIoStream>> TlsConfig::WrapClient(kj::Own<kj::AsyncIoStream> stream) {
  return context_->wrapClient(kj::mv(stream), kj::StringPtr(kServerTlsName.data(), kServerTlsName.size()));
}

}  // namespace tapmap::protocol
