// VolumeStore: the version-set store. Volumes, their snapshots and clones, each a
// copy-on-write map tree (map_tree.h) over pool blocks, in the metadata store
// (metadata_store.h) of one pool (pool_format.h); plus the in-memory write
// reservations handed out by PrepareWrite.
//
// Every mutating call is one LMDB write transaction and returns only once it is
// durable; a failed call changes nothing. Arguments are validated here (names,
// sizes, alignment, ranges), so a bad request can never corrupt state. Leases and
// openers are the RPC layer's business (mapping_service.h); this layer only keys
// reservations by an opaque opener id.
//
// Reservations live in memory only: a reserved block stays in the persistent free
// space until its Commit, and is excluded from allocation meanwhile. A restart or
// DropReservations therefore loses them without leaking space.
//
// Threading: not thread-safe; used from the server's event-loop thread.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "common/logging.h"
#include "common/status.h"
#include "common/unique_fd.h"
#include "mapserver/metadata_format.h"
#include "mapserver/metadata_store.h"
#include "protocol/pool_format.h"
#include "tapmap/proto/extent.h"
#include "tapmap/proto/mapping.capnp.h"

namespace tapmap::mapserver {

// Limits on requests (each violation is kInvalidArgument).
inline constexpr size_t kMaxVolumeNameLength = 128;
inline constexpr uint64_t kMaxVolumeBytes = uint64_t{1} << 50;  // 1 PiB
// (The protocol's limits, mapping.capnp.)
inline constexpr size_t kMaxRangesPerCall = proto::MAX_RANGES_PER_CALL;  // prepareWrite/discard
inline constexpr size_t kMaxExtentsPerCommit = proto::MAX_EXTENTS_PER_COMMIT;
inline constexpr uint64_t kMaxBlocksPerPrepare = proto::MAX_BLOCKS_PER_PREPARE;
inline constexpr size_t kMaxExtentsPerMap = proto::MAX_EXTENTS_PER_MAP;

// 1..128 characters of [A-Za-z0-9._-], not starting with '.'.
Status ValidateVolumeName(std::string_view name);
// The refusal of a shrink to `size_bytes` that is not a multiple of the pool block
// size: the last block would keep the old data past the new end, and a later grow
// would expose it (a grow must read zeros).
std::string ShrinkAlignmentError(std::string_view name, uint64_t size_bytes, uint32_t block_size);

// The protocol's value types (tapmap/proto/extent.h): byte-based, as on the wire.
using tapmap::ByteRange;
using tapmap::ExtentState;
using MapExtent = tapmap::Extent;

struct VolumeDescription {
  std::string name;
  VolumeRecord record;
  std::string parent;  // "" if none or since deleted
  uint64_t exclusive_blocks = 0;
  uint64_t shared_blocks = 0;
};

struct PoolFigures {
  uint64_t total_blocks = 0;
  uint64_t free_blocks = 0;  // free in the metadata and not reserved
  uint64_t reserved_blocks = 0;
  uint32_t volumes = 0;
  uint32_t version_sets = 0;
  uint64_t metadata_bytes = 0;
};

using OpenerId = uint64_t;

// The cache-coherence rule (mapping.capnp, "ExtentState"; engine/doc/cache.md): a
// mapped block may be written in place only by the rw lease under which it was
// allocated. Every rw lease gets an epoch drawn from the pool-wide generation counter
// when it is granted (NewLeaseEpoch), so "allocated under this lease" is "exclusive to
// the volume and generation > the lease's epoch". Every other mapped block is
// reported kShared: its content never changes while it stays allocated, and a writer
// that wants to change it copies it on write. Pass kNoWriter when the volume has no
// rw lease: then nothing is owned.
inline constexpr uint64_t kNoWriter = UINT64_MAX;

class VolumeStore {
 public:
  // Creates the metadata of a freshly formatted pool in `meta_dir` (created if
  // missing): identity, counters, all blocks free. Refuses (kAlreadyExists) if the
  // directory already holds tapmap metadata, unless `force` (then it is replaced).
  static Status InitMetadata(const protocol::Superblock& sb, const std::string& meta_dir, bool force);

  // Opens the store of the pool described by `sb`. Takes an exclusive lock on
  // meta_dir/mapserver.lock (kBusy if another process holds it). Fails if the
  // metadata belongs to a different pool.
  static Result<std::unique_ptr<VolumeStore>> Open(const protocol::Superblock& sb,
                                                   const std::string& meta_dir, Logger logger);
  ~VolumeStore();

  const protocol::Superblock& superblock() const { return sb_; }
  MetadataStore& metadata() { return *meta_; }

