#!/usr/bin/env bash
# The cluster suite: cross-host cache coherence on the multi-host rig (tests/cluster/rig.sh):
# one mapserver and RIG_HOSTS (default 3) tapdisk-map hosts, each in its own network
# namespace, sharing one pool file (or, with RIG_POOL_KIND=rados, one RADOS pool of a
# one-node Ceph in a namespace of its own); real NBD clients (qemu-io, nbdinfo) on the
# hosts.
#
# Usage: tests/cluster/run_cluster.sh BUILD_DIR [CASE...]
#   CASE: a case name (or a prefix of names, e.g. "a_") to run only those.
# Prints "PASS name" / "FAIL name: reason" per case, then "cluster: N passed, M failed".
# Exit 0 all passed, 1 a failure, 77 skipped ("SKIPPED: cluster: <reason>").
# RIG_KEEP=1 keeps the logs (RIG_DIR) after the run.
set -u
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
build=${1:?usage: run_cluster.sh BUILD_DIR [CASE...]}
shift
selected=("$@")
# shellcheck source=tests/cluster/rig.sh
source "$here/rig.sh"
# shellcheck source=tests/cluster/blkif.sh
source "$here/blkif.sh"

if ! reason=$(rig_can_run); then echo "SKIPPED: cluster: $reason"; exit 77; fi
for tool in qemu-io qemu-img nbdinfo nbdcopy fio python3 ss; do
  command -v "$tool" >/dev/null || { echo "SKIPPED: cluster: $tool is not installed (make deps)"; exit 77; }
done
if [ "${RIG_POOL_KIND:-file}" = rados ]; then
  for tool in ceph-mon ceph-osd ceph monmaptool; do
    command -v "$tool" >/dev/null || { echo "SKIPPED: cluster: ceph: $tool is not installed (make deps)"; exit 77; }
  done
fi

export RIG_RECALL_TIMEOUT=${RIG_RECALL_TIMEOUT:-3}   # seconds; bounds case r's wait for a cut host
BS=65536   # the rig's pool block size: "block k" = bytes [k*BS, (k+1)*BS)

# ---------------------------------------------------------------------------------------
# Helpers for cases. A case returns 0 (pass) or 1 with WHY set to the reason.

WHY=
why() { WHY="$*"; return 1; }

# io N VOL CMD...: one qemu-io run on host N with the given -c commands; output in OUT.
# Fails (WHY set) if qemu-io fails or reports an error or a pattern mismatch. A volume
# named *-s<digits> (a snapshot) is opened read-only (-r): snapshots are exported so.
io() {
  local n=$1 vol=$2; shift 2
  local args=() c
  [[ $vol =~ -s[0-9]+$ || $vol == *@ro ]] && args+=(-r)
  for c in "$@"; do args+=(-c "$c"); done
  OUT=$(rig_qemu_io "$n" "$vol" "${args[@]}" 2>&1)
  local rc=$?
  if [ $rc -ne 0 ] || grep -qiE 'fail|error|refused|denied' <<<"$OUT"; then
    why "h$n: qemu-io on $vol [$*] (rc $rc): $(tr '\n' ' ' <<<"$OUT" | cut -c1-300)"
    return 1
  fi
}

# first_byte N VOL OFFSET: the byte at OFFSET of VOL read on host N, as 0xNN (for reasons).
first_byte() {
  local ro=()
  [[ $2 =~ -s[0-9]+$ || $2 == *@ro ]] && ro=(-r)
  rig_qemu_io "$1" "$2" "${ro[@]}" -c "read -v $3 1" 2>/dev/null | sed -n 's/^[0-9a-f]*:  \([0-9a-f][0-9a-f]\).*/0x\1/p' | head -n 1
}

# expect N VOL BLOCK PATTERN WHAT: host N reads block BLOCK of VOL; it must be all PATTERN.
expect() {
  local n=$1 vol=$2 blk=$3 pat=$4 what=$5
  if ! io "$n" "$vol" "read -P $pat $((blk * BS)) $BS"; then
    if grep -q 'Pattern verification failed' <<<"$OUT"; then
      local got
      got=$(first_byte "$n" "$vol" $((blk * BS)))
      why "$what: h$n read ${got:-?} in block $blk of $vol, expected $pat"
    else
      why "$what: $WHY"
    fi
    return 1
  fi
}

# write_owned N VOL BLOCK P1 P2: host N writes BLOCK of VOL with P1, flushes, writes it
# again in place (the first write made it owned) with P2, flushes, and reads it back (so
# the block is in N's cache: whole-block NBD writes bypass the cache).
write_owned() {
  local n=$1 vol=$2 off=$(($3 * BS))
  io "$n" "$vol" "write -P $4 $off $BS" flush "write -P $5 $off $BS" flush "read -P $5 $off $BS" ||
    why "h$n writing block $3 of $vol: $WHY"
}

closed() { rig_wait_closed "$1" || why "$1 still open on a host after its clients disconnected"; }
cli() {  # cli N ARGS...: tapmap CLI on host N; fails with the CLI's message
  local out
  out=$(rig_tapmap "$@" 2>&1) || { why "h$1: tapmap ${*:2}: $out"; return 1; }
}
hold() { rig_hold "$@" || why "h$1 could not open $2 ${3:-rw} and keep it open"; }

# ---------------------------------------------------------------------------------------
# a. Live-migration pattern X -> Y -> X: X writes block 0 in place and closes, Y writes it
#    in place and closes, X opens again and must read Y's data (not its cached copy).
migrate_back() {  # VOL X Y
  local vol=$1 x=$2 y=$3
  cli "$x" volume create "$vol" 4M || return
  write_owned "$x" "$vol" 0 0xa1 0xa2 || return
  closed "$vol" || return
  write_owned "$y" "$vol" 0 0xb1 0xb2 || return
  closed "$vol" || return
  if ! expect "$x" "$vol" 0 0xb2 "h$x reopened $vol after h$y wrote it"; then
    local reason=$WHY
    closed "$vol" && WHY="$reason (h3, which never read $vol, reads $(first_byte 3 "$vol" 0): the pool holds h$y's data)"
    return 1
  fi
  closed "$vol"
}
case_a_migrate_h1_h2_h1() { migrate_back a_vm12 1 2; }
case_a_migrate_h2_h1_h2() { migrate_back a_vm21 2 1; }

# b. X holds VOL rw and writes block 0 in place; VOL is cloned; Y (which wrote block 0
#    when it held the lease earlier) reads the clone's block 0: must be X's current data.
clone_while_held() {  # VOL X Y
  local vol=$1 x=$2 y=$3 holder
  cli "$x" volume create "$vol" 4M || return
  write_owned "$y" "$vol" 0 0xc1 0xc2 || return
  closed "$vol" || return
  hold "$x" "$vol" || return
  holder=$RIG_HOLD_PID
  local rc=0
  write_owned "$x" "$vol" 0 0xd1 0xd2 && cli 3 volume clone "$vol" "$vol-c1" &&
    expect "$y" "$vol-c1" 0 0xd2 "clone of $vol made while h$x held it" || rc=1
  rig_release "$holder"
  [ $rc = 0 ] && closed "$vol"
}
case_b_clone_held_h1_read_h2() { clone_while_held b_vm12 1 2; }
case_b_clone_held_h2_read_h1() { clone_while_held b_vm21 2 1; }

