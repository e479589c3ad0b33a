#!/usr/bin/env bash
set -euo pipefail
echo "no benchmarks yet"
# Engine: pool I/O (io_uring vs threads) and data-cache hit throughput.
if [ -x "${1:-build}/bin/engine_bench" ]; then
  echo "== engine =="
  "${1:-build}/bin/engine_bench" all --seconds 3
fi
