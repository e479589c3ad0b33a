#!/usr/bin/env bash
# make bench: every benchmark, each in its own temp dir, results on stdout.
# Usage: bench/run_all.sh BUILD_DIR
set -euo pipefail
build=${1:-build}
here=$(cd "$(dirname "$0")" && pwd)
echo "== NBD (a): boot storm, tapdisk-map vs qemu-nbd qcow2 overlays"
"$here/nbd/boot_storm.sh" "$build"
echo
echo "== cluster: boot storm, 3 hosts x 16 clones on one pool vs qemu-nbd qcow2 overlays (root: network namespaces)"
"$here/cluster/boot_storm.sh" "$build" || [ $? = 77 ]
echo
echo "== NBD (b): 4 KiB random reads from cache, tapdisk-map vs qemu-nbd"
"$here/nbd/random_read.sh" "$build"
echo
echo "== NBD (c): sequential 1 MiB writes into a fresh clone vs raw pool-fs writes"
"$here/nbd/seq_write.sh" "$build"
# mapserver: map/commit rates over RPC, O(1) snapshot/clone, 1000 clones.
echo
echo "== mapserver: map/commit rates over RPC, O(1) snapshot/clone, 1000 clones"
"$here/mapserver/run.sh" "$build"
# blkif: the ring front end with simulated grants and a RAM device.
echo
echo "== blkif: 4 KiB read IOPS per backend core, 1 MiB sequential (copy vs persistent grants, 1 vs 4 queues)"
"$build/bin/blkif_bench" --seconds 3
# engine: io_uring vs thread-pool pool I/O, data-cache hits, whole read path.
echo
echo "== engine: pool I/O (io_uring vs threads vs hybrid), cache hits, cached read path"
"$build/bin/engine_bench" all
# Soak runs (labelled slow, excluded from make test): e.g. the 60-round kill -9 crash soak.
echo
echo "== soak: tests labelled slow"
ctest --test-dir "$build" -L slow --output-on-failure
# cluster: the randomized model check, long run (tests/cluster/model_check.py).
echo
echo "== cluster: model check, long run (100k random steps over 3 hosts, every read compared with the model)"
"$here/cluster/model_check_long.sh" "$build" || { rc=$?; [ "$rc" = 77 ] || exit "$rc"; }
