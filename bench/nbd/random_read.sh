#!/usr/bin/env bash
# Bench (b): 4 KiB random reads served from cache through NBD, IOPS of tapdisk-map vs
# qemu-nbd on the same data, in the same run. Both are warmed first (tapdisk-map's
# data cache; the page cache under qemu-nbd --cache=writeback), then fio's nbd engine
# issues 4 KiB random reads over the whole 256 MiB image at queue depth 32.
# Goal: tapdisk-map >= 1.5x qemu-nbd.
#
# Usage: bench/nbd/random_read.sh BUILD_DIR   (env: RUNTIME seconds, default 10)
bin=$(cd "${1:-build}" && pwd)/bin
here=$(cd "$(dirname "$0")" && pwd)
source "$here/lib.sh"
runtime=${RUNTIME:-10}
mib=256

start_stack 2G 1G
make_random_image "$bench_work/data.raw" $mib 5
tapmap volume create data ${mib}M >/dev/null
qemu-img convert -n -f raw -O raw -W "$bench_work/data.raw" "$(url data)"
tapmap volume snapshot data data-v1 >/dev/null   # shared blocks: cacheable
tapmap volume clone data-v1 vm >/dev/null

qemu-nbd --persistent --cache=writeback -f raw -x data -k "$bench_work/qnbd.sock" "$bench_work/data.raw" \
  >>"$bench_work/qemu-nbd.log" 2>&1 &
bench_pids+=("$!")
wait_for "$bench_work/qnbd.sock"

# fio_iops URI: warm with a sequential pass, then random 4 KiB reads; prints IOPS.
fio_iops() {
  fio --name=warm --ioengine=nbd --uri="$1" --rw=read --bs=1M --size=${mib}M --iodepth=4 \
    --output="$bench_work/warm.out" >/dev/null
  fio --name=rand --ioengine=nbd --uri="$1" --rw=randread --bs=4k --size=${mib}M --iodepth=32 \
    --time_based --runtime="$runtime" --ramp_time=1 --randrepeat=0 --norandommap \
    --output-format=json --output="$bench_work/rand.json" >/dev/null
  python3 -c 'import json,sys; print(int(json.load(open(sys.argv[1]))["jobs"][0]["read"]["iops"]))' "$bench_work/rand.json"
}
tapmap_iops=$(fio_iops "$(url vm)")
qemu_iops=$(fio_iops "nbd+unix:///data?socket=$bench_work/qnbd.sock")
python3 - "$tapmap_iops" "$qemu_iops" <<'PY'
import sys
t, q = map(int, sys.argv[1:])
print("4 KiB random reads from cache over NBD (fio nbd engine, iodepth 32, 1 job):")
print(f"  tapdisk-map  {t:>9,} IOPS")
print(f"  qemu-nbd     {q:>9,} IOPS   (raw file, cache=writeback: page cache)")
print(f"  ratio        {t / q:>9.2f}x   (goal >= 1.5x: {'met' if t / q >= 1.5 else 'NOT met'})")
PY