# c. A read-only opener on host 3 while host 1 holds the volume rw and writes in place:
#    every read on host 3 sees host 1's last flushed data.
case_c_ro_reader_while_writer() {
  local vol=c_vm holder reader i pat rc=0
  cli 1 volume create "$vol" 4M || return
  hold 1 "$vol" || return
  holder=$RIG_HOLD_PID
  for i in 1 2 3; do
    pat=$(printf 0x%02x $((0xe0 + i)))
    write_owned 1 "$vol" 0 $((pat + 8)) "$pat" || { rc=1; break; }
    # the reader connects fresh each round (its host may keep the volume open meanwhile),
    # read-only: export name VOLUME@ro
    if ! io 3 "$vol@ro" "read -P $pat 0 $BS"; then
      local got
      got=$(first_byte 3 "$vol@ro" 0)
      if grep -q 'Pattern verification failed' <<<"$OUT"; then
        why "round $i: h3 (reader while h1 holds $vol rw) read $got, expected $pat"
      else
        why "round $i: h3 cannot open $vol for reading while h1 holds it rw: $WHY"
      fi
      rc=1; break
    fi
  done
  rig_release "$holder"
  [ $rc = 0 ] && closed "$vol"
}

# c'. The same property without concurrency: host 3 reads (and caches) between each of
#    host 1's in-place rewrites; every read sees the latest data.
case_c_reader_between_rewrites() {
  local vol=c_vm2 i pat
  cli 1 volume create "$vol" 4M || return
  for i in 1 2 3; do
    pat=$(printf 0x%02x $((0xf0 + i)))
    write_owned 1 "$vol" 0 $((pat + 8)) $pat || return
    closed "$vol" || return
    expect 3 "$vol" 0 $pat "round $i: h3 reading after h1 rewrote $vol in place" || return
    closed "$vol" || return
  done
}

# d1. Snapshot and clone of a volume open rw on another host: the snapshot holds what was
#     flushed before it; later writes go to the live volume only.
case_d_snapshot_clone_of_held_volume() {
  local vol=d_vm holder rc=0
  cli 1 volume create "$vol" 4M || return
  write_owned 2 "$vol" 1 0x15 0x16 || return   # h2 caches block 1 as it was
  closed "$vol" || return
  hold 1 "$vol" || return
  holder=$RIG_HOLD_PID
  {
    write_owned 1 "$vol" 0 0x10 0x11 &&
    write_owned 1 "$vol" 1 0x12 0x13 &&
    cli 3 volume snapshot "$vol" "$vol-s1" &&
    io 1 "$vol" "write -P 0x14 0 $BS" flush "read -P 0x14 0 $BS" "read -P 0x13 $BS $BS" &&
    expect 2 "$vol-s1" 0 0x11 "snapshot taken while h1 held $vol" &&
    expect 2 "$vol-s1" 1 0x13 "snapshot taken while h1 held $vol" &&
    cli 3 volume clone "$vol" "$vol-c1" &&
    expect 3 "$vol-c1" 0 0x14 "clone taken while h1 held $vol (after a post-snapshot write)" &&
    expect 2 "$vol-c1" 1 0x13 "clone taken while h1 held $vol"
  } || rc=1
  rig_release "$holder"
  [ $rc = 0 ] && closed "$vol" && closed "$vol-c1" && closed "$vol-s1"
}

# d2. Discard seen from another host: host 2 cached blocks 0-1, host 1 discards block 0
#     and write-zeroes block 1; host 2 reads zeros in both.
case_d_discard_seen_elsewhere() {
  local vol=d_disc
  cli 1 volume create "$vol" 4M || return
  write_owned 1 "$vol" 0 0x21 0x22 && write_owned 1 "$vol" 1 0x23 0x24 || return
  closed "$vol" || return
  io 2 "$vol" "read -P 0x22 0 $BS" "read -P 0x24 $BS $BS" || return
  closed "$vol" || return
  io 1 "$vol" "discard 0 $BS" "write -z $BS $BS" flush || return
  closed "$vol" || return
  expect 2 "$vol" 0 0x00 "h1 discarded block 0" || return
  expect 2 "$vol" 1 0x00 "h1 wrote zeroes over block 1" || return
  closed "$vol"
}

# d3. Resize seen from another host: host 2 grows a volume host 1 holds open; a new
#     client on host 1 sees the new size and writes beyond the old end; host 3 reads it.
case_d_resize_seen_elsewhere() {
  local vol=d_rs holder rc=0 len
  cli 1 volume create "$vol" 4M || return
  hold 1 "$vol" || return
  holder=$RIG_HOLD_PID
  {
    cli 2 volume resize "$vol" 8M &&
    len=$(rig_exec 1 nbdinfo --size "$(rig_nbd_url 1 "$vol")" 2>&1) &&
    { [ "$len" = 8388608 ] || why "h1 sees $vol as '$len' bytes after h2 grew it to 8 MiB"; } &&
    write_owned 1 "$vol" 100 0x31 0x32
  } || rc=1
  rig_release "$holder"
  [ $rc = 0 ] || return 1
  closed "$vol" || return
  len=$(rig_exec 3 nbdinfo --size "$(rig_nbd_url 3 "$vol")" 2>&1)
  [ "$len" = 8388608 ] || why "h3 sees $vol as '$len' bytes, expected 8388608" || return
  expect 3 "$vol" 100 0x32 "h3 reading beyond the old end of $vol" || return
  closed "$vol"
}

# d4. Delete and reallocate: host 3 caches 16 blocks of a volume written by host 1; the
#     volume is deleted; new volumes allocate (likely the same) blocks and host 1 writes
#     them; host 3 reads the new volumes correctly.
case_d_delete_reallocate() {
  local blocks=16 i cmds=()
  cli 1 volume create d_old 1M || return
  for i in $(seq 0 $((blocks - 1))); do cmds+=("write -P 0x41 $((i * BS)) $BS"); done
  io 1 d_old "${cmds[@]}" flush || return
  closed d_old || return
  io 3 d_old "read -P 0x41 0 $((blocks * BS))" || return
  closed d_old || return
  cli 2 volume delete d_old || return
  cli 2 volume create d_new1 512K || return
  cli 2 volume create d_new2 512K || return
  io 1 d_new1 "write -P 0x51 0 $((8 * BS))" flush || return
  io 1 d_new2 "write -P 0x52 0 $((8 * BS))" flush || return
  closed d_new1 && closed d_new2 || return
  expect 3 d_new1 0 0x51 "deleted d_old, reallocated into d_new1" || return
  io 3 d_new1 "read -P 0x51 0 $((8 * BS))" || why "h3 reading d_new1 after reallocation: $WHY" || return
  io 3 d_new2 "read -P 0x52 0 $((8 * BS))" || why "h3 reading d_new2 after reallocation: $WHY" || return
  closed d_new1 && closed d_new2
}

