#include "mapserver/authority.h"

#include <fnmatch.h>

namespace tapmap::mapserver {

const char* ActionName(Action action) {
  switch (action) {
    case Action::kOpenReadWrite: return "open read-write";
    case Action::kOpenReadOnly: return "open read-only";
    case Action::kInfo: return "info";
    case Action::kList: return "list";
    case Action::kPoolStats: return "poolStats";
    case Action::kCreate: return "create";
    case Action::kDelete: return "delete";
    case Action::kResize: return "resize";
    case Action::kSnapshot: return "snapshot";
    case Action::kClone: return "clone";
    case Action::kRename: return "rename";
  }
  return "?";
}

Principal Authority::SharedSecret(const std::string& host) { return Principal{host, Role::kAdmin, {"*"}, ""}; }

Result<Principal> Authority::AdmitCertificate(const protocol::CertificateName& name) const {
  if (!registry_.has_value()) {
    return Status::PermissionDenied("this server has no credential registry (--credentials)");
  }
  auto record = registry_->Find(name.credential_id);
  if (!record.ok()) {
    if (record.status().code() == StatusCode::kNotFound) {
      return Status::PermissionDenied("credential " + name.credential_id + " of host " + name.host +
                                      " is not in the registry");
    }
    return record.status();
  }
  if (record->host != name.host) {
    return Status::PermissionDenied("credential " + name.credential_id + " was issued to " + record->host +
                                    ", not " + name.host);
  }
  if (!record->revoked.empty()) {
    return Status::PermissionDenied("credential " + name.credential_id + " of host " + name.host +
                                    " was revoked " + record->revoked);
  }
  return Principal{record->host, record->role, record->scope, record->id};
}

bool Authority::InScope(const Principal& principal, std::string_view volume) const {
  std::string name(volume);
  std::optional<std::optional<uint64_t>> set;  // looked up once, if a "set:" entry asks
  for (const auto& pattern : principal.scope) {
    if (pattern.rfind("set:", 0) == 0) {
      if (!set) set = version_set_of_ ? version_set_of_(volume) : std::nullopt;
      if (!set->has_value()) continue;  // no such volume (yet): not in any set
      auto anchor = version_set_of_ ? version_set_of_(std::string_view(pattern).substr(4)) : std::nullopt;
      if (anchor.has_value() && *anchor == **set) return true;
    } else if (::fnmatch(pattern.c_str(), name.c_str(), 0) == 0) {
      return true;
    }
  }
  return false;
}

Status Authority::Check(const Principal& principal, Action action, std::string_view volume) const {
  if (!principal.credential_id.empty()) {
    // Revocation and changes of role or scope take effect at once.
    auto current = AdmitCertificate({principal.host, principal.credential_id});
    if (!current.ok()) return current.status();
    if (current->role != principal.role || current->scope != principal.scope) {
      return Status::PermissionDenied("credential " + principal.credential_id +
                                      " changed since the login: log in again");
    }
  }
  bool admin_only = action == Action::kCreate || action == Action::kDelete || action == Action::kResize ||
                    action == Action::kSnapshot || action == Action::kClone || action == Action::kRename;
  if (admin_only && principal.role != Role::kAdmin) {
    return Status::PermissionDenied(std::string(ActionName(action)) + " needs the admin role; host " +
                                    principal.host + " has the host role");
  }
  if (!volume.empty() && !InScope(principal, volume)) {
    return Status::PermissionDenied("volume '" + std::string(volume) + "' is outside the scope of host " +
                                    principal.host);
  }
  return Status::Ok();
}

}  // namespace tapmap::mapserver
