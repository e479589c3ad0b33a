# The tapmap mapping protocol: how a host (tapdisk-map, the tapmap CLI) talks to the
# file server (mapserver). The server hands out *maps* (where each logical block of a
# volume lives in the shared storage pool); hosts read and write the pool themselves.
#
# Modelled on the pNFS block layout (RFC 5663): map ~ LAYOUTGET, prepareWrite ~ a
# LAYOUTGET for write returning INVALID_DATA extents, commit ~ LAYOUTCOMMIT, the
# MapCallback ~ CB_LAYOUTRECALL. Adapted to version sets: extents carry a state saying
# whether the block may be written in place, and a generation that, with the physical
# offset, names the block's *content* for the hosts' physical-location caches.
#
# Units: every offset and length is in bytes. Offsets and lengths in requests must be
# multiples of 512; map results are always aligned to the pool's block size.
#
# Errors: a failed call raises a Cap'n Proto exception whose description is
# "<code>: <message>", <code> being a tapmap status name (see common/status.h:
# invalid-argument, not-found, already-exists, busy, read-only, no-space, io-error,
# corruption, unavailable, permission-denied, not-supported, aborted, internal).
#
# Connection: the bootstrap capability is a Gate. Nothing but a challenge can be had
# from it until the host proves it knows the shared secret.
@0xefe5d46f2483f02d;

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("tapmap::proto");

const protocolVersion :UInt32 = 2;
# 2: host leases (login.instance, Session.renew, open.reclaimEpoch; mapserver/doc/leases.md).

# Limits of one call (a call beyond one fails with invalid-argument). Defined here
# once; the server and the hosts both use these constants.
const maxRangesPerCall :UInt32 = 4096;        # ranges of one prepareWrite or discard
const maxExtentsPerCommit :UInt32 = 65536;    # extents of one commit
const maxBlocksPerPrepare :UInt64 = 262144;   # pool blocks one prepareWrite may cover
const maxExtentsPerMap :UInt32 = 65536;
# A map answer holds at most this many extents; it then covers only a prefix of the
# requested range (callers continue from the end of the last extent).

# ---------------------------------------------------------------------------------------
# Maps

enum ExtentState {
  # THE CACHE-COHERENCE RULE (one definition; engine/doc/cache.md explains its use):
  # (pool, physical, generation) names one immutable content of a block, on every
  # host, for as long as the block stays allocated. This holds because a block is
  # written in place only by the rw lease it was allocated under: every rw open gets
  # a lease epoch from the pool-wide generation counter, so a block's generation is
  # greater than the epoch exactly when the current lease allocated it. Every other
  # block is `shared` to everyone, the writer included: a writer that changes it
  # copies it on write (prepareWrite gives a new block and generation). A host's
  # cached copy under (physical, generation) is therefore never stale, whichever
  # host wrote the block before, whatever lease moved where (live migration A->B->A),
  # after a snapshot/clone made owned blocks shared, or after delete and reallocation.

  hole @0;
  # No space is allocated: reads return zeros. `physical` and `generation` are 0.
  owned @1;
  # The block is exclusive to this volume and was allocated under the volume's
  # current rw lease (generation > the lease's epoch): its holder may write it in
  # place. To any other opener (read-only, on any host) the same block is reported
  # `owned` too, and such an opener must not cache its content: the writer may
  # change it at any time. Once the lease ends, the block is reported `shared`.
  shared @2;
  # Any other mapped block: referenced by more than one volume, or written under an
  # earlier lease, or in a volume nobody holds rw. Its content never changes while it
  # is allocated; every host may cache it under (physical, generation). A write to it
  # takes new space through prepareWrite (copy-on-write).
}

struct Extent {
  logical @0 :UInt64;     # byte offset in the volume (block-aligned)
  length @1 :UInt64;      # bytes (a whole number of blocks, > 0)
  physical @2 :UInt64;    # byte offset in the pool of the first block (0 for a hole)
  generation @3 :UInt64;
  # Allocation generation of the blocks in this extent: a pool-wide counter bumped by
  # every allocation and every rw lease grant (the lease epoch). With the physical
  # offset it names one immutable version of the block's content (see ExtentState):
  # a block freed and allocated again gets a new generation, and so does a block a
  # new lease wants to change. 0 for holes.
  state @4 :ExtentState;
}

