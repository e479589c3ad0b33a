# The two-host Xen lab (tests/lab/two_host.sh), sourced after cases.sh by two-host-init
# in both dom0s and by the agent (two-host-agent) that runs host b's part.
#
# Host a (10.99.0.1) drives everything: it runs the mapserver (pool = the shared LUN,
# listening on tcp:10.99.0.1:7300) and its own tapdisk-map, creates the guests, and asks
# host b to do b's part of each step through b's agent (port 5001: one line "th_FN ARGS",
# the answer is FN's stdout and a last line "THRC <exit code>"). Both hosts receive live
# migrations on port 5000 (busybox nc -ll running `xl migrate-receive`): `xl migrate -s ''
# NAME "busybox nc PEER 5000"` makes xl run that string itself as the transport.
#
# Lines on host a's console (the host harness reads them from QEMU's serial log):
#   LABRESULT <case> <PASS|FAIL|RETRIED> <seconds> <detail>    (cases.sh's lab_case)
#   LABMOVE <case> <move> <seconds> <detail>                    one per guest move
# Logs and diagnostics of each host go to its own console (serial-a.log, serial-b.log).

TH_ROLE=$(tr ' ' '\n' < /proc/cmdline | sed -n 's/^lab_role=//p' | tail -n 1)
TH_ME=$(tr ' ' '\n' < /proc/cmdline | sed -n 's/^lab_ip=//p' | tail -n 1)
TH_PEER=$(tr ' ' '\n' < /proc/cmdline | sed -n 's/^lab_peer=//p' | tail -n 1)
TH_SERVER_IP=10.99.0.1          # host a
TH_SERVER=tcp:$TH_SERVER_IP:7300
TH_AGENT_PORT=5001
TH_MIGRATE_PORT=5000
# The shared LUN: 768 MiB. The tapmap pool is its first 512 MiB; the kernel-blkback
# baseline guest writes from 576 MiB on (its 4 KiB block 147456), so the pool is intact.
TH_LUN_SECTORS=1572864
TH_POOL_SIZE=512M
TH_BB_BASE=147456
TH_GUEST_MEM=128
TH_MOVE_TIMEOUT=${TH_MOVE_TIMEOUT:-900}
TH_TRY=0

th_log() { echo "[two-host $TH_ROLE $(lab_now)] $*" >&2; }
th_secs() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.1f", b-a}'; }
th_wall() { date +%s.%N; }
th_lun() {
  local b
  for b in /sys/block/vd*; do [ "$(cat "$b/size")" = "$TH_LUN_SECTORS" ] && { echo "/dev/${b##*/}"; return 0; }; done
  return 1
}

# th_remote FN ARGS... → runs FN on the peer (its agent), prints FN's stdout, returns
# FN's exit code (255: no answer).
th_remote() {
  local out rc
  out=$(echo "$*" | timeout "${TH_REMOTE_TIMEOUT:-1500}" busybox nc "$TH_PEER" "$TH_AGENT_PORT" 2>/dev/null)
  rc=$(printf '%s\n' "$out" | sed -n 's/^THRC //p' | tail -n 1)
  printf '%s\n' "$out" | grep -v '^THRC ' | sed '/^$/d'
  return "${rc:-255}"
}
th_ping() { echo "pong $TH_ROLE"; }

