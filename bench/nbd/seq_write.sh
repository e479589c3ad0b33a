#!/usr/bin/env bash
# Bench (c): sequential 1 MiB writes into a fresh clone through NBD vs raw O_DIRECT
# writes of the same size to a file on the pool's file system, in the same run. Each
# ends with a flush (NBD FLUSH / fsync), so both numbers include making data durable.
# Goal: tapdisk-map >= 0.8x raw.
#
# Usage: bench/nbd/seq_write.sh BUILD_DIR   (env: WRITE_MIB, default 1024)
bin=$(cd "${1:-build}" && pwd)/bin
here=$(cd "$(dirname "$0")" && pwd)
source "$here/lib.sh"
write_mib=${WRITE_MIB:-1024}

start_stack $(( write_mib * 2 + 512 ))M 256M
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
python3 - "$tapmap_mibs" "$raw_mibs" "$write_mib" <<'PY'
import sys
t, r, size = map(int, sys.argv[1:])
print(f"sequential 1 MiB writes, {size} MiB, iodepth 8, ending with a flush:")
print(f"  tapdisk-map, fresh clone over NBD  {t:>6} MiB/s")
print(f"  raw O_DIRECT file, same fs         {r:>6} MiB/s")
print(f"  ratio                              {t / r:>6.2f}x  (goal >= 0.8x: {'met' if t / r >= 0.8 else 'NOT met'})")
PY
