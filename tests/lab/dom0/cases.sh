# Cases of the tapmap Xen lab, sourced by lab-init in dom0. Every case prints exactly
# one "LABRESULT <case> <PASS|FAIL|RETRIED> <seconds> <detail>" line. A case that fails
# is run once more (the lab is known to glitch in ~5-10% of guest runs); a pass on the
# second try is reported as RETRIED, a second failure is a FAIL.

LAB=/var/lib/tapmap-lab
CONSOLE_DIR=/var/log/xen/console
TAPMAP_CONF=/etc/tapmap/tapmap.conf
mkdir -p "$LAB"
# run_lab.sh puts an uncompressed guest kernel here when it can (see there).
LAB_GUEST_KERNEL=/boot/vmlinuz
[ -f /boot/vmlinux-domU ] && LAB_GUEST_KERNEL=/boot/vmlinux-domU

lab_mark() { echo "=== LAB $* (uptime $(cut -d' ' -f1 /proc/uptime))"; }
lab_now() { cut -d' ' -f1 /proc/uptime; }
lab_elapsed() { awk -v a="$1" -v b="$(lab_now)" 'BEGIN{printf "%.1f", b-a}'; }

# lab_guest NAME TYPE TIMEOUT DISKSPEC EXTRA [MEM] → runs one guest to its end; its
# "LABGUEST" lines are left in $LAB/NAME.out. Returns 0 if the guest printed PASS.
# LAB_POLL_S (default 1): seconds between `xl list` polls of the guest's state.
lab_guest() {
  local name=$1 type=$2 timeout=$3 disk=$4 extra=$5 mem=${6:-256} poll=${LAB_POLL_S:-1}
  local log=$CONSOLE_DIR/guest-$name.log cfg=$LAB/$name.cfg
  local kernel=$LAB_GUEST_KERNEL console=hvc0 hvm_lines=""
  if [ "$type" = hvm ]; then
    # QEMU (the device model) boots the bzImage itself; the console is its emulated
    # serial port, written to the same log file xenconsoled writes for PV guests.
    kernel=/boot/vmlinuz console=ttyS0
    hvm_lines="serial=\"file:$log\"
vnc=0
sdl=0"
  fi
  cat > "$cfg" <<CFG
name="$name"
type="$type"
kernel="$kernel"
ramdisk="/boot/domU-initrd.gz"
extra="console=$console quiet $extra"
memory=$mem
vcpus=1
disk=[$disk]
on_poweroff="destroy"
on_crash="destroy"
on_reboot="destroy"
$hvm_lines
CFG
  local off=$(( $(stat -c %s "$log" 2>/dev/null || echo 0) + 1 ))
  # Every xl call is bounded: a wedged toolstack must end in a timeout, not a hang.
  # A create that fails before the domain exists (seen when the emulated CPU still
  # exposed XSAVE, see run_lab.sh) is tried once more, and says
  # so; the guest's disk was never connected, so nothing of tapmap's is retried. A
  # create that timed out (xl wedged after starting the guest: seen here) or whose guest
  # exists or already printed is not retried.
  local rc=0
  timeout 120 xl create "$cfg" > "$LAB/$name.xl" 2>&1 || rc=$?
  if [ "$rc" -ne 0 ] && [ "$rc" -ne 124 ] && ! timeout 20 xl list "$name" >/dev/null 2>&1 &&
     ! tail -c +"$off" "$log" 2>/dev/null | grep -aq '^LABGUEST'; then
    echo "lab: xl create $name failed (rc $rc); once more"; sed 's/^/  /' "$LAB/$name.xl"
    free -m | sed 's/^/  dom0 memory: /'
    ps -eo rss,comm --sort=-rss | head -n 4 | sed 's/^/  dom0 rss: /'
    timeout 60 xl destroy "$name" >/dev/null 2>&1
    sleep 2
    timeout 120 xl create "$cfg" > "$LAB/$name.xl" 2>&1 || { echo "lab: xl create $name failed again"; cat "$LAB/$name.xl"; }
  elif [ "$rc" -ne 0 ]; then
    echo "lab: xl create $name failed (rc $rc)"; cat "$LAB/$name.xl"
  fi
  local i stuck=0 st
  for i in $(seq 1 $(( timeout / poll ))); do
    st=$(timeout 20 xl list "$name" 2>/dev/null | awk 'NR==2{print $5}')
    [ -z "$st" ] && break
    case "$st" in *s*|*c*) stuck=$((stuck+1)); [ $((stuck * poll)) -ge 8 ] && timeout 60 xl destroy "$name" ;; *) stuck=0 ;; esac
    sleep "$poll"
  done
  if timeout 20 xl list "$name" >/dev/null 2>&1; then
    echo "lab: guest $name timed out after ${timeout}s -> xl destroy"
    # While it still hangs: the rings as the backend sees them, and the guest's console.
    command -v tapmap >/dev/null && tapmap vbd list --json 2>&1 | jq -c '.vbds[]' 2>/dev/null \
      | head -c 3000 | sed 's/^/LABLOG vbd: /'
    tail -c +"$off" "$log" 2>/dev/null | tr -d '\r' | grep -av '^LABGUEST' | tail -n 25 | sed "s/^/LABLOG [$name console] /"
    timeout 60 xl destroy "$name" 2>/dev/null
  fi
  tail -c +"$off" "$log" 2>/dev/null | tr -d '\r' | grep -a '^LABGUEST' > "$LAB/$name.out"
  sed "s/^/  [$name] /" "$LAB/$name.out"
  grep -q '^LABGUEST result PASS' "$LAB/$name.out"
}
lab_guest_value() { sed -n "s/^LABGUEST $2 //p" "$LAB/$1.out" | tail -n 1; }

