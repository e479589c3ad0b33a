#!/usr/bin/env bash
# bench/hostile/soak.sh — an hour-equivalent of hostile clients against a real mapserver
# (TCP, mutual TLS) and a real tapdisk-map (NBD on unix + TCP, Prometheus metrics on
# TCP), all on loopback, while a good client does real I/O (issue 14, "Must show").
#
#   bench/hostile/soak.sh BUILD_DIR [--minutes M] [--seed S] [--probe KIND]
#
# Phases of one run (M minutes in all, default 4, at most 5 recommended on a shared box):
#   idle       5 s   no client: the daemons' idle RSS and fds
#   baseline  30 s   good client only: its rate, the daemons' RSS and fds serving it
#   hostile   M*60 - 80 s (160 s by default)   good client + every hostile kind at once
#   after     45 s   good client only again; the daemons' fds must fall back (longer
#                    than every server-side deadline: NBD handshake 30 s, login 10 s,
#                    metrics 5 s)
#
# "Hour-equivalent", as counts (hostile_clients.py, its constants and kinds_for(), is
# authoritative): the attacker opens one new connection per second per hostile kind for
# an hour = 3,600 connections of each of 20 kinds, compressed into the hostile phase
# (160 s by default: 22.5 per second per kind, ~50,000 connections in all); the
# nbd-flood kind opens one connection every 10 s for an hour (360), each sending up to
# 100,000 failing requests (zero-length/unaligned/past-the-end READs, zero-length TRIMs,
# unknown commands) and never reading a reply. Kinds that hold connections (silent,
# half-open, idle, slow) keep at most their stated number open at once and open the
# next when the server closes one, so they reach fewer than 3,600 (the report says how
# many). Sources: NBD and metrics attackers 127.0.0.2-127.0.0.5, each mapserver kind its
# own address (127.0.0.2-127.0.0.8, 7 in all); the good client 127.0.0.1 and the unix
# socket. The kinds, per daemon:
#   mapserver   silent, garbage, Cap'n Proto ~64 MiB frame header (plaintext), half a
#               TLS ClientHello, TLS without client certificate, a valid host credential
#               sending the ~64 MiB frame or garbage before login, 200 at once from one
#               address
#   NBD         silent, garbage before and after NBD_OPT_GO, half-open option, the
#               flood, negotiated-then-idle, 1,000 NBD_OPT_INFO (a third unknown, with
#               newlines), a 1 MiB WRITE cut at 100 KiB then reset
#   metrics     silent, slowloris, garbage, pipelined GETs never read
#
# Ceilings (from runs of 2026-12-05, last on 586b08d; bench/README.md has the figures).
# Each is a FAIL, exit 1, when exceeded:
#   mapserver    VmHWM <= 32 MiB   (idle 13, under attack 18)   fds <= 128 (attack 61)
#   tapdisk-map  VmHWM <= cache size (64 MiB) + 192 MiB = 256 (good client alone 180,
#                under attack 226)                               fds <= 320 (attack 244:
#                the NBD kinds hold <= 228 connections at once by construction; the
#                server's own limit is --nbd-max-connections, see the nbd-slots probe)
#   after phase: each daemon's fds <= its peak with the good client alone + 8
#   good client: no error at all (NBD I/O with data verified, tapmap volume list over
#   TLS, metrics scrapes), and its NBD rate under attack >= 0.5 x baseline (2 shared
#   cores: the hostile clients and the daemons' work for them take CPU from it;
#   measured 0.69-0.82).
#
# --probe KIND runs one known-weak attack alone instead (see bench/README.md):
#   prelogin-lockout  idle pre-login connections from 9 addresses (8 per address fill
#                     the mapserver's 64-in-all pre-login slots): new logins refused
#   nbd-slots         1,100 idle NBD connections after NBD_OPT_GO (TCP): the
#                     connection limit (256) is shared with the unix socket
#   nbd-bigread       32 MiB READs never read back, on 16 connections: a budget per
#                     connection (64 MiB), none per server
# Network: loopback only (127.0.0.0/8); nothing else is touched. Temp dir under
# /var/tmp (the pool is opened O_DIRECT), removed on exit with every process it started
# (HOSTILE_KEEP=1 keeps it: samples.csv, good.jsonl, attack.json, the daemons' logs).
set -euo pipefail

usage() { echo "usage: $0 BUILD_DIR [--minutes M] [--seed S] [--probe KIND]" >&2; exit 2; }
[ $# -ge 1 ] || usage
build=$(cd "$1" 2>/dev/null && pwd) || { echo "soak: no build dir $1" >&2; exit 2; }
shift
minutes=4 seed=1 probe=
while [ $# -gt 0 ]; do
  case "$1" in
    --minutes) minutes=${2:?}; shift 2 ;;
    --seed) seed=${2:?}; shift 2 ;;
    --probe) probe=${2:?}; shift 2 ;;
    *) usage ;;
  esac
