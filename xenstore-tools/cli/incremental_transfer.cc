#include "xenstore-tools/cli/incremental_transfer.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <ctime>

#include "common/units.h"
#include "xenstore-tools/cli/control_client.h"
#include "xenstore-tools/cli/json_fields.h"
#include "xenstore-tools/cli/nbd_extent_copy.h"
#include "xenstore-tools/cli/nbd_url.h"
#include "xenstore-tools/cli/output_file.h"
#include "xenstore-tools/cli/transfer_progress.h"
#include "xenstore-tools/cli/volume_calls.h"

namespace tapmap::cli {
namespace {

Status Interrupted(InterruptGuard& guard) {
  return Status::Aborted(std::string("interrupted by ") + SignalName(guard.Take()));
}

Status WriteAll(int fd, const std::string& bytes, const std::string& path) {
  size_t done = 0;
  while (done < bytes.size()) {
    ssize_t n = ::pwrite(fd, bytes.data() + done, bytes.size() - done, static_cast<off_t>(done));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Status::FromErrno("write " + path, errno);
    done += static_cast<size_t>(n);
  }
  return Status::Ok();
}

// Runs `steps` with a progress bar / JSON lines over their total bytes.
Status CopyExtents(Invocation& inv, InterruptGuard& guard, const std::string& what,
                   const std::string& volume, const std::string& url, const std::string& path,
                   const std::vector<ExtentCopyStep>& steps) {
  uint64_t total = 0;
  for (const auto& s : steps) total += s.length;
  TransferProgress progress(inv, what, volume);
  progress.Report(0);
  if (steps.empty()) {
    progress.Report(100);
    return Status::Ok();
  }
  Status s = NbdExtentCopy::Run(url, path, steps, guard, [&](uint64_t done) {
    progress.Report(100.0 * static_cast<double>(done) / static_cast<double>(total));
  });
  if (s.ok()) progress.Report(100);
  return s;
}

// Adjacent pages of Session.diff may restart inside the previous page's last block:
// keep extents strictly after what is already covered.
std::vector<IncrementalExtent> Normalized(std::vector<IncrementalExtent> extents) {
  std::vector<IncrementalExtent> out;
  uint64_t end = 0;
  for (auto e : extents) {
    if (e.offset + e.length <= end) continue;
    if (e.offset < end) {
      e.length -= end - e.offset;
      e.offset = end;
    }
    if (!out.empty() && out.back().zero == e.zero && out.back().offset + out.back().length == e.offset) {
      out.back().length += e.length;
    } else {
      out.push_back(e);
    }
    end = e.offset + e.length;
  }
  return out;
}

// A guest's disk on this host must not change under it: refuse if a vbd of the local
// tapdisk-map serves `name`. (A writer on another host holds the rw lease, so the NBD
// open fails with busy before anything is written; a read-only opener is harmless.)
Status RefuseIfAttached(Invocation& inv, const std::string& name) {
  auto client = ControlClient::Connect(inv.options().Get("control"));
  if (!client.ok()) return client.status();
  auto r = client->Call({{"op", "vbd-list"}}, std::chrono::milliseconds(inv.timeout_ms()));
  if (!r.ok()) {
    if (r.status().code() == StatusCode::kNotSupported) return Status::Ok();  // no Xen back end
    return r.status().WithContext("vbd-list");
  }
  if (!r->contains("vbds") || !(*r)["vbds"].is_array()) return Status::Ok();
  for (const auto& vbd : (*r)["vbds"]) {
    if (JsonString(vbd, "volume") != name) continue;
    return Status::Busy(name + " is attached to domain " + std::to_string(JsonUint(vbd, "domid")) + " (device " +
                        std::to_string(JsonUint(vbd, "devid")) + "): detach it before applying an incremental");
  }
  return Status::Ok();
}

}  // namespace

Json IncrementalJson(const IncrementalHeader& h) {
  Json j;
  j["from"] = h.from;
  j["to"] = h.to;
  j["extents"] = h.extents.size();
  j["data_bytes"] = h.data_bytes();
  j["zero_bytes"] = h.zero_bytes();
  return j;
}

Status ExportIncremental(Invocation& inv, InterruptGuard& guard, const std::string& since,
                         const std::string& name, const std::string& dest) {
  auto to = GetVolume(inv, name);
  if (!to.ok()) return to.status();
  auto from = GetVolume(inv, since);
  if (!from.ok()) return from.status();
  auto extents = DiffVolumes(inv, since, name);
  if (!extents.ok()) return extents.status();

  IncrementalHeader h;
  h.from = since;
  h.to = name;
  h.from_size_bytes = (*from)["size_bytes"].get<uint64_t>();
  h.size_bytes = (*to)["size_bytes"].get<uint64_t>();
  h.created_unix_seconds = static_cast<uint64_t>(std::time(nullptr));
  h.extents = Normalized(std::move(*extents));
  Status valid = ValidateIncremental(h);
  if (!valid.ok()) return Status::Internal("mapserver's diff " + since + " " + name + ": " + valid.message());

  auto url = LocalNbdUrl(inv.options().Get("control"), name + "@ro", std::chrono::milliseconds(inv.timeout_ms()));
  if (!url.ok()) return url.status().WithContext("volume export copies through the NBD export of tapdisk-map on this host");
  if (guard.interrupted()) return Interrupted(guard);

  auto output = OutputFile::Claim(dest, inv.options().GetBool("force"));
  if (!output.ok()) return output.status();
  const std::string header = EncodeIncrementalHeader(h);
  std::vector<ExtentCopyStep> steps;
  uint64_t file_offset = header.size();
  for (const auto& e : h.extents) {
    if (e.zero) continue;
    steps.push_back({ExtentCopyStep::Kind::kPull, e.offset, e.length, file_offset});
    file_offset += e.length;
  }
  Status s = WriteAll(output->fd(), header, dest);
  if (s.ok() && ::ftruncate(output->fd(), static_cast<off_t>(file_offset)) != 0) {
    s = Status::FromErrno("truncate " + dest, errno);
  }
  if (s.ok() && steps.empty() && ::fsync(output->fd()) != 0) s = Status::FromErrno("fsync " + dest, errno);
  output->Close();
  if (s.ok()) s = CopyExtents(inv, guard, "exporting " + name + " since " + since, name, *url, dest, steps);
  if (!s.ok()) {
    Status failed = s.WithContext("export " + name + " since " + since + " to " + dest);
    return Status(failed.code(), failed.message() + "; the partial " + dest + " was removed");
  }
  output->Keep();

  Json doc;
  doc["exported"] = {{"volume", name},
                     {"location", dest},
                     {"format", "tapmap-incremental"},
                     {"size_bytes", h.size_bytes},
                     {"incremental", IncrementalJson(h)}};
  inv.PrintJson(doc, /*pretty=*/false);
  inv.Print("exported what changed from " + since + " to " + name + " to " + dest + ": " +
            std::to_string(h.extents.size()) + " extents, " + FormatSize(h.data_bytes()) + " of data, " +
            FormatSize(h.zero_bytes()) + " of zeros\n");
  return Status::Ok();
}

Status ImportIncremental(Invocation& inv, InterruptGuard& guard, const std::string& file,
                         const std::string& name) {
  UniqueFd fd(::open(file.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) {
    if (errno == ENOENT) return Status::NotFound(file + " does not exist");
    return Status::FromErrno("open " + file, errno);
  }
  auto incremental = ReadIncrementalFile(fd.get(), file);
  if (!incremental.ok()) return incremental.status();
  fd.Reset();
  const IncrementalHeader& h = incremental->header;

  auto volume = GetVolume(inv, name);
  if (!volume.ok()) {
    if (volume.status().code() != StatusCode::kNotFound) return volume.status();
    return Status::NotFound(volume.status().message() + " (import --diff applies onto an existing volume: e.g. " +
                            "'tapmap volume clone " + h.from + " " + name + "' first)");
  }
  if ((*volume)["read_only"].get<bool>()) return Status::ReadOnly(name + " is read-only (a snapshot)");
  Status attached = RefuseIfAttached(inv, name);
  if (!attached.ok()) return attached;
  const uint64_t size = (*volume)["size_bytes"].get<uint64_t>();
  if (size != h.from_size_bytes && size != h.size_bytes) {
    return Status::InvalidArgument(name + " is " + std::to_string(size) + " bytes; " + file + " goes from " +
                                   h.from + " (" + std::to_string(h.from_size_bytes) + " bytes) to " + h.to +
                                   " (" + std::to_string(h.size_bytes) + " bytes): not a copy of " + h.from);
  }
  auto url = LocalNbdUrl(inv.options().Get("control"), name, std::chrono::milliseconds(inv.timeout_ms()));
  if (!url.ok()) return url.status().WithContext("volume import copies through the NBD export of tapdisk-map on this host");
  if (guard.interrupted()) return Interrupted(guard);

  if (size != h.size_bytes) {
    auto resized = ResizeVolume(inv, name, h.size_bytes, /*allow_shrink=*/true);
    if (!resized.ok()) return resized.status();
  }
  std::vector<ExtentCopyStep> steps;
  uint64_t file_offset = incremental->data_offset;
  for (const auto& e : h.extents) {
    if (e.zero) {
      steps.push_back({ExtentCopyStep::Kind::kZero, e.offset, e.length, 0});
    } else {
      steps.push_back({ExtentCopyStep::Kind::kPush, e.offset, e.length, file_offset});
      file_offset += e.length;
    }
  }
  Status s = CopyExtents(inv, guard, "applying " + file + " to " + name, name, *url, file, steps);
  if (!s.ok()) {
    Status failed = s.WithContext("import --diff " + file + " into " + name);
    return Status(failed.code(), failed.message() + "; " + name +
                                     " is partly updated: run the same command again to finish it");
  }
  auto after = GetVolume(inv, name);
  if (!after.ok()) return after.status();
  Json doc;
  doc["volume"] = *after;
  doc["incremental"] = IncrementalJson(h);
  inv.PrintJson(doc, /*pretty=*/false);
  inv.Print("applied " + file + " (" + h.from + " -> " + h.to + ") to " + name + ": " +
            std::to_string(h.extents.size()) + " extents, " + FormatSize(h.data_bytes()) + " written, " +
            FormatSize(h.zero_bytes()) + " zeroed\n");
  return Status::Ok();
}

}  // namespace tapmap::cli