lab_diagnose() {  # what the backend saw, for the serial log
  [ -f "$LAB/tapdisk-map.log" ] && tail -n 40 "$LAB/tapdisk-map.log" | sed 's/^/LABLOG tapdisk-map: /'
  command -v tapmap >/dev/null && tapmap vbd list --json 2>&1 | head -c 2000 | sed 's/^/LABLOG vbds: /'
  command -v tapmap >/dev/null && tapmap stats --json 2>/dev/null | jq -c 'del(.volumes)' 2>/dev/null | sed 's/^/LABLOG stats: /'
  xenstore-ls -f /local/domain/0/backend 2>/dev/null | grep -E 'state|hotplug|ring|event|feature-persistent' | head -40 | sed 's/^/LABLOG xs: /'
}

# lab_revive → restarts a tapmap daemon that died, as the unit's Restart=on-failure
# would, and says so loudly (a crash is a finding even when the retry passes).
lab_revive() {
  local unit pid revived=""
  for unit in mapserver tapdisk-map; do
    pid=$(cat "$LAB/$unit.pid" 2>/dev/null) || continue
    kill -0 "$pid" 2>/dev/null && continue
    echo "LABLOG CRASH: $unit (pid $pid) is gone; restarting it as systemd would"
    tail -n 15 "$LAB/$unit.log" | sed "s/^/LABLOG $unit: /"
    lab_start_unit "$unit"; revived="$revived $unit"
  done
  [ -n "$revived" ] && { lab_wait_ready; LAB_CRASHED="$LAB_CRASHED$revived"; }
  return 0
}

