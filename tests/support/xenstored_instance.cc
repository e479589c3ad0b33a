#include "tests/support/xenstored_instance.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>
#include <vector>

#include "common/unique_fd.h"

#ifndef TAPMAP_XENSTORED_SHIM
#error "TAPMAP_XENSTORED_SHIM (path of the shim library) must be defined by the build"
#endif

namespace tapmap::testing {

namespace {

constexpr const char* kDefaultXenstored = "/usr/lib/xen-4.17/bin/xenstored";

// True once something listens on the unix socket `path` (the socket file appears
// before the daemon calls listen(), so existence alone is not readiness).
bool Accepts(const std::string& path) {
  UniqueFd fd(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd) return false;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof(addr.sun_path)) return false;
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  return connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
}

}  // namespace

Result<std::unique_ptr<XenstoredInstance>> XenstoredInstance::Start(const std::vector<uint32_t>& guest_domids) {
  std::unique_ptr<XenstoredInstance> inst(new XenstoredInstance());
  char tmpl[] = "/tmp/tapmap-xenstored-XXXXXX";
  if (mkdtemp(tmpl) == nullptr) return Status::FromErrno("mkdtemp", errno);
  inst->dir_ = tmpl;
  inst->socket_path_ = inst->dir_ + "/socket";
  const char* env_bin = std::getenv("TAPMAP_XENSTORED");
  std::string binary = env_bin != nullptr ? env_bin : kDefaultXenstored;
  if (access(binary.c_str(), X_OK) != 0) {
    return Status::NotFound("xenstored binary " + binary + " is missing (package xen-utils-4.17)");
  }
  std::string log_path = inst->dir_ + "/xenstored.log";

  // Everything the child needs is prepared before fork (no allocation after it).
  std::vector<std::string> env_strings = {
      "XENSTORED_PATH=" + inst->socket_path_, "XENSTORED_RUNDIR=" + inst->dir_,
      std::string("LD_PRELOAD=") + TAPMAP_XENSTORED_SHIM, "PATH=/usr/bin:/bin"};
  std::string domids;
  for (uint32_t d : guest_domids) domids += (domids.empty() ? "" : ",") + std::to_string(d);
  env_strings.push_back("XENSTORED_SHIM_DOMIDS=" + domids);
  std::vector<char*> envp;
  for (auto& s : env_strings) envp.push_back(s.data());
  envp.push_back(nullptr);
  std::string arg_nofork = "--no-fork";
  std::vector<char*> argv = {binary.data(), arg_nofork.data(), nullptr};
  UniqueFd log_fd(open(log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
  if (!log_fd) return Status::FromErrno("create " + log_path, errno);
  pid_t parent = getpid();

  pid_t pid = fork();
  if (pid < 0) return Status::FromErrno("fork", errno);
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(127);
    dup2(log_fd.get(), 1);
    dup2(log_fd.get(), 2);
    int devnull = open("/dev/null", O_RDONLY);
    if (devnull >= 0) dup2(devnull, 0);
    execve(binary.c_str(), argv.data(), envp.data());
    _exit(127);
  }
  inst->pid_ = pid;

  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (!Accepts(inst->socket_path_)) {
    if (!inst->Running()) {
      return Status::Unavailable("xenstored exited during start-up; log:\n" + inst->Log());
    }
    if (std::chrono::steady_clock::now() > deadline) {
      return Status::Unavailable("xenstored did not accept connections within 20 s; log:\n" +
                                 inst->Log());
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return inst;
}

XenstoredInstance::~XenstoredInstance() {
  if (pid_ > 0) {
    kill(pid_, SIGKILL);
    int status;
    while (waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
    }
  }
  if (!dir_.empty()) {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
}

void XenstoredInstance::ExportEnvironment() const {
  setenv("XENSTORED_PATH", socket_path_.c_str(), 1);
}

Result<std::unique_ptr<xen::RealXenStore>> XenstoredInstance::Connect() const {
  ExportEnvironment();
  return xen::RealXenStore::Open(/*socket_only=*/true);
}

std::string XenstoredInstance::Log() const {
  std::ifstream in(dir_ + "/xenstored.log");
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

bool XenstoredInstance::Running() {
  if (pid_ <= 0) return false;
  int status;
  pid_t r = waitpid(pid_, &status, WNOHANG);
  if (r == pid_) {
    pid_ = -1;
    return false;
  }
  return true;
}

}  // namespace tapmap::testing
