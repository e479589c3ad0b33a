#include "tapdisk-map/pool/rados_pool_io.h"

#include <boost/asio/post.hpp>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <limits>
#include <mutex>
#include <set>
#include <utility>
#include <vector>

#include "common/units.h"
#include "protocol/pool_format.h"

namespace tapmap::pool {
namespace {

// State shared by the RadosPoolIo and its operations in flight. The PoolIo's
// destructor sets `closed` and waits until no librados operation is in flight; after
// that, handlers already posted see `closed` and drop their callbacks.
struct Shared {
  explicit Shared(boost::asio::io_context& io) : io(io) {}

  boost::asio::io_context& io;
  std::mutex mu;
  std::condition_variable idle;
  bool closed = false;
  size_t rados_ops_in_flight = 0;
  // Write ordering for Sync: writes are numbered as they start; a Sync waits for every
  // write numbered below `next_write` at its start.
  uint64_t next_write = 0;
  std::set<uint64_t> writes_in_flight;
  std::deque<std::pair<uint64_t, PoolDone>> syncs;  // (barrier, done), barriers ascending

  // Posts done(status) to the io_context, unless the PoolIo is gone by then. Call with
  // `mu` held.
  void PostLocked(PoolDone done, Status status, const std::shared_ptr<Shared>& self) {
    boost::asio::post(io, [self, done = std::move(done), status = std::move(status)]() {
      {
        std::lock_guard<std::mutex> lock(self->mu);
        if (self->closed) return;
      }
      done(status);
    });
  }
};

// One Read, Write or WriteV: done once all its RADOS operations are.
struct Op {
  std::shared_ptr<Shared> shared;
  PoolDone done;
  bool is_write = false;
  uint64_t write_seq = 0;
  std::mutex mu;
  size_t parts_left = 0;
  Status status;
};

// One RADOS operation: a part of an Op within one object.
struct Part {
  std::shared_ptr<Op> op;
  std::string oid;
  librados::AioCompletion* completion = nullptr;
  librados::bufferlist bl;      // write: the data; read: what RADOS returned
  uint8_t* read_into = nullptr; // read: where the caller wants `length` bytes
  size_t length = 0;
};

// Records the result of one part; the last part of an Op posts its `done` (and, for a
// write, any Sync it was holding back).
void FinishPart(std::unique_ptr<Part> part, Status status) {
  std::shared_ptr<Op> op = std::move(part->op);
  part.reset();
  bool last = false;
  {
    std::lock_guard<std::mutex> lock(op->mu);
    if (!status.ok() && op->status.ok()) op->status = std::move(status);
    last = --op->parts_left == 0;
  }
  const std::shared_ptr<Shared>& shared = op->shared;
  std::lock_guard<std::mutex> lock(shared->mu);
  if (last) {
    shared->PostLocked(std::move(op->done), op->status, shared);
    if (op->is_write) {
      shared->writes_in_flight.erase(op->write_seq);
      uint64_t oldest = shared->writes_in_flight.empty() ? std::numeric_limits<uint64_t>::max()
                                                         : *shared->writes_in_flight.begin();
      while (!shared->syncs.empty() && shared->syncs.front().first <= oldest) {
        shared->PostLocked(std::move(shared->syncs.front().second), Status::Ok(), shared);
        shared->syncs.pop_front();
      }
    }
  }
  // Last touch of the PoolIo's resources: its destructor may proceed after this.
  if (--shared->rados_ops_in_flight == 0) shared->idle.notify_all();
}

// librados completion callback (a librados thread).
void OnComplete(librados::completion_t, void* arg) {
  std::unique_ptr<Part> part(static_cast<Part*>(arg));
  int r = part->completion->get_return_value();
  part->completion->release();
  part->completion = nullptr;
  Status status;
  if (part->read_into != nullptr) {
    if (r == -ENOENT) {  // absent object: a hole
      std::memset(part->read_into, 0, part->length);
    } else if (r >= 0) {
      size_t got = std::min<size_t>(part->bl.length(), part->length);
      if (got > 0) part->bl.begin().copy(static_cast<unsigned>(got), reinterpret_cast<char*>(part->read_into));
      std::memset(part->read_into + got, 0, part->length - got);  // past the object's end
    } else {
      status = rados::RadosStatus(r, "rados read " + part->oid);
    }
  } else if (r < 0) {
    status = rados::RadosStatus(r, "rados write " + part->oid);
  }
  FinishPart(std::move(part), std::move(status));
}

class RadosPoolIo final : public PoolIo {
 public:
  RadosPoolIo(boost::asio::io_context& io, std::unique_ptr<rados::RadosCluster> cluster, RadosPoolLayout layout)
      : cluster_(std::move(cluster)), layout_(std::move(layout)), shared_(std::make_shared<Shared>(io)) {}

