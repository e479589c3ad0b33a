#!/usr/bin/env bash
# Bench (c): sequential 1 MiB writes into a fresh clone through NBD vs raw O_DIRECT
# writes of the same size to a file on the pool's file system, in the same run. Each
# ends with a flush (NBD FLUSH / fsync), so both numbers include making data durable.
# Both targets are preallocated (mapserver format --preallocate; fio's own layout), so
# neither pays for block allocation in the host filesystem.
# Goal: tapdisk-map >= 0.8x raw.
#
# Usage: bench/nbd/seq_write.sh BUILD_DIR   (env: WRITE_MIB, default 1024)
bin=$(cd "${1:-build}" && pwd)/bin
here=$(cd "$(dirname "$0")" && pwd)
source "$here/lib.sh"
write_mib=${WRITE_MIB:-1024}

# A preallocated pool (as production pool files should be, and as block devices are):
# the raw baseline below writes into a file fio preallocates the same way.
start_stack $(( write_mib * 2 + 512 ))M 256M --preallocate
tapmap volume create base ${write_mib}M >/dev/null
tapmap volume snapshot base base-v1 >/dev/null
tapmap volume clone base-v1 fresh >/dev/null

# fio_mibs ARGS...: prints write MiB/s.
fio_mibs() {
  fio --name=seq --rw=write --bs=1M --size=${write_mib}M --iodepth=8 --end_fsync=1 \
    --output-format=json --output="$bench_work/seq.json" "$@" >/dev/null
  python3 -c 'import json,sys; print(int(json.load(open(sys.argv[1]))["jobs"][0]["write"]["bw"]) // 1024)' "$bench_work/seq.json"
}
tapmap_mibs=$(fio_mibs --ioengine=nbd --uri="$(url fresh)")
raw_mibs=$(fio_mibs --ioengine=libaio --direct=1 --filename="$bench_work/raw-target")
# The NBD transport alone on this machine: the same client against nbdkit's null
# plugin, which drops what it receives. No NBD server can beat this figure.
nbdkit --exit-with-parent -U "$bench_work/null.sock" null size=${write_mib}M &
bench_pids+=("$!")
wait_for "$bench_work/null.sock"
null_mibs=$(fio_mibs --ioengine=nbd --uri="nbd+unix:///?socket=$bench_work/null.sock")
python3 - "$tapmap_mibs" "$raw_mibs" "$null_mibs" "$write_mib" <<'PY'
import sys
t, r, n, size = map(int, sys.argv[1:])
print(f"sequential 1 MiB writes, {size} MiB, iodepth 8, ending with a flush:")
print(f"  tapdisk-map, fresh clone over NBD      {t:>6} MiB/s")
print(f"  raw O_DIRECT file, same fs             {r:>6} MiB/s")
print(f"  NBD transport alone (nbdkit null)      {n:>6} MiB/s")
print(f"  ratio to raw                           {t / r:>6.2f}x  (goal >= 0.8x: {'met' if t / r >= 0.8 else 'NOT met'})")
print(f"  ratio to the NBD transport's ceiling   {t / n:>6.2f}x")
PY
