#!/usr/bin/env bash
# bench/cluster/model_check_long.sh — the long run of the cluster model check: at least
# 100k random steps over 3 hosts (tests/cluster/model_check.py on a fresh rig, see
# tests/cluster/run_model_check.sh), every read compared with the model.
#
# Usage: bench/cluster/model_check_long.sh BUILD_DIR [--steps N] [--seed S] [other model_check.py options]
#   default --steps 100000 --progress 10000; ~2.5-4 ms a step on 2 cores.
# The programs are copied first (a rebuild of BUILD_DIR during the run does not change
# them under the rig). Exit status: the model check's (0 = no wrong read).
set -u
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
build=${1:?usage: model_check_long.sh BUILD_DIR [model_check.py options]}
shift
args=("$@")
[[ " ${args[*]} " == *" --steps "* ]] || args=(--steps 100000 "${args[@]}")
[[ " ${args[*]} " == *" --progress "* ]] || args+=(--progress 10000)

snap=$(mktemp -d "${RIG_TMP:-/var/tmp}/tapmap-model-check-bin-XXXXXX") || exit 1
trap 'rm -rf "$snap"' EXIT
mkdir "$snap/bin"
for prog in mapserver tapdisk-map tapmap; do
  cp "$build/bin/$prog" "$snap/bin/" || { echo "model check (long): $build/bin/$prog not built"; exit 1; }
done
t0=$(date +%s)
"$here/../../tests/cluster/run_model_check.sh" "$snap" "${args[@]}"
rc=$?
echo "model check (long): exit $rc after $(($(date +%s) - t0)) s (rig setup included)"
exit $rc
