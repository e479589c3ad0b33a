// VolumeStore's implementation. (Longer than 600 lines on purpose: every operation is
// one LMDB write transaction over map_tree.h and free_space.h that validates all of its
// arguments before its first change; keeping them side by side keeps that discipline
// visible. The trees, free space and metadata formats are their own units.)
#include "mapserver/volume_store.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <ctime>

#include "common/units.h"
#include "mapserver/free_space.h"
#include "mapserver/map_tree.h"

namespace tapmap::mapserver {
namespace {

constexpr const char* kLockFileName = "mapserver.lock";

Result<UniqueFd> LockMetaDir(const std::string& dir) {
  std::string path = dir + "/" + kLockFileName;
  UniqueFd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
  if (!fd) return Status::FromErrno("open " + path, errno);
  if (::flock(fd.get(), LOCK_EX | LOCK_NB) != 0) {
    if (errno == EWOULDBLOCK) {
      return Status::Busy("metadata " + dir + " is in use by another mapserver process");
    }
    return Status::FromErrno("lock " + path, errno);
  }
  return fd;
}

std::string Quote(std::string_view s) { return "'" + std::string(s) + "'"; }

// Appends one block's extent to `out`, merging with the previous extent when it
// continues it.
void AppendBlock(std::vector<MapExtent>* out, uint64_t logical, uint64_t block_size,
                 uint64_t physical, uint64_t generation, ExtentState state) {
  if (!out->empty()) {
    MapExtent& last = out->back();
    bool continues = last.logical + last.length == logical && last.state == state &&
                     (state == ExtentState::kHole ||
                      (last.generation == generation && last.physical + last.length == physical));
    if (continues) {
      last.length += block_size;
      return;
    }
  }
  out->push_back(MapExtent{logical, block_size, physical, generation, state});
}

uint64_t Now() { return static_cast<uint64_t>(std::time(nullptr)); }

}  // namespace

std::string ShrinkAlignmentError(std::string_view name, uint64_t size_bytes, uint32_t block_size) {
  return "shrinking volume " + Quote(name) + " to " + std::to_string(size_bytes) +
         " bytes: a shrink must end on a pool block boundary (a multiple of " +
         std::to_string(block_size) + "), or the cut block would keep old data past the end " +
         "that a later grow would expose";
}

Status ValidateVolumeName(std::string_view name) {
  if (name.empty() || name.size() > kMaxVolumeNameLength) {
    return Status::InvalidArgument("volume name must be 1..128 characters, got " +
                                   std::to_string(name.size()));
  }
  if (name[0] == '.') return Status::InvalidArgument("volume name must not start with '.'");
  for (char c : name) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-';
    if (!ok) {
      return Status::InvalidArgument("volume name " + Quote(name) +
                                     " has a character outside [A-Za-z0-9._-]");
    }
  }
  return Status::Ok();
}

template <typename Fn>
Status VolumeStore::InWriteTxn(Fn&& fn) {
  try {
    auto txn = meta_->BeginWrite();
    Status s = fn(txn.get());
    if (!s.ok()) return s;
    txn->Commit();
    return Status::Ok();
  } catch (const StatusError& e) {
    if (e.status().code() == StatusCode::kCorruption ||
        e.status().code() == StatusCode::kInternal) {
      logger_.Errorf("metadata transaction failed: %s", e.status().ToString().c_str());
    }
    return e.status();
  }
}

Status VolumeStore::InitMetadata(const protocol::Superblock& sb, const std::string& meta_dir, bool force) {
  if (::mkdir(meta_dir.c_str(), 0700) != 0 && errno != EEXIST) {
    return Status::FromErrno("create metadata directory " + meta_dir, errno);
  }
  auto lock = LockMetaDir(meta_dir);
  if (!lock.ok()) return lock.status();
  std::string data_file = meta_dir + "/data.mdb";
  if (force) {
    if (::unlink(data_file.c_str()) != 0 && errno != ENOENT) {
      return Status::FromErrno("remove " + data_file, errno);
    }
    ::unlink((meta_dir + "/lock.mdb").c_str());
  }
  auto store = MetadataStore::Open(meta_dir);
  if (!store.ok()) return store.status();
  try {
    auto txn = (*store)->BeginWrite();
    if (txn->Get(Table::kMeta, kMetaPoolUuid) || txn->EntryCount(Table::kVolumes) > 0) {
      return Status::AlreadyExists("metadata directory " + meta_dir +
                                   " already holds tapmap metadata (use --force to replace it)");
    }
    txn->Put(Table::kMeta, kMetaFormatVersion, EncodeU32(kMetadataFormatVersion));
    txn->Put(Table::kMeta, kMetaPoolUuid,
             std::string_view(reinterpret_cast<const char*>(sb.uuid.data()), sb.uuid.size()));
    txn->Put(Table::kMeta, kMetaBlockSize, EncodeU32(sb.block_size));
    txn->PutMetaU64(kMetaTotalBlocks, sb.total_blocks);
    txn->PutMetaU64(kMetaFreeBlocks, sb.total_blocks);
    txn->PutMetaU64(kMetaNextGeneration, 1);
    txn->PutMetaU64(kMetaNextNodeId, 1);
    txn->PutMetaU64(kMetaNextVolumeId, 1);
    txn->PutMetaU64(kMetaNextVersionSet, 1);
    txn->Put(Table::kFree, EncodeKey64(0), EncodeU64(sb.total_blocks));
    txn->Commit();
  } catch (const StatusError& e) {
    return e.status();
  }
  return Status::Ok();
}

