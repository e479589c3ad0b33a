#!/bin/bash
# A throw-away one-node Ceph cluster for tests: one monitor and one memstore OSD on
# 127.0.0.1, auth none, no manager, every file under DIR. Nothing outside DIR is used
# (no /etc/ceph, /var/lib/ceph); the daemons listen only on the ports given.
#
#   ceph_cluster.sh start DIR [MON_PORT]   DIR must be empty or absent. The monitor
#                                          takes MON_PORT (msgr2) and MON_PORT+1 (msgr1),
#                                          the OSD ports in MON_PORT+2..MON_PORT+49, so
#                                          clusters 50 ports apart never collide.
#                                          Prints CEPH_CONF=DIR/ceph.conf when the
#                                          cluster is up.
#   ceph_cluster.sh pool DIR NAME          creates Ceph pool NAME and waits until it
#                                          accepts a write
#   ceph_cluster.sh stop DIR               SIGTERM the OSD then the monitor (pid files;
#                                          only processes whose command line names
#                                          DIR/ceph.conf), SIGKILL after 10 s
#   ceph_cluster.sh watch DIR PID          waits until process PID has ended, then
#                                          stops the cluster: a test killed before
#                                          its own teardown leaves no daemons behind
#
# Exit status: 0 done; 77 Ceph is not installed ("SKIPPED: ceph: ..." on stdout);
# anything else a failure (start then stops whatever it had started).
# env: CEPH_ADDR (default 127.0.0.1): the one address the daemons listen on (the
# cluster rig runs them in a network namespace of their own, on its private network).
# MEMSTORE_BYTES (default 512 MiB; memstore keeps every byte in RAM, and past
# this size the OSD declares itself full and writes hang).
set -euo pipefail

usage() { echo "usage: $0 start DIR [MON_PORT] | pool DIR NAME | stop DIR | watch DIR PID" >&2; exit 2; }
CMD=${1:-}; DIR=${2:-}
[ -n "$CMD" ] && [ -n "$DIR" ] || usage

# Every call is bounded: without a manager some commands wait forever, and a daemon
# that cannot reach the monitor may never report itself started.
CLI_TIMEOUT=20

alive() { [ -d "/proc/$1" ] && ! grep -q '^State:.*Z' "/proc/$1/status" 2>/dev/null; }

stop_daemon() {  # NAME: by DIR/run/NAME.pid, only if it is ours
  local pidfile="$DIR/run/$1.pid" pid i
  [ -f "$pidfile" ] || return 0
  pid=$(cat "$pidfile")
  if [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] && tr '\0' ' ' < "/proc/$pid/cmdline" | grep -qF -- "$DIR/ceph.conf"; then
    kill -TERM "$pid" 2>/dev/null || true
    kill -CONT "$pid" 2>/dev/null || true  # a frozen (SIGSTOP) daemon gets the TERM now
    # Daemonized: re-parented to PID 1, they may linger as zombies; Z counts as gone.
    for i in $(seq 1 100); do alive "$pid" || break; sleep 0.1; done
    if alive "$pid"; then
      echo "ceph_cluster.sh: $1 ($pid) ignored SIGTERM for 10 s; SIGKILL" >&2
      kill -KILL "$pid" 2>/dev/null || true
    fi
  fi
  rm -f "$pidfile"
}

do_stop() {
  [ -d "$DIR" ] || return 0
  DIR=$(cd "$DIR" && pwd)
  stop_daemon osd.0  # the OSD first: otherwise it waits for the monitor's ack
  stop_daemon mon.a
}

# Start time of process $1 (field 22 of /proc/PID/stat, counted after the command
# name), empty once it is gone: tells a reused pid from the original process.
start_time() { sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f20; }

do_watch() {
  local pid=${1:?pid} started
  started=$(start_time "$pid")
  [ -n "$started" ] || { do_stop; return 0; }
  while [ "$(start_time "$pid")" = "$started" ]; do sleep 1; done
  do_stop
}

do_pool() {
  local name=${1:?pool name}
  local conf="$DIR/ceph.conf"
  timeout $CLI_TIMEOUT ceph -c "$conf" osd pool create "$name" 8 8 >/dev/null 2>>"$DIR/log/cli.log"
  timeout $CLI_TIMEOUT ceph -c "$conf" osd pool application enable "$name" rbd >/dev/null 2>>"$DIR/log/cli.log" || true
  # The first write waits for the placement groups to be active.
  echo ready > "$DIR/ready.obj"
  timeout 30 rados -c "$conf" -p "$name" put __ready "$DIR/ready.obj" 2>>"$DIR/log/cli.log"
  timeout $CLI_TIMEOUT rados -c "$conf" -p "$name" rm __ready 2>>"$DIR/log/cli.log"
}