done
here=$(cd "$(dirname "$0")" && pwd)
bin=$build/bin
for prog in mapserver tapdisk-map tapmap; do
  [ -x "$bin/$prog" ] || { echo "soak: $bin/$prog not built" >&2; exit 2; }
done
for tool in qemu-img qemu-io python3; do
  command -v "$tool" >/dev/null || { echo "soak: $tool is missing" >&2; exit 2; }
done

idle_s=5 baseline_s=30 after_s=45
hostile_s=$(( minutes * 60 - idle_s - baseline_s - after_s ))
[ "$hostile_s" -ge 30 ] || { echo "soak: --minutes $minutes leaves under 30 s of attack" >&2; exit 2; }
cache_mib=64

# ---------------------------------------------------------------------------------------
# Temp dir, processes, cleanup

work=$(mktemp -d /var/tmp/tapmap-hostile-XXXXXX)
pids=()
cleanup() {
  local pid
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for _ in $(seq 1 50); do
    local alive=0
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [ "$alive" = 0 ] && break
    sleep 0.1
  done
  for pid in "${pids[@]}"; do
    pkill -9 -P "$pid" 2>/dev/null || true   # qemu-img/tapmap children of the good client
    kill -9 "$pid" 2>/dev/null || true
  done
  wait 2>/dev/null || true
  if [ -n "${HOSTILE_KEEP:-}" ]; then echo "soak: kept $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

log() { echo "soak: $*" >&2; }
wait_for() {  # wait_for DESCRIPTION CMD...: polls for 20 s
  local what=$1; shift
  for _ in $(seq 1 200); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
  log "timed out waiting for $what"; return 1
}
free_ports() { python3 -c '
import socket
socks = [socket.socket() for _ in range(3)]
for s in socks: s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))'; }
read -r ms_port nbd_port metrics_port <<<"$(free_ports)"

# The binaries are copied first: other work may relink BUILD_DIR while the soak runs.
# A copy is taken once the files have been still for 3 s, and each must answer --help.
mkdir "$work/bin"
copied=
for _ in $(seq 1 40); do
  before=$(stat -c '%s %Y' "$bin/mapserver" "$bin/tapdisk-map" "$bin/tapmap")
  sleep 3
  [ "$before" = "$(stat -c '%s %Y' "$bin/mapserver" "$bin/tapdisk-map" "$bin/tapmap")" ] || continue
  cp "$bin/mapserver" "$bin/tapdisk-map" "$bin/tapmap" "$work/bin/"
  ok=1
  for prog in mapserver tapdisk-map tapmap; do
    cmp -s "$bin/$prog" "$work/bin/$prog" && "$work/bin/$prog" --help >/dev/null 2>&1 || ok=
  done
  [ -n "$ok" ] && { copied=1; break; }
done
[ -n "$copied" ] || { log "$bin keeps changing (a build running?); try again later"; exit 1; }
log "binaries of $build/bin, built $(date -u -r "$bin/tapdisk-map" '+%F %T') UTC (tapdisk-map)"
bin=$work/bin

# ---------------------------------------------------------------------------------------
# Credentials, config, pool

ms() { "$bin/mapserver" "$@"; }
ca=$work/ca
{
  ms credential init-ca --config /dev/null --ca "$ca" --cluster-name hostile-soak
  ms credential issue-server --config /dev/null --ca "$ca" --out "$work/ms-tls"
  # The daemon (role host), the operator CLI (role admin), and a compromised host whose
  # credential the attacker holds (role host, scope matching no volume).
  ms credential issue --config /dev/null --ca "$ca" --credentials "$work/credentials" \
    --host soak-host --role host --out "$work/host-tls"
  ms credential issue --config /dev/null --ca "$ca" --credentials "$work/credentials" \
    --host soak-host --role admin --out "$work/admin-tls"
  ms credential issue --config /dev/null --ca "$ca" --credentials "$work/credentials" \
    --host rogue-host --role host --scope 'no-such-volume-*' --out "$work/rogue-tls"
} >"$work/ca.log" 2>&1 || { cat "$work/ca.log" >&2; exit 1; }
head -c 32 /dev/urandom | base64 >"$work/secret"
chmod 600 "$work/secret"

nbd_listeners="unix:$work/nbd.sock"
nbd_flags=()
if "$bin/tapdisk-map" --help 2>&1 | grep -q -- '--nbd-insecure-plaintext-tcp'; then
  nbd_listeners+=",tcp:127.0.0.1:$nbd_port"
  nbd_flags+=(--nbd-insecure-plaintext-tcp)
else
  nbd_port=   # this build has no TCP NBD switch: NBD attacks go to the unix socket
fi

