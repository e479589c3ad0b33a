# Shared helpers of the NBD benchmarks (sourced). Sets up a temp dir with a formatted
# pool, a mapserver and a tapdisk-map serving NBD on a unix socket, all stopped and
# removed on exit. Requires $bin (the build's bin directory).
set -euo pipefail

bench_work=$(mktemp -d /tmp/tapmap-bench-XXXXXX)
bench_pids=()
bench_cleanup() {
  for pid in "${bench_pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${bench_pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  [ -n "${BENCH_KEEP:-}" ] && echo "bench: kept $bench_work" >&2 || rm -rf "$bench_work"
}
trap bench_cleanup EXIT
echo "bench secret $$" >"$bench_work/secret"
chmod 600 "$bench_work/secret"
echo "# bench: defaults only" >"$bench_work/tapmap.conf"

tapmap() { "$bin/tapmap" --config "$bench_work/tapmap.conf" --server "unix:$bench_work/ms.sock" \
             --secret-file "$bench_work/secret" "$@"; }
tapmap_local() { "$bin/tapmap" --config "$bench_work/tapmap.conf" --control "$bench_work/ctl.sock" "$@"; }
wait_for() { for _ in $(seq 1 600); do [ -S "$1" ] && return 0; sleep 0.1; done; echo "bench: $1 never appeared" >&2; exit 1; }
url() { echo "nbd+unix:///$1?socket=$bench_work/nbd.sock"; }
now_ms() { echo $(( $(date +%s%N) / 1000000 )); }

# start_stack POOL_SIZE CACHE_SIZE [FORMAT_FLAGS...]
start_stack() {
  "$bin/mapserver" format --config "$bench_work/tapmap.conf" --pool "$bench_work/pool" --meta "$bench_work/meta" \
    --size "$1" --block-size 64K "${@:3}" >/dev/null
  "$bin/mapserver" serve --config "$bench_work/tapmap.conf" --pool "$bench_work/pool" --meta "$bench_work/meta" \
    --listen "unix:$bench_work/ms.sock" --secret-file "$bench_work/secret" >>"$bench_work/mapserver.log" 2>&1 &
  bench_pids+=("$!")
  wait_for "$bench_work/ms.sock"
  bench_cache=$2
  start_tapdisk
}
# TAPDISK_MAP_FLAGS: extra tapdisk-map flags for experiments (e.g. --commit-interval-ms N).
start_tapdisk() {
  "$bin/tapdisk-map" --config "$bench_work/tapmap.conf" --server "unix:$bench_work/ms.sock" \
    --pool "$bench_work/pool" --secret-file "$bench_work/secret" --host-name bench --control "$bench_work/ctl.sock" \
    --nbd "unix:$bench_work/nbd.sock" --cache-size "$bench_cache" --xen off ${TAPDISK_MAP_FLAGS:-} >>"$bench_work/tapdisk-map.log" 2>&1 &
  tapdisk_pid=$!
  bench_pids+=("$tapdisk_pid")
  wait_for "$bench_work/nbd.sock"
  wait_for "$bench_work/ctl.sock"
}
stop_tapdisk() { kill -TERM "$tapdisk_pid"; wait "$tapdisk_pid"; }
# stat_field JSON KEY
stat_field() { python3 -c 'import json,sys; print(json.loads(sys.argv[1])["stats"][sys.argv[2]])' "$1" "$2"; }

# make_random_image PATH MIB SEED
make_random_image() {
  python3 - "$1" "$2" "$3" <<'PY'
import random, sys
path, mib, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rng = random.Random(seed)
with open(path, "wb") as f:
    for _ in range(mib):
        f.write(rng.randbytes(1 << 20))
PY
}