# ---- daemons -----------------------------------------------------------------------
th_setup_tapmap() {   # this host's tapmap.conf; host a formats the pool, starts the mapserver
  local lun; lun=$(th_lun) || { th_log "no shared LUN"; return 1; }
  mkdir -p /etc/tapmap /var/lib/tapmap
  {
    if [ "$TH_ROLE" = a ]; then cat <<CONF
[mapserver]
pool = $lun
meta = /var/lib/tapmap/meta
listen = $TH_SERVER
# The lab's private QEMU network only; the cluster rig (tests/cluster) runs mutual TLS.
insecure-plaintext-tcp = true

CONF
    fi
    cat <<CONF
[tapdisk-map]
server = $TH_SERVER
pool = $lun
host-name = host-$TH_ROLE
nbd = unix:$NBD_SOCK
cache-size = 64M
log-level = debug

[tapmap]
server = $TH_SERVER
CONF
  } > "$TAPMAP_CONF"
  lsmod | grep -q '^xen_blkback' && rmmod xen_blkback
  if [ "$TH_ROLE" = a ]; then
    mapserver format --config "$TAPMAP_CONF" --size "$TH_POOL_SIZE" --block-size 64K >&2 || return 1
    lab_start_unit mapserver; sleep 1
  fi
  lab_start_unit tapdisk-map
  lab_wait_ready >&2 || return 1
  th_log "tapmap up: server $TH_SERVER pool $lun host-name host-$TH_ROLE"
}
th_stop_tapmap() {   # (pid files go too: cases.sh's lab_revive must not restart them)
  lab_stop_unit tapdisk-map
  [ "$TH_ROLE" = a ] && lab_stop_unit mapserver
  rm -f "$LAB/tapdisk-map.pid" "$LAB/mapserver.pid"
}
th_blkback() { modprobe xen-blkback; }
th_daemon_log() {   # the lines of this host's daemon logs that tell a move's story
  local f
  for f in "$LAB/tapdisk-map.log" "$LAB/mapserver.log"; do
    [ -f "$f" ] || continue
    grep -aiE 'standby|promot|lease|epoch|vbd|busy|error|warn|fail|revok|fence' "$f" | tail -n "${1:-60}" \
      | sed "s|^|LABLOG $TH_ROLE $(basename "$f" .log): |" >&2
  done
}