  // ---- administration --------------------------------------------------------------
  Result<VolumeDescription> Create(std::string_view name, uint64_t size_bytes);
  // O(1): a new record sharing the source's root. Snapshots are read-only.
  Result<VolumeDescription> Snapshot(std::string_view source, std::string_view name);
  Result<VolumeDescription> Clone(std::string_view source, std::string_view name);
  // Frees what only this volume referenced; drops its reservations. Whether it may be
  // deleted (openers) is the caller's check.
  Status Delete(std::string_view name);
  // Gives volume `name` the name `new_name` (kAlreadyExists if taken); its clones and
  // snapshots name it as their parent under the new name. Whether it may be renamed
  // (openers) is the caller's check, as for Delete.
  Result<VolumeDescription> Rename(std::string_view name, std::string_view new_name);
  // Grows, or with allow_shrink shrinks (unmapping and un-reserving beyond the end)
  // to a multiple of the pool block size (else kInvalidArgument).
  Result<VolumeDescription> Resize(std::string_view name, uint64_t size_bytes, bool allow_shrink);
  Result<VolumeDescription> Describe(std::string_view name);
  // The volume's record only (one lookup; Describe also counts exclusive blocks).
  Result<VolumeRecord> Record(std::string_view name);
  // What changed from `from` to `to` (two volumes of one version set: a snapshot and a
  // later snapshot or the live volume, or any two): the byte ranges of `to` (merged,
  // in order, starting at block `first_block`) whose committed mapping differs, each
  // saying whether `to` reads zeros there (a hole: discarded or never written). Time
  // is proportional to the map nodes that differ (MapTree::Diff), not to the size. At
  // most `max_extents` ranges; `*next_block` is where to continue, or 0 when done.
  // kInvalidArgument for volumes of different version sets.
  struct DiffExtent {
    uint64_t offset = 0;
    uint64_t length = 0;
    bool zero = false;
  };
  Result<std::vector<DiffExtent>> Diff(std::string_view from, std::string_view to, uint64_t first_block,
                                       size_t max_extents, uint64_t* next_block, uint64_t* nodes_visited = nullptr);
  // The byte ranges of `name` (merged, in order, from block `first_block` on) whose
  // committed blocks the volume shares with another volume: the block or a map node on
  // its path is referenced more than once (MapTree::ForEachMapped's `shared`). Holes
  // are never included. Stops after `max_ranges` ranges or after examining
  // `max_scanned` mapped blocks, whichever comes first; `*next_block` is where to
  // continue, or 0 when the volume's end was reached. What flatten copies.
  Result<std::vector<ByteRange>> SharedRanges(std::string_view name, uint64_t first_block, size_t max_ranges,
                                              uint64_t max_scanned, uint64_t* next_block);
  Result<std::vector<VolumeDescription>> List();
  Result<PoolFigures> Stats();

  // ---- I/O path ----------------------------------------------------------------------
  // A new rw lease epoch: a value of the pool-wide generation counter, greater than
  // every generation handed out before and smaller than every one handed out after
  // (durable: never handed out again after a restart).
  Result<uint64_t> NewLeaseEpoch() { return NextGeneration(); }
  // True if `epoch` may have been handed out as a lease epoch (is below the counter).
  bool EpochIssued(uint64_t epoch) const { return epoch >= 1 && epoch < next_generation_; }

  // ---- held rw leases (mapserver/doc/leases.md) -------------------------------------
  // The durable record of who holds a volume's rw lease, for the grace period after a
  // restart. Each call is one durable transaction.
  Status RecordLease(const LeaseRecord& record);
  Status ForgetLease(std::string_view volume);  // no-op if there is none
  Result<std::vector<LeaseRecord>> LeaseRecords();
  Status RecordInstance(const InstanceRecord& record);
  Status ForgetInstance(const InstanceRecord& record);  // no-op if there is none
  Result<std::vector<InstanceRecord>> InstanceRecords();

