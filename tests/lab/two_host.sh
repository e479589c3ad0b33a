#!/usr/bin/env bash
# The two-host Xen lab: two emulated Xen 4.17 hosts (QEMU TCG) side by side, sharing one
# virtual LUN (a raw file both QEMUs open with cache=none, share-rw) and a private
# network (QEMU's -netdev dgram: the two QEMUs exchange Ethernet frames as UDP datagrams
# on 127.0.0.1; no host networking). Host a runs the mapserver (pool = the first 512 MiB
# of the LUN, listening on tcp:10.99.0.1:7300) and tapdisk-map, host b tapdisk-map;
# guests move between them:
#   two-host-tapmap-pvh-live         a PVH guest (128 MiB) with a script=block-tapmap disk,
#                                    writing and verifying it, live-migrated a -> b -> a
#   two-host-tapmap-pv-save-restore  a PV guest (PV cannot live-migrate on Debian's Xen:
#                                    no shadow paging) moved cold: xl save on a, the image
#                                    streamed to b, xl restore on b
#   two-host-blkback-pvh-live        the same PVH guest on the shared LUN through kernel
#                                    blkback (phy:), a -> b -> a: the baseline
# Each case checks 0 bad reads in the guest and the disk md5-exact from both dom0s
# against the guest's own record; each move's time is reported (LABMOVE lines,
# summary.txt). The dom0 side: dom0/two-host-init, dom0/two-host.sh; the guest:
# guest/migrate-init.
#
# Usage: tests/lab/two_host.sh BUILD_DIR [--results DIR]   (or run_lab.sh BUILD --two-host)
# Env:   TAPMAP_LAB_CACHE, TAPMAP_LAB_CPU, TAPMAP_LAB_TCG_THREADS as for run_lab.sh;
#        TAPMAP_LAB2_LIMIT (s, default 4200): the whole run; TAPMAP_LAB2_BOOT (s, default
#        600): a dom0 that has not come up by then is killed and booted once more (about
#        1 dom0 boot in 14 hangs under TCG).
# Exit:  0 all cases PASS/RETRIED; 1 a case FAILed or the run did not finish; 77 skipped.
set -uo pipefail
build=${1:?build dir}; shift
results=""
while [ $# -gt 0 ]; do
  case "$1" in
    --results) results=$2; shift ;;
    *) echo "two_host.sh: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
build=$(cd "$build" && pwd)
results=${results:-$repo/results/lab2-$(date +%Y%m%d-%H%M%S)}
cache=${TAPMAP_LAB_CACHE:-/var/cache/tapmap-lab}
limit=${TAPMAP_LAB2_LIMIT:-4200}
boot_limit=${TAPMAP_LAB2_BOOT:-600}
skip() { echo "SKIPPED: Xen lab (two hosts): $*"; exit 77; }

[ "$(id -u)" = 0 ] || skip "needs root (debootstrap, chroot, mkfs)"
command -v qemu-system-x86_64 >/dev/null || skip "qemu-system-x86_64 missing (make deps installs it)"
[ -f /boot/xen-4.17-amd64.gz ] || skip "xen-hypervisor-4.17-amd64 missing"
mem_kib=$(awk '/MemAvailable/{print $2}' /proc/meminfo)
[ "$mem_kib" -gt $((5 * 1024 * 1024)) ] || skip "needs 5 GiB of free memory (two QEMUs), have $((mem_kib / 1024)) MiB"
free_kib=$(df -Pk /var/tmp | awk 'NR==2{print $4}')
[ "$free_kib" -gt $((6 * 1024 * 1024)) ] || skip "needs 6 GiB free disk in /var/tmp"
[ -x "$build/bin/tapdisk-map" ] || skip "tapdisk-map not built in $build"