# ---- guests ------------------------------------------------------------------------
th_cfg() {   # NAME TYPE DISKSPEC EXTRA
  cat > "$LAB/$1.cfg" <<CFG
name="$1"
type="$2"
kernel="$LAB_GUEST_KERNEL"
ramdisk="/boot/migrate-initrd.gz"
extra="console=hvc0 loglevel=4 $4"
memory=$TH_GUEST_MEM
vcpus=1
disk=[$3]
on_poweroff="destroy"
on_crash="destroy"
on_reboot="destroy"
CFG
}
th_here() { timeout 20 xl list "$1" > /dev/null 2>&1; }
th_create() {   # NAME: xl create, once more if the domain never came to exist
  local rc=0
  timeout 180 xl create "$LAB/$1.cfg" > "$LAB/$1.xl" 2>&1 || rc=$?
  if [ $rc != 0 ] && [ $rc != 124 ] && ! th_here "$1"; then
    th_log "xl create $1 failed (rc $rc); once more"; sed 's/^/  /' "$LAB/$1.xl" >&2
    timeout 60 xl destroy "$1" > /dev/null 2>&1; sleep 2
    timeout 180 xl create "$LAB/$1.cfg" > "$LAB/$1.xl" 2>&1 || rc=$?
  fi
  th_here "$1" || { sed 's/^/  xl create: /' "$LAB/$1.xl" >&2; return 1; }
}
# This host's console lines of guest NAME. xenconsoled names a log after the domain's
# name when it first sees it: a guest migrated in is still NAME--incoming then.
th_console() { cat "$CONSOLE_DIR/guest-$1.log" "$CONSOLE_DIR/guest-$1--incoming.log" 2>/dev/null | tr -d '\r' | grep -a '^LABGUEST'; }
th_iters() { th_console "$1" | grep -ac '^LABGUEST iter [0-9]* ok'; }
th_wait_iters() {   # NAME COUNT TIMEOUT: until this host's console shows COUNT good iterations
  local n
  for n in $(seq 1 "$3"); do [ "$(th_iters "$1")" -ge "$2" ] && { th_iters "$1"; return 0; }; sleep 1; done
  th_iters "$1"; return 1
}
th_migrate() {   # NAME DEST_IP → "RC SECONDS" of `xl migrate`
  local t0 t1 rc=0 log=$LAB/$1.migrate.$(date +%s).log
  t0=$(th_wall)
  timeout "$TH_MOVE_TIMEOUT" xl migrate -s '' "$1" "busybox nc $2 $TH_MIGRATE_PORT" > "$log" 2>&1 || rc=$?
  t1=$(th_wall)
  sed "s/^/LABLOG $TH_ROLE xl migrate $1: /" "$log" | tail -n 20 >&2
  echo "$rc $(th_secs "$t0" "$t1")"
}
th_stop() {   # NAME: ask the guest to power off (it prints its summary), destroy if it won't
  local n
  timeout 30 xl shutdown "$1" > /dev/null 2>&1
  for n in $(seq 1 120); do th_here "$1" || { echo shutdown; return 0; }; sleep 1; done
  timeout 60 xl destroy "$1" > /dev/null 2>&1
  echo destroyed
}
th_kill_guest() { th_here "$1" && timeout 60 xl destroy "$1" > /dev/null 2>&1; th_here "$1--incoming" && timeout 60 xl destroy "$1--incoming" > /dev/null 2>&1; return 0; }
th_recv_file() { cat > "$1"; echo "$(stat -c %s "$1") bytes"; }
th_restore() {   # FILE → "RC SECONDS" of `xl restore`
  local t0 rc=0
  t0=$(th_wall)
  timeout "$TH_MOVE_TIMEOUT" xl restore "$1" > "$1.log" 2>&1 || rc=$?
  sed "s/^/LABLOG $TH_ROLE xl restore: /" "$1.log" | tail -n 20 >&2
  rm -f "$1"
  echo "$rc $(th_secs "$t0" "$(th_wall)")"
}
th_vol_md5() {   # VOLUME BYTES: md5 of the volume's first BYTES, read through this host's NBD export
  local f=$LAB/vol-$1.raw md5
  qemu-img convert -O raw "nbd+unix:///$1@ro?socket=$NBD_SOCK" "$f" >&2 || { rm -f "$f"; echo "read-failed"; return 1; }
  md5=$(head -c "$2" "$f" | md5sum | cut -d' ' -f1); rm -f "$f"
  echo "$md5"
}
th_lun_md5() {   # FIRST_BLOCK BLOCKS (4 KiB): md5 of that range of the shared LUN, O_DIRECT
  dd if="$(th_lun)" bs=4096 skip="$1" count="$2" iflag=direct 2>/dev/null | md5sum | cut -d' ' -f1
}
th_diag_local() {   # NAME: this host's view, on its console
  local f
  th_log "diagnostics for $1"
  timeout 20 xl list >&2
  th_daemon_log 80
  command -v tapmap > /dev/null && timeout 20 tapmap vbd list 2>&1 | sed "s/^/LABLOG $TH_ROLE vbd: /" >&2
  for f in /var/log/xen/xl-"$1"*.log /var/log/xen/two-host-recv.log; do
    [ -f "$f" ] && tail -n 25 "$f" | sed "s|^|LABLOG $TH_ROLE $(basename "$f"): |" >&2
  done
  tail -n 20 /var/log/xen/xen-hotplug.log 2>/dev/null | sed "s/^/LABLOG $TH_ROLE hotplug: /" >&2
  cat "$CONSOLE_DIR/guest-$1.log" "$CONSOLE_DIR/guest-$1--incoming.log" 2>/dev/null | tr -d '\r' \
    | grep -av '^LABGUEST iter' | tail -n 40 | sed "s/^/LABLOG $TH_ROLE console $1: /" >&2
  th_console "$1" | grep -a '^LABGUEST iter' | tail -n 5 | sed "s/^/LABLOG $TH_ROLE console $1: /" >&2
  th_console "$1" | grep -a '^LABGUEST iter [0-9]* BAD' | head -n 5 | sed "s/^/LABLOG $TH_ROLE console $1: /" >&2
  return 0
}
th_poweroff() { (sleep 2; sync; busybox poweroff -f) > /dev/null 2>&1 & echo "powering off"; }

