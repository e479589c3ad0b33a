// ScriptedControlPeer: a stand-in for tapdisk-map's control socket in tests of its
// CLIENTS (the tapmap CLI, block-tapmap): answers each JSON request line with what a
// test-supplied function returns. It is not a model of tapdisk-map; tests of the real
// daemon talk to the real daemon.
#pragma once

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <cstdio>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/unique_fd.h"

namespace tapmap::cli {

// Answers each request line with what `reply` returns ("" = never answer). Serves,
// one connection at a time, until destroyed. `reply` runs on the peer's thread.
class ScriptedControlPeer {
 public:
  ScriptedControlPeer(std::string path, std::function<std::string(const nlohmann::json&)> reply)
      : path_(std::move(path)), reply_(std::move(reply)) {
    listen_fd_.Reset(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", path_.c_str());
    REQUIRE(::bind(listen_fd_.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0);
    REQUIRE(::listen(listen_fd_.get(), 8) == 0);
    thread_ = std::thread([this] { Serve(); });
  }
  ~ScriptedControlPeer() {
    stop_ = true;
    // Wake a blocked accept() with a connection that closes at once.
    UniqueFd wake(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", path_.c_str());
    (void)::connect(wake.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
    wake.Reset();
    thread_.join();
  }
  std::vector<nlohmann::json> requests() {
    std::lock_guard<std::mutex> lock(mu_);
    return requests_;
  }

 private:
  void Serve() {
    while (!stop_) {
      UniqueFd conn(::accept(listen_fd_.get(), nullptr, nullptr));
      if (!conn) return;
      std::string buffer;
      char buf[1024];
      ssize_t n;
      while ((n = ::read(conn.get(), buf, sizeof(buf))) > 0) {
        buffer.append(buf, static_cast<size_t>(n));
        size_t nl;
        while ((nl = buffer.find('\n')) != std::string::npos) {
          auto request = nlohmann::json::parse(buffer.substr(0, nl));
          buffer.erase(0, nl + 1);
          {
            std::lock_guard<std::mutex> lock(mu_);
            requests_.push_back(request);
          }
          std::string answer = reply_(request);
          if (answer.empty()) {  // hang: keep the connection open, say nothing
            while (!stop_ && ::read(conn.get(), buf, sizeof(buf)) > 0) {
            }
            return;
          }
          answer += "\n";
          // (No Catch2 assertions on this thread: a short write just ends the exchange.)
          if (::write(conn.get(), answer.data(), answer.size()) !=
              static_cast<ssize_t>(answer.size()))
            break;
        }
      }
    }
  }

  std::string path_;
  std::function<std::string(const nlohmann::json&)> reply_;
  UniqueFd listen_fd_;
  std::atomic<bool> stop_{false};
  std::mutex mu_;
  std::vector<nlohmann::json> requests_;
  std::thread thread_;
};

}  // namespace tapmap::cli
