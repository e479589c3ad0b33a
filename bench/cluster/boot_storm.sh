#!/usr/bin/env bash
# Cluster boot storm on the multi-host rig (tests/cluster/rig.sh): HOSTS (3) tapdisk-map
# hosts, each in its own network namespace, sharing one pool through one mapserver;
# CLONES_PER_HOST (16) clones of one golden image per host, all booting at once. Every
# clone reads the same boot set (BOOT_MIB, default 64 MiB, as scattered 64 KiB pieces)
# in its own order, then writes a few private 4 KiB pieces into blocks it read and
# flushes; HOSTS x CLONES_PER_HOST qemu-io clients in parallel, each in its host's
# namespace against its host's NBD socket. Cold caches: every tapdisk-map is restarted
# after the golden image and the clones are made.
#
#   tapmap:   pool bytes read per host and in total (delta of `tapmap stats --json`'s
#             pool_bytes_read on each host) / boot set. Goal: total ~= HOSTS x boot set,
#             each host <= 1.02 x boot set.
#   baseline: the same clients, same orders, through qemu-nbd --cache=none serving one
#             qcow2 overlay per clone on ONE shared raw base (linked clones), each
#             qemu-nbd in its host's namespace on a unix socket in RIG_DIR; storage
#             bytes read = the qemu-nbd processes' /proc/PID/io read_bytes, summed.
#             Expected ~= HOSTS x CLONES_PER_HOST x boot set.
#
# Usage: bench/cluster/boot_storm.sh BUILD_DIR
#   env: HOSTS (3), CLONES_PER_HOST (16), BOOT_MIB (64), GOLDEN_MIB (256),
#        WRITES (8 private 4 KiB writes per clone), RIG_CACHE_SIZE (256M per host),
#        RIG_KEEP=1 (keep the rig's logs)
# Exit: 0 measured (goal met or not: see the last line), 1 error, 77 cannot run here
# (prints "SKIPPED: cluster boot storm: <reason>"). Root needed (network namespaces).
set -u
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
build=$(cd "${1:?usage: bench/cluster/boot_storm.sh BUILD_DIR}" && pwd) || exit 1

hosts=${HOSTS:-3}
per_host=${CLONES_PER_HOST:-16}
boot_mib=${BOOT_MIB:-64}
golden_mib=${GOLDEN_MIB:-256}
writes=${WRITES:-8}
piece=65536                              # = the rig's pool block size (64K)
pieces=$((boot_mib * 1048576 / piece))
clones=$((hosts * per_host))
# Set before sourcing rig.sh (it fills in its defaults when sourced). Each host's data
# cache holds the boot set with room to spare, as a dom0's would (tapdisk-map's default
# is 1/8 of memory); with the rig's 64M default the 64 MiB boot set just fits, and 2Q
# evictions (A1in = 1/4 of the cache) cost 4-10 % extra pool reads per host.
export RIG_CACHE_SIZE=${RIG_CACHE_SIZE:-256M}
export RIG_POOL_SIZE=${RIG_POOL_SIZE:-$((golden_mib * 2 + 512))M}
# shellcheck source=tests/cluster/rig.sh
source "$root/tests/cluster/rig.sh"

if ! reason=$(rig_can_run); then echo "SKIPPED: cluster boot storm: $reason"; exit 77; fi
for tool in qemu-io qemu-img qemu-nbd python3 ss; do
  command -v "$tool" >/dev/null || { echo "SKIPPED: cluster boot storm: $tool is not installed (make deps)"; exit 77; }
done
[ "$pieces" -ge 1 ] && [ $((golden_mib * 1048576 / piece)) -ge "$pieces" ] ||
  { echo "bench: BOOT_MIB ($boot_mib) must be between 1 and GOLDEN_MIB ($golden_mib)" >&2; exit 1; }

say() { echo "bench: $*" >&2; }
fail() { say "$*"; exit 1; }
now_ms() { echo $(($(date +%s%N) / 1000000)); }

rig_init "$build" "$hosts" || fail "rig_init failed"
# The rig's trap tears down its namespaces (which also ends every process started in
# them); the qemu-nbd servers of the baseline are also killed by pid first.
qpids=()
storm_cleanup() {
  local p
  for p in "${qpids[@]}"; do kill -TERM "$p" 2>/dev/null; done
  for p in "${qpids[@]}"; do wait "$p" 2>/dev/null; done
  qpids=()
}
trap 'storm_cleanup; rig_teardown' EXIT
trap 'storm_cleanup; rig_teardown; trap - EXIT; exit 130' INT
trap 'storm_cleanup; rig_teardown; trap - EXIT; exit 143' TERM

work=$RIG_DIR/clients/storm
mkdir -p "$work"
rig_start_mapserver || fail "mapserver did not start"
for n in $(seq 1 "$hosts"); do rig_start_host "$n" || fail "host h$n did not start"; done

