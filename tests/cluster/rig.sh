# shellcheck shell=bash
# tests/cluster/rig.sh — a multi-host tapmap cluster on one machine, as a sourced bash
# library. See tests/cluster/README.md for the functions, files and variables.
#
#   source tests/cluster/rig.sh
#   rig_init BUILD_DIR [HOSTS]      # namespaces, bridge, pool, secret; trap-based cleanup
#   rig_start_mapserver; rig_start_host 1; rig_start_host 2; rig_start_host 3
#   rig_tapmap 1 volume create vm 4M
#   rig_exec 1 qemu-io -f raw -c 'write -P 0xa1 0 64k' "$(rig_nbd_url 1 vm)"
#
# Layout (RIG_ID = tmc<pid>, unique per run):
#   namespace RIG_ID-sw   the "switch": bridge br0, one veth port per node (p-ms, p-hN)
#   namespace RIG_ID-ms   mapserver, eth0 = RIG_NET.1, serving tcp:RIG_NET.1:RIG_PORT
#   namespace RIG_ID-hN   host N's tapdisk-map, eth0 = RIG_NET.(10+N)
# With RIG_POOL_KIND=rados also:
#   namespace RIG_ID-ceph the one-node Ceph cluster, eth0 = RIG_NET.2
#   namespace RIG_ID-ms2  a second mapserver (a standby: rig_start_standby), eth0 =
#                         RIG_NET.3; hosts know both (server = tcp:.1:P,tcp:.3:P)
# Nothing is created in the root network namespace (veths are created directly inside
# their namespaces). The pool file and every socket live under RIG_DIR (/var/tmp by
# default: the pool is opened O_DIRECT, which tmpfs does not support).

RIG_NET=${RIG_NET:-10.213.77}        # a private /24, only ever configured inside rig namespaces
RIG_PORT=${RIG_PORT:-7300}
RIG_POOL_SIZE=${RIG_POOL_SIZE:-1G}
RIG_BLOCK_SIZE=${RIG_BLOCK_SIZE:-64K}
RIG_CACHE_SIZE=${RIG_CACHE_SIZE:-64M}
RIG_WAIT_S=${RIG_WAIT_S:-20}         # bound of every wait loop, seconds
RIG_LOG_LEVEL=${RIG_LOG_LEVEL:-info}
RIG_LEASE_SECONDS=${RIG_LEASE_SECONDS:-3}  # the mapserver's host lease time T (leases.md)
# RIG_POOL_KIND=rados: the pool is a RADOS pool of a one-node Ceph cluster (one monitor,
# one memstore OSD: tests/support/ceph_cluster.sh) running in a namespace of its own,
# RIG_ID-ceph at RIG_NET.2, reached by the mapserver and every host over the switch
# like the mapserver; default "file": a pool file under RIG_DIR.
RIG_POOL_KIND=${RIG_POOL_KIND:-file}
RIG_CEPH_PORT=${RIG_CEPH_PORT:-7400}
# RIG_OLD_MAPSERVER=1: start a mapserver that predates leases (no --lease-seconds), to
# see a case fail on the code before a change.

# ---------------------------------------------------------------------------------------
# Small helpers

rig_log() { echo "rig: $*" >&2; }
rig_die() { rig_log "$*"; exit 1; }

# rig_wait_for SECONDS DESCRIPTION CMD... : polls CMD every 50 ms until it succeeds;
# returns 1 (and says what) when SECONDS pass first.
rig_wait_for() {
  local secs=$1 what=$2; shift 2
  local deadline=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    if [ "$SECONDS" -ge "$deadline" ]; then rig_log "timed out after ${secs}s waiting for $what"; return 1; fi
    sleep 0.05
  done
}
rig_wait_socket() { rig_wait_for "${2:-$RIG_WAIT_S}" "socket $1" test -S "$1"; }
rig_wait_gone() { rig_wait_for "${2:-$RIG_WAIT_S}" "$1 to go away" test ! -e "$1"; }

