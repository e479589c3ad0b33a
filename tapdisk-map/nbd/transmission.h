// Transmission: the request/reply phase of one NBD connection after the handshake.
//
// Requests are decoded and validated here, once, at the trust boundary: bad magic or a
// WRITE payload larger than the limit end the connection (the stream cannot be
// resynchronised); everything else that is wrong (unknown command or flags, unaligned
// or out-of-range offsets, writes to a read-only export) is answered with an NBD error
// and the connection goes on. Valid requests go to the BlockDevice concurrently: many
// requests are in flight at once and replies go out in completion order, matched by
// handle. Memory per connection is bounded by TransmissionLimits: a request holds one
// of max_in_flight_requests slots and its payload, read data and reply bytes count
// against max_in_flight_bytes from the moment it is read off the socket until its
// reply has been written to the socket (not merely queued), and no request is read
// while the slots or bytes are taken. A client that does not read its replies thus
// stalls its own requests instead of growing the server.
//
// Threading: all state lives on one strand; device completions are posted to it.
#pragma once

#include <utility>  // before asio: boost 1.74's awaitable.hpp needs std::exchange

#include <boost/asio/awaitable.hpp>
#include <boost/asio/strand.hpp>
#include <atomic>
#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <vector>

#include "common/logging.h"
#include "common/status.h"
#include "tapdisk-map/engine/block_device.h"
#include "tapdisk-map/nbd/nbd_protocol.h"
#include "tapdisk-map/nbd/stream.h"
#include "tapdisk-map/pool/buffer_recycler.h"
#include "tapdisk-map/util/async_signal.h"

namespace tapmap::nbd {

struct TransmissionLimits {
  uint32_t max_request_bytes = 32u << 20;    // largest READ/WRITE (the advertised maximum)
  // Bytes held at once: WRITE payloads, READ data and replies not yet written.
  uint64_t max_in_flight_bytes = 128u << 20;
  // Requests held at once: read off the socket and not yet answered on the socket.
  uint32_t max_in_flight_requests = 512;
  // Most descriptors in one NBD_CMD_BLOCK_STATUS reply (a fragmented range is answered
  // in part; the client asks again for the rest).
  uint32_t max_block_status_descriptors = 1024;
};

// ReplyBacklog: what the connections sharing it hold in replies not yet written to
// their sockets (a client that does not read its replies makes them pile up), for tests
// and monitoring. Shared by a server's connections (the gauges are sums); updated on
// the connections' strands, read from any thread.
struct ReplyBacklog {
  std::atomic<uint64_t> replies{0};       // replies queued or being written
  std::atomic<uint64_t> bytes{0};         // their bytes (headers, error messages, read data)
  std::atomic<uint64_t> peak_replies{0};  // the most `replies` has been
  std::atomic<uint64_t> peak_bytes{0};    // the most `bytes` has been
  std::atomic<uint64_t> readers_waiting{0};  // connections not reading requests for want of budget

  void Add(uint64_t reply_bytes);
  void Remove(uint64_t reply_bytes);
};

// Counters of one connection (for logs and tests).
struct TransmissionCounters {
  uint64_t requests = 0;
  uint64_t errors = 0;  // requests answered with an error
  uint64_t bytes_read = 0;
  uint64_t bytes_written = 0;
};

class Transmission : public std::enable_shared_from_this<Transmission> {
 public:
  // Takes the connected `stream`; `device` is the negotiated export. `structured`
  // says whether structured replies were negotiated. The stream's executor must be a
  // strand (or otherwise serialised). WRITE payloads come from `payload_buffers` if
  // set (see pool/buffer_recycler.h), else each is a fresh allocation.
  // `backlog`, if set, is kept up to date with this connection's unwritten replies.
  Transmission(Stream stream, std::shared_ptr<engine::BlockDevice> device, bool structured,
               TransmissionLimits limits, Logger log,
               std::shared_ptr<pool::BufferRecycler> payload_buffers = nullptr,
               std::shared_ptr<ReplyBacklog> backlog = nullptr);
  Transmission(const Transmission&) = delete;
  Transmission& operator=(const Transmission&) = delete;

  // Serves requests until the client disconnects (NBD_CMD_DISC or closing), a protocol
  // violation, or Stop(). Returns only when no request is in flight and every reply
  // has been sent (or the socket failed); then flushes the device if this connection
  // wrote since its last flush, and closes the socket. OK for a clean end; the
  // violation or I/O failure otherwise. Call once, on the stream's executor; the
  // object must be owned by a shared_ptr.
  boost::asio::awaitable<Status> Run();