  ~RadosPoolIo() override {
    std::unique_lock<std::mutex> lock(shared_->mu);
    shared_->closed = true;
    shared_->syncs.clear();
    shared_->idle.wait(lock, [&] { return shared_->rados_ops_in_flight == 0; });
    // cluster_ and retired_ are shut down after this: no librados operation of ours is left.
  }

  std::string client_identity() const override {
    std::lock_guard<std::mutex> lock(cluster_mu_);
    return cluster_->rados().get_addrs();
  }

  Status RenewClient() override {
    rados::RadosOptions options;
    {
      std::lock_guard<std::mutex> lock(cluster_mu_);
      options = cluster_->options();
    }
    auto fresh = rados::RadosCluster::Connect(options);
    if (!fresh.ok()) return fresh.status().WithContext("new librados client");
    std::lock_guard<std::mutex> lock(cluster_mu_);
    // The old client may be blocklisted; its operations still in flight finish (or
    // fail) on it. It is shut down with this object (fences are rare).
    retired_.push_back(std::move(cluster_));
    cluster_ = std::shared_ptr<rados::RadosCluster>(std::move(*fresh));
    return Status::Ok();
  }

  void Read(uint64_t offset, std::span<uint8_t> buffer, PoolDone done) override {
    if (Status s = Check(offset, buffer.data(), buffer.size()); !s.ok()) return PostError(std::move(done), s);
    CountRead(buffer.size());
    Start(offset, buffer.size(), std::move(done), /*is_write=*/false,
          [&](librados::IoCtx& ioctx, Part& part, uint64_t op_offset, uint64_t object_offset) {
            part.read_into = buffer.data() + op_offset;
            return ioctx.aio_read(part.oid, part.completion, &part.bl, part.length, object_offset);
          });
  }

  void Write(uint64_t offset, std::span<const uint8_t> data, PoolDone done) override {
    WriteV(offset, {data}, std::move(done));
  }

  void WriteV(uint64_t offset, std::vector<std::span<const uint8_t>> pieces, PoolDone done) override {
    size_t total = 0;
    for (const auto& piece : pieces) {
      if (Status s = Check(offset + total, piece.data(), piece.size()); !s.ok()) {
        return PostError(std::move(done), s);
      }
      total += piece.size();
    }
    if (pieces.empty()) return PostError(std::move(done), CheckAligned(offset, nullptr, 0));
    CountWrite(total);
    Start(offset, total, std::move(done), /*is_write=*/true,
          [&](librados::IoCtx& ioctx, Part& part, uint64_t op_offset, uint64_t object_offset) {
            // Gather [op_offset, op_offset + length) of the concatenated pieces.
            uint64_t at = 0;
            for (const auto& piece : pieces) {
              uint64_t begin = std::max(at, op_offset), end = std::min(at + piece.size(), op_offset + part.length);
              if (begin < end) {
                part.bl.append(reinterpret_cast<const char*>(piece.data() + (begin - at)),
                               static_cast<unsigned>(end - begin));
              }
              at += piece.size();
            }
            return ioctx.aio_write(part.oid, part.completion, part.bl, part.length, object_offset);
          });
  }

  void Sync(PoolDone done) override {
    CountSync();
    std::lock_guard<std::mutex> lock(shared_->mu);
    uint64_t barrier = shared_->next_write;
    if (shared_->writes_in_flight.empty() || *shared_->writes_in_flight.begin() >= barrier) {
      shared_->PostLocked(std::move(done), Status::Ok(), shared_);
    } else {
      shared_->syncs.emplace_back(barrier, std::move(done));
    }
  }