# lab_case NAME FUNCTION → runs FUNCTION (returns 0 on pass, sets LAB_DETAIL), retries once.
lab_case() {
  local name=$1 fn=$2 t0 verdict
  t0=$(lab_now); LAB_DETAIL=""; LAB_CRASHED=""
  lab_mark "CASE $name"
  if "$fn"; then verdict=PASS
  else
    lab_mark "CASE $name failed ($LAB_DETAIL), retrying once"
    lab_diagnose
    lab_revive
    LAB_DETAIL=""
    if "$fn"; then verdict=RETRIED; else verdict=FAIL; fi
  fi
  [ -n "$LAB_CRASHED" ] && LAB_DETAIL="${LAB_DETAIL:+$LAB_DETAIL; }daemon crash, restarted:$LAB_CRASHED"
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
TAPMAP_DISK() {  # $1 volume, $2 access (rw|ro): the xl disk line the README documents
  echo "'vdev=xvda, access=$2, backendtype=phy, script=block-tapmap, target=$1'"
}
NBD_SOCK=/run/tapmap/nbd.sock

lab_console_size() { stat -c %s "$CONSOLE_DIR/guest-$1.log" 2>/dev/null || echo 0; }
# NAME PATTERN TIMEOUT OFFSET: wait until the guest's console shows PATTERN after byte
# OFFSET (lab_console_size before the guest started: a retry appends to the same log,
# and must not be fooled by the first attempt's lines).
lab_wait_console() {
  local log=$CONSOLE_DIR/guest-$1.log i
  for i in $(seq 1 "$3"); do
    [ -f "$log" ] && tail -c +"$(( ${4:-0} + 1 ))" "$log" | tr -d '\r' | grep -aq "$2" && return 0
    sleep 1
  done
  return 1
}

lab_unit_exec() {  # the ExecStart line of an installed unit
  sed -n 's/^ExecStart=//p' "/lib/systemd/system/$1.service" 2>/dev/null | head -n 1
}
lab_start_unit() {  # start a daemon exactly as its unit would (RuntimeDirectory, ExecStart)
  local cmd; cmd=$(lab_unit_exec "$1")
  [ -n "$cmd" ] || { echo "lab: no unit file for $1"; return 1; }
  mkdir -p /run/tapmap /var/lib/tapmap
  setsid $cmd >> "$LAB/$1.log" 2>&1 < /dev/null &
  echo $! > "$LAB/$1.pid"
}
lab_stop_unit() {  # SIGTERM as systemctl stop does, then wait
  local pid; pid=$(cat "$LAB/$1.pid" 2>/dev/null) || return 0
  kill -TERM "$pid" 2>/dev/null
  for i in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.5; done
  kill -KILL "$pid" 2>/dev/null
}
lab_wait_ready() {  # both daemons answer: `tapmap volume list && tapmap vbd list`
  for i in $(seq 1 60); do
    tapmap volume list >/dev/null 2>&1 && tapmap vbd list >/dev/null 2>&1 && return 0
    sleep 1
  done
  echo "lab: daemons not ready:"; tail -20 "$LAB/mapserver.log" "$LAB/tapdisk-map.log"
  return 1
}
lab_stat() {  # KEY → host-level counter from `tapmap stats --json`
  tapmap stats --json | jq -r ".$1 // .stats.$1 // 0"
}

lab_setup_tapmap() {
  mkdir -p /etc/tapmap /var/lib/tapmap
  head -c 32 /dev/urandom | base64 > /etc/tapmap/secret; chmod 600 /etc/tapmap/secret
  cat > /etc/tapmap/tapmap.conf <<CONF
[mapserver]
pool = /var/lib/tapmap/pool
meta = /var/lib/tapmap/meta
listen = unix:/run/tapmap/mapserver.sock

[tapdisk-map]
server = unix:/run/tapmap/mapserver.sock
pool = /var/lib/tapmap/pool
nbd = unix:$NBD_SOCK
cache-size = 256M
log-level = debug

[tapmap]
server = unix:/run/tapmap/mapserver.sock
CONF
  lsmod | grep -q '^xen_blkback' && rmmod xen_blkback
  mapserver format --config /etc/tapmap/tapmap.conf --size 2G --block-size 64K || return 1
  lab_start_unit mapserver && sleep 1 && lab_start_unit tapdisk-map || return 1
  lab_wait_ready || return 1
  tapmap volume create golden 256M || return 1
  qemu-img convert -n -O raw "$LAB/known.img" "nbd+unix:///golden?socket=$NBD_SOCK" || return 1
  tapmap volume snapshot golden golden-v1 || return 1
  for v in vm-pv vm-pvh vm-hvm vm-big vm-attach vm-idle; do tapmap volume clone golden-v1 "$v" || return 1; done
}

case_tapmap_pv_read_write() {
  local want ok=1; want=$(lab_md5_prefix "$LAB/known.img" 16)
  lab_guest tm-pv pv 120 "$(TAPMAP_DISK vm-pv rw)" "lab_step=read-write lab_md5_mib=16 lab_seed=pv" || ok=0
  [ "$(lab_guest_value tm-pv md5)" = "$want" ] || { ok=0; LAB_DETAIL="md5 mismatch"; }
  LAB_DETAIL="${LAB_DETAIL:-read $(lab_guest_value tm-pv read_seconds)s boot $(lab_guest_value tm-pv boot_uptime)s}"
  [ $ok = 1 ]
}
case_tapmap_pv_reboot() {   # the pattern written (and flushed) before survives a new boot
  lab_guest tm-pv pv 120 "$(TAPMAP_DISK vm-pv rw)" "lab_step=verify-pattern lab_seed=pv"
}
case_tapmap_pvh_read_write() {
  local want ok=1; want=$(lab_md5_prefix "$LAB/known.img" 16)
  lab_guest tm-pvh pvh 150 "$(TAPMAP_DISK vm-pvh rw)" "lab_step=read-write lab_md5_mib=16 lab_seed=pvh" || ok=0
  [ "$(lab_guest_value tm-pvh md5)" = "$want" ] || { ok=0; LAB_DETAIL="md5 mismatch"; }
  LAB_DETAIL="${LAB_DETAIL:-read $(lab_guest_value tm-pvh read_seconds)s boot $(lab_guest_value tm-pvh boot_uptime)s}"
  [ $ok = 1 ]
}
case_tapmap_pvh_reboot() {
  lab_guest tm-pvh pvh 150 "$(TAPMAP_DISK vm-pvh rw)" "lab_step=verify-pattern lab_seed=pvh"
}
case_tapmap_big_io() {   # multi-page ring + indirect descriptors: 1 MiB requests
  local ok=1
  lab_guest tm-big pv 150 "$(TAPMAP_DISK vm-big rw)" "lab_step=big-io lab_ring_order=2 lab_indirect=256" || ok=0
  local kb; kb=$(lab_guest_value tm-big max_sectors_kb)
  [ "${kb:-0}" -ge 512 ] || { ok=0; LAB_DETAIL="max_sectors_kb=$kb: no indirect descriptors"; }
  LAB_DETAIL="${LAB_DETAIL:-$(lab_guest_value tm-big read_mib_per_s) MiB/s; $(lab_guest_value tm-big blkfront | tr ' ' '_')}"
  [ $ok = 1 ]
}
case_tapmap_detach_reattach() {
  local ok=1 off; off=$(lab_console_size tm-att)
  lab_guest tm-att pv 180 "$(TAPMAP_DISK vm-attach rw)" "lab_step=reattach" &
  local gpid=$!
  if lab_wait_console tm-att 'LABGUEST detach_wait' 120 "$off"; then
    timeout 60 xl block-detach tm-att xvda || ok=0
    sleep 3
    timeout 60 xl block-attach tm-att "$(TAPMAP_DISK vm-attach rw | tr -d "'")" || ok=0
  else ok=0; LAB_DETAIL="guest never reached the detach point"; fi
  wait "$gpid" || ok=0
  [ "$(lab_guest_value tm-att reattached)" = yes ] || ok=0
  [ $ok = 1 ]
}
case_tapmap_restart_idle() {   # tapdisk-map restarted while the guest is idle
  local ok=1 off; off=$(lab_console_size tm-idle)
  lab_guest tm-idle pv 180 "$(TAPMAP_DISK vm-idle rw)" "lab_step=idle-io lab_idle_s=25" &
  local gpid=$!
  if lab_wait_console tm-idle 'LABGUEST phase1_done' 120 "$off"; then
    lab_stop_unit tapdisk-map; lab_start_unit tapdisk-map
  else ok=0; LAB_DETAIL="guest never became idle"; fi
  wait "$gpid" || ok=0
  [ $ok = 1 ]
}
# What libxl does for a PV guest's bootloader (pygrub) on a script= disk: it attaches
# the disk to dom0 itself (libxl__device_disk_local_initiate_attach: a vbd whose
# frontend is domid 0) and reads it as /dev/xvdX through dom0's xen-blkfront. Same
# attach here, by xl, then the volume is read byte-exact in dom0 and detached.
case_tapmap_dom0_local_attach() {
  local ok=1 want got dev=/dev/xvdz i
  want=$(lab_md5_prefix "$LAB/known.img" 16)
  modprobe xen-blkfront 2>/dev/null
  if ! timeout 60 xl block-attach 0 "vdev=xvdz, access=ro, backendtype=phy, script=block-tapmap, target=golden-v1"; then
    LAB_DETAIL="xl block-attach 0 failed"; return 1
  fi
  for i in $(seq 1 30); do [ -b "$dev" ] && break; sleep 1; done
  if [ ! -b "$dev" ]; then
    ok=0; LAB_DETAIL="no $dev in dom0"
  else
    local t0; t0=$(lab_now)
    got=$(head -c 16M "$dev" | md5sum | cut -d' ' -f1)
    [ "$got" = "$want" ] || { ok=0; LAB_DETAIL="md5 mismatch"; }
    LAB_DETAIL=${LAB_DETAIL:-"16MiB_md5_exact read_s=$(lab_elapsed "$t0") $(tapmap vbd list | awk '$1 ~ /^0\//' | head -n 1 | tr -s ' ' '_')"}
  fi
  timeout 60 xl block-detach 0 xvdz || { ok=0; LAB_DETAIL="$LAB_DETAIL; block-detach failed"; }
  for i in $(seq 1 20); do tapmap vbd list --json | grep -q '"domid": 0' || break; sleep 1; done
  tapmap vbd list --json | grep -q '"domid": 0' && { ok=0; LAB_DETAIL="$LAB_DETAIL; still attached after detach"; }
  [ $ok = 1 ]
}
# An HVM guest with the plain disk line: block-tapmap writes physical-device-path (the
# volume's NBD URL), libxl hands it to QEMU as the emulated IDE disk, and the guest
# (emulated disks not unplugged) reads the same volume through both: the emulated disk
# (QEMU -> NBD -> tapdisk-map) and the PV disk (blkfront -> tapdisk-map).
case_tapmap_hvm_emulated_disk() {
  local want ok=1; want=$(lab_md5_prefix "$LAB/known.img" 16)
  rm -f "$CONSOLE_DIR/guest-tm-hvm.log"   # QEMU truncates its serial file
  # (Under TCG, SeaBIOS and QEMU in dom0 make this boot take ~2.5 min.)
  lab_guest tm-hvm hvm 900 "$(TAPMAP_DISK vm-hvm rw)" "xen_emul_unplug=unnecessary lab_step=hvm-emulated lab_md5_mib=16" || ok=0
  [ "$(lab_guest_value tm-hvm md5_emulated)" = "$want" ] || { ok=0; LAB_DETAIL="emulated disk: md5 $(lab_guest_value tm-hvm md5_emulated) not $want"; }
  [ "$(lab_guest_value tm-hvm md5)" = "$want" ] || { ok=0; LAB_DETAIL="${LAB_DETAIL:-PV disk: md5 mismatch}"; }
  LAB_DETAIL="${LAB_DETAIL:-emulated_disk_md5_exact read_s=$(lab_guest_value tm-hvm emulated_read_seconds) boot_s=$(lab_guest_value tm-hvm boot_uptime) $(lab_guest_value tm-hvm emulated_disk | tr ' ' '_')}"
  [ $ok = 1 ]
}
case_tapmap_read_only() {
  lab_guest tm-ro pv 120 "$(TAPMAP_DISK golden-v1 ro)" "lab_step=read-only lab_md5_mib=16"
}

# Boot storm: four guests at once mount the ext4 root of four clones of one golden
# volume and read all of it; compare pool bytes read with one boot set.
lab_storm_image() {
  [ -f "$LAB/storm.img" ] && return 0
  local d=$LAB/storm-root; rm -rf "$d"; mkdir -p "$d"
  cp -a /usr/lib/x86_64-linux-gnu "$d/lib" 2>/dev/null
  cp -a /usr/share/doc "$d/doc" 2>/dev/null
  mkfs.ext4 -q -F -d "$d" "$LAB/storm.img" 384M
  rm -rf "$d"
}
# lab_storm_start NAME DISKSPEC → starts one storm guest in the background (its pid is
# added to LAB_STORM_PIDS) and returns once it has booted. Guests are created one at a
# time (each create is heavy under TCG); they all start reading at LAB_STORM_AT.
lab_storm_start() {
  local name=$1 disk=$2 off i pid; off=$(lab_console_size "$1")
  LAB_POLL_S=3 lab_guest "$name" pv 420 "$disk" "lab_step=boot-storm lab_storm_at=$LAB_STORM_AT" 192 &
  pid=$!
  LAB_STORM_PIDS="$LAB_STORM_PIDS $pid"
  for i in $(seq 1 150); do   # until it booted, or its lab_guest ended (create failed)
    lab_wait_console "$name" 'LABGUEST boot_uptime' 1 "$off" && return 0
    kill -0 "$pid" 2>/dev/null || { echo "lab: $name ended before it booted"; return 1; }
  done
  echo "lab: $name did not boot within 150 s"
}
# lab_storm_overlap PREFIX → "first read start … last read end" span and how long all
# four read at once, from the guests' wallclock stamps (Xen's clock, shared by guests).
lab_storm_overlap() {
  local starts="" ends="" n
  for n in 1 2 3 4; do
    starts="$starts $(lab_guest_value "$1$n" storm_start)"; ends="$ends $(lab_guest_value "$1$n" storm_end)"
  done
  echo "$starts |$ends" | awk -F'|' '{ n = split($1, s, " "); m = split($2, e, " ");
    if (n < 4 || m < 4) { print "overlap_s=?"; exit }
    ls = s[1]; fe = e[1]; for (i = 2; i <= 4; i++) { if (s[i] > ls) ls = s[i]; if (e[i] < fe) fe = e[i] }
    o = fe - ls; if (o < 0) o = 0; printf "all_four_reading_s=%d", o }'
}

