#!/usr/bin/env bash
# bench/cluster/lease_soak.sh — the lease soak of issue 13 (mapserver/doc/leases.md) on the
# multi-host rig (tests/cluster/rig.sh: 1 mapserver + 3 tapdisk-map hosts in network
# namespaces, lease time T = RIG_LEASE_SECONDS, 3 s).
#
# Usage: bench/cluster/lease_soak.sh BUILD_DIR [--rounds N] [--seed S]
#   --rounds N   rounds (default 50)
#   --seed S     seed of the fault choices (default: from the clock; printed)
#   env RIG_KEEP=1 keeps the rig's logs also when every round passed.
#
# One rig for the whole run. Each round:
#   1. every host n creates its own volume r<k>h<n> and streams writes to it
#      (tests/cluster/fence_tools.py writer: 4 KiB records round robin over 16 pool
#      blocks, a flush every 8 writes, every acknowledged write and flush logged with
#      the monotonic clock), until every writer has flushed 3 times;
#   2. ONE fault, chosen with the seed:
#        partition  rig_cut host n; another host m takes n's volume over (fence_tools.py
#                   takeover: its rw open is granted only after n's lease expired; it
#                   saves what it reads and writes markers into blocks 0 and 5); the
#                   link heals; n, told its lease is gone, fails its writer's requests;
#        kill       kill -9 of host n's tapdisk-map; host m takes the volume over; n is
#                   started again (a new instance);
#        ms_restart kill -9 of the mapserver, started again after 0, T/2, T or 1.5 T
#                   (the longer outages make the hosts fence): every host reclaims its
#                   lease in the grace period, the writers go on (each must flush twice
#                   more after the reclaims, with no error); no takeover;
#   3. the other writers are stopped (SIGTERM), the volumes closed everywhere; every
#      volume is read back through VOLUME@ro on a host that is neither its writer nor
#      its taker (tests/cluster/fence_tools.py dump) and verified
#      (tests/cluster/soak_tools.py verify; for a volume taken over also fence_tools.py
#      check): every block holds at least the writer's last flushed record, no write was
#      acknowledged to a fenced writer after the takeover was granted, no write of it
#      landed after the takeover, the takeover was granted no earlier than 0.9 T after
#      the fault (the earliest the lease could run out), the partitioned host logged its
#      fence, and writers on hosts that were not faulted saw no error (but in an
#      ms_restart round where hosts fenced: a host whose lease the restarted server did
#      not resume fails the one write its writer had held, by design (host_lease.h,
#      Renewed), then reclaims the volume; these are counted, not failures);
#   4. the round's volumes are deleted (retried while the server answers busy: orphaned
#      openers of a killed or cut host stay until its lease expires), then the mapserver
#      is stopped, `mapserver fsck` must be clean, and it is started again.
# One line per round, then a summary. The first failing round stops the run: exit 1,
# the rig's directory (logs, per-round files in soak/r<k>/) is kept and printed.
# Exit 0 all rounds passed, 1 a failure, 77 cannot run here ("SKIPPED: ..."). Root needed.
# The programs are copied first (a rebuild of BUILD_DIR during the run does not change
# them under the rig).
set -u
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
usage="usage: bench/cluster/lease_soak.sh BUILD_DIR [--rounds N] [--seed S]"
build=$(cd "${1:?$usage}" && pwd) || exit 1
shift
rounds=50
seed=$(( $(date +%s%N) % 1000000000 ))
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) rounds=${2:?$usage}; shift 2 ;;
    --seed) seed=${2:?$usage}; shift 2 ;;
    *) echo "$usage" >&2; exit 2 ;;
  esac
done
[[ $rounds =~ ^[0-9]+$ && $seed =~ ^[0-9]+$ ]] || { echo "$usage" >&2; exit 2; }

# shellcheck source=tests/cluster/rig.sh
source "$root/tests/cluster/rig.sh"

