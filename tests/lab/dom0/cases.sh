# Cases of the tapmap Xen lab, sourced by lab-init in dom0. Every case prints exactly
# one "LABRESULT <case> <PASS|FAIL|RETRIED> <seconds> <detail>" line. A case that fails
# is run once more (the lab is known to glitch in ~5-10% of guest runs); a pass on the
# second try is reported as RETRIED, a second failure is a FAIL.

LAB=/var/lib/tapmap-lab
CONSOLE_DIR=/var/log/xen/console
TAPMAP_CONF=/etc/tapmap/tapmap.conf
mkdir -p "$LAB"

lab_mark() { echo "=== LAB $* (uptime $(cut -d' ' -f1 /proc/uptime))"; }
lab_now() { cut -d' ' -f1 /proc/uptime; }
lab_elapsed() { awk -v a="$1" -v b="$(lab_now)" 'BEGIN{printf "%.1f", b-a}'; }

# lab_guest NAME TYPE TIMEOUT DISKSPEC EXTRA → runs one guest to its end; its
# "LABGUEST" lines are left in $LAB/NAME.out. Returns 0 if the guest printed PASS.
lab_guest() {
  local name=$1 type=$2 timeout=$3 disk=$4 extra=$5 mem=${6:-256}
  local log=$CONSOLE_DIR/guest-$name.log cfg=$LAB/$name.cfg
  cat > "$cfg" <<CFG
name="$name"
type="$type"
kernel="/boot/vmlinuz"
ramdisk="/boot/domU-initrd.gz"
extra="console=hvc0 quiet $extra"
memory=$mem
vcpus=1
disk=[$disk]
on_poweroff="destroy"
on_crash="destroy"
on_reboot="destroy"
CFG
  local off=$(( $(stat -c %s "$log" 2>/dev/null || echo 0) + 1 ))
  xl create "$cfg" > "$LAB/$name.xl" 2>&1 || { cat "$LAB/$name.xl"; }
  local i stuck=0 st
  for i in $(seq 1 "$timeout"); do
    st=$(xl list "$name" 2>/dev/null | awk 'NR==2{print $5}')
    [ -z "$st" ] && break
    case "$st" in *s*|*c*) stuck=$((stuck+1)); [ $stuck -ge 8 ] && xl destroy "$name" ;; *) stuck=0 ;; esac
    sleep 1
  done
  if xl list "$name" >/dev/null 2>&1; then
    echo "lab: guest $name timed out after ${timeout}s -> xl destroy"
    xl destroy "$name" 2>/dev/null
  fi
  tail -c +"$off" "$log" 2>/dev/null | tr -d '\r' | grep -a '^LABGUEST' > "$LAB/$name.out"
  sed "s/^/  [$name] /" "$LAB/$name.out"
  grep -q '^LABGUEST result PASS' "$LAB/$name.out"
}
lab_guest_value() { sed -n "s/^LABGUEST $2 //p" "$LAB/$1.out" | tail -n 1; }

# lab_case NAME FUNCTION → runs FUNCTION (returns 0 on pass, sets LAB_DETAIL), retries once.
lab_case() {
  local name=$1 fn=$2 t0 verdict
  t0=$(lab_now); LAB_DETAIL=""
  lab_mark "CASE $name"
  if "$fn"; then verdict=PASS
  else
    lab_mark "CASE $name failed ($LAB_DETAIL), retrying once"
    LAB_DETAIL=""
    if "$fn"; then verdict=RETRIED; else verdict=FAIL; fi
  fi
  echo "LABRESULT $name $verdict $(lab_elapsed "$t0") ${LAB_DETAIL:--}"
}

# ---- kernel blkback baseline ------------------------------------------------------
lab_known_image() {   # $1 path, $2 MiB of random content (its md5 is taken in dom0)
  [ -f "$1" ] || dd if=/dev/urandom of="$1" bs=1M count="$2" 2>/dev/null
}
lab_md5_prefix() { head -c $(( $2 * 1048576 )) "$1" | md5sum | cut -d' ' -f1; }

case_blkback_read_write() {
  cp "$LAB/known.img" "$LAB/blkback.img"
  local dev; dev=$(losetup -f --show "$LAB/blkback.img")
  local want; want=$(lab_md5_prefix "$LAB/known.img" 16)
  local ok=1
  lab_guest bb-pv pv 90 "'phy:$dev,xvda,w'" "lab_step=read-write lab_md5_mib=16 lab_seed=bb" || ok=0
  [ "$(lab_guest_value bb-pv md5)" = "$want" ] || { ok=0; LAB_DETAIL="md5 mismatch"; }
  LAB_DETAIL="${LAB_DETAIL:-read $(lab_guest_value bb-pv read_seconds)s boot $(lab_guest_value bb-pv boot_uptime)s}"
  losetup -d "$dev"
  [ $ok = 1 ]
}

lab_run_baseline() {
  modprobe xen-blkback
  lab_case blkback-pv-read-write case_blkback_read_write
  rmmod xen-blkback 2>/dev/null
}

# ---- tapmap ------------------------------------------------------------------------
lab_start_tapmap() {
  # Start the daemons with the ExecStart lines of their installed units, as systemd would.
  local unit cmd
  mkdir -p /run/tapmap /var/lib/tapmap
  for unit in mapserver tapdisk-map; do
    cmd=$(sed -n 's/^ExecStart=//p' "/lib/systemd/system/$unit.service" 2>/dev/null | head -n 1)
    [ -n "$cmd" ] || { echo "lab: no unit file for $unit"; return 1; }
    echo "lab: starting $unit: $cmd"
    setsid $cmd > "$LAB/$unit.log" 2>&1 &
    echo $! > "$LAB/$unit.pid"
    sleep 2
  done
}

lab_run_suite() {
  lab_known_image "$LAB/known.img" 64
  if [ -x /usr/bin/tapmap ] || [ -x /usr/sbin/tapdisk-map ]; then
    lab_run_tapmap_cases "$1"
  else
    echo "LABRESULT tapmap-cases FAIL 0 tapmap-not-installed"
  fi
  lab_run_baseline
}

lab_run_tapmap_cases() {
  # Filled in as tapdisk-map's blkif front end lands (issue: Xen lab).
  echo "LABRESULT tapmap-cases FAIL 0 not-yet-implemented"
}
