#include "mapserver/certificate_authority.h"

#include <fcntl.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <memory>
#include <sstream>

#include "common/unique_fd.h"

namespace tapmap::mapserver {
namespace {

// Owners of OpenSSL objects.
struct PkeyFree { void operator()(EVP_PKEY* p) const { EVP_PKEY_free(p); } };
struct X509Free { void operator()(X509* p) const { X509_free(p); } };
struct BioFree { void operator()(BIO* p) const { BIO_free(p); } };
using Pkey = std::unique_ptr<EVP_PKEY, PkeyFree>;
using Cert = std::unique_ptr<X509, X509Free>;
using Bio = std::unique_ptr<BIO, BioFree>;

Status OpenSslError(const std::string& what) { return Status::Internal("OpenSSL: " + what + " failed"); }

Result<std::string> ReadText(const std::string& path) {
  std::ifstream in(path);
  if (!in) return Status::NotFound("cannot read " + path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

Status WriteFileAtomic(const std::string& path, const std::string& text, mode_t mode) {
  std::string tmp = path + ".tmp";
  {
    UniqueFd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode));
    if (!fd.valid()) return Status::IoError("cannot write " + tmp);
    ::fchmod(fd.get(), mode);
    if (::write(fd.get(), text.data(), text.size()) != static_cast<ssize_t>(text.size()) || ::fsync(fd.get()) != 0) {
      return Status::IoError("cannot write " + tmp);
    }
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) return Status::IoError("cannot rename " + tmp + " to " + path);
  return Status::Ok();
}

Status MakeDir(const std::string& dir) {
  if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) return Status::IoError("cannot create " + dir);
  return Status::Ok();
}

Pkey NewKey() { return Pkey(EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256")); }

Result<std::string> KeyPem(EVP_PKEY* key) {
  Bio bio(BIO_new(BIO_s_mem()));
  if (!bio || PEM_write_bio_PrivateKey(bio.get(), key, nullptr, nullptr, 0, nullptr, nullptr) != 1) {
    return OpenSslError("writing a key");
  }
  char* data = nullptr;
  long n = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<size_t>(n));
}

Result<std::string> CertPem(X509* cert) {
  Bio bio(BIO_new(BIO_s_mem()));
  if (!bio || PEM_write_bio_X509(bio.get(), cert) != 1) return OpenSslError("writing a certificate");
  char* data = nullptr;
  long n = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<size_t>(n));
}

bool AddExtension(X509* cert, X509* issuer, int nid, const char* value) {
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
  X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value);
  if (ext == nullptr) return false;
  bool ok = X509_add_ext(cert, ext, -1) == 1;
  X509_EXTENSION_free(ext);
  return ok;
}

// A certificate for `subject_key` named `common_name`, valid `days`, signed by
// `issuer_key` (self-signed when `issuer` is null).
Result<Cert> MakeCertificate(const std::string& common_name, EVP_PKEY* subject_key, X509* issuer,
                             EVP_PKEY* issuer_key, int days,
                             std::initializer_list<std::pair<int, const char*>> extensions) {
  Cert cert(X509_new());
  if (!cert) return OpenSslError("X509_new");
  X509_set_version(cert.get(), 2);
  uint8_t serial[16];
  if (RAND_bytes(serial, sizeof(serial)) != 1) return OpenSslError("RAND_bytes");
  serial[0] &= 0x7f;  // a positive serial
  BIGNUM* bn = BN_bin2bn(serial, sizeof(serial), nullptr);
  BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(cert.get()));
  BN_free(bn);
  X509_gmtime_adj(X509_getm_notBefore(cert.get()), -300);
  X509_gmtime_adj(X509_getm_notAfter(cert.get()), static_cast<long>(days) * 86400);
  X509_set_pubkey(cert.get(), subject_key);
  X509_NAME* name = X509_get_subject_name(cert.get());
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8,
                             reinterpret_cast<const unsigned char*>(common_name.c_str()), -1, -1, 0);
  X509_set_issuer_name(cert.get(), issuer != nullptr ? X509_get_subject_name(issuer) : name);
  X509* issuer_cert = issuer != nullptr ? issuer : cert.get();
  for (auto [nid, value] : extensions) {
    if (!AddExtension(cert.get(), issuer_cert, nid, value)) return OpenSslError("adding an extension");
  }
  if (X509_sign(cert.get(), issuer_key, EVP_sha256()) == 0) return OpenSslError("signing");
  return cert;
}

}  // namespace