if ! reason=$(rig_can_run); then echo "SKIPPED: lease soak: $reason"; exit 77; fi
# python3 with libnbd (Debian's python3-libnbd is for /usr/bin/python3)
PY=/usr/bin/python3; [ -x "$PY" ] || PY=python3
"$PY" -c 'import nbd' 2>/dev/null || { echo "SKIPPED: lease soak: $PY has no nbd module (python3-libnbd)"; exit 77; }
for tool in python3 ss timeout; do
  command -v "$tool" >/dev/null || { echo "SKIPPED: lease soak: $tool is not installed"; exit 77; }
done

FT=$root/tests/cluster/fence_tools.py
ST=$root/tests/cluster/soak_tools.py
T=$RIG_LEASE_SECONDS
[ -n "$T" ] || { echo "lease soak: RIG_LEASE_SECONDS must be set (the rig's lease time)"; exit 2; }
HOSTS=3
BLOCKS=16            # pool blocks each writer cycles over (fence_tools.py's default)
MARKS=0,5            # blocks the taker writes its marker into

snap=$(mktemp -d "${RIG_TMP:-/var/tmp}/tapmap-lease-soak-bin-XXXXXX") || exit 1
mkdir "$snap/bin"
for prog in mapserver tapdisk-map tapmap; do
  cp "$build/bin/$prog" "$snap/bin/" || { echo "lease soak: $build/bin/$prog not built"; rm -rf "$snap"; exit 1; }
done

declare -A VOL=()    # host -> its volume this round
declare -A WPID=()   # host -> its writer's pid (python itself: ip netns exec execs it)
soak_cleanup() {
  local pid
  for pid in "${WPID[@]}"; do kill -KILL "$pid" 2>/dev/null; done
  for pid in "${WPID[@]}"; do wait "$pid" 2>/dev/null; done
  WPID=()
  rig_teardown
  rm -rf "$snap"
}

t0=$SECONDS
rig_init "$snap" "$HOSTS" || { echo "lease soak: rig setup failed"; rm -rf "$snap"; exit 1; }
trap 'soak_cleanup' EXIT
trap 'soak_cleanup; trap - EXIT; exit 130' INT
trap 'soak_cleanup; trap - EXIT; exit 143' TERM
SOAK=$RIG_DIR/soak
mkdir -p "$SOAK"
rig_start_mapserver || { echo "lease soak: the mapserver did not start"; RIG_KEEP=1; exit 1; }
for n in $(seq 1 $HOSTS); do
  rig_start_host "$n" || { echo "lease soak: host h$n did not start"; RIG_KEEP=1; exit 1; }
done
echo "== lease soak: $rounds rounds, seed $seed, T = $T s, rig $RIG_ID ($RIG_DIR), programs from $build/bin"

# ---------------------------------------------------------------------------------------
# Figures

done_rounds=0
declare -A FAULTS=([partition]=0 [kill]=0 [ms_restart]=0)
acked_total=0 flushed_total=0 blocks_total=0 lost_total=0 torn_total=0
late_acks_total=0 late_landed_total=0 fsck_failures=0 unflushed_missing_total=0
early_takeovers=0 healthy_errors=0 faulted_errors=0 MS_FENCES=0 ms_failed=0 fences=0
wait_min='' wait_max=''

summary() {
  local wall=$((SECONDS - t0))
  echo "== lease soak summary (seed $seed, T = $T s)"
  echo "rounds:                                   $done_rounds of $rounds"
  echo "faults:                                   partition ${FAULTS[partition]}, kill -9 host ${FAULTS[kill]}, kill -9 + restart mapserver ${FAULTS[ms_restart]} (hosts fenced meanwhile: $MS_FENCES times)"
  echo "acknowledged writes:                      $acked_total"
  echo "acknowledged writes covered by a flush:   $flushed_total (latest per block verified: $blocks_total blocks)"
  echo "lost acknowledged+flushed writes:         $lost_total (torn/foreign blocks: $torn_total)"
  echo "writes acknowledged after a takeover:     $late_acks_total (fenced writes landed after it: $late_landed_total; takeovers granted before 0.9 T: $early_takeovers)"
  echo "fsck failures:                            $fsck_failures"
  echo "writer errors on hosts not faulted:       $healthy_errors (on faulted hosts, expected: $faulted_errors)"
  echo "held writes failed at a mapserver restart: $ms_failed (hosts fenced during the outage; not acknowledged, so not lost)"
  echo "blocks without the last unflushed write:  $unflushed_missing_total (volumes not taken over; information only)"
  [ -n "$wait_min" ] && echo "takeover granted after the fault:         ${wait_min}-${wait_max} s (T = $T s)"
  echo "wall time:                                ${wall} s"
}

