// RadosMetadataJournal: the durable home of a RADOS pool's metadata
// (mapserver/doc/metadata_rados.md), after the CephFS MDS: a journal of every metadata
// transaction plus periodic checkpoints of the whole LMDB copy, in RADOS objects. The
// local LMDB directory is only the working copy, rebuilt from RADOS (Restore) whenever
// a server starts or takes over.
//
// Objects (prefix PREFIX of the pool location):
//   PREFIX.meta.journal           the active lock (cls lock "tapmap-active") and, in its
//                                 omap: "head" (JournalHead), "holder" (the active's
//                                 librados address) and one key "j.%016llx" per record
//   PREFIX.meta.ckpt.G.W.N        chunk N of checkpoint generation G written by client W
//   PREFIX.meta.active            the active's listen address, text (Announce)
// Every write to the journal object carries the lock's assert_locked: it is atomic
// with "this client still holds the active lock".
//
// Threading: one thread (the server's event loop) drives Append/Committed/Checkpoint;
// the cluster and lock may be shared with a renewal thread.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "common/logging.h"
#include "common/status.h"
#include "mapserver/journal_format.h"
#include "mapserver/metadata_journal.h"
#include "mapserver/metadata_store.h"
#include "rados/exclusive_lock.h"
#include "rados/rados_cluster.h"

namespace tapmap::mapserver {

class RadosMetadataJournal : public MetadataJournal {
 public:
  inline static constexpr const char* kLockName = "tapmap-active";
  inline static constexpr size_t kChunkBytes = 4 << 20;

  // Called when the journal cannot go on (an append or checkpoint failed: lock lost,
  // blocklisted, cluster unreachable). Must not return normally to the store: the
  // default logs and ends the process with exit status 3.
  using FatalHandler = std::function<void(const Status&)>;

  // `cluster` must outlive the journal. Nothing is read or written yet.
  RadosMetadataJournal(rados::RadosCluster& cluster, std::string prefix, Logger logger,
                       FatalHandler on_fatal = nullptr);

  std::string journal_oid() const { return prefix_ + ".meta.journal"; }
  std::string active_oid() const { return prefix_ + ".meta.active"; }

  // ---- without the lock ---------------------------------------------------------------
  // Whether the pool has RADOS metadata (a head).
  Result<bool> Exists();
  // Makes the metadata in `meta_dir` (freshly initialised, closed) the RADOS metadata:
  // checkpoint generation 1, empty journal. kAlreadyExists if there is a head, unless
  // `force` (then the old head, journal and checkpoint are replaced).
  Status Format(const std::string& meta_dir, bool force);
  // Replaces the LMDB files in `meta_dir` (created if missing; no store may have it
  // open) with the head's checkpoint and replays every journal record after it, up
  // to the first missing seq. Afterwards next_seq() is the seq after the last record.
  Status Restore(const std::string& meta_dir);
  // Applies to `store` the journal records from next_seq() on (a standby following
  // the active). kAborted if the journal was trimmed past next_seq() (a checkpoint
  // this replica missed): Restore again.
  Status CatchUp(MetadataStore& store);
  uint64_t next_seq() const { return next_seq_; }

  // ---- as the active --------------------------------------------------------------------
  // From now on this journal accepts Append for `store` (which must then SetJournal
  // it), guarded by `lock` (held by this client, on journal_oid()), and takes a
  // checkpoint every `checkpoint_every` records. Both must outlive the journal's use.
  void Attach(MetadataStore* store, rados::RadosExclusiveLock* lock, uint32_t checkpoint_every);
  // The previous active's recorded librados address ("" if none), and records
  // `address` (this client's) in its place, guarded by `lock`.
  Result<std::string> SwapHolder(rados::RadosExclusiveLock& lock, const std::string& address);
  Status Append(const std::vector<JournalOp>& ops) override;
  void Committed(const Status& status) override;
  // Uploads a checkpoint of the attached store, points the head at it (guarded) and
  // deletes the journal records and the checkpoint it replaces. On failure nothing
  // changed (the old head and all records stay); Committed only logs it.
  Status Checkpoint();
  // Writes `address` into active_oid().
  Status Announce(const std::string& address);

 private:
  std::string ChunkOid(uint64_t generation, uint64_t writer, uint32_t n) const;
  Result<JournalHead> ReadHead();
  Status RestoreFrom(const JournalHead& head, const std::string& meta_dir);
  Status UploadCheckpoint(const std::string& file, uint64_t generation, JournalHead* head);
  void DeleteCheckpoint(const JournalHead& head);
  // Reads up to `max` records from next_seq_ on, in order, stopping at a gap; also
  // returns the current head.
  Status ReadRecords(size_t max, JournalHead* head, std::vector<JournalRecord>* records);
  [[noreturn]] void Fatal(const Status& status);

  rados::RadosCluster& cluster_;
  const std::string prefix_;
  Logger logger_;
  FatalHandler on_fatal_;
  uint64_t next_seq_ = 1;
  JournalHead head_;
  MetadataStore* store_ = nullptr;
  rados::RadosExclusiveLock* lock_ = nullptr;
  uint32_t checkpoint_every_ = 1000;
  uint32_t since_checkpoint_ = 0;
  uint64_t last_generation_ = 0;  // the last checkpoint generation this writer tried
};

// "j.%016llx": the omap key of journal record `seq`.
std::string JournalRecordKey(uint64_t seq);

}  // namespace tapmap::mapserver