# e1. Bulk data across hosts with other real clients: host 3 imports an image with
#     qemu-img convert, host 1 exports it with nbdcopy and host 2 checks it with qemu-img
#     compare.
case_e_import_export_across_hosts() {
  local img=$RIG_DIR/clients/e_img.raw out
  head -c $((8 << 20)) /dev/urandom >"$img"
  cli 3 volume create e_img 8M || return
  out=$(rig_exec 3 qemu-img convert -n -f raw -O raw "$img" "$(rig_nbd_url 3 e_img)" 2>&1) ||
    why "h3: qemu-img convert into e_img: $out" || return
  closed e_img || return
  out=$(rig_exec 1 nbdcopy "$(rig_nbd_url 1 e_img)" "$img.copy" 2>&1) || why "h1: nbdcopy of e_img: $out" || return
  cmp -s "$img" "$img.copy" || why "h1 exported e_img with nbdcopy: differs from what h3 imported" || return
  closed e_img || return
  out=$(rig_exec 2 qemu-img compare -f raw -F raw "$img" "$(rig_nbd_url 2 e_img)" 2>&1) ||
    why "h2: qemu-img compare with e_img: $out" || return
  closed e_img
}

# e2. fio's nbd engine, migration pattern: host 1 writes and verifies 4 MiB (its cache
#     now holds them), host 2 rewrites them in place with another pattern, host 1
#     verifies host 2's data.
case_e_fio_rewrite_elsewhere() {
  local vol=e_fio out common=(--name=e --bs=64k --size=4M --rw=write --verify=pattern --end_fsync=1)
  cli 1 volume create "$vol" 4M || return
  out=$(rig_fio 1 "$vol" "${common[@]}" --verify_pattern=0x71 2>&1) || why "h1: fio write+verify: $(tail -3 <<<"$out")" || return
  closed "$vol" || return
  out=$(rig_fio 2 "$vol" "${common[@]}" --verify_pattern=0x72 2>&1) || why "h2: fio rewrite+verify: $(tail -3 <<<"$out")" || return
  closed "$vol" || return
  out=$(rig_fio 1 "$vol" "${common[@]}" --verify_pattern=0x72 --verify_only=1 2>&1) ||
    why "h1: fio verify of what h2 wrote in place: $(grep -m1 -i 'verify\|bad' <<<"$out")" || return
  closed "$vol"
}

# r. The rig's own operations, which later suites build on: a host killed with -9 and
#    restarted serves again; the mapserver restarted serves again; a cut host cannot
#    reach the mapserver until healed, and the mapserver notices the cut (the lease of a
#    volume the cut host held ends, another host can open it rw).
case_r_rig_operations() {
  local vol=r_vm holder out
  cli 1 volume create "$vol" 1M || return
  write_owned 3 "$vol" 0 0x61 0x62 || return
  closed "$vol" || return
  rig_kill_host 3
  rig_start_host 3 || why "h3 did not restart after kill -9" || return
  expect 3 "$vol" 0 0x62 "after h3 was killed and restarted" || return
  closed "$vol" || return
  rig_restart_mapserver || why "mapserver did not restart" || return
  expect 2 "$vol" 0 0x62 "after the mapserver restarted" || return
  closed "$vol" || return
  hold 3 "$vol" || return
  holder=$RIG_HOLD_PID
  rig_cut 3
  if out=$(RIG_CLI_TIMEOUT=3 rig_tapmap 3 --timeout 3 volume list 2>&1); then
    rig_release "$holder"; rig_heal 3; why "h3's CLI reached the mapserver while cut: $out"; return 1
  fi
  # a clone recalls h3's writes; h3 cannot answer, the server revokes its lease after
  # --recall-timeout and the clone goes ahead
  cli 1 volume clone "$vol" "$vol-c1" || { rig_release "$holder"; rig_heal 3; return 1; }
  rig_wait_for "$RIG_WAIT_S" "the mapserver to drop h3's lease" _rig_writer_is_none 1 "$vol" ||
    { rig_release "$holder"; rig_heal 3; why "the mapserver still has h3 as $vol's writer after the cut and a recall"; return 1; }
  io 1 "$vol" "read -P 0x62 0 $BS" || { rig_release "$holder"; rig_heal 3; return 1; }
  rig_release "$holder"
  rig_heal 3 || why "h3's link did not come back" || return
  rig_wait_for "$RIG_WAIT_S" "h3's CLI to reach the mapserver" rig_tapmap 3 volume list ||
    why "h3 cannot reach the mapserver after heal" || return
  closed "$vol" || return
  expect 3 "$vol" 0 0x62 "h3 after heal" || return
  closed "$vol"
}

_rig_writer_is_none() { [ -z "$(rig_volume_field "$1" "$2" writer)" ]; }

# ---------------------------------------------------------------------------------------
# The same scenarios with blkif front ends (tests/cluster/blkif.sh). A front end is named
# "nN" — host N's tapdisk-map over NBD (qemu-io) — or "bN" — host N's blkif host hN-blkif:
# a second host identity in N's namespace with its own engine and data cache, serving a
# simulated blkfront guest over the real ring ABI and the real RingWorker.

bhost() { rig_blkif_ensure "$1" || why "h$1-blkif (cluster_sim_blkif_host) did not start"; }
bcmd() {  # bcmd N LINE: one command on host N's blkif host; fails with its reply as reason
  blkif_cmd "$1" "$2" >/dev/null || why "h$1-blkif: '$2': $BLKIF_REPLY"
}
fe_name() { case $1 in b*) echo "h${1#b}-blkif" ;; *) echo "h${1#n}" ;; esac; }

# fe_write_owned FE VOL BLOCK P1 P2 [keep]: write_owned through front end FE; a blkif
# front end keeps VOL open (and its rw lease) afterwards if "keep" is given.
fe_write_owned() {
  local fe=$1 vol=$2 off=$(($3 * BS)) p1=$4 p2=$5 keep=${6:-}
  case $fe in
    n*) write_owned "${fe#n}" "$vol" "$3" "$p1" "$p2"; return ;;
  esac
  local n=${fe#b} want
  want=$(printf 'pattern 0x%02x' "$p2")
  bhost "$n" && bcmd "$n" "open $vol rw" || return
  if ! { bcmd "$n" "write $off $BS $p1" && bcmd "$n" flush && bcmd "$n" "write $off $BS $p2" &&
         bcmd "$n" flush && bcmd "$n" "read $off $BS"; }; then
    blkif_cmd "$n" close >/dev/null
    why "h$n-blkif writing block $3 of $vol: $WHY"; return 1
  fi
  [ "$BLKIF_REPLY" = "$want" ] ||
    { blkif_cmd "$n" close >/dev/null; why "h$n-blkif read back '$BLKIF_REPLY' after writing $p2 to block $3 of $vol"; return 1; }
  [ -n "$keep" ] || bcmd "$n" close
}

# fe_expect FE VOL BLOCK PATTERN WHAT: front end FE opens VOL (rw, as a guest would) and
# reads BLOCK: it must be all PATTERN.
fe_expect() {
  local fe=$1 vol=$2 blk=$3 pat=$4 what=$5
  case $fe in
    n*) expect "${fe#n}" "$vol" "$blk" "$pat" "$what"; return ;;
  esac
  local n=${fe#b} want got
  want=$(printf 'pattern 0x%02x' "$pat")
  bhost "$n" && bcmd "$n" "open $vol rw" || return
  bcmd "$n" "read $((blk * BS)) $BS" || { blkif_cmd "$n" close >/dev/null; why "$what: $WHY"; return 1; }
  got=$BLKIF_REPLY
  bcmd "$n" close || return
  [ "$got" = "$want" ] || why "$what: h$n-blkif read '$got' in block $blk of $vol, expected '$want'"
}

