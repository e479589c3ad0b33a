#!/usr/bin/env bash
# make demo: a boot storm of 16 clones of one golden image, served by tapdisk-map over
# NBD from a real mapserver, all in a temp dir with embedded defaults (nothing installed,
# no root-owned paths touched). Shows how much pool I/O the physical-location cache
# eliminates.
#
#   1. format a 2 GiB pool (64 KiB blocks), start mapserver and tapdisk-map
#   2. create a 256 MiB golden image and write generated content into it through NBD
#      (qemu-img convert), snapshot it, make 16 clones
#   3. restart tapdisk-map (cold cache), then boot-storm: every clone reads the same
#      64 MiB boot set (1024 scattered 64 KiB pieces) in its own order and writes a few
#      private blocks, 16 NBD clients in parallel
#   4. print logical vs pool bytes read, I/O eliminated, cache hit rate, time
#
# With TAPMAP_DEMO_POOL=rados (make demo-ceph) the pool is a RADOS pool on a throw-away
# one-node Ceph cluster started for the demo (tests/support/ceph_cluster.sh: one monitor,
# one memstore OSD on 127.0.0.1, stopped at the end), and the table adds what the OSD
# served during the storm.
#
# Usage: tests/demo/run_demo.sh BUILD_DIR
set -euo pipefail
build=$(cd "${1:-build}" && pwd)
repo=$(cd "$(dirname "$0")/../.." && pwd)
pool_kind=${TAPMAP_DEMO_POOL:-file}
bin=$build/bin
clones=${TAPMAP_DEMO_CLONES:-16}
golden_mib=256
boot_pieces=1024      # x 64 KiB = 64 MiB boot set
piece=65536

for tool in qemu-img qemu-io python3; do
  command -v $tool >/dev/null || { echo "demo: $tool is missing (make deps installs it)" >&2; exit 1; }
done
for prog in mapserver tapdisk-map tapmap; do
  [ -x "$bin/$prog" ] || { echo "demo: $bin/$prog not built" >&2; exit 1; }
done

work=$(mktemp -d /tmp/tapmap-demo-XXXXXX)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [ "$pool_kind" = rados ]; then "$repo/tests/support/ceph_cluster.sh" stop "$work/ceph" >/dev/null 2>&1 || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
cd "$work"
echo "demo secret $$" > secret && chmod 600 secret
echo "# tapmap demo: defaults only" > tapmap.conf
common=(--config "$work/tapmap.conf")
tapmap() { "$bin/tapmap" "${common[@]}" --server "unix:$work/ms.sock" --secret-file "$work/secret" "$@"; }
tapmap_local() { "$bin/tapmap" "${common[@]}" --control "$work/ctl.sock" "$@"; }
wait_for() { for _ in $(seq 1 300); do [ -S "$1" ] && return 0; sleep 0.1; done; echo "demo: $1 never appeared" >&2; exit 1; }
start_tapdisk() {
  "$bin/tapdisk-map" "${common[@]}" --server "unix:$work/ms.sock" --pool "$pool" --secret-file "$work/secret" \
    --host-name demo-host --control "$work/ctl.sock" --nbd "unix:$work/nbd.sock" --cache-size 512M --xen off \
    >>"$work/tapdisk-map.log" 2>&1 &
  tapdisk_pid=$!
  pids+=("$tapdisk_pid")
  wait_for "$work/nbd.sock"; wait_for "$work/ctl.sock"
}
stop_tapdisk() {
  kill -TERM "$tapdisk_pid"
  wait "$tapdisk_pid" || { echo "demo: tapdisk-map exited badly" >&2; tail "$work/tapdisk-map.log" >&2; exit 1; }
}
url() { echo "nbd+unix:///$1?socket=$work/nbd.sock"; }

echo "== tapmap demo in $work"
pool="$work/pool"
if [ "$pool_kind" = rados ]; then
  echo "== starting a one-node Ceph cluster (memstore) for the pool"
  MEMSTORE_BYTES=$((2 << 30)) "$repo/tests/support/ceph_cluster.sh" start "$work/ceph" 7800 >/dev/null
  "$repo/tests/support/ceph_cluster.sh" pool "$work/ceph" tapmap >/dev/null
  pool="rados:tapmap/demo?conf=$work/ceph/ceph.conf"
fi
# Bytes the Ceph OSD has served (its admin socket's perf counter); 0 for a file pool.
osd_read_bytes() {
  [ "$pool_kind" = rados ] || { echo 0; return; }
  ceph --admin-daemon "$(ls "$work"/ceph/run/osd.0.*.asok | head -1)" perf dump |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["osd"]["op_r_out_bytes"])'
}
"$bin/mapserver" format "${common[@]}" --pool "$pool" --meta meta --size 2G --block-size 64K
"$bin/mapserver" serve "${common[@]}" --pool "$pool" --meta meta --listen "unix:$work/ms.sock" \
  --secret-file secret >>mapserver.log 2>&1 &
pids+=("$!")
wait_for "$work/ms.sock"
start_tapdisk

