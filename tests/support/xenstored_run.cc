// xenstored-run: runs a command against a private real xenstored, for shell-level
// tests (e.g. the block-tapmap hotplug script replaying what xl does).
//
//   xenstored-run COMMAND [ARGS...]
//
// Starts a XenstoredInstance, runs COMMAND with XENSTORED_PATH set to its socket (so
// xenstore-read/-write and libxenstore programs use it), then stops the daemon and
// exits with COMMAND's exit status (125 if xenstored could not start).
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>

#include "tests/support/xenstored_instance.h"

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s COMMAND [ARGS...]\n", argv[0]);
    return 2;
  }
  auto xs = tapmap::testing::XenstoredInstance::Start();
  if (!xs.ok()) {
    std::fprintf(stderr, "xenstored-run: %s\n", xs.status().ToString().c_str());
    return 125;
  }
  (*xs)->ExportEnvironment();
  pid_t pid = fork();
  if (pid == 0) {
    execvp(argv[1], argv + 1);
    std::perror("xenstored-run: exec");
    _exit(127);
  }
  int status = 0;
  while (waitpid(pid, &status, 0) < 0) {
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}
