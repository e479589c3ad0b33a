#include "mapserver/credential_registry.h"

#include <dirent.h>
#include <fcntl.h>
#include <openssl/rand.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <ctime>
#include <fstream>
#include <sstream>

#include "common/unique_fd.h"
#include "protocol/auth.h"
#include "protocol/tls.h"

namespace tapmap::mapserver {
namespace {

constexpr const char* kMagic = "tapmap-credential 1";
constexpr const char* kSuffix = ".credential";
constexpr size_t kMaxRecord = 64 * 1024;

Status SyncDir(const std::string& dir) {
  UniqueFd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd.valid() || ::fsync(fd.get()) != 0) return Status::IoError("cannot sync directory " + dir);
  return Status::Ok();
}

}  // namespace

const char* RoleName(Role role) { return role == Role::kAdmin ? "admin" : "host"; }

bool ParseRole(const std::string& text, Role* role) {
  if (text == "host") {
    *role = Role::kHost;
  } else if (text == "admin") {
    *role = Role::kAdmin;
  } else {
    return false;
  }
  return true;
}

std::string FormatCredential(const Credential& c) {
  std::string out = std::string(kMagic) + "\n";
  out += "id " + c.id + "\n";
  out += "host " + c.host + "\n";
  out += std::string("role ") + RoleName(c.role) + "\n";
  out += "scope";
  for (const auto& s : c.scope) out += " " + s;
  out += "\n";
  out += "issued " + c.issued + "\n";
  if (!c.revoked.empty()) out += "revoked " + c.revoked + "\n";
  return out;
}

Result<Credential> ParseCredential(const std::string& text) {
  std::istringstream in(text);
  std::string line;
  if (!std::getline(in, line) || line != kMagic) {
    return Status::Corruption("not a tapmap credential record (first line '" + line + "')");
  }
  Credential c;
  bool has_role = false, has_scope = false;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    size_t space = line.find(' ');
    std::string key = line.substr(0, space);
    std::string value = space == std::string::npos ? "" : line.substr(space + 1);
    if (key == "id") {
      c.id = value;
    } else if (key == "host") {
      c.host = value;
    } else if (key == "role") {
      if (!ParseRole(value, &c.role)) return Status::Corruption("bad role '" + value + "'");
      has_role = true;
    } else if (key == "scope") {
      std::istringstream words(value);
      for (std::string w; words >> w;) c.scope.push_back(w);
      has_scope = true;
    } else if (key == "issued") {
      c.issued = value;
    } else if (key == "revoked") {
      c.revoked = value.empty() ? "yes" : value;
    } else {
      return Status::Corruption("unknown key '" + key + "' in a credential record");
    }
  }
  if (!protocol::IsValidCredentialId(c.id) || !protocol::IsValidHostName(c.host) || !has_role || !has_scope) {
    return Status::Corruption("credential record lacks a valid id, host, role or scope");
  }
  return c;
}

std::string CredentialRegistry::NewId() {
  uint8_t bytes[8];
  if (RAND_bytes(bytes, sizeof(bytes)) != 1) throw StatusError(Status::Internal("RAND_bytes failed"));
  char hex[17];
  for (size_t i = 0; i < sizeof(bytes); ++i) std::snprintf(hex + 2 * i, 3, "%02x", bytes[i]);
  return std::string(hex, 16);
}

std::string CredentialRegistry::Now() {
  std::time_t t = std::time(nullptr);
  struct tm tm;
  ::gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

Result<Credential> CredentialRegistry::Find(const std::string& id) const {
  if (!protocol::IsValidCredentialId(id)) return Status::NotFound("no credential '" + id + "'");
  std::string path = dir_ + "/" + id + kSuffix;
  std::ifstream in(path);
  if (!in) return Status::NotFound("no credential " + id + " in " + dir_);
  std::string text(kMaxRecord + 1, '\0');
  in.read(text.data(), static_cast<std::streamsize>(text.size()));
  text.resize(static_cast<size_t>(in.gcount()));
  if (text.size() > kMaxRecord) return Status::Corruption(path + " is too large for a credential record");
  auto c = ParseCredential(text);
  if (!c.ok()) return Status::Corruption(path + ": " + c.status().message());
  if (c->id != id) return Status::Corruption(path + " holds the record of credential " + c->id);
  return c;
}

Result<std::vector<Credential>> CredentialRegistry::List() const {
  DIR* d = ::opendir(dir_.c_str());
  if (d == nullptr) return Status::NotFound("credential directory " + dir_ + " cannot be read");
  std::vector<std::string> ids;
  while (struct dirent* e = ::readdir(d)) {
    std::string name = e->d_name;
    size_t n = std::char_traits<char>::length(kSuffix);
    if (name.size() > n && name.compare(name.size() - n, n, kSuffix) == 0) ids.push_back(name.substr(0, name.size() - n));
  }
  ::closedir(d);
  std::vector<Credential> all;
  for (const auto& id : ids) {
    auto c = Find(id);
    if (!c.ok()) return c.status();
    all.push_back(std::move(*c));
  }
  std::sort(all.begin(), all.end(),
            [](const Credential& a, const Credential& b) { return std::tie(a.host, a.id) < std::tie(b.host, b.id); });
  return all;
}

Status CredentialRegistry::Add(const Credential& credential) {
  if (Find(credential.id).ok()) return Status::AlreadyExists("credential " + credential.id + " exists");
  return Write(credential);
}

Status CredentialRegistry::Revoke(const std::string& id) {
  auto c = Find(id);
  if (!c.ok()) return c.status();
  if (!c->revoked.empty()) return Status::Ok();
  c->revoked = Now();
  return Write(*c);
}

Status CredentialRegistry::Write(const Credential& credential) const {
  if (::mkdir(dir_.c_str(), 0700) != 0 && errno != EEXIST) {
    return Status::IoError("cannot create credential directory " + dir_);
  }
  std::string path = dir_ + "/" + credential.id + kSuffix;
  std::string tmp = path + ".tmp";
  std::string text = FormatCredential(credential);
  {
    UniqueFd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
    if (!fd.valid()) return Status::IoError("cannot write " + tmp);
    if (::write(fd.get(), text.data(), text.size()) != static_cast<ssize_t>(text.size()) || ::fsync(fd.get()) != 0) {
      return Status::IoError("cannot write " + tmp);
    }
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) return Status::IoError("cannot rename " + tmp);
  return SyncDir(dir_);
}

}  // namespace tapmap::mapserver
