// nbd_memory_server: a test-only program serving RAM volumes (MemoryBlockDevice) over
// the real NBD server, so real NBD clients (qemu-io, nbdinfo, nbdcopy) can exercise
// the NBD layer without the engine or a mapserver.
//
//   nbd_memory_server --listen unix:/tmp/x.sock [--listen tcp:127.0.0.1:10809]
//                     --volume disk:64M [--volume snap:16M:ro]
//
// Runs until SIGTERM/SIGINT, then stops the server gracefully and exits 0.
#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <cstdio>
#include <string>
#include <vector>

#include "common/listen_address.h"
#include "common/logging.h"
#include "common/units.h"
#include "tapdisk-map/nbd/server.h"
#include "tests/nbd/memory_catalog.h"

int main(int argc, char** argv) {
  using namespace tapmap;
  boost::asio::io_context io;
  nbd::testing::MemoryCatalog catalog;
  std::vector<ListenAddress> addresses;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string flag = argv[i], value = argv[i + 1];
    if (flag == "--listen") {
      auto list = ParseListenAddressList(value);
      if (!list.ok()) {
        std::fprintf(stderr, "%s\n", list.status().ToString().c_str());
        return 2;
      }
      addresses.insert(addresses.end(), list->begin(), list->end());
    } else if (flag == "--volume") {
      size_t c1 = value.find(':');
      if (c1 == std::string::npos) return 2;
      size_t c2 = value.find(':', c1 + 1);
      auto size = ParseSize(value.substr(c1 + 1, c2 == std::string::npos ? std::string::npos : c2 - c1 - 1));
      if (!size.ok()) {
        std::fprintf(stderr, "%s\n", size.status().ToString().c_str());
        return 2;
      }
      bool read_only = c2 != std::string::npos && value.substr(c2 + 1) == "ro";
      catalog.Add(io, value.substr(0, c1), *size, read_only);
    } else {
      std::fprintf(stderr, "unknown flag %s\n", flag.c_str());
      return 2;
    }
  }
  if (addresses.empty()) {
    std::fprintf(stderr, "usage: %s --listen ADDR --volume NAME:SIZE[:ro]...\n", argv[0]);
    return 2;
  }
  nbd::NbdServerOptions server_options;
  server_options.allow_plaintext_tcp = true;  // a test server of RAM volumes
  nbd::NbdServer server(io, catalog, server_options, Logger("nbd_memory_server"));
  for (const auto& address : addresses) {
    Status s = server.Listen(address);
    if (!s.ok()) {
      std::fprintf(stderr, "%s\n", s.ToString().c_str());
      return 1;
    }
  }
  boost::asio::signal_set signals(io, SIGTERM, SIGINT);
  signals.async_wait([&](boost::system::error_code, int) { server.Stop([&io] { io.stop(); }); });
  io.run();
  return 0;
}
