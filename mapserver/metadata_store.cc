#include "mapserver/metadata_store.h"

#include "mapserver/metadata_journal.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>

namespace tapmap::mapserver {
namespace {

MDB_val Val(std::string_view s) { return MDB_val{s.size(), const_cast<char*>(s.data())}; }
std::string_view View(const MDB_val& v) {
  return std::string_view(static_cast<const char*>(v.mv_data), v.mv_size);
}
void Check(std::string_view what, int rc) {
  if (rc != MDB_SUCCESS) throw StatusError(LmdbStatus(what, rc));
}

}  // namespace

Status LmdbStatus(std::string_view what, int rc) {
  std::string msg = "metadata store: " + std::string(what) + ": " + mdb_strerror(rc);
  switch (rc) {
    case MDB_MAP_FULL:
    case MDB_TXN_FULL:
      return Status::NoSpace(msg);
    case MDB_CORRUPTED:
    case MDB_PAGE_NOTFOUND:
    case MDB_INVALID:
    case MDB_VERSION_MISMATCH:
      return Status::Corruption(msg);
    default:
      return Status::IoError(msg);
  }
}

Result<std::unique_ptr<MetadataStore>> MetadataStore::Open(const std::string& dir,
                                                           uint64_t map_size) {
  MDB_env* env = nullptr;
  int rc = mdb_env_create(&env);
  if (rc != MDB_SUCCESS) return LmdbStatus("create environment", rc);
  std::unique_ptr<MetadataStore> store(new MetadataStore(dir, env));
  if ((rc = mdb_env_set_maxdbs(env, kTableCount)) != MDB_SUCCESS ||
      (rc = mdb_env_set_mapsize(env, map_size)) != MDB_SUCCESS) {
    return LmdbStatus("configure environment", rc);
  }
  rc = mdb_env_open(env, dir.c_str(), MDB_NOTLS, 0600);
  if (rc != MDB_SUCCESS) return LmdbStatus("open " + dir, rc);
  // Reader slots left by a killed process would pin old pages forever: clear them.
  int dead = 0;
  mdb_reader_check(env, &dead);
  MDB_txn* txn = nullptr;
  if ((rc = mdb_txn_begin(env, nullptr, 0, &txn)) != MDB_SUCCESS) {
    return LmdbStatus("begin", rc);
  }
  for (int i = 0; i < kTableCount; ++i) {
    std::string name(TableName(static_cast<Table>(i)));
    rc = mdb_dbi_open(txn, name.c_str(), MDB_CREATE, &store->dbi_[i]);
    if (rc != MDB_SUCCESS) {
      mdb_txn_abort(txn);
      return LmdbStatus("open table " + name, rc);
    }
  }
  if ((rc = mdb_txn_commit(txn)) != MDB_SUCCESS) return LmdbStatus("commit tables", rc);
  return store;
}

MetadataStore::~MetadataStore() { mdb_env_close(env_); }

std::unique_ptr<Txn> MetadataStore::BeginRead() {
  MDB_txn* txn = nullptr;
  Check("begin read", mdb_txn_begin(env_, nullptr, MDB_RDONLY, &txn));
  return std::unique_ptr<Txn>(new Txn(this, txn, true, nullptr));
}

std::unique_ptr<Txn> MetadataStore::BeginWrite() {
  MDB_txn* txn = nullptr;
  Check("begin write", mdb_txn_begin(env_, nullptr, 0, &txn));
  return std::unique_ptr<Txn>(new Txn(this, txn, false, journal_));
}

void MetadataStore::SetJournal(MetadataJournal* journal) {
  journal_ = journal;
  SetSync(journal == nullptr);
}

void MetadataStore::SetSync(bool sync) {
  Check("set sync mode", mdb_env_set_flags(env_, MDB_NOSYNC, sync ? 0 : 1));
}

Status MetadataStore::CopyTo(const std::string& path) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) return Status::FromErrno("create " + path, errno);
  int rc = mdb_env_copyfd2(env_, fd, MDB_CP_COMPACT);
  int close_rc = ::close(fd);
  if (rc != MDB_SUCCESS) return LmdbStatus("copy to " + path, rc);
  if (close_rc != 0) return Status::FromErrno("close " + path, errno);
  return Status::Ok();
}