# fail ROUND WHAT...: the run stops here; the rig's logs are kept.
fail() {
  local k=$1; shift
  echo "FAIL round $k: $*"
  summary
  RIG_KEEP=1
  echo "lease soak: FAILED; logs kept: $RIG_DIR/ms/mapserver.log, $RIG_DIR/h{1..$HOSTS}/tapdisk-map.log, round files $SOAK/r$k/"
  exit 1
}

# ---------------------------------------------------------------------------------------
# Helpers

now_s() { python3 -c 'import time; print("%.6f" % time.monotonic())'; }
fsub() { python3 -c "import sys; print('%.2f' % (float(sys.argv[1]) - float(sys.argv[2])))" "$1" "$2"; }
fless() { python3 -c 'import sys; sys.exit(0 if float(sys.argv[1]) < float(sys.argv[2]) else 1)' "$1" "$2"; }
flushes() { "$PY" "$ST" flushes "$1" ${2:+--after "$2"}; }
_flushed_at_least() { [ "$(flushes "$1" "${3:-}")" -ge "$2" ]; }
_gone() { ! kill -0 "$1" 2>/dev/null; }
oneline() { tr '\n' ' ' | cut -c1-"${1:-400}"; }

# start_writer N VOL LOG: fence_tools.py writer on host N against VOL (WPID[N]).
start_writer() {
  local n=$1 vol=$2 log=$3
  ip netns exec "$(rig_ns "$n")" "$PY" "$FT" writer "$(rig_nbd_url "$n" "$vol")" "$log" --blocks $BLOCKS \
    >"${log%.log}.out" 2>&1 &
  WPID[$n]=$!
}
# end_writer N [SIGNAL]: stops host N's writer (or waits for it when SIGNAL is "none"),
# bounded by RIG_WAIT_S; its exit status in WRC. Returns 1 if it did not exit.
end_writer() {
  local n=$1 sig=${2:-TERM} pid=${WPID[$1]}
  [ "$sig" = none ] || kill -"$sig" "$pid" 2>/dev/null
  if ! rig_wait_for "$RIG_WAIT_S" "h$n's writer to exit" _gone "$pid"; then return 1; fi
  wait "$pid" 2>/dev/null
  WRC=$?
  unset "WPID[$n]"
}
# takeover M VOL DIR: host M's fence_tools.py takeover of VOL (files in DIR).
takeover() {
  local m=$1 vol=$2 d=$3
  timeout 60 ip netns exec "$(rig_ns "$m")" "$PY" "$FT" takeover "$(rig_nbd_url "$m" "$vol")" \
    "$d/takeover.json" "$d/snapshot" --blocks $BLOCKS --mark-blocks "$MARKS" >"$d/takeover.out" 2>&1
}
granted_of() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["granted"])' "$1"; }
# delete_vol N VOL: host N deletes VOL, retried while it fails (busy while openers of a
# killed or cut host are orphaned, ~1.1 T; the restarted server's grace period) for 30 s.
delete_vol() {
  local n=$1 vol=$2 out deadline=$((SECONDS + 30))
  until out=$(rig_tapmap "$n" volume delete "$vol" 2>&1); do
    if [ "$SECONDS" -ge "$deadline" ]; then DEL_WHY="$out"; return 1; fi
    DELETE_RETRIES=$((DELETE_RETRIES + 1))
    sleep 0.2
  done
}
fence_count() { grep -c 'lease: fenced' "$(rig_hdir "$1")/tapdisk-map.log" 2>/dev/null; }
total_fences() { local t=0 h; for h in $(seq 1 $HOSTS); do t=$((t + $(fence_count "$h"))); done; echo $t; }

