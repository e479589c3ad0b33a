#include "xenstore-tools/cli/progress.h"

#include <unistd.h>

#include <algorithm>

namespace tapmap::cli {
namespace {

constexpr auto kGracePeriod = std::chrono::milliseconds(700);
constexpr auto kRedrawPeriod = std::chrono::milliseconds(500);
constexpr size_t kBarWidth = 30;

}  // namespace

Progress::Progress(std::string what, bool enabled, std::FILE* sink)
    : sink_(sink), what_(std::move(what)), start_(std::chrono::steady_clock::now()) {
  if (enabled && isatty(fileno(sink_))) thread_ = std::thread([this] { Run(); });
}

Progress::~Progress() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void Progress::Update(std::string what) {
  std::lock_guard<std::mutex> lock(mu_);
  what_ = std::move(what);
}

void Progress::SetPercent(double percent) {
  std::lock_guard<std::mutex> lock(mu_);
  percent_ = std::clamp(percent, 0.0, 100.0);
}

void Progress::Run() {
  std::unique_lock<std::mutex> lock(mu_);
  if (cv_.wait_for(lock, kGracePeriod, [this] { return stop_; })) return;
  while (!stop_) {
    auto secs =
        std::chrono::duration_cast<std::chrono::seconds>(std::chrono::steady_clock::now() - start_)
            .count();
    // \r + "erase to end of line" keeps the line in place.
    if (percent_ < 0) {
      std::fprintf(sink_, "\rtapmap: %s ... %llds\033[K", what_.c_str(),
                   static_cast<long long>(secs));
    } else {
      size_t filled = static_cast<size_t>(percent_ / 100.0 * kBarWidth);
      std::string bar = std::string(filled, '#') + std::string(kBarWidth - filled, '-');
      std::fprintf(sink_, "\rtapmap: %s [%s] %5.1f%% %llds\033[K", what_.c_str(), bar.c_str(),
                   percent_, static_cast<long long>(secs));
    }
    std::fflush(sink_);
    drawn_ = true;
    cv_.wait_for(lock, kRedrawPeriod, [this] { return stop_; });
  }
  if (drawn_) {
    std::fprintf(sink_, "\r\033[K");
    std::fflush(sink_);
  }
}

}  // namespace tapmap::cli
