// TransferProgress: how far a copy (volume import/export) has got, for people and for
// programs.
//
//   terminal, no --json:  the Progress bar on stderr ("tapmap: importing vm1 [###---] 42.5% 7s")
//   --json:               one JSON line per whole percent reached, on stdout, before the
//                         command's final document (JSON Lines):
//                         {"progress": 42.5, "phase": "copying", "volume": "vm1"}
//   otherwise:            nothing
#pragma once

#include <string>

#include "xenstore-tools/cli/command.h"
#include "xenstore-tools/cli/progress.h"

namespace tapmap::cli {

class TransferProgress {
 public:
  // `inv` must outlive this object. `what` is the terminal line's text, `volume` the
  // volume the JSON lines name.
  TransferProgress(Invocation& inv, std::string what, std::string volume);
  TransferProgress(const TransferProgress&) = delete;
  TransferProgress& operator=(const TransferProgress&) = delete;

  // Reports `percent` (0..100) of phase `phase` ("copying", "zeroing", ...). A JSON line
  // is printed for the first report, each time a whole percent is passed, and for 100.
  void Report(double percent, const std::string& phase = "copying");

 private:
  Invocation& inv_;
  std::string volume_;
  Progress bar_;
  double last_printed_ = -1;
};

}  // namespace tapmap::cli