# rig_can_run: prints a reason and returns 1 when this machine cannot host the rig.
rig_can_run() {
  if [ "$(id -u)" != 0 ]; then echo "not root (network namespaces need root)"; return 1; fi
  command -v ip >/dev/null || { echo "ip (iproute2) not installed"; return 1; }
  local probe="tmcprobe$$"
  if ! ip netns add "$probe" 2>/dev/null; then echo "cannot create a network namespace (ip netns add failed)"; return 1; fi
  local ok=1
  ip -n "$probe" link add br0 type bridge 2>/dev/null || { echo "no bridge support in the kernel"; ok=0; }
  [ "$ok" = 1 ] && { ip -n "$probe" link add va type veth peer name vb 2>/dev/null || { echo "no veth support in the kernel"; ok=0; }; }
  ip netns del "$probe" 2>/dev/null
  [ "$ok" = 1 ]
}

rig_ns() { case "$1" in sw) echo "$RIG_ID-sw" ;; ms) echo "$RIG_ID-ms" ;; ms2) echo "$RIG_ID-ms2" ;; ceph) echo "$RIG_ID-ceph" ;; *) echo "$RIG_ID-h$1" ;; esac; }
rig_host_ip() { echo "$RIG_NET.$((10 + $1))"; }
rig_hdir() { echo "$RIG_DIR/h$1"; }

# ---------------------------------------------------------------------------------------
# Setup and teardown