struct Range {
  offset @0 :UInt64;      # bytes, multiple of 512
  length @1 :UInt64;      # bytes, multiple of 512, > 0
}

# ---------------------------------------------------------------------------------------
# Information

struct VolumeInfo {
  name @0 :Text;
  sizeBytes @1 :UInt64;
  readOnly @2 :Bool;           # snapshots are read-only
  kind @3 :Kind;
  enum Kind {
    base @0;                   # created empty (e.g. a golden image)
    snapshot @1;               # read-only point-in-time copy
    clone @2;                  # writable copy of a snapshot or live volume
  }
  parent @4 :Text;             # the volume it was snapshotted/cloned from ("" if none
                               # or if that volume was deleted since)
  versionSet @5 :UInt64;       # id shared by a golden image and all its descendants
  mappedBytes @6 :UInt64;      # bytes with allocated blocks
  exclusiveBytes @7 :UInt64;   # mapped bytes referenced by this volume only
  sharedBytes @8 :UInt64;      # mapped bytes also referenced by another volume
  createdUnixSeconds @9 :UInt64;
  openers @10 :UInt32;         # current number of open Volume capabilities
  writer @11 :Text;            # host name of the rw lease holder, "" if none
  standby @12 :Text;           # host name of a standby rw opener (live migration), "" if none
}

struct PoolStats {
  poolBytes @0 :UInt64;        # usable data area
  blockSize @1 :UInt32;
  totalBlocks @2 :UInt64;
  freeBlocks @3 :UInt64;       # free and not reserved
  reservedBlocks @4 :UInt64;   # handed out by prepareWrite, not yet committed
  volumes @5 :UInt32;
  versionSets @6 :UInt32;
  uuid @7 :Text;
  metadataBytes @8 :UInt64;    # size of the metadata store in use
}

# ---------------------------------------------------------------------------------------
# Capabilities

interface Gate {
  # Bootstrap capability of every connection.

  challenge @0 () -> (nonce :Data, serverVersion :UInt32);
  # A fresh random nonce (32 bytes) bound to this connection.

  login @1 (host :Text, proof :Data, clientVersion :UInt32, instance :UInt64, poolClient :Text)
      -> (session :Session, leaseMs :UInt32, resumed :Bool, inGrace :Bool);
  # proof = HMAC-SHA256(shared secret, nonce || host). `host` names the client in logs
  # and in VolumeInfo.writer. Fails with permission-denied on a wrong proof, a reused
  # or missing nonce; the connection is closed after 3 failures. Over mutual TLS
  # (protocol/doc/auth.md) the proof is ignored and `host` must be the name in the
  # client's certificate, whose credential (registered, not revoked) decides what the
  # Session may do (mapserver/doc/trust.md); refusals are permission-denied.
  #
  # Host leases (mapserver/doc/leases.md, the one description): `instance` is a random
  # number the client process chose at its start (0: a tool that will hold nothing
  # across connections). The login renews the instance's host lease, of `leaseMs`;
  # `resumed` says the server still held the instance's state (its orphaned openers
  # can be reclaimed with their reservations); a login of a new instance of a host
  # releases the openers of the host's previous instance at once. `inGrace`: the
  # server restarted less than 1.1 lease times ago and admits only reclaims of rw
  # leases.
  #
  # `poolClient` (leases.md "Fencing on a RADOS pool"): the identity under which the
  # instance does pool I/O now — on a RADOS pool its librados client address
  # (Rados::get_addrs), "" on a file pool; at most 256 printable characters. The server
  # keeps every identity an instance logged in with and, when the instance expires,
  # blocklists them all in the pool's Ceph cluster before it releases the instance's
  # openers, so that no write of the expired instance still in flight can land after
  # its volumes were given to another host. A host that fenced itself therefore
  # logs in again under a fresh identity (a new librados client).
}

interface Session {
  # What an authenticated host may do. Admin calls complete only when durable.