# a'. Live migration X -> Y -> X with blkif front ends on either or both sides.
migrate_back_fe() {  # VOL X Y (front ends)
  local vol=$1 x=$2 y=$3
  cli 3 volume create "$vol" 4M || return
  fe_write_owned "$x" "$vol" 0 0xa1 0xa2 && closed "$vol" || return
  fe_write_owned "$y" "$vol" 0 0xb1 0xb2 && closed "$vol" || return
  if ! fe_expect "$x" "$vol" 0 0xb2 "$(fe_name "$x") reopened $vol after $(fe_name "$y") wrote it"; then
    local reason=$WHY
    closed "$vol" && WHY="$reason (h3 over NBD, which never read $vol, reads $(first_byte 3 "$vol" 0): the pool holds $(fe_name "$y")'s data)"
    return 1
  fi
  closed "$vol"
}
case_a_blkif_migrate_b1_n2_b1() { migrate_back_fe ab_vm1 b1 n2; }
case_a_blkif_migrate_n1_b2_n1() { migrate_back_fe ab_vm2 n1 b2; }
case_a_blkif_migrate_b2_b1_b2() { migrate_back_fe ab_vm3 b2 b1; }

# b'. X holds VOL rw and writes block 0 in place; VOL is cloned (recall across hosts); Y,
#     which wrote block 0 in place when it held the lease earlier, reads the clone: X's
#     data. Blkif as the reader, as the holder, and as both.
clone_while_held_fe() {  # VOL X Y (front ends)
  local vol=$1 x=$2 y=$3 holder='' rc=0
  cli 3 volume create "$vol" 4M || return
  fe_write_owned "$y" "$vol" 0 0xc1 0xc2 && closed "$vol" || return
  case $x in
    n*) hold "${x#n}" "$vol" || return; holder=$RIG_HOLD_PID ;;
  esac
  {
    fe_write_owned "$x" "$vol" 0 0xd1 0xd2 keep &&
    cli 3 volume clone "$vol" "$vol-c1" &&
    fe_expect "$y" "$vol-c1" 0 0xd2 "clone of $vol made while $(fe_name "$x") held it"
  } || rc=1
  case $x in
    n*) rig_release "$holder" ;;
    b*) blkif_cmd "${x#b}" close >/dev/null || { [ $rc = 1 ] || why "$(fe_name "$x"): close: $BLKIF_REPLY"; rc=1; } ;;
  esac
  [ $rc = 0 ] && closed "$vol" && closed "$vol-c1"
}
case_b_blkif_clone_held_n1_read_b2() { clone_while_held_fe bb_vm1 n1 b2; }
case_b_blkif_clone_held_b1_read_n2() { clone_while_held_fe bb_vm2 b1 n2; }
case_b_blkif_clone_held_b2_read_b1() { clone_while_held_fe bb_vm3 b2 b1; }

# c''. A read-only opener that stays open on one host while another host holds the
#      volume rw and rewrites block 0 in place (filling a hole first): every read sees
#      the writer's last flushed data (owned blocks are not cached by a read-only
#      opener; commits recall its maps). Only a blkif guest can open a writable volume
#      read-only (the NBD export opens it rw), so the reader is h3-blkif.
ro_reader_fe() {  # VOL WRITER (front end)
  local vol=$1 w=$2 holder='' rc=0 i pat want
  cli 3 volume create "$vol" 4M || return
  case $w in
    n*) hold "${w#n}" "$vol" || return; holder=$RIG_HOLD_PID ;;
    b*) bhost "${w#b}" && bcmd "${w#b}" "open $vol rw" || return ;;
  esac
  if bhost 3 && bcmd 3 "open $vol ro"; then
    for i in 1 2 3; do
      pat=$(printf 0x%02x $((0xe0 + i)))
      case $w in
        n*) write_owned "${w#n}" "$vol" 0 $((pat + 8)) "$pat" ;;
        b*) bcmd "${w#b}" "write 0 $BS $((pat + 8))" && bcmd "${w#b}" flush &&
            bcmd "${w#b}" "write 0 $BS $pat" && bcmd "${w#b}" flush ;;
      esac || { rc=1; break; }
      want=$(printf 'pattern 0x%02x' "$pat")
      bcmd 3 "read 0 $BS" || { rc=1; break; }
      [ "$BLKIF_REPLY" = "$want" ] ||
        { why "round $i: h3-blkif (open ro while $(fe_name "$w") holds $vol rw) read '$BLKIF_REPLY', expected '$want'"; rc=1; break; }
    done
    blkif_cmd 3 close >/dev/null || { [ $rc = 1 ] || why "h3-blkif: close: $BLKIF_REPLY"; rc=1; }
  else
    rc=1
  fi
  case $w in
    n*) rig_release "$holder" ;;
    b*) blkif_cmd "${w#b}" close >/dev/null || { [ $rc = 1 ] || why "$(fe_name "$w"): close: $BLKIF_REPLY"; rc=1; } ;;
  esac
  [ $rc = 0 ] && closed "$vol"
}
case_c_blkif_ro_reader_b3_writer_n1() { ro_reader_fe cb_vm1 n1; }
case_c_blkif_ro_reader_b3_writer_b1() { ro_reader_fe cb_vm2 b1; }

# r'. A blkif host killed with -9 while it holds a volume rw: its lease ends with its
#     connection; another host opens the volume and reads what was flushed; the blkif
#     host started again writes and reads it.
case_r_blkif_kill9_holder() {
  local vol=rb_vm
  cli 1 volume create "$vol" 1M || return
  bhost 1 && bcmd 1 "open $vol rw" && bcmd 1 "write 0 $BS 0x71" && bcmd 1 flush || return
  rig_blkif_kill 1
  closed "$vol" || why "the mapserver kept h1-blkif's open of $vol after kill -9: $WHY" || return
  expect 2 "$vol" 0 0x71 "after h1-blkif was killed holding $vol" || return
  closed "$vol" || return
  fe_write_owned b1 "$vol" 0 0x72 0x73 && closed "$vol" || return
  expect 3 "$vol" 0 0x73 "h1-blkif restarted after kill -9 and wrote $vol" && closed "$vol"
}

