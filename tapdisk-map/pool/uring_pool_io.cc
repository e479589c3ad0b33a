// UringPoolIo: PoolIo over io_uring. Completions are signalled on an eventfd
// registered with the ring; the eventfd is watched by the asio io_context through a
// posix::stream_descriptor, so completions are reaped on io_context threads with no
// thread of our own.
#include <liburing.h>
#include <sys/eventfd.h>

#include <boost/asio/post.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <cerrno>
#include <cstring>
#include <deque>
#include <mutex>
#include <vector>

#include "tapdisk-map/pool/pool_io_impl.h"

namespace tapmap::pool::internal {
namespace {

enum class OpKind { kRead, kWrite, kSync };

// One caller operation; may take several submissions if the kernel transfers less
// than asked.
struct Op {
  OpKind kind;
  uint64_t offset;
  uint8_t* data;
  size_t length;
  size_t done_bytes = 0;
  PoolDone done;
};

// The ring and everything the eventfd handler touches. Shared with pending asio
// handlers so that it outlives them.
class UringCore : public std::enable_shared_from_this<UringCore> {
 public:
  UringCore(boost::asio::io_context& io, unsigned depth) : io_(io), watcher_(io), depth_(depth) {}
  ~UringCore() {
    if (ring_ready_) io_uring_queue_exit(&ring_);
  }

  // Sets up the ring and its completion eventfd.
  Status Init() {
    int rc = io_uring_queue_init(depth_, &ring_, 0);
    if (rc < 0) return Status::FromErrno("io_uring_queue_init", -rc);
    ring_ready_ = true;
    int efd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (efd < 0) return Status::FromErrno("eventfd", errno);
    rc = io_uring_register_eventfd(&ring_, efd);
    if (rc < 0) {
      ::close(efd);
      return Status::FromErrno("io_uring_register_eventfd", -rc);
    }
    // The descriptor owns the eventfd from here on.
    watcher_.assign(efd);
    return Status::Ok();
  }

  void Start() { ArmWatcher(); }

  // Called by the owner's destructor: stops watching and waits for the kernel to
  // finish every submitted operation (their callbacks are dropped).
  void Shutdown() {
    boost::system::error_code ignored;
    watcher_.cancel(ignored);
    std::lock_guard<std::mutex> lock(mu_);
    closing_ = true;
    overflow_.clear();
    while (in_flight_ > 0) {
      io_uring_cqe* cqe = nullptr;
      int rc = io_uring_wait_cqe(&ring_, &cqe);
      if (rc == -EINTR) continue;
      if (rc < 0) break;
      delete static_cast<Op*>(io_uring_cqe_get_data(cqe));
      io_uring_cqe_seen(&ring_, cqe);
      in_flight_--;
    }
  }

  void Submit(std::unique_ptr<Op> op) {
    std::lock_guard<std::mutex> lock(mu_);
    if (closing_) {
      PostDone(std::move(op->done), Status::Aborted("pool I/O is shutting down"));
      return;
    }
    overflow_.push_back(std::move(op));
    SubmitQueuedLocked();
  }

  void PostDone(PoolDone done, Status s) {
    boost::asio::post(io_, [done = std::move(done), s = std::move(s)]() { done(s); });
  }

  std::function<void(uint64_t)> count_read, count_write;
  std::function<void()> count_sync;

 private:

  // Moves queued operations into the submission queue while the kernel has room.
  void SubmitQueuedLocked() {
    unsigned added = 0;
    while (!overflow_.empty() && in_flight_ < depth_) {
      io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
      if (sqe == nullptr) break;
      Op* op = overflow_.front().release();
      overflow_.pop_front();
      switch (op->kind) {
        case OpKind::kRead:
          io_uring_prep_read(sqe, fd_, op->data + op->done_bytes,
                             static_cast<unsigned>(op->length - op->done_bytes),
                             op->offset + op->done_bytes);
          break;
        case OpKind::kWrite:
          io_uring_prep_write(sqe, fd_, op->data + op->done_bytes,
                              static_cast<unsigned>(op->length - op->done_bytes),
                              op->offset + op->done_bytes);
          break;
        case OpKind::kSync:
          io_uring_prep_fsync(sqe, fd_, IORING_FSYNC_DATASYNC);
          break;
      }
      io_uring_sqe_set_data(sqe, op);
      in_flight_++;
      added++;
    }
    if (added == 0) return;
    // in_flight_ <= depth_ keeps the completion queue (2 * depth_) from overflowing, so
    // submit can only fail transiently; entries left in the SQ go with the next submit.
    int rc;
    do {
      rc = io_uring_submit(&ring_);
    } while (rc == -EINTR || rc == -EAGAIN);
  }

