#include "xenstore-tools/cli/image_command.h"

#include "common/units.h"
#include "xenstore-tools/cli/incremental_transfer.h"
#include "xenstore-tools/cli/interrupt_guard.h"
#include "xenstore-tools/cli/nbd_url.h"
#include "xenstore-tools/cli/output_file.h"
#include "xenstore-tools/cli/qemu_img.h"
#include "xenstore-tools/cli/transfer_progress.h"
#include "xenstore-tools/cli/volume_calls.h"

namespace tapmap::cli {
namespace {

const char* const kExportFormats[] = {"raw", "qcow2", "vmdk", "vpc", "vhdx"};

// `failure` of an import after `name` was created, once `name` is deleted again (or,
// if that fails too, with what the operator has to do).
Status UndoCreate(Invocation& inv, const std::string& name, const Status& failure) {
  Status deleted = DeleteVolumeWhenClosed(inv, name);
  if (deleted.ok()) {
    return Status(failure.code(), failure.message() + "; the half-made volume " + name + " was deleted");
  }
  return Status(failure.code(), failure.message() + "; the half-made volume " + name +
                                    " could NOT be deleted (" + deleted.message() +
                                    "): delete it with 'tapmap volume delete " + name + "'");
}

Result<std::string> VolumeNbdUrl(Invocation& inv, const std::string& export_name, const char* verb) {
  auto url = LocalNbdUrl(inv.options().Get("control"), export_name,
                         std::chrono::milliseconds(inv.timeout_ms()));
  if (!url.ok()) {
    return url.status().WithContext(std::string("volume ") + verb +
                                    " copies through the NBD export of tapdisk-map on this host");
  }
  return url;
}

Status ImportImage(Invocation& inv, InterruptGuard& guard) {
  const std::string& source = inv.args()[0];
  const std::string& name = inv.args()[1];
  const std::string format = inv.options().Get("format");
  if (!format.empty() && !IsFormatName(format)) return inv.UsageError("--format: bad format name '" + format + "'");

  auto image = QemuImgInfo(source, format, guard);
  if (!image.ok()) return image.status();
  if (image->virtual_size == 0) return Status::InvalidArgument(source + " is empty (virtual size 0)");
  Status checked = QemuImgCheck(source, image->format, guard);
  if (!checked.ok()) return checked;
  const uint64_t size = (image->virtual_size + kSectorSize - 1) / kSectorSize * kSectorSize;
  auto url = VolumeNbdUrl(inv, name, "import");
  if (!url.ok()) return url.status();
  if (guard.interrupted()) return Status::Aborted(std::string("interrupted by ") + SignalName(guard.Take()));

  auto created = CreateVolume(inv, name, size);
  if (!created.ok()) return created.status();
  // From here on `name` is ours until the copy is done: every failure deletes it.
  Status copied;
  {
    TransferProgress progress(inv, "importing " + name, name);
    progress.Report(0);
    copied = guard.interrupted()
                 ? Status::Aborted(std::string("interrupted by ") + SignalName(guard.Take()))
                 : QemuImgConvert({source, image->format, *url, "raw", /*target_exists=*/true,
                                   /*target_is_zero=*/true},
                                  guard, [&](double p) { progress.Report(p); });
    if (copied.ok()) progress.Report(100);
  }
  if (!copied.ok()) return UndoCreate(inv, name, copied.WithContext("import " + source + " into " + name));

  auto volume = GetVolume(inv, name);
  if (!volume.ok()) return volume.status();
  Json doc;
  doc["volume"] = *volume;
  doc["source"] = {{"location", source},
                   {"format", image->format},
                   {"virtual_size_bytes", image->virtual_size}};
  inv.PrintJson(doc, /*pretty=*/false);
  inv.Print("imported " + source + " (" + image->format + ", " + FormatSize(image->virtual_size) + ") into " +
            name + ": " + FormatSize((*volume)["mapped_bytes"].get<uint64_t>()) + " mapped\n");
  return Status::Ok();
}

Status ExportImage(Invocation& inv, InterruptGuard& guard) {
  const std::string& name = inv.args()[0];
  const std::string& dest = inv.args()[1];
  std::string format = inv.options().Get("format");
  if (format.empty()) format = "raw";
  bool known = false;
  for (const char* f : kExportFormats) known |= format == f;
  if (!known) return inv.UsageError("--format must be one of raw, qcow2, vmdk, vpc, vhdx; got '" + format + "'");
  const bool to_nbd = IsNbdUrl(dest);
  if (to_nbd && format != "raw") return inv.UsageError("an NBD destination takes raw data only (--format raw)");

  auto volume = GetVolume(inv, name);
  if (!volume.ok()) return volume.status();
  auto url = VolumeNbdUrl(inv, name + "@ro", "export");
  if (!url.ok()) return url.status();
  if (guard.interrupted()) return Status::Aborted(std::string("interrupted by ") + SignalName(guard.Take()));

  std::optional<OutputFile> output;
  if (!to_nbd) {
    auto claimed = OutputFile::Claim(dest, inv.options().GetBool("force"));
    if (!claimed.ok()) return claimed.status();
    output.emplace(std::move(*claimed));
    output->Close();  // qemu-img creates the image in it
  }
  Status copied;
  {
    TransferProgress progress(inv, "exporting " + name, name);
    progress.Report(0);
    copied = QemuImgConvert({*url, "raw", dest, format, /*target_exists=*/to_nbd, /*target_is_zero=*/false},
                            guard, [&](double p) { progress.Report(p); });
    if (copied.ok()) progress.Report(100);
  }
  if (!copied.ok()) {
    Status failed = copied.WithContext("export " + name + " to " + dest);
    return to_nbd ? failed : Status(failed.code(), failed.message() + "; the partial " + dest + " was removed");
  }
  if (output) output->Keep();
  const uint64_t size = (*volume)["size_bytes"].get<uint64_t>();
  Json doc;
  doc["exported"] = {{"volume", name}, {"location", dest}, {"format", format}, {"size_bytes", size}};
  inv.PrintJson(doc, /*pretty=*/false);
  inv.Print("exported " + name + " (" + FormatSize(size) + ") to " + dest + " (" + format + ")\n");
  return Status::Ok();
}

Status RunImport(Invocation& inv) {
  auto guard = InterruptGuard::Install();
  if (!guard.ok()) return guard.status();
  if (inv.options().GetBool("diff")) {
    if (!inv.options().Get("format").empty()) return inv.UsageError("--format does not apply to --diff");
    return ImportIncremental(inv, **guard, inv.args()[0], inv.args()[1]);
  }
  return ImportImage(inv, **guard);
}

Status RunExport(Invocation& inv) {
  auto guard = InterruptGuard::Install();
  if (!guard.ok()) return guard.status();
  const std::string since = inv.options().Get("since");
  if (!since.empty()) {
    if (!inv.options().Get("format").empty()) {
      return inv.UsageError("--format does not apply to --since (the incremental file has its own format)");
    }
    if (IsNbdUrl(inv.args()[1])) return inv.UsageError("--since writes a file, not an NBD URL");
    return ExportIncremental(inv, **guard, since, inv.args()[0], inv.args()[1]);
  }
  return ExportImage(inv, **guard);
}

}  // namespace

void AddImageCommands(std::vector<CommandSpec>* commands) {
  commands->push_back(
      {"volume",
       "import",
       "SOURCE NAME",
       "create NAME from a disk image (any qemu-img format, or an NBD URL), sparsely; "
       "--diff: apply an incremental file onto the existing NAME",
       2,
       2,
       {{"format", "", "SOURCE's format (default: as qemu-img info detects it)"},
        {"diff", "", "SOURCE is an incremental file ('volume export --since') to apply onto NAME", true}},
       kUsesServer | kUsesControl,
       RunImport,
       /*json_lines=*/true});
  commands->push_back(
      {"volume",
       "export",
       "NAME DEST",
       "write NAME to the image file DEST (or an NBD URL); --since SNAP: only what changed since SNAP",
       2,
       2,
       {{"format", "", "DEST's format: raw (default), qcow2, vmdk, vpc or vhdx"},
        {"force", "", "overwrite an existing DEST", true},
        {"since", "", "write an incremental file of the extents changed from this snapshot to NAME"}},
       kUsesServer | kUsesControl,
       RunExport,
       /*json_lines=*/true});
}

}  // namespace tapmap::cli
