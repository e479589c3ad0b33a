// tapmap: the operator's command-line tool (see xenstore-tools/man/tapmap.1).
#include <vector>

#include "xenstore-tools/cli/command.h"
#include "xenstore-tools/cli/flatten_command.h"
#include "xenstore-tools/cli/image_command.h"
#include "xenstore-tools/cli/nbd_command.h"
#include "xenstore-tools/cli/qos_command.h"
#include "xenstore-tools/cli/snapshot_live_command.h"
#include "xenstore-tools/cli/stats_command.h"
#include "xenstore-tools/cli/vbd_command.h"
#include "xenstore-tools/cli/volume_command.h"

int main(int argc, char** argv) {
  std::vector<tapmap::cli::CommandSpec> commands;
  tapmap::cli::AddVolumeCommands(&commands);
  tapmap::cli::AddImageCommands(&commands);
  tapmap::cli::AddFlattenCommands(&commands);
  tapmap::cli::AddVbdCommands(&commands);
  tapmap::cli::AddNbdCommands(&commands);
  tapmap::cli::AddQosCommands(&commands);
  tapmap::cli::AddStatsCommands(&commands);
  tapmap::cli::AddSnapshotLiveCommands(&commands);
  return tapmap::cli::RunCli(commands, argc, argv);
}
