// NbdListenerSpec: one NBD listener as an operator names it in tapdisk-map's --nbd
// flag (or `nbd =` in tapmap.conf): a listen address, optionally followed by settings
// of that listener after a '?':
//
//   unix:/run/tapmap/nbd.sock                   every export
//   tcp:0.0.0.0:10809?exports=vm1:vm2:web-*     only these exports (export_allow_list.h)
//
// Several listeners are separated by commas. Settings are KEY=VALUE pairs separated by
// '&'; the only key is `exports`, a ':'-separated allow-list of volume names or
// fnmatch patterns. A unix socket path cannot contain '?' or ','.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "common/listen_address.h"
#include "common/status.h"

namespace tapmap::nbd {

struct NbdListenerSpec {
  ListenAddress address;
  std::vector<std::string> exports;  // allow-list patterns; empty: every export

  // The canonical text form ("tcp:127.0.0.1:10809?exports=vm1:vm2").
  std::string ToString() const;
};

// Parses one listener; errors (kInvalidArgument) name the offending text.
Result<NbdListenerSpec> ParseNbdListener(std::string_view text);
// Parses a comma-separated list of listeners; empty items are errors.
Result<std::vector<NbdListenerSpec>> ParseNbdListeners(std::string_view text);

}  // namespace tapmap::nbd
