// Status: the result of an operation that can fail, carrying a code and a message
// with context (modelled on leveldb::Status). Functions that can fail for reasons a
// caller should handle return Status or Result<T>; programming errors throw.
//
// The same codes travel over the mapping protocol: a server-side error is raised as a
// Cap'n Proto exception whose description is "<code-name>: <message>" (see
// ToWireText/FromWireText), so a client gets back the same Status the server made.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

namespace tapmap {

enum class StatusCode : uint8_t {
  kOk = 0,
  kInvalidArgument,  // the caller passed a bad value; nothing was changed
  kNotFound,         // a named thing does not exist
  kAlreadyExists,    // a named thing exists already
  kBusy,             // held by someone else (e.g. the rw lease of a volume)
  kReadOnly,         // a write to something read-only
  kNoSpace,          // the pool has no free block left
  kIoError,          // the operating system reported an I/O error
  kCorruption,       // on-disk or wire data violates its format
  kUnavailable,      // a peer or device is not reachable (may succeed later)
  kPermissionDenied, // authentication or authorisation failed
  kNotSupported,     // a valid request this implementation does not do
  kAborted,          // cancelled: shutdown, lease revoked, connection lost
  kInternal,         // an invariant broke: a bug
};

// Short stable name of a code ("not-found"), used in logs, JSON and on the wire.
std::string_view StatusCodeName(StatusCode code);
// Inverse of StatusCodeName; nullopt for an unknown name.
std::optional<StatusCode> StatusCodeFromName(std::string_view name);

class [[nodiscard]] Status {
 public:
  Status() = default;  // OK
  Status(StatusCode code, std::string message) : code_(code), message_(std::move(message)) {}

  static Status Ok() { return Status(); }
  static Status InvalidArgument(std::string m) { return {StatusCode::kInvalidArgument, std::move(m)}; }
  static Status NotFound(std::string m) { return {StatusCode::kNotFound, std::move(m)}; }
  static Status AlreadyExists(std::string m) { return {StatusCode::kAlreadyExists, std::move(m)}; }
  static Status Busy(std::string m) { return {StatusCode::kBusy, std::move(m)}; }
  static Status ReadOnly(std::string m) { return {StatusCode::kReadOnly, std::move(m)}; }
  static Status NoSpace(std::string m) { return {StatusCode::kNoSpace, std::move(m)}; }
  static Status IoError(std::string m) { return {StatusCode::kIoError, std::move(m)}; }
  static Status Corruption(std::string m) { return {StatusCode::kCorruption, std::move(m)}; }
  static Status Unavailable(std::string m) { return {StatusCode::kUnavailable, std::move(m)}; }
  static Status PermissionDenied(std::string m) { return {StatusCode::kPermissionDenied, std::move(m)}; }
  static Status NotSupported(std::string m) { return {StatusCode::kNotSupported, std::move(m)}; }
  static Status Aborted(std::string m) { return {StatusCode::kAborted, std::move(m)}; }
  static Status Internal(std::string m) { return {StatusCode::kInternal, std::move(m)}; }
  // An I/O error from errno, e.g. Errno("pread pool", errno) -> "pread pool: Input/output error".
  static Status FromErrno(std::string_view context, int err);

  bool ok() const { return code_ == StatusCode::kOk; }
  StatusCode code() const { return code_; }
  const std::string& message() const { return message_; }

  // "not-found: volume 'a' does not exist"; "ok" for OK.
  std::string ToString() const;
  // Returns a copy whose message is prefixed with `context` ("open pool: ...").
  Status WithContext(std::string_view context) const;

  // Wire form used inside Cap'n Proto exception descriptions. FromWireText accepts
  // any text: one without a known "<code-name>: " prefix becomes kUnavailable if
  // `fallback_unavailable`, else kInternal, with the whole text as message.
  std::string ToWireText() const { return ToString(); }
  static Status FromWireText(std::string_view text, bool fallback_unavailable = false);

  bool operator==(const Status& other) const = default;

 private:
  StatusCode code_ = StatusCode::kOk;
  std::string message_;
};

// A value or the Status explaining why there is none.
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}              // NOLINT: implicit by design
  Result(Status status) : v_(std::move(status)) {}       // NOLINT: must not be OK

  bool ok() const { return std::holds_alternative<T>(v_); }
  const Status& status() const {
    static const Status kOk;
    return ok() ? kOk : std::get<Status>(v_);
  }
  T& value() & { return std::get<T>(v_); }
  const T& value() const& { return std::get<T>(v_); }
  T&& value() && { return std::get<T>(std::move(v_)); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T&& operator*() && { return std::move(*this).value(); }

 private:
  std::variant<T, Status> v_;
};

// Thrown where an error cannot be returned as a value (constructors, callbacks deep in
// a library). Carries a full Status.
class StatusError : public std::exception {
 public:
  explicit StatusError(Status status) : status_(std::move(status)), what_(status_.ToString()) {}
  const Status& status() const { return status_; }
  const char* what() const noexcept override { return what_.c_str(); }

 private:
  Status status_;
  std::string what_;
};

}  // namespace tapmap

// Evaluates `expr` (a Status); returns it from the enclosing function if not OK.
#define TAPMAP_RETURN_IF_ERROR(expr)        \
  do {                                      \
    ::tapmap::Status _tapmap_s = (expr);    \
    if (!_tapmap_s.ok()) return _tapmap_s;  \
  } while (0)
