// Authentication of hosts to the mapserver (see protocol/doc/auth.md).
//
// Every host shares one secret with the server (a file, /etc/tapmap/secret by
// default). A connection's bootstrap Gate hands out a fresh 32-byte nonce; the host
// answers with proof = HMAC-SHA256(secret, nonce || host-name). The server recomputes
// the proof and compares in constant time. The secret itself never crosses the wire.
//
// These functions are shared by the server (mapserver serve) and every client.
// All are thread-safe and keep no state.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace tapmap::protocol {

inline constexpr std::string_view kDefaultSecretFile = "/etc/tapmap/secret";
inline constexpr size_t kNonceSize = 32;  // bytes, as promised by Gate.challenge
inline constexpr size_t kProofSize = 32;  // bytes of an HMAC-SHA256
inline constexpr size_t kMaxSecretSize = 4096;
inline constexpr size_t kMaxHostNameSize = 255;

// Reads the shared secret from `path`. Trailing "\n" / "\r\n" are stripped. Fails
// (kPermissionDenied) if the file is readable or writable by "other" users, so a
// misconfigured secret is noticed rather than silently leaked; fails
// (kInvalidArgument) if the secret is empty or longer than kMaxSecretSize bytes;
// kNotFound / kIoError if it cannot be read.
Result<std::string> ReadSecretFile(const std::string& path);

// HMAC-SHA256(secret, nonce || host). Returns kProofSize bytes.
std::vector<uint8_t> ComputeLoginProof(std::string_view secret, const uint8_t* nonce,
                                       size_t nonce_size, std::string_view host);

// Constant-time equality of two byte strings (false if sizes differ).
bool ProofsEqual(const uint8_t* a, size_t a_size, const uint8_t* b, size_t b_size);

// kNonceSize bytes from the OS CSPRNG (OpenSSL RAND_bytes). Throws StatusError on the
// (practically impossible) failure of the generator.
std::vector<uint8_t> GenerateNonce();

// A host name is 1..kMaxHostNameSize printable ASCII characters without spaces.
bool IsValidHostName(std::string_view host);

}  // namespace tapmap::protocol
