#!/usr/bin/env bash
# The tapmap Xen lab: real Xen 4.17 under QEMU (software emulation), a Debian dom0 with
# tapmap installed as `make install` would, and Linux guests whose real xen-blkfront is
# served by tapdisk-map (and, as a baseline in the same run, by kernel blkback).
#
# Usage: tests/lab/run_lab.sh BUILD_DIR [--short | --storm] [--results DIR]
#        --short: the PV cases and the blkback baseline (what `make test` runs);
#        --storm: only the 4-guest boot storms (tapmap and blkback); default: all.
#        --storm-blkback: only the kernel-blkback storm (tapmap not started): tells a
#        lab fault from a tapmap one.
#        --hvm: only the HVM guest (emulated disk through the NBD export).
#        --two-host: only the two-host suite (two_host.sh: live migration between two
#        emulated hosts); the default (full) suite runs it after the single-host cases.
# Env:   TAPMAP_LAB_CACHE (default /var/cache/tapmap-lab) caches the dom0 root.
#        TAPMAP_LAB_CPU: QEMU's -cpu model (default below).
#        TAPMAP_LAB_TCG_THREADS=single|multi (default multi): QEMU's TCG threading.
# Exit:  0 all cases PASS/RETRIED; 1 a case FAILed or the lab did not finish;
#        77 skipped (the machine cannot run the lab; the reason is printed).
set -uo pipefail
build=${1:?build dir}; shift
suite=full
results=""
while [ $# -gt 0 ]; do
  case "$1" in
    --short) suite=short ;;
    --storm) suite=storm ;;
    --storm-blkback) suite=storm-blkback ;;
    --hvm) suite=hvm ;;
    --two-host) suite=two-host ;;
    --results) results=$2; shift ;;
    *) echo "run_lab.sh: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
build=$(cd "$build" && pwd)
results=${results:-$repo/results/lab-$(date +%Y%m%d-%H%M%S)}
cache=${TAPMAP_LAB_CACHE:-/var/cache/tapmap-lab}
skip() { echo "SKIPPED: Xen lab: $*"; exit 77; }
[ "$suite" = two-host ] && exec "$here/two_host.sh" "$build" --results "$results"

[ "$(id -u)" = 0 ] || skip "needs root (debootstrap, chroot, mkfs)"
command -v qemu-system-x86_64 >/dev/null || skip "qemu-system-x86_64 missing (make deps installs it)"
[ -f /boot/xen-4.17-amd64.gz ] || skip "xen-hypervisor-4.17-amd64 missing"
mem_kib=$(awk '/MemAvailable/{print $2}' /proc/meminfo)
[ "$mem_kib" -gt $((3 * 1024 * 1024)) ] || skip "needs 3 GiB of free memory, have $((mem_kib / 1024)) MiB"
free_kib=$(df -Pk "$(dirname "$cache")" | awk 'NR==2{print $4}')
[ "$free_kib" -gt $((6 * 1024 * 1024)) ] || skip "needs 6 GiB free disk for the image cache"
[ -x "$build/bin/tapdisk-map" ] || [ -n "${TAPMAP_LAB_FORCE:-}" ] || skip "tapdisk-map not built in $build"