VolumeStore::VolumeStore(const protocol::Superblock& sb, std::unique_ptr<MetadataStore> meta, UniqueFd lock,
                         Logger logger)
    : sb_(sb), meta_(std::move(meta)), lock_(std::move(lock)), logger_(std::move(logger)) {}

VolumeStore::~VolumeStore() = default;

Result<std::unique_ptr<VolumeStore>> VolumeStore::Open(const protocol::Superblock& sb,
                                                       const std::string& meta_dir, Logger logger) {
  auto lock = LockMetaDir(meta_dir);
  if (!lock.ok()) return lock.status();
  if (::access((meta_dir + "/data.mdb").c_str(), F_OK) != 0) {
    return Status::NotFound("no metadata in " + meta_dir + " (run mapserver format)");
  }
  auto meta = MetadataStore::Open(meta_dir);
  if (!meta.ok()) return meta.status();
  std::unique_ptr<VolumeStore> store(
      new VolumeStore(sb, std::move(*meta), std::move(*lock), std::move(logger)));
  try {
    auto txn = store->meta_->BeginRead();
    auto version = txn->Get(Table::kMeta, kMetaFormatVersion);
    if (!version) return Status::NotFound("no metadata in " + meta_dir + " (run mapserver format)");
    if (DecodeU32(*version) != kMetadataFormatVersion) {
      return Status::NotSupported("metadata format version in " + meta_dir + " is not " +
                                  std::to_string(kMetadataFormatVersion));
    }
    auto uuid = txn->Get(Table::kMeta, kMetaPoolUuid);
    if (!uuid || uuid->size() != sb.uuid.size() ||
        !std::equal(uuid->begin(), uuid->end(), reinterpret_cast<const char*>(sb.uuid.data()))) {
      return Status::InvalidArgument("metadata in " + meta_dir + " belongs to another pool than " +
                                     protocol::FormatUuid(sb.uuid));
    }
    auto bs = txn->Get(Table::kMeta, kMetaBlockSize);
    if (!bs || DecodeU32(*bs) != sb.block_size ||
        txn->GetMetaU64(kMetaTotalBlocks, 0) != sb.total_blocks) {
      return Status::Corruption("metadata in " + meta_dir + " disagrees with the pool geometry");
    }
    store->next_generation_ = txn->GetMetaU64(kMetaNextGeneration, 1);
    store->generation_high_water_ = store->next_generation_;
  } catch (const StatusError& e) {
    return e.status();
  }
  return store;
}

Result<VolumeRecord> VolumeStore::LoadVolume(Txn* txn, std::string_view name) {
  auto bytes = txn->Get(Table::kVolumes, name);
  if (!bytes) return Status::NotFound("volume " + Quote(name) + " does not exist");
  auto record = DecodeVolumeRecord(*bytes);
  if (!record.ok()) return record.status().WithContext("volume " + Quote(name));
  return record;
}

VolumeDescription VolumeStore::DescribeIn(Txn* txn, std::string_view name,
                                          const VolumeRecord& record) {
  VolumeDescription d;
  d.name = std::string(name);
  d.record = record;
  if (record.parent_id != 0) {
    auto parent = LoadVolume(txn, record.parent_name);
    if (parent.ok() && parent->id == record.parent_id) d.parent = record.parent_name;
  }
  MapTree tree(txn, nullptr);
  if (record.root != 0 && tree.NodeRefs(record.root) == 1) {
    d.exclusive_blocks = tree.CountExclusive(record);
  }
  d.shared_blocks = record.mapped_blocks - std::min(record.mapped_blocks, d.exclusive_blocks);
  return d;
}

Result<VolumeRecord> VolumeStore::Record(std::string_view name) {
  TAPMAP_RETURN_IF_ERROR(ValidateVolumeName(name));
  try {
    auto txn = meta_->BeginRead();
    return LoadVolume(txn.get(), name);
  } catch (const StatusError& e) {
    return e.status();
  }
}

Result<VolumeDescription> VolumeStore::Describe(std::string_view name) {
  TAPMAP_RETURN_IF_ERROR(ValidateVolumeName(name));
  try {
    auto txn = meta_->BeginRead();
    auto record = LoadVolume(txn.get(), name);
    if (!record.ok()) return record.status();
    return DescribeIn(txn.get(), name, *record);
  } catch (const StatusError& e) {
    return e.status();
  }
}

Result<std::vector<VolumeStore::DiffExtent>> VolumeStore::Diff(std::string_view from, std::string_view to,
                                                                uint64_t first_block, size_t max_extents,
                                                                uint64_t* next_block, uint64_t* nodes_visited) {
  TAPMAP_RETURN_IF_ERROR(ValidateVolumeName(from));
  TAPMAP_RETURN_IF_ERROR(ValidateVolumeName(to));
  if (max_extents == 0) return Status::InvalidArgument("diff: maxExtents must be at least 1");
  try {
    auto txn = meta_->BeginRead();
    auto a = LoadVolume(txn.get(), from);
    if (!a.ok()) return a.status();
    auto b = LoadVolume(txn.get(), to);
    if (!b.ok()) return b.status();
    if (a->version_set != b->version_set) {
      return Status::InvalidArgument("volumes '" + std::string(from) + "' and '" + std::string(to) +
                                     "' are not of one version set: nothing to compare by the map");
    }
    const uint64_t bs = sb_.block_size;
    const uint64_t last = (b->size_bytes + bs - 1) / bs;
    std::vector<DiffExtent> out;
    *next_block = 0;
    MapTree tree(txn.get(), nullptr);
    tree.Diff(*a, *b, first_block, last, [&](uint64_t lblock, const LeafEntry& e) {
      uint64_t offset = lblock * bs;
      uint64_t length = std::min(bs, b->size_bytes - offset);
      if (!out.empty() && out.back().offset + out.back().length == offset && out.back().zero == e.hole()) {
        out.back().length += length;
        return true;
      }
      if (out.size() == max_extents) {
        *next_block = lblock;
        return false;
      }
      out.push_back(DiffExtent{offset, length, e.hole()});
      return true;
    });
    if (nodes_visited != nullptr) *nodes_visited = tree.diff_nodes_visited();
    return out;
  } catch (const StatusError& e) {
    return e.status();
  }
}

