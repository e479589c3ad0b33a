#!/usr/bin/env bash
# Bench: the cost of NBD over TLS. One tapdisk-map with PSK credentials; its unix
# socket offers TLS without requiring it, so the same client (nbdcopy, one connection)
# reaches the same volume on the same daemon in plaintext (nbd+unix://) and through TLS
# (nbds+unix://, TLS 1.3 PSK), rounds interleaved:
#   4 KiB reads from cache over the whole 256 MiB volume, 32 in flight;
#   1 MiB writes over the whole volume (then a flush), 8 in flight.
# Prints per-round figures, the medians and TLS/plain ratios.
#
# Usage: bench/nbd/tls_overhead.sh BUILD_DIR   (env: ROUNDS, default 3)
bin=$(cd "${1:-build}" && pwd)/bin
here=$(cd "$(dirname "$0")" && pwd)
source "$here/lib.sh"
rounds=${ROUNDS:-3}
mib=256

echo "bench:$(openssl rand -hex 32)" >"$bench_work/nbd.psk"
chmod 600 "$bench_work/nbd.psk"
TAPDISK_MAP_FLAGS="--nbd-tls-psk $bench_work/nbd.psk ${TAPDISK_MAP_FLAGS:-}"
start_stack 4G 1G
tapmap volume create vm ${mib}M >/dev/null
fio --name=fill --ioengine=nbd --uri="$(url vm)" --rw=write --bs=1M --size=${mib}M --iodepth=8 \
  --output="$bench_work/fill.out" >/dev/null

# nbdcopy (libnbd) with one connection, the same tool for both: plaintext URI and
# nbds+unix:// with the PSK file (fio's nbd engine refuses a tls-psk-file URI).
plain="nbd+unix:///vm?socket=$bench_work/nbd.sock"
tls="nbds+unix://bench@/vm?socket=$bench_work/nbd.sock&tls-psk-file=$bench_work/nbd.psk"
make_random_image "$bench_work/data.raw" $mib 9
# run KIND URI: prints IOPS (read: the whole volume in 4 KiB requests, 32 in flight) or
# MiB/s (write: the whole volume in 1 MiB requests, 8 in flight).
run() {
  local start end
  start=$(now_ms)
  if [ "$1" = read ]; then
    nbdcopy -C 1 -T 1 --no-extents --request-size=4096 --requests=32 "$2" null:
  else
    nbdcopy -C 1 -T 1 --no-extents --request-size=1048576 --requests=8 --flush "$bench_work/data.raw" "$2"
  fi
  end=$(now_ms)
  if [ "$1" = read ]; then echo $(( mib * 256 * 1000 / (end - start) )); else echo $(( mib * 1000 / (end - start) )); fi
}
# A TLS connection really is TLS (the log names the session).
nbdinfo "$tls" >/dev/null
grep -q "TLSv1.3.*PSK identity 'bench'" "$bench_work/tapdisk-map.log" || { echo "bench: no TLS session" >&2; exit 1; }
run read "$plain" >/dev/null   # warm the data cache

# For scale: nbdkit's memory plugin with the same key (--tls=on: gnutls on the server
# side too), same client, same rounds.
if command -v nbdkit >/dev/null; then
  nbdkit -f -U "$bench_work/nbdkit.sock" --tls=on --tls-psk="$bench_work/nbd.psk" memory ${mib}M \
    >>"$bench_work/nbdkit.log" 2>&1 &
  bench_pids+=("$!")
  wait_for "$bench_work/nbdkit.sock"
  kplain="nbd+unix:///?socket=$bench_work/nbdkit.sock"
  ktls="nbds+unix://bench@/?socket=$bench_work/nbdkit.sock&tls-psk-file=$bench_work/nbd.psk"
fi

results=()
for round in $(seq 1 "$rounds"); do
  for kind in read write; do
    p=$(run $kind "$plain"); t=$(run $kind "$tls")
    kp=0 kt=0
    if [ -n "${kplain:-}" ]; then kp=$(run $kind "$kplain"); kt=$(run $kind "$ktls"); fi
    echo "round $round $kind: tapdisk-map plain $p, TLS $t; nbdkit plain $kp, TLS $kt"
    results+=("$kind $p $t $kp $kt")
  done
done
python3 - "${results[@]}" <<'PY'
import statistics, sys
rows = [r.split() for r in sys.argv[1:]]
for kind, unit in (("read", "IOPS (4 KiB reads from cache, 32 in flight)"),
                   ("write", "MiB/s (1 MiB writes + flush, 8 in flight)")):
    p, t, kp, kt = (statistics.median(int(r[i]) for r in rows if r[0] == kind) for i in (1, 2, 3, 4))
    print(f"{kind:5}  tapdisk-map plain {p:>9,.0f}  TLS {t:>9,.0f}  TLS/plain {t / p:.2f}  {unit}")
    if kp:
        print(f"{kind:5}  nbdkit      plain {kp:>9,.0f}  TLS {kt:>9,.0f}  TLS/plain {kt / kp:.2f}")
PY
