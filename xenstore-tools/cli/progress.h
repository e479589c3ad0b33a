// Progress: a "what is happening, for how long" line on stderr while a command waits
// for something that can take seconds (attaching a disk, deleting a big volume).
//
//   tapmap: attaching 3/51712 (volume vm1) ... 4s
//   tapmap: importing vm1 [#########-----------]  45.0% 12s     (after SetPercent)
//
// Shown only when stderr is a terminal and the command is not in --json mode, so
// scripts and logs never see carriage returns. The line appears after a short grace
// period (fast operations print nothing) and is erased when the Progress object dies.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <mutex>
#include <string>
#include <thread>

namespace tapmap::cli {

class Progress {
 public:
  // Starts showing `what` on `sink` if `enabled` and `sink` is a terminal. `sink`
  // must outlive this object. Owns a small thread that redraws twice a second.
  Progress(std::string what, bool enabled, std::FILE* sink = stderr);
  ~Progress();  // stops the thread and erases the line
  Progress(const Progress&) = delete;
  Progress& operator=(const Progress&) = delete;

  // Replaces the text (e.g. "pausing" -> "snapshotting"). Thread-safe.
  void Update(std::string what);

  // From now on draws a bar filled to `percent` (0..100) instead of "...". Thread-safe.
  void SetPercent(double percent);

 private:
  void Run();

  std::FILE* sink_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::string what_;
  double percent_ = -1;  // < 0: no bar
  bool stop_ = false;
  bool drawn_ = false;
  std::chrono::steady_clock::time_point start_;
  std::thread thread_;
};

}  // namespace tapmap::cli