# rig_init BUILD_DIR [HOSTS]: makes the namespaces, the switch, the pool and the secret,
# and installs the cleanup trap (EXIT, INT, TERM). Hosts and mapserver are not started.
rig_init() {
  local build=${1:?rig_init BUILD_DIR [HOSTS]}
  RIG_BIN=$(cd "$build/bin" 2>/dev/null && pwd) || rig_die "no $build/bin"
  RIG_REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
  RIG_HOSTS=${2:-${RIG_HOSTS:-3}}
  for prog in mapserver tapdisk-map tapmap; do
    [ -x "$RIG_BIN/$prog" ] || rig_die "$RIG_BIN/$prog not built"
  done
  RIG_ID=tmc$$
  RIG_DIR=$(mktemp -d "${RIG_TMP:-/var/tmp}/tapmap-cluster-$$-XXXXXX") || rig_die "mktemp failed"
  RIG_SERVER=tcp:$RIG_NET.1:$RIG_PORT
  RIG_SERVER2=tcp:$RIG_NET.3:$RIG_PORT
  RIG_HOST_SERVERS=$RIG_SERVER
  [ "$RIG_POOL_KIND" = rados ] && RIG_HOST_SERVERS="$RIG_SERVER,$RIG_SERVER2"
  RIG_MS2_PID=
  RIG_MS_PID=
  declare -gA RIG_HOST_PID=()
  RIG_NAMESPACES=()
  export RIG_ID RIG_DIR RIG_BIN RIG_HOSTS RIG_SERVER RIG_NET RIG_PORT
  trap 'rig_teardown' EXIT
  trap 'rig_teardown; trap - EXIT; exit 130' INT
  trap 'rig_teardown; trap - EXIT; exit 143' TERM

  mkdir -p "$RIG_DIR/ms" "$RIG_DIR/ms2" "$RIG_DIR/clients"
  RIG_POOL_LOCATION=$RIG_DIR/pool
  [ "$RIG_POOL_KIND" = rados ] && RIG_POOL_LOCATION="rados:tapmap/rig?conf=$RIG_DIR/ceph/ceph.conf&timeout=10"
  head -c 32 /dev/urandom | base64 >"$RIG_DIR/secret"
  chmod 600 "$RIG_DIR/secret"
  # Every program gets --config with its own section, so /etc/tapmap is never read.
  cat >"$RIG_DIR/ms/tapmap.conf" <<EOF
[mapserver]
pool = $RIG_POOL_LOCATION
meta = $RIG_DIR/ms/meta
secret-file = $RIG_DIR/secret
tls-dir = $RIG_DIR/ms/tls
credentials = $RIG_DIR/ms/credentials
log-level = $RIG_LOG_LEVEL
EOF
  # Mutual TLS as deployed (mapserver/doc/trust.md): a cluster CA, the server's
  # certificate, and per host two credentials: the daemon's (role host) and the
  # operator CLI's (role admin: the rig's hosts create and delete volumes).
  local ca="$RIG_DIR/ca"
  { "$RIG_BIN/mapserver" credential init-ca --config /dev/null --ca "$ca" --cluster-name "$RIG_ID" &&
    "$RIG_BIN/mapserver" credential issue-server --config /dev/null --ca "$ca" --out "$RIG_DIR/ms/tls"; } \
    >"$RIG_DIR/ca.log" 2>&1 || { cat "$RIG_DIR/ca.log" >&2; return 1; }

  _rig_netns_add "$(rig_ns sw)" || return 1
  ip -n "$(rig_ns sw)" link add br0 type bridge || return 1
  ip -n "$(rig_ns sw)" link set br0 up
  ip -n "$(rig_ns sw)" link set lo up
  _rig_node_add ms "$RIG_NET.1" p-ms || return 1
  if [ "$RIG_POOL_KIND" = rados ]; then
    _rig_node_add ms2 "$RIG_NET.3" p-ms2 || return 1
    sed "s|^meta = .*|meta = $RIG_DIR/ms2/meta|" "$RIG_DIR/ms/tapmap.conf" >"$RIG_DIR/ms2/tapmap.conf"
    _rig_node_add ceph "$RIG_NET.2" p-ceph || return 1
    ip netns exec "$(rig_ns ceph)" env CEPH_ADDR="$RIG_NET.2" MEMSTORE_BYTES="${RIG_MEMSTORE_BYTES:-$((2 << 30))}" \
      "$RIG_REPO/tests/support/ceph_cluster.sh" start "$RIG_DIR/ceph" "$RIG_CEPH_PORT" >"$RIG_DIR/ceph-start.log" 2>&1 &&
      ip netns exec "$(rig_ns ceph)" "$RIG_REPO/tests/support/ceph_cluster.sh" pool "$RIG_DIR/ceph" tapmap \
        >>"$RIG_DIR/ceph-start.log" 2>&1 || { cat "$RIG_DIR/ceph-start.log" >&2; return 1; }
  fi
  local n
  for n in $(seq 1 "$RIG_HOSTS"); do
    _rig_node_add "$n" "$(rig_host_ip "$n")" "p-h$n" || return 1
    mkdir -p "$(rig_hdir "$n")"
    { "$RIG_BIN/mapserver" credential issue --config /dev/null --ca "$ca" --credentials "$RIG_DIR/ms/credentials" \
        --host "h$n" --role host --out "$(rig_hdir "$n")/tls" &&
      "$RIG_BIN/mapserver" credential issue --config /dev/null --ca "$ca" --credentials "$RIG_DIR/ms/credentials" \
        --host "h$n" --role admin --out "$(rig_hdir "$n")/admin-tls"; } >>"$RIG_DIR/ca.log" 2>&1 ||
      { cat "$RIG_DIR/ca.log" >&2; return 1; }
    cat >"$(rig_hdir "$n")/tapmap.conf" <<EOF
# host h$n of the cluster rig: the daemon's and the CLI's settings
[tapdisk-map]
server = $RIG_HOST_SERVERS
pool = $RIG_POOL_LOCATION
tls-dir = $(rig_hdir "$n")/tls
host-name = h$n
cache-size = $RIG_CACHE_SIZE
control = $(rig_hdir "$n")/ctl.sock
nbd = unix:$(rig_hdir "$n")/nbd.sock
xen = off
log-level = $RIG_LOG_LEVEL
[tapmap]
server = $RIG_HOST_SERVERS
tls-dir = $(rig_hdir "$n")/admin-tls
host-name = h$n
control = $(rig_hdir "$n")/ctl.sock
timeout = ${RIG_CLI_TIMEOUT:-20}
EOF
  done
  ip netns exec "$(rig_ns ms)" "$RIG_BIN/mapserver" format --config "$RIG_DIR/ms/tapmap.conf" --size "$RIG_POOL_SIZE" \
    --block-size "$RIG_BLOCK_SIZE" >"$RIG_DIR/ms/format.log" 2>&1 ||
    { cat "$RIG_DIR/ms/format.log" >&2; return 1; }
  rig_env >"$RIG_DIR/rig.env"
}

