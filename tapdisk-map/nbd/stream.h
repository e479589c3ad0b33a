// Stream: the byte stream one NBD connection runs on, whatever its transport (a unix
// stream socket or TCP) and whether or not the client upgraded it to TLS with
// NBD_OPT_STARTTLS: the handshake and transmission code is written once, against this
// type. It is an Asio AsyncReadStream and AsyncWriteStream (asio::async_read and
// async_write work on it); before StartTls its bytes go to the socket as they are,
// after it through an OpenSSL session (boost::asio::ssl::stream).
//
// Threading: like an Asio socket: one read and one write may be outstanding at once,
// started from the stream's executor (a strand).
#pragma once

#include <utility>  // before asio: boost 1.74's awaitable.hpp needs std::exchange

#include <boost/asio/async_result.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/generic/stream_protocol.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <chrono>
#include <memory>
#include <string>

#include "common/status.h"
#include "tapdisk-map/nbd/tls_credentials.h"

namespace tapmap::nbd {

class Stream {
 public:
  using Socket = boost::asio::generic::stream_protocol::socket;
  using TlsSocket = boost::asio::ssl::stream<Socket>;
  using executor_type = Socket::executor_type;

  // Takes the connected `socket`; its executor should be a strand. A moved-from Stream
  // may only be closed, shut down or destroyed.
  explicit Stream(Socket socket);
  Stream(Stream&&) noexcept;
  Stream& operator=(Stream&&) noexcept;
  ~Stream();

  executor_type get_executor() { return socket().get_executor(); }

  template <typename MutableBuffers, typename Token>
  auto async_read_some(const MutableBuffers& buffers, Token&& token) {
    return boost::asio::async_initiate<Token, void(boost::system::error_code, size_t)>(
        [this](auto handler, const MutableBuffers& b) {
          if (tls_) {
            tls_->async_read_some(b, std::move(handler));
          } else {
            plain_->async_read_some(b, std::move(handler));
          }
        },
        token, buffers);
  }

  template <typename ConstBuffers, typename Token>
  auto async_write_some(const ConstBuffers& buffers, Token&& token) {
    return boost::asio::async_initiate<Token, void(boost::system::error_code, size_t)>(
        [this](auto handler, const ConstBuffers& b) {
          if (tls_) {
            tls_->async_write_some(b, std::move(handler));
          } else {
            plain_->async_write_some(b, std::move(handler));
          }
        },
        token, buffers);
  }

  // Upgrades the stream to TLS as the server, with `credentials` (which must outlive
  // the stream): runs the TLS handshake. Call once, with no read or write outstanding
  // and nothing read ahead. On failure the stream is unusable (close it); the status
  // says why, as OpenSSL does.
  boost::asio::awaitable<Status> StartTls(TlsCredentials& credentials);
  bool tls() const { return tls_ != nullptr; }
  // For the log: "TLSv1.3 TLS_AES_256_GCM_SHA384, PSK identity 'alice'" or "..., client
  // certificate CN=host1"; "" without TLS.
  std::string TlsDescription() const;

  // Ends the stream: a TLS session is closed with a close_notify (waiting at most
  // `timeout` for the peer's), then the socket is closed. Call once no read or write
  // is outstanding.
  boost::asio::awaitable<void> GracefulClose(std::chrono::milliseconds timeout);

  // The socket's own operations, whatever the layer above (a shutdown of the receive
  // side makes an outstanding read fail; close cancels everything). On a moved-from
  // stream they do nothing.
  void shutdown(boost::asio::socket_base::shutdown_type what, boost::system::error_code& ec);
  void close(boost::system::error_code& ec);
  int native_handle() { return socket().native_handle(); }

 private:
  Socket& socket() { return tls_ ? tls_->next_layer() : *plain_; }

  std::unique_ptr<Socket> plain_;   // before StartTls
  std::unique_ptr<TlsSocket> tls_;  // after StartTls
  std::unique_ptr<std::string> psk_identity_;  // the client's, once proved (heap: stable)
};

}  // namespace tapmap::nbd
