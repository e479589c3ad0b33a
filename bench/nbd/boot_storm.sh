#!/usr/bin/env bash
# Bench (a): boot storm of N clones (default 64) of one golden image. Every clone reads
# the same boot set (default 64 MiB as 1024 scattered 64 KiB pieces) in its own order,
# all clients in parallel, from a cold cache.
#
#   tapmap:   one tapdisk-map serving N clones over NBD; we report pool bytes read
#             (engine stats) / boot-set bytes. Goal: <= 1.02.
#   baseline: qemu-nbd --cache=none serving N qcow2 overlays on ONE shared raw base
#             (the classic linked-clone setup); we report bytes the qemu-nbd processes
#             read from storage (/proc/PID/io read_bytes, summed) / boot-set bytes.
#
# Usage: bench/nbd/boot_storm.sh BUILD_DIR   (env: CLONES, BOOT_MIB)
bin=$(cd "${1:-build}" && pwd)/bin
here=$(cd "$(dirname "$0")" && pwd)
source "$here/lib.sh"
source "$here/../storm.sh"
clones=${CLONES:-64}
boot_mib=${BOOT_MIB:-64}
golden_mib=256
piece=65536
pieces=$(( boot_mib * 1048576 / piece ))

start_stack 4G 1G
make_random_image "$bench_work/golden.raw" $golden_mib 42
tapmap volume create golden ${golden_mib}M >/dev/null
qemu-img convert -n -f raw -O raw -W "$bench_work/golden.raw" "$(url golden)"
tapmap volume snapshot golden golden-v1 >/dev/null
for i in $(seq -w 1 "$clones"); do tapmap volume clone golden-v1 "vm$i" >/dev/null; done

storm_make_sets "$bench_work" "$clones" "$golden_mib" "$pieces" "$piece"
# run_storm URL_FN FORMAT: every clone's reads in parallel; prints elapsed ms.
run_storm() { storm_run "$bench_work" "$clones" "$1" -f "$2"; }

# ---- tapmap (cold cache: restart the daemon first)
stop_tapdisk
start_tapdisk
tapmap_url() { url "vm$(printf "%0${#clones}d" "$1")"; }
before=$(tapmap_local --json stats)
tapmap_ms=$(run_storm tapmap_url raw)
after=$(tapmap_local --json stats)
pool_read=$(( $(stat_field "$after" pool_bytes_read) - $(stat_field "$before" pool_bytes_read) ))
logical_read=$(( $(stat_field "$after" logical_bytes_read) - $(stat_field "$before" logical_bytes_read) ))
stop_tapdisk

# ---- baseline: qemu-nbd, qcow2 overlays on a shared raw base, cache=none
sync
qpids=()
for i in $(seq 1 "$clones"); do
  qemu-img create -q -f qcow2 -F raw -b "$bench_work/golden.raw" "$bench_work/overlay-$i.qcow2"
  qemu-nbd --persistent --cache=none --aio=native -f qcow2 -x disk -k "$bench_work/qnbd-$i.sock" "$bench_work/overlay-$i.qcow2" \
    >>"$bench_work/qemu-nbd.log" 2>&1 &
  qpids+=("$!")
  bench_pids+=("$!")
done
for i in $(seq 1 "$clones"); do wait_for "$bench_work/qnbd-$i.sock"; done
io_sum() { local s=0 p; for p in "${qpids[@]}"; do s=$(( s + $(awk '/^read_bytes/ {print $2}' "/proc/$p/io") )); done; echo $s; }
qemu_url() { echo "nbd+unix:///disk?socket=$bench_work/qnbd-$1.sock"; }
qbefore=$(io_sum)
qemu_ms=$(run_storm qemu_url raw)
qemu_read=$(( $(io_sum) - qbefore ))
for p in "${qpids[@]}"; do kill "$p" 2>/dev/null || true; done

boot=$(( pieces * piece ))
python3 - "$clones" "$boot" "$logical_read" "$pool_read" "$tapmap_ms" "$qemu_read" "$qemu_ms" <<'PY'
import sys
clones, boot, logical, pool, tms, qread, qms = map(int, sys.argv[1:])
mib = lambda x: f"{x / 1048576:,.1f} MiB"
print(f"boot storm: {clones} clones x {mib(boot)} boot set ({mib(clones * boot)} logical reads per system)")
print(f"  {'':28} {'tapmap (tapdisk-map)':>22} {'qemu-nbd qcow2 overlays':>24}")
print(f"  {'storage bytes read':28} {mib(pool):>22} {mib(qread):>24}")
print(f"  {'storage read / boot set':28} {pool / boot:>22.3f} {qread / boot:>24.3f}")
print(f"  {'time':28} {tms / 1000:>21.2f}s {qms / 1000:>23.2f}s")
print(f"  (tapmap logical bytes read: {mib(logical)}; goal pool/boot-set <= 1.02: {'met' if pool / boot <= 1.02 else 'NOT met'})")
PY
