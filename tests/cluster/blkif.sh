# shellcheck shell=bash
# tests/cluster/blkif.sh — blkif front ends on the cluster rig, as a sourced bash library
# (after rig.sh and rig_init). A "blkif host" is cluster_sim_blkif_host run in host N's
# network namespace: its own engine (own mapserver login "hN-blkif", own data cache, own
# leases) serving one volume at a time to a simulated xen-blkfront guest over the real
# ring ABI (Xen simulator + the real RingWorker). It is a second host identity on that
# namespace, beside host N's tapdisk-map ("hN"), and talks to the same mapserver over
# TCP and to the same pool file.
#
#   rig_blkif_host 1                         # start h1-blkif
#   blkif_cmd 1 "open vm rw"                 # -> ok 4194304
#   blkif_cmd 1 "write 0 65536 0xa1"         # -> ok
#   blkif_cmd 1 "read 0 65536"               # -> pattern 0xa1   (or: mixed <fnv64>)
#   blkif_cmd 1 flush; blkif_cmd 1 close     # close returns after the server close
#   rig_blkif_stop 1                         # quit (closes, engine shutdown), waits
#
# Commands and replies: tests/cluster/sim_blkif_host.cc. Files, in RIG_DIR/hN/blkif/:
# `in`, `out` (the fifos), `sim_blkif_host.log` (its stderr), `pid`.

RIG_BLKIF_LOG_LEVEL=${RIG_BLKIF_LOG_LEVEL:-warning}
declare -gA RIG_BLKIF_PID=() RIG_BLKIF_IN=() RIG_BLKIF_OUT=()
BLKIF_REPLY=

rig_blkif_dir() { echo "$(rig_hdir "$1")/blkif"; }
rig_blkif_name() { echo "h$1-blkif"; }

# rig_blkif_host N: starts host N's blkif host (cluster_sim_blkif_host in N's namespace)
# with its stdin and stdout on fifos held open by this shell. Returns when it answers.
rig_blkif_host() {
  local n=$1 d pid infd outfd
  [ -x "$RIG_BIN/cluster_sim_blkif_host" ] || { rig_log "$RIG_BIN/cluster_sim_blkif_host not built"; return 1; }
  rig_blkif_running "$n" && { rig_log "$(rig_blkif_name "$n") is already running"; return 1; }
  d=$(rig_blkif_dir "$n")
  mkdir -p "$d"
  rm -f "$d/in" "$d/out"
  mkfifo "$d/in" "$d/out" || return 1
  # Both ends opened read-write: opening never blocks, whichever side comes first.
  exec {infd}<>"$d/in" {outfd}<>"$d/out"
  # A host of its own, with its own credential (role host), as tapdisk-map's (rig.sh).
  if [ ! -f "$d/tls/host.crt" ]; then
    "$RIG_BIN/mapserver" credential issue --config /dev/null --ca "$RIG_DIR/ca" \
      --credentials "$RIG_DIR/ms/credentials" --host "$(rig_blkif_name "$n")" --role host \
      --out "$d/tls" >>"$d/sim_blkif_host.log" 2>&1 || { rig_log "cannot issue a credential"; return 1; }
  fi
  ip netns exec "$(rig_ns "$n")" "$RIG_BIN/cluster_sim_blkif_host" --server "$RIG_SERVER" \
    --pool "$RIG_POOL_LOCATION" --tls-dir "$d/tls" --host-name "$(rig_blkif_name "$n")" \
    --cache-size "$RIG_CACHE_SIZE" --log-level "$RIG_BLKIF_LOG_LEVEL" \
    <"$d/in" >"$d/out" 2>>"$d/sim_blkif_host.log" &
  pid=$!
  echo "$pid" >"$d/pid"
  RIG_BLKIF_PID[$n]=$pid RIG_BLKIF_IN[$n]=$infd RIG_BLKIF_OUT[$n]=$outfd
  # An unknown command is answered at once: proves the loop reads and answers.
  blkif_cmd "$n" hello >/dev/null 2>&1
  if [[ $BLKIF_REPLY != "error: "*"unknown command"* ]]; then
    rig_log "$(rig_blkif_name "$n") did not start: ${BLKIF_REPLY:-no reply}"
    tail -5 "$d/sim_blkif_host.log" >&2
    rig_blkif_kill "$n"
    return 1
  fi
}