_rig_netns_add() {
  ip netns add "$1" || return 1
  RIG_NAMESPACES+=("$1")
}

# _rig_node_add NODE ADDRESS SWITCH_PORT: a namespace with eth0 on the switch.
_rig_node_add() {
  local ns sw
  ns=$(rig_ns "$1") sw=$(rig_ns sw)
  _rig_netns_add "$ns" || return 1
  ip link add "$3" netns "$sw" type veth peer name eth0 netns "$ns" || return 1
  ip -n "$sw" link set "$3" master br0 up
  ip -n "$ns" link set lo up
  ip -n "$ns" addr add "$2/24" dev eth0
  ip -n "$ns" link set eth0 up
  # Short TCP timeouts, per namespace, so a cut link is noticed by whichever end sends
  # next within seconds (the default retries take ~15 minutes; see rig_cut).
  ip netns exec "$ns" sysctl -qw net.ipv4.tcp_retries2="${RIG_TCP_RETRIES2:-3}" net.ipv4.tcp_syn_retries=1
}

# rig_teardown: stops everything the rig started and removes namespaces and RIG_DIR.
# Idempotent; installed as the EXIT/INT/TERM trap by rig_init.
rig_teardown() {
  [ -n "${RIG_DIR:-}" ] || return 0
  local ns pid
  # Every process the rig or a test started lives in one of the rig's namespaces.
  for ns in "${RIG_NAMESPACES[@]}"; do
    for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -TERM "$pid" 2>/dev/null; done
  done
  local deadline=$((SECONDS + 5)) left
  while :; do
    left=0
    for ns in "${RIG_NAMESPACES[@]}"; do [ -n "$(ip netns pids "$ns" 2>/dev/null)" ] && left=1; done
    [ "$left" = 0 ] || [ "$SECONDS" -ge "$deadline" ] && break
    sleep 0.05
  done
  for ns in "${RIG_NAMESPACES[@]}"; do
    for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null; done
  done
  for pid in ${RIG_MS_PID:-} ${RIG_MS2_PID:-} "${RIG_HOST_PID[@]}"; do wait "$pid" 2>/dev/null; done
  for ns in "${RIG_NAMESPACES[@]}"; do ip netns del "$ns" 2>/dev/null; done
  RIG_NAMESPACES=()
  if [ -n "${RIG_KEEP:-}" ]; then
    rig_log "RIG_KEEP set: logs kept in $RIG_DIR (pool removed)"
    rm -f "$RIG_DIR/pool"
  else
    rm -rf "$RIG_DIR"
  fi
  RIG_DIR=
}

# rig_env: the rig's paths as shell assignments (also written to $RIG_DIR/rig.env), for
# drivers written in other languages.
rig_env() {
  local n
  echo "RIG_ID=$RIG_ID"
  echo "RIG_DIR=$RIG_DIR"
  echo "RIG_BIN=$RIG_BIN"
  echo "RIG_HOSTS=$RIG_HOSTS"
  echo "RIG_SERVER=$RIG_SERVER"
  echo "RIG_SECRET=$RIG_DIR/secret"
  echo "RIG_POOL=$RIG_POOL_LOCATION"
  echo "RIG_BLOCK_SIZE=$RIG_BLOCK_SIZE"
  echo "RIG_NS_MS=$(rig_ns ms)"
  for n in $(seq 1 "$RIG_HOSTS"); do
    echo "RIG_NS_H$n=$(rig_ns "$n")"
    echo "RIG_NBD_H$n=$(rig_hdir "$n")/nbd.sock"
    echo "RIG_CTL_H$n=$(rig_hdir "$n")/ctl.sock"
    echo "RIG_CONF_H$n=$(rig_hdir "$n")/tapmap.conf"
  done
}

# ---------------------------------------------------------------------------------------
# Mapserver

rig_exec_ms() { ip netns exec "$(rig_ns ms)" "$@"; }

