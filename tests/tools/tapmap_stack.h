// TapmapStack: the whole tapmap stack of one host for integration tests — a formatted
// pool, a real mapserver, a real tapdisk-map (NBD export, control socket) and,
// optionally, a private real xenstored that tapdisk-map serves blkif backends from
// (tapdisk-map then runs with the xenstored shim preloaded, which answers its Xen
// device calls as a hypervisor with only dom0 and the declared guests would; no ring
// can connect, but the whole xenbus backend side up to InitWait is real).
//
// Everything lives in one temporary directory and every process is killed when the
// stack is destroyed. Not thread-safe.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "tests/support/child_process.h"
#include "tests/support/xenstored_instance.h"

namespace tapmap::testing {

class TapmapStack {
 public:
  struct Config {
    bool xen = false;                          // serve blkif from a private xenstored
    std::vector<uint32_t> guest_domids = {1};  // domains that "exist" (xen only)
    std::string pool_size = "128M";
  };

  // Starts everything; Catch2 REQUIREs on any failure (with the daemons' logs).
  explicit TapmapStack(Config config);
  ~TapmapStack();
  TapmapStack(const TapmapStack&) = delete;
  TapmapStack& operator=(const TapmapStack&) = delete;

  std::string control() const { return dir_ / "control.sock"; }
  std::string nbd_socket() const { return dir_ / "nbd.sock"; }
  std::string server() const { return "unix:" + (dir_ / "mapserver.sock"); }
  std::string path(const std::string& name) const { return dir_ / name; }
  // "nbd+unix:///<volume>?socket=..." for qemu tools.
  std::string NbdUrl(const std::string& volume) const;
  // The private xenstored (xen stacks only), and a client connected to it.
  XenstoredInstance& xenstored() { return *xenstored_; }
  xen::XenStore& xs() { return *xs_; }

  // The argv of the built tapmap with `args` and this stack's server/control/secret
  // flags appended (those the command takes), e.g. for a ChildProcess.
  std::vector<std::string> TapmapArgv(std::vector<std::string> args) const;

  // Runs the built tapmap with this stack's server/control/secret flags appended.
  // Returns the exit code; `*out` gets stdout only, `*err` stderr (if given).
  int Tapmap(std::vector<std::string> args, std::string* out = nullptr, std::string* err = nullptr);

  // Daemon logs, for failure messages.
  std::string Logs() const;

 private:
  TempDir dir_;
  std::unique_ptr<XenstoredInstance> xenstored_;
  std::unique_ptr<xen::RealXenStore> xs_;
  std::unique_ptr<ChildProcess> mapserver_;
  std::unique_ptr<ChildProcess> tapdisk_map_;
};

}  // namespace tapmap::testing