echo "== golden image: ${golden_mib} MiB of generated content, written through NBD"
python3 - "$golden_mib" <<'PY'
import random, sys
mib = int(sys.argv[1]); rng = random.Random(42)
with open("golden.raw", "wb") as f:
    for i in range(mib):
        # a disk-like mix: mostly data, some zero (never written) regions
        f.write(bytes(1 << 20) if i % 8 == 7 else rng.randbytes(1 << 20))
PY
tapmap volume create golden ${golden_mib}M >/dev/null
t0=$(date +%s%N)
qemu-img convert -n -f raw -O raw -W golden.raw "$(url golden)"
t1=$(date +%s%N)
qemu-img compare -q -f raw -F raw golden.raw "$(url golden)"
echo "   imported in $(( (t1 - t0) / 1000000 )) ms and verified (qemu-img compare)"
tapmap volume snapshot golden golden-v1 >/dev/null
for i in $(seq -w 1 "$clones"); do tapmap volume clone golden-v1 "vm$i" >/dev/null; done
echo "   snapshot golden-v1 and $clones clones created"

echo "== restarting tapdisk-map (cold cache), then the boot storm"
stop_tapdisk
start_tapdisk
# Each clone: the same boot set in its own order, plus a few private writes.
python3 - "$clones" "$golden_mib" "$boot_pieces" "$piece" <<'PY'
import random, sys
clones, mib, pieces, piece = map(int, sys.argv[1:])
rng = random.Random(7)
blocks = (mib << 20) // piece
boot = sorted(rng.sample(range(blocks), pieces))
for i in range(1, clones + 1):
    order = boot[:]
    random.Random(1000 + i).shuffle(order)
    cmds = [f"read {b * piece} {piece}" for b in order]
    w = random.Random(2000 + i)
    cmds += [f"write -P {i} {w.randrange(blocks) * piece + 4096 * w.randrange(16)} 4096" for _ in range(8)]
    cmds.append("flush")
    with open(f"storm-{i:0{len(str(clones))}d}.args", "w") as f:
        f.write("\n".join(cmds) + "\n")
PY
stats() { tapmap_local --json stats; }
before=$(stats)
osd_before=$(osd_read_bytes)
t0=$(date +%s%N)
storm_pids=()
for i in $(seq -w 1 "$clones"); do
  args=()
  while IFS= read -r c; do args+=(-c "$c"); done <"storm-$i.args"
  qemu-io -f raw "${args[@]}" "$(url "vm$i")" >"storm-$i.log" 2>&1 &
  storm_pids+=("$!")
done
fail=0
for p in "${storm_pids[@]}"; do wait "$p" || fail=1; done
t1=$(date +%s%N)
[ "$fail" = 0 ] || { echo "demo: a boot-storm client failed" >&2; cat storm-*.log | grep -i error | head >&2; exit 1; }
after=$(stats)
osd_served=$(( $(osd_read_bytes) - osd_before ))

python3 - "$before" "$after" "$(( (t1 - t0) / 1000000 ))" "$clones" "$boot_pieces" "$piece" "$pool_kind" "$osd_served" <<'PY'
import json, sys
b, a = json.loads(sys.argv[1])["stats"], json.loads(sys.argv[2])["stats"]
pool_kind, osd_served = sys.argv[7], int(sys.argv[8])
secs, clones, pieces, piece = int(sys.argv[3]) / 1000.0, int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
d = {k: a.get(k, 0) - b.get(k, 0) for k in a if isinstance(a.get(k), int)}
logical, pool = d["logical_bytes_read"], d["pool_bytes_read"]
hits, misses = d["cache_hits"], d["cache_misses"]
mib = lambda x: f"{x / 1048576:,.1f} MiB"
boot = pieces * piece
rows = [
    ("clones booted in parallel", f"{clones}"),
    ("boot set per clone", mib(boot)),
    ("logical bytes read (all clones)", mib(logical)),
    ("pool bytes read", mib(pool)),
    ("pool bytes read / boot set", f"{pool / boot:.3f}"),
    ("I/O eliminated", f"{100.0 * (logical - pool) / logical:.1f} %" if logical else "n/a"),
    ("cache hit rate", f"{100.0 * hits / (hits + misses):.1f} %" if hits + misses else "n/a"),
    ("private writes", f"{d['logical_write_ops']} ops, {mib(d['logical_bytes_written'])}"),
    ("boot storm time", f"{secs:.2f} s ({logical / secs / 1048576:,.0f} MiB/s logical)"),
]
if pool_kind == "rados":
    rows.insert(4, ("Ceph OSD bytes served (RADOS pool)", mib(osd_served)))
w = max(len(r[0]) for r in rows)
print()
print("  " + "metric".ljust(w) + "   value")
print("  " + "-" * w + "   " + "-" * 24)
for k, v in rows:
    print("  " + k.ljust(w) + "   " + v)
print()
if logical < clones * boot:
    sys.exit("demo: fewer bytes read than the boot storm asked for")
PY
stop_tapdisk
where="the pool"
[ "$pool_kind" = rados ] && where="the RADOS pool (one-node Ceph)"
echo "== shown: $clones clones of one golden image booted at once through tapdisk-map read the shared blocks from $where once (the table's 'pool bytes read / boot set'); every daemon stopped cleanly"
