// ThreadPoolIo: PoolIo over blocking pread/pwrite/fdatasync on a few worker threads.
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <boost/asio/post.hpp>
#include <cerrno>
#include <climits>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>
#include <vector>

#include "tapdisk-map/pool/pool_io_impl.h"

namespace tapmap::pool::internal {
namespace {

class ThreadPoolIo final : public PoolIo {
 public:
  ThreadPoolIo(boost::asio::io_context& io, PoolFile file, unsigned threads)
      : io_(io), file_(std::move(file)) {
    if (threads == 0) threads = 1;
    for (unsigned i = 0; i < threads; i++) workers_.emplace_back([this] { Work(); });
  }
  ~ThreadPoolIo() override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stopping_ = true;
    }
    cv_.notify_all();
    for (auto& t : workers_) t.join();
  }

  void Read(uint64_t offset, std::span<uint8_t> buffer, PoolDone done) override {
    Status s = CheckAligned(offset, buffer.data(), buffer.size());
    if (!s.ok()) return Post(std::move(done), std::move(s));
    Enqueue([this, offset, buffer, done = std::move(done)]() mutable {
      size_t got = 0;
      Status st;
      while (got < buffer.size()) {
        ssize_t n = ::pread(file_.fd(), buffer.data() + got, buffer.size() - got, offset + got);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) { st = Status::FromErrno("pread pool at " + std::to_string(offset + got), errno); break; }
        if (n == 0) { st = Status::IoError("read past the end of the pool at " + std::to_string(offset + got)); break; }
        got += static_cast<size_t>(n);
      }
      if (st.ok()) CountRead(buffer.size());
      Post(std::move(done), std::move(st));
    });
  }

  void Write(uint64_t offset, std::span<const uint8_t> data, PoolDone done) override {
    Status s = CheckAligned(offset, data.data(), data.size());
    if (!s.ok()) return Post(std::move(done), std::move(s));
    Enqueue([this, offset, data, done = std::move(done)]() mutable {
      size_t put = 0;
      Status st;
      while (put < data.size()) {
        ssize_t n = ::pwrite(file_.fd(), data.data() + put, data.size() - put, offset + put);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) { st = Status::FromErrno("pwrite pool at " + std::to_string(offset + put), errno); break; }
        if (n == 0) { st = Status::IoError("pwrite pool made no progress"); break; }
        put += static_cast<size_t>(n);
      }
      if (st.ok()) CountWrite(data.size());
      Post(std::move(done), std::move(st));
    });
  }

  void WriteV(uint64_t offset, std::vector<std::span<const uint8_t>> pieces, PoolDone done) override {
    uint64_t total = 0;
    for (std::span<const uint8_t> p : pieces) {
      Status s = CheckAligned(offset + total, p.data(), p.size());
      if (!s.ok()) return Post(std::move(done), std::move(s));
      total += p.size();
    }
    if (pieces.empty()) return Post(std::move(done), Status::InvalidArgument("pool write of no pieces"));
    Enqueue([this, offset, total, pieces = std::move(pieces), done = std::move(done)]() mutable {
      std::vector<iovec> iov(pieces.size());
      for (size_t i = 0; i < pieces.size(); i++) {
        iov[i] = iovec{const_cast<uint8_t*>(pieces[i].data()), pieces[i].size()};
      }
      size_t first = 0;  // first iovec not yet fully written
      uint64_t put = 0;
      Status st;
      while (put < total) {
        int count = static_cast<int>(std::min<size_t>(iov.size() - first, IOV_MAX));
        ssize_t n = ::pwritev(file_.fd(), iov.data() + first, count, static_cast<off_t>(offset + put));
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) { st = Status::FromErrno("pwritev pool at " + std::to_string(offset + put), errno); break; }
        if (n == 0) { st = Status::IoError("pwritev pool made no progress"); break; }
        put += static_cast<size_t>(n);
        // Skip what was written: whole iovecs, then part of one.
        size_t left = static_cast<size_t>(n);
        while (left > 0 && left >= iov[first].iov_len) left -= iov[first++].iov_len;
        if (left > 0) {
          iov[first].iov_base = static_cast<uint8_t*>(iov[first].iov_base) + left;
          iov[first].iov_len -= left;
        }
      }
      if (st.ok()) CountWrite(total);
      Post(std::move(done), std::move(st));
    });
  }

  void Sync(PoolDone done) override {
    Enqueue([this, done = std::move(done)]() mutable {
      Status st;
      if (::fdatasync(file_.fd()) != 0) st = Status::FromErrno("fdatasync pool", errno);
      else CountSync();
      Post(std::move(done), std::move(st));
    });
  }

  std::string_view kind() const override { return "threads"; }
  bool direct() const override { return file_.direct(); }

 private:
  void Post(PoolDone done, Status s) {
    boost::asio::post(io_, [done = std::move(done), s = std::move(s)]() { done(s); });
  }
  void Enqueue(std::function<void()> job) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      jobs_.push_back(std::move(job));
    }
    cv_.notify_one();
  }
  void Work() {
    for (;;) {
      std::function<void()> job;
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [this] { return stopping_ || !jobs_.empty(); });
        if (stopping_) return;
        job = std::move(jobs_.front());
        jobs_.pop_front();
      }
      job();
    }
  }

  boost::asio::io_context& io_;
  PoolFile file_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> jobs_;
  bool stopping_ = false;
  std::vector<std::thread> workers_;
};

}  // namespace

std::unique_ptr<PoolIo> CreateThreadPoolIo(boost::asio::io_context& io, PoolFile file,
                                           unsigned threads) {
  return std::make_unique<ThreadPoolIo>(io, std::move(file), threads);
}

}  // namespace tapmap::pool::internal
