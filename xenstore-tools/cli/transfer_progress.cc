#include "xenstore-tools/cli/transfer_progress.h"

#include <algorithm>
#include <cmath>

namespace tapmap::cli {

TransferProgress::TransferProgress(Invocation& inv, std::string what, std::string volume)
    : inv_(inv), volume_(std::move(volume)), bar_(std::move(what), !inv.json(), inv.err()) {}

void TransferProgress::Report(double percent, const std::string& phase) {
  percent = std::clamp(percent, 0.0, 100.0);
  bar_.SetPercent(percent);
  if (!inv_.json()) return;
  bool first = last_printed_ < 0;
  bool passed_a_percent = std::floor(percent) > std::floor(last_printed_);
  bool done = percent >= 100.0 && last_printed_ < 100.0;
  if (!first && !passed_a_percent && !done) return;
  last_printed_ = percent;
  Json line;
  line["progress"] = std::round(percent * 100.0) / 100.0;
  line["phase"] = phase;
  line["volume"] = volume_;
  inv_.PrintJson(line, /*pretty=*/false);
}

}  // namespace tapmap::cli