  // Extents covering [offset, offset+length) rounded out to blocks (at most
  // kMaxExtentsPerMap of them). A block is kOwned iff it is exclusive to the volume
  // and its generation is greater than `writer_epoch`, the epoch of the volume's
  // current rw lease (kNoWriter if none); every other mapped block is kShared, and
  // blocks of read-only volumes are always kShared. `*size_bytes` (if not null)
  // receives the volume's current size.
  Result<std::vector<MapExtent>> Map(std::string_view name, uint64_t offset, uint64_t length,
                                     uint64_t writer_epoch, uint64_t* size_bytes = nullptr);
  // See mapping.capnp Volume.prepareWrite, for the opener holding the rw lease of
  // epoch `lease_epoch`. Blocks that Map would report kOwned to it are returned as
  // they are; every other block gets a fresh reservation. All reservations of one call
  // share one new generation. Repeating a prepareWrite for a block this opener has
  // reserved returns the same reservation. kNoSpace if the pool cannot supply the
  // blocks (then nothing is reserved).
  Result<std::vector<MapExtent>> PrepareWrite(OpenerId opener, std::string_view name,
                                              const std::vector<ByteRange>& ranges,
                                              uint64_t lease_epoch);
  // Installs reservations of `opener` (see mapping.capnp Volume.commit) in one durable
  // transaction. An extent that is not a live reservation of this opener for this
  // volume, and not already the volume's current owned mapping, fails the whole call
  // with kAborted.
  Status Commit(OpenerId opener, std::string_view name, const std::vector<MapExtent>& extents);
  // Group commit: several commits (of any openers and volumes) in ONE durable
  // transaction, i.e. one fsync. Each gets its own Status and is all-or-nothing on its
  // own: a commit refused for its arguments does not affect the others; only a
  // failure of the transaction itself (I/O, metadata full) fails all of them.
  struct CommitRequest {
    OpenerId opener = 0;
    std::string volume;
    std::vector<MapExtent> extents;
  };
  // What one commit changed, for recalling other openers' maps.
  struct CommitEffects {
    std::vector<uint64_t> changed;  // logical blocks newly mapped or remapped
    std::vector<uint64_t> freed;    // pool blocks it returned to free space
  };
  // If `effects` is given, (*effects)[i] receives what commit i changed.
  std::vector<Status> CommitBatch(const std::vector<CommitRequest>& batch,
                                  std::vector<CommitEffects>* effects = nullptr);
  // Unmaps whole blocks inside `ranges`. `*freed` (if not null) receives the pool
  // blocks returned to free space.
  Status Discard(std::string_view name, const std::vector<ByteRange>& ranges,
                 std::vector<uint64_t>* freed = nullptr);

  // Quarantine: freed pool blocks that other openers may still name in maps they
  // cached (until they answer a recall) must not be handed out again meanwhile, or a
  // host reading through such a map would read another volume's new data. A
  // quarantined block stays free in the metadata but out of allocation until
  // EndQuarantine. In memory only: a restart ends every quarantine (every host then
  // drops its maps when it opens its volumes again).
  void Quarantine(const std::vector<uint64_t>& blocks);
  void EndQuarantine(const std::vector<uint64_t>& blocks);
  uint64_t QuarantinedBlocks() const { return quarantined_blocks_.size(); }
  // Forgets every reservation of `opener` (close, disconnect, revoke).
  void DropReservations(OpenerId opener);
  uint64_t ReservedBlocks() const { return unavailable_blocks_.size() - quarantined_blocks_.size(); }

 private:
  struct Reservation {
    uint64_t block = 0;
    uint64_t generation = 0;
  };
  struct CommitInstall {
    uint64_t lblock = 0, block = 0, generation = 0;
    bool reserved = false;  // a live reservation of the committing opener
    bool taken = false;     // installed by this commit
  };
  // Checks a commit's arguments and resolves which blocks are reservations.
  Status PlanCommit(const CommitRequest& request, std::vector<CommitInstall>* installs);
  // Applies a planned commit inside `txn`; fails without changing anything, or
  // installs everything. `consumed` holds blocks installed earlier in the same txn.
  Status ApplyCommit(Txn* txn, const CommitRequest& request, std::vector<CommitInstall>* installs,
                     std::set<uint64_t>* consumed, CommitEffects* effects);
  struct OpenerReservations {
    uint64_t volume_id = 0;
    std::map<uint64_t, Reservation> by_lblock;
    uint64_t hint = 0;  // where the next allocation search starts
  };

  VolumeStore(const protocol::Superblock& sb, std::unique_ptr<MetadataStore> meta, UniqueFd lock,
              Logger logger);
  Result<VolumeDescription> Copy(std::string_view source, std::string_view name, bool snapshot);
  // Loads a volume record; kNotFound if absent.
  Result<VolumeRecord> LoadVolume(Txn* txn, std::string_view name);
  VolumeDescription DescribeIn(Txn* txn, std::string_view name, const VolumeRecord& record);
  Status ValidateRange(const VolumeRecord& v, uint64_t offset, uint64_t length, const char* what);
  Result<uint64_t> NextGeneration();
  void DropReservationsBeyond(uint64_t volume_id, uint64_t first_lblock);
  // Runs `fn(txn)` in a write transaction, committing if it returns OK. StatusError
  // thrown inside becomes the result.
  template <typename Fn>
  Status InWriteTxn(Fn&& fn);
  // One durable write of a meta table key; DeleteMeta is a no-op if it is absent.
  Status PutMeta(const std::string& key, const std::string& value);
  Status DeleteMeta(const std::string& key);

  protocol::Superblock sb_;
  std::unique_ptr<MetadataStore> meta_;
  UniqueFd lock_;
  Logger logger_;
  uint64_t next_generation_ = 1;
  uint64_t generation_high_water_ = 1;
  std::unordered_map<OpenerId, OpenerReservations> reservations_;
  // Blocks free in the metadata that no allocation may take: reserved by a
  // prepareWrite, or quarantined (also in quarantined_blocks_).
  std::set<uint64_t> unavailable_blocks_;
  std::set<uint64_t> quarantined_blocks_;
};

}  // namespace tapmap::mapserver