cat >"$work/tapmap.conf" <<CONF
# bench/hostile/soak.sh: every program gets its own section; /etc/tapmap is never read
[mapserver]
pool = $work/pool
meta = $work/meta
secret-file = $work/secret
tls-dir = $work/ms-tls
credentials = $work/credentials
listen = tcp:127.0.0.1:$ms_port
log-level = info
[tapdisk-map]
server = tcp:127.0.0.1:$ms_port
pool = $work/pool
tls-dir = $work/host-tls
host-name = soak-host
secret-file = $work/secret
cache-size = ${cache_mib}M
control = $work/ctl.sock
nbd = $nbd_listeners
metrics = tcp:127.0.0.1:$metrics_port
xen = off
log-level = info
[tapmap]
server = tcp:127.0.0.1:$ms_port
tls-dir = $work/admin-tls
host-name = soak-host
control = $work/ctl.sock
timeout = 20
CONF
conf=$work/tapmap.conf

ms format --config "$conf" --size 1G --block-size 64K >"$work/format.log" 2>&1 ||
  { cat "$work/format.log" >&2; exit 1; }

# ---------------------------------------------------------------------------------------
# Daemons

port_open() { python3 -c 'import socket,sys; socket.create_connection(("127.0.0.1", int(sys.argv[1])), 1).close()' "$1"; }
"$bin/mapserver" serve --config "$conf" >"$work/mapserver.log" 2>&1 &
ms_pid=$!
pids+=("$ms_pid")
wait_for "mapserver on tcp:127.0.0.1:$ms_port" port_open "$ms_port" || { tail "$work/mapserver.log" >&2; exit 1; }

"$bin/tapdisk-map" --config "$conf" "${nbd_flags[@]}" >"$work/tapdisk-map.log" 2>&1 &
td_pid=$!
pids+=("$td_pid")
wait_for "tapdisk-map's NBD socket" test -S "$work/nbd.sock" || { tail "$work/tapdisk-map.log" >&2; exit 1; }
wait_for "tapdisk-map's metrics port" port_open "$metrics_port" || { tail "$work/tapdisk-map.log" >&2; exit 1; }

tapmap() { "$bin/tapmap" --config "$conf" "$@"; }
for vol in good:256M target1:64M target2:64M; do
  tapmap volume create "${vol%%:*}" "${vol#*:}" >>"$work/setup.log" 2>&1 ||
    { cat "$work/setup.log" >&2; exit 1; }
done
log "mapserver pid $ms_pid (tcp:127.0.0.1:$ms_port, mutual TLS), tapdisk-map pid $td_pid" \
    "(nbd unix${nbd_port:+ + tcp:127.0.0.1:$nbd_port}, metrics tcp:127.0.0.1:$metrics_port), work $work"

# ---------------------------------------------------------------------------------------
# Sampler, good client, attackers

hc=$here/hostile_clients.py
echo idle >"$work/phase"
python3 "$hc" sample --pid mapserver="$ms_pid" --pid tapdisk-map="$td_pid" \
  --phase-file "$work/phase" --out "$work/samples.csv" &
pids+=("$!")
log "idle: ${idle_s}s, no client"
sleep "$idle_s"
echo baseline >"$work/phase"
python3 "$hc" good --phase-file "$work/phase" --out "$work/good.jsonl" \
  --nbd-url "nbd+unix:///good?socket=$work/nbd.sock" --tapmap "$bin/tapmap" --config "$conf" \
  --metrics "127.0.0.1:$metrics_port" >"$work/good.log" 2>&1 &
good_pid=$!
pids+=("$good_pid")

log "baseline: ${baseline_s}s, good client alone"
sleep "$baseline_s"
echo hostile >"$work/phase"
attack_args=(--mapserver "127.0.0.1:$ms_port" --nbd-unix "$work/nbd.sock" --metrics "127.0.0.1:$metrics_port"
             --exports target1,target2 --rogue-tls "$work/rogue-tls"
             --seconds "$hostile_s" --seed "$seed" --out "$work/attack.json")
[ -n "$nbd_port" ] && attack_args+=(--nbd-tcp "127.0.0.1:$nbd_port")
[ -n "$probe" ] && attack_args+=(--probe "$probe")
log "hostile: ${hostile_s}s${probe:+, probe $probe}"
nice -n 10 python3 "$hc" attack "${attack_args[@]}" >"$work/attack.log" 2>&1 &
attack_pid=$!
pids+=("$attack_pid")
attack_rc=0
wait "$attack_pid" || attack_rc=$?
[ "$attack_rc" = 0 ] || { log "the hostile clients failed (exit $attack_rc)"; tail -20 "$work/attack.log" >&2; exit 1; }
echo after >"$work/phase"
log "after: ${after_s}s, good client alone"
sleep "$after_s"
echo done >"$work/phase"
wait "$good_pid" || true

for d in "$ms_pid" "$td_pid"; do
  [ -e "/proc/$d/fd" ] && grep -q '^VmRSS' "/proc/$d/status" 2>/dev/null ||
    { log "a daemon (pid $d) died during the soak"; tail "$work/mapserver.log" "$work/tapdisk-map.log" >&2; exit 1; }
done
python3 "$hc" report --samples "$work/samples.csv" --good "$work/good.jsonl" --attack "$work/attack.json" \
  --cache-mib "$cache_mib" --log mapserver="$work/mapserver.log" --log tapdisk-map="$work/tapdisk-map.log"
