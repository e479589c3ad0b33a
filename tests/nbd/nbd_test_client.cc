#include "tests/nbd/nbd_test_client.h"

#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <stdexcept>

namespace tapmap::nbd::testing {

UniqueFd ConnectUnixSocket(const std::string& path) {
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof(addr.sun_path)) return UniqueFd();
  std::memcpy(addr.sun_path, path.data(), path.size());
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) return UniqueFd();
  return fd;
}

NbdTestClient::NbdTestClient(UniqueFd fd) : fd_(std::move(fd)) {
  timeval tv{10, 0};
  ::setsockopt(fd_.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  ::setsockopt(fd_.get(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
}

void NbdTestClient::WriteRaw(const void* data, size_t size) {
  const uint8_t* p = static_cast<const uint8_t*>(data);
  while (size > 0) {
    ssize_t n = ::send(fd_.get(), p, size, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;  // the server may have closed: tests then check PeerClosed
    p += n;
    size -= static_cast<size_t>(n);
  }
}

size_t NbdTestClient::SendSome(const void* data, size_t size) {
  for (;;) {
    ssize_t n = ::send(fd_.get(), data, size, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0 && errno == EINTR) continue;
    return n < 0 ? 0 : static_cast<size_t>(n);
  }
}

bool NbdTestClient::ReadExact(void* data, size_t size) {
  uint8_t* p = static_cast<uint8_t*>(data);
  while (size > 0) {
    ssize_t n = ::recv(fd_.get(), p, size, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    p += n;
    size -= static_cast<size_t>(n);
  }
  return true;
}

bool NbdTestClient::PeerClosed() {
  uint8_t buffer[4096];
  for (;;) {
    ssize_t n = ::recv(fd_.get(), buffer, sizeof(buffer), 0);
    if (n == 0) return true;
    if (n < 0) return errno == ECONNRESET;
    // Skip whatever else the server still had to say.
  }
}

bool NbdTestClient::ReadGreeting(uint16_t* flags) {
  std::array<uint8_t, kGreetingSize> bytes;
  if (!ReadExact(bytes.data(), bytes.size())) return false;
  Greeting greeting = DecodeGreeting(bytes);
  if (greeting.init_magic != kInitMagic || greeting.option_magic != kOptionMagic) return false;
  *flags = greeting.handshake_flags;
  return true;
}

void NbdTestClient::SendClientFlags(uint32_t flags) {
  auto bytes = EncodeClientFlags(flags);
  WriteRaw(bytes.data(), bytes.size());
}

void NbdTestClient::SendOption(uint32_t option, const std::vector<uint8_t>& data) {
  auto header = EncodeOptionHeader({kOptionMagic, option, static_cast<uint32_t>(data.size())});
  WriteRaw(header.data(), header.size());
  if (!data.empty()) WriteRaw(data.data(), data.size());
}

std::optional<NbdTestClient::OptionReply> NbdTestClient::ReadOptionReply() {
  std::array<uint8_t, kOptionReplyHeaderSize> bytes;
  if (!ReadExact(bytes.data(), bytes.size())) return std::nullopt;
  OptionReplyHeader header = DecodeOptionReplyHeader(bytes);
  if (header.magic != kOptionReplyMagic) throw std::runtime_error("bad option reply magic");
  OptionReply reply;
  reply.option = header.option;
  reply.type = header.type;
  reply.data.resize(header.length);
  if (!reply.data.empty() && !ReadExact(reply.data.data(), reply.data.size())) return std::nullopt;
  return reply;
}

std::vector<uint8_t> NbdTestClient::GoPayload(const std::string& name, std::vector<uint16_t> items) {
  return EncodeInfoRequest({name, std::move(items)});
}

bool NbdTestClient::StartOptions() {
  uint16_t server_flags = 0;
  if (!ReadGreeting(&server_flags)) return false;
  SendClientFlags(kClientFlagFixedNewstyle | kClientFlagNoZeroes);
  return true;
}

std::optional<std::vector<std::string>> NbdTestClient::List() {
  SendOption(static_cast<uint32_t>(Option::kList), {});
  std::vector<std::string> names;
  for (;;) {
    auto reply = ReadOptionReply();
    if (!reply) return std::nullopt;
    if (reply->type == kRepAck) return names;
    if (reply->type != kRepServer) return std::nullopt;
    Result<std::string> name = DecodeServerReply(reply->data);
    if (!name.ok()) return std::nullopt;
    names.push_back(*name);
  }
}

uint32_t NbdTestClient::Ask(Option option, const std::string& name, uint64_t* size) {
  SendOption(static_cast<uint32_t>(option), GoPayload(name));
  for (;;) {
    auto reply = ReadOptionReply();
    if (!reply) return 0;
    if (reply->type != kRepInfo) return reply->type;
    if (Result<InfoExport> info = DecodeInfoExport(reply->data); info.ok() && size != nullptr) {
      *size = info->size_bytes;
    }
  }
}

bool NbdTestClient::Handshake(const std::string& name, bool structured, uint64_t* size, uint16_t* flags) {
  uint16_t server_flags = 0;
  if (!ReadGreeting(&server_flags)) return false;
  SendClientFlags(kClientFlagFixedNewstyle | kClientFlagNoZeroes);
  if (structured) {
    SendOption(static_cast<uint32_t>(Option::kStructuredReply), {});
    auto ack = ReadOptionReply();
    if (!ack || ack->type != kRepAck) return false;
  }
  SendOption(static_cast<uint32_t>(Option::kGo), GoPayload(name, {kInfoBlockSize}));
  for (;;) {
    auto reply = ReadOptionReply();
    if (!reply) return false;
    if (reply->type == kRepAck) return true;
    if (reply->type != kRepInfo) return false;
    if (Result<InfoExport> info = DecodeInfoExport(reply->data); info.ok()) {
      *size = info->size_bytes;
      *flags = info->transmission_flags;
    }
  }
}

void NbdTestClient::SendRequest(uint16_t type, uint16_t flags, uint64_t handle, uint64_t offset,
                                uint32_t length, const std::vector<uint8_t>& payload) {
  auto bytes = EncodeRequest({kRequestMagic, flags, type, handle, offset, length});
  WriteRaw(bytes.data(), bytes.size());
  if (!payload.empty()) WriteRaw(payload.data(), payload.size());
}

std::optional<NbdTestClient::Reply> NbdTestClient::ReadSimpleReply(uint32_t read_length) {
  std::array<uint8_t, kSimpleReplySize> bytes;
  if (!ReadExact(bytes.data(), bytes.size())) return std::nullopt;
  SimpleReply header = DecodeSimpleReply(bytes);
  if (header.magic != kSimpleReplyMagic) throw std::runtime_error("bad simple reply magic");
  Reply reply;
  reply.error = header.error;
  reply.handle = header.handle;
  if (reply.error == 0 && read_length > 0) {
    reply.data.resize(read_length);
    if (!ReadExact(reply.data.data(), read_length)) return std::nullopt;
  }
  return reply;
}

std::optional<NbdTestClient::Reply> NbdTestClient::ReadStructuredReply() {
  std::array<uint8_t, kStructuredReplyHeaderSize> bytes;
  if (!ReadExact(bytes.data(), bytes.size())) return std::nullopt;
  StructuredReplyHeader header = DecodeStructuredReplyHeader(bytes);
  if (header.magic != kStructuredReplyMagic) throw std::runtime_error("bad structured reply magic");
  Reply reply;
  reply.handle = header.handle;
  std::vector<uint8_t> payload(header.length);
  if (!payload.empty() && !ReadExact(payload.data(), payload.size())) return std::nullopt;
  if (header.type == kReplyTypeOffsetData) {
    Result<OffsetData> chunk = DecodeOffsetData(payload);
    if (!chunk.ok()) throw std::runtime_error(chunk.status().ToString());
    reply.data.assign(chunk->data.begin(), chunk->data.end());
  } else if (header.type == kReplyTypeError) {
    Result<ErrorChunk> chunk = DecodeErrorChunk(payload);
    if (!chunk.ok()) throw std::runtime_error(chunk.status().ToString());
    reply.error = chunk->error;
  } else {
    reply.data = std::move(payload);
  }
  reply.type = header.type;
  reply.flags = header.flags;
  return reply;
}

}  // namespace tapmap::nbd::testing