# rig_blkif_running N: host N's blkif host is alive (a killed, not yet reaped one is not).
rig_blkif_running() { [ -n "${RIG_BLKIF_PID[$1]:-}" ] && _rig_blkif_alive "${RIG_BLKIF_PID[$1]}"; }
_rig_blkif_alive() {  # PID: exists and is not a zombie (kill -0 succeeds on zombies)
  local _p _c state
  read -r _p _c state _ 2>/dev/null <"/proc/$1/stat" && [ "$state" != Z ]
}
# rig_blkif_ensure N: starts host N's blkif host unless it is running (reaps a dead one).
rig_blkif_ensure() {
  rig_blkif_running "$1" && return 0
  [ -z "${RIG_BLKIF_PID[$1]:-}" ] || _rig_blkif_reap "$1" KILL
  rig_blkif_host "$1"
}

# blkif_cmd N LINE: sends one command line to host N's blkif host, prints its reply
# (also in BLKIF_REPLY). Fails if the reply is "error: …", the program is gone, or no
# reply comes within 3 × RIG_WAIT_S (an open may wait for the mapserver).
blkif_cmd() {
  local n=$1 line=$2 reply
  BLKIF_REPLY=
  rig_blkif_running "$n" || { BLKIF_REPLY="error: $(rig_blkif_name "$n") is not running"; echo "$BLKIF_REPLY"; return 1; }
  printf '%s\n' "$line" >&"${RIG_BLKIF_IN[$n]}" || { BLKIF_REPLY="error: cannot write to $(rig_blkif_name "$n")"; echo "$BLKIF_REPLY"; return 1; }
  local deadline=$((SECONDS + 3 * RIG_WAIT_S))
  # Poll in slices so a crash is noticed without waiting for the whole bound.
  until IFS= read -r -t 1 -u "${RIG_BLKIF_OUT[$n]}" reply; do
    if ! rig_blkif_running "$n"; then
      # it may have answered and exited (quit): one more look
      IFS= read -r -t 0.2 -u "${RIG_BLKIF_OUT[$n]}" reply && break
      BLKIF_REPLY="error: $(rig_blkif_name "$n") exited ($(tail -1 "$(rig_blkif_dir "$n")/sim_blkif_host.log" 2>/dev/null))"
      echo "$BLKIF_REPLY"; return 1
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      BLKIF_REPLY="error: no reply from $(rig_blkif_name "$n") to '$line' within $((3 * RIG_WAIT_S)) s"
      echo "$BLKIF_REPLY"; return 1
    fi
  done
  BLKIF_REPLY=$reply
  echo "$reply"
  [[ $reply != error:* ]]
}

# rig_blkif_stop N: quit (closes the open volume, engine shutdown) and waits for the exit.
rig_blkif_stop() {
  local n=$1 rc=0
  [ -n "${RIG_BLKIF_PID[$n]:-}" ] || return 0
  if rig_blkif_running "$n"; then blkif_cmd "$n" quit >/dev/null || rc=1; fi
  _rig_blkif_reap "$n" TERM || rc=1
  return $rc
}
# rig_blkif_kill N: kill -9, as a crash.
rig_blkif_kill() { _rig_blkif_reap "$1" KILL; }
# rig_blkif_stop_all: rig_blkif_stop of every blkif host started.
rig_blkif_stop_all() {
  local n rc=0
  for n in "${!RIG_BLKIF_PID[@]}"; do rig_blkif_stop "$n" || rc=1; done
  return $rc
}

_rig_blkif_reap() {  # N SIGNAL: signals if still running, waits, closes the fifos
  local n=$1 pid=${RIG_BLKIF_PID[$1]:-} rc=0 deadline=$((SECONDS + 10))
  if [ -n "$pid" ]; then
    if [ "$2" = KILL ]; then kill -KILL "$pid" 2>/dev/null; fi
    while _rig_blkif_alive "$pid" && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.05; done
    _rig_blkif_alive "$pid" && { kill -KILL "$pid" 2>/dev/null; rc=1; }
    { wait "$pid"; local st=$?; } 2>/dev/null
    [ "$2" = KILL ] || [ "$st" = 0 ] || rc=1
  fi
  local fd
  for fd in ${RIG_BLKIF_IN[$n]:-} ${RIG_BLKIF_OUT[$n]:-}; do exec {fd}>&-; done
  unset "RIG_BLKIF_PID[$n]" "RIG_BLKIF_IN[$n]" "RIG_BLKIF_OUT[$n]"
  return $rc
}
