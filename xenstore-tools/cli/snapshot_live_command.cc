#include "xenstore-tools/cli/snapshot_live_command.h"

#include <chrono>

#include "xenstore-tools/cli/control_client.h"
#include "xenstore-tools/cli/json_fields.h"
#include "xenstore-tools/cli/progress.h"
#include "xenstore-tools/cli/server_session.h"
#include "xenstore-tools/cli/vbd_command.h"
#include "xenstore-tools/cli/volume_command.h"

namespace tapmap::cli {
namespace {

Result<nlohmann::json> ControlCall(Invocation& inv, const nlohmann::json& request) {
  auto client = ControlClient::Connect(inv.options().Get("control"));
  if (!client.ok()) return client.status();
  return client->Call(request, std::chrono::milliseconds(inv.timeout_ms()));
}

// The volume tapdisk-map serves as `disk`.
Result<std::string> VolumeOfDisk(Invocation& inv, const VbdAddress& disk) {
  auto r = ControlCall(inv, {{"op", "vbd-list"}});
  if (!r.ok()) return r.status();
  if (r->contains("vbds") && (*r)["vbds"].is_array()) {
    for (const auto& v : (*r)["vbds"]) {
      if (JsonUint(v, "domid", UINT64_MAX) == disk.domid &&
          JsonUint(v, "devid", UINT64_MAX) == disk.devid &&
          JsonString(v, "layout", "vbd") == disk.layout) {
        std::string volume = JsonString(v, "volume");
        if (volume.empty()) break;
        return volume;
      }
    }
  }
  return Status::NotFound("tapdisk-map serves no disk " + disk.ToString() + " (layout " +
                          disk.layout + ")");
}

Status RunSnapshotLive(Invocation& inv) {
  auto disk = DiskArgument(inv, 0);
  if (!disk.ok()) return disk.status();
  const std::string& name = inv.args()[1];

  Progress progress("connecting", !inv.json(), inv.err());
  auto session = ServerSession::Open(inv);
  if (!session.ok()) return session.status();
  auto volume = VolumeOfDisk(inv, *disk);
  if (!volume.ok()) return volume.status();

  progress.Update("pausing " + disk->ToString());
  auto paused_at = std::chrono::steady_clock::now();
  auto paused = ControlCall(inv, DiskRequest("vbd-pause", *disk));

  Status snap_status;
  Json snapshot;
  if (!paused.ok()) {
    snap_status = paused.status().WithContext("pause " + disk->ToString());
  } else {
    progress.Update("snapshotting " + *volume + " as " + name);
    auto req = (*session)->session().snapshotRequest();
    req.setSource(*volume);
    req.setName(name);
    auto r = (*session)->Wait(req.send());
    if (r.ok())
      snapshot = VolumeJson(r->getInfo());
    else
      snap_status = r.status().WithContext("snapshot " + *volume);
  }

  // Resume whatever happened: a pause that failed or timed out may still have taken
  // effect in the daemon, and a guest must never be left paused by this command.
  progress.Update("resuming " + disk->ToString());
  auto resumed = ControlCall(inv, DiskRequest("vbd-resume", *disk));
  auto paused_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                       std::chrono::steady_clock::now() - paused_at)
                       .count();
  if (!resumed.ok()) {
    Status resume_status =
        resumed.status().WithContext("RESUME " + disk->ToString() +
                                     " FAILED; the guest's disk may still be paused, run "
                                     "'tapmap vbd resume " +
                                     disk->ToString() + "'");
    if (!snap_status.ok()) {
      return Status(snap_status.code(), snap_status.message() + "; " + resume_status.message());
    }
    return resume_status;
  }
  if (!snap_status.ok()) return snap_status;

  Json doc;
  doc["snapshot"] = snapshot;
  doc["source"] = *volume;
  doc["domid"] = disk->domid;
  doc["devid"] = disk->devid;
  doc["layout"] = disk->layout;
  doc["paused_ms"] = static_cast<uint64_t>(paused_ms);
  inv.PrintJson(doc);
  inv.Print("created snapshot " + name + " of " + *volume + " (disk " + disk->ToString() +
            " paused for " + std::to_string(paused_ms) + " ms)\n");
  return Status::Ok();
}

}  // namespace

void AddSnapshotLiveCommands(std::vector<CommandSpec>* commands) {
  commands->push_back({"snapshot-live",
                       "",
                       "DOMID/DEVID NAME",
                       "snapshot a running guest's disk (pause, snapshot, always resume)",
                       2,
                       2,
                       {LayoutFlag()},
                       kUsesServer | kUsesControl,
                       RunSnapshotLive});
}

}  // namespace tapmap::cli