# m. The randomized model check (model_check.py, see run_model_check.sh for a long run):
#    MODEL_CHECK_STEPS (4000) random steps over 3 hosts against a model of every volume,
#    with host crashes and mapserver restarts, a random seed (printed; MODEL_CHECK_SEED
#    repeats one). On a rig of its own (run_model_check.sh): it restarts daemons.
model_check() {  # ARGS...: model_check.py on this rig (no daemon restarts); output in OUT
  local py=/usr/bin/python3
  [ -x "$py" ] || py=python3
  "$py" -c 'import nbd' 2>/dev/null || why "python3-libnbd is not installed (make deps)" || return
  OUT=$("$py" "$here/model_check.py" --rig-env "$RIG_DIR/rig.env" --no-restart --no-failures "$@" 2>&1)
}
case_m_model_check() {
  local rc
  OUT=$("$here/run_model_check.sh" "$build" --steps "${MODEL_CHECK_STEPS:-4000}" \
    ${MODEL_CHECK_SEED:+--seed "$MODEL_CHECK_SEED"} --shrink-time 60 2>&1)
  rc=$?
  grep -E '^model_check: (seed|[0-9]+ steps|ops|wrong)' <<<"$OUT" | sed 's/^/    /'
  [ $rc = 0 ] && return 0
  sed -n '/FAIL\|SKIPPED/,$p' <<<"$OUT" | sed 's/^/    /'
  why "$(grep -m1 -E '^model_check: FAIL|SKIPPED' <<<"$OUT"): $(grep -m1 -E '^  (wrong-read|unexpected)' <<<"$OUT" | cut -c1-300)"
}
# m'. The wrong read the model check found (seed 3): shrinking a volume into the middle of
#    a pool block and growing it again brought back the old data of that block's tail
#    (such a shrink is now refused: 3e23a47).
case_m_replay_shrink_into_block_regrow() {
  model_check --replay "$here/replays/shrink_into_block_regrow.json" --shrink-time 0 && return 0
  why "$(grep -m1 -E '^  (wrong-read|unexpected)' <<<"$OUT") — $(grep -m1 -A1 -E 'expected' <<<"$OUT" | tr -s ' \n' ' ')"
}
# m''. A race the model check found (long run, seed 1438821139, step 45026): host 3 writes
#    a block whole (copy-on-write into a hole, or over a block written under an earlier
#    lease) and flushes; a VOLUME@ro reader on host 2 that had read the volume reads the
#    block right after the flush: zeros / the old data in ~1-4 % of rounds until c66d0cd
#    (a commit waits for the recall answers). Each list repeats the round 480 times.
replay_case() {  # FILE: model_check.py --replay FILE on this rig
  model_check --replay "$here/replays/$1" --shrink-time 0 && return 0
  why "$(grep -m1 -E '^model_check: FAIL' <<<"$OUT" | sed 's/.*) at //' | cut -c1-120): $(grep -m1 -E '^  (wrong-read|unexpected)' <<<"$OUT" | cut -c1-160) — $(grep -m2 -E '^    (expected|got)' <<<"$OUT" | tr -s ' \n' ' ')"
}
case_m_replay_flushed_hole_stale_on_reader() { replay_case flushed_hole_stale_on_reader.json; }
case_m_replay_flushed_rewrite_stale_on_reader() { replay_case flushed_rewrite_stale_on_reader.json; }

# ---------------------------------------------------------------------------------------
# f. Leases that survive failures (mapserver/doc/leases.md; T = RIG_LEASE_SECONDS).

# python3 with libnbd (Debian's python3-libnbd is for /usr/bin/python3)
PY=/usr/bin/python3; [ -x "$PY" ] || PY=python3
now_s() { python3 -c 'import time; print("%.6f" % time.monotonic())'; }
# at_least A B: A >= B (decimal seconds)
at_least() { python3 -c 'import sys; sys.exit(0 if float(sys.argv[1]) >= float(sys.argv[2]) else 1)' "$1" "$2"; }
# The earliest a lease held by a host that renewed every T/5 can expire after an event:
# 1.1 T after its last renewal, which was at most T/5 before it.
min_expiry() { python3 -c "print($RIG_LEASE_SECONDS * 0.9)"; }
ft() { "$PY" "$here/fence_tools.py" "$@"; }
# fsck_clean: the mapserver stopped, fsck'd and started again (hosts reconnect).
fsck_clean() {
  rig_stop_mapserver || { why "the mapserver did not stop"; return 1; }
  local out
  out=$(rig_exec_ms "$RIG_BIN/mapserver" fsck --config "$RIG_DIR/ms/tapmap.conf" 2>&1)
  local rc=$?
  rig_start_mapserver || { why "the mapserver did not start again"; return 1; }
  [ $rc -eq 0 ] || why "fsck: $(tr '\n' ' ' <<<"$out" | cut -c1-300)"
}

# f1. Fencing on partition: h1 streams writes (and flushes) to a volume; its link is
#     cut; h2 opens the volume rw and is granted it only after h1's lease ran out; h2
#     reads it and writes markers; the link heals and h1, told its lease is gone, fails
#     its held writes. fence_tools.py check: no write acknowledged to h1 after h2's
#     grant, h2 read every flushed write, and the blocks as a third host reads them
#     from the pool afterwards are what h2 saw (no late write of h1 landed).
case_f_partition_fences_writer() {
  local vol=f_part d="$RIG_DIR/clients/f_part"
  mkdir -p "$d"
  cli 1 volume create "$vol" 4M || return
  rig_exec 1 "$PY" "$here/fence_tools.py" writer "$(rig_nbd_url 1 "$vol")" "$d/writer.log" \
    >"$d/writer.out" 2>&1 &
  local wpid=$!
  rig_wait_for "$RIG_WAIT_S" "h1's writer to flush 4 times" _f_flushes "$d/writer.log" 4 ||
    { kill $wpid 2>/dev/null; why "h1's writer did not get going: $(tail -c 300 "$d/writer.out" "$d/writer.log" 2>/dev/null | tr '\n' ' ')"; return 1; }
  local cut
  cut=$(now_s)
  rig_cut 1
  if ! rig_exec 2 "$PY" "$here/fence_tools.py" takeover "$(rig_nbd_url 2 "$vol")" "$d/takeover.json" \
       "$d/snapshot" --mark-blocks 0,5 >"$d/takeover.out" 2>&1; then
    rig_heal 1; kill $wpid 2>/dev/null
    why "h2's takeover of $vol failed: $(tr '\n' ' ' <<<"$(cat "$d/takeover.out")" | cut -c1-300)"; return 1
  fi
  local granted lease_state
  granted=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["granted"])' "$d/takeover.json")
  # h1 (its control socket is local) says it is fenced.
  lease_state=$(rig_tapmap 1 --json stats | python3 -c 'import json,sys; l=json.load(sys.stdin)["stats"]["lease"]; print(l["state"], l["fences"])')
  rig_heal 1
  # h1 learns its lease is gone: its held and later writes fail, the writer stops.
  rig_wait_for "$RIG_WAIT_S" "h1's writer to give up" _f_gone "$wpid" ||
    { kill $wpid 2>/dev/null; why "h1's writer kept going after its lease was lost: $(tail -3 "$d/writer.log" | tr '\n' ' ')"; return 1; }
  closed "$vol" || return
  ft dump "$(rig_nbd_url 3 "$vol@ro")" "$d/final" >"$d/dump.out" 2>&1 ||
    { why "h3 could not read $vol: $(cat "$d/dump.out" | tr '\n' ' ' | cut -c1-300)"; return 1; }
  closed "$vol" || return
  local verdict
  if ! verdict=$(ft check "$d/writer.log" "$d/takeover.json" "$d/snapshot" "$d/final" 2>&1); then
    why "$(tr '\n' ' ' <<<"$verdict" | cut -c1-400)"; return 1
  fi
  local waited
  waited=$(python3 -c "print('%.2f' % ($granted - $cut))")
  at_least "$waited" "$(min_expiry)" ||
    { why "h2 got $vol rw ${waited} s after h1's link was cut, before h1's lease could run out ($(min_expiry) s)"; return 1; }
  grep -q 'lease: fenced' "$(rig_hdir 1)/tapdisk-map.log" ||
    { why "h1's log does not say it fenced itself"; return 1; }
  [ "$lease_state" = "fenced 1" ] ||
    { why "tapmap stats on h1 said lease '$lease_state' while it was cut off, not 'fenced 1'"; return 1; }
  echo "  $verdict; h2 granted ${waited} s after the cut" >&2
}
_f_flushes() { [ "$(grep -c '^F ' "$1" 2>/dev/null)" -ge "$2" ]; }
_f_gone() { ! kill -0 "$1" 2>/dev/null; }