mkdir -p "$results" "$cache"; results=$(cd "$results" && pwd)
T0=$(date +%s)
ts() { echo "lab2: [$(($(date +%s) - T0))s] $*"; }
entry=$("$here/build_rootfs.sh" "$cache"); rootfs_rc=$?
[ "$rootfs_rc" = 77 ] && skip "the dom0 root cannot be built here (see above)"
[ "$rootfs_rc" = 0 ] || { echo "FAIL: building the dom0 root" >&2; exit 1; }

work=$(mktemp -d /var/tmp/tapmap-lab2.XXXXXX)
declare -A qpid=()
cleanup() {
  local h
  for h in "${!qpid[@]}"; do [ -n "${qpid[$h]}" ] && kill "${qpid[$h]}" 2>/dev/null && ts "killed QEMU $h (pid ${qpid[$h]})"; done
  for h in "${!qpid[@]}"; do [ -n "${qpid[$h]}" ] && wait "${qpid[$h]}" 2>/dev/null; done
  rm -rf "$work"
}
trap cleanup EXIT

# ---- images: the dom0 root (tapmap installed as make install would), shared by both
# hosts through qcow2 overlays; the guest kernel and initramfs inside it.
ts "dom0 root from $entry; installing tapmap"
R=$work/rootfs
cp -a "$entry/rootfs" "$R"
DESTDIR="$R" cmake --install "$build" --prefix /usr > "$results/install.log" 2>&1 \
  || { echo "FAIL: cmake --install into the dom0 root (see $results/install.log)"; exit 1; }
kver=$(ls "$R/lib/modules" | sort -V | tail -n 1)
# The guests boot the kernel uncompressed (see run_lab.sh).
xz_at=$(LC_ALL=C grep -abo $'\xfd7zXZ' "$R/boot/vmlinuz" | head -n 1 | cut -d: -f1)
[ -n "$xz_at" ] && tail -c +"$((xz_at + 1))" "$R/boot/vmlinuz" \
  | xz -dc --single-stream > "$R/boot/vmlinux-domU" 2>/dev/null
if ! [ -s "$R/boot/vmlinux-domU" ] ||
   [ "$(head -c 4 "$R/boot/vmlinux-domU" | od -An -c | tr -d ' ')" != '177ELF' ]; then
  rm -f "$R/boot/vmlinux-domU"
fi
g=$work/ginit
mkdir -p "$g/bin" "$g/lib" "$g/proc" "$g/sys" "$g/dev" "$g/tmp"
cp /bin/busybox "$g/bin/busybox"
f=$(find "$R/lib/modules/$kver" -name 'xen-blkfront.ko*' | head -n 1)
[ -n "$f" ] || { echo "FAIL: no xen-blkfront module in the dom0 root"; exit 1; }
case "$f" in *.xz) xz -dc "$f" > "$g/lib/xen-blkfront.ko" ;; *) cp "$f" "$g/lib/xen-blkfront.ko" ;; esac
install -m 0755 "$here/guest/migrate-init" "$g/init"
(cd "$g" && find . | cpio -o -H newc 2>/dev/null | gzip -1) > "$R/boot/migrate-initrd.gz"
install -d "$R/usr/lib/tapmap-lab" "$R/etc/tapmap"
install -m 0755 "$here/dom0/two-host-init" "$R/sbin/tapmap-lab-two-host-init"
install -m 0644 "$here/dom0/cases.sh" "$here/dom0/two-host.sh" "$R/usr/lib/tapmap-lab/"
install -m 0755 "$here/dom0/two-host-agent" "$here/dom0/two-host-recv" "$R/usr/lib/tapmap-lab/"
# The cluster's shared secret: the same file on both hosts (one root image).
(umask 077; head -c 32 /dev/urandom | base64 > "$R/etc/tapmap/secret")
mkfs.ext4 -q -F -L dom0root -d "$R" "$work/root.img" 3G || { echo "FAIL: mkfs"; exit 1; }
rm -rf "$R" "$g"
truncate -s 768M "$work/lun.img"   # the shared LUN (two-host.sh: its layout)
ts "images ready"

