#!/usr/bin/env bash
# Soak (issue 15): mapserver fail-over on a RADOS pool, ROUNDS (default 20) rounds of the
# cluster rig's case s_mapserver_failover: two mapservers (active + --standby) on a
# one-node Ceph, h1 and h2 streaming writes and flushes; each round kills -9 the active,
# waits for the standby to take over (it blocklists the old active first) and for both
# writers to flush again, then brings the killed one back as the standby. Afterwards
# every flushed write is read back from a third host and fsck of the RADOS copy must be
# clean. Prints the takeover times (kill -> the new active listens): median and max.
# Needs root (network namespaces). Usage: bench/cluster/failover_soak.sh BUILD_DIR
set -u
build=${1:-build}
here=$(cd "$(dirname "$0")" && pwd)
rounds=${ROUNDS:-20}
out=$(mktemp)
trap 'rm -f "$out"' EXIT
RIG_POOL_KIND=rados RIG_FAILOVER_ROUNDS=$rounds "$here/../../tests/cluster/run_cluster.sh" "$build" s_ 2>&1 | tee "$out"
rc=${PIPESTATUS[0]}
python3 - "$out" "$rounds" <<'PY'
import re, statistics, sys
text = open(sys.argv[1]).read()
m = re.search(r"takeover times \(s\): ([0-9. ]+)", text)
if not m:
    sys.exit("failover soak: no takeover times (the case failed before the end)")
t = [float(x) for x in m.group(1).split()]
stalls = [float(x) for x in re.findall(r"flushes stalled ([0-9.]+) s", text)]
print(f"failover soak: {len(t)} rounds of kill -9 / SIGSTOP (alternating) of the active mapserver under writes from 2 hosts: "
      f"takeover median {statistics.median(t):.2f} s, max {max(t):.2f} s; "
      f"lost writes: {'0' if 'PASS s_mapserver_failover' in text else 'see above'}")
PY
exit "$rc"