# f2. kill -9 of a writer host: h1 holds a volume rw with flushed data and dies; h2's
#     rw open is granted only after h1's lease ran out and reads the flushed data;
#     h1 started again writes it; fsck clean.
case_f_kill9_writer_takeover() {
  local vol=f_kill d="$RIG_DIR/clients/f_kill"
  mkdir -p "$d"
  cli 1 volume create "$vol" 1M || return
  hold 1 "$vol" || return
  local holder=$RIG_HOLD_PID
  io 1 "$vol" "write -P 0x5a 0 $BS" flush || { rig_release $holder; return 1; }
  local killed
  killed=$(now_s)
  rig_kill_host 1
  rig_release $holder
  if ! rig_exec 2 "$PY" "$here/fence_tools.py" takeover "$(rig_nbd_url 2 "$vol")" "$d/takeover.json" \
       "$d/snapshot" --blocks 1 --mark-blocks "" >"$d/takeover.out" 2>&1; then
    rig_start_host 1 >/dev/null 2>&1
    why "h2's takeover failed: $(tr '\n' ' ' <<<"$(cat "$d/takeover.out")" | cut -c1-300)"; return 1
  fi
  local waited
  waited=$(python3 -c 'import json,sys; print("%.2f" % (json.load(open(sys.argv[1]))["granted"] - float(sys.argv[2])))' \
    "$d/takeover.json" "$killed")
  rig_start_host 1 || { why "h1 did not start again"; return 1; }
  at_least "$waited" "$(min_expiry)" ||
    { why "h2 got $vol rw ${waited} s after h1 was killed, before its lease could run out"; return 1; }
  expect 2 "$vol" 0 0x5a "h2 after h1 was killed -9 holding $vol" || return
  closed "$vol" || return
  write_owned 1 "$vol" 0 0x5b 0x5c && closed "$vol" || return
  expect 3 "$vol" 0 0x5c "h1 restarted and wrote $vol" && closed "$vol" || return
  fsck_clean || return
  echo "  h2 granted ${waited} s after the kill" >&2
}

# g. Mapserver restart with a grace period: h1 holds a volume rw and has written it
#    (unflushed); the mapserver is killed -9 and started again; h1 reclaims its lease,
#    so h2's rw open (which waits out the grace period) is refused busy and a delete
#    too; h1's flush then succeeds and a third host reads the data.
case_g_mapserver_restart_grace() {
  local vol=g_grace
  cli 1 volume create "$vol" 1M || return
  hold 1 "$vol" || return
  local holder=$RIG_HOLD_PID
  io 1 "$vol" "write -P 0x61 0 $BS" flush "write -P 0x62 $BS $BS" || { rig_release $holder; return 1; }
  rig_kill_mapserver
  rig_start_mapserver || { rig_release $holder; why "the mapserver did not start again"; return 1; }
  grep -q 'grace period' "$RIG_DIR/ms/mapserver.log" ||
    { rig_release $holder; why "the restarted mapserver announced no grace period"; return 1; }
  local out
  out=$(rig_tapmap 2 volume delete "$vol" 2>&1) &&
    { rig_release $holder; why "a delete of $vol right after the restart succeeded while h1 held it"; return 1; }
  if io 2 "$vol" "write -P 0x66 0 $BS"; then
    rig_release $holder; why "h2 wrote $vol after the restart while h1 held it"; return 1
  fi
  io 1 "$vol" flush "read -P 0x61 0 $BS" "read -P 0x62 $BS $BS" ||
    { rig_release $holder; why "h1 after reclaiming: $WHY"; return 1; }
  rig_release $holder
  closed "$vol" || return
  expect 3 "$vol" 0 0x61 "h3 after the restart" && expect 3 "$vol" 1 0x62 "h3 after the restart" &&
    closed "$vol"
}