Status CertificateAuthority::Init(const std::string& ca_dir, const std::string& cluster_name, int days) {
  if (Status s = MakeDir(ca_dir); !s.ok()) return s;
  struct stat st;
  if (::stat((ca_dir + "/ca.key").c_str(), &st) == 0) {
    return Status::AlreadyExists(ca_dir + "/ca.key exists: the CA is made once (issue certificates with it)");
  }
  Pkey key = NewKey();
  if (!key) return OpenSslError("generating the CA key");
  auto cert = MakeCertificate("tapmap cluster CA " + cluster_name, key.get(), nullptr, key.get(), days,
                              {{NID_basic_constraints, "critical,CA:TRUE,pathlen:0"},
                               {NID_key_usage, "critical,keyCertSign,cRLSign"},
                               {NID_subject_key_identifier, "hash"}});
  if (!cert.ok()) return cert.status();
  auto key_pem = KeyPem(key.get());
  if (!key_pem.ok()) return key_pem.status();
  auto cert_pem = CertPem(cert->get());
  if (!cert_pem.ok()) return cert_pem.status();
  if (Status s = WriteFileAtomic(ca_dir + "/ca.key", *key_pem, 0600); !s.ok()) return s;
  return WriteFileAtomic(ca_dir + "/ca.crt", *cert_pem, 0644);
}

Result<CertificateAuthority> CertificateAuthority::Load(const std::string& ca_dir) {
  auto key = ReadText(ca_dir + "/ca.key");
  if (!key.ok()) return Status::NotFound("no CA in " + ca_dir + " (mapserver credential init-ca makes one)");
  auto cert = ReadText(ca_dir + "/ca.crt");
  if (!cert.ok()) return cert.status();
  return CertificateAuthority(std::move(*key), std::move(*cert));
}

Status CertificateAuthority::IssueServer(const std::string& out_dir, int days) const {
  return Issue(std::string(protocol::kServerTlsName), /*server=*/true, out_dir, "server.crt", "server.key", days);
}

Status CertificateAuthority::IssueHost(const protocol::CertificateName& name, const std::string& out_dir,
                                       int days) const {
  return Issue(protocol::FormatCertificateName(name), /*server=*/false, out_dir, "host.crt", "host.key", days);
}

Status CertificateAuthority::Issue(const std::string& common_name, bool server, const std::string& out_dir,
                                   const char* cert_file, const char* key_file, int days) const {
  Bio key_bio(BIO_new_mem_buf(key_pem_.data(), static_cast<int>(key_pem_.size())));
  Pkey ca_key(PEM_read_bio_PrivateKey(key_bio.get(), nullptr, nullptr, nullptr));
  Bio cert_bio(BIO_new_mem_buf(cert_pem_.data(), static_cast<int>(cert_pem_.size())));
  Cert ca_cert(PEM_read_bio_X509(cert_bio.get(), nullptr, nullptr, nullptr));
  if (!ca_key || !ca_cert) return Status::Corruption("the CA's ca.key or ca.crt cannot be parsed");
  Pkey key = NewKey();
  if (!key) return OpenSslError("generating a key");
  std::string san = "DNS:" + std::string(protocol::kServerTlsName);
  auto cert = server ? MakeCertificate(common_name, key.get(), ca_cert.get(), ca_key.get(), days,
                                       {{NID_basic_constraints, "critical,CA:FALSE"},
                                        {NID_key_usage, "critical,digitalSignature"},
                                        {NID_ext_key_usage, "serverAuth"},
                                        {NID_subject_alt_name, san.c_str()},
                                        {NID_authority_key_identifier, "keyid"}})
                     : MakeCertificate(common_name, key.get(), ca_cert.get(), ca_key.get(), days,
                                       {{NID_basic_constraints, "critical,CA:FALSE"},
                                        {NID_key_usage, "critical,digitalSignature"},
                                        {NID_ext_key_usage, "clientAuth"},
                                        {NID_authority_key_identifier, "keyid"}});
  if (!cert.ok()) return cert.status();
  auto key_pem = KeyPem(key.get());
  if (!key_pem.ok()) return key_pem.status();
  auto cert_pem = CertPem(cert->get());
  if (!cert_pem.ok()) return cert_pem.status();
  if (Status s = MakeDir(out_dir); !s.ok()) return s;
  if (Status s = WriteFileAtomic(out_dir + "/" + key_file, *key_pem, 0600); !s.ok()) return s;
  if (Status s = WriteFileAtomic(out_dir + "/" + cert_file, *cert_pem, 0644); !s.ok()) return s;
  return WriteFileAtomic(out_dir + "/ca.crt", cert_pem_, 0644);
}

}  // namespace tapmap::mapserver
