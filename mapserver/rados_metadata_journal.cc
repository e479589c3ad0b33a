#include "mapserver/rados_metadata_journal.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <algorithm>
#include <map>
#include <set>

#include "common/unique_fd.h"

namespace tapmap::mapserver {
namespace {

constexpr const char* kHeadKey = "head";
constexpr const char* kHolderKey = "holder";
constexpr const char* kRecordPrefix = "j.";
constexpr size_t kReadBatch = 256;

std::string ToString(const librados::bufferlist& bl) {
  std::string s(bl.length(), '\0');
  if (!s.empty()) bl.begin().copy(bl.length(), s.data());
  return s;
}
librados::bufferlist ToBufferlist(std::string_view s) {
  librados::bufferlist bl;
  bl.append(s.data(), s.size());
  return bl;
}

}  // namespace

std::string JournalRecordKey(uint64_t seq) {
  char key[32];
  std::snprintf(key, sizeof(key), "j.%016" PRIx64, seq);
  return key;
}

RadosMetadataJournal::RadosMetadataJournal(rados::RadosCluster& cluster, std::string prefix, Logger logger,
                                           FatalHandler on_fatal)
    : cluster_(cluster), prefix_(std::move(prefix)), logger_(std::move(logger)), on_fatal_(std::move(on_fatal)) {}

std::string RadosMetadataJournal::ChunkOid(uint64_t generation, uint64_t writer, uint32_t n) const {
  char tail[80];
  std::snprintf(tail, sizeof(tail), ".meta.ckpt.%" PRIu64 ".%" PRIx64 ".%u", generation, writer, n);
  return prefix_ + tail;
}

void RadosMetadataJournal::Fatal(const Status& status) {
  if (on_fatal_) on_fatal_(status);
  logger_.Errorf("FATAL: metadata journal in RADOS: %s: stopping at once (no metadata change is acknowledged "
                 "that is not in RADOS)",
                 status.ToString().c_str());
  std::_Exit(3);
}

Result<JournalHead> RadosMetadataJournal::ReadHead() {
  std::map<std::string, librados::bufferlist> vals;
  int r = cluster_.ioctx().omap_get_vals_by_keys(journal_oid(), {kHeadKey}, &vals);
  if (r == -ENOENT || (r >= 0 && vals.count(kHeadKey) == 0)) {
    return Status::NotFound("no mapserver metadata in RADOS object " + journal_oid() + " (run mapserver format)");
  }
  if (r < 0) return rados::RadosStatus(r, "read the journal head of " + journal_oid());
  return DecodeJournalHead(ToString(vals[kHeadKey]));
}

Result<bool> RadosMetadataJournal::Exists() {
  auto head = ReadHead();
  if (head.ok()) return true;
  if (head.status().code() == StatusCode::kNotFound) return false;
  return head.status();
}

Status RadosMetadataJournal::UploadCheckpoint(const std::string& file, uint64_t generation, JournalHead* head) {
  UniqueFd fd(::open(file.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return Status::FromErrno("open " + file, errno);
  const uint64_t writer = cluster_.rados().get_instance_id();
  head->checkpoint_generation = generation;
  head->checkpoint_writer = writer;
  head->checkpoint_bytes = 0;
  head->checkpoint_chunks = 0;
  head->checkpoint_crc = 0;
  std::string chunk(kChunkBytes, '\0');
  for (;;) {
    size_t got = 0;
    while (got < chunk.size()) {
      ssize_t n = ::read(fd.get(), chunk.data() + got, chunk.size() - got);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return Status::FromErrno("read " + file, errno);
      if (n == 0) break;
      got += static_cast<size_t>(n);
    }
    if (got == 0) break;
    std::string_view data(chunk.data(), got);
    librados::ObjectWriteOperation op;
    op.write_full(ToBufferlist(data));
    const std::string oid = ChunkOid(generation, writer, head->checkpoint_chunks);
    if (int r = cluster_.ioctx().operate(oid, &op); r < 0) return rados::RadosStatus(r, "write checkpoint " + oid);
    head->checkpoint_crc = Crc32c(head->checkpoint_crc, data);
    head->checkpoint_bytes += got;
    head->checkpoint_chunks++;
    if (got < chunk.size()) break;
  }
  return Status::Ok();
}

void RadosMetadataJournal::DeleteCheckpoint(const JournalHead& head) {
  for (uint32_t n = 0; n < head.checkpoint_chunks; ++n) {
    const std::string oid = ChunkOid(head.checkpoint_generation, head.checkpoint_writer, n);
    int r = cluster_.ioctx().remove(oid);
    if (r < 0 && r != -ENOENT) logger_.Warnf("delete old checkpoint object %s: %d (left behind)", oid.c_str(), r);
  }
}

Status RadosMetadataJournal::Format(const std::string& meta_dir, bool force) {
  auto existing = ReadHead();
  if (existing.ok()) {
    if (!force) {
      return Status::AlreadyExists("RADOS object " + journal_oid() +
                                   " already holds mapserver metadata (use --force to replace it)");
    }
    DeleteCheckpoint(*existing);
  } else if (existing.status().code() != StatusCode::kNotFound && !force) {
    return existing.status();
  }
  if (force) {
    for (const std::string& oid : {journal_oid(), active_oid()}) {
      int r = cluster_.ioctx().remove(oid);
      if (r < 0 && r != -ENOENT) return rados::RadosStatus(r, "remove " + oid);
    }
  }
  const std::string copy = meta_dir + "/checkpoint.tmp";
  ::unlink(copy.c_str());
  {
    auto store = MetadataStore::Open(meta_dir);
    if (!store.ok()) return store.status();
    if (Status s = (*store)->CopyTo(copy); !s.ok()) return s;
  }
  JournalHead head;
  Status uploaded = UploadCheckpoint(copy, 1, &head);
  ::unlink(copy.c_str());
  if (!uploaded.ok()) return uploaded;
  head.first_seq = 1;
  librados::ObjectWriteOperation op;
  op.create(true);  // a concurrent format loses here
  op.omap_set({{kHeadKey, ToBufferlist(EncodeJournalHead(head))}});
  if (int r = cluster_.ioctx().operate(journal_oid(), &op); r < 0) {
    DeleteCheckpoint(head);
    return rados::RadosStatus(r, "create " + journal_oid());
  }
  head_ = head;
  next_seq_ = 1;
  return Status::Ok();
}

Status RadosMetadataJournal::ReadRecords(size_t max, JournalHead* head, std::vector<JournalRecord>* records) {
  librados::ObjectReadOperation op;
  std::map<std::string, librados::bufferlist> head_vals, vals;
  bool more = false;
  int r_head = 0, r_vals = 0;
  op.omap_get_vals_by_keys({kHeadKey}, &head_vals, &r_head);
  op.omap_get_vals2(JournalRecordKey(next_seq_ - 1), kRecordPrefix, max, &vals, &more, &r_vals);
  int r = cluster_.ioctx().operate(journal_oid(), &op, nullptr);
  if (r < 0) return rados::RadosStatus(r, "read the journal " + journal_oid());
  if (r_head < 0) return rados::RadosStatus(r_head, "read the journal head");
  if (r_vals < 0) return rados::RadosStatus(r_vals, "read journal records");
  if (head_vals.count(kHeadKey) == 0) return Status::Corruption("journal " + journal_oid() + " has no head");
  auto decoded_head = DecodeJournalHead(ToString(head_vals[kHeadKey]));
  if (!decoded_head.ok()) return decoded_head.status();
  *head = *decoded_head;
  uint64_t expected = next_seq_;
  for (auto& [key, value] : vals) {
    if (key != JournalRecordKey(expected)) break;  // a gap: the journal ends here
    auto record = DecodeJournalRecord(ToString(value));
    if (!record.ok()) return record.status();
    if (record->seq != expected) {
      return Status::Corruption("journal key " + key + " holds record " + std::to_string(record->seq));
    }
    records->push_back(std::move(*record));
    ++expected;
  }
  return Status::Ok();
}

Status RadosMetadataJournal::CatchUp(MetadataStore& store) {
  for (;;) {
    JournalHead head;
    std::vector<JournalRecord> records;
    if (Status s = ReadRecords(kReadBatch, &head, &records); !s.ok()) return s;
    if (head.first_seq > next_seq_) {
      return Status::Aborted("the journal was trimmed to seq " + std::to_string(head.first_seq) +
                             " past this replica's " + std::to_string(next_seq_) + " (a newer checkpoint)");
    }
    head_ = head;
    try {
      for (const JournalRecord& record : records) {
        store.Apply(record.ops);
        next_seq_ = record.seq + 1;
      }
    } catch (const StatusError& e) {
      return e.status();
    }
    if (records.size() < kReadBatch) return Status::Ok();
  }
}

Status RadosMetadataJournal::Restore(const std::string& meta_dir) {
  if (::mkdir(meta_dir.c_str(), 0700) != 0 && errno != EEXIST) {
    return Status::FromErrno("create metadata directory " + meta_dir, errno);
  }
  // The active may replace the checkpoint while we read it (and delete the old one):
  // then read the new head and start again.
  constexpr int kAttempts = 10;
  for (int attempt = 1;; ++attempt) {
    auto head = ReadHead();
    if (!head.ok()) return head.status();
    Status s = RestoreFrom(*head, meta_dir);
    if (s.ok() || attempt == kAttempts) return s;
    auto now = ReadHead();
    if (!now.ok()) return now.status();
    if (*now == *head) return s;  // not a race with a new checkpoint: a real fault
    logger_.Infof("restore: a new checkpoint (generation %llu) replaced the one being read; again",
                  static_cast<unsigned long long>(now->checkpoint_generation));
  }
}

Status RadosMetadataJournal::RestoreFrom(const JournalHead& the_head, const std::string& meta_dir) {
  const JournalHead* head = &the_head;
  const std::string partial = meta_dir + "/data.mdb.restore";
  ::unlink(partial.c_str());
  {
    UniqueFd fd(::open(partial.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
    if (!fd) return Status::FromErrno("create " + partial, errno);
    uint32_t crc = 0;
    uint64_t bytes = 0;
    for (uint32_t n = 0; n < head->checkpoint_chunks; ++n) {
      const std::string oid = ChunkOid(head->checkpoint_generation, head->checkpoint_writer, n);
      librados::bufferlist bl;
      int r = cluster_.ioctx().read(oid, bl, kChunkBytes, 0);
      if (r < 0) return rados::RadosStatus(r, "read checkpoint " + oid);
      std::string data = ToString(bl);
      crc = Crc32c(crc, data);
      bytes += data.size();
      for (size_t done = 0; done < data.size();) {
        ssize_t w = ::write(fd.get(), data.data() + done, data.size() - done);
        if (w < 0 && errno == EINTR) continue;
        if (w < 0) return Status::FromErrno("write " + partial, errno);
        done += static_cast<size_t>(w);
      }
    }
    if (bytes != head->checkpoint_bytes || crc != head->checkpoint_crc) {
      return Status::Corruption("checkpoint generation " + std::to_string(head->checkpoint_generation) + ": " +
                                std::to_string(bytes) + " bytes read, head says " +
                                std::to_string(head->checkpoint_bytes) + ", or a checksum mismatch");
    }
    if (::fsync(fd.get()) != 0) return Status::FromErrno("fsync " + partial, errno);
  }
  const std::string data_file = meta_dir + "/data.mdb";
  if (::rename(partial.c_str(), data_file.c_str()) != 0) return Status::FromErrno("rename to " + data_file, errno);
  ::unlink((meta_dir + "/lock.mdb").c_str());
  head_ = *head;
  next_seq_ = head->first_seq;
  auto store = MetadataStore::Open(meta_dir);
  if (!store.ok()) return store.status();
  (*store)->SetSync(false);  // a working copy rebuilt from RADOS at every start
  Status s = CatchUp(**store);
  if (!s.ok()) return s;
  logger_.Infof("restored metadata from RADOS: checkpoint generation %llu, journal records %llu..%llu",
                static_cast<unsigned long long>(head->checkpoint_generation),
                static_cast<unsigned long long>(head->first_seq),
                static_cast<unsigned long long>(next_seq_ - 1));
  return Status::Ok();
}

void RadosMetadataJournal::Attach(MetadataStore* store, rados::RadosExclusiveLock* lock, uint32_t checkpoint_every) {
  store_ = store;
  lock_ = lock;
  checkpoint_every_ = checkpoint_every == 0 ? 1 : checkpoint_every;
  since_checkpoint_ = 0;
}

Result<std::string> RadosMetadataJournal::SwapHolder(rados::RadosExclusiveLock& lock, const std::string& address) {
  std::map<std::string, librados::bufferlist> vals;
  int r = cluster_.ioctx().omap_get_vals_by_keys(journal_oid(), {kHolderKey}, &vals);
  if (r < 0) return rados::RadosStatus(r, "read the previous holder from " + journal_oid());
  std::string previous = vals.count(kHolderKey) ? ToString(vals[kHolderKey]) : "";
  librados::ObjectWriteOperation op;
  lock.AssertHeld(&op);
  op.omap_set({{kHolderKey, ToBufferlist(address)}});
  r = cluster_.ioctx().operate(journal_oid(), &op);
  if (r < 0) return rados::RadosStatus(r, "record this server as the holder in " + journal_oid());
  return previous;
}

Status RadosMetadataJournal::Append(const std::vector<JournalOp>& ops) {
  if (lock_ == nullptr) return Status::Internal("metadata journal: Append before Attach");
  JournalRecord record{next_seq_, ops};
  librados::ObjectWriteOperation op;
  lock_->AssertHeld(&op);  // atomic with "still the active"
  op.omap_set({{JournalRecordKey(record.seq), ToBufferlist(EncodeJournalRecord(record))}});
  int r = cluster_.ioctx().operate(journal_oid(), &op);
  if (r < 0) {
    Fatal(rados::RadosStatus(r, "append journal record " + std::to_string(record.seq) +
                                    (r == -EBUSY ? " (the active lock is no longer ours)" : "")));
  }
  ++next_seq_;
  return Status::Ok();
}

void RadosMetadataJournal::Committed(const Status& status) {
  if (!status.ok()) Fatal(Status(status.code(), "local commit after a journal append: " + status.message()));
  if (++since_checkpoint_ < checkpoint_every_) return;
  // A failed checkpoint changes nothing (the head still names the old one, the journal
  // keeps every record): try again after another checkpoint_every records. Had the
  // lock been lost, the next append fails and ends the process.
  if (Status s = Checkpoint(); !s.ok()) {
    logger_.Warnf("metadata checkpoint failed (the journal keeps growing until one succeeds): %s",
                  s.ToString().c_str());
    since_checkpoint_ = 0;
  }
}

Status RadosMetadataJournal::Checkpoint() {
  if (store_ == nullptr || lock_ == nullptr) return Status::Internal("metadata journal: Checkpoint before Attach");
  const auto started = std::chrono::steady_clock::now();
  const std::string copy = store_->dir() + "/checkpoint.tmp";
  ::unlink(copy.c_str());
  if (Status s = store_->CopyTo(copy); !s.ok()) return s;
  // A generation never used before by this writer, even after a failed attempt whose
  // head update may have landed: a checkpoint's chunk objects are never rewritten.
  const uint64_t generation = std::max(head_.checkpoint_generation, last_generation_) + 1;
  last_generation_ = generation;
  JournalHead head;
  Status uploaded = UploadCheckpoint(copy, generation, &head);
  ::unlink(copy.c_str());
  if (!uploaded.ok()) return uploaded;
  head.first_seq = next_seq_;
  std::set<std::string> trimmed;
  for (uint64_t seq = head_.first_seq; seq < next_seq_; ++seq) trimmed.insert(JournalRecordKey(seq));
  librados::ObjectWriteOperation op;
  lock_->AssertHeld(&op);
  op.omap_set({{kHeadKey, ToBufferlist(EncodeJournalHead(head))}});
  if (!trimmed.empty()) op.omap_rm_keys(trimmed);
  if (int r = cluster_.ioctx().operate(journal_oid(), &op); r < 0) {
    DeleteCheckpoint(head);
    return rados::RadosStatus(r, "point the journal head at checkpoint " + std::to_string(head.checkpoint_generation));
  }
  DeleteCheckpoint(head_);
  logger_.Infof("metadata checkpoint generation %llu (%llu bytes) in %.3f s, journal trimmed before seq %llu",
                static_cast<unsigned long long>(head.checkpoint_generation),
                static_cast<unsigned long long>(head.checkpoint_bytes),
                std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count(),
                static_cast<unsigned long long>(head.first_seq));
  head_ = head;
  since_checkpoint_ = 0;
  return Status::Ok();
}

Status RadosMetadataJournal::Announce(const std::string& address) {
  librados::ObjectWriteOperation op;
  op.write_full(ToBufferlist(address + "\n"));
  if (int r = cluster_.ioctx().operate(active_oid(), &op); r < 0) {
    return rados::RadosStatus(r, "write " + active_oid());
  }
  return Status::Ok();
}

}  // namespace tapmap::mapserver