case_tapmap_boot_storm() {
  local ok=1 n
  for n in 1 2 3 4; do tapmap volume delete "storm-$n" >/dev/null 2>&1; tapmap volume clone storm-v1 "storm-$n" || ok=0; done
  lab_stop_unit tapdisk-map; lab_start_unit tapdisk-map; lab_wait_ready || ok=0   # cold cache
  local p0 l0; p0=$(lab_stat pool_bytes_read); l0=$(lab_stat logical_bytes_read)
  local t0; t0=$(lab_now)
  LAB_STORM_PIDS=""
  # Guests boot one after another (each xl create takes ~15-25 s under TCG); they all
  # mount and read at this second, or at once if they boot later than that.
  LAB_STORM_AT=$(( $(date +%s) + 100 ))
  for n in 1 2 3 4; do lab_storm_start "tm-storm$n" "$(TAPMAP_DISK storm-$n rw)"; done
  wait $LAB_STORM_PIDS || true
  for n in 1 2 3 4; do grep -q 'result PASS' "$LAB/tm-storm$n.out" || ok=0; done
  local p1 l1; p1=$(lab_stat pool_bytes_read); l1=$(lab_stat logical_bytes_read)
  local pool=$((p1 - p0)) logical=$((l1 - l0))
  LAB_DETAIL="pool_MiB=$((pool >> 20)) logical_MiB=$((logical >> 20)) pool/one_boot_set=$(awk -v p=$pool -v l=$logical 'BEGIN{printf "%.2f", (l>0)? p/(l/4) : -1}') storm_s=$(lab_elapsed "$t0") read_s=$(lab_guest_value tm-storm1 storm_seconds),$(lab_guest_value tm-storm2 storm_seconds),$(lab_guest_value tm-storm3 storm_seconds),$(lab_guest_value tm-storm4 storm_seconds) $(lab_storm_overlap tm-storm)"
  # One boot set is a quarter of what the four guests read; allow metadata re-reads.
  [ "$logical" -gt 0 ] && [ $((pool * 4)) -le $((logical * 3 / 2)) ] || ok=0
  [ $ok = 1 ]
}
case_blkback_boot_storm() {
  local ok=1 n devs=""
  for n in 1 2 3 4; do cp "$LAB/storm.img" "$LAB/bb-storm$n.img"; done
  LAB_STORM_AT=$(( $(date +%s) + 100 ))
  local t0; t0=$(lab_now)
  LAB_STORM_PIDS=""
  for n in 1 2 3 4; do
    local dev; dev=$(losetup -f --show "$LAB/bb-storm$n.img")
    devs="$devs $dev"
    lab_storm_start "bb-storm$n" "'phy:$dev,xvda,w'"
  done
  wait $LAB_STORM_PIDS || true
  for n in 1 2 3 4; do grep -q 'result PASS' "$LAB/bb-storm$n.out" || ok=0; done
  for d in $devs; do losetup -d "$d"; done
  rm -f "$LAB"/bb-storm*.img
  LAB_DETAIL="storm_s=$(lab_elapsed "$t0") read_s=$(lab_guest_value bb-storm1 storm_seconds),$(lab_guest_value bb-storm2 storm_seconds),$(lab_guest_value bb-storm3 storm_seconds),$(lab_guest_value bb-storm4 storm_seconds) $(lab_storm_overlap bb-storm) (4 private copies, no sharing)"
  [ $ok = 1 ]
}

