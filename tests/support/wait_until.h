// WaitUntil: the one bounded poll of the tests. A test that waits for a condition
// another thread brings about (a connection ended, a counter reached, a device
// released) calls WaitUntil(pred) and checks its result, instead of sleeping a fixed
// time or copying a polling loop. The timeout is a generous bound for a slow or loaded
// machine, never a timing assumption: a test passes as soon as `pred` holds.
//
// Rule: a test never asserts that something did *not* happen after a sleep; it waits
// with WaitUntil for a positive sign (a counter, an event) that the state it checks has
// been reached.
#pragma once

#include <chrono>
#include <functional>
#include <thread>

namespace tapmap::testing {

// Calls `pred` until it returns true or `timeout` has passed, sleeping `poll` between
// calls. Returns true as soon as `pred` does; at the deadline, what a last call of
// `pred` returns.
inline bool WaitUntil(const std::function<bool()>& pred,
                      std::chrono::milliseconds timeout = std::chrono::seconds(10),
                      std::chrono::milliseconds poll = std::chrono::milliseconds(5)) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (pred()) return true;
    std::this_thread::sleep_for(poll);
  }
  return pred();
}

}  // namespace tapmap::testing
