#include "tapdisk-map/xen/real_xenstore.h"

#include <cerrno>
#include <cstdlib>

extern "C" {
#include <xenstore.h>
}

namespace tapmap::xen {

namespace {

Status XsError(std::string_view what, const std::string& path, int err) {
  return Status::FromErrno(std::string(what) + " " + path, err);
}

}  // namespace

Result<std::unique_ptr<RealXenStore>> RealXenStore::Open(bool socket_only) {
  xs_handle* h = xs_open(socket_only ? XS_OPEN_SOCKETONLY : 0);
  if (h == nullptr) {
    int err = errno;
    const char* env = std::getenv("XENSTORED_PATH");
    return Status::Unavailable(std::string("cannot connect to xenstored") +
                               (env != nullptr ? std::string(" at ") + env : std::string()) + ": " +
                               Status::FromErrno("xs_open", err).message());
  }
  int fd = xs_fileno(h);
  if (fd < 0) {
    int err = errno;
    xs_close(h);
    return Status::FromErrno("xs_fileno", err);
  }
  return std::unique_ptr<RealXenStore>(new RealXenStore(h, fd));
}

RealXenStore::~RealXenStore() { xs_close(handle_); }

Result<std::string> RealXenStore::Read(TransactionId tx, const std::string& path) {
  unsigned int len = 0;
  void* data = xs_read(handle_, tx, path.c_str(), &len);
  if (data == nullptr) {
    int err = errno;
    if (err == ENOENT) return Status::NotFound("xenstore node " + path + " does not exist");
    return XsError("xenstore read", path, err);
  }
  std::string value(static_cast<const char*>(data), len);
  free(data);
  return value;
}

Result<std::vector<std::string>> RealXenStore::Directory(TransactionId tx, const std::string& path) {
  unsigned int num = 0;
  char** entries = xs_directory(handle_, tx, path.c_str(), &num);
  if (entries == nullptr) {
    int err = errno;
    if (err == ENOENT) return Status::NotFound("xenstore node " + path + " does not exist");
    // An existing node without children yields NULL with num 0 in some versions.
    if (num == 0 && err == 0) return std::vector<std::string>{};
    return XsError("xenstore directory", path, err);
  }
  std::vector<std::string> names(entries, entries + num);
  free(entries);
  return names;
}

Status RealXenStore::Write(TransactionId tx, const std::string& path, std::string_view value) {
  if (!xs_write(handle_, tx, path.c_str(), value.data(), static_cast<unsigned int>(value.size()))) {
    return XsError("xenstore write", path, errno);
  }
  return Status::Ok();
}

Status RealXenStore::Mkdir(TransactionId tx, const std::string& path) {
  if (!xs_mkdir(handle_, tx, path.c_str())) return XsError("xenstore mkdir", path, errno);
  return Status::Ok();
}

Status RealXenStore::Remove(TransactionId tx, const std::string& path) {
  if (!xs_rm(handle_, tx, path.c_str()) && errno != ENOENT) {
    return XsError("xenstore rm", path, errno);
  }
  return Status::Ok();
}

Status RealXenStore::SetPermissions(TransactionId tx, const std::string& path,
                                    const std::vector<XenStorePermission>& perms) {
  if (perms.empty()) return Status::InvalidArgument("empty permission list for " + path);
  std::vector<xs_permissions> list(perms.size());
  for (size_t i = 0; i < perms.size(); ++i) {
    list[i].id = perms[i].domid;
    list[i].perms = static_cast<unsigned int>(perms[i].access);
  }
  if (!xs_set_permissions(handle_, tx, path.c_str(), list.data(),
                          static_cast<unsigned int>(list.size()))) {
    return XsError("xenstore set-perms", path, errno);
  }
  return Status::Ok();
}

Result<TransactionId> RealXenStore::StartTransaction() {
  xs_transaction_t t = xs_transaction_start(handle_);
  if (t == XBT_NULL) return Status::FromErrno("xenstore transaction start", errno);
  return TransactionId{t};
}

Status RealXenStore::EndTransaction(TransactionId tx, bool abort) {
  if (!xs_transaction_end(handle_, tx, abort)) {
    int err = errno;
    if (err == EAGAIN && !abort) return Status::Aborted("transaction conflict");
    return Status::FromErrno("xenstore transaction end", err);
  }
  return Status::Ok();
}

Status RealXenStore::Watch(const std::string& path, const std::string& token) {
  if (!xs_watch(handle_, path.c_str(), token.c_str())) return XsError("xenstore watch", path, errno);
  return Status::Ok();
}

Status RealXenStore::Unwatch(const std::string& path, const std::string& token) {
  if (!xs_unwatch(handle_, path.c_str(), token.c_str())) {
    return XsError("xenstore unwatch", path, errno);
  }
  return Status::Ok();
}

std::vector<WatchEvent> RealXenStore::TakeWatchEvents() {
  std::vector<WatchEvent> events;
  for (;;) {
    char** vec = xs_check_watch(handle_);
    if (vec == nullptr) break;  // EAGAIN: nothing queued (or connection lost)
    events.push_back(WatchEvent{vec[XS_WATCH_PATH], vec[XS_WATCH_TOKEN]});
    free(vec);
  }
  return events;
}

}  // namespace tapmap::xen