Result<std::vector<ByteRange>> VolumeStore::SharedRanges(std::string_view name, uint64_t first_block,
                                                          size_t max_ranges, uint64_t max_scanned,
                                                          uint64_t* next_block) {
  TAPMAP_RETURN_IF_ERROR(ValidateVolumeName(name));
  if (max_ranges == 0 || max_scanned == 0) {
    return Status::InvalidArgument("sharedRanges: maxRanges and the scan bound must be at least 1");
  }
  try {
    auto txn = meta_->BeginRead();
    auto v = LoadVolume(txn.get(), name);
    if (!v.ok()) return v.status();
    const uint64_t bs = sb_.block_size;
    const uint64_t last = (v->size_bytes + bs - 1) / bs;
    std::vector<ByteRange> out;
    *next_block = 0;
    uint64_t scanned = 0;
    MapTree tree(txn.get(), nullptr);
    tree.ForEachMapped(*v, first_block, last, [&](uint64_t lblock, const LeafEntry&, bool shared) {
      if (shared) {
        const uint64_t offset = lblock * bs;
        const uint64_t length = std::min(bs, v->size_bytes - offset);
        if (!out.empty() && out.back().offset + out.back().length == offset) {
          out.back().length += length;
        } else if (out.size() == max_ranges) {
          *next_block = lblock;
          return false;
        } else {
          out.push_back(ByteRange{offset, length});
        }
      }
      if (++scanned == max_scanned && lblock + 1 < last) {
        *next_block = lblock + 1;
        return false;
      }
      return true;
    });
    return out;
  } catch (const StatusError& e) {
    return e.status();
  }
}

Result<std::vector<VolumeDescription>> VolumeStore::List() {
  try {
    std::vector<VolumeDescription> out;
    auto txn = meta_->BeginRead();
    auto cursor = txn->OpenCursor(Table::kVolumes);
    for (bool ok = cursor->First(); ok; ok = cursor->Next()) {
      auto record = DecodeVolumeRecord(cursor->value());
      if (!record.ok()) return record.status();
      out.push_back(DescribeIn(txn.get(), cursor->key(), *record));
    }
    return out;
  } catch (const StatusError& e) {
    return e.status();
  }
}

Status VolumeStore::PutMeta(const std::string& key, const std::string& value) {
  return InWriteTxn([&](Txn* txn) -> Status {
    txn->Put(Table::kMeta, key, value);
    return Status::Ok();
  });
}

Status VolumeStore::DeleteMeta(const std::string& key) {
  {
    auto txn = meta_->BeginRead();
    if (!txn->Get(Table::kMeta, key)) return Status::Ok();  // no write transaction for nothing
  }
  return InWriteTxn([&](Txn* txn) -> Status {
    txn->Delete(Table::kMeta, key);
    return Status::Ok();
  });
}

Status VolumeStore::RecordLease(const LeaseRecord& record) {
  return PutMeta(std::string(kMetaLeasePrefix) + record.volume, EncodeLeaseRecord(record));
}

Status VolumeStore::ForgetLease(std::string_view volume) {
  return DeleteMeta(std::string(kMetaLeasePrefix) + std::string(volume));
}

Result<std::vector<LeaseRecord>> VolumeStore::LeaseRecords() {
  std::vector<LeaseRecord> out;
  try {
    auto txn = meta_->BeginRead();
    auto cursor = txn->OpenCursor(Table::kMeta);
    for (bool ok = cursor->SeekAtOrAfter(kMetaLeasePrefix); ok; ok = cursor->Next()) {
      std::string_view key = cursor->key();
      if (key.substr(0, kMetaLeasePrefix.size()) != kMetaLeasePrefix) break;
      auto record = DecodeLeaseRecord(key.substr(kMetaLeasePrefix.size()), cursor->value());
      if (!record.ok()) return record.status();
      out.push_back(std::move(*record));
    }
  } catch (const StatusError& e) {
    return e.status();
  }
  return out;
}

Status VolumeStore::RecordInstance(const InstanceRecord& record) { return PutMeta(InstanceKey(record), ""); }

Status VolumeStore::ForgetInstance(const InstanceRecord& record) { return DeleteMeta(InstanceKey(record)); }

Result<std::vector<InstanceRecord>> VolumeStore::InstanceRecords() {
  std::vector<InstanceRecord> out;
  try {
    auto txn = meta_->BeginRead();
    auto cursor = txn->OpenCursor(Table::kMeta);
    for (bool ok = cursor->SeekAtOrAfter(kMetaInstancePrefix); ok; ok = cursor->Next()) {
      if (cursor->key().substr(0, kMetaInstancePrefix.size()) != kMetaInstancePrefix) break;
      auto record = DecodeInstanceKey(cursor->key());
      if (!record.ok()) return record.status();
      out.push_back(std::move(*record));
    }
  } catch (const StatusError& e) {
    return e.status();
  }
  return out;
}

