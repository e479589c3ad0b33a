#include "xenstore-tools/cli/control_client.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <cerrno>
#include <cstring>

namespace tapmap::cli {
namespace {

constexpr size_t kMaxLine = 64 * 1024;  // PROTOCOL.md: lines are at most 64 KiB

}  // namespace

Result<ControlClient> ControlClient::Connect(const std::string& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof(addr.sun_path)) {
    return Status::InvalidArgument("control socket path '" + path + "' is empty or too long");
  }
  std::memcpy(addr.sun_path, path.data(), path.size());
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd) return Status::FromErrno("socket", errno);
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    int err = errno;
    std::string what = "cannot reach tapdisk-map at " + path + ": " + std::strerror(err);
    if (err == EACCES || err == EPERM) {
      return Status::PermissionDenied(what + " (run as root)");
    }
    return Status::Unavailable(what + " (is tapdisk-map running?)");
  }
  return ControlClient(std::move(fd), path);
}

Result<nlohmann::json> ControlClient::Call(const nlohmann::json& request,
                                           std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  std::string line = request.dump() + "\n";
  size_t sent = 0;
  while (sent < line.size()) {
    ssize_t n = ::send(fd_.get(), line.data() + sent, line.size() - sent, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0)
      return Status::Unavailable("sending to tapdisk-map: " + std::string(std::strerror(errno)));
    sent += static_cast<size_t>(n);
  }

  size_t newline;
  while ((newline = buffer_.find('\n')) == std::string::npos) {
    if (buffer_.size() > kMaxLine)
      return Status::Corruption("tapdisk-map sent a line longer than 64 KiB");
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      return Status::Unavailable("no answer from tapdisk-map (" + path_ + ") within " +
                                 std::to_string(timeout.count() / 1000) + "s");
    }
    pollfd pfd{fd_.get(), POLLIN, 0};
    int r = ::poll(&pfd, 1, static_cast<int>(std::min<int64_t>(left.count(), 1000)));
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return Status::FromErrno("poll control socket", errno);
    if (r == 0) continue;
    char buf[4096];
    ssize_t n = ::recv(fd_.get(), buf, sizeof(buf), 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0)
      return Status::Unavailable("reading from tapdisk-map: " + std::string(std::strerror(errno)));
    if (n == 0) return Status::Unavailable("tapdisk-map closed the control connection");
    buffer_.append(buf, static_cast<size_t>(n));
  }
  std::string response = buffer_.substr(0, newline);
  buffer_.erase(0, newline + 1);

  nlohmann::json doc = nlohmann::json::parse(response, nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded() || !doc.is_object() || !doc.contains("ok") || !doc["ok"].is_boolean()) {
    return Status::Corruption("tapdisk-map sent a malformed response: " + response.substr(0, 200));
  }
  if (doc["ok"].get<bool>()) {
    doc.erase("ok");
    return doc;
  }
  std::string code_name, message = "tapdisk-map reported an error";
  if (doc.contains("error") && doc["error"].is_object()) {
    const auto& e = doc["error"];
    if (e.contains("code") && e["code"].is_string()) code_name = e["code"].get<std::string>();
    if (e.contains("message") && e["message"].is_string())
      message = e["message"].get<std::string>();
  }
  auto code = StatusCodeFromName(code_name);
  if (!code || *code == StatusCode::kOk) code = StatusCode::kInternal;
  return Status(*code, message);
}

}  // namespace tapmap::cli