# ---- the two hosts
tcg_threads=${TAPMAP_LAB_TCG_THREADS:-multi}
cpu=${TAPMAP_LAB_CPU:-max,-smap,-rdtscp,-avx,-avx2,-xsave,-fsgsbase}   # see run_lab.sh
port_a=$((20000 + RANDOM % 20000)); port_b=$((port_a + 1))
declare -A ip=([a]=10.99.0.1 [b]=10.99.0.2) mac=([a]=52:54:00:99:00:0a [b]=52:54:00:99:00:0b)
declare -A port=([a]=$port_a [b]=$port_b) peer=([a]=b [b]=a) boots=([a]=0 [b]=0) up_at=()
start_host() {   # ROLE: a fresh overlay on the shared root image, then QEMU
  local h=$1 p=${peer[$1]}
  boots[$h]=$((boots[$h] + 1))
  rm -f "$work/root-$h.qcow2"
  qemu-img create -q -f qcow2 -F raw -b "$work/root.img" "$work/root-$h.qcow2" || return 1
  [ -f "$results/serial-$h.log" ] && mv "$results/serial-$h.log" "$results/serial-$h.boot$((boots[$h] - 1)).log"
  nice -n 5 qemu-system-x86_64 -accel "tcg,thread=$tcg_threads,tb-size=256" -cpu "$cpu" -smp 2 -m 2048 \
    -display none -serial "file:$results/serial-$h.log" -monitor none -no-reboot \
    -drive "file=$work/root-$h.qcow2,if=none,id=root,format=qcow2,cache=unsafe" \
    -device virtio-blk-pci,drive=root,addr=0x4 \
    -drive "file=$work/lun.img,if=none,id=lun,format=raw,cache=none,file.locking=off" \
    -device virtio-blk-pci,drive=lun,share-rw=on,addr=0x5 \
    -netdev "dgram,id=n0,local.type=inet,local.host=127.0.0.1,local.port=${port[$h]},remote.type=inet,remote.host=127.0.0.1,remote.port=${port[$p]}" \
    -device "virtio-net-pci,netdev=n0,mac=${mac[$h]},addr=0x6" \
    -kernel "$entry/xen.elf" \
    -append "console=com1 com1=115200,8n1 loglvl=all guest_loglvl=all dom0_mem=768M,max:768M bootscrub=false" \
    -initrd "$entry/vmlinuz console=hvc0 earlyprintk=xen root=/dev/vda rw init=/sbin/tapmap-lab-two-host-init lab_role=$h lab_ip=${ip[$h]} lab_peer=${ip[$p]},$entry/initrd.img" \
    > "$results/qemu-$h.log" 2>&1 &
  qpid[$h]=$!
  up_at[$h]=""
  ts "host $h: QEMU pid ${qpid[$h]} (boot ${boots[$h]}; udp ${port[$h]} -> ${port[$p]})"
}
serial_has() { tr -d '\r' 2>/dev/null < "$results/serial-$1.log" | grep -aq "$2"; }
started=$(date +%s)
declare -A t_start=()
for h in a b; do start_host "$h"; t_start[$h]=$(date +%s); done
ts "serial logs: $results/serial-a.log, $results/serial-b.log"
declare -A seen=()
while :; do
  now=$(date +%s)
  for h in a b; do
    [ -n "${qpid[$h]}" ] || continue
    if [ -z "${up_at[$h]}" ] && serial_has "$h" '^=== LAB TWO-HOST READY'; then
      up_at[$h]=$now; ts "host $h: dom0 up ($((now - t_start[$h])) s after its QEMU started)"
    fi
    # A dom0 that never came up (seen: ~1 boot in 14 hangs in the kernel under TCG) is
    # booted once more; host a waits for b, so either may be restarted.
    if [ -z "${up_at[$h]}" ] && [ $((now - t_start[$h])) -gt "$boot_limit" ]; then
      kill "${qpid[$h]}" 2>/dev/null; wait "${qpid[$h]}" 2>/dev/null; qpid[$h]=""
      if [ "${boots[$h]}" -lt 2 ]; then
        ts "host $h: dom0 not up after ${boot_limit}s: killed, booting it once more"
        echo "LABRETRY host-$h dom0 boot hung (>${boot_limit}s), booted again" >> "$results/boots.txt"
        start_host "$h"; t_start[$h]=$(date +%s)
      else
        ts "host $h: dom0 not up after ${boot_limit}s twice: giving up"
        echo "LABRETRY host-$h dom0 boot hung twice: run abandoned" >> "$results/boots.txt"
        [ -n "${qpid[${peer[$h]}]}" ] && kill "${qpid[${peer[$h]}]}" 2>/dev/null
      fi
    fi
    for m in "CASE [a-z0-9-]*" "LAB DONE"; do
      l=$(tr -d '\r' 2>/dev/null < "$results/serial-$h.log" | grep -a "^=== LAB $m" | sed 's/ (uptime.*//')
      while read -r line; do
        [ -n "$line" ] && [ -z "${seen[$h:$line]:-}" ] && { seen[$h:$line]=1; ts "host $h: ${line#=== LAB }"; }
      done <<< "$l"
    done
    if [ -n "${qpid[$h]}" ] && ! kill -0 "${qpid[$h]}" 2>/dev/null; then
      wait "${qpid[$h]}" 2>/dev/null; qpid[$h]=""; ts "host $h: QEMU ended"
      [ "$h" = a ] && a_end=$now
    fi
  done
  [ -z "${qpid[a]}" ] && [ -z "${qpid[b]}" ] && break
  # a powers b off when it is done: b still up 120 s after a ended is stopped.
  if [ -n "${a_end:-}" ] && [ -n "${qpid[b]}" ] && [ $((now - a_end)) -gt 120 ]; then
    ts "host b still up 120 s after a ended: killing it"; kill "${qpid[b]}" 2>/dev/null
  fi
  if [ $((now - started)) -gt "$limit" ]; then
    ts "time limit ${limit}s reached: killing both"
    for h in a b; do [ -n "${qpid[$h]}" ] && kill "${qpid[$h]}" 2>/dev/null; done
  fi
  sleep 5
