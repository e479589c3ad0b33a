#!/usr/bin/env bash
# Makes the lab guests' initramfs (~3 MB): busybox-static, xen-blkfront, ext4 and IDE
# disk modules of the given kernel, and guest/init as /init.
# Usage: tests/lab/make_guest_initrd.sh MODULES_DIR OUTPUT.gz
set -euo pipefail
mods=${1:?modules dir, e.g. rootfs/lib/modules/6.1.0-x-amd64}
out=${2:?output}
here=$(cd "$(dirname "$0")" && pwd)
g=$(mktemp -d)
trap 'rm -rf "$g"' EXIT
mkdir -p "$g/bin" "$g/lib" "$g/proc" "$g/sys" "$g/dev" "$g/mnt" "$g/tmp"
cp /bin/busybox "$g/bin/busybox"
# (The IDE chain, scsi_common … sd_mod, is for the HVM case's emulated disk.)
for m in xen-blkfront ext4 jbd2 mbcache crc16 crc32c_generic libcrc32c \
         scsi_common scsi_mod libata ata_piix crct10dif_common crc-t10dif crc64 crc64-rocksoft t10-pi sd_mod; do
  f=$(find "$mods" -name "$m.ko*" | head -n 1)
  [ -n "$f" ] || continue
  case "$f" in *.xz) xz -dc "$f" > "$g/lib/$m.ko" ;; *) cp "$f" "$g/lib/$m.ko" ;; esac
done
[ -f "$g/lib/xen-blkfront.ko" ] || { echo "make_guest_initrd: no xen-blkfront in $mods" >&2; exit 1; }
install -m 0755 "$here/guest/init" "$g/init"
(cd "$g" && find . | cpio -o -H newc 2>/dev/null | gzip -1) > "$out"