# ---- checks (host a) ---------------------------------------------------------------
# th_verdict CASE NAME READER ARG → checks both hosts' console records of guest NAME,
# then the disk md5-exact from both dom0s (READER vol VOLUME | lun BASE). Sets
# TH_CHECK (detail); returns 0 if everything matched.
th_verdict() {
  local case=$1 name=$2 reader=$3 where=$4 all=$LAB/$2.console blocks md5 bad werr ma mb gap summary
  { th_console "$name"; th_remote th_console "$name"; } > "$all"
  bad=$(grep -ac '^LABGUEST iter [0-9]* BAD' "$all")
  werr=$(grep -ac '^LABGUEST write_error ' "$all")   # (not the summary's write_errors)
  grep -a '^LABGUEST \(iter [0-9]* BAD\|write_error\|bad_block\|dmesg\|result\|bad_iter\)' "$all" | head -n 30 \
    | sed "s/^/LABLOG $name: /"
  blocks=$(sed -n 's/^LABGUEST blocks //p' "$all" | tail -n 1)
  md5=$(sed -n 's/^LABGUEST expect_md5 //p' "$all" | tail -n 1)
  summary="summary"
  if [ -z "$blocks" ] || [ -z "$md5" ]; then   # no summary (destroyed): the last record
    summary="last-iteration"
    read -r blocks md5 < <(grep -a '^LABGUEST iter [0-9]* ok' "$all" | sort -n -k3 | tail -n 1 | awk '{print $3 + 1, $6}')
  fi
  # The guest's blackout: the longest gap between two iterations (guest uptime).
  gap=$(grep -a '^LABGUEST iter [0-9]* ' "$all" | sort -n -k3 -u | awk '{ if (n++) { d = $5 - p; if (d > m) m = d } p = $5 } END { printf "%.1f", m }')
  if [ "$reader" = vol ]; then
    ma=$(th_vol_md5 "$where" $((blocks * 4096))); mb=$(th_remote th_vol_md5 "$where" $((blocks * 4096)))
  else
    ma=$(th_lun_md5 "$where" "$blocks"); mb=$(th_remote th_lun_md5 "$where" "$blocks")
  fi
  echo "LABINFO $case record: $blocks blocks md5 $md5 ($summary); dom0 a read $ma; dom0 b read $mb"
  TH_CHECK="iterations=$(grep -ac '^LABGUEST iter [0-9]* ok' "$all") bad_reads=$bad write_errors=$werr longest_gap_s=$gap blocks=$blocks"
  TH_CHECK="$TH_CHECK md5_a=$([ "$ma" = "$md5" ] && echo match || echo MISMATCH) md5_b=$([ "$mb" = "$md5" ] && echo match || echo MISMATCH)"
  [ "$summary" = summary ] || TH_CHECK="$TH_CHECK (no guest summary)"
  [ -n "$blocks" ] && [ "$blocks" -gt 0 ] && [ "$bad" = 0 ] && [ "$werr" = 0 ] && [ -n "$md5" ] &&
    [ "$ma" = "$md5" ] && [ "$mb" = "$md5" ]
}
th_fail() {   # CASE NAME WHY: diagnostics from both hosts, guest gone from both
  LAB_DETAIL="$3${TH_MOVES:+; $TH_MOVES}"
  echo "LABLOG $1: FAILED: $3"
  th_diag_local "$2"; th_remote th_diag_local "$2" > /dev/null
  th_kill_guest "$2"; th_remote th_kill_guest "$2" > /dev/null
  return 1
}
th_move() {   # CASE MOVE SECONDS DETAIL
  echo "LABMOVE $1 $2 $3 $4"
  TH_MOVES="${TH_MOVES:+$TH_MOVES }$2=${3}s"
}