done

# ---- results
tr -d '\r' < "$results/serial-a.log" | grep -a '^LABRESULT' | sed 's/^LABRESULT //' > "$results/cases.txt"
tr -d '\r' < "$results/serial-a.log" | grep -a '^LABMOVE' | sed 's/^LABMOVE //' > "$results/moves.txt"
{
  echo "tapmap Xen lab, two hosts, $(date -u +%FT%TZ), $(($(date +%s) - T0)) s"
  [ -f "$results/boots.txt" ] && sed 's/^LABRETRY /note: /' "$results/boots.txt"
  printf '%-34s %-8s %8s  %s\n' CASE RESULT SECONDS DETAIL
  while read -r name verdict secs detail; do
    printf '%-34s %-8s %8s  %s\n' "$name" "$verdict" "$secs" "$detail"
  done < "$results/cases.txt"
  echo
  echo "moves (seconds; a case that was retried lists both tries):"
  printf '  %-34s %-14s %8s  %s\n' CASE MOVE SECONDS DETAIL
  while read -r name move secs detail; do
    printf '  %-34s %-14s %8s  %s\n' "$name" "$move" "$secs" "$detail"
  done < "$results/moves.txt"
} > "$results/summary.txt"
cat "$results/summary.txt"
if ! tr -d '\r' < "$results/serial-a.log" | grep -aq '^=== LAB LAB DONE'; then
  echo "lab2: FAIL: the two-host lab did not finish (see $results/serial-a.log, serial-b.log)"; exit 1
fi
[ -s "$results/cases.txt" ] || { echo "lab2: FAIL: no case ran"; exit 1; }
grep -q ' FAIL ' "$results/cases.txt" && exit 1
exit 0