rig_start_mapserver() {
  # (ip netns exec execs the program: $! is the daemon's own pid)
  ip netns exec "$(rig_ns ms)" "$RIG_BIN/mapserver" serve --config "$RIG_DIR/ms/tapmap.conf" --listen "$RIG_SERVER" \
    ${RIG_RECALL_TIMEOUT:+--recall-timeout "$RIG_RECALL_TIMEOUT"} $([ -z "${RIG_OLD_MAPSERVER:-}" ] && echo --lease-seconds "$RIG_LEASE_SECONDS") \
    $([ "$RIG_POOL_KIND" = rados ] && echo --lock-seconds "${RIG_MS_LOCK_SECONDS:-3}") \
    >>"$RIG_DIR/ms/mapserver.log" 2>&1 &
  RIG_MS_PID=$!
  echo "$RIG_MS_PID" >"$RIG_DIR/ms/pid"
  rig_wait_for "$RIG_WAIT_S" "mapserver to listen on $RIG_SERVER" _rig_ms_listening ||
    { tail -5 "$RIG_DIR/ms/mapserver.log" >&2; return 1; }
}
_rig_ms_listening() {
  kill -0 "$RIG_MS_PID" 2>/dev/null || return 1
  rig_exec_ms ss -Hltn "sport = :$RIG_PORT" | grep -q LISTEN
}

# RADOS pools only: the second mapserver, in namespace ms2. rig_start_standby starts it
# with --standby (it follows the metadata journal and takes over when the active's lock
# expires; it listens only once active); rig_start_mapserver_at N starts mapserver N
# (1: ms, 2: ms2) the same way (a killed active comes back as the standby).
# RIG_MS_LOCK_SECONDS: the active lock's duration (default 3).
rig_start_mapserver_at() {  # NODE(1|2) [--standby]
  local node=$1 ns dir listen pid
  if [ "$node" = 1 ]; then ns=ms dir=$RIG_DIR/ms listen=$RIG_SERVER; else ns=ms2 dir=$RIG_DIR/ms2 listen=$RIG_SERVER2; fi
  [ "${2:-}" = --standby ] && echo "=== rig: standby start" >>"$dir/mapserver.log"
  ip netns exec "$(rig_ns "$ns")" "$RIG_BIN/mapserver" serve --config "$dir/tapmap.conf" --listen "$listen" \
    ${RIG_RECALL_TIMEOUT:+--recall-timeout "$RIG_RECALL_TIMEOUT"} --lease-seconds "$RIG_LEASE_SECONDS" \
    --lock-seconds "${RIG_MS_LOCK_SECONDS:-3}" ${2:-} >>"$dir/mapserver.log" 2>&1 &
  pid=$!
  echo "$pid" >"$dir/pid"
  if [ "$node" = 1 ]; then RIG_MS_PID=$pid; else RIG_MS2_PID=$pid; fi
}
rig_start_standby() { rig_start_mapserver_at 2 --standby; }
# rig_ms_listening NODE: mapserver NODE (1|2) accepts connections.
rig_ms_listening() {
  local ns=ms; [ "$1" = 2 ] && ns=ms2
  ip netns exec "$(rig_ns "$ns")" ss -Hltn "sport = :$RIG_PORT" | grep -q LISTEN
}
rig_kill_mapserver_at() {  # NODE: kill -9 mapserver NODE
  if [ "$1" = 1 ]; then _rig_stop_pid "$RIG_MS_PID" KILL mapserver; RIG_MS_PID=
  else _rig_stop_pid "$RIG_MS2_PID" KILL mapserver2; RIG_MS2_PID=; fi
}

# rig_stop_mapserver: SIGTERM (leases end, connections close) and wait for the exit.
rig_stop_mapserver() { _rig_stop_pid "$RIG_MS_PID" TERM mapserver; RIG_MS_PID=; }
# rig_kill_mapserver: kill -9, as a crash.
rig_kill_mapserver() { _rig_stop_pid "$RIG_MS_PID" KILL mapserver; RIG_MS_PID=; }
rig_restart_mapserver() { [ -z "$RIG_MS_PID" ] || rig_stop_mapserver; rig_start_mapserver; }

