#include "tapdisk-map/xen/xenstore.h"

#include <charconv>

namespace tapmap::xen {

namespace {
constexpr std::string_view kConflictMessage = "transaction conflict";
}  // namespace

bool IsTransactionConflict(const Status& status) {
  return status.code() == StatusCode::kAborted && status.message() == kConflictMessage;
}

Status RunTransaction(XenStore& store, const std::function<Status(TransactionId tx)>& body,
                      int max_attempts) {
  for (int attempt = 1;; ++attempt) {
    Result<TransactionId> tx = store.StartTransaction();
    if (!tx.ok()) return tx.status();
    Status s = body(*tx);
    if (!s.ok()) {
      (void)store.EndTransaction(*tx, /*abort=*/true);
      return s;
    }
    s = store.EndTransaction(*tx, /*abort=*/false);
    if (!IsTransactionConflict(s) || attempt >= max_attempts) return s;
  }
}

Result<uint64_t> ReadUnsigned(XenStore& store, TransactionId tx, const std::string& path) {
  Result<std::string> text = store.Read(tx, path);
  if (!text.ok()) return text.status();
  uint64_t value = 0;
  const char* begin = text->data();
  const char* end = begin + text->size();
  auto [ptr, ec] = std::from_chars(begin, end, value, 10);
  if (text->empty() || ec != std::errc() || ptr != end) {
    return Status::InvalidArgument("xenstore node " + path + " is not an unsigned number: '" +
                                   text->substr(0, 32) + "'");
  }
  return value;
}

}  // namespace tapmap::xen
