// AwaitCallback: turns a callback-style asynchronous call (the engine's IoDone,
// OpenDone...) into something a coroutine can co_await.
//
//   Status s = co_await AwaitCallback<Status>(
//       [&](auto done) { device->Flush(std::move(done)); });
//
// `start` is called at once with a copyable callback taking a T; the callback may run
// on any thread (or inline), exactly once; the coroutine resumes on its own executor.
// If the callback is never called the coroutine never resumes, so `start` must always
// arrange for it to run.
#pragma once

#include <utility>  // before asio: boost 1.74's awaitable.hpp needs std::exchange

#include <boost/asio/awaitable.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/this_coro.hpp>
#include <memory>
#include <optional>

#include "tapdisk-map/util/async_signal.h"

namespace tapmap {

template <typename T, typename Start>
boost::asio::awaitable<T> AwaitCallback(Start start) {
  auto executor = co_await boost::asio::this_coro::executor;
  struct State {
    explicit State(const decltype(executor)& ex) : signal(ex) {}
    AsyncSignal signal;
    std::optional<T> value;
  };
  auto state = std::make_shared<State>(executor);
  start([state, executor](T value) mutable {
    boost::asio::post(executor, [state, value = std::move(value)]() mutable {
      state->value.emplace(std::move(value));
      state->signal.Notify();
    });
  });
  while (!state->value) co_await state->signal.Wait();
  co_return std::move(*state->value);
}

}  // namespace tapmap