  void ArmWatcher() {
    auto self = shared_from_this();
    watcher_.async_read_some(boost::asio::buffer(&event_count_, sizeof(event_count_)),
                             [self](const boost::system::error_code& ec, size_t) {
                               if (ec == boost::asio::error::operation_aborted) return;
                               self->Reap();
                               self->ArmWatcher();
                             });
  }

  void Reap() {
    struct Finished {
      PoolDone done;
      Status status;
    };
    std::vector<Finished> finished;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (closing_) return;
      io_uring_cqe* cqe = nullptr;
      while (io_uring_peek_cqe(&ring_, &cqe) == 0) {
        std::unique_ptr<Op> op(static_cast<Op*>(io_uring_cqe_get_data(cqe)));
        int res = cqe->res;
        io_uring_cqe_seen(&ring_, cqe);
        in_flight_--;
        Status st;
        const char* what = op->kind == OpKind::kRead ? "read" : op->kind == OpKind::kWrite ? "write" : "fdatasync";
        if (res == -EINTR || res == -EAGAIN) {
          overflow_.push_front(std::move(op));  // retry as is
          continue;
        }
        if (res < 0) {
          st = Status::FromErrno(std::string("io_uring ") + what + " pool at " +
                                     std::to_string(op->offset + op->done_bytes), -res);
        } else if (op->kind != OpKind::kSync) {
          if (res == 0) {
            st = Status::IoError(std::string(what) + " past the end of the pool at " +
                                 std::to_string(op->offset + op->done_bytes));
          } else {
            op->done_bytes += static_cast<size_t>(res);
            if (op->done_bytes < op->length) {  // short transfer: continue
              overflow_.push_front(std::move(op));
              continue;
            }
          }
        }
        if (st.ok()) {
          if (op->kind == OpKind::kRead) count_read(op->length);
          else if (op->kind == OpKind::kWrite) count_write(op->length);
          else count_sync();
        }
        finished.push_back({std::move(op->done), std::move(st)});
      }
      SubmitQueuedLocked();
    }
    for (auto& f : finished) f.done(f.status);
  }

 public:
  int fd_ = -1;

 private:
  boost::asio::io_context& io_;
  io_uring ring_{};
  bool ring_ready_ = false;
  boost::asio::posix::stream_descriptor watcher_;
  uint64_t event_count_ = 0;
  const unsigned depth_;
  std::mutex mu_;
  bool closing_ = false;
  unsigned in_flight_ = 0;
  std::deque<std::unique_ptr<Op>> overflow_;
};

class UringPoolIo final : public PoolIo {
 public:
  UringPoolIo(PoolFile file, std::shared_ptr<UringCore> core)
      : file_(std::move(file)), core_(std::move(core)) {
    core_->fd_ = file_.fd();
    core_->count_read = [this](uint64_t n) { CountRead(n); };
    core_->count_write = [this](uint64_t n) { CountWrite(n); };
    core_->count_sync = [this]() { CountSync(); };
    core_->Start();
  }
  ~UringPoolIo() override { core_->Shutdown(); }

  void Read(uint64_t offset, std::span<uint8_t> buffer, PoolDone done) override {
    Start(OpKind::kRead, offset, buffer.data(), buffer.size(), std::move(done));
  }
  void Write(uint64_t offset, std::span<const uint8_t> data, PoolDone done) override {
    Start(OpKind::kWrite, offset, const_cast<uint8_t*>(data.data()), data.size(), std::move(done));
  }
  void Sync(PoolDone done) override {
    core_->Submit(std::unique_ptr<Op>(new Op{OpKind::kSync, 0, nullptr, 0, 0, std::move(done)}));
  }
  std::string_view kind() const override { return "io_uring"; }
  bool direct() const override { return file_.direct(); }

 private:
  void Start(OpKind kind, uint64_t offset, uint8_t* data, size_t length, PoolDone done) {
    Status s = CheckAligned(offset, data, length);
    if (!s.ok()) return core_->PostDone(std::move(done), std::move(s));
    core_->Submit(std::unique_ptr<Op>(new Op{kind, offset, data, length, 0, std::move(done)}));
  }
  PoolFile file_;
  std::shared_ptr<UringCore> core_;
};

}  // namespace

Result<std::unique_ptr<PoolIo>> CreateUringPoolIo(boost::asio::io_context& io, PoolFile& file,
                                                 unsigned queue_depth) {
  if (queue_depth == 0) queue_depth = 1;
  auto core = std::make_shared<UringCore>(io, queue_depth);
  Status s = core->Init();
  if (!s.ok()) return s.WithContext("pool I/O");
  return std::unique_ptr<PoolIo>(new UringPoolIo(std::move(file), std::move(core)));
}

}  // namespace tapmap::pool::internal