# ---- golden image (random data, no holes), imported through host 1; snapshot; clones
t_prep=$(now_ms)
python3 - "$work/golden.raw" "$golden_mib" <<'PY' || fail "could not write the golden image"
import random, sys
path, mib = sys.argv[1], int(sys.argv[2])
rng = random.Random(42)
with open(path, "wb") as f:
    for _ in range(mib):
        f.write(rng.randbytes(1 << 20))
PY
rig_tapmap 1 volume create golden "${golden_mib}M" >/dev/null || fail "volume create failed"
rig_exec 1 qemu-img convert -n -f raw -O raw -W "$work/golden.raw" "$(rig_nbd_url 1 golden)" ||
  fail "import of the golden image failed"
rig_wait_closed golden || fail "golden still open after the import"
rig_tapmap 1 volume snapshot golden golden-v1 >/dev/null || fail "snapshot failed"
host_of() { echo $(( ($1 - 1) / per_host + 1 )); }   # clone i (1-based) runs on host ...
vol_of() { printf 'vm%02d' "$1"; }
for i in $(seq 1 "$clones"); do
  rig_tapmap "$(host_of "$i")" volume clone golden-v1 "$(vol_of "$i")" >/dev/null || fail "clone $i failed"
done

# Each clone: the same boot set in its own order, then WRITES private 4 KiB writes into
# blocks of the boot set (a booting guest writing logs/state into files it read), flush.
python3 - "$clones" "$golden_mib" "$pieces" "$piece" "$writes" "$work" <<'PY' || fail "could not write the storm scripts"
import random, sys
clones, mib, pieces, piece, writes = map(int, sys.argv[1:6])
work = sys.argv[6]
blocks = (mib << 20) // piece
boot = sorted(random.Random(7).sample(range(blocks), pieces))
for i in range(1, clones + 1):
    order = boot[:]
    random.Random(1000 + i).shuffle(order)
    cmds = [f"read {b * piece} {piece}" for b in order]
    w = random.Random(2000 + i)
    cmds += [f"write -P {i % 256} {w.choice(boot) * piece + 4096 * w.randrange(piece // 4096)} 4096"
             for _ in range(writes)]
    cmds.append("flush")
    with open(f"{work}/storm-{i}.args", "w") as f:
        f.write("\n".join(cmds) + "\n")
PY

# Cold caches: restart every host's tapdisk-map.
for n in $(seq 1 "$hosts"); do rig_restart_host "$n" || fail "restart of h$n failed"; done
say "prepared in $(( ($(now_ms) - t_prep) / 1000 )) s: golden ${golden_mib} MiB, $clones clones on $hosts hosts, caches cold"

# run_storm URL_FN: every clone's qemu-io in its host's namespace, all in parallel;
# prints elapsed ms. URL_FN I prints clone I's URL.
run_storm() {
  local t0 i pids=() bad=0 c args
  t0=$(now_ms)
  for i in $(seq 1 "$clones"); do
    args=()
    while IFS= read -r c; do args+=(-c "$c"); done <"$work/storm-$i.args"
    rig_exec "$(host_of "$i")" qemu-io -f raw "${args[@]}" "$($1 "$i")" >"$work/client-$i.log" 2>&1 &
    pids+=("$!")
  done
  for i in "${!pids[@]}"; do wait "${pids[$i]}" || { bad=1; say "client $((i + 1)) exited with an error"; }; done
  local t1
  t1=$(now_ms)
  if [ "$bad" = 1 ] || grep -qilE 'error|fail|denied|refused' "$work"/client-*.log; then
    grep -ilE 'error|fail|denied|refused' "$work"/client-*.log | head -3 | while read -r f; do
      say "$f: $(grep -iE 'error|fail|denied|refused' "$f" | head -2 | tr '\n' ' ')"
    done
    return 1
  fi
  echo $((t1 - t0))
}

# ---- tapmap
stats_all() {  # prints one JSON object {"1": stats, "2": stats, ...}
  local n sep="" out="{"
  for n in $(seq 1 "$hosts"); do
    out+="$sep\"$n\": $(rig_tapmap "$n" --json stats)" || return 1
    sep=", "
  done
  echo "$out}"
}
tapmap_url() { rig_nbd_url "$(host_of "$1")" "$(vol_of "$1")"; }
before=$(stats_all) || fail "stats failed"
tapmap_ms=$(run_storm tapmap_url) || fail "a tapmap boot-storm client failed"
after=$(stats_all) || fail "stats failed"
echo "$before" >"$work/stats-before.json"
echo "$after" >"$work/stats-after.json"

