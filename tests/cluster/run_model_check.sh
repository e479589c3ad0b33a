#!/usr/bin/env bash
# tests/cluster/run_model_check.sh — the randomized model check (tests/cluster/model_check.py)
# on a fresh cluster rig: one mapserver and 3 tapdisk-map hosts in network namespaces
# sharing one pool (tests/cluster/rig.sh), torn down afterwards whatever happens.
#
# Usage: tests/cluster/run_model_check.sh BUILD_DIR [--steps N] [--seed S] [--replay FILE]
#                                          [--no-ro] [--aligned-shrink] [--progress N] …
#   (every option after BUILD_DIR goes to model_check.py; see its --help)
# Exit 0 no wrong read, 1 a wrong read or unexpected outcome (seed, step and the shrunk
# step list printed), 77 "SKIPPED: model check: <reason>" when the rig cannot run here.
set -u
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
build=${1:?usage: run_model_check.sh BUILD_DIR [model_check.py options]}
shift
# shellcheck source=tests/cluster/rig.sh
source "$here/rig.sh"

if ! reason=$(rig_can_run); then echo "SKIPPED: model check: $reason"; exit 77; fi
py=/usr/bin/python3   # Debian's python3, where python3-libnbd installs the nbd module
[ -x "$py" ] || py=python3
"$py" -c 'import nbd' 2>/dev/null || { echo "SKIPPED: model check: python3-libnbd is not installed (make deps)"; exit 77; }

rig_init "$build" 3 || { echo "model check: rig setup failed"; exit 1; }
rig_start_mapserver || { echo "model check: the mapserver did not start"; exit 1; }
for n in 1 2 3; do rig_start_host "$n" || { echo "model check: host h$n did not start"; exit 1; }; done
disown -a   # the driver may kill and restart the daemons: no job notices from this shell
RIG_TMP=${RIG_TMP:-/var/tmp} "$py" "$here/model_check.py" --rig-env "$RIG_DIR/rig.env" "$@"
rc=$?
[ $rc = 0 ] || echo "model check: daemon logs in $RIG_DIR/h*/tapdisk-map.log, $RIG_DIR/ms/mapserver.log (removed at exit unless RIG_KEEP=1)"
exit $rc
