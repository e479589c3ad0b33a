#include "tapdisk-map/nbd/tls_credentials.h"

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include <cstring>
#include <fstream>
#include <sstream>

namespace tapmap::nbd {
namespace {

namespace ssl = boost::asio::ssl;

constexpr size_t kMaxIdentityLength = 128;
constexpr size_t kMinKeyBytes = 16, kMaxKeyBytes = 64;
constexpr size_t kMaxPskFileBytes = 1 << 20;

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

Result<std::string> ReadSmallFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return Status::NotFound("cannot open " + path + ": " + std::strerror(errno));
  std::ostringstream text;
  text << in.rdbuf();
  if (text.str().size() > kMaxPskFileBytes) return Status::InvalidArgument(path + " is larger than 1 MiB");
  return text.str();
}

// The SSL_CTX ex_data slot that points to the TlsCredentials (for the PSK callback).
// Not the "app data" slot: boost::asio::ssl::context keeps its verify callback there
// and deletes whatever it finds at destruction. Registered once per process (an
// OpenSSL index, not state of ours).
int CredentialsIndex() {
  static const int index = SSL_CTX_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
  return index;
}

// The SSL ex_data slot of the std::string that receives the PSK identity.
int IdentityIndex() {
  static const int index = SSL_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
  return index;
}

// What OpenSSL said last, for an error message.
std::string OpenSslError(const boost::system::error_code& ec) {
  return ec.message();
}

}  // namespace

Result<PskKeys> ParsePskKeys(std::string_view text) {
  PskKeys keys;
  int lineno = 0;
  while (!text.empty()) {
    size_t end = text.find('\n');
    std::string_view line = text.substr(0, end);
    text = end == std::string_view::npos ? std::string_view() : text.substr(end + 1);
    ++lineno;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.empty()) continue;
    auto bad = [&](const std::string& why) {
      return Status::InvalidArgument("line " + std::to_string(lineno) + ": " + why +
                                     " (expected IDENTITY:HEXKEY, as psktool writes)");
    };
    size_t colon = line.find(':');
    if (colon == std::string_view::npos) return bad("no ':'");
    std::string_view identity = line.substr(0, colon), hex = line.substr(colon + 1);
    if (identity.empty() || identity.size() > kMaxIdentityLength) return bad("identity must be 1..128 characters");
    for (char c : identity) {
      if (c < 0x21 || c > 0x7e) return bad("identity has a character that is not printable ASCII");
    }
    if (hex.size() % 2 != 0 || hex.size() < 2 * kMinKeyBytes || hex.size() > 2 * kMaxKeyBytes) {
      return bad("key must be 16..64 bytes, written as 32..128 hex digits");
    }
    std::vector<uint8_t> key(hex.size() / 2);
    for (size_t i = 0; i < key.size(); ++i) {
      int hi = HexValue(hex[2 * i]), lo = HexValue(hex[2 * i + 1]);
      if (hi < 0 || lo < 0) return bad("key is not hex");
      key[i] = static_cast<uint8_t>(hi << 4 | lo);
    }
    if (keys.count(identity) != 0) return bad("identity '" + std::string(identity) + "' given twice");
    keys.emplace(std::string(identity), std::move(key));
  }
  if (keys.empty()) return Status::InvalidArgument("no keys");
  return keys;
}

TlsCredentials::TlsCredentials() : context_(ssl::context::tls_server) {}