  std::string_view kind() const override { return "rados"; }
  bool direct() const override { return false; }

 private:
  Status Check(uint64_t offset, const void* data, size_t length) const {
    TAPMAP_RETURN_IF_ERROR(CheckAligned(offset, data, length));
    if (offset > layout_.end_bytes || length > layout_.end_bytes - offset) {
      return Status::IoError("pool I/O past the end of the pool: offset " + std::to_string(offset) + " length " +
                             std::to_string(length) + " (pool is " + std::to_string(layout_.end_bytes) + " bytes)");
    }
    return Status::Ok();
  }

  void PostError(PoolDone done, Status status) {
    std::lock_guard<std::mutex> lock(shared_->mu);
    shared_->PostLocked(std::move(done), std::move(status), shared_);
  }

  // Splits [offset, offset + length) at object boundaries and starts one RADOS
  // operation per part with `submit(ioctx, part, offset in the op, offset in the
  // object)` on the current client, which returns librados's immediate result.
  template <typename Submit>
  void Start(uint64_t offset, uint64_t length, PoolDone done, bool is_write, Submit&& submit) {
    const uint64_t object_bytes = layout_.object_bytes;
    const uint64_t first = offset / object_bytes, last = (offset + length - 1) / object_bytes;
    std::shared_ptr<rados::RadosCluster> cluster;
    {
      std::lock_guard<std::mutex> lock(cluster_mu_);
      cluster = cluster_;
    }
    auto op = std::make_shared<Op>();
    op->shared = shared_;
    op->done = std::move(done);
    op->is_write = is_write;
    op->parts_left = last - first + 1;
    {
      std::lock_guard<std::mutex> lock(shared_->mu);
      shared_->rados_ops_in_flight += op->parts_left;
      if (is_write) {
        op->write_seq = shared_->next_write++;
        shared_->writes_in_flight.insert(op->write_seq);
      }
    }
    uint64_t at = offset;
    while (at < offset + length) {
      const uint64_t index = at / object_bytes, in_object = at % object_bytes;
      auto part = std::make_unique<Part>();
      part->op = op;
      part->oid = protocol::RadosDataObject(layout_.prefix, index);
      part->length = std::min(object_bytes - in_object, offset + length - at);
      part->completion = librados::Rados::aio_create_completion(part.get(), &OnComplete);
      const uint64_t op_offset = at - offset;
      at += part->length;
      Part* raw = part.release();  // owned by the completion callback from here
      int r = submit(cluster->ioctx(), *raw, op_offset, in_object);
      if (r < 0) {  // not started: no callback will come
        raw->completion->release();
        raw->completion = nullptr;
        std::unique_ptr<Part> failed(raw);
        std::string oid = failed->oid;
        FinishPart(std::move(failed), rados::RadosStatus(r, std::string(is_write ? "rados write " : "rados read ") + oid));
      }
    }
  }

  mutable std::mutex cluster_mu_;
  std::shared_ptr<rados::RadosCluster> cluster_;  // the client operations start on (guarded)
  std::vector<std::shared_ptr<rados::RadosCluster>> retired_;  // replaced by RenewClient (guarded)
  RadosPoolLayout layout_;
  std::shared_ptr<Shared> shared_;
};

}  // namespace

Result<std::unique_ptr<PoolIo>> CreateRadosPoolIo(boost::asio::io_context& io,
                                                  std::unique_ptr<rados::RadosCluster> cluster,
                                                  RadosPoolLayout layout) {
  if (cluster == nullptr) return Status::InvalidArgument("no RADOS cluster");
  if (!IsPowerOfTwo(layout.object_bytes) || layout.object_bytes < kDirectIoAlignment ||
      layout.object_bytes > protocol::kMaxObjectBytes) {
    return Status::InvalidArgument("bad RADOS object size " + std::to_string(layout.object_bytes));
  }
  if (layout.prefix.empty()) return Status::InvalidArgument("empty RADOS object prefix");
  return std::unique_ptr<PoolIo>(new RadosPoolIo(io, std::move(cluster), std::move(layout)));
}

}  // namespace tapmap::pool
