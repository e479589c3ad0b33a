#!/usr/bin/env bash
# Bench (c): sequential 1 MiB writes into a fresh clone through NBD vs raw O_DIRECT
# writes of the same size to a file on the pool's file system, in the same run. Each
# ends with a flush (NBD FLUSH / fsync), so both numbers include making data durable.
# Both targets are preallocated (mapserver format --preallocate; fio's own layout), so
# neither pays for block allocation in the host filesystem.
#
# The disks of these 2-core machines move by 2x between consecutive runs, so the run
# is ROUNDS rounds, each writing a new fresh clone and then the raw file back to back;
# the ratio reported is the median of the rounds' ratios. Each round also writes the
# raw file through qemu-nbd (cache=none, aio=native): an established NBD server on the
# same file, showing what the NBD hop itself costs here.
# Goal: tapdisk-map >= 0.8x raw.
#
# Usage: bench/nbd/seq_write.sh BUILD_DIR   (env: WRITE_MIB, default 1024; ROUNDS, default 3)
bin=$(cd "${1:-build}" && pwd)/bin
here=$(cd "$(dirname "$0")" && pwd)
source "$here/lib.sh"
write_mib=${WRITE_MIB:-1024}
rounds=${ROUNDS:-3}

# A preallocated pool (as production pool files should be, and as block devices are):
# the raw baseline below writes into a file fio preallocates the same way. Room for
# one fresh clone per round.
start_stack $(( write_mib * rounds + 512 ))M 256M --preallocate
tapmap volume create base ${write_mib}M >/dev/null
tapmap volume snapshot base base-v1 >/dev/null

# fio_mibs ARGS...: prints write MiB/s.
fio_mibs() {
  fio --name=seq --rw=write --bs=1M --size=${write_mib}M --iodepth=8 --end_fsync=1 \
    --output-format=json --output="$bench_work/seq.json" "$@" >/dev/null
  python3 -c 'import json,sys; print(int(json.load(open(sys.argv[1]))["jobs"][0]["write"]["bw"]) // 1024)' "$bench_work/seq.json"
}
# The raw target, laid out once (fio preallocates and writes it) before any round.
raw_target="$bench_work/raw-target"
fio_mibs --ioengine=libaio --direct=1 --filename="$raw_target" >/dev/null
qemu-nbd --fork --persistent --shared=1 -k "$bench_work/qemu.sock" -f raw --cache=none --aio=native \
  --pid-file "$bench_work/qemu.pid" -x raw "$raw_target"
bench_pids+=("$(cat "$bench_work/qemu.pid")")

results=()
for round in $(seq 1 "$rounds"); do
  tapmap volume clone base-v1 "fresh-$round" >/dev/null
  t=$(fio_mibs --ioengine=nbd --uri="$(url "fresh-$round")")
  r=$(fio_mibs --ioengine=libaio --direct=1 --filename="$raw_target")
  q=$(fio_mibs --ioengine=nbd --uri="nbd+unix:///raw?socket=$bench_work/qemu.sock")
  results+=("$t,$r,$q")
done
# The NBD transport alone on this machine: the same client against nbdkit's null
# plugin, which drops what it receives. No NBD server can beat this figure.
nbdkit --exit-with-parent -U "$bench_work/null.sock" null size=${write_mib}M &
bench_pids+=("$!")
wait_for "$bench_work/null.sock"
null_mibs=$(fio_mibs --ioengine=nbd --uri="nbd+unix:///?socket=$bench_work/null.sock")
python3 - "$write_mib" "$null_mibs" "${results[@]}" <<'PY'
import statistics, sys
size, null = int(sys.argv[1]), int(sys.argv[2])
rounds = [tuple(map(int, r.split(","))) for r in sys.argv[3:]]
print(f"sequential 1 MiB writes, {size} MiB, iodepth 8, ending with a flush; {len(rounds)} rounds:")
print("  round  tapdisk-map(NBD)  raw O_DIRECT  qemu-nbd on raw (cache=none)  tapdisk-map/raw  qemu-nbd/raw")
for i, (t, r, q) in enumerate(rounds, 1):
    print(f"  {i:>5}  {t:>10} MiB/s  {r:>6} MiB/s  {q:>22} MiB/s  {t / r:>14.2f}x  {q / r:>11.2f}x")
ratio = statistics.median(t / r for t, r, _ in rounds)
qratio = statistics.median(q / r for _, r, q in rounds)
print(f"  NBD transport alone (nbdkit null)      {null:>6} MiB/s")
print(f"  median ratio to raw                    {ratio:>6.2f}x  (goal >= 0.8x: {'met' if ratio >= 0.8 else 'NOT met'})")
print(f"  median qemu-nbd ratio to raw           {qratio:>6.2f}x")
print(f"  tapdisk-map / qemu-nbd (median)        {statistics.median(t / q for t, _, q in rounds):>6.2f}x")
PY