  open @0 (name :Text, mode :OpenMode, callback :MapCallback, reclaim :Bool, reclaimEpoch :UInt64)
      -> (volume :Volume, info :VolumeInfo, leaseEpoch :UInt64, reservationsKept :Bool, standby :Bool);
  # Opens a volume. At most one rw opener per volume at a time (the rw lease, with a
  # fresh lease epoch: see ExtentState). A second rw open fails with busy while the
  # holder's instance is connected and renewing; if the holder is orphaned (its
  # connection is gone) the open waits until the holder reclaims (then busy) or its
  # host lease expires (then granted). During the grace period a new rw open waits
  # for its end. Snapshots can only be opened ro.
  #
  # reclaim = true re-attaches this instance's orphaned opener of the volume in this
  # mode (same id, epoch and reservations: reservationsKept), or, in the grace period,
  # grants the rw lease with reclaimEpoch; otherwise it fails with aborted ("lease
  # lost"). leaseEpoch is the opener's epoch (0 for read-only).
  #
  # Live migration (leases.md "Standby"): a rw open of a volume whose holder is another,
  # live host instance gets a *standby* opener (standby = true) instead of busy, when
  # the volume has none yet: it may map and read like a read-only opener (recalls
  # included) and may not write; when the holder's lease ends (close, expiry,
  # revocation) the standby becomes the holder with a new epoch (MapCallback.promoted).
  # A second standby gets busy.
  #
  # An opener ends when it is closed, revoked (revoke()), or its instance's host lease
  # expires; losing the connection only orphans it.

  reclaimComplete @10 ();
  # After a login that was not resumed: this instance has re-opened (reclaimed) every
  # volume it had open. A restarted server's grace period ends when every instance it
  # recorded as holding openers said so, or died (leases.md "Grace period").

  renew @9 () -> (leaseMs :UInt32);
  # Renews the session's host lease (one call per host, every lease/5). Fails with
  # aborted once the server gave up on this instance (expired or blocklisted): the
  # host must fence at once and start over.

  create @1 (name :Text, sizeBytes :UInt64) -> (info :VolumeInfo);
  # A new empty volume in a new version set. sizeBytes > 0, multiple of 512.

  snapshot @2 (source :Text, name :Text) -> (info :VolumeInfo);
  # A read-only point-in-time copy of `source`. O(1) in the size of the source. If
  # `source` is open rw, its writer is recalled (its owned extents become shared)
  # before this returns.

  clone @3 (source :Text, name :Text) -> (info :VolumeInfo);
  # A writable copy of `source` (a snapshot or a live volume; for a live one the
  # writer is recalled as for snapshot). O(1).

  delete @4 (name :Text);
  # Removes a volume; blocks no other volume references return to free space. Fails
  # with busy while the volume has openers.

  resize @5 (name :Text, sizeBytes :UInt64, allowShrink :Bool) -> (info :VolumeInfo);
  # Grows (or, with allowShrink, shrinks) a volume. Openers are told via
  # MapCallback.sizeChanged; on shrink, maps beyond the new end are recalled first.
  # A shrink must end on a pool block boundary (invalid-argument otherwise): the cut
  # block would keep old data past the end, which a later grow would expose. Bytes a
  # grow adds read as zeros.

  list @6 () -> (volumes :List(VolumeInfo));
  info @7 (name :Text) -> (info :VolumeInfo);
  poolStats @8 () -> (stats :PoolStats);

  diff @11 (from :Text, to :Text, startOffset :UInt64, maxExtents :UInt32)
      -> (extents :List(DiffExtent), nextOffset :UInt64);
  # What changed from `from` to `to`, two volumes of one version set (a snapshot and a
  # later snapshot or the live volume): the byte ranges of `to`, from `startOffset`
  # (rounded down to a pool block) on, whose committed mapping differs — the blocks an
  # incremental backup copies. Computed from the map trees by node identity, in time
  # proportional to what changed. At most maxExtents (1..65536) ranges; nextOffset is
  # where to continue, 0 when done. Writes not yet committed by `to`'s writer are not
  # seen (flush it, or diff a snapshot). invalid-argument for volumes of different
  # version sets.

