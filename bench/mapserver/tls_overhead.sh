#!/usr/bin/env bash
# TLS overhead of the mapping protocol: mapserver_bench over plaintext TCP and over
# mutual TLS on 127.0.0.1, interleaved ROUNDS times each in the same run; prints the
# median of each throughput row and the ratio TLS/plaintext (1.00 = no cost).
# Usage: bench/mapserver/tls_overhead.sh BUILD_DIR [ROUNDS=3] [SECONDS=2]
set -euo pipefail
build=${1:?usage: tls_overhead.sh BUILD_DIR [ROUNDS] [SECONDS]}
rounds=${2:-3} seconds=${3:-2}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
for r in $(seq 1 "$rounds"); do
  for t in tcp tls; do
    "$build/bin/mapserver_bench" --mapserver "$build/bin/mapserver" --extents 1000 --clones 10 \
      --seconds "$seconds" --transport "$t" >"$out/$t.$r"
  done
done
python3 - "$out" "$rounds" <<'PY'
import re, statistics, sys
out, rounds = sys.argv[1], int(sys.argv[2])
rows = ["map lookups/s, one at a time", "map lookups/s, 64 in flight",
        "prepareWrite+commit pairs/s, one at a time", "prepareWrite+commit pairs/s, 16 in flight"]
def value(t, r, row):
    for line in open(f"{out}/{t}.{r}"):
        cells = [c.strip() for c in line.split("|")]
        if len(cells) > 2 and cells[1] == row:
            return float(cells[2])
    raise SystemExit(f"no row {row!r} in {t}.{r}")
print(f"| {'mapping protocol, 127.0.0.1 (median of %d)' % rounds:<46} | {'plaintext TCP':>13} | {'mutual TLS':>10} | {'TLS/plain':>9} |")
print(f"|{'-'*48}|{'-'*15}|{'-'*12}|{'-'*11}|")
for row in rows:
    p = statistics.median(value("tcp", r, row) for r in range(1, rounds + 1))
    t = statistics.median(value("tls", r, row) for r in range(1, rounds + 1))
    print(f"| {row:<46} | {p:>13.0f} | {t:>10.0f} | {t/p:>8.2f}x |")
PY
