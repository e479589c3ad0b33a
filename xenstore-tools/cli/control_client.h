// ControlClient: the client side of tapdisk-map's control socket
// (tapdisk-map/control/PROTOCOL.md): one JSON request line, one JSON response line.
#pragma once

#include <chrono>
#include <string>

#include <nlohmann/json.hpp>

#include "common/status.h"
#include "common/unique_fd.h"

namespace tapmap::cli {

class ControlClient {
 public:
  // Connects to the unix socket at `path`. A missing socket or a refused connection
  // is kUnavailable ("is tapdisk-map running?"); a permission problem
  // kPermissionDenied.
  static Result<ControlClient> Connect(const std::string& path);

  ControlClient(ControlClient&&) = default;
  ControlClient& operator=(ControlClient&&) = default;

  // Sends `request` ({"op": ...}) and waits up to `timeout` for the response.
  // Returns the response object (without "ok") when ok is true; the Status named by
  // the daemon's error code and message when ok is false; kUnavailable on timeout or
  // a closed connection; kCorruption on a response that is not a JSON object with a
  // boolean "ok". Not thread-safe; one call at a time.
  Result<nlohmann::json> Call(const nlohmann::json& request, std::chrono::milliseconds timeout);

 private:
  ControlClient(UniqueFd fd, std::string path) : fd_(std::move(fd)), path_(std::move(path)) {}

  UniqueFd fd_;
  std::string path_;
  std::string buffer_;  // bytes received after the last full line
};

}  // namespace tapmap::cli
