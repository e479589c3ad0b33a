#!/usr/bin/env bash
# Runs the blkif request fuzzer for SECONDS (default 20) on the build in BUILD.
#   tests/fuzz/run_fuzz.sh BUILD [SECONDS]
# The corpus grows in BUILD/fuzz/blkif_request (kept between runs); a crash leaves
# its input in BUILD/fuzz/artifacts/ and makes this script fail.
set -euo pipefail
build=${1:?usage: run_fuzz.sh BUILD [SECONDS]}
seconds=${2:-20}
bin="$build/bin/blkif_request_fuzz"
if [ ! -x "$bin" ]; then
  echo "run_fuzz.sh: $bin is missing (build the fuzz_targets target; needs clang)" >&2
  exit 1
fi
corpus="$build/fuzz/blkif_request"
artifacts="$build/fuzz/artifacts/"
mkdir -p "$corpus" "$artifacts"
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}
echo "fuzzing blkif request fetch+validate for ${seconds}s (corpus $corpus)"
"$bin" -max_total_time="$seconds" -max_len=12000 -timeout=10 -rss_limit_mb=1024 \
  -artifact_prefix="$artifacts" -print_final_stats=1 "$corpus" 2>&1 | tail -n 25
rc=${PIPESTATUS[0]}
if [ "$rc" -ne 0 ]; then
  echo "run_fuzz.sh: fuzzer failed (exit $rc); inputs in $artifacts" >&2
  exit "$rc"
fi
echo "run_fuzz.sh: no failure in ${seconds}s"
