// RealXenStore: XenStore over libxenstore. On a Xen host it talks to xenstored through
// its socket or /dev/xen/xenbus; in tests it talks to a private real xenstored whose
// socket is named by the XENSTORED_PATH environment variable (read by libxenstore).
#pragma once

#include <memory>

#include "tapdisk-map/xen/xenstore.h"

struct xs_handle;

namespace tapmap::xen {

class RealXenStore : public XenStore {
 public:
  // Connects. `socket_only` restricts libxenstore to the daemon socket (never the
  // kernel xenbus device). Fails with kUnavailable naming the reason.
  static Result<std::unique_ptr<RealXenStore>> Open(bool socket_only);
  ~RealXenStore() override;

  Result<std::string> Read(TransactionId tx, const std::string& path) override;
  Result<std::vector<std::string>> Directory(TransactionId tx, const std::string& path) override;
  Status Write(TransactionId tx, const std::string& path, std::string_view value) override;
  Status Mkdir(TransactionId tx, const std::string& path) override;
  Status Remove(TransactionId tx, const std::string& path) override;
  Status SetPermissions(TransactionId tx, const std::string& path,
                        const std::vector<XenStorePermission>& perms) override;
  Result<TransactionId> StartTransaction() override;
  Status EndTransaction(TransactionId tx, bool abort) override;
  Status Watch(const std::string& path, const std::string& token) override;
  Status Unwatch(const std::string& path, const std::string& token) override;
  int watch_fd() const override { return watch_fd_; }
  std::vector<WatchEvent> TakeWatchEvents() override;

 private:
  RealXenStore(xs_handle* handle, int watch_fd) : handle_(handle), watch_fd_(watch_fd) {}
  xs_handle* const handle_;  // owned; libxenstore handles are thread-safe
  const int watch_fd_;       // owned by handle_
};

}  // namespace tapmap::xen