# (a) and (c): a PVH guest under the write+verify workload, live-migrated a -> b -> a.
# KIND tapmap: its disk is a tapmap volume (script=block-tapmap); KIND blkback: the
# shared LUN through kernel blkback (phy:), the baseline.
th_case_live() {
  local kind=$1 case name vol disk base reader where rc secs n c0 standby how
  TH_TRY=$((TH_TRY + 1)); TH_MOVES=""
  if [ "$kind" = tapmap ]; then
    case=two-host-tapmap-pvh-live; name=tm-pvh$TH_TRY; vol=mig-pvh$TH_TRY; base=0
    tapmap volume create "$vol" 32M > /dev/null || { LAB_DETAIL="volume create failed"; return 1; }
    disk=$(TAPMAP_DISK "$vol" rw); reader=vol; where=$vol
  else
    case=two-host-blkback-pvh-live; name=bb-pvh$TH_TRY; base=$TH_BB_BASE
    disk="'phy:$(th_lun),xvda,w'"; reader=lun; where=$base
  fi
  th_cfg "$name" pvh "$disk" "lab_base=$base"
  th_create "$name" || { th_fail "$case" "$name" "xl create on a failed"; return 1; }
  n=$(th_wait_iters "$name" 3 300) || { th_fail "$case" "$name" "no I/O on a ($n iterations)"; return 1; }

  # a -> b. The source's view of the volume while the move runs: b's standby open.
  if [ "$kind" = tapmap ]; then
    ( while :; do timeout 10 tapmap volume info "$vol" --json 2>/dev/null | jq -r '.volume.standby // empty'; sleep 3; done ) \
      > "$LAB/$name.standby" 2>/dev/null &
    standby=$!
  fi
  read -r rc secs < <(th_migrate "$name" "$TH_PEER")
  [ "$kind" = tapmap ] && { kill "$standby" 2>/dev/null; wait "$standby" 2>/dev/null; }
  th_move "$case" a-to-b "$secs" "rc=$rc"
  [ "$rc" = 0 ] || { th_fail "$case" "$name" "xl migrate a->b rc=$rc"; return 1; }
  th_here "$name" && { th_fail "$case" "$name" "still on a after the move"; return 1; }
  th_remote th_here "$name" || { th_fail "$case" "$name" "not running on b after the move"; return 1; }
  if [ "$kind" = tapmap ]; then
    how=$(sort -u "$LAB/$name.standby" | sed '/^$/d' | tr '\n' ',' | sed 's/,$//')
    echo "LABINFO $case: standby seen on a during a->b: ${how:-none}; after: $(timeout 10 tapmap volume info "$vol" --json | jq -c '.volume | {writer, standby}' 2>/dev/null)"
    TH_MOVES="$TH_MOVES standby_seen=${how:-none}"
  fi
  n=$(th_remote th_wait_iters "$name" 3 300) || { th_fail "$case" "$name" "no I/O on b ($n iterations)"; return 1; }

  # b -> a (xl migrate run on b, by its agent).
  c0=$(th_iters "$name")
  read -r rc secs < <(th_remote th_migrate "$name" "$TH_ME")
  th_move "$case" b-to-a "${secs:-?}" "rc=${rc:-no-answer}"
  [ "$rc" = 0 ] || { th_fail "$case" "$name" "xl migrate b->a rc=${rc:-no-answer}"; return 1; }
  th_remote th_here "$name" && { th_fail "$case" "$name" "still on b after the move"; return 1; }
  th_here "$name" || { th_fail "$case" "$name" "not running on a after the move back"; return 1; }
  n=$(th_wait_iters "$name" $((c0 + 3)) 300) || { th_fail "$case" "$name" "no I/O on a after the move back"; return 1; }

  echo "LABINFO $case: stop: $(th_stop "$name")"
  th_verdict "$case" "$name" "$reader" "$where" || { th_fail "$case" "$name" "$TH_CHECK"; return 1; }
  LAB_DETAIL="$TH_MOVES $TH_CHECK"
}