_rig_stop_pid() {  # PID SIGNAL WHAT: returns the exit status (0 for a clean SIGTERM exit)
  local pid=$1 sig=$2 rc
  [ -n "$pid" ] || { rig_log "$3 is not running"; return 1; }
  kill -"$sig" "$pid" 2>/dev/null
  { wait "$pid"; rc=$?; } 2>/dev/null
  [ "$sig" = KILL ] && return 0
  [ "$rc" = 0 ] || rig_log "$3 (pid $pid) exited with status $rc after SIG$sig"
  return "$rc"
}

# ---------------------------------------------------------------------------------------
# Hosts

# rig_exec N CMD...: runs CMD in host N's network namespace.
rig_exec() { local n=$1; shift; ip netns exec "$(rig_ns "$n")" "$@"; }

# rig_start_host N: starts host N's tapdisk-map and waits for its control and NBD sockets.
rig_start_host() {
  local n=$1 d
  d=$(rig_hdir "$n")
  rm -f "$d/ctl.sock" "$d/nbd.sock"
  ip netns exec "$(rig_ns "$n")" "$RIG_BIN/tapdisk-map" --config "$d/tapmap.conf" >>"$d/tapdisk-map.log" 2>&1 &
  RIG_HOST_PID[$n]=$!
  echo "$!" >"$d/pid"
  rig_wait_socket "$d/ctl.sock" && rig_wait_socket "$d/nbd.sock" ||
    { rig_log "host h$n did not start:"; tail -5 "$d/tapdisk-map.log" >&2; return 1; }
}
rig_stop_host() { _rig_stop_pid "${RIG_HOST_PID[$1]:-}" TERM "host h$1"; local rc=$?; unset "RIG_HOST_PID[$1]"; return $rc; }
rig_kill_host() { _rig_stop_pid "${RIG_HOST_PID[$1]:-}" KILL "host h$1"; unset "RIG_HOST_PID[$1]"; }
rig_restart_host() { [ -z "${RIG_HOST_PID[$1]:-}" ] || rig_stop_host "$1"; rig_start_host "$1"; }
rig_host_running() { [ -n "${RIG_HOST_PID[$1]:-}" ] && kill -0 "${RIG_HOST_PID[$1]}" 2>/dev/null; }

# rig_cut N: partitions host N from the network: its switch port goes down, so every
# packet to or from N is dropped without a RST (N's eth0 loses carrier). How TCP notices:
#   - the rig's namespaces run with net.ipv4.tcp_retries2=3 (RIG_TCP_RETRIES2) and
#     tcp_syn_retries=1, so a connection on which either end sends is declared dead after
#     ~3-6 s, and N's reconnection attempts fail after ~3 s each;
#   - the mapserver sends to N when it recalls from N (a snapshot, clone, discard or
#     resize of a volume N has open): N cannot answer, and after --recall-timeout
#     (RIG_RECALL_TIMEOUT) the server revokes N's lease;
#   - where the kernel has CONFIG_INET_DIAG_DESTROY, the connections between N and the
#     mapserver are also destroyed at both ends at once (ss -K); not on every kernel.
# An idle connection at both ends is not noticed (neither program uses TCP keepalive).
rig_cut() {
  local n=$1 ip
  ip=$(rig_host_ip "$n")
  ip -n "$(rig_ns sw)" link set "p-h$n" down
  rig_exec "$n" ss -K dst "$RIG_NET.1" >/dev/null 2>&1
  rig_exec_ms ss -K dst "$ip" >/dev/null 2>&1
  return 0
}
# rig_heal N: brings host N's switch port back up and waits until its eth0 has carrier.
rig_heal() {
  local n=$1
  ip -n "$(rig_ns sw)" link set "p-h$n" up
  rig_wait_for "$RIG_WAIT_S" "h$n link up" _rig_carrier "$n"
}
_rig_carrier() { [ "$(ip netns exec "$(rig_ns "$1")" cat /sys/class/net/eth0/carrier 2>/dev/null)" = 1 ]; }

# rig_tapmap N ARGS...: the tapmap CLI in host N's namespace, against the mapserver over
# TCP and host N's control socket (its config file's [tapmap] section).
rig_tapmap() { local n=$1; shift; rig_exec "$n" "$RIG_BIN/tapmap" --config "$(rig_hdir "$n")/tapmap.conf" "$@"; }

