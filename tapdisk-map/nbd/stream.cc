#include "tapdisk-map/nbd/stream.h"

#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

namespace tapmap::nbd {

namespace asio = boost::asio;

Stream::Stream(Socket socket) : plain_(std::make_unique<Socket>(std::move(socket))) {}
Stream::Stream(Stream&&) noexcept = default;
Stream& Stream::operator=(Stream&&) noexcept = default;
Stream::~Stream() = default;

asio::awaitable<Status> Stream::StartTls(TlsCredentials& credentials) {
  if (tls_) co_return Status::Internal("TLS started twice");
  tls_ = std::make_unique<TlsSocket>(std::move(*plain_), credentials.context());
  plain_.reset();
  psk_identity_ = std::make_unique<std::string>();
  TlsCredentials::RecordPskIdentity(tls_->native_handle(), psk_identity_.get());
  boost::system::error_code ec;
  co_await tls_->async_handshake(asio::ssl::stream_base::server, asio::redirect_error(asio::use_awaitable, ec));
  if (ec) co_return Status::PermissionDenied("TLS handshake failed: " + ec.message());
  co_return Status::Ok();
}

std::string Stream::TlsDescription() const {
  if (!tls_) return "";
  SSL* ssl = const_cast<TlsSocket&>(*tls_).native_handle();
  std::string text = std::string(SSL_get_version(ssl)) + " " + SSL_CIPHER_get_name(SSL_get_current_cipher(ssl));
  if (psk_identity_ != nullptr && !psk_identity_->empty()) text += ", PSK identity '" + *psk_identity_ + "'";
  if (X509* peer = SSL_get1_peer_certificate(ssl); peer != nullptr) {
    char subject[256];
    X509_NAME_oneline(X509_get_subject_name(peer), subject, sizeof(subject));
    text += ", client certificate " + std::string(subject);
    X509_free(peer);
  }
  return text;
}

asio::awaitable<void> Stream::GracefulClose(std::chrono::milliseconds timeout) {
  boost::system::error_code ec;
  if (tls_) {
    // close_notify, then the peer's; a peer that never answers is cut at the deadline.
    // The timer's handler runs on this strand: `done` tells it the close is over.
    auto done = std::make_shared<bool>(false);
    asio::steady_timer deadline(get_executor(), timeout);
    deadline.async_wait([this, done](boost::system::error_code wait_ec) {
      if (wait_ec || *done) return;
      boost::system::error_code ignored;
      socket().close(ignored);
    });
    co_await tls_->async_shutdown(asio::redirect_error(asio::use_awaitable, ec));
    *done = true;
    deadline.cancel();
  }
  socket().shutdown(Socket::shutdown_both, ec);
  socket().close(ec);
}

void Stream::shutdown(asio::socket_base::shutdown_type what, boost::system::error_code& ec) {
  if (plain_ || tls_) socket().shutdown(what, ec);
}

void Stream::close(boost::system::error_code& ec) {
  if (plain_ || tls_) socket().close(ec);
}

}  // namespace tapmap::nbd
