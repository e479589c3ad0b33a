#!/usr/bin/env bash
# Builds (or reuses) the lab's dom0 root filesystem directory and guest initramfs in a
# cache outside the repository, keyed on the versions of the Debian packages that go
# into it and on the lab's own build scripts.
#
# Usage: tests/lab/build_rootfs.sh CACHE_DIR   → prints the path of the ready cache entry
# The entry holds: rootfs/ (debootstrap minbase + Xen 4.17 userland matching the
# hypervisor + the kernel's modules), xen.elf (the hypervisor as a multiboot ELF),
# vmlinuz, initrd.img (dom0). The guest initramfs is made per run (make_guest_initrd.sh).
set -euo pipefail
cache=${1:?cache dir}
here=$(cd "$(dirname "$0")" && pwd)

# The newest Debian kernel installed with both its image and its modules (the lab
# boots it as dom0 and guest kernel; the machine's own running kernel is irrelevant).
kver=$(for d in /lib/modules/*; do v=${d##*/}; [ -f "/boot/vmlinuz-$v" ] && [ -d "$d/kernel" ] && echo "$v"; done \
       | sort -V | tail -n 1)
[ -n "$kver" ] || { echo "lab: no kernel with /boot/vmlinuz-* and /lib/modules/* (make deps installs linux-image-amd64)" >&2; exit 1; }
ver() { dpkg-query -W -f='${Version}' "$1"; }
key_text="kernel=$kver:$(ver linux-image-$kver 2>/dev/null || echo ?)
xen=$(ver xen-hypervisor-4.17-amd64) utils=$(ver xen-utils-4.17)
busybox=$(ver busybox-static)
scripts=$(sha256sum < "$here/build_rootfs.sh" | cut -c1-16)"
key=$(echo "$key_text" | sha256sum | cut -c1-16)
entry="$cache/$key"
if [ -f "$entry/READY" ]; then echo "$entry"; exit 0; fi

rm -rf "$entry.tmp"; mkdir -p "$entry.tmp"
cd "$entry.tmp"
echo "$key_text" > KEY
mirror=$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -n 1)
mirror=${mirror:-$(awk '/^deb /{print $2; exit}' /etc/apt/sources.list 2>/dev/null)}
mirror=${mirror:-http://deb.debian.org/debian}

echo "lab: debootstrap bookworm from $mirror (~1 min)" >&2
debootstrap --variant=minbase \
  --include=xen-utils-4.17,xenstore-utils,kmod,iproute2,busybox,procps,e2fsprogs,qemu-utils,libnbd-bin,jq,libcapnp-0.9.2,liblmdb0,liburing2,libssl3,libboost-system1.74.0,librados2,util-linux,qemu-system-xen,seabios \
  bookworm rootfs "$mirror" > debootstrap.log 2>&1 || {
    tail -20 debootstrap.log >&2
    if grep -qiE "Failed getting release file|Couldn't download|Temporary failure resolving|Could not resolve" debootstrap.log; then
      echo "lab: debootstrap could not reach $mirror" >&2; exit 77
    fi
    exit 1; }

# Xen userland exactly matching the host's hypervisor package.
mkdir -p debs
(cd debs && apt-get download -q \
   "xen-utils-4.17=$(ver xen-utils-4.17)" "xen-utils-common=$(ver xen-utils-common)" \
   "xenstore-utils=$(ver xenstore-utils)" \
   $(for p in libxenstore4 libxengnttab1 libxenevtchn1 libxenctrl4.17 libxenmisc4.17 libxencall1 \
              libxendevicemodel1 libxenforeignmemory1 libxenhypfs1 libxentoolcore1 libxentoollog1 \
              libxenguest4.17 libxenlight4.17 libxenstat4.17 libxenvchan4.17; do
        v=$(ver $p 2>/dev/null) && [ -n "$v" ] && echo "$p=$v"; done) >/dev/null 2>&1 || true)
cp debs/*.deb rootfs/tmp/ 2>/dev/null || true
chroot rootfs sh -c 'dpkg -i /tmp/*.deb >/dev/null 2>&1 || true; rm -f /tmp/*.deb'

mkdir -p rootfs/lib/modules rootfs/boot rootfs/var/log/xen/console
cp -a "/lib/modules/$kver" rootfs/lib/modules/
cp "/boot/vmlinuz-$kver" vmlinuz
cp "/boot/initrd.img-$kver" initrd.img
zcat /boot/xen-4.17-amd64.gz > xen.elf
echo 'XENCONSOLED_ARGS="--log=guest --log-dir=/var/log/xen/console"' >> rootfs/etc/default/xen
echo dom0 > rootfs/etc/hostname

cp vmlinuz rootfs/boot/
touch READY
cd "$cache"; rm -rf "$entry"; mv "$entry.tmp" "$entry"
echo "$entry"
