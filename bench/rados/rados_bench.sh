#!/usr/bin/env bash
# Benchmarks of the RADOS pool backend (issue 15 item 5), all in one run on one
# throw-away one-node Ceph (memstore; tests/support/ceph_cluster.sh):
#   (a) boot storm: CLONES (default 16) clones of a 256 MiB golden image each read the
#       same boot set (BOOT_MIB, default 32 MiB as scattered 64 KiB pieces; each clone in
#       its own order), in parallel, cold cache — through one tapdisk-map on a RADOS
#       pool, and as RBD clones of one protected snapshot read by qemu's rbd driver
#       (librbd, one process per clone, as QEMU guests would). Bytes the OSD served
#       (its perf counter op_r_out_bytes, admin socket) and wall time of each.
#   (b) 4 KiB random reads served from tapdisk-map's cache (fio's nbd engine, QD 32,
#       64 MiB hot set), the same volume layout on a file pool and on the RADOS pool.
#   (c) 1 MiB sequential writes (fio nbd, QD 16, 256 MiB) into a fresh clone on the
#       RADOS pool vs `rados bench write` (1 MiB objects, 16 in flight) on the same
#       cluster.
# Usage: bench/rados/rados_bench.sh BUILD_DIR   env: CLONES, BOOT_MIB, RUNTIME (s, default 8)
set -euo pipefail
bin=$(cd "${1:-build}" && pwd)/bin
repo=$(cd "$(dirname "$0")/../.." && pwd)
source "$repo/bench/storm.sh"
clones=${CLONES:-16}
boot_mib=${BOOT_MIB:-32}
runtime=${RUNTIME:-8}
golden_mib=256
piece=65536
pieces=$(( boot_mib * 1048576 / piece ))

work=$(mktemp -d /var/tmp/tapmap-rados-bench-XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  "$repo/tests/support/ceph_cluster.sh" stop "$work/ceph" >/dev/null 2>&1 || true
  [ -n "${BENCH_KEEP:-}" ] && echo "bench: kept $work" >&2 || rm -rf "$work"
}
trap cleanup EXIT
now_ms() { echo $(( $(date +%s%N) / 1000000 )); }
wait_for() { for _ in $(seq 1 600); do [ -S "$1" ] && return 0; sleep 0.1; done; echo "bench: $1 never appeared" >&2; exit 1; }

MEMSTORE_BYTES=$((4 << 30)) "$repo/tests/support/ceph_cluster.sh" start "$work/ceph" 7700 >/dev/null || {
  rc=$?; [ "$rc" = 77 ] && { echo "SKIPPED: ceph: not installed"; exit 77; }; exit "$rc"; }
conf="$work/ceph/ceph.conf"
"$repo/tests/support/ceph_cluster.sh" pool "$work/ceph" tapmap >/dev/null
"$repo/tests/support/ceph_cluster.sh" pool "$work/ceph" rbdbench >/dev/null
osd_read_bytes() {
  ceph --admin-daemon "$(ls "$work"/ceph/run/osd.0.*.asok | head -1)" perf dump |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["osd"]["op_r_out_bytes"])'
}

echo "bench secret $$" >"$work/secret"; chmod 600 "$work/secret"
echo "# defaults" >"$work/tapmap.conf"
tapmap() { "$bin/tapmap" --config "$work/tapmap.conf" --server "unix:$work/ms.sock" --secret-file "$work/secret" "$@"; }
tapmap_local() { "$bin/tapmap" --config "$work/tapmap.conf" --control "$work/ctl.sock" "$@"; }
url() { echo "nbd+unix:///$1?socket=$work/nbd.sock"; }
# start_stack NAME POOL: mapserver + tapdisk-map on POOL (a path or rados: location).
start_stack() {
  "$bin/mapserver" format --config "$work/tapmap.conf" --pool "$2" --meta "$work/meta-$1" --size 4G >/dev/null
  "$bin/mapserver" serve --config "$work/tapmap.conf" --pool "$2" --meta "$work/meta-$1" \
    --listen "unix:$work/ms.sock" --secret-file "$work/secret" >>"$work/mapserver-$1.log" 2>&1 &
  ms_pid=$!; pids+=("$ms_pid")
  wait_for "$work/ms.sock"
  stack_pool=$2
  start_tapdisk "$1"
}
start_tapdisk() {
  "$bin/tapdisk-map" --config "$work/tapmap.conf" --server "unix:$work/ms.sock" --pool "$stack_pool" \
    --secret-file "$work/secret" --host-name bench --control "$work/ctl.sock" --nbd "unix:$work/nbd.sock" \
    --cache-size 1G --xen off >>"$work/tapdisk-map-$1.log" 2>&1 &
  td_pid=$!; pids+=("$td_pid")
  wait_for "$work/nbd.sock"; wait_for "$work/ctl.sock"
}
stop_stack() {
  kill -TERM "$td_pid"; wait "$td_pid" || true
  kill -TERM "$ms_pid"; wait "$ms_pid" || true
  rm -f "$work/ms.sock" "$work/nbd.sock" "$work/ctl.sock"
}

python3 - "$work/golden.raw" "$golden_mib" <<'PY'
import random, sys
rng = random.Random(42)
with open(sys.argv[1], "wb") as f:
    for _ in range(int(sys.argv[2])): f.write(rng.randbytes(1 << 20))
PY
storm_make_sets "$work" "$clones" "$golden_mib" "$pieces" "$piece"
# storm URL_FN: every clone's reads in parallel (read-only); prints elapsed ms.
storm() { storm_run "$work" "$clones" "$1" -r; }