Result<std::shared_ptr<TlsCredentials>> TlsCredentials::Load(const TlsSettings& settings) {
  if (!settings.certificates_dir.empty() && !settings.psk_file.empty()) {
    return Status::InvalidArgument("NBD TLS: give x509 certificates or a PSK file, not both");
  }
  if (!settings.enabled()) return Status::InvalidArgument("NBD TLS: no credentials given");
  std::shared_ptr<TlsCredentials> creds(new TlsCredentials());
  SSL_CTX* ctx = creds->context_.native_handle();
  // TLS 1.2 or later (the NBD spec's floor); no session tickets or renegotiation.
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION | SSL_OP_CIPHER_SERVER_PREFERENCE);
  SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
  SSL_CTX_set_num_tickets(ctx, 0);
  boost::system::error_code ec;

  if (!settings.psk_file.empty()) {
    Result<std::string> text = ReadSmallFile(settings.psk_file);
    if (!text.ok()) return text.status().WithContext("NBD TLS PSK file");
    Result<PskKeys> keys = ParsePskKeys(*text);
    OPENSSL_cleanse(text->data(), text->size());
    if (!keys.ok()) return keys.status().WithContext("NBD TLS PSK file " + settings.psk_file);
    creds->psk_keys_ = std::move(*keys);
    if (CredentialsIndex() < 0 || SSL_CTX_set_ex_data(ctx, CredentialsIndex(), creds.get()) != 1) {
      return Status::Internal("NBD TLS: OpenSSL ex_data slot unavailable");
    }
    SSL_CTX_set_psk_server_callback(ctx, &TlsCredentials::FindPsk);
    // TLS 1.2: the PSK suites (with forward secrecy first); TLS 1.3 uses the legacy
    // callback with TLS_AES_128_GCM_SHA256 (gnutls' default binder hash is SHA-256).
    if (SSL_CTX_set_cipher_list(ctx, "ECDHE-PSK:DHE-PSK:PSK:!NULL:!RC4:!3DES:@STRENGTH") != 1) {
      return Status::Internal("NBD TLS: OpenSSL has no PSK cipher suites");
    }
    SSL_CTX_set_dh_auto(ctx, 1);
    creds->description_ = "PSK, " + std::to_string(creds->psk_keys_.size()) + " identit" +
                          (creds->psk_keys_.size() == 1 ? "y" : "ies") + " from " + settings.psk_file;
    return creds;
  }

  const std::string dir = settings.certificates_dir;
  const std::string cert = dir + "/server-cert.pem", key = dir + "/server-key.pem", ca = dir + "/ca-cert.pem";
  creds->context_.use_certificate_chain_file(cert, ec);
  if (ec) return Status::InvalidArgument("NBD TLS certificate " + cert + ": " + OpenSslError(ec));
  creds->context_.use_private_key_file(key, ssl::context::pem, ec);
  if (ec) return Status::InvalidArgument("NBD TLS key " + key + ": " + OpenSslError(ec));
  if (SSL_CTX_check_private_key(ctx) != 1) {
    return Status::InvalidArgument("NBD TLS key " + key + " does not match " + cert);
  }
  if (settings.verify_peer) {
    creds->context_.load_verify_file(ca, ec);
    if (ec) {
      return Status::InvalidArgument("NBD TLS CA " + ca + " (needed to verify client certificates): " +
                                     OpenSslError(ec));
    }
    creds->context_.set_verify_mode(ssl::verify_peer | ssl::verify_fail_if_no_peer_cert);
    creds->description_ = "x509, client certificates verified against " + ca;
  } else {
    creds->context_.set_verify_mode(ssl::verify_none);
    creds->description_ = "x509, client certificates not checked";
  }
  SSL_CTX_set_cipher_list(ctx, "HIGH:!aNULL:!eNULL:!PSK:!SRP:!3DES:!RC4:@STRENGTH");
  return creds;
}

void TlsCredentials::RecordPskIdentity(SSL* ssl, std::string* identity) {
  if (IdentityIndex() >= 0) SSL_set_ex_data(ssl, IdentityIndex(), identity);
}

unsigned int TlsCredentials::FindPsk(SSL* ssl, const char* identity, unsigned char* psk, unsigned int max_psk_len) {
  auto* self = static_cast<TlsCredentials*>(SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), CredentialsIndex()));
  if (self == nullptr || identity == nullptr) return 0;
  auto it = self->psk_keys_.find(std::string_view(identity, ::strnlen(identity, kMaxIdentityLength + 1)));
  if (it == self->psk_keys_.end() || it->second.size() > max_psk_len) return 0;  // unknown: handshake fails
  if (IdentityIndex() >= 0) {
    if (auto* sink = static_cast<std::string*>(SSL_get_ex_data(ssl, IdentityIndex())); sink != nullptr) {
      *sink = it->first;
    }
  }
  std::memcpy(psk, it->second.data(), it->second.size());
  return static_cast<unsigned int>(it->second.size());
}

}  // namespace tapmap::nbd