# rig_nbd_url N VOL: the NBD URL of VOL on host N (its unix socket).
rig_nbd_url() { echo "nbd+unix:///$2?socket=$(rig_hdir "$1")/nbd.sock"; }

# rig_qemu_io N VOL QEMU-IO-ARGS...: qemu-io on host N against VOL over NBD (raw format).
rig_qemu_io() { local n=$1 vol=$2; shift 2; rig_exec "$n" qemu-io -f raw "$@" "$(rig_nbd_url "$n" "$vol")"; }

# rig_fio N VOL FIO-ARGS...: fio with its nbd engine on host N against VOL.
# Runs in RIG_DIR/clients (fio leaves state files in its working directory).
rig_fio() {
  local n=$1 vol=$2; shift 2
  (cd "$RIG_DIR/clients" && rig_exec "$n" fio --ioengine=nbd --uri="$(rig_nbd_url "$n" "$vol")" "$@")
}

# ---------------------------------------------------------------------------------------
# Volume state as the mapserver sees it

# rig_volume_field N VOL FIELD: one field of `tapmap volume info --json` (writer, openers,
# size_bytes, ...), asked from host N's namespace.
rig_volume_field() {
  rig_tapmap "$1" --json volume info "$2" | python3 -c \
    'import json,sys; d=json.load(sys.stdin); d=d.get("volume", d); print(d[sys.argv[1]])' "$3"
}
# rig_wait_closed VOL [N]: waits until no host has VOL open (openers 0): an NBD client's
# disconnect closes the volume on its host asynchronously.
rig_wait_closed() { rig_wait_for "$RIG_WAIT_S" "$1 to be closed on every host" _rig_openers_are "${2:-1}" "$1" 0; }
_rig_openers_are() { [ "$(rig_volume_field "$1" "$2" openers)" = "$3" ]; }
# rig_wait_writer VOL N: waits until host N holds VOL's rw lease.
rig_wait_writer() { rig_wait_for "$RIG_WAIT_S" "h$2 to hold $1 rw" _rig_writer_is "$2" "$1"; }
_rig_writer_is() { [ "$(rig_volume_field "$1" "$2" writer)" = "h$1" ]; }

# ---------------------------------------------------------------------------------------
# Long-lived NBD clients: hold a volume open on a host

# rig_hold N VOL [-r]: starts a qemu-io on host N that connects to VOL and idles, so the
# host keeps VOL open (and, without -r on a writable volume, its rw lease) while other
# clients come and go. Sets RIG_HOLD_PID; waits until the mapserver counts the opener.
rig_hold() {
  local n=$1 vol=$2 ro=${3:-}
  local log
  log="$RIG_DIR/clients/hold-h$n-$vol-$RANDOM.log"
  ip netns exec "$(rig_ns "$n")" qemu-io -f raw $ro -c 'sleep 3600000' "$(rig_nbd_url "$n" "$vol")" >"$log" 2>&1 &
  RIG_HOLD_PID=$!
  rig_wait_for "$RIG_WAIT_S" "h$n to open $vol" _rig_has_opener "$n" "$vol" "$RIG_HOLD_PID" ||
    { cat "$log" >&2; kill "$RIG_HOLD_PID" 2>/dev/null; wait "$RIG_HOLD_PID" 2>/dev/null; return 1; }
}
_rig_has_opener() {
  kill -0 "$3" 2>/dev/null || return 1
  rig_host_has_open "$1" "$2"
}
# rig_host_has_open N VOL: true if host N's NBD export has VOL open (tapmap nbd list).
rig_host_has_open() {
  rig_tapmap "$1" --json nbd list | python3 -c \
    'import json,sys; d=json.load(sys.stdin); sys.exit(0 if any(sys.argv[1] in e.get("volumes_open", []) for e in d["exports"]) else 1)' "$2"
}
# rig_release PID: ends a holder started by rig_hold (its NBD connection closes).
rig_release() { kill -TERM "$1" 2>/dev/null; wait "$1" 2>/dev/null; return 0; }