lab_run_suite() {
  if [ "$1" = storm-blkback ]; then
    modprobe xen-blkback
    lab_storm_image
    lab_case blkback-boot-storm-4 case_blkback_boot_storm
    rmmod xen-blkback 2>/dev/null
    return
  fi
  lab_known_image "$LAB/known.img" 64
  if ! command -v tapmap >/dev/null || ! command -v tapdisk-map >/dev/null; then
    echo "LABRESULT tapmap-setup FAIL 0 tapmap-not-installed"
  elif ! lab_setup_tapmap > "$LAB/setup.log" 2>&1; then
    cat "$LAB/setup.log"; tail -20 "$LAB/mapserver.log" "$LAB/tapdisk-map.log" 2>/dev/null
    echo "LABRESULT tapmap-setup FAIL 0 see-serial-log"
  else
    echo "LABRESULT tapmap-setup PASS 0 -"
    [ "$1" = hvm ] && lab_case tapmap-hvm-emulated-disk case_tapmap_hvm_emulated_disk
    if [ "$1" != storm ] && [ "$1" != hvm ]; then
      lab_case tapmap-pv-read-write case_tapmap_pv_read_write
      lab_case tapmap-pv-reboot-persists case_tapmap_pv_reboot
      lab_case tapmap-read-only case_tapmap_read_only
    fi
    if [ "$1" = full ]; then
      lab_case tapmap-pvh-read-write case_tapmap_pvh_read_write
      lab_case tapmap-pvh-reboot-persists case_tapmap_pvh_reboot
      lab_case tapmap-hvm-emulated-disk case_tapmap_hvm_emulated_disk
      lab_case tapmap-big-io-indirect case_tapmap_big_io
      lab_case tapmap-detach-reattach case_tapmap_detach_reattach
      lab_case tapmap-restart-while-idle case_tapmap_restart_idle
      lab_case tapmap-dom0-local-attach case_tapmap_dom0_local_attach
    fi
    if [ "$1" = full ] || [ "$1" = storm ]; then
      lab_storm_image
      tapmap volume create storm-golden 384M >/dev/null \
        && qemu-img convert -n -O raw "$LAB/storm.img" "nbd+unix:///storm-golden?socket=$NBD_SOCK" \
        && tapmap volume snapshot storm-golden storm-v1 >/dev/null
      lab_case tapmap-boot-storm-4 case_tapmap_boot_storm
    fi
    echo "LABSTATS $(tapmap stats --json 2>/dev/null | jq -c 'del(.volumes) // .' 2>/dev/null)"
    lab_stop_unit tapdisk-map; lab_stop_unit mapserver
    tail -5 "$LAB/tapdisk-map.log" | sed 's/^/LABLOG tapdisk-map: /'
  fi
  modprobe xen-blkback
  [ "$1" != storm ] && [ "$1" != hvm ] && lab_case blkback-pv-read-write case_blkback_read_write
  if [ "$1" = full ] || [ "$1" = storm ]; then
    lab_storm_image
    lab_case blkback-boot-storm-4 case_blkback_boot_storm
  fi
  rmmod xen-blkback 2>/dev/null
}