# ---- baseline: qemu-nbd --cache=none, qcow2 overlays on one shared raw base
sync
for i in $(seq 1 "$clones"); do
  qemu-img create -q -f qcow2 -F raw -b "$work/golden.raw" "$work/overlay-$i.qcow2" || fail "qemu-img create failed"
  # (ip netns exec execs qemu-nbd: $! is qemu-nbd's own pid)
  ip netns exec "$(rig_ns "$(host_of "$i")")" qemu-nbd --persistent --cache=none --aio=native -f qcow2 -x disk \
    -k "$work/qnbd-$i.sock" "$work/overlay-$i.qcow2" >>"$work/qemu-nbd-$i.log" 2>&1 &
  qpids+=("$!")
done
for i in $(seq 1 "$clones"); do rig_wait_socket "$work/qnbd-$i.sock" || fail "qemu-nbd $i did not start"; done
io_sum() {
  local s=0 p v
  for p in "${qpids[@]}"; do
    v=$(awk '/^read_bytes/ {print $2}' "/proc/$p/io" 2>/dev/null) || return 1
    [ -n "$v" ] || return 1
    s=$((s + v))
  done
  echo "$s"
}
qemu_url() { echo "nbd+unix:///disk?socket=$work/qnbd-$1.sock"; }
qbefore=$(io_sum) || fail "cannot read /proc/PID/io of qemu-nbd"
qemu_ms=$(run_storm qemu_url) || fail "a baseline boot-storm client failed"
qafter=$(io_sum) || fail "cannot read /proc/PID/io of qemu-nbd"
storm_cleanup

python3 - "$before" "$after" "$hosts" "$per_host" "$((pieces * piece))" "$tapmap_ms" \
  "$((qafter - qbefore))" "$qemu_ms" "$writes" <<'PY'
import json, os, sys
b, a = json.loads(sys.argv[1]), json.loads(sys.argv[2])
hosts, per_host, boot, tms, qread, qms, writes = map(int, sys.argv[3:10])
clones = hosts * per_host
mib = lambda x: f"{x / 1048576:,.1f} MiB"
d = {n: {k: a[n]["stats"][k] - b[n]["stats"][k] for k in
         ("pool_bytes_read", "logical_bytes_read", "cache_hits", "cache_misses", "cache_evictions",
          "logical_write_ops")} for n in a}
print(f"cluster boot storm: {hosts} hosts x {per_host} clones x {mib(boot)} boot set "
      f"(+{writes} private 4 KiB writes each), {clones} NBD clients at once, cold caches "
      f"of {os.environ.get('RIG_CACHE_SIZE', '?')} per host")
print(f"  {'host':6} {'pool read':>12} {'/ boot set':>11} {'logical read':>14} {'I/O eliminated':>15} "
      f"{'hit rate':>9} {'evictions':>10}")
worst = 0.0
for n in sorted(d, key=int):
    h = d[n]
    pr, lr = h["pool_bytes_read"], h["logical_bytes_read"]
    worst = max(worst, pr / boot)
    hm = h["cache_hits"] + h["cache_misses"]
    print(f"  h{n:5} {mib(pr):>12} {pr / boot:>10.3f}x {mib(lr):>14} "
          f"{(100.0 * (lr - pr) / lr if lr else 0):>14.1f}% "
          f"{(100.0 * h['cache_hits'] / hm if hm else 0):>8.1f}% {h['cache_evictions']:>10}")
pool = sum(h["pool_bytes_read"] for h in d.values())
logical = sum(h["logical_bytes_read"] for h in d.values())
if logical < clones * boot:
    sys.exit(f"bench: fewer logical bytes read ({logical}) than the storm asked for ({clones * boot})")
print(f"  {'side':34} {'storage read':>13} {'/ boot set':>11} {'logical read':>14} {'I/O eliminated':>15} {'time':>8}")
print(f"  {'tapmap (' + str(hosts) + ' tapdisk-map hosts, 1 pool)':34} {mib(pool):>13} {pool / boot:>10.3f}x "
      f"{mib(logical):>14} {100.0 * (logical - pool) / logical:>14.1f}% {tms / 1000:>7.2f}s")
print(f"  {'qemu-nbd qcow2 overlays, 1 raw base':34} {mib(qread):>13} {qread / boot:>10.3f}x "
      f"{mib(clones * boot):>14} {100.0 * (clones * boot - qread) / (clones * boot):>14.1f}% {qms / 1000:>7.2f}s")
wops = sum(h["logical_write_ops"] for h in d.values())
if wops < clones * writes:
    sys.exit(f"bench: fewer private writes counted ({wops}) than the storm made ({clones * writes})")
ok = worst <= 1.02
print(f"  ratio: baseline reads {qread / pool:.1f}x what tapmap reads; tapmap total {pool / boot:.3f}x boot set "
      f"(goal {hosts}.00x), worst host {worst:.3f}x (goal <= 1.02): {'met' if ok else 'NOT met'}")
PY
