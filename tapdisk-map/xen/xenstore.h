// XenStore: the xenstore operations a backend needs (one side of the Xen seam).
//
// Implemented by RealXenStore (libxenstore; against /dev/xen/xenbus on a Xen host, or
// against a xenstored unix socket — the tests run the real C xenstored). Nothing above
// this interface knows which daemon it talks to.
//
// Paths are absolute ("/local/domain/0/backend/vbd/1/51712/state"). Values are byte
// strings (xenstore values are not NUL-terminated on the wire).
//
// Threading: every method is thread-safe.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace tapmap::xen {

// A xenstore transaction id; kNoTransaction means "outside any transaction".
using TransactionId = uint32_t;
inline constexpr TransactionId kNoTransaction = 0;

// One entry of a node's access list. The first entry names the owner and the access
// everyone else not listed gets; further entries grant `domid` the given access.
struct XenStorePermission {
  enum Access : uint8_t { kNone = 0, kRead = 1, kWrite = 2, kBoth = 3 };
  uint32_t domid = 0;
  Access access = kNone;
};

// A fired watch: the path that changed (or was removed) and the registering token.
struct WatchEvent {
  std::string path;
  std::string token;
};

class XenStore {
 public:
  virtual ~XenStore() = default;

  // Reads a node. kNotFound if it does not exist; other failures kIoError.
  virtual Result<std::string> Read(TransactionId tx, const std::string& path) = 0;
  // Lists the children names of a node (empty vector if it has none). kNotFound if
  // the node does not exist.
  virtual Result<std::vector<std::string>> Directory(TransactionId tx, const std::string& path) = 0;
  // Creates or overwrites a node (parents are created as needed).
  virtual Status Write(TransactionId tx, const std::string& path, std::string_view value) = 0;
  // Creates an empty node if absent (no-op if it exists).
  virtual Status Mkdir(TransactionId tx, const std::string& path) = 0;
  // Removes a node and its whole subtree; OK if it does not exist.
  virtual Status Remove(TransactionId tx, const std::string& path) = 0;
  // Replaces a node's access list (must not be empty).
  virtual Status SetPermissions(TransactionId tx, const std::string& path,
                                const std::vector<XenStorePermission>& perms) = 0;

  // Starts a transaction. Every started transaction must be ended with EndTransaction.
  virtual Result<TransactionId> StartTransaction() = 0;
  // Commits (abort=false) or abandons (abort=true) `tx`. A commit that conflicted with
  // another writer fails with kAborted and message "transaction conflict": nothing of
  // it was applied and the caller should redo the whole transaction (see
  // RunTransaction). Other failures: kIoError.
  virtual Status EndTransaction(TransactionId tx, bool abort) = 0;

  // Registers a watch on `path` and its subtree; events carry `token`. Xenstore fires
  // each new watch once at registration. Watching a node that does not exist is fine.
  virtual Status Watch(const std::string& path, const std::string& token) = 0;
  // Removes a watch registered with the same path and token.
  virtual Status Unwatch(const std::string& path, const std::string& token) = 0;
  // A file descriptor that becomes readable while watch events are queued; owned by
  // this object (valid for its lifetime). Usable with epoll / asio (poll it, never
  // read it directly).
  virtual int watch_fd() const = 0;
  // Returns the queued watch events without blocking (empty if none) and drains the
  // readiness of watch_fd().
  virtual std::vector<WatchEvent> TakeWatchEvents() = 0;
};

// True if `status` is the "transaction conflict" outcome of EndTransaction.
bool IsTransactionConflict(const Status& status);

// Runs `body` inside a transaction and commits it, redoing everything (a fresh
// transaction, `body` called again) when the commit reports a conflict, up to
// `max_attempts` times. If `body` returns an error the transaction is abandoned and
// that error returned. `body` must only have effects through `tx` (it may run
// several times).
Status RunTransaction(XenStore& store, const std::function<Status(TransactionId tx)>& body,
                      int max_attempts = 32);

// Reads a node as an unsigned decimal integer. kNotFound if absent,
// kInvalidArgument if it is not a number that fits in uint64_t.
Result<uint64_t> ReadUnsigned(XenStore& store, TransactionId tx, const std::string& path);

}  // namespace tapmap::xen
