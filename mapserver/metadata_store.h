// MetadataStore: the LMDB environment holding the mapserver's metadata (tables and
// encodings: mapserver/metadata_format.h), and transactions on it.
//
// Why LMDB (mapserver/doc/metadata_format.md): a copy-on-write B+tree, so a
// transaction is all-or-nothing and a crash at any moment leaves the last committed
// state; commit returns only after fsync (default sync mode; MDB_NOSYNC only with a
// journal, below), which makes every acknowledged change durable; one writer at a
// time and lock-free snapshot readers via mmap.
//
// With a journal (SetJournal, mapserver/metadata_journal.h) the store is the working
// copy of metadata whose durable home is the journal: each write Txn records its
// changes, Commit() appends them to the journal first and commits LMDB only after the
// journal acknowledged them, without fsync (MDB_NOSYNC: the journal is durable).
//
// Error handling: Txn methods throw StatusError (kIoError, kNoSpace when the map is
// full, kCorruption) because they sit deep inside tree and free-space code; the
// layer that starts a transaction catches and returns a Status. A Txn destroyed
// without Commit() is aborted: nothing it did is visible.
//
// Threading: the store may be used by one thread at a time (the server's event loop
// thread); at most one write Txn may exist at a time.
#pragma once

#include <lmdb.h>

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "common/status.h"
#include "mapserver/journal_format.h"
#include "mapserver/metadata_format.h"

namespace tapmap::mapserver {

class MetadataJournal;
class Txn;

class MetadataStore {
 public:
  inline static constexpr uint64_t kDefaultMapSize = 64ull << 30;  // virtual, sparse

  // Opens (creating the directory's data files if missing) the environment in `dir`,
  // which must exist. `map_size` bounds the store's size.
  static Result<std::unique_ptr<MetadataStore>> Open(const std::string& dir,
                                                     uint64_t map_size = kDefaultMapSize);
  ~MetadataStore();
  MetadataStore(const MetadataStore&) = delete;
  MetadataStore& operator=(const MetadataStore&) = delete;

  // Begins a transaction. Throws StatusError on failure.
  std::unique_ptr<Txn> BeginRead();
  std::unique_ptr<Txn> BeginWrite();

  // Bytes of the store in use (pages used * page size).
  uint64_t UsedBytes();
  const std::string& dir() const { return dir_; }

  // Sends every later write Txn's changes to `journal` before its local commit (null:
  // none), and stops fsyncing LMDB while one is set. `journal` must outlive the store
  // or be unset first. No write Txn may be open.
  void SetJournal(MetadataJournal* journal);
  // Whether each commit fsyncs (the default). Without, a crash may lose the latest
  // commits but never tears one: for a working copy whose durable home is elsewhere.
  void SetSync(bool sync);
  // Writes a consistent, compacted copy of the whole environment to the new file
  // `path` (mdb_env_copy2); no write Txn may be open on this thread.
  Status CopyTo(const std::string& path);
  // Applies a journal record's changes in one local transaction, without sending them
  // to the journal (replay of a record that is already durable). Throws StatusError.
  void Apply(const std::vector<JournalOp>& ops);

 private:
  MetadataStore(std::string dir, MDB_env* env) : dir_(std::move(dir)), env_(env) {}
  friend class Txn;

  std::string dir_;
  MDB_env* env_;
  std::array<MDB_dbi, kTableCount> dbi_{};
  MetadataJournal* journal_ = nullptr;
};

// A positioned iterator over one table of a Txn; valid while the Txn is.
class Cursor {
 public:
  ~Cursor();
  Cursor(const Cursor&) = delete;
  Cursor& operator=(const Cursor&) = delete;

  // Each positions the cursor and returns false if there is no such entry.
  bool First();
  bool Last();
  bool Next();
  bool Prev();
  bool SeekAtOrAfter(std::string_view key);  // first key >= `key`
  std::string_view key() const { return key_; }
  std::string_view value() const { return value_; }

 private:
  friend class Txn;
  explicit Cursor(MDB_cursor* cursor) : cursor_(cursor) {}
  bool Move(MDB_cursor_op op, std::string_view seek = {});

  MDB_cursor* cursor_;
  std::string_view key_;
  std::string_view value_;
};

class Txn {
 public:
  ~Txn();  // aborts unless committed
  Txn(const Txn&) = delete;
  Txn& operator=(const Txn&) = delete;

  // The value under `key`, or nullopt. The view is valid until the next write in this
  // Txn or its end.
  std::optional<std::string_view> Get(Table table, std::string_view key);
  void Put(Table table, std::string_view key, std::string_view value);
  // Returns false if the key did not exist.
  bool Delete(Table table, std::string_view key);
  std::unique_ptr<Cursor> OpenCursor(Table table);
  uint64_t EntryCount(Table table);

  // Conveniences for the integer encodings of metadata_format.h. GetU64/GetU32 throw
  // kCorruption on a present but malformed value and return `missing` if absent.
  uint64_t GetMetaU64(std::string_view key, uint64_t missing);
  void PutMetaU64(std::string_view key, uint64_t value);

  // Makes the transaction durable (fsync; with a journal: the journal's append) and
  // ends it. Throws on failure (the transaction is then aborted).
  void Commit();
  bool read_only() const { return read_only_; }

 private:
  friend class MetadataStore;
  Txn(MetadataStore* store, MDB_txn* txn, bool read_only, MetadataJournal* journal)
      : store_(store), txn_(txn), read_only_(read_only), journal_(journal) {}
  MDB_dbi Dbi(Table table) const { return store_->dbi_[static_cast<int>(table)]; }

  MetadataStore* store_;
  MDB_txn* txn_;
  bool read_only_;
  MetadataJournal* journal_;     // null: changes are not recorded
  std::vector<JournalOp> ops_;   // this Txn's changes, for the journal
};

// A Status for LMDB error `rc` during `what`.
Status LmdbStatus(std::string_view what, int rc);

}  // namespace tapmap::mapserver
