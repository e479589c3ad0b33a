#include "tapdisk-map/nbd/connection.h"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/post.hpp>

namespace tapmap::nbd {

namespace asio = boost::asio;

Connection::Connection(Stream stream, ExportCatalog& catalog, ConnectionOptions options, Logger log,
                       std::function<void()> on_end)
    : executor_(stream.get_executor()),
      stream_(std::move(stream)),
      catalog_(catalog),
      options_(options),
      log_(std::move(log)),
      on_end_(std::move(on_end)),
      deadline_(executor_) {}

void Connection::Start() {
  asio::co_spawn(
      executor_,
      [self = shared_from_this()]() -> asio::awaitable<void> { co_await self->Serve(); },
      asio::detached);
}

void Connection::Stop() {
  asio::post(executor_, [self = shared_from_this()]() {
    if (self->stopped_) return;
    self->stopped_ = true;
    if (self->transmission_) {
      self->transmission_->Stop();
    } else {
      boost::system::error_code ec;
      self->stream_.close(ec);  // cuts the handshake
    }
  });
}

void Connection::WarnFailure(const std::string& what) {
  uint64_t suppressed = 0;
  if (options_.failure_log_limiter && !options_.failure_log_limiter->Allow(&suppressed)) return;
  if (suppressed > 0) {
    log_.Warnf("%s (%llu similar not logged: rate limit)", what.c_str(), static_cast<unsigned long long>(suppressed));
  } else {
    log_.Warnf("%s", what.c_str());
  }
}

std::string Connection::volume() const {
  std::lock_guard<std::mutex> lock(volume_mu_);
  return volume_;
}

asio::awaitable<void> Connection::Serve() {
  deadline_.expires_after(options_.handshake_timeout);
  deadline_.async_wait([self = shared_from_this()](boost::system::error_code ec) {
    if (ec || self->transmission_) return;
    self->WarnFailure("handshake not finished within " + std::to_string(self->options_.handshake_timeout.count()) +
                      " ms: closing");
    boost::system::error_code ignored;
    self->stream_.close(ignored);
  });
  Result<NegotiatedExport> negotiated = co_await Negotiate(stream_, catalog_, options_.handshake, log_);
  deadline_.cancel();
  negotiating_ = false;
  if (!negotiated.ok()) {
    // The status may quote what the client sent: made printable before it is logged.
    std::string why = PrintableText(negotiated.status().ToString(), 1024);
    if (negotiated.status().code() == StatusCode::kAborted) {
      log_.Debugf("negotiation ended: %s", why.c_str());
    } else {
      WarnFailure("negotiation failed: " + why);
    }
    boost::system::error_code ec;
    stream_.close(ec);
    on_end_();
    co_return;
  }
  {
    std::lock_guard<std::mutex> lock(volume_mu_);
    volume_ = negotiated->name;
  }
  Logger tx_log = log_.WithContext("volume", negotiated->name);
  tx_log.Infof("serving export %s (%s replies%s, %s, %s)", QuotedExportName(negotiated->name).c_str(),
               negotiated->structured_replies ? "structured" : "simple",
               negotiated->base_allocation ? ", base:allocation" : "",
               negotiated->device->read_only() ? "read-only" : "read-write",
               stream_.tls() ? stream_.TlsDescription().c_str() : "no TLS");
  transmission_ = std::make_shared<Transmission>(std::move(stream_), std::move(negotiated->device),
                                                 negotiated->structured_replies,
                                                 options_.transmission, tx_log, options_.payload_buffers,
                                                 options_.reply_backlog);
  if (negotiated->base_allocation) transmission_->EnableBaseAllocation();
  if (!negotiated->changed_since.empty()) transmission_->EnableChangedSince(negotiated->changed_since);
  if (stopped_) transmission_->Stop();
  Status status = co_await transmission_->Run();
  const TransmissionCounters& c = transmission_->counters();
  tx_log.Infof("closed: %s (%llu requests, %llu errors, %llu bytes read, %llu bytes written)",
               status.ToString().c_str(), static_cast<unsigned long long>(c.requests),
               static_cast<unsigned long long>(c.errors), static_cast<unsigned long long>(c.bytes_read),
               static_cast<unsigned long long>(c.bytes_written));
  transmission_.reset();  // releases the device
  {
    std::lock_guard<std::mutex> lock(volume_mu_);
    volume_.clear();
  }
  on_end_();
}

}  // namespace tapmap::nbd
