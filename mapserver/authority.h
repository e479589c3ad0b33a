// Authority: who a session is (Principal) and what it may do — the one place the
// mapserver decides access (doc/trust.md). Every Session call asks Check() before it
// acts; a host-role credential may open, inspect and list the volumes its scope names;
// creating, deleting, resizing, snapshotting and cloning need the admin role.
//
// Principals come from a login: over mutual TLS from the client certificate, whose
// credential record (CredentialRegistry) gives the host name, role and scope, and is
// looked up again at every check so that a revocation takes effect at the holder's
// next call (renewals come every T/5); over a unix socket (or plaintext TCP, when the
// server was explicitly told to allow it) the shared secret makes an admin principal
// for all volumes, as before credentials existed.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "mapserver/credential_registry.h"
#include "protocol/tls.h"

namespace tapmap::mapserver {

struct Principal {
  std::string host;
  Role role = Role::kHost;
  // Volume name patterns (fnmatch), or "set:VOLUME": every volume of VOLUME's version
  // set (a golden image and all its snapshots and clones, whatever their names).
  std::vector<std::string> scope;
  std::string credential_id;       // "" = the shared secret
};

enum class Action : uint8_t {
  kOpenReadWrite,
  kOpenReadOnly,
  kInfo,
  kList,  // the list is filtered by scope
  kPoolStats,
  kCreate,
  kDelete,
  kResize,
  kSnapshot,
  kClone,
  kRename,
};
const char* ActionName(Action action);

class Authority {
 public:
  // The version set of a volume, nullopt if there is no such volume (for "set:" scopes).
  using VersionSetOf = std::function<std::optional<uint64_t>(std::string_view volume)>;

  // `registry`: the credential records for TLS logins; nullopt = no TLS logins.
  Authority(std::optional<CredentialRegistry> registry, VersionSetOf version_set_of)
      : registry_(std::move(registry)), version_set_of_(std::move(version_set_of)) {}

  // The principal of a host that logged in with the shared secret.
  static Principal SharedSecret(const std::string& host);

  // The principal of a TLS client whose certificate says `name`: its record must
  // exist, name the same host and not be revoked (kPermissionDenied otherwise).
  Result<Principal> AdmitCertificate(const protocol::CertificateName& name) const;

  // OK if `principal` may do `action` to `volume` ("" for actions on no volume);
  // kPermissionDenied saying why otherwise (also once its credential is revoked).
  Status Check(const Principal& principal, Action action, std::string_view volume) const;

  // True if `volume` is in the principal's scope (for filtering lists).
  bool InScope(const Principal& principal, std::string_view volume) const;

 private:
  std::optional<CredentialRegistry> registry_;
  VersionSetOf version_set_of_;
};

}  // namespace tapmap::mapserver