# ---- (a) boot storm: tapmap on RADOS
start_stack rados "rados:tapmap/bench?conf=$conf"
tapmap volume create golden ${golden_mib}M >/dev/null
qemu-img convert -n -f raw -O raw -W "$work/golden.raw" "$(url golden)"
tapmap volume snapshot golden golden-v1 >/dev/null
for i in $(seq 1 "$clones"); do tapmap volume clone golden-v1 "vm$i" >/dev/null; done
kill -TERM "$td_pid"; wait "$td_pid" || true; start_tapdisk rados   # cold cache
tq() { echo "nbd+unix:///vm$1@ro?socket=$work/nbd.sock"; }
before=$(osd_read_bytes)
tapmap_ms=$(storm tq)
tapmap_osd=$(( $(osd_read_bytes) - before ))
tapmap_pool=$(tapmap_local --json stats | python3 -c 'import json,sys; print(json.load(sys.stdin)["stats"]["pool_bytes_read"])')
echo "boot storm, tapmap on RADOS: ${tapmap_ms} ms, OSD served $tapmap_osd bytes" >&2

# ---- (c) 1 MiB sequential writes: tapmap on RADOS vs rados bench
tapmap volume clone golden-v1 wr >/dev/null
fio --name=seq --ioengine=nbd --uri="$(url wr)" --rw=write --bs=1M --size=256M --iodepth=16 \
  --output-format=json --output="$work/seqw.json" >/dev/null
tapmap_wr=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["jobs"][0]["write"]["bw"] / 1024)' "$work/seqw.json")
rados -c "$conf" -p tapmap bench "$runtime" write -b 1048576 -t 16 --no-cleanup >"$work/radosbench.out" 2>&1
rados_wr=$(awk '/^Bandwidth \(MB\/sec\)/ {print $3}' "$work/radosbench.out")
rados -c "$conf" -p tapmap cleanup >/dev/null 2>&1 || true
echo "seq writes: tapmap ${tapmap_wr} MiB/s, rados bench ${rados_wr} MB/s" >&2

# ---- (b) cache-hit 4 KiB random reads: RADOS pool vs file pool
# fio_iops URI: warm with a sequential pass over the 64 MiB hot set, then random reads.
fio_iops() {
  fio --name=warm --ioengine=nbd --uri="$1" --rw=read --bs=1M --size=64M --iodepth=4 --output="$work/warm.out" >/dev/null
  fio --name=rand --ioengine=nbd --uri="$1" --rw=randread --bs=4k --size=64M --iodepth=32 --time_based \
    --runtime="$runtime" --ramp_time=1 --randrepeat=0 --norandommap --output-format=json --output="$work/rand.json" >/dev/null
  python3 -c 'import json,sys; print(int(json.load(open(sys.argv[1]))["jobs"][0]["read"]["iops"]))' "$work/rand.json"
}
rados_iops=$(fio_iops "$(url vm1)")
stop_stack
start_stack file "$work/pool.file"
tapmap volume create golden ${golden_mib}M >/dev/null
qemu-img convert -n -f raw -O raw -W "$work/golden.raw" "$(url golden)"
tapmap volume snapshot golden golden-v1 >/dev/null
tapmap volume clone golden-v1 vm1 >/dev/null
file_iops=$(fio_iops "$(url vm1)")
stop_stack
echo "cache-hit reads: file $file_iops, rados $rados_iops IOPS" >&2

# ---- (a) boot storm: RBD clones read through librbd
rbd -c "$conf" -p rbdbench import "$work/golden.raw" golden >/dev/null 2>&1
rbd -c "$conf" snap create rbdbench/golden@v1 >/dev/null 2>&1
rbd -c "$conf" snap protect rbdbench/golden@v1
for i in $(seq 1 "$clones"); do rbd -c "$conf" clone rbdbench/golden@v1 "rbdbench/vm$i"; done
rq() { echo "rbd:rbdbench/vm$1:conf=$conf"; }
before=$(osd_read_bytes)
rbd_ms=$(storm rq)
rbd_osd=$(( $(osd_read_bytes) - before ))
echo "boot storm, RBD clones: ${rbd_ms} ms, OSD served $rbd_osd bytes" >&2

python3 - "$clones" "$boot_mib" "$tapmap_ms" "$tapmap_osd" "$tapmap_pool" "$rbd_ms" "$rbd_osd" \
  "$file_iops" "$rados_iops" "$tapmap_wr" "$rados_wr" <<'PY'
import sys
clones, boot_mib, tms, tosd, tpool, rms, rosd, fi, ri, tw, rw = sys.argv[1:]
boot = int(boot_mib) << 20
mib = lambda b: int(b) / 1048576
print(f"RADOS pool (one-node Ceph, memstore), same run:")
print(f"  (a) boot storm, {clones} clones x {boot_mib} MiB boot set, cold:")
print(f"      tapmap (1 tapdisk-map, RADOS pool): {int(tms)/1000:6.2f} s, OSD served {mib(tosd):7.1f} MiB "
      f"= {int(tosd)/boot:5.2f} boot sets (tapdisk-map pool reads {mib(tpool):.1f} MiB)")
print(f"      RBD clones (librbd per clone):      {int(rms)/1000:6.2f} s, OSD served {mib(rosd):7.1f} MiB "
      f"= {int(rosd)/boot:5.2f} boot sets")
print(f"      pool bytes read RBD / tapmap: {int(rosd)/max(1,int(tosd)):.1f}x; time {int(rms)/int(tms):.2f}x")
print(f"  (b) 4 KiB random reads from tapdisk-map's cache: file pool {int(fi)} IOPS, RADOS pool {int(ri)} IOPS "
      f"= {int(ri)/int(fi):.2f}x")
print(f"  (c) 1 MiB sequential writes: tapmap on RADOS {float(tw):.0f} MiB/s, rados bench {float(rw):.0f} MB/s "
      f"= {float(tw)/(float(rw)/1.048576):.2f}x")
PY
