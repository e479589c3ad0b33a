#!/usr/bin/env bash
# Bench (QoS, issue 16 item 5): a boot storm of N clones (default 16) of one golden
# image — each reads its boot set (default 32 MiB as scattered 64 KiB pieces) over NBD,
# all in parallel, cold cache — while one more clone of the same image runs an
# unthrottled write flood (qemu-img bench -w, 1 MiB writes, queue depth 16, looping
# over the whole clone). The readers' completion time (their "boot time") is measured
#   idle:      no flood (the reference),
#   flood:     the flooder without limits,
#   limited:   the flooder limited by `tapmap volume qos flood --write-bps LIMIT`
#              (default 20M),
# in the same run, interleaved round by round (ROUNDS, default 3), each on a freshly
# started tapdisk-map (cold cache; the limit is set after the start). Reports the
# median of each and the ratios flood/idle and limited/idle, plus the flooder's
# write rate and the limiter's counters.
#
# Usage: bench/nbd/qos_storm.sh BUILD_DIR
#   env: CLONES, BOOT_MIB, ROUNDS, CACHE (tapdisk-map's data cache, default 1G), LIMIT
#   (default 20M) or LIMIT_FLAGS (tapmap volume qos flags, default --write-bps LIMIT),
#   FLOOD_BS (default 1M), FLOOD_DEPTH (default 16)
bin=$(cd "${1:-build}" && pwd)/bin
here=$(cd "$(dirname "$0")" && pwd)
source "$here/lib.sh"
source "$here/../storm.sh"
clones=${CLONES:-16}
boot_mib=${BOOT_MIB:-32}
rounds=${ROUNDS:-3}
limit=${LIMIT:-20M}
flood_bs=${FLOOD_BS:-1M}
flood_depth=${FLOOD_DEPTH:-16}
limit_flags=${LIMIT_FLAGS:---write-bps $limit}
golden_mib=256
piece=65536
pieces=$(( boot_mib * 1048576 / piece ))

start_stack 4G "${CACHE:-1G}"
make_random_image "$bench_work/golden.raw" $golden_mib 42
tapmap volume create golden ${golden_mib}M >/dev/null
qemu-img convert -n -f raw -O raw -W "$bench_work/golden.raw" "$(url golden)"
tapmap volume snapshot golden golden-v1 >/dev/null
for i in $(seq -w 1 "$clones"); do tapmap volume clone golden-v1 "vm$i" >/dev/null; done
tapmap volume clone golden-v1 flood >/dev/null

storm_make_sets "$bench_work" "$clones" "$golden_mib" "$pieces" "$piece"

tapmap_url() { url "vm$(printf "%0${#clones}d" "$1")"; }
# run_storm: every clone's reads in parallel; prints elapsed ms.
run_storm() { storm_run "$bench_work" "$clones" tapmap_url -f raw; }
vol_field() {  # vol_field STATS_JSON VOLUME KEY [QOS_KEY]
  python3 -c 'import json,sys
v = json.loads(sys.argv[1])["stats"]["volumes"].get(sys.argv[2], {})
if len(sys.argv) > 4: v = v.get("qos", {})
print(v.get(sys.argv[3], 0))' "$@"
}

# one_round MODE: appends "MODE ms flood_bytes flood_ms throttled wait_us" to $results
# (not run in a subshell: it restarts tapdisk-map, whose pid lib.sh keeps).
one_round() {
  stop_tapdisk
  start_tapdisk
  if [ "$1" = limited ]; then tapmap_local volume qos flood $limit_flags >/dev/null; fi
  local fpid="" t0 ms before after
  before=$(tapmap_local --json stats)
  t0=$(now_ms)
  if [ "$1" != idle ]; then
    qemu-img bench -w -f raw -t none -c 100000000 -d "$flood_depth" -s "$flood_bs" "$(url flood)" >"$bench_work/flood.log" 2>&1 &
    fpid=$!
    sleep 1  # the flood is under way when the guests boot
  fi
  ms=$(run_storm)
  after=$(tapmap_local --json stats)
  local fms=$(( $(now_ms) - t0 ))
  if [ -n "$fpid" ]; then kill "$fpid" 2>/dev/null || true; wait "$fpid" 2>/dev/null || true; fi
  local fb=$(( $(vol_field "$after" flood logical_bytes_written) - $(vol_field "$before" flood logical_bytes_written) ))
  echo "$1 $ms $fb $fms $(vol_field "$after" flood throttled_write_ops qos) $(vol_field "$after" flood wait_us qos)" >>"$results"
}

results="$bench_work/results.txt"
: >"$results"
for r in $(seq 1 "$rounds"); do
  for mode in idle flood limited; do
    one_round "$mode"
    echo "round $r: $(tail -1 "$results")" >&2
  done
done

python3 - "$results" "$clones" "$boot_mib" "$limit_flags" "$flood_bs" "$flood_depth" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
clones, boot_mib, limit, fbs, fdepth = sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5], sys.argv[6]
med = lambda mode, i: statistics.median(float(r[i]) for r in rows if r[0] == mode)
idle, flood, lim = med("idle", 1), med("flood", 1), med("limited", 1)
rate = lambda mode: statistics.median(float(r[2]) / 1048576 / (float(r[3]) / 1000) for r in rows if r[0] == mode)
print(f"qos storm: {clones} clones x {boot_mib} MiB boot set over NBD, 1 flooding clone "
      f"(qemu-img bench -w, {fbs}, depth {fdepth}); median of {len([r for r in rows if r[0] == 'idle'])} interleaved rounds")
print(f"  {'':34} {'boot time':>10} {'vs idle':>8} {'flooder writes':>15}")
print(f"  {'no flood':34} {idle / 1000:>9.2f}s {1:>8.2f}")
print(f"  {'flood, unlimited':34} {flood / 1000:>9.2f}s {flood / idle:>8.2f} {rate('flood'):>10.1f} MiB/s")
print(f"  {'flood, limited ' + limit:34} {lim / 1000:>9.2f}s {lim / idle:>8.2f} {rate('limited'):>10.1f} MiB/s")
print(f"  boot time with the flooder unlimited / limited: {flood / lim:.2f}x")
last = [r for r in rows if r[0] == "limited"][-1]
print(f"  (limited round: {last[4]} flooder writes throttled, {int(last[5]) / 1e6:.1f} s waited in total)")
PY