# l. Live migration with blkif front ends (leases.md "Standby"), A -> B -> A: the
#    destination attaches the disk while the source still holds it (a standby: reads
#    go, writes wait); the source has writes in flight when the guest suspends (its
#    answers are never collected); the source closes the disk (domain destroyed); the
#    destination, promoted, gets the unanswered writes re-issued (as blkfront's
#    recovery does) and the guest reads everything back; then back to A. 0 acknowledged
#    writes lost, 0 wrong reads; a third host reads the same afterwards.
migrate_blkif() {  # VOL SRC DST STEP: blkif host SRC holds VOL rw; move the guest to DST
  local vol=$1 src=$2 dst=$3 step=$4 reply w
  bcmd "$dst" "open $vol rw" || return
  [ "$(rig_volume_field 3 "$vol" standby)" = "h$dst-blkif" ] ||
    { why "h$dst-blkif's open of $vol (held by h$src-blkif) is not a standby: $(rig_tapmap 3 volume info "$vol" | tr '\n' ' ')"; return 1; }
  blkif_cmd "$dst" "read 0 $BS" >/dev/null && [ "$BLKIF_REPLY" != "" ] || { why "the standby could not read: $BLKIF_REPLY"; return 1; }
  # Writes in flight on the source when the guest suspends.
  bcmd "$src" "submit $((2 * BS)) $BS $((0x20 + step))" || return
  bcmd "$src" "submit 0 4096 $((0x30 + step))" || return
  blkif_cmd "$src" suspend >/dev/null || { why "h$src-blkif suspend: $BLKIF_REPLY"; return 1; }
  reply=$BLKIF_REPLY
  [[ $reply == unanswered* ]] || { why "h$src-blkif suspend answered '$reply'"; return 1; }
  # The destination's front end re-issues what was unanswered, in order.
  for w in ${reply#unanswered}; do
    IFS=: read -r off len byte <<<"$w"
    bcmd "$dst" "write $off $len $byte" || return
  done
  bcmd "$dst" flush || return
  [ "$(rig_volume_field 3 "$vol" writer)" = "h$dst-blkif" ] ||
    { why "h$dst-blkif does not hold $vol rw after the source closed it"; return 1; }
}
blkif_pattern() {  # N OFF LEN BYTE WHAT: blkif host N reads the range as all BYTE
  blkif_cmd "$1" "read $2 $3" >/dev/null
  [ "$BLKIF_REPLY" = "$(printf 'pattern 0x%02x' "$4")" ] ||
    { why "$5: h$1-blkif read [$2, +$3) as '$BLKIF_REPLY', expected $(printf '0x%02x' "$4")"; return 1; }
}
case_l_blkif_live_migration_a_b_a() {
  local vol=l_mig
  cli 3 volume create "$vol" 4M || return
  bhost 1 && bhost 2 || return
  bcmd 1 "open $vol rw" && bcmd 1 "write 0 $BS 0x11" && bcmd 1 flush && bcmd 1 "write $BS $BS 0x12" || return
  migrate_blkif "$vol" 1 2 1 || return
  blkif_pattern 2 0 4096 0x31 "after A->B" && blkif_pattern 2 4096 $((BS - 4096)) 0x11 "after A->B" &&
    blkif_pattern 2 "$BS" "$BS" 0x12 "after A->B (written on A, acknowledged, not flushed)" &&
    blkif_pattern 2 $((2 * BS)) "$BS" 0x21 "after A->B (in flight on A)" || return
  bcmd 2 "write $((3 * BS)) $BS 0x13" || return
  migrate_blkif "$vol" 2 1 2 || return
  blkif_pattern 1 0 4096 0x32 "after B->A" && blkif_pattern 1 4096 $((BS - 4096)) 0x11 "after B->A" &&
    blkif_pattern 1 "$BS" "$BS" 0x12 "after B->A" && blkif_pattern 1 $((2 * BS)) "$BS" 0x22 "after B->A" &&
    blkif_pattern 1 $((3 * BS)) "$BS" 0x13 "after B->A (written on B, not flushed)" || return
  bcmd 1 close || return
  closed "$vol" || return
  expect 3 "$vol" 1 0x12 "h3 after the migrations" && expect 3 "$vol" 2 0x22 "h3 after the migrations" &&
    expect 3 "$vol" 3 0x13 "h3 after the migrations" && closed "$vol"
}

# s. Mapserver fail-over on a RADOS pool (RIG_POOL_KIND=rados; mapserver/doc/
#    metadata_rados.md): a standby mapserver (ms2) follows the active's metadata journal;
#    h1 and h2 each stream writes and flushes to a volume of their own; the active is
#    killed -9 (right after a snapshot of both volumes, so that the writers' next writes
#    are copy-on-write and need the mapserver); the standby takes the expired lock over
#    (blocklisting the old active)
#    and serves; the hosts, which know both addresses, reconnect and reclaim their
#    leases (grace period) and their writers go on without an error. Then the killed
#    one comes back as the standby and the next round kills the new active.
#    Even rounds SIGSTOP the active instead (RIG_FAILOVER_MODE): once thawed after the
#    takeover it must stop by itself, having written nothing (FATAL in its log).
#    RIG_FAILOVER_ROUNDS rounds (default 2). Per round: takeover time (kill -> the new
#    active listens) and how long the writers' acknowledgements stalled; afterwards h3
#    reads every flushed write back (fence_tools.py durable) and fsck of the RADOS copy
#    is clean. Takeover times go to RIG_DIR/clients/s_failover/times.
# _s_following LOG: the standby started last (after the last "rig: standby start"
# marker) says it follows the journal.
_s_gone() { ! kill -0 "$1" 2>/dev/null || grep -q '^State:.*Z' "/proc/$1/status" 2>/dev/null; }
_s_following() { awk '/=== rig: standby start/ {f = 0} /standby: following/ {f = 1} END {exit !f}' "$1"; }
case_s_mapserver_failover() {
  [ "$RIG_POOL_KIND" = rados ] || { echo "  (file pool: no standby; skipped)" >&2; return 0; }
  local d="$RIG_DIR/clients/s_failover" rounds=${RIG_FAILOVER_ROUNDS:-2} active=1 standby=2 r n
  mkdir -p "$d"; : >"$d/times"
  # 4096 blocks of 64 KiB: a pass of the writer over them takes longer than a takeover,
  # so copy-on-write writes are still going on when the active dies.
  local blocks=4096
  for n in 1 2; do cli "$n" volume create "s_vol$n" 256M || return; done
  rig_start_mapserver_at "$standby" --standby
  local wpids=()
  for n in 1 2; do
    # (ip netns exec execs the writer: $! is its pid, which the SIGTERM below must reach)
    ip netns exec "$(rig_ns "$n")" "$PY" "$here/fence_tools.py" writer "$(rig_nbd_url "$n" "s_vol$n")" \
      "$d/writer$n.log" --blocks "$blocks" --max-errors 1 >"$d/writer$n.out" 2>&1 &
    wpids+=("$!")
  done
  for n in 1 2; do
    rig_wait_for "$RIG_WAIT_S" "h$n's writer to flush" _f_flushes "$d/writer$n.log" 3 ||
      { kill "${wpids[@]}" 2>/dev/null; why "h$n's writer did not get going: $(tail -c 300 "$d/writer$n.out")"; return 1; }
  done
  local kills=()
  for r in $(seq 1 "$rounds"); do
    # The standby must be following the journal before the active dies.
    local sdir=$RIG_DIR/ms; [ "$standby" = 2 ] && sdir=$RIG_DIR/ms2
    rig_wait_for "$RIG_WAIT_S" "mapserver $standby to follow the journal" _s_following "$sdir/mapserver.log" ||
      { kill "${wpids[@]}" 2>/dev/null; why "round $r: the standby never followed the journal: $(tail -3 "$sdir/mapserver.log" | tr '\n' ' ')"; return 1; }
    # A snapshot of each volume first: every block the writers own becomes shared, so
    # their next writes are copy-on-write (prepareWrite + commit at the mapserver) and
    # their flushes wait for commits across the fail-over.
    # (The previous round's snapshot goes first: memstore keeps every block in memory.)
    for n in 1 2; do
      [ "$r" -gt 1 ] && { cli 3 volume delete "s_vol$n-r$((r - 1))" >/dev/null || true; }
      cli 3 volume snapshot "s_vol$n" "s_vol$n-r$r" >/dev/null ||
        { kill "${wpids[@]}" 2>/dev/null; why "round $r: snapshot of s_vol$n: $WHY"; return 1; }
    done
    local killed mode=kill; killed=$(now_s)
    kills+=("$killed")
    # RIG_FAILOVER_MODE: kill (kill -9), stop (SIGSTOP: a hung active, a zombie once it
    # is thawed) or mixed (the default: kill in odd rounds, stop in even ones).
    case "${RIG_FAILOVER_MODE:-mixed}" in stop) mode=stop ;; mixed) [ $((r % 2)) = 0 ] && mode=stop ;; esac
    local frozen=
    if [ "$mode" = kill ]; then
      rig_kill_mapserver_at "$active"
    else
      frozen=$RIG_MS_PID; [ "$active" = 2 ] && frozen=$RIG_MS2_PID
      kill -STOP "$frozen"
    fi
    rig_wait_for 60 "mapserver $standby to take over" rig_ms_listening "$standby" ||
      { kill "${wpids[@]}" 2>/dev/null; why "round $r: the standby did not take over within 60 s: $(tail -3 "$sdir/mapserver.log" | tr '\n' ' ')"; return 1; }
    local took; took=$(python3 -c "print('%.2f' % ($(now_s) - $killed))")
    echo "$took" >>"$d/times"
    # Both writers flush again with the new active.
    for n in 1 2; do
      local before; before=$(grep -c '^F ' "$d/writer$n.log")
      rig_wait_for 60 "h$n's writer to flush with the new active" _f_flushes "$d/writer$n.log" $((before + 2)) ||
        { kill "${wpids[@]}" 2>/dev/null; why "round $r: h$n's writer made no progress after the takeover: $(tail -2 "$d/writer$n.log" | tr '\n' ' ')"; return 1; }
    done
    if [ -n "$frozen" ]; then
      # Thawed, the old active finds its lock gone (and its client blocklisted): it must
      # stop at once without writing metadata; the writers went on with the new active.
      kill -CONT "$frozen"
      local adir=$RIG_DIR/ms; [ "$active" = 2 ] && adir=$RIG_DIR/ms2
      rig_wait_for 30 "the thawed old active to stop" _s_gone "$frozen" ||
        { kill -9 "$frozen"; kill "${wpids[@]}" 2>/dev/null; why "round $r: the old active kept running after SIGCONT: $(tail -2 "$adir/mapserver.log" | tr '\n' ' ')"; return 1; }
      wait "$frozen" 2>/dev/null
      grep -q "FATAL" "$adir/mapserver.log" ||
        { kill "${wpids[@]}" 2>/dev/null; why "round $r: the thawed old active stopped without saying why"; return 1; }
      if [ "$active" = 1 ]; then RIG_MS_PID=; else RIG_MS2_PID=; fi
    fi
    echo "  round $r: mapserver $standby took over ${took} s after the $mode of mapserver $active" >&2
    # The old active comes back as the standby.
    rig_start_mapserver_at "$active" --standby
    local t=$active; active=$standby; standby=$t
  done
  kill -TERM "${wpids[@]}" 2>/dev/null
  for p in "${wpids[@]}"; do wait "$p" 2>/dev/null; done
  for n in 1 2; do closed "s_vol$n" || return; done
  local verdict
  for n in 1 2; do
    ft dump "$(rig_nbd_url 3 "s_vol$n@ro")" "$d/final$n" --blocks "$blocks" >"$d/dump$n.out" 2>&1 ||
      { why "h3 could not read s_vol$n: $(tr '\n' ' ' <"$d/dump$n.out" | cut -c1-300)"; return 1; }
    verdict=$(ft durable "$d/writer$n.log" "$d/final$n" --after "${kills[0]}" --blocks "$blocks" 2>&1) ||
      { why "h$n's writes: $(tr '\n' ' ' <<<"$verdict" | cut -c1-400)"; return 1; }
    echo "  h$n: $verdict" >&2
  done
  closed "s_vol1" && closed "s_vol2" || return
  local out; out=$(rig_exec_ms "$RIG_BIN/mapserver" fsck --config "$RIG_DIR/ms/tapmap.conf" 2>&1) ||
    { why "fsck of the RADOS copy: $(tr '\n' ' ' <<<"$out" | cut -c1-300)"; return 1; }
  echo "  takeover times (s): $(tr '\n' ' ' <"$d/times")" >&2
}