Result<PoolFigures> VolumeStore::Stats() {
  try {
    PoolFigures f;
    auto txn = meta_->BeginRead();
    f.total_blocks = sb_.total_blocks;
    uint64_t free_blocks = FreeSpace::FreeBlocks(txn.get());
    f.reserved_blocks = ReservedBlocks();
    f.free_blocks = free_blocks - std::min<uint64_t>(free_blocks, unavailable_blocks_.size());
    std::set<uint64_t> sets;
    auto cursor = txn->OpenCursor(Table::kVolumes);
    for (bool ok = cursor->First(); ok; ok = cursor->Next()) {
      auto record = DecodeVolumeRecord(cursor->value());
      if (!record.ok()) return record.status();
      ++f.volumes;
      sets.insert(record->version_set);
    }
    f.version_sets = static_cast<uint32_t>(sets.size());
    f.metadata_bytes = meta_->UsedBytes();
    return f;
  } catch (const StatusError& e) {
    return e.status();
  }
}

Result<VolumeDescription> VolumeStore::Create(std::string_view name, uint64_t size_bytes) {
  TAPMAP_RETURN_IF_ERROR(ValidateVolumeName(name));
  if (size_bytes == 0 || !IsAligned(size_bytes, kSectorSize) || size_bytes > kMaxVolumeBytes) {
    return Status::InvalidArgument(
        "volume size must be a positive multiple of 512 up to 1 PiB, got " +
        std::to_string(size_bytes));
  }
  Status s = InWriteTxn([&](Txn* txn) -> Status {
    if (txn->Get(Table::kVolumes, name)) {
      return Status::AlreadyExists("volume " + Quote(name) + " already exists");
    }
    VolumeRecord r;
    r.kind = VolumeRecord::Kind::kBase;
    r.size_bytes = size_bytes;
    r.depth = DepthForBlocks((size_bytes + sb_.block_size - 1) / sb_.block_size);
    r.id = txn->GetMetaU64(kMetaNextVolumeId, 1);
    r.version_set = txn->GetMetaU64(kMetaNextVersionSet, 1);
    r.created_unix_seconds = Now();
    txn->PutMetaU64(kMetaNextVolumeId, r.id + 1);
    txn->PutMetaU64(kMetaNextVersionSet, r.version_set + 1);
    txn->Put(Table::kVolumes, name, EncodeVolumeRecord(r));
    return Status::Ok();
  });
  if (!s.ok()) return s;
  logger_.Infof("created volume %.*s (%s)", static_cast<int>(name.size()), name.data(),
                FormatSize(size_bytes).c_str());
  return Describe(name);
}

Result<VolumeDescription> VolumeStore::Copy(std::string_view source, std::string_view name,
                                            bool snapshot) {
  TAPMAP_RETURN_IF_ERROR(ValidateVolumeName(source));
  TAPMAP_RETURN_IF_ERROR(ValidateVolumeName(name));
  Status s = InWriteTxn([&](Txn* txn) -> Status {
    auto src = LoadVolume(txn, source);
    if (!src.ok()) return src.status();
    if (txn->Get(Table::kVolumes, name)) {
      return Status::AlreadyExists("volume " + Quote(name) + " already exists");
    }
    VolumeRecord r = *src;
    r.kind = snapshot ? VolumeRecord::Kind::kSnapshot : VolumeRecord::Kind::kClone;
    r.read_only = snapshot;
    r.id = txn->GetMetaU64(kMetaNextVolumeId, 1);
    txn->PutMetaU64(kMetaNextVolumeId, r.id + 1);
    r.created_unix_seconds = Now();
    r.parent_id = src->id;
    r.parent_name = std::string(source);
    MapTree tree(txn, nullptr);
    tree.AddRootRef(r.root);
    txn->Put(Table::kVolumes, name, EncodeVolumeRecord(r));
    return Status::Ok();
  });
  if (!s.ok()) return s;
  logger_.Infof("%s %.*s -> %.*s", snapshot ? "snapshot" : "clone", static_cast<int>(source.size()),
                source.data(), static_cast<int>(name.size()), name.data());
  return Describe(name);
}

Result<VolumeDescription> VolumeStore::Snapshot(std::string_view source, std::string_view name) {
  return Copy(source, name, true);
}

Result<VolumeDescription> VolumeStore::Clone(std::string_view source, std::string_view name) {
  return Copy(source, name, false);
}

Status VolumeStore::Delete(std::string_view name) {
  TAPMAP_RETURN_IF_ERROR(ValidateVolumeName(name));
  uint64_t volume_id = 0;
  Status s = InWriteTxn([&](Txn* txn) -> Status {
    auto v = LoadVolume(txn, name);
    if (!v.ok()) return v.status();
    volume_id = v->id;
    FreeSpace free_space(txn);
    MapTree tree(txn, &free_space);
    tree.DropRoot(&*v);
    tree.Flush();
    free_space.Flush();
    txn->Delete(Table::kVolumes, name);
    txn->Delete(Table::kMeta, std::string(kMetaLeasePrefix) + std::string(name));  // if any
    return Status::Ok();
  });
  if (!s.ok()) return s;
  DropReservationsBeyond(volume_id, 0);
  logger_.Infof("deleted volume %.*s", static_cast<int>(name.size()), name.data());
  return Status::Ok();
}

