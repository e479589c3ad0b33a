// xenstored-run: runs a command against a private real xenstored, for shell-level
// tests (e.g. the block-tapmap hotplug script replaying what xl does).
//
//   xenstored-run [--domids 1,5] COMMAND [ARGS...]
//
// --domids lists guest domains the daemon should believe exist (so that node
// permissions naming them, as libxl writes, are accepted).
//
// Starts a XenstoredInstance, runs COMMAND with XENSTORED_PATH set to its socket (so
// xenstore-read/-write and libxenstore programs use it), then stops the daemon and
// exits with COMMAND's exit status (125 if xenstored could not start).
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "tests/support/xenstored_instance.h"

int main(int argc, char** argv) {
  std::vector<uint32_t> domids;
  int first = 1;
  if (argc > 2 && std::string(argv[1]) == "--domids") {
    std::string list = argv[2];
    size_t pos = 0;
    while (pos < list.size()) {
      size_t comma = list.find(',', pos);
      domids.push_back(static_cast<uint32_t>(std::strtoul(list.substr(pos, comma - pos).c_str(), nullptr, 10)));
      if (comma == std::string::npos) break;
      pos = comma + 1;
    }
    first = 3;
  }
  if (argc <= first) {
    std::fprintf(stderr, "usage: %s [--domids 1,5] COMMAND [ARGS...]\n", argv[0]);
    return 2;
  }
  auto xs = tapmap::testing::XenstoredInstance::Start(domids);
  if (!xs.ok()) {
    std::fprintf(stderr, "xenstored-run: %s\n", xs.status().ToString().c_str());
    return 125;
  }
  (*xs)->ExportEnvironment();
  pid_t pid = fork();
  if (pid == 0) {
    execvp(argv[first], argv + first);
    std::perror("xenstored-run: exec");
    _exit(127);
  }
  int status = 0;
  while (waitpid(pid, &status, 0) < 0) {
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}
