#include "xenstore-tools/cli/volume_command.h"

#include <ctime>

#include "common/units.h"
#include "xenstore-tools/cli/progress.h"
#include "xenstore-tools/cli/server_session.h"

namespace tapmap::cli {
namespace {

const char* KindName(proto::VolumeInfo::Kind kind) {
  switch (kind) {
    case proto::VolumeInfo::Kind::BASE:
      return "base";
    case proto::VolumeInfo::Kind::SNAPSHOT:
      return "snapshot";
    case proto::VolumeInfo::Kind::CLONE:
      return "clone";
  }
  return "unknown";
}

std::string Text(capnp::Text::Reader t) { return std::string(t.cStr(), t.size()); }

std::string TimeText(uint64_t unix_seconds) {
  if (unix_seconds == 0) return "-";
  std::time_t t = static_cast<std::time_t>(unix_seconds);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y-%m-%d %H:%M:%SZ", &tm);
  return buf;
}

Json PoolJson(proto::PoolStats::Reader p) {
  Json j;
  j["uuid"] = Text(p.getUuid());
  j["pool_bytes"] = p.getPoolBytes();
  j["block_size"] = p.getBlockSize();
  j["total_blocks"] = p.getTotalBlocks();
  j["free_blocks"] = p.getFreeBlocks();
  j["reserved_blocks"] = p.getReservedBlocks();
  j["volumes"] = p.getVolumes();
  j["version_sets"] = p.getVersionSets();
  j["metadata_bytes"] = p.getMetadataBytes();
  return j;
}

// Parses args()[index] as a volume size (bytes, multiple of 512).
Result<uint64_t> SizeArgument(Invocation& inv, size_t index) {
  auto size = ParseSize(inv.args().at(index));
  if (!size.ok()) return inv.UsageError(size.status().message());
  if (*size == 0 || *size % kSectorSize != 0) {
    return inv.UsageError("size " + inv.args().at(index) +
                          " must be a positive multiple of 512 bytes");
  }
  return size;
}

// Opens a session with a progress line saying `what`, then runs `fn` on it.
template <typename Fn>
Status WithSession(Invocation& inv, const std::string& what, Fn&& fn) {
  Progress progress(what, !inv.json(), inv.err());
  auto session = ServerSession::Open(inv);
  if (!session.ok()) return session.status();
  return fn(**session);
}

Status PrintVolume(Invocation& inv, proto::VolumeInfo::Reader info, const std::string& verb) {
  Json doc;
  doc["volume"] = VolumeJson(info);
  inv.PrintJson(doc);
  if (!verb.empty())
    inv.Print(verb + " " + Text(info.getName()) + " (" + FormatSize(info.getSizeBytes()) + ")\n");
  else
    inv.Print(VolumeText(info));
  return Status::Ok();
}

Status RunCreate(Invocation& inv) {
  auto size = SizeArgument(inv, 1);
  if (!size.ok()) return size.status();
  const std::string& name = inv.args()[0];
  return WithSession(inv, "creating " + name, [&](ServerSession& s) {
    auto req = s.session().createRequest();
    req.setName(name);
    req.setSizeBytes(*size);
    auto r = s.Wait(req.send());
    if (!r.ok()) return r.status().WithContext("create " + name);
    return PrintVolume(inv, r->getInfo(), "created");
  });
}

// snapshot and clone: SOURCE NAME.
Status RunCopy(Invocation& inv, bool snapshot) {
  const std::string& source = inv.args()[0];
  const std::string& name = inv.args()[1];
  const char* verb = snapshot ? "snapshot" : "clone";
  return WithSession(inv, std::string(snapshot ? "snapshotting " : "cloning ") + source,
                     [&](ServerSession& s) {
                       if (snapshot) {
                         auto req = s.session().snapshotRequest();
                         req.setSource(source);
                         req.setName(name);
                         auto r = s.Wait(req.send());
                         if (!r.ok())
                           return r.status().WithContext(std::string(verb) + " " + source);
                         return PrintVolume(inv, r->getInfo(), "created snapshot");
                       }
                       auto req = s.session().cloneRequest();
                       req.setSource(source);
                       req.setName(name);
                       auto r = s.Wait(req.send());
                       if (!r.ok()) return r.status().WithContext(std::string(verb) + " " + source);
                       return PrintVolume(inv, r->getInfo(), "created clone");
                     });
}

Status RunDelete(Invocation& inv) {
  const std::string& name = inv.args()[0];
  return WithSession(inv, "deleting " + name, [&](ServerSession& s) {
    auto req = s.session().deleteRequest();
    req.setName(name);
    auto r = s.Wait(req.send());
    if (!r.ok()) return r.status().WithContext("delete " + name);
    Json doc;
    doc["deleted"] = name;
    inv.PrintJson(doc);
    inv.Print("deleted " + name + "\n");
    return Status::Ok();
  });
}

Status RunResize(Invocation& inv) {
  auto size = SizeArgument(inv, 1);
  if (!size.ok()) return size.status();
  const std::string& name = inv.args()[0];
  return WithSession(inv, "resizing " + name, [&](ServerSession& s) {
    auto req = s.session().resizeRequest();
    req.setName(name);
    req.setSizeBytes(*size);
    req.setAllowShrink(inv.options().GetBool("allow-shrink"));
    auto r = s.Wait(req.send());
    if (!r.ok()) return r.status().WithContext("resize " + name);
    return PrintVolume(inv, r->getInfo(), "resized");
  });
}

Status RunRename(Invocation& inv) {
  const std::string& name = inv.args()[0];
  const std::string& new_name = inv.args()[1];
  return WithSession(inv, "renaming " + name, [&](ServerSession& s) {
    auto req = s.session().renameRequest();
    req.setName(name);
    req.setNewName(new_name);
    auto r = s.Wait(req.send());
    if (!r.ok()) return r.status().WithContext("rename " + name);
    Json doc;
    doc["volume"] = VolumeJson(r->getInfo());
    doc["renamed_from"] = name;
    inv.PrintJson(doc);
    inv.Print("renamed " + name + " to " + new_name + "\n");
    return Status::Ok();
  });
}

Status RunList(Invocation& inv) {
  return WithSession(inv, "listing volumes", [&](ServerSession& s) {
    auto list = s.Wait(s.session().listRequest().send());
    if (!list.ok()) return list.status().WithContext("list");
    auto pool = s.Wait(s.session().poolStatsRequest().send());
    if (!pool.ok()) return pool.status().WithContext("pool stats");
    Json doc;
    doc["volumes"] = Json::array();
    Table t({{"NAME"},
             {"SIZE", true},
             {"KIND"},
             {"RO"},
             {"PARENT"},
             {"MAPPED", true},
             {"EXCLUSIVE", true},
             {"SHARED", true},
             {"OPENERS", true},
             {"WRITER"}});
    for (auto v : list->getVolumes()) {
      doc["volumes"].push_back(VolumeJson(v));
      std::string parent = Text(v.getParent());
      std::string writer = Text(v.getWriter());
      if (!Text(v.getStandby()).empty()) writer += " (standby " + Text(v.getStandby()) + ")";
      t.AddRow({Text(v.getName()), FormatSize(v.getSizeBytes()), KindName(v.getKind()),
                YesNo(v.getReadOnly()), parent.empty() ? "-" : parent,
                FormatSize(v.getMappedBytes()), FormatSize(v.getExclusiveBytes()),
                FormatSize(v.getSharedBytes()), std::to_string(v.getOpeners()),
                writer.empty() ? "-" : writer});
    }
    auto p = pool->getStats();
    doc["pool"] = PoolJson(p);
    inv.PrintJson(doc);
    std::string text = t.rows() == 0 ? "no volumes\n" : t.Render();
    uint64_t bs = p.getBlockSize();
    text += "pool: " + FormatSize(p.getFreeBlocks() * bs) + " free of " +
            FormatSize(p.getTotalBlocks() * bs) + " (block size " + FormatSize(bs) + ", " +
            std::to_string(p.getReservedBlocks()) + " blocks reserved), " +
            std::to_string(p.getVolumes()) + " volumes in " + std::to_string(p.getVersionSets()) +
            " version sets\n";
    inv.Print(text);
    return Status::Ok();
  });
}

Status RunInfo(Invocation& inv) {
  const std::string& name = inv.args()[0];
  return WithSession(inv, "asking about " + name, [&](ServerSession& s) {
    auto req = s.session().infoRequest();
    req.setName(name);
    auto r = s.Wait(req.send());
    if (!r.ok()) return r.status().WithContext("info " + name);
    return PrintVolume(inv, r->getInfo(), "");
  });
}

// volume diff FROM TO: the changed extents, fetched in pages of 65536.
Status RunDiff(Invocation& inv) {
  const std::string& from = inv.args()[0];
  const std::string& to = inv.args()[1];
  return WithSession(inv, "comparing " + from + " with " + to, [&](ServerSession& s) {
    Json doc;
    doc["from"] = from;
    doc["to"] = to;
    doc["extents"] = Json::array();
    Table t({{"OFFSET", true}, {"LENGTH", true}, {"WHAT"}});
    uint64_t start = 0, changed = 0, zeroed = 0, count = 0;
    do {
      auto req = s.session().diffRequest();
      req.setFrom(from);
      req.setTo(to);
      req.setStartOffset(start);
      req.setMaxExtents(65536);
      auto r = s.Wait(req.send());
      if (!r.ok()) return r.status().WithContext("diff " + from + " " + to);
      for (auto e : r->getExtents()) {
        Json j;
        j["offset"] = e.getOffset();
        j["length"] = e.getLength();
        j["zero"] = e.getZero();
        doc["extents"].push_back(j);
        (e.getZero() ? zeroed : changed) += e.getLength();
        ++count;
        t.AddRow({std::to_string(e.getOffset()), std::to_string(e.getLength()), e.getZero() ? "zero" : "data"});
      }
      start = r->getNextOffset();
    } while (start != 0);
    doc["changed_bytes"] = changed;
    doc["zero_bytes"] = zeroed;
    inv.PrintJson(doc);
    inv.Print((count == 0 ? std::string() : t.Render()) + std::to_string(count) + " extents: " +
              FormatSize(changed) + " of data and " + FormatSize(zeroed) + " of zeros changed from " + from +
              " to " + to + "\n");
    return Status::Ok();
  });
}

}  // namespace

Json VolumeJson(proto::VolumeInfo::Reader info) {
  Json j;
  j["name"] = Text(info.getName());
  j["size_bytes"] = info.getSizeBytes();
  j["read_only"] = info.getReadOnly();
  j["kind"] = KindName(info.getKind());
  j["parent"] = Text(info.getParent());
  j["version_set"] = info.getVersionSet();
  j["mapped_bytes"] = info.getMappedBytes();
  j["exclusive_bytes"] = info.getExclusiveBytes();
  j["shared_bytes"] = info.getSharedBytes();
  j["created_unix_seconds"] = info.getCreatedUnixSeconds();
  j["openers"] = info.getOpeners();
  j["writer"] = Text(info.getWriter());
  j["standby"] = Text(info.getStandby());
  return j;
}

std::string VolumeText(proto::VolumeInfo::Reader info) {
  Table t({{"FIELD"}, {"VALUE"}});
  auto or_dash = [](std::string s) { return s.empty() ? std::string("-") : s; };
  t.AddRow({"name", Text(info.getName())});
  t.AddRow({"size", FormatSize(info.getSizeBytes()) + " (" + std::to_string(info.getSizeBytes()) +
                        " bytes)"});
  t.AddRow({"kind", KindName(info.getKind())});
  t.AddRow({"read-only", YesNo(info.getReadOnly())});
  t.AddRow({"parent", or_dash(Text(info.getParent()))});
  t.AddRow({"version set", std::to_string(info.getVersionSet())});
  t.AddRow({"mapped", FormatSize(info.getMappedBytes())});
  t.AddRow({"exclusive", FormatSize(info.getExclusiveBytes())});
  t.AddRow({"shared", FormatSize(info.getSharedBytes())});
  t.AddRow({"created", TimeText(info.getCreatedUnixSeconds())});
  t.AddRow({"openers", std::to_string(info.getOpeners())});
  t.AddRow({"writer", or_dash(Text(info.getWriter()))});
  t.AddRow({"standby", or_dash(Text(info.getStandby()))});  // live migration's destination
  // Drop the header line: a key/value listing reads better without it.
  std::string text = t.Render();
  return text.substr(text.find('\n') + 1);
}

void AddVolumeCommands(std::vector<CommandSpec>* commands) {
  commands->push_back({"volume",
                       "create",
                       "NAME SIZE",
                       "create an empty volume (SIZE like 10G)",
                       2,
                       2,
                       {},
                       kUsesServer,
                       RunCreate});
  commands->push_back({"volume",
                       "snapshot",
                       "SOURCE NAME",
                       "read-only point-in-time copy of a volume",
                       2,
                       2,
                       {},
                       kUsesServer,
                       [](Invocation& inv) { return RunCopy(inv, true); }});
  commands->push_back({"volume",
                       "clone",
                       "SOURCE NAME",
                       "writable copy of a volume or snapshot",
                       2,
                       2,
                       {},
                       kUsesServer,
                       [](Invocation& inv) { return RunCopy(inv, false); }});
  commands->push_back({"volume",
                       "delete",
                       "NAME",
                       "delete a volume (fails while it is open)",
                       1,
                       1,
                       {},
                       kUsesServer,
                       RunDelete});
  commands->push_back({"volume",
                       "resize",
                       "NAME SIZE",
                       "grow (or with --allow-shrink shrink) a volume",
                       2,
                       2,
                       {{"allow-shrink", "",
                         "allow making the volume smaller (data beyond the end is lost)", true}},
                       kUsesServer,
                       RunResize});
  commands->push_back({"volume",
                       "rename",
                       "NAME NEW-NAME",
                       "rename a volume (fails while it is open); its clones follow",
                       2,
                       2,
                       {},
                       kUsesServer,
                       RunRename});
  commands->push_back(
      {"volume", "list", "", "list volumes and pool usage", 0, 0, {}, kUsesServer, RunList});
  commands->push_back(
      {"volume", "info", "NAME", "show one volume", 1, 1, {}, kUsesServer, RunInfo});
  commands->push_back({"volume",
                       "diff",
                       "FROM TO",
                       "extents that changed from FROM to TO (one version set: snapshot -> snapshot or live)",
                       2,
                       2,
                       {},
                       kUsesServer,
                       RunDiff});
}

}  // namespace tapmap::cli