  // base:allocation was negotiated (NegotiatedExport::base_allocation): BLOCK_STATUS
  // requests are answered from BlockDevice::Allocation, else refused with EINVAL. Call
  // before Run.
  void EnableBaseAllocation() { base_allocation_ = true; }
  // tapmap:changed-since:SNAPSHOT was negotiated: BLOCK_STATUS also answers, in a
  // second chunk, which extents changed since `snapshot` (BlockDevice::ChangedSince).
  // Call before Run.
  void EnableChangedSince(std::string snapshot) { changed_since_ = std::move(snapshot); }

  // Stops reading new requests (server shutdown); requests in flight complete and are
  // answered. Thread-safe (posts to the strand).
  void Stop();

  const TransmissionCounters& counters() const { return counters_; }

 private:
  struct Pending;
  struct OutgoingReply {
    std::vector<uint8_t> head;          // reply header (+ read chunk offset / error payload)
    std::unique_ptr<uint8_t[]> data;    // read data, may be null
    size_t data_length = 0;
    uint64_t budget_bytes = 0;          // in-flight bytes released once sent
    uint64_t size() const { return head.size() + data_length; }
  };

  boost::asio::awaitable<Status> ReadRequests();
  // Makes at least `bytes` (<= the input buffer size) readable in input_; false on
  // EOF or error (then `*ec` says which).
  boost::asio::awaitable<bool> FillInput(size_t bytes, boost::system::error_code* ec);
  boost::asio::awaitable<void> WriteReplies();
  // Starts a validated request: the common commands directly with a completion
  // callback (no coroutine per request), the multi-step ones through Execute.
  void Start(std::shared_ptr<Pending> pending);
  boost::asio::awaitable<void> Execute(std::shared_ptr<Pending> pending);
  // Common end of every request: log, release budget, queue the reply.
  void Finish(const std::shared_ptr<Pending>& pending, Status status);
  // Checks a decoded request against the export: {0, ""} if it may be executed, else
  // the NBD error and a message.
  std::pair<uint32_t, const char*> Validate(const Request& request) const;
  boost::asio::awaitable<Status> WriteZeroesNoHole(uint64_t offset, uint64_t length);
  boost::asio::awaitable<Status> DeviceCall(std::function<void(engine::IoDone)> start);
  boost::asio::awaitable<void> ReserveBudget(uint64_t bytes);
  // `chunk`, if not empty, is the whole encoded reply of a successful request whose
  // reply is neither a simple reply nor read data (BLOCK_STATUS).
  void QueueReply(const Request& request, uint32_t error, std::unique_ptr<uint8_t[]> data,
                  uint64_t budget_bytes, std::string_view message, std::vector<uint8_t> chunk = {});
  // BLOCK_STATUS: the encoded reply chunks of every negotiated context (the last one
  // flagged DONE), or the failure.
  boost::asio::awaitable<Result<std::vector<uint8_t>>> BlockStatusChunk(const Request& request);
  void ReleaseBudget(uint64_t bytes);

  Stream stream_;
  std::shared_ptr<engine::BlockDevice> device_;
  const bool structured_;
  bool base_allocation_ = false;  // set before Run
  std::string changed_since_;     // set before Run; empty: not negotiated
  const TransmissionLimits limits_;
  const std::shared_ptr<pool::BufferRecycler> payload_buffers_;  // may be null
  const std::shared_ptr<ReplyBacklog> backlog_;                   // may be null
  Logger log_;
  RateLimiter error_log_limiter_;

  // Buffered input: several requests arrive per read when the client pipelines.
  std::unique_ptr<uint8_t[]> input_;
  size_t input_begin_ = 0, input_end_ = 0;

  AsyncSignal changed_;  // in-flight count, budget, reply queue or stop state changed
  std::deque<OutgoingReply> replies_;
  uint64_t in_flight_bytes_ = 0;     // payloads, read data, unwritten replies
  uint32_t in_flight_requests_ = 0;  // started, not yet answered (reply not queued)
  uint32_t held_requests_ = 0;       // read off the socket, reply not yet written
  bool stopping_ = false;
  bool reader_waiting_ = false;  // ReadRequests waits for budget or a request slot
  bool writer_waiting_ = false;  // WriteReplies waits for replies
  bool reading_done_ = false;
  bool socket_failed_ = false;
  bool writer_done_ = false;
  uint64_t writes_completed_ = 0;  // WRITE/TRIM/WRITE_ZEROES executed
  uint64_t writes_flushed_ = 0;    // of those, how many a completed FLUSH covers
  std::shared_ptr<const std::vector<uint8_t>> zero_chunk_;  // for WRITE_ZEROES + NO_HOLE
  std::vector<uint8_t> tls_gather_;  // small replies gathered for one TLS record
  TransmissionCounters counters_;
};

}  // namespace tapmap::nbd
