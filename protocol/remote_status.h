// Conversion between tapmap::Status and the exceptions that carry errors over Cap'n
// Proto RPC. The server raises every error as
//     kj::Exception(FAILED, "<code-name>: <message>")      (see ToException)
// so that the client recovers the very Status the server made (StatusFromException).
#pragma once

#include <kj/exception.h>

#include "common/status.h"

namespace tapmap::protocol {

// The Status carried by `e`. A description with a known "<code>: " prefix keeps its
// code (even behind Cap'n Proto's "remote exception: " prefix). Otherwise a
// DISCONNECTED or OVERLOADED exception (connection lost, peer gone) becomes
// kUnavailable, and anything else kInternal with the whole description as message.
Status StatusFromException(const kj::Exception& e);

// An exception carrying `status` (which must not be OK) in wire form; type FAILED,
// or DISCONNECTED for kUnavailable so that KJ treats it as a connection problem.
kj::Exception ToException(const Status& status);

// Runs `fn` and converts a thrown kj::Exception (or StatusError) into a Status.
// For synchronous callers of promise.wait(): RunCatching([&] { p.wait(ws); }).
template <typename Fn>
Status RunCatching(Fn&& fn) {
  Status result;
  KJ_IF_MAYBE (e, kj::runCatchingExceptions([&] {
                 try {
                   fn();
                 } catch (const StatusError& se) {
                   result = se.status();
                 }
               })) {
    return StatusFromException(*e);
  }
  return result;
}

}  // namespace tapmap::protocol
