// NbdTestClient: a small blocking NBD client for tests, speaking raw bytes so tests
// can send well-formed and hostile messages alike. Reads time out after 10 s (a test
// fails instead of hanging).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "common/unique_fd.h"
#include "tapdisk-map/nbd/nbd_protocol.h"

namespace tapmap::nbd::testing {

// A connected unix stream socket (an invalid fd if the connect failed).
UniqueFd ConnectUnixSocket(const std::string& path);

class NbdTestClient {
 public:
  explicit NbdTestClient(UniqueFd fd);

  // Raw I/O. ReadExact returns false on EOF/timeout/error.
  void WriteRaw(const void* data, size_t size);
  bool ReadExact(void* data, size_t size);
  // Sends what the socket takes now without blocking (MSG_DONTWAIT); returns the
  // number of bytes sent (0 when the socket buffer is full or on error).
  size_t SendSome(const void* data, size_t size);
  // True if the peer closed the connection (EOF) within the timeout.
  bool PeerClosed();

  // Handshake helpers.
  bool ReadGreeting(uint16_t* flags);
  void SendClientFlags(uint32_t flags);
  void SendOption(uint32_t option, const std::vector<uint8_t>& data);
  struct OptionReply {
    uint32_t option = 0;
    uint32_t type = 0;
    std::vector<uint8_t> data;
  };
  std::optional<OptionReply> ReadOptionReply();
  static std::vector<uint8_t> GoPayload(const std::string& name, std::vector<uint16_t> items = {});
  // Reads the greeting and answers with the fixed-newstyle and no-zeroes flags.
  bool StartOptions();
  // NBD_OPT_LIST: the names listed, or nullopt if refused or the connection ended.
  std::optional<std::vector<std::string>> List();
  // NBD_OPT_INFO or NBD_OPT_GO of `name`: kRepAck or the NBD_REP_ERR_* it got (0 if
  // the connection ended); `*size` gets the export size if one was sent.
  uint32_t Ask(Option option, const std::string& name, uint64_t* size = nullptr);
  // Full fixed-newstyle handshake with NBD_OPT_GO (and STRUCTURED_REPLY if asked).
  // Returns false if any step fails; fills size and flags.
  bool Handshake(const std::string& name, bool structured, uint64_t* size, uint16_t* flags);

  // Transmission helpers.
  void SendRequest(uint16_t type, uint16_t flags, uint64_t handle, uint64_t offset, uint32_t length,
                   const std::vector<uint8_t>& payload = {});
  struct Reply {
    uint64_t handle = 0;
    uint32_t error = 0;
    // Read data (simple: caller says length; structured: chunk); the payload of any
    // other structured chunk (BLOCK_STATUS).
    std::vector<uint8_t> data;
    uint16_t type = 0;   // structured chunk type
    uint16_t flags = 0;  // structured chunk flags (kReplyFlagDone)
  };
  // Reads a simple reply; if no error and `read_length` > 0, also its data.
  std::optional<Reply> ReadSimpleReply(uint32_t read_length);
  // Reads one structured chunk (assumed DONE); OFFSET_DATA data or ERROR error value.
  std::optional<Reply> ReadStructuredReply();

 private:
  UniqueFd fd_;
};

}  // namespace tapmap::nbd::testing