Result<VolumeDescription> VolumeStore::Rename(std::string_view name, std::string_view new_name) {
  TAPMAP_RETURN_IF_ERROR(ValidateVolumeName(name));
  TAPMAP_RETURN_IF_ERROR(ValidateVolumeName(new_name));
  VolumeDescription out;
  Status s = InWriteTxn([&](Txn* txn) -> Status {
    auto v = LoadVolume(txn, name);
    if (!v.ok()) return v.status();
    if (name == new_name) {
      out = DescribeIn(txn, name, *v);
      return Status::Ok();
    }
    if (txn->Get(Table::kVolumes, new_name)) {
      return Status::AlreadyExists("volume " + Quote(new_name) + " already exists");
    }
    // Children name their parent: follow the rename (a parent that is gone stays gone).
    std::vector<std::pair<std::string, VolumeRecord>> children;
    auto cursor = txn->OpenCursor(Table::kVolumes);
    for (bool ok = cursor->First(); ok; ok = cursor->Next()) {
      auto child = DecodeVolumeRecord(cursor->value());
      if (!child.ok()) return child.status();
      if (child->parent_id == v->id && child->parent_name == name) {
        child->parent_name = std::string(new_name);
        children.emplace_back(std::string(cursor->key()), *child);
      }
    }
    for (auto& [child_name, record] : children) txn->Put(Table::kVolumes, child_name, EncodeVolumeRecord(record));
    txn->Delete(Table::kVolumes, name);
    txn->Put(Table::kVolumes, new_name, EncodeVolumeRecord(*v));
    txn->Delete(Table::kMeta, std::string(kMetaLeasePrefix) + std::string(name));  // if any
    out = DescribeIn(txn, new_name, *v);
    return Status::Ok();
  });
  if (!s.ok()) return s;
  logger_.Infof("renamed volume %s to %s", Quote(name).c_str(), Quote(new_name).c_str());
  return out;
}

Result<VolumeDescription> VolumeStore::Resize(std::string_view name, uint64_t size_bytes,
                                              bool allow_shrink) {
  TAPMAP_RETURN_IF_ERROR(ValidateVolumeName(name));
  if (size_bytes == 0 || !IsAligned(size_bytes, kSectorSize) || size_bytes > kMaxVolumeBytes) {
    return Status::InvalidArgument(
        "volume size must be a positive multiple of 512 up to 1 PiB, got " +
        std::to_string(size_bytes));
  }
  uint64_t volume_id = 0;
  uint64_t new_blocks = (size_bytes + sb_.block_size - 1) / sb_.block_size;
  Status s = InWriteTxn([&](Txn* txn) -> Status {
    auto v = LoadVolume(txn, name);
    if (!v.ok()) return v.status();
    if (v->read_only) return Status::ReadOnly("volume " + Quote(name) + " is a read-only snapshot");
    if (size_bytes < v->size_bytes && !allow_shrink) {
      return Status::InvalidArgument("shrinking volume " + Quote(name) + " from " +
                                     std::to_string(v->size_bytes) + " to " +
                                     std::to_string(size_bytes) + " needs allowShrink");
    }
    if (size_bytes < v->size_bytes && size_bytes % sb_.block_size != 0) {
      return Status::InvalidArgument(ShrinkAlignmentError(name, size_bytes, sb_.block_size));
    }
    volume_id = v->id;
    uint64_t old_blocks = (v->size_bytes + sb_.block_size - 1) / sb_.block_size;
    FreeSpace free_space(txn);
    MapTree tree(txn, &free_space);
    if (new_blocks < old_blocks) tree.Clear(&*v, new_blocks, old_blocks);
    tree.Grow(&*v, DepthForBlocks(new_blocks));
    v->size_bytes = size_bytes;
    tree.Flush();
    free_space.Flush();
    txn->Put(Table::kVolumes, name, EncodeVolumeRecord(*v));
    return Status::Ok();
  });
  if (!s.ok()) return s;
  DropReservationsBeyond(volume_id, new_blocks);
  logger_.Infof("resized volume %.*s to %s", static_cast<int>(name.size()), name.data(),
                FormatSize(size_bytes).c_str());
  return Describe(name);
}

Status VolumeStore::ValidateRange(const VolumeRecord& v, uint64_t offset, uint64_t length,
                                  const char* what) {
  if (length == 0 || !IsAligned(offset, kSectorSize) || !IsAligned(length, kSectorSize)) {
    return Status::InvalidArgument(std::string(what) + " range " + std::to_string(offset) + "+" +
                                   std::to_string(length) +
                                   " must have a non-zero length and be 512-byte aligned");
  }
  if (!RangeWithin(offset, length, v.size_bytes)) {
    return Status::InvalidArgument(std::string(what) + " range " + std::to_string(offset) + "+" +
                                   std::to_string(length) + " is beyond the volume's end (" +
                                   std::to_string(v.size_bytes) + ")");
  }
  return Status::Ok();
}