void MetadataStore::Apply(const std::vector<JournalOp>& ops) {
  MDB_txn* raw = nullptr;
  Check("begin replay", mdb_txn_begin(env_, nullptr, 0, &raw));
  Txn txn(this, raw, false, nullptr);
  for (const JournalOp& op : ops) {
    if (op.value) {
      txn.Put(op.table, op.key, *op.value);
    } else {
      txn.Delete(op.table, op.key);
    }
  }
  txn.Commit();
}

uint64_t MetadataStore::UsedBytes() {
  MDB_envinfo info;
  MDB_stat stat;
  if (mdb_env_info(env_, &info) != MDB_SUCCESS || mdb_env_stat(env_, &stat) != MDB_SUCCESS) {
    return 0;
  }
  return static_cast<uint64_t>(info.me_last_pgno + 1) * stat.ms_psize;
}

Txn::~Txn() {
  if (txn_ != nullptr) mdb_txn_abort(txn_);
}

std::optional<std::string_view> Txn::Get(Table table, std::string_view key) {
  MDB_val k = Val(key), v;
  int rc = mdb_get(txn_, Dbi(table), &k, &v);
  if (rc == MDB_NOTFOUND) return std::nullopt;
  Check("get", rc);
  return View(v);
}

void Txn::Put(Table table, std::string_view key, std::string_view value) {
  MDB_val k = Val(key), v = Val(value);
  Check("put", mdb_put(txn_, Dbi(table), &k, &v, 0));
  if (journal_ != nullptr) ops_.push_back(JournalOp{table, std::string(key), std::string(value)});
}

bool Txn::Delete(Table table, std::string_view key) {
  MDB_val k = Val(key);
  int rc = mdb_del(txn_, Dbi(table), &k, nullptr);
  if (rc == MDB_NOTFOUND) return false;
  Check("delete", rc);
  if (journal_ != nullptr) ops_.push_back(JournalOp{table, std::string(key), std::nullopt});
  return true;
}

std::unique_ptr<Cursor> Txn::OpenCursor(Table table) {
  MDB_cursor* c = nullptr;
  Check("open cursor", mdb_cursor_open(txn_, Dbi(table), &c));
  return std::unique_ptr<Cursor>(new Cursor(c));
}

uint64_t Txn::EntryCount(Table table) {
  MDB_stat st;
  Check("stat", mdb_stat(txn_, Dbi(table), &st));
  return st.ms_entries;
}

uint64_t Txn::GetMetaU64(std::string_view key, uint64_t missing) {
  auto v = Get(Table::kMeta, key);
  if (!v) return missing;
  auto n = DecodeU64(*v);
  if (!n) throw StatusError(Status::Corruption("meta key '" + std::string(key) + "' malformed"));
  return *n;
}

void Txn::PutMetaU64(std::string_view key, uint64_t value) {
  Put(Table::kMeta, key, EncodeU64(value));
}

void Txn::Commit() {
  if (journal_ != nullptr && !ops_.empty()) {
    // The journal first: nothing is visible locally that is not durable there.
    Status appended = journal_->Append(ops_);
    if (!appended.ok()) throw StatusError(appended);  // the destructor aborts
    MDB_txn* txn = txn_;
    txn_ = nullptr;
    int rc = mdb_txn_commit(txn);
    Status committed = rc == MDB_SUCCESS ? Status::Ok() : LmdbStatus("commit", rc);
    journal_->Committed(committed);
    if (!committed.ok()) throw StatusError(committed);
    return;
  }
  MDB_txn* txn = txn_;
  txn_ = nullptr;
  Check("commit", mdb_txn_commit(txn));
}

Cursor::~Cursor() { mdb_cursor_close(cursor_); }

bool Cursor::Move(MDB_cursor_op op, std::string_view seek) {
  MDB_val k = Val(seek), v;
  int rc = mdb_cursor_get(cursor_, &k, &v, op);
  if (rc == MDB_NOTFOUND) return false;
  Check("cursor", rc);
  key_ = View(k);
  value_ = View(v);
  return true;
}

bool Cursor::First() { return Move(MDB_FIRST); }
bool Cursor::Last() { return Move(MDB_LAST); }
bool Cursor::Next() { return Move(MDB_NEXT); }
bool Cursor::Prev() { return Move(MDB_PREV); }
bool Cursor::SeekAtOrAfter(std::string_view key) { return Move(MDB_SET_RANGE, key); }

}  // namespace tapmap::mapserver
