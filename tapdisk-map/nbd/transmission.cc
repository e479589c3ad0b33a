#include "tapdisk-map/nbd/transmission.h"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <cstring>

#include "common/units.h"
#include "tapdisk-map/util/await_callback.h"

namespace tapmap::nbd {

namespace asio = boost::asio;

namespace {
// WRITE_ZEROES with NO_HOLE writes real zeros from one shared buffer of this size.
constexpr uint64_t kZeroChunkBytes = 1u << 20;
// Socket input buffer (request headers and the start of WRITE payloads).
constexpr size_t kInputBufferBytes = 256 * 1024;
// Replies gathered into one socket write.
constexpr size_t kMaxRepliesPerWrite = 64;

// Replaces runs of buffers smaller than this by one buffer in `*storage`.
constexpr size_t kCoalesceBelowBytes = 16 * 1024;

void CoalesceSmallBuffers(std::vector<asio::const_buffer>* buffers, std::vector<uint8_t>* storage) {
  size_t total = 0;
  for (const auto& b : *buffers) total += b.size() < kCoalesceBelowBytes ? b.size() : 0;
  storage->clear();
  storage->reserve(total);  // no reallocation below: the spans taken stay valid
  std::vector<asio::const_buffer> out;
  size_t run_start = 0;
  bool in_run = false;
  for (const auto& b : *buffers) {
    if (b.size() < kCoalesceBelowBytes) {
      if (!in_run) run_start = storage->size();
      in_run = true;
      const uint8_t* p = static_cast<const uint8_t*>(b.data());
      storage->insert(storage->end(), p, p + b.size());
      continue;
    }
    if (in_run) out.push_back(asio::buffer(storage->data() + run_start, storage->size() - run_start));
    in_run = false;
    out.push_back(b);
  }
  if (in_run) out.push_back(asio::buffer(storage->data() + run_start, storage->size() - run_start));
  buffers->swap(out);
}

void RaisePeak(std::atomic<uint64_t>& peak, uint64_t value) {
  uint64_t seen = peak.load(std::memory_order_relaxed);
  while (value > seen && !peak.compare_exchange_weak(seen, value, std::memory_order_relaxed)) {
  }
}
}  // namespace

void ReplyBacklog::Add(uint64_t reply_bytes) {
  RaisePeak(peak_replies, replies.fetch_add(1, std::memory_order_relaxed) + 1);
  RaisePeak(peak_bytes, bytes.fetch_add(reply_bytes, std::memory_order_relaxed) + reply_bytes);
}

void ReplyBacklog::Remove(uint64_t reply_bytes) {
  replies.fetch_sub(1, std::memory_order_relaxed);
  bytes.fetch_sub(reply_bytes, std::memory_order_relaxed);
}

struct Transmission::Pending {
  Request request;
  std::unique_ptr<uint8_t[]> data;  // READ buffer
  // WRITE payload, handed to the device (BlockDevice::WriteShared): received straight
  // into an O_DIRECT-aligned buffer, whole blocks of it go to the pool without a copy.
  std::shared_ptr<pool::AlignedBuffer> payload;
  uint64_t budget = 0;              // in-flight bytes reserved for `data`
  std::vector<uint8_t> chunk;       // BLOCK_STATUS: the encoded reply
  uint32_t error = 0;               // nonzero: answer with this without executing
  const char* error_message = "";
};

Transmission::Transmission(Stream stream, std::shared_ptr<engine::BlockDevice> device,
                           bool structured, TransmissionLimits limits, Logger log,
                           std::shared_ptr<pool::BufferRecycler> payload_buffers,
                           std::shared_ptr<ReplyBacklog> backlog)
    : stream_(std::move(stream)),
      device_(std::move(device)),
      structured_(structured),
      limits_(limits),
      payload_buffers_(std::move(payload_buffers)),
      backlog_(std::move(backlog)),
      log_(std::move(log)),
      error_log_limiter_(10, std::chrono::seconds(10)),
      input_(new uint8_t[kInputBufferBytes]),
      changed_(stream_.get_executor()) {}

void Transmission::Stop() {
  asio::post(stream_.get_executor(), [self = shared_from_this()]() {
    self->stopping_ = true;
    boost::system::error_code ec;
    self->stream_.shutdown(asio::socket_base::shutdown_receive, ec);
    self->changed_.Notify();
  });
}

asio::awaitable<Status> Transmission::Run() {
  auto self = shared_from_this();
  asio::co_spawn(
      stream_.get_executor(), [self]() -> asio::awaitable<void> { co_await self->WriteReplies(); },
      asio::detached);
  Status status = co_await ReadRequests();
  reading_done_ = true;
  changed_.Notify();
  while (in_flight_requests_ > 0 || !writer_done_) co_await changed_.Wait();
  if (writes_completed_ > writes_flushed_) {
    // The client went away without flushing what it wrote here: make it durable now,
    // as a disk would on an orderly close.
    Status flushed = co_await DeviceCall([this](engine::IoDone done) { device_->Flush(std::move(done)); });
    if (!flushed.ok()) log_.Warnf("flush at disconnect failed: %s", flushed.ToString().c_str());
  }
  co_await stream_.GracefulClose(std::chrono::seconds(2));
  co_return status;
}

asio::awaitable<Status> Transmission::DeviceCall(std::function<void(engine::IoDone)> start) {
  co_return co_await AwaitCallback<Status>([&](auto done) { start(std::move(done)); });
}

asio::awaitable<void> Transmission::ReserveBudget(uint64_t bytes) {
  while (held_requests_ >= limits_.max_in_flight_requests ||
         (in_flight_bytes_ > 0 && in_flight_bytes_ + bytes > limits_.max_in_flight_bytes)) {
    reader_waiting_ = true;
    if (backlog_) backlog_->readers_waiting++;
    co_await changed_.Wait();
    if (backlog_) backlog_->readers_waiting--;
    reader_waiting_ = false;
  }
  in_flight_bytes_ += bytes;
}

void Transmission::ReleaseBudget(uint64_t bytes) {
  if (bytes == 0) return;
  in_flight_bytes_ -= bytes;
  if (reader_waiting_) changed_.Notify();
}

std::pair<uint32_t, const char*> Transmission::Validate(const Request& r) const {
  uint16_t allowed_flags = 0;
  switch (static_cast<Command>(r.type)) {
    case Command::kRead: allowed_flags = structured_ ? kCmdFlagDf : 0; break;
    case Command::kWrite: allowed_flags = kCmdFlagFua; break;
    case Command::kFlush: allowed_flags = 0; break;
    case Command::kTrim: allowed_flags = kCmdFlagFua; break;
    case Command::kWriteZeroes: allowed_flags = kCmdFlagFua | kCmdFlagNoHole; break;
    case Command::kBlockStatus: allowed_flags = kCmdFlagReqOne; break;
    default: return {kErrInval, "unsupported command"};
  }
  if (r.flags & ~allowed_flags) return {kErrInval, "unsupported command flags"};
  const Command command = static_cast<Command>(r.type);
  if (command == Command::kBlockStatus && !(structured_ && (base_allocation_ || !changed_since_.empty()))) {
    return {kErrInval, "no metadata context negotiated"};
  }
  if (command == Command::kFlush) return {0, ""};
  if (r.length == 0) return {kErrInval, "zero length"};
  if (!IsAligned(r.offset, kSectorSize) || !IsAligned(r.length, kSectorSize)) {
    return {kErrInval, "offset and length must be multiples of 512"};
  }
  if (command == Command::kRead && r.length > limits_.max_request_bytes) {
    return {kErrInval, "read larger than the maximum block size"};
  }
  if (!RangeWithin(r.offset, r.length, device_->size_bytes())) {
    bool is_write = command == Command::kWrite || command == Command::kWriteZeroes;
    return {is_write ? kErrNoSpc : kErrInval, "range beyond the end of the export"};
  }
  const bool reads_only = command == Command::kRead || command == Command::kBlockStatus;
  if (!reads_only && device_->read_only()) return {kErrPerm, "export is read-only"};
  return {0, ""};
}

asio::awaitable<bool> Transmission::FillInput(size_t bytes, boost::system::error_code* ec) {
  if (input_end_ - input_begin_ >= bytes) co_return true;
  if (kInputBufferBytes - input_begin_ < bytes) {  // compact
    std::memmove(input_.get(), input_.get() + input_begin_, input_end_ - input_begin_);
    input_end_ -= input_begin_;
    input_begin_ = 0;
  }
  while (input_end_ - input_begin_ < bytes) {
    size_t n = co_await stream_.async_read_some(
        asio::buffer(input_.get() + input_end_, kInputBufferBytes - input_end_),
        asio::redirect_error(asio::use_awaitable, *ec));
    if (*ec) co_return false;
    input_end_ += n;
  }
  co_return true;
}

asio::awaitable<Status> Transmission::ReadRequests() {
  for (;;) {
    boost::system::error_code ec;
    if (!co_await FillInput(kRequestSize, &ec)) {
      bool clean = input_end_ == input_begin_ && ec == asio::error::eof;
      if (stopping_ || socket_failed_ || clean) co_return Status::Ok();
      co_return Status::Aborted("reading a request: " + ec.message());
    }
    Request request = DecodeRequest(std::span<const uint8_t, kRequestSize>(input_.get() + input_begin_, kRequestSize));
    input_begin_ += kRequestSize;
    if (request.magic != kRequestMagic) co_return Status::InvalidArgument("bad request magic");
    counters_.requests++;
    const Command command = static_cast<Command>(request.type);
    if (command == Command::kDisconnect) co_return Status::Ok();  // soft disconnect: no reply

    auto pending = std::make_shared<Pending>();
    pending->request = request;
    if (command == Command::kWrite) {
      // The payload follows whatever we think of the request; one we will not buffer
      // leaves us unable to find the next request, so the connection ends.
      if (request.length > limits_.max_request_bytes) {
        co_return Status::InvalidArgument("WRITE of " + std::to_string(request.length) +
                                          " bytes exceeds the maximum of " +
                                          std::to_string(limits_.max_request_bytes));
      }
      co_await ReserveBudget(request.length);
      pending->budget = request.length;
      pending->payload = payload_buffers_ != nullptr
                             ? payload_buffers_->Get(std::max<uint32_t>(request.length, 1))
                             : std::make_shared<pool::AlignedBuffer>(std::max<uint32_t>(request.length, 1),
                                                                     pool::AlignedBuffer::Uninitialized{});
      uint8_t* payload = pending->payload->data();
      size_t buffered = std::min<size_t>(input_end_ - input_begin_, request.length);
      std::memcpy(payload, input_.get() + input_begin_, buffered);
      input_begin_ += buffered;
      if (buffered < request.length) {
        co_await asio::async_read(stream_, asio::buffer(payload + buffered, request.length - buffered),
                                  asio::redirect_error(asio::use_awaitable, ec));
        if (ec) {
          ReleaseBudget(pending->budget);
          co_return Status::Aborted("reading a WRITE payload: " + ec.message());
        }
      }
    } else if (command == Command::kRead && Validate(request).first == 0) {
      co_await ReserveBudget(request.length);
      pending->budget = request.length;
      pending->data.reset(new uint8_t[request.length]);
    } else {
      co_await ReserveBudget(0);
    }
    // Validated after waiting: the export may have been resized meanwhile.
    std::tie(pending->error, pending->error_message) = Validate(request);
    in_flight_requests_++;
    held_requests_++;
    Start(std::move(pending));
  }
}

void Transmission::Start(std::shared_ptr<Pending> pending) {
  const Request& r = pending->request;
  const Command command = static_cast<Command>(r.type);
  const bool fua = r.flags & kCmdFlagFua;
  const bool simple = pending->error != 0 || command == Command::kRead || command == Command::kWrite ||
                      ((command == Command::kTrim || command == Command::kWriteZeroes) && !fua &&
                       !(r.flags & kCmdFlagNoHole));
  if (!simple) {
    asio::co_spawn(
        stream_.get_executor(),
        [self = shared_from_this(), pending]() -> asio::awaitable<void> { co_await self->Execute(pending); },
        asio::detached);
    return;
  }
  if (pending->error != 0) {
    Finish(pending, Status::Ok());
    return;
  }
  auto executor = stream_.get_executor();
  engine::IoDone done = [self = shared_from_this(), pending, executor](Status status) {
    asio::post(executor, [self, pending, status = std::move(status)]() mutable {
      self->Finish(pending, std::move(status));
    });
  };
  switch (command) {
    case Command::kRead:
      device_->Read(r.offset, std::span<uint8_t>(pending->data.get(), r.length), std::move(done));
      break;
    case Command::kWrite:
      device_->WriteShared(r.offset, pending->payload, r.length, fua, std::move(done));
      break;
    case Command::kTrim:
      device_->Discard(r.offset, r.length, std::move(done));
      break;
    default:  // kWriteZeroes
      device_->WriteZeroes(r.offset, r.length, std::move(done));
      break;
  }
}

asio::awaitable<Status> Transmission::WriteZeroesNoHole(uint64_t offset, uint64_t length) {
  if (!zero_chunk_) zero_chunk_ = std::make_shared<const std::vector<uint8_t>>(kZeroChunkBytes, 0);
  std::shared_ptr<const std::vector<uint8_t>> zeros = zero_chunk_;
  while (length > 0) {
    uint64_t chunk = std::min<uint64_t>(length, zeros->size());
    Status s = co_await DeviceCall([&](engine::IoDone done) {
      device_->Write(offset, std::span<const uint8_t>(zeros->data(), chunk), false, std::move(done));
    });
    if (!s.ok()) co_return s;
    offset += chunk;
    length -= chunk;
  }
  co_return Status::Ok();
}

asio::awaitable<void> Transmission::Execute(std::shared_ptr<Pending> pending) {
  const Request& r = pending->request;
  Status s;
  switch (static_cast<Command>(r.type)) {
    case Command::kFlush: {
      uint64_t covered = writes_completed_;
      s = co_await DeviceCall([&](engine::IoDone done) { device_->Flush(std::move(done)); });
      if (s.ok()) writes_flushed_ = std::max(writes_flushed_, covered);
      break;
    }
    case Command::kTrim:
      s = co_await DeviceCall([&](engine::IoDone done) { device_->Discard(r.offset, r.length, std::move(done)); });
      break;
    case Command::kWriteZeroes:
      if (r.flags & kCmdFlagNoHole) {
        s = co_await WriteZeroesNoHole(r.offset, r.length);
      } else {
        s = co_await DeviceCall([&](engine::IoDone done) { device_->WriteZeroes(r.offset, r.length, std::move(done)); });
      }
      break;
    case Command::kBlockStatus: {
      Result<std::vector<uint8_t>> chunk = co_await BlockStatusChunk(r);
      if (chunk.ok()) pending->chunk = std::move(*chunk);
      s = chunk.status();
      break;
    }
    default:
      s = Status::Internal("Execute got " + CommandName(r.type));
      break;
  }
  if (s.ok() && (r.flags & kCmdFlagFua)) {
    // TRIM / WRITE_ZEROES with FUA: make the change durable before answering.
    s = co_await DeviceCall([&](engine::IoDone done) { device_->Flush(std::move(done)); });
  }
  Finish(pending, std::move(s));
}

namespace {
// Checks a device's runs before they go on the wire (a prefix of the request, in
// nonempty runs, at most max_runs) and turns them into descriptors.
template <typename Run, typename Flags>
Result<std::vector<BlockStatusDescriptor>> Descriptors(const std::vector<Run>& runs, const Request& r, size_t max_runs,
                                                       Flags flags) {
  if (runs.empty() || runs.size() > max_runs) {
    return Status::Internal("block status answered " + std::to_string(runs.size()) + " runs");
  }
  std::vector<BlockStatusDescriptor> descriptors;
  descriptors.reserve(runs.size());
  uint64_t covered = 0;
  for (const Run& run : runs) {
    if (run.length == 0 || run.length > r.length - covered) {
      return Status::Internal("block status answered runs beyond the request");
    }
    covered += run.length;
    descriptors.push_back({static_cast<uint32_t>(run.length), flags(run)});
  }
  return descriptors;
}
}  // namespace

asio::awaitable<Result<std::vector<uint8_t>>> Transmission::BlockStatusChunk(const Request& r) {
  // REQ_ONE: exactly one descriptor, no longer than the request (the runs never are).
  const size_t max_runs = (r.flags & kCmdFlagReqOne) ? 1 : std::max<uint32_t>(limits_.max_block_status_descriptors, 1);
  std::vector<std::pair<uint32_t, std::vector<BlockStatusDescriptor>>> chunks;
  if (base_allocation_) {
    using Runs = Result<std::vector<engine::AllocationRun>>;
    Runs runs = co_await AwaitCallback<Runs>(
        [&](auto done) { device_->Allocation(r.offset, r.length, max_runs, std::move(done)); });
    if (!runs.ok()) co_return runs.status();
    auto d = Descriptors(*runs, r, max_runs,
                         [](const engine::AllocationRun& run) { return run.hole ? (kStateHole | kStateZero) : 0u; });
    if (!d.ok()) co_return d.status();
    chunks.emplace_back(kBaseAllocationContextId, std::move(*d));
  }
  if (!changed_since_.empty()) {
    using Runs = Result<std::vector<engine::ChangeRun>>;
    Runs runs = co_await AwaitCallback<Runs>([&](auto done) {
      device_->ChangedSince(changed_since_, r.offset, r.length, max_runs, std::move(done));
    });
    if (!runs.ok()) co_return runs.status();
    auto d = Descriptors(*runs, r, max_runs,
                         [](const engine::ChangeRun& run) { return run.changed ? kStateChanged : 0u; });
    if (!d.ok()) co_return d.status();
    chunks.emplace_back(kChangedSinceContextId, std::move(*d));
  }
  // One chunk per context, the last one DONE: together, one reply in the queue.
  std::vector<uint8_t> out;
  for (size_t i = 0; i < chunks.size(); ++i) {
    const uint16_t flags = i + 1 == chunks.size() ? kReplyFlagDone : 0;
    std::vector<uint8_t> chunk = EncodeBlockStatusChunk(flags, r.handle, chunks[i].first, chunks[i].second);
    out.insert(out.end(), chunk.begin(), chunk.end());
  }
  co_return out;
}

void Transmission::Finish(const std::shared_ptr<Pending>& pending, Status status) {
  const Request& r = pending->request;
  const Command command = static_cast<Command>(r.type);
  uint32_t error = pending->error;
  std::string message = pending->error_message;
  std::unique_ptr<uint8_t[]> reply_data;
  uint64_t reply_budget = 0;
  if (error == 0) {
    if (command == Command::kWrite || command == Command::kTrim || command == Command::kWriteZeroes) {
      writes_completed_++;  // attempted: a flush at disconnect is due either way
    }
    if (!status.ok()) {
      error = ErrorFromStatus(status);
      message = status.ToString();
    } else if (command == Command::kRead) {
      counters_.bytes_read += r.length;
      reply_data = std::move(pending->data);
      reply_budget = std::exchange(pending->budget, 0);
    } else if (command == Command::kWrite) {
      counters_.bytes_written += r.length;
    }
  }
  if (error != 0) {
    counters_.errors++;
    uint64_t suppressed = 0;
    if (error_log_limiter_.Allow(&suppressed)) {
      log_.Warnf("%s offset=%llu length=%u failed (errno %u): %s%s", CommandName(r.type).c_str(),
                 static_cast<unsigned long long>(r.offset), r.length, error, message.c_str(),
                 suppressed ? (" (" + std::to_string(suppressed) + " similar suppressed)").c_str() : "");
    }
  }
  ReleaseBudget(pending->budget);
  pending->budget = 0;
  std::vector<uint8_t> chunk;
  if (error == 0) chunk = std::move(pending->chunk);
  QueueReply(r, error, std::move(reply_data), reply_budget, message, std::move(chunk));
}

void Transmission::QueueReply(const Request& r, uint32_t error, std::unique_ptr<uint8_t[]> data,
                              uint64_t budget_bytes, std::string_view message, std::vector<uint8_t> chunk) {
  OutgoingReply reply;
  const bool is_read = r.type == static_cast<uint16_t>(Command::kRead);
  const bool is_block_status = r.type == static_cast<uint16_t>(Command::kBlockStatus);
  if (structured_ && (is_read || is_block_status)) {
    // One chunk per read or block status, always the last one.
    if (error == 0 && is_block_status) {
      reply.head = std::move(chunk);
    } else if (error == 0) {
      auto head = EncodeOffsetDataChunkHead(kReplyFlagDone, r.handle, r.offset, r.length);
      reply.head.assign(head.begin(), head.end());
    } else {
      reply.head = EncodeErrorChunk(kReplyFlagDone, r.handle, error, message);
    }
  } else {
    auto header = EncodeSimpleReply(error, r.handle);
    reply.head.assign(header.begin(), header.end());
  }
  if (error == 0 && is_read) {
    reply.data = std::move(data);
    reply.data_length = r.length;
  }
  // The reply's own bytes are held too until written (the read data's already are).
  in_flight_bytes_ += reply.head.size();
  reply.budget_bytes = budget_bytes + reply.head.size();
  if (backlog_) backlog_->Add(reply.size());
  replies_.push_back(std::move(reply));
  in_flight_requests_--;
  // Wake the writer if it sleeps, and the reader if it waits for a request slot or for
  // the end (Run). Signals cost a timer cancellation: only when someone waits.
  if (writer_waiting_ || reader_waiting_ || reading_done_) changed_.Notify();
}

asio::awaitable<void> Transmission::WriteReplies() {
  std::vector<OutgoingReply> batch;
  std::vector<asio::const_buffer> buffers;
  for (;;) {
    if (replies_.empty()) {
      if (reading_done_ && in_flight_requests_ == 0) break;
      writer_waiting_ = true;
      co_await changed_.Wait();
      writer_waiting_ = false;
      continue;
    }
    // Everything queued so far (bounded) goes out in one gathered write.
    batch.clear();
    buffers.clear();
    while (!replies_.empty() && batch.size() < kMaxRepliesPerWrite) {
      batch.push_back(std::move(replies_.front()));
      replies_.pop_front();
      buffers.push_back(asio::buffer(batch.back().head));
      if (batch.back().data_length > 0) buffers.push_back(asio::buffer(batch.back().data.get(), batch.back().data_length));
    }
    if (stream_.tls() && buffers.size() > 1) {
      // A TLS stream encrypts one buffer per record: small replies are gathered into
      // one buffer first, so that a batch of headers is one record, not one each.
      // (Large read data goes as it is: a copy would cost more than a record.)
      CoalesceSmallBuffers(&buffers, &tls_gather_);
    }
    if (!socket_failed_) {
      boost::system::error_code ec;
      co_await asio::async_write(stream_, buffers, asio::redirect_error(asio::use_awaitable, ec));
      if (ec) {
        socket_failed_ = true;
        log_.Infof("client connection lost while replying: %s", ec.message().c_str());
        stream_.shutdown(asio::socket_base::shutdown_both, ec);  // ends the reader too
      }
    }
    // Written (or dropped with the socket): the requests' slots and bytes are free.
    for (const OutgoingReply& reply : batch) {
      if (backlog_) backlog_->Remove(reply.size());
      ReleaseBudget(reply.budget_bytes);
    }
    held_requests_ -= static_cast<uint32_t>(batch.size());
    if (reader_waiting_) changed_.Notify();
  }
  writer_done_ = true;
  changed_.Notify();
}

}  // namespace tapmap::nbd
