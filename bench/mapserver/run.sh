#!/usr/bin/env bash
# Runs the mapserver benchmark and prints its table.
# Usage: bench/mapserver/run.sh [BUILD_DIR] [extra mapserver_bench flags]
#   e.g. bench/mapserver/run.sh build --extents 100000 --clones 200
set -euo pipefail
build=${1:-build}
shift || true
bin="$build/bin"
if [ ! -x "$bin/mapserver_bench" ] || [ ! -x "$bin/mapserver" ]; then
  echo "build first: cmake --build $build --target mapserver_bench mapserver" >&2
  exit 1
fi
exec "$bin/mapserver_bench" --mapserver "$bin/mapserver" "$@"