# ---------------------------------------------------------------------------------------
# Rounds

RANDOM=$seed
for k in $(seq 1 "$rounds"); do
  rt=$SECONDS
  d=$SOAK/r$k
  mkdir -p "$d"
  WPID=()
  for n in $(seq 1 $HOSTS); do
    VOL[$n]=r${k}h$n
    out=$(rig_tapmap "$n" volume create "${VOL[$n]}" 4M 2>&1) || fail "$k" "setup: h$n: volume create ${VOL[$n]}: $out"
  done
  for n in $(seq 1 $HOSTS); do start_writer "$n" "${VOL[$n]}" "$d/h$n.log"; done
  for n in $(seq 1 $HOSTS); do
    rig_wait_for "$RIG_WAIT_S" "h$n's writer to flush 3 times" _flushed_at_least "$d/h$n.log" 3 ||
      fail "$k" "setup: h$n's writer did not get going: $(tail -c 300 "$d/h$n.out" "$d/h$n.log" 2>/dev/null | oneline)"
  done

  # The fault
  case $((RANDOM % 3)) in 0) fault=partition ;; 1) fault="kill" ;; 2) fault=ms_restart ;; esac
  n=$((RANDOM % HOSTS + 1))
  m=$(( (n + RANDOM % (HOSTS - 1)) % HOSTS + 1 ))      # another host
  third=$((6 - n - m))                                  # the remaining one (3 hosts)
  down_s=$(python3 -c "print(round($((RANDOM % 4)) * $T / 2, 3))")   # ms_restart: 0, T/2, T or 1.5 T down
  FAULTS[$fault]=$((FAULTS[$fault] + 1))
  taken=
  fences=0
  desc=
  case $fault in
    partition)
      fences_before=$(fence_count "$n")
      t_fault=$(now_s)
      rig_cut "$n"
      if ! takeover "$m" "${VOL[$n]}" "$d"; then
        rig_heal "$n"
        fail "$k" "partition h$n: h$m's takeover of ${VOL[$n]} failed: $(oneline <"$d/takeover.out")"
      fi
      rig_heal "$n" || fail "$k" "partition h$n: the link did not come back"
      # n learns its lease is gone: its held and later writes fail, its writer stops.
      end_writer "$n" none ||
        fail "$k" "partition h$n: h$n's writer kept going after its lease was lost: $(tail -3 "$d/h$n.log" | oneline)"
      [ "$(fence_count "$n")" -gt "$fences_before" ] ||
        fail "$k" "partition h$n: h$n's log does not say it fenced itself"
      taken=$n
      ;;
    kill)
      t_fault=$(now_s)
      rig_kill_host "$n"
      end_writer "$n" none || fail "$k" "kill h$n: h$n's writer did not stop after its host was killed"
      if ! takeover "$m" "${VOL[$n]}" "$d"; then
        rig_start_host "$n" >/dev/null 2>&1
        fail "$k" "kill h$n: h$m's takeover of ${VOL[$n]} failed: $(oneline <"$d/takeover.out")"
      fi
      rig_start_host "$n" || fail "$k" "kill h$n: h$n did not start again"
      taken=$n
      ;;
    ms_restart)
      t_fault=$(now_s)
      fences_before=$(total_fences)
      rig_kill_mapserver
      sleep "$down_s"
      rig_start_mapserver || fail "$k" "ms_restart: the mapserver did not start again"
      grep -q 'grace period' <(tail -n 20 "$RIG_DIR/ms/mapserver.log") ||
        fail "$k" "ms_restart: the restarted mapserver announced no grace period"
      # Every host reclaims its lease (the server names it the writer again), then its
      # writer goes on.
      for h in $(seq 1 $HOSTS); do
        rig_wait_writer "${VOL[$h]}" "$h" || fail "$k" "ms_restart: h$h did not reclaim ${VOL[$h]}"
      done
      t_back=$(now_s)
      RECLAIM_S=$(fsub "$t_back" "$t_fault")
      for h in $(seq 1 $HOSTS); do
        rig_wait_for 30 "h$h's writer to flush twice after the restart" _flushed_at_least "$d/h$h.log" 2 "$t_back" ||
          fail "$k" "ms_restart: h$h's writer made no progress after the restart: $(tail -3 "$d/h$h.log" | oneline)"
      done
      fences=$(( $(total_fences) - fences_before ))
      MS_FENCES=$((MS_FENCES + fences))
      desc="ms_restart (down ${down_s} s, $fences fences), reclaimed after ${RECLAIM_S} s"
      ;;
  esac
  if [ -n "$taken" ]; then
    granted=$(granted_of "$d/takeover.json")
    waited=$(fsub "$granted" "$t_fault")
    if fless "$waited" "$(python3 -c "print($T * 0.9)")"; then
      early_takeovers=$((early_takeovers + 1))
      fail "$k" "$fault h$n: h$m got ${VOL[$n]} rw ${waited} s after the fault, before h$n's lease could run out"
    fi
    { [ -z "$wait_min" ] || fless "$waited" "$wait_min"; } && wait_min=$waited
    { [ -z "$wait_max" ] || fless "$wait_max" "$waited"; } && wait_max=$waited
    desc="$fault h$n, h$m took over after ${waited} s"
  fi

  # Stop the other writers; every volume closed everywhere.
  for h in "${!WPID[@]}"; do
    end_writer "$h" TERM || fail "$k" "$desc: h$h's writer did not stop at SIGTERM: $(tail -3 "$d/h$h.log" | oneline)"
    [ "$WRC" = 0 ] || fail "$k" "$desc: h$h's writer exited with status $WRC: $(tail -c 300 "$d/h$h.out" | oneline)"
  done
  for h in $(seq 1 $HOSTS); do
    rig_wait_closed "${VOL[$h]}" "$h" || fail "$k" "$desc: ${VOL[$h]} still open on a host after its clients stopped"
  done

  # Verify every volume.
  r_acked=0 r_lost=0 r_late=0
  for h in $(seq 1 $HOSTS); do
    vol=${VOL[$h]}
    if [ "$h" = "$taken" ]; then reader=$third; else reader=$((h % HOSTS + 1)); fi
    final=$d/h$h.final
    ip netns exec "$(rig_ns "$reader")" "$PY" "$FT" dump "$(rig_nbd_url "$reader" "$vol@ro")" "$final" --blocks $BLOCKS \
      >"$d/h$h.dump.out" 2>&1 ||
      fail "$k" "$desc: h$reader could not read $vol: $(oneline <"$d/h$h.dump.out")"
    rig_wait_closed "$vol" "$reader" || fail "$k" "$desc: $vol still open after h$reader's read"
    if [ "$h" = "$taken" ]; then
      verdict=$("$PY" "$FT" check "$d/h$h.log" "$d/takeover.json" "$d/snapshot" "$final" --blocks $BLOCKS 2>&1) ||
        fail "$k" "$desc: fence_tools.py check of $vol: $(oneline 600 <<<"$verdict")"
      echo "$verdict" >"$d/check.out"
      vargs=(--takeover "$d/takeover.json" --snapshot "$d/snapshot")
    else
      vargs=()
    fi
    vout=$("$PY" "$ST" verify "$d/h$h.log" "$final" --blocks $BLOCKS "${vargs[@]}" 2>&1)
    vrc=$?
    echo "$vout" >"$d/h$h.verify"
    read -r _ acked flushed blocks lost torn late_acks late_landed unflushed_missing errors last_ack \
      <<<"$(grep '^VERIFY ' <<<"$vout")"
    [ -n "${last_ack:-}" ] || fail "$k" "$desc: soak_tools.py verify of $vol printed no figures: $(oneline <<<"$vout")"
    acked_total=$((acked_total + acked)) flushed_total=$((flushed_total + flushed)) blocks_total=$((blocks_total + blocks))
    lost_total=$((lost_total + lost)) torn_total=$((torn_total + torn))
    late_acks_total=$((late_acks_total + late_acks)) late_landed_total=$((late_landed_total + late_landed))
    unflushed_missing_total=$((unflushed_missing_total + unflushed_missing))
    r_acked=$((r_acked + acked)) r_lost=$((r_lost + lost + torn)) r_late=$((r_late + late_acks + late_landed))
    [ "$vrc" = 0 ] || fail "$k" "$desc: $vol (writer h$h, read back on h$reader): $(oneline 600 <<<"$vout")"
    if [ "$fault" != ms_restart ] && [ "$h" = "$n" ]; then
      faulted_errors=$((faulted_errors + errors))
    elif [ "$fault" = ms_restart ] && [ "$fences" -gt 0 ]; then
      # A host fenced during the outage fails the requests it held when the restarted
      # server (which did not resume its lease) answers, then reclaims the volume
      # (host_lease.h: Renewed): one write per writer at most.
      ms_failed=$((ms_failed + errors))
      [ "$errors" -le 1 ] ||
        fail "$k" "$desc: h$h's writer saw $errors errors (at most its 1 held write may fail): $(grep '^E ' "$d/h$h.log" | head -3 | oneline)"
    else
      healthy_errors=$((healthy_errors + errors))
      [ "$errors" = 0 ] ||
        fail "$k" "$desc: h$h's writer saw $errors error(s) though its host was not faulted: $(grep '^E ' "$d/h$h.log" | head -3 | oneline)"
    fi
  done

  # Delete the round's volumes, then fsck.
  DELETE_RETRIES=0
  for h in $(seq 1 $HOSTS); do
    delete_vol "$h" "${VOL[$h]}" || fail "$k" "$desc: h$h could not delete ${VOL[$h]} within 30 s: $(oneline <<<"$DEL_WHY")"
  done
  rig_stop_mapserver || fail "$k" "$desc: the mapserver did not stop at SIGTERM"
  rig_exec_ms "$RIG_BIN/mapserver" fsck --config "$RIG_DIR/ms/tapmap.conf" >"$d/fsck.out" 2>&1
  frc=$?
  if [ $frc != 0 ]; then
    fsck_failures=$((fsck_failures + 1))
    fail "$k" "$desc: mapserver fsck (exit $frc): $(oneline 600 <"$d/fsck.out")"
  fi
  rig_start_mapserver || fail "$k" "$desc: the mapserver did not start again after fsck"

  [ "$r_lost" = 0 ] && [ "$r_late" = 0 ] || fail "$k" "$desc: lost $r_lost, late $r_late (yet verify passed)"
  done_rounds=$k
  printf 'round %d/%d: %-36s acked %6d, lost %d, late %d, fsck clean, %d delete retries (%d s)\n' \
    "$k" "$rounds" "$desc:" "$r_acked" "$r_lost" "$r_late" "$DELETE_RETRIES" $((SECONDS - rt))
done

summary
for n in $(seq 1 $HOSTS); do
  st=$SECONDS
  rig_stop_host "$n" || echo "lease soak: host h$n did not stop cleanly (log: $(rig_hdir "$n")/tapdisk-map.log)"
  [ $((SECONDS - st)) -lt 5 ] || echo "lease soak: host h$n took $((SECONDS - st)) s to stop at SIGTERM (log: $(rig_hdir "$n")/tapdisk-map.log)"
done
rig_stop_mapserver || echo "lease soak: the mapserver did not stop cleanly"
echo "lease soak: PASSED ($done_rounds rounds)"
[ -n "${RIG_KEEP:-}" ] && echo "lease soak: logs kept in $RIG_DIR"
exit 0
