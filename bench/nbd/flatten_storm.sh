#!/usr/bin/env bash
# Bench (volume flatten, issue 16 item 4): what a flatten costs the guests around it,
# and what --rate buys them. A 256 MiB golden image (random data) has N clones
# (default 8) that "boot" — each reads its boot set (default 32 MiB as scattered
# 64 KiB pieces) over NBD, all in parallel, cold cache — while one more clone of the
# same image is flattened (256 MiB of shared blocks to copy). Measured in the same run,
# interleaved round by round (ROUNDS, default 3), each on a freshly started tapdisk-map
# and a fresh clone to flatten:
#   idle:       no flatten (the reference),
#   unbounded:  `tapmap volume flatten --rate 0`,
#   bounded:    `tapmap volume flatten --rate RATE` (default 32M).
# Reports the medians of the boot time (ratio to idle) and of the flatten's own copy
# rate while the guests boot (its copied bytes by then / the boot time).
#
# Usage: bench/nbd/flatten_storm.sh BUILD_DIR   env: CLONES, BOOT_MIB, ROUNDS, RATE, CACHE
bin=$(cd "${1:-build}" && pwd)/bin
here=$(cd "$(dirname "$0")" && pwd)
source "$here/lib.sh"
source "$here/../storm.sh"
clones=${CLONES:-8}
boot_mib=${BOOT_MIB:-32}
rounds=${ROUNDS:-3}
rate=${RATE:-32M}
golden_mib=256
piece=65536
pieces=$(( boot_mib * 1048576 / piece ))

start_stack 8G "${CACHE:-1G}"
make_random_image "$bench_work/golden.raw" $golden_mib 42
tapmap volume create golden ${golden_mib}M >/dev/null
qemu-img convert -n -f raw -O raw -W "$bench_work/golden.raw" "$(url golden)"
tapmap volume snapshot golden golden-v1 >/dev/null
for i in $(seq 1 "$clones"); do tapmap volume clone golden-v1 "vm$i" >/dev/null; done

storm_make_sets "$bench_work" "$clones" "$golden_mib" "$pieces" "$piece"

# run_storm: every clone's reads (read-only exports) in parallel; prints elapsed ms.
ro_url() { url "vm$1@ro"; }
run_storm() { storm_run "$bench_work" "$clones" ro_url -r -f raw; }
job_field() { python3 -c 'import json,sys; print(json.loads(sys.argv[1])["flatten"][sys.argv[2]])' "$1" "$2"; }

# one_round MODE ROUND: appends "MODE boot_ms copied_bytes" to $results.
one_round() {
  stop_tapdisk
  start_tapdisk
  local ms copied=0 name="flat-$2-$1"
  tapmap volume clone golden-v1 "$name" >/dev/null
  case "$1" in
    unbounded) tapmap_local volume flatten "$name" --rate 0 --no-wait >/dev/null ;;
    bounded) tapmap_local volume flatten "$name" --rate "$rate" --no-wait >/dev/null ;;
  esac
  ms=$(run_storm)
  if [ "$1" != idle ]; then
    copied=$(job_field "$(tapmap_local --json volume flatten "$name" --status)" copied_bytes)
    # Let the job end before the next round restarts tapdisk-map.
    until [ "$(job_field "$(tapmap_local --json volume flatten "$name" --status)" state)" = done ]; do sleep 0.2; done
  fi
  echo "$1 $ms $copied" >>"$results"
}

results="$bench_work/results.txt"
: >"$results"
for r in $(seq 1 "$rounds"); do
  for mode in idle unbounded bounded; do
    one_round "$mode" "$r"
    echo "round $r: $(tail -1 "$results")" >&2
  done
done

python3 - "$results" "$clones" "$boot_mib" "$rate" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
clones, boot_mib, rate = sys.argv[2], sys.argv[3], sys.argv[4]
med = lambda mode: statistics.median(float(r[1]) for r in rows if r[0] == mode)
copy = lambda mode: statistics.median(float(r[2]) / 1048576 / (float(r[1]) / 1000) for r in rows if r[0] == mode)
idle, unb, bnd = med("idle"), med("unbounded"), med("bounded")
print(f"flatten storm: {clones} clones x {boot_mib} MiB boot set over NBD while a 256 MiB clone is flattened; "
      f"median of {len([r for r in rows if r[0] == 'idle'])} interleaved rounds")
print(f"  {'':28} {'boot time':>10} {'vs idle':>8} {'flatten copies':>15}")
print(f"  {'no flatten':28} {idle / 1000:>9.2f}s {1:>8.2f}")
print(f"  {'flatten --rate 0':28} {unb / 1000:>9.2f}s {unb / idle:>8.2f} {copy('unbounded'):>10.1f} MiB/s")
print(f"  {'flatten --rate ' + rate:28} {bnd / 1000:>9.2f}s {bnd / idle:>8.2f} {copy('bounded'):>10.1f} MiB/s")
PY