Result<std::vector<MapExtent>> VolumeStore::Map(std::string_view name, uint64_t offset,
                                                uint64_t length, uint64_t writer_epoch,
                                                uint64_t* size_bytes) {
  try {
    auto txn = meta_->BeginRead();
    auto v = LoadVolume(txn.get(), name);
    if (!v.ok()) return v.status();
    TAPMAP_RETURN_IF_ERROR(ValidateRange(*v, offset, length, "map"));
    if (size_bytes != nullptr) *size_bytes = v->size_bytes;
    const uint64_t bs = sb_.block_size;
    uint64_t first = offset / bs;
    uint64_t last = (offset + length + bs - 1) / bs;
    std::vector<MapExtent> out;
    uint64_t next = first;  // first logical block not yet described
    bool truncated = false;
    auto add_hole_until = [&](uint64_t end) {
      if (end <= next) return;
      if (!out.empty() && out.back().state == ExtentState::kHole) {
        out.back().length += (end - next) * bs;
      } else {
        out.push_back(MapExtent{next * bs, (end - next) * bs, 0, 0, ExtentState::kHole});
      }
      next = end;
    };
    MapTree tree(txn.get(), nullptr);
    tree.ForEachMapped(*v, first, last, [&](uint64_t lblock, const LeafEntry& e, bool shared) {
      add_hole_until(lblock);
      bool owned = !shared && !v->read_only && writer_epoch != kNoWriter && e.generation > writer_epoch;
      ExtentState state = owned ? ExtentState::kOwned : ExtentState::kShared;
      AppendBlock(&out, lblock * bs, bs, sb_.BlockOffset(e.block), e.generation, state);
      next = lblock + 1;
      if (out.size() >= kMaxExtentsPerMap) {
        truncated = true;
        return false;
      }
      return true;
    });
    if (!truncated) add_hole_until(last);
    return out;
  } catch (const StatusError& e) {
    return e.status();
  }
}

Result<std::vector<MapExtent>> VolumeStore::PrepareWrite(OpenerId opener, std::string_view name,
                                                         const std::vector<ByteRange>& ranges,
                                                         uint64_t lease_epoch) {
  if (ranges.empty() || ranges.size() > kMaxRangesPerCall) {
    return Status::InvalidArgument("prepareWrite takes 1.." + std::to_string(kMaxRangesPerCall) +
                                   " ranges, got " + std::to_string(ranges.size()));
  }
  const uint64_t bs = sb_.block_size;
  // What each logical block gets: an existing owned block, this opener's existing
  // reservation, or a new block (block assigned below).
  struct Plan {
    uint64_t lblock;
    LeafEntry entry;
    ExtentState state;  // kOwned for all; kHole marks "needs a new block"
  };
  std::vector<Plan> plans;
  uint64_t volume_id = 0;
  std::vector<BlockRun> runs;
  uint64_t needed = 0;
  auto& mine = reservations_[opener];
  try {
    auto txn = meta_->BeginRead();
    auto v = LoadVolume(txn.get(), name);
    if (!v.ok()) return v.status();
    if (v->read_only) return Status::ReadOnly("volume " + Quote(name) + " is read-only");
    if (mine.volume_id != 0 && mine.volume_id != v->id) {
      return Status::Aborted("volume " + Quote(name) + " was replaced since it was opened");
    }
    volume_id = v->id;
    // Logical block intervals, sorted and merged.
    std::vector<std::pair<uint64_t, uint64_t>> intervals;
    for (const ByteRange& r : ranges) {
      TAPMAP_RETURN_IF_ERROR(ValidateRange(*v, r.offset, r.length, "prepareWrite"));
      intervals.emplace_back(r.offset / bs, (r.offset + r.length + bs - 1) / bs);
    }
    std::sort(intervals.begin(), intervals.end());
    std::vector<std::pair<uint64_t, uint64_t>> merged;
    uint64_t total = 0;
    for (auto& iv : intervals) {
      if (!merged.empty() && iv.first <= merged.back().second) {
        merged.back().second = std::max(merged.back().second, iv.second);
      } else {
        merged.push_back(iv);
      }
    }
    for (auto& iv : merged) total += iv.second - iv.first;
    if (total > kMaxBlocksPerPrepare) {
      return Status::InvalidArgument("prepareWrite covers " + std::to_string(total) +
                                     " blocks, more than " + std::to_string(kMaxBlocksPerPrepare));
    }
    MapTree tree(txn.get(), nullptr);
    for (auto& [first, last] : merged) {
      std::vector<std::pair<uint64_t, std::pair<LeafEntry, bool>>> mapped;
      tree.ForEachMapped(*v, first, last, [&](uint64_t lb, const LeafEntry& e, bool shared) {
        mapped.push_back({lb, {e, shared}});
        return true;
      });
      size_t m = 0;
      for (uint64_t lb = first; lb < last; ++lb) {
        auto reserved = mine.by_lblock.find(lb);
        if (m < mapped.size() && mapped[m].first < lb) ++m;
        bool is_mapped = m < mapped.size() && mapped[m].first == lb;
        if (reserved != mine.by_lblock.end()) {
          plans.push_back(
              {lb, {reserved->second.block, reserved->second.generation}, ExtentState::kOwned});
        } else if (is_mapped && !mapped[m].second.second &&
                   mapped[m].second.first.generation > lease_epoch) {
          // Allocated under this lease: written in place.
          plans.push_back({lb, mapped[m].second.first, ExtentState::kOwned});
        } else {
          plans.push_back({lb, {}, ExtentState::kHole});
          ++needed;
        }
      }
    }
    if (needed > 0) {
      uint64_t found = FreeSpace::FindFree(txn.get(), mine.hint, needed, unavailable_blocks_, &runs);
      if (found < needed) {
        return Status::NoSpace("pool has " + std::to_string(found) + " free blocks, " +
                               std::to_string(needed) + " needed");
      }
    }
  } catch (const StatusError& e) {
    return e.status();
  }
  uint64_t generation = 0;
  if (needed > 0) {
    auto g = NextGeneration();
    if (!g.ok()) return g.status();
    generation = *g;
  }
  mine.volume_id = volume_id;
  size_t run = 0;
  uint64_t in_run = 0;
  std::vector<MapExtent> out;
  for (Plan& p : plans) {
    if (p.state == ExtentState::kHole) {
      uint64_t block = runs[run].start + in_run;
      if (++in_run == runs[run].length) {
        ++run;
        in_run = 0;
      }
      p.entry = LeafEntry{block, generation};
      mine.by_lblock[p.lblock] = Reservation{block, generation};
      unavailable_blocks_.insert(block);
      mine.hint = block + 1;
    }
    AppendBlock(&out, p.lblock * bs, bs, sb_.BlockOffset(p.entry.block), p.entry.generation,
                ExtentState::kOwned);
  }
  return out;
}

