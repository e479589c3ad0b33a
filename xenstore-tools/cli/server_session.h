// ServerSession: one CLI invocation's authenticated connection to mapserver, made
// from the --server, --secret-file, --host-name and --timeout settings, with every
// wait bounded by --timeout (a server that does not answer is kUnavailable, exit 3).
#pragma once

#include <kj/async-io.h>
#include <kj/timer.h>

#include <memory>

#include "protocol/connection.h"
#include "protocol/remote_status.h"
#include "xenstore-tools/cli/command.h"

namespace tapmap::cli {

class ServerSession {
 public:
  // Parses the settings (a bad --server is a usage error marked on `inv`), reads the
  // secret file and logs in. Must be used on the calling thread only.
  static Result<std::unique_ptr<ServerSession>> Open(Invocation& inv);

  ServerSession(const ServerSession&) = delete;
  ServerSession& operator=(const ServerSession&) = delete;
  ~ServerSession();

  proto::Session::Client session() { return conn_->session(); }

  // Waits for `promise` for at most --timeout; the server's error (or kUnavailable on
  // timeout / lost connection) becomes the Status.
  template <typename T>
  Result<T> Wait(kj::Promise<T> promise) {
    kj::Maybe<T> value;
    Status status =
        protocol::RunCatching([&] { value = Bounded(kj::mv(promise)).wait(io_.waitScope); });
    if (!status.ok()) return status;
    KJ_IF_MAYBE (v, value) {
      return kj::mv(*v);
    }
    return Status::Internal("promise resolved without a value");
  }

 private:
  explicit ServerSession(uint64_t timeout_ms);

  // `promise`, or kUnavailable once --timeout has passed.
  template <typename T>
  kj::Promise<T> Bounded(kj::Promise<T> promise) {
    uint64_t seconds = timeout_ms_ / 1000;
    return promise.exclusiveJoin(io_.provider->getTimer()
                                     .afterDelay(timeout_ms_ * kj::MILLISECONDS)
                                     .then([seconds]() -> kj::Promise<T> {
                                       return protocol::ToException(
                                           Status::Unavailable("no answer from mapserver within " +
                                                               std::to_string(seconds) + "s"));
                                     }));
  }

  uint64_t timeout_ms_;
  kj::AsyncIoContext io_;
  kj::Own<protocol::Connection> conn_;
};

}  // namespace tapmap::cli
