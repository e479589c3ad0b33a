#include "protocol/auth.h"

#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>

#include "common/unique_fd.h"

namespace tapmap::protocol {

Result<std::string> ReadSecretFile(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) {
    int err = errno;
    if (err == ENOENT) return Status::NotFound("secret file " + path + " does not exist");
    return Status::FromErrno("open secret file " + path, err);
  }
  struct stat st;
  if (::fstat(fd.get(), &st) != 0) return Status::FromErrno("stat secret file " + path, errno);
  if (!S_ISREG(st.st_mode)) {
    return Status::InvalidArgument("secret file " + path + " is not a regular file");
  }
  if ((st.st_mode & (S_IROTH | S_IWOTH)) != 0) {
    return Status::PermissionDenied("secret file " + path +
                                    " is accessible by other users (chmod o-rw it)");
  }
  if (static_cast<uint64_t>(st.st_size) > kMaxSecretSize + 2) {
    return Status::InvalidArgument("secret file " + path + " is larger than " +
                                   std::to_string(kMaxSecretSize) + " bytes");
  }
  std::string secret(static_cast<size_t>(st.st_size) + 1, '\0');
  size_t got = 0;
  for (;;) {
    ssize_t n = ::read(fd.get(), secret.data() + got, secret.size() - got);
    if (n < 0) {
      if (errno == EINTR) continue;
      return Status::FromErrno("read secret file " + path, errno);
    }
    if (n == 0) break;
    got += static_cast<size_t>(n);
    if (got == secret.size()) {
      return Status::InvalidArgument("secret file " + path + " changed while being read");
    }
  }
  secret.resize(got);
  while (!secret.empty() && (secret.back() == '\n' || secret.back() == '\r')) secret.pop_back();
  if (secret.empty()) return Status::InvalidArgument("secret file " + path + " is empty");
  if (secret.size() > kMaxSecretSize) {
    return Status::InvalidArgument("secret in " + path + " is longer than " +
                                   std::to_string(kMaxSecretSize) + " bytes");
  }
  return secret;
}

std::vector<uint8_t> ComputeLoginProof(std::string_view secret, const uint8_t* nonce,
                                       size_t nonce_size, std::string_view host) {
  std::vector<uint8_t> message(nonce, nonce + nonce_size);
  message.insert(message.end(), host.begin(), host.end());
  std::vector<uint8_t> proof(EVP_MAX_MD_SIZE);
  unsigned int len = 0;
  if (HMAC(EVP_sha256(), secret.data(), static_cast<int>(secret.size()), message.data(),
           message.size(), proof.data(), &len) == nullptr) {
    throw StatusError(Status::Internal("HMAC-SHA256 failed"));
  }
  proof.resize(len);
  return proof;
}

bool ProofsEqual(const uint8_t* a, size_t a_size, const uint8_t* b, size_t b_size) {
  if (a_size != b_size) return false;
  return CRYPTO_memcmp(a, b, a_size) == 0;
}

std::vector<uint8_t> GenerateNonce() {
  std::vector<uint8_t> nonce(kNonceSize);
  if (RAND_bytes(nonce.data(), static_cast<int>(nonce.size())) != 1) {
    throw StatusError(Status::Internal("RAND_bytes failed to produce a nonce"));
  }
  return nonce;
}

bool IsValidHostName(std::string_view host) {
  if (host.empty() || host.size() > kMaxHostNameSize) return false;
  for (char c : host) {
    if (c <= ' ' || c > '~') return false;
  }
  return true;
}

}  // namespace tapmap::protocol