mkdir -p "$results" "$cache"
t_start=$(date +%s)
entry=$("$here/build_rootfs.sh" "$cache"); rootfs_rc=$?
# 77: the machine cannot fetch the dom0 root's packages (no mirror reachable): not a
# failure of tapmap, so the lab is skipped with the reason build_rootfs.sh printed.
[ "$rootfs_rc" = 77 ] && skip "the dom0 root cannot be built here (see above)"
[ "$rootfs_rc" = 0 ] || { echo "FAIL: building the dom0 root" >&2; exit 1; }
work=$(mktemp -d /var/tmp/tapmap-lab.XXXXXX)
cleanup() { [ -n "${qpid:-}" ] && kill "$qpid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

echo "lab: dom0 root from $entry; installing tapmap"
cp -a "$entry/rootfs" "$work/rootfs"
DESTDIR="$work/rootfs" cmake --install "$build" --prefix /usr > "$results/install.log" 2>&1 \
  || { echo "FAIL: cmake --install into the dom0 root (see $results/install.log)"; exit 1; }
kver=$(ls "$work/rootfs/lib/modules" | sort -V | tail -n 1)
"$here/make_guest_initrd.sh" "$work/rootfs/lib/modules/$kver" "$work/rootfs/boot/domU-initrd.gz" \
  || { echo "FAIL: guest initramfs"; exit 1; }
# PV/PVH guests boot the kernel uncompressed (an ELF vmlinux, which xl loads as it is),
# so xl does not XZ-decompress it in the emulated dom0 for every guest. (Its failures
# to, "unable to XZ decompress kernel", were the emulated-CPU fault described at the
# -cpu line below.)
xz_at=$(LC_ALL=C grep -abo $'\xfd7zXZ' "$work/rootfs/boot/vmlinuz" | head -n 1 | cut -d: -f1)
# (tail ends on SIGPIPE once xz has its one stream: the ELF header is what is checked.)
[ -n "$xz_at" ] && tail -c +"$((xz_at + 1))" "$work/rootfs/boot/vmlinuz" \
  | xz -dc --single-stream > "$work/rootfs/boot/vmlinux-domU" 2>/dev/null
if [ -s "$work/rootfs/boot/vmlinux-domU" ] &&
   [ "$(head -c 4 "$work/rootfs/boot/vmlinux-domU" | od -An -c | tr -d ' ')" = '177ELF' ]; then
  echo "lab: guests boot an uncompressed kernel ($(($(stat -c %s "$work/rootfs/boot/vmlinux-domU") >> 20)) MiB)"
else
  rm -f "$work/rootfs/boot/vmlinux-domU"; echo "lab: guests boot the compressed kernel (no XZ payload found)"
fi
install -d "$work/rootfs/usr/lib/tapmap-lab"
install -m 0755 "$here/dom0/lab-init" "$work/rootfs/sbin/tapmap-lab-init"
install -m 0644 "$here/dom0/cases.sh" "$work/rootfs/usr/lib/tapmap-lab/cases.sh"
mkfs.ext4 -q -F -L dom0root -d "$work/rootfs" "$work/root.img" 3G || { echo "FAIL: mkfs"; exit 1; }
rm -rf "$work/rootfs"

timeout_s=$([ "$suite" = short ] && echo 600 || echo 2700)
echo "lab: booting Xen 4.17 under QEMU (suite $suite, limit ${timeout_s}s); serial log: $results/serial.log"
# -smap / -rdtscp: without them dom0 faults at once / PVH guests spin (see the issue).
# -avx/-avx2: glibc then keeps to its SSE paths; with TCG's young AVX emulation we saw
# dom0 and guest processes crash inside malloc at random (an emulator-level glitch).
# -xsave/-fsgsbase: with them, dom0 userland (xl, bash, tail, tapdisk-map, blkback's
# own hotplug scripts) faulted at random as soon as two guests ran at once, the same
# with kernel blkback as with tapdisk-map; without them Xen and Linux switch FPU and
# segment-base state with FXSAVE and MSR writes, and four guests run side by side.
tcg_threads=${TAPMAP_LAB_TCG_THREADS:-multi}
cpu=${TAPMAP_LAB_CPU:-max,-smap,-rdtscp,-avx,-avx2,-xsave,-fsgsbase}
echo "lab: QEMU -cpu $cpu"
qemu-system-x86_64 -accel "tcg,thread=$tcg_threads,tb-size=256" -cpu "$cpu" -smp 2 -m 2048 \
  -display none -serial "file:$results/serial.log" -monitor none -no-reboot \
  -drive "file=$work/root.img,if=virtio,format=raw,cache=unsafe" \
  -kernel "$entry/xen.elf" \
  -append "console=com1 com1=115200,8n1 loglvl=all guest_loglvl=all dom0_mem=768M,max:768M bootscrub=false" \
  -initrd "$entry/vmlinuz console=hvc0 earlyprintk=xen root=/dev/vda rw init=/sbin/tapmap-lab-init lab_suite=$suite,$entry/initrd.img" &
qpid=$!
( sleep "$timeout_s"; kill "$qpid" 2>/dev/null ) & watchdog=$!
wait "$qpid"; qpid=""
kill "$watchdog" 2>/dev/null

tr -d '\r' < "$results/serial.log" | grep -a '^LABRESULT' | sed 's/^LABRESULT //' > "$results/cases.txt"
{
  echo "tapmap Xen lab, suite $suite, $(date -u +%FT%TZ), $(($(date +%s) - t_start)) s"
  printf '%-32s %-8s %8s  %s\n' CASE RESULT SECONDS DETAIL
  while read -r name verdict secs detail; do
    printf '%-32s %-8s %8s  %s\n' "$name" "$verdict" "$secs" "$detail"
  done < "$results/cases.txt"
} > "$results/summary.txt"
cat "$results/summary.txt"
two_rc=0   # the full suite: then the two-host suite (its SKIPPED line is not a failure)
if [ "$suite" = full ]; then
  "$here/two_host.sh" "$build" --results "$results/two-host"; two_rc=$?
  [ "$two_rc" = 77 ] && two_rc=0
fi
if ! tr -d '\r' < "$results/serial.log" | grep -aq '=== LAB LAB DONE'; then
  echo "lab: FAIL: the lab did not finish (see $results/serial.log)"; exit 1
fi
[ -s "$results/cases.txt" ] || { echo "lab: FAIL: no case ran"; exit 1; }
if grep -q ' FAIL ' "$results/cases.txt"; then exit 1; fi
exit "$two_rc"
