// XenstoredInstance: a private, real xenstored (Debian's C daemon of Xen 4.17) for one
// test, running unprivileged without a hypervisor thanks to the xenstored_shim
// LD_PRELOAD library (xenstored_shim.c). Clients connect through its unix socket as
// privileged dom0 connections, with the real libxenstore (RealXenStore, xenstore-*
// tools, xl's libxenstore).
//
// Each instance has its own temporary directory (socket, run dir, daemon log) and is
// killed and cleaned up when the object is destroyed (and, via PR_SET_PDEATHSIG, when
// the test process dies). Several instances may run side by side.
//
//   auto xs = XenstoredInstance::Start();            // Result<unique_ptr<...>>
//   auto client = (*xs)->Connect();                  // RealXenStore on it
//   setenv-free child: {"XENSTORED_PATH=" + (*xs)->socket_path()}
//
// Threading: not thread-safe; create and destroy on the test's thread.
#pragma once

#include <sys/types.h>

#include <memory>
#include <string>
#include <vector>

#include "common/status.h"
#include "tapdisk-map/xen/real_xenstore.h"

namespace tapmap::testing {

class XenstoredInstance {
 public:
  // Starts the daemon and waits (up to 20 s) until it accepts connections. The
  // daemon binary is /usr/lib/xen-4.17/bin/xenstored unless $TAPMAP_XENSTORED names
  // another. Fails with the daemon's log in the message.
  // `guest_domids` are domains the daemon believes exist besides dom0: only those
  // can be made owners of nodes (libxl makes the guest own its device/ directory);
  // merely granting read/write to any domid works without this.
  static Result<std::unique_ptr<XenstoredInstance>> Start(const std::vector<uint32_t>& guest_domids = {});
  ~XenstoredInstance();  // SIGKILL, reap, remove the directory
  XenstoredInstance(const XenstoredInstance&) = delete;
  XenstoredInstance& operator=(const XenstoredInstance&) = delete;

  // The daemon's socket; what XENSTORED_PATH must name for libxenstore clients.
  const std::string& socket_path() const { return socket_path_; }
  // The instance's private directory (also XENSTORED_RUNDIR); removed at destruction.
  const std::string& dir() const { return dir_; }
  pid_t pid() const { return pid_; }
  // "XENSTORED_PATH=<socket>", to put in a child process's environment.
  std::string EnvironmentAssignment() const { return "XENSTORED_PATH=" + socket_path_; }

  // Sets XENSTORED_PATH in THIS process's environment (libxenstore reads it at
  // xs_open), so in-process clients reach this instance. Call before opening clients,
  // from the test's main thread before other threads start.
  void ExportEnvironment() const;
  // ExportEnvironment() and a new RealXenStore connected to this instance.
  Result<std::unique_ptr<xen::RealXenStore>> Connect() const;

  // The daemon's stdout/stderr so far (for failure messages).
  std::string Log() const;
  // True while the daemon process runs.
  bool Running();

 private:
  XenstoredInstance() = default;
  std::string dir_;
  std::string socket_path_;
  pid_t pid_ = -1;
};

}  // namespace tapmap::testing