Result<uint64_t> VolumeStore::NextGeneration() {
  if (next_generation_ >= generation_high_water_) {
    uint64_t mark = next_generation_ + kGenerationBatch;
    Status s = InWriteTxn([&](Txn* txn) -> Status {
      txn->PutMetaU64(kMetaNextGeneration, mark);
      return Status::Ok();
    });
    if (!s.ok()) return s;
    generation_high_water_ = mark;
  }
  return next_generation_++;
}

Status VolumeStore::Commit(OpenerId opener, std::string_view name,
                           const std::vector<MapExtent>& extents) {
  return CommitBatch({CommitRequest{opener, std::string(name), extents}})[0];
}

Status VolumeStore::PlanCommit(const CommitRequest& request, std::vector<CommitInstall>* installs) {
  const std::vector<MapExtent>& extents = request.extents;
  if (extents.size() > kMaxExtentsPerCommit) {
    return Status::InvalidArgument("commit takes at most " + std::to_string(kMaxExtentsPerCommit) +
                                   " extents, got " + std::to_string(extents.size()));
  }
  TAPMAP_RETURN_IF_ERROR(ValidateVolumeName(request.volume));
  const uint64_t bs = sb_.block_size;
  auto mine = reservations_.find(request.opener);
  for (const MapExtent& e : extents) {
    if (e.length == 0 || !IsAligned(e.length, bs) || !IsAligned(e.logical, bs) ||
        e.physical < sb_.data_offset || !IsAligned(e.physical - sb_.data_offset, bs) ||
        e.generation == 0) {
      return Status::InvalidArgument("commit extent " + std::to_string(e.logical) + "+" +
                                     std::to_string(e.length) + " @" + std::to_string(e.physical) +
                                     " is not a block-aligned extent returned by prepareWrite");
    }
    uint64_t n = e.length / bs;
    uint64_t first_block = (e.physical - sb_.data_offset) / bs;
    if (n > kMaxBlocksPerPrepare || first_block >= sb_.total_blocks ||
        n > sb_.total_blocks - first_block || installs->size() + n > kMaxBlocksPerPrepare) {
      return Status::InvalidArgument("commit extent @" + std::to_string(e.physical) +
                                     " lies outside the pool or the commit is too large");
    }
    for (uint64_t i = 0; i < n; ++i) {
      CommitInstall in;
      in.lblock = e.logical / bs + i;
      in.block = first_block + i;
      in.generation = e.generation;
      if (mine != reservations_.end()) {
        auto r = mine->second.by_lblock.find(in.lblock);
        in.reserved = r != mine->second.by_lblock.end() && r->second.block == in.block &&
                      r->second.generation == e.generation;
      }
      installs->push_back(in);
    }
  }
  std::sort(installs->begin(), installs->end(),
            [](const CommitInstall& a, const CommitInstall& b) { return a.lblock < b.lblock; });
  for (size_t i = 1; i < installs->size(); ++i) {
    if ((*installs)[i].lblock == (*installs)[i - 1].lblock) {
      return Status::InvalidArgument("commit names logical block " +
                                     std::to_string((*installs)[i].lblock) + " twice");
    }
  }
  return Status::Ok();
}

Status VolumeStore::ApplyCommit(Txn* txn, const CommitRequest& request,
                                std::vector<CommitInstall>* installs, std::set<uint64_t>* consumed,
                                CommitEffects* effects) {
  const uint64_t bs = sb_.block_size;
  const std::string& name = request.volume;
  auto v = LoadVolume(txn, name);
  if (!v.ok()) return v.status();
  if (v->read_only) return Status::ReadOnly("volume " + Quote(name) + " is read-only");
  auto mine = reservations_.find(request.opener);
  bool same_volume = mine != reservations_.end() && mine->second.volume_id == v->id;
  FreeSpace free_space(txn);
  MapTree tree(txn, &free_space);
  uint64_t nblocks = (v->size_bytes + bs - 1) / bs;
  std::vector<uint64_t> take;
  // Every check comes before the first change, so a refusal changes nothing.
  for (CommitInstall& in : *installs) {
    in.taken = in.reserved && same_volume && in.lblock < nblocks && consumed->count(in.block) == 0;
    if (in.taken) {
      take.push_back(in.block);
      continue;
    }
    // Not a reservation: acceptable only if it is already the current owned mapping.
    bool current = false;
    if (in.lblock < nblocks) {
      tree.ForEachMapped(
          *v, in.lblock, in.lblock + 1, [&](uint64_t, const LeafEntry& e, bool shared) {
            current = !shared && e.block == in.block && e.generation == in.generation;
            return false;
          });
    }
    if (!current) {
      for (CommitInstall& undo : *installs) undo.taken = false;
      return Status::Aborted("commit of logical block " + std::to_string(in.lblock) +
                             " names no live reservation of this opener (reclaimed, "
                             "revoked or never made)");
    }
  }
  if (take.empty()) return Status::Ok();
  std::sort(take.begin(), take.end());
  for (size_t i = 0; i < take.size();) {
    size_t j = i + 1;
    while (j < take.size() && take[j] == take[j - 1] + 1) ++j;
    free_space.Take(take[i], j - i);
    i = j;
  }
  for (const CommitInstall& in : *installs) {
    if (!in.taken) continue;
    tree.Set(&*v, in.lblock, LeafEntry{in.block, in.generation});
    effects->changed.push_back(in.lblock);
    consumed->insert(in.block);
  }
  tree.Flush();
  free_space.Flush();
  effects->freed = free_space.freed();
  txn->Put(Table::kVolumes, name, EncodeVolumeRecord(*v));
  return Status::Ok();
}