  rename @12 (name :Text, newName :Text) -> (info :VolumeInfo);
  # Renames a volume (admin); its clones and snapshots follow (VolumeInfo.parent).
  # Fails with busy while it has openers (as delete), already-exists if newName is
  # taken.
}


struct DiffExtent {
  offset @0 :UInt64;
  length @1 :UInt64;
  zero @2 :Bool;   # `to` reads zeros here (a hole: discarded, or never written)
}

enum OpenMode {
  readOnly @0;
  readWrite @1;
}

interface Volume {
  # An open volume. All ranges must lie within the volume's current size.

  map @0 (offset :UInt64, length :UInt64) -> (extents :List(Extent), sizeBytes :UInt64);
  # The extents covering [offset, offset+length), rounded out to whole blocks,
  # contiguous and in logical order (holes included).

  prepareWrite @1 (ranges :List(Range)) -> (extents :List(Extent));
  # rw only. For every block of `ranges` that is not owned by this lease (shared, a
  # hole, or written under an earlier lease), reserves a fresh block (state owned, a
  # new generation) for this opener; blocks owned by this lease are returned as they
  # are. The caller copies any partial-block remainder from the old
  # extent (map before prepareWrite), writes the new data to the new extents, makes it
  # stable (fdatasync), then commits. Reservations not committed are reclaimed when
  # this Volume is closed, the connection is lost, the lease is revoked or the server
  # restarts; a commit naming a reclaimed reservation fails with aborted.

  commit @2 (extents :List(Extent)) -> ();
  # rw only. Installs extents returned by prepareWrite into the volume's map, freeing
  # (or dereferencing) the blocks they replace. Durable when it returns. All extents of
  # one call are one transaction: cheap to batch many.

  discard @3 (ranges :List(Range)) -> ();
  # rw only. Whole blocks inside `ranges` become holes and their space is returned
  # once no volume references it; partial blocks are left mapped (the caller zeroes
  # them if it wants write-zeroes semantics). Durable when it returns, after the
  # volume's other openers answered a recall of `ranges`; the freed blocks are not
  # handed out again before that.

  close @4 ();
  # Ends this opener: releases the lease and reclaims uncommitted reservations. Any
  # later call on this capability fails with invalid-argument.

  sharedRanges @5 (startOffset :UInt64, maxRanges :UInt32) -> (ranges :List(Range), nextOffset :UInt64);
  # The byte ranges of this volume, from `startOffset` (rounded down to a pool block)
  # on, whose committed blocks it shares with another volume (a snapshot, its golden
  # image, a clone: the block or a map node above it is referenced more than once) —
  # what `flatten` copies so that the volume shares nothing. Holes are never included.
  # At most maxRanges (1..65536) merged ranges; one call also examines a bounded number
  # of mapped blocks, so a page may be short or empty: nextOffset is where to continue,
  # 0 when the end of the volume was reached. Committed state only (a writer's pending
  # blocks are private anyway).
}

interface MapCallback {
  # Implemented by the opener; the server calls it when what the opener may cache or
  # write changes. The server waits for the answer (or revokes the lease on timeout).

  recall @0 (ranges :List(Range), reason :RecallReason) -> ();
  # Drop cached maps of `ranges` (or, for downgrade, stop treating their owned blocks
  # as writable in place) and finish in-flight writes to them before returning.

  revoke @1 (reason :Text) -> ();
  # The lease is gone: stop writing; uncommitted reservations are void.

  sizeChanged @2 (sizeBytes :UInt64) -> ();
  # The volume was resized (after any recall of the cut-off part).

  promoted @3 (leaseEpoch :UInt64) -> ();
  # A standby opener (Session.open) now holds the rw lease, with this epoch: drop every
  # cached map (the blocks the previous holder owned are shared now), then write.
}

enum RecallReason {
  snapshot @0;     # owned blocks became shared: downgrade owned -> shared
  clone @1;        # likewise
  resize @2;       # the range is beyond the new end
  delete @3;       # the volume is going away
  discard @4;      # another opener discarded (not sent to the discarding opener)
}