cases=(
  case_a_migrate_h1_h2_h1 case_a_migrate_h2_h1_h2
  case_b_clone_held_h1_read_h2 case_b_clone_held_h2_read_h1
  case_c_ro_reader_while_writer case_c_reader_between_rewrites
  case_d_snapshot_clone_of_held_volume case_d_discard_seen_elsewhere
  case_d_resize_seen_elsewhere case_d_delete_reallocate
  case_e_import_export_across_hosts case_e_fio_rewrite_elsewhere
  case_r_rig_operations
  case_a_blkif_migrate_b1_n2_b1 case_a_blkif_migrate_n1_b2_n1 case_a_blkif_migrate_b2_b1_b2
  case_b_blkif_clone_held_n1_read_b2 case_b_blkif_clone_held_b1_read_n2 case_b_blkif_clone_held_b2_read_b1
  case_c_blkif_ro_reader_b3_writer_n1 case_c_blkif_ro_reader_b3_writer_b1
  case_r_blkif_kill9_holder
  case_f_partition_fences_writer case_f_kill9_writer_takeover case_g_mapserver_restart_grace
  case_l_blkif_live_migration_a_b_a
)
cases+=(case_s_mapserver_failover)
cases+=(case_m_model_check case_m_replay_shrink_into_block_regrow
        case_m_replay_flushed_hole_stale_on_reader case_m_replay_flushed_rewrite_stale_on_reader)

# ---------------------------------------------------------------------------------------
# Run

t0=$SECONDS
rig_init "$build" "${RIG_HOSTS:-3}" || { echo "cluster: rig setup failed"; echo "cluster: 0 passed, 1 failed"; exit 1; }
echo "== cluster rig: $RIG_HOSTS hosts + mapserver in namespaces $RIG_ID-*, $RIG_SERVER, pool $RIG_POOL_LOCATION"
passed=0 failed=0
start_ok=1
rig_start_mapserver || start_ok=0
for n in $(seq 1 "$RIG_HOSTS"); do [ $start_ok = 1 ] && { rig_start_host "$n" || start_ok=0; }; done
if [ $start_ok = 0 ]; then
  echo "FAIL rig_start: the mapserver or a host did not start"
  echo "cluster: 0 passed, 1 failed"
  exit 1
fi
for c in "${cases[@]}"; do
  name=${c#case_}
  if [ ${#selected[@]} -gt 0 ]; then
    hit=0; for s in "${selected[@]}"; do [[ $name == "$s"* ]] && hit=1; done
    [ $hit = 1 ] || continue
  fi
  WHY= ; ct=$SECONDS
  if "$c"; then
    echo "PASS $name ($((SECONDS - ct)) s)"; passed=$((passed + 1))
  else
    echo "FAIL $name: ${WHY:-no reason given}"; failed=$((failed + 1))
    # a failed case may leave holders or half-closed volumes behind: restart clean
    for n in $(seq 1 "$RIG_HOSTS"); do
      for pid in $(ip netns pids "$(rig_ns "$n")" 2>/dev/null); do
        [ "$pid" = "${RIG_HOST_PID[$n]:-}" ] || kill -TERM "$pid" 2>/dev/null
      done
      rig_host_running "$n" || rig_start_host "$n" >/dev/null 2>&1
    done
    for n in "${!RIG_BLKIF_PID[@]}"; do rig_blkif_kill "$n"; done   # killed above; restarted on demand
  fi
done
rig_blkif_stop_all || echo "cluster: a blkif host did not stop cleanly (logs: $RIG_DIR/h*/blkif/sim_blkif_host.log)"
for n in $(seq 1 "$RIG_HOSTS"); do
  rig_host_running "$n" && { rig_stop_host "$n" || echo "cluster: host h$n did not stop cleanly (log: $(rig_hdir "$n")/tapdisk-map.log)"; }
done
rig_stop_mapserver || echo "cluster: the mapserver did not stop cleanly"
echo "cluster: $passed passed, $failed failed ($((SECONDS - t0)) s)"
[ "$failed" = 0 ]
