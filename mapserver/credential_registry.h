// CredentialRegistry: the mapserver's record of the host credentials it issued (a
// directory, `mapserver serve --credentials DIR`; doc/trust.md). A TLS client
// certificate is accepted only if the credential id in its name ("HOST/ID",
// protocol/tls.h) has a record here for the same host that is not revoked; the record
// also says what the holder may do (role, scope: see authority.h).
//
// One file per credential, DIR/ID.credential, text, one "key value" per line:
//
//   tapmap-credential 1
//   id 3f9c2a1b0d4e5f60
//   host host-a
//   role host                  (host | admin)
//   scope vm-* golden-*        (volume name patterns, fnmatch(3); "*" = all)
//   issued 2026-12-05T21:00:00Z
//   revoked 2026-12-06T08:00:00Z   (only once revoked)
//
// Files are replaced atomically (write, fsync, rename, fsync the directory), so a
// reader sees the old or the new record. The server reads a record at every login and
// every host-lease renewal: a revocation takes effect within one renewal interval
// (T/5) for a connected host, at once for new connections, without a restart.
//
// Thread-safety: a registry object holds no state but its directory path; concurrent
// writers (two `mapserver credential` commands at once) are not coordinated.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"

namespace tapmap::mapserver {

enum class Role : uint8_t { kHost, kAdmin };
const char* RoleName(Role role);
bool ParseRole(const std::string& text, Role* role);

struct Credential {
  std::string id;    // 16 lowercase hex digits
  std::string host;  // the name the holder logs in as
  Role role = Role::kHost;
  std::vector<std::string> scope;  // volume name patterns; empty = none
  std::string issued;              // UTC, ISO 8601
  std::string revoked;             // "" = valid
};

class CredentialRegistry {
 public:
  explicit CredentialRegistry(std::string dir) : dir_(std::move(dir)) {}

  const std::string& dir() const { return dir_; }

  // The record of `id`; kNotFound if there is none, kDataLoss if it cannot be parsed.
  Result<Credential> Find(const std::string& id) const;
  // Every record, sorted by host then id.
  Result<std::vector<Credential>> List() const;
  // Writes a new record (kAlreadyExists if `id` has one).
  Status Add(const Credential& credential);
  // Marks `id` revoked at the current time (kNotFound without a record; revoking a
  // revoked credential is a no-op).
  Status Revoke(const std::string& id);

  // A fresh random credential id.
  static std::string NewId();
  // The current UTC time as the registry writes it.
  static std::string Now();

 private:
  Status Write(const Credential& credential) const;

  std::string dir_;
};

// The text of a record and back (exposed for tests and fsck-like tools).
std::string FormatCredential(const Credential& credential);
Result<Credential> ParseCredential(const std::string& text);

}  // namespace tapmap::mapserver
