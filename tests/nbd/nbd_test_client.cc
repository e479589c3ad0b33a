#include "tests/nbd/nbd_test_client.h"

#include <sys/socket.h>
#include <sys/time.h>

#include <cerrno>
#include <stdexcept>

namespace tapmap::nbd::testing {

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
  uint8_t greeting[kGreetingSize];
  if (!ReadExact(greeting, sizeof(greeting))) return false;
  if (GetBe64(greeting) != kInitMagic || GetBe64(greeting + 8) != kOptionMagic) return false;
  *flags = GetBe16(greeting + 16);
  return true;
}

void NbdTestClient::SendClientFlags(uint32_t flags) {
  uint8_t bytes[4];
  PutBe32(bytes, flags);
  WriteRaw(bytes, 4);
}

void NbdTestClient::SendOption(uint32_t option, const std::vector<uint8_t>& data) {
  auto header = EncodeOptionHeader({kOptionMagic, option, static_cast<uint32_t>(data.size())});
  WriteRaw(header.data(), header.size());
  if (!data.empty()) WriteRaw(data.data(), data.size());
}

std::optional<NbdTestClient::OptionReply> NbdTestClient::ReadOptionReply() {
  uint8_t header[kOptionReplyHeaderSize];
  if (!ReadExact(header, sizeof(header))) return std::nullopt;
  if (GetBe64(header) != kOptionReplyMagic) throw std::runtime_error("bad option reply magic");
  OptionReply reply;
  reply.option = GetBe32(header + 8);
  reply.type = GetBe32(header + 12);
  reply.data.resize(GetBe32(header + 16));
  if (!reply.data.empty() && !ReadExact(reply.data.data(), reply.data.size())) return std::nullopt;
  return reply;
}

std::vector<uint8_t> NbdTestClient::GoPayload(const std::string& name, std::vector<uint16_t> items) {
  std::vector<uint8_t> data(4 + name.size() + 2 + 2 * items.size());
  PutBe32(data.data(), static_cast<uint32_t>(name.size()));
  std::copy(name.begin(), name.end(), data.begin() + 4);
  PutBe16(data.data() + 4 + name.size(), static_cast<uint16_t>(items.size()));
  for (size_t i = 0; i < items.size(); ++i) PutBe16(data.data() + 6 + name.size() + 2 * i, items[i]);
  return data;
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
    if (reply->data.size() >= 2 && GetBe16(reply->data.data()) == kInfoExport && reply->data.size() == 12) {
      *size = GetBe64(reply->data.data() + 2);
      *flags = GetBe16(reply->data.data() + 10);
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
  uint8_t header[kSimpleReplySize];
  if (!ReadExact(header, sizeof(header))) return std::nullopt;
  if (GetBe32(header) != kSimpleReplyMagic) throw std::runtime_error("bad simple reply magic");
  Reply reply;
  reply.error = GetBe32(header + 4);
  reply.handle = GetBe64(header + 8);
  if (reply.error == 0 && read_length > 0) {
    reply.data.resize(read_length);
    if (!ReadExact(reply.data.data(), read_length)) return std::nullopt;
  }
  return reply;
}

std::optional<NbdTestClient::Reply> NbdTestClient::ReadStructuredReply() {
  uint8_t header[kStructuredReplyHeaderSize];
  if (!ReadExact(header, sizeof(header))) return std::nullopt;
  if (GetBe32(header) != kStructuredReplyMagic) throw std::runtime_error("bad structured reply magic");
  Reply reply;
  uint16_t type = GetBe16(header + 6);
  reply.handle = GetBe64(header + 8);
  std::vector<uint8_t> payload(GetBe32(header + 16));
  if (!payload.empty() && !ReadExact(payload.data(), payload.size())) return std::nullopt;
  if (type == kReplyTypeOffsetData) {
    reply.data.assign(payload.begin() + 8, payload.end());
  } else if (type == kReplyTypeError) {
    reply.error = GetBe32(payload.data());
  }
  return reply;
}

}  // namespace tapmap::nbd::testing