std::vector<Status> VolumeStore::CommitBatch(const std::vector<CommitRequest>& batch,
                                             std::vector<CommitEffects>* effects) {
  std::vector<Status> results(batch.size());
  std::vector<CommitEffects> effects_of(batch.size());
  if (effects != nullptr) effects->assign(batch.size(), CommitEffects{});
  std::vector<std::vector<CommitInstall>> installs(batch.size());
  bool any = false;
  for (size_t i = 0; i < batch.size(); ++i) {
    results[i] = PlanCommit(batch[i], &installs[i]);
    any = any || (results[i].ok() && !installs[i].empty());
  }
  if (!any) return results;
  std::set<uint64_t> consumed;
  Status s = InWriteTxn([&](Txn* txn) -> Status {
    for (size_t i = 0; i < batch.size(); ++i) {
      if (results[i].ok() && !installs[i].empty()) {
        results[i] = ApplyCommit(txn, batch[i], &installs[i], &consumed, &effects_of[i]);
        if (!results[i].ok()) effects_of[i] = CommitEffects{};
      }
    }
    return Status::Ok();
  });
  if (!s.ok()) {
    for (Status& r : results) {
      if (r.ok()) r = s;
    }
    return results;
  }
  for (size_t i = 0; i < batch.size(); ++i) {
    if (!results[i].ok()) continue;
    auto mine = reservations_.find(batch[i].opener);
    if (mine == reservations_.end()) continue;
    for (const CommitInstall& in : installs[i]) {
      if (!in.taken) continue;
      mine->second.by_lblock.erase(in.lblock);
      unavailable_blocks_.erase(in.block);
    }
  }
  if (effects != nullptr) *effects = std::move(effects_of);
  return results;
}

Status VolumeStore::Discard(std::string_view name, const std::vector<ByteRange>& ranges,
                            std::vector<uint64_t>* freed) {
  if (ranges.empty() || ranges.size() > kMaxRangesPerCall) {
    return Status::InvalidArgument("discard takes 1.." + std::to_string(kMaxRangesPerCall) +
                                   " ranges, got " + std::to_string(ranges.size()));
  }
  const uint64_t bs = sb_.block_size;
  return InWriteTxn([&](Txn* txn) -> Status {
    auto v = LoadVolume(txn, name);
    if (!v.ok()) return v.status();
    if (v->read_only) return Status::ReadOnly("volume " + Quote(name) + " is read-only");
    for (const ByteRange& r : ranges) {
      TAPMAP_RETURN_IF_ERROR(ValidateRange(*v, r.offset, r.length, "discard"));
    }
    FreeSpace free_space(txn);
    MapTree tree(txn, &free_space);
    for (const ByteRange& r : ranges) {
      tree.Clear(&*v, (r.offset + bs - 1) / bs, (r.offset + r.length) / bs);
    }
    tree.Flush();
    free_space.Flush();
    txn->Put(Table::kVolumes, name, EncodeVolumeRecord(*v));
    if (freed != nullptr) *freed = free_space.freed();
    return Status::Ok();
  });
}

void VolumeStore::Quarantine(const std::vector<uint64_t>& blocks) {
  for (uint64_t b : blocks) {
    if (quarantined_blocks_.insert(b).second) unavailable_blocks_.insert(b);
  }
}

void VolumeStore::EndQuarantine(const std::vector<uint64_t>& blocks) {
  for (uint64_t b : blocks) {
    if (quarantined_blocks_.erase(b) != 0) unavailable_blocks_.erase(b);
  }
}

void VolumeStore::DropReservations(OpenerId opener) {
  auto it = reservations_.find(opener);
  if (it == reservations_.end()) return;
  for (auto& [lb, r] : it->second.by_lblock) unavailable_blocks_.erase(r.block);
  reservations_.erase(it);
}

void VolumeStore::DropReservationsBeyond(uint64_t volume_id, uint64_t first_lblock) {
  for (auto& [opener, mine] : reservations_) {
    if (mine.volume_id != volume_id) continue;
    for (auto it = mine.by_lblock.lower_bound(first_lblock); it != mine.by_lblock.end();) {
      unavailable_blocks_.erase(it->second.block);
      it = mine.by_lblock.erase(it);
    }
  }
}

}  // namespace tapmap::mapserver