# (b) a PV guest moves cold: xl save on a, the image streamed to b, xl restore on b.
th_case_cold() {
  local case=two-host-tapmap-pv-save-restore name vol rc secs n t0 t1 size out total
  TH_TRY=$((TH_TRY + 1)); TH_MOVES=""
  name=tm-pv$TH_TRY; vol=mig-pv$TH_TRY
  tapmap volume create "$vol" 32M > /dev/null || { LAB_DETAIL="volume create failed"; return 1; }
  th_cfg "$name" pv "$(TAPMAP_DISK "$vol" rw)" "lab_base=0"
  th_create "$name" || { th_fail "$case" "$name" "xl create on a failed"; return 1; }
  n=$(th_wait_iters "$name" 3 300) || { th_fail "$case" "$name" "no I/O on a ($n iterations)"; return 1; }

  t0=$(th_wall); rc=0
  timeout "$TH_MOVE_TIMEOUT" xl save "$name" "$LAB/$name.save" > "$LAB/$name.save.log" 2>&1 || rc=$?
  t1=$(th_wall); size=$(stat -c %s "$LAB/$name.save" 2>/dev/null || echo 0)
  sed "s/^/LABLOG a xl save: /" "$LAB/$name.save.log" | tail -n 10
  th_move "$case" save-on-a "$(th_secs "$t0" "$t1")" "rc=$rc $((size >> 20))MiB"
  [ "$rc" = 0 ] || { th_fail "$case" "$name" "xl save rc=$rc"; return 1; }
  th_here "$name" && { th_fail "$case" "$name" "still on a after xl save"; return 1; }
  total=$(th_secs "$t0" "$t1")

  t0=$(th_wall)
  out=$({ echo "th_recv_file $LAB/$name.save"; cat "$LAB/$name.save"; } \
        | timeout "$TH_MOVE_TIMEOUT" busybox nc "$TH_PEER" "$TH_AGENT_PORT" 2>/dev/null)
  t1=$(th_wall); rm -f "$LAB/$name.save"
  th_move "$case" copy-to-b "$(th_secs "$t0" "$t1")" "$(echo "$out" | head -n 1 | tr ' ' '_')"
  [ "$(echo "$out" | head -n 1)" = "$size bytes" ] || { th_fail "$case" "$name" "copy to b: '$out', not $size bytes"; return 1; }
  total=$(awk -v a="$total" -v b="$(th_secs "$t0" "$t1")" 'BEGIN{printf "%.1f", a+b}')

  read -r rc secs < <(th_remote th_restore "$LAB/$name.save")
  th_move "$case" restore-on-b "${secs:-?}" "rc=${rc:-no-answer}"
  [ "$rc" = 0 ] || { th_fail "$case" "$name" "xl restore on b rc=${rc:-no-answer}"; return 1; }
  total=$(awk -v a="$total" -v b="$secs" 'BEGIN{printf "%.1f", a+b}')
  th_move "$case" a-to-b-total "$total" "save+copy+restore"
  th_remote th_here "$name" || { th_fail "$case" "$name" "not running on b after xl restore"; return 1; }
  n=$(th_remote th_wait_iters "$name" 3 300) || { th_fail "$case" "$name" "no I/O on b ($n iterations)"; return 1; }
  echo "LABINFO $case: stop on b: $(th_remote th_stop "$name")"
  th_verdict "$case" "$name" vol "$vol" || { th_fail "$case" "$name" "$TH_CHECK"; return 1; }
  LAB_DETAIL="$TH_MOVES $TH_CHECK"
}

th_case_live_tapmap() { th_case_live tapmap; }
th_case_live_blkback() { th_case_live blkback; }

# Host a's whole run.
th_run_suite() {
  local n
  lab_mark "TWO-HOST waiting for host b"
  for n in $(seq 1 240); do th_remote th_ping > /dev/null && break; sleep 5; done
  if ! th_remote th_ping > /dev/null; then
    echo "LABRESULT two-host-setup FAIL 0 host-b-never-answered"; return 1
  fi
  lab_mark "TWO-HOST host b answers"
  echo "LABINFO ping a->b: $(busybox ping -c 3 -W 2 "$TH_PEER" | tail -n 1)"
  if ! th_setup_tapmap > "$LAB/setup.log" 2>&1 || ! th_remote th_setup_tapmap > /dev/null; then
    cat "$LAB/setup.log"; tail -n 20 "$LAB/mapserver.log" "$LAB/tapdisk-map.log" 2>/dev/null
    th_remote th_diag_local setup > /dev/null
    echo "LABRESULT two-host-setup FAIL 0 see-serial-logs"
  else
    echo "LABRESULT two-host-setup PASS 0 mapserver_on_a_pool_on_shared_LUN"
    lab_case two-host-tapmap-pvh-live th_case_live_tapmap
    lab_case two-host-tapmap-pv-save-restore th_case_cold
    echo "LABSTATS a $(tapmap stats --json 2>/dev/null | jq -c 'del(.volumes) // .' 2>/dev/null)"
    th_daemon_log 40; th_remote th_daemon_log 40 > /dev/null
    th_stop_tapmap; th_remote th_stop_tapmap > /dev/null
  fi
  th_blkback; th_remote th_blkback > /dev/null
  lab_case two-host-blkback-pvh-live th_case_live_blkback
}