do_start() {
  local port=${1:-3300}
  for tool in ceph-mon ceph-osd monmaptool ceph rados timeout; do
    if ! command -v "$tool" >/dev/null; then
      echo "SKIPPED: ceph: $tool is not installed (make deps installs ceph-mon ceph-osd ceph-common)"
      exit 77
    fi
  done
  mkdir -p "$DIR"
  DIR=$(cd "$DIR" && pwd)
  [ -z "$(ls -A "$DIR")" ] || { echo "ceph_cluster.sh: $DIR is not empty" >&2; exit 1; }
  trap 'echo "ceph_cluster.sh: start failed at line $LINENO; logs in $DIR/log" >&2; do_stop' ERR
  mkdir -p "$DIR/mon" "$DIR/osd" "$DIR/log" "$DIR/run" "$DIR/crash"
  local fsid osd_uuid mon_host
  fsid=$(cat /proc/sys/kernel/random/uuid)
  osd_uuid=$(cat /proc/sys/kernel/random/uuid)
  # Both messenger versions, each on its own port: a client given only one form
  # pointed at the other's port hangs until its mount timeout.
  local addr=${CEPH_ADDR:-127.0.0.1}
  mon_host="[v2:$addr:$port,v1:$addr:$((port + 1))]"
  cat > "$DIR/ceph.conf" <<CONF
[global]
fsid = $fsid
mon host = $mon_host
public addr = $addr
cluster addr = $addr
ms bind ipv4 = true
ms bind ipv6 = false
ms bind port min = $((port + 2))
ms bind port max = $((port + 49))
auth cluster required = none
auth service required = none
auth client required = none
auth allow insecure global id reclaim = false
mon warn on insecure global id reclaim allowed = false
keyring = $DIR/keyring
run dir = $DIR/run
crash dir = $DIR/crash
log file = $DIR/log/\$name.\$pid.log
admin socket = $DIR/run/\$name.\$pid.asok
osd pool default size = 1
osd pool default min size = 1
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
mon allow pool size one = true
mon allow pool delete = true
mon warn on pool no redundancy = false
mon data avail crit = 0
mon data avail warn = 1

[mon]
mon data = $DIR/mon
log file = $DIR/log/\$name.log
mon cluster log file = $DIR/log/cluster.log
pid file = $DIR/run/\$name.pid
# Each osdmap change (OSD boot, pool create) waits this long; the default 1 s makes
# a start take ~4 s instead of ~1 s.
paxos propose interval = 0.1

[osd]
osd data = $DIR/osd
osd journal = $DIR/osd/journal
log file = $DIR/log/\$name.log
pid file = $DIR/run/\$name.pid
osd objectstore = memstore
memstore device bytes = ${MEMSTORE_BYTES:-536870912}
CONF
  : > "$DIR/keyring"
  timeout $CLI_TIMEOUT monmaptool --create --clobber --fsid "$fsid" --addv a "$mon_host" "$DIR/monmap" >/dev/null
  timeout $CLI_TIMEOUT ceph-mon -c "$DIR/ceph.conf" -i a --mkfs --monmap "$DIR/monmap" --keyring "$DIR/keyring" \
    2>>"$DIR/log/mkfs.log"
  # Daemonizes: returns once the monitor runs (its pid in run/mon.a.pid).
  timeout $CLI_TIMEOUT ceph-mon -c "$DIR/ceph.conf" -i a 2>>"$DIR/log/daemons.log"
  local id
  id=$(timeout $CLI_TIMEOUT ceph -c "$DIR/ceph.conf" osd new "$osd_uuid" 2>>"$DIR/log/cli.log")
  [ "$id" = 0 ] || { echo "ceph_cluster.sh: osd new gave '$id'" >&2; false; }
  timeout $CLI_TIMEOUT ceph-osd -c "$DIR/ceph.conf" -i 0 --mkfs --osd-uuid "$osd_uuid" --keyring "$DIR/keyring" \
    >>"$DIR/log/mkfs.log" 2>&1
  timeout $CLI_TIMEOUT ceph-osd -c "$DIR/ceph.conf" -i 0 2>>"$DIR/log/daemons.log"  # daemonizes too
  trap - ERR
  echo "CEPH_CONF=$DIR/ceph.conf"
}

case "$CMD" in
  start) do_start "${3:-3300}" ;;
  pool) DIR=$(cd "$DIR" && pwd); do_pool "${3:-}" ;;
  stop) do_stop ;;
  watch) do_watch "${3:-}" ;;
  *) usage ;;
esac
