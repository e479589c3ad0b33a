#!/usr/bin/env bash
# Installs the build into a temporary DESTDIR exactly as `make install DESTDIR=D
# PREFIX=/usr` does, then checks what an operator's machine would get:
#  - every program, the hotplug script, units, man pages and the config are in place;
#  - `systemd-analyze verify` accepts both units with no warning, against that tree
#    (--root), so ExecStart= must name installed executables;
#  - the man pages render without groff warnings; the script parses;
#  - a second install keeps an edited /etc/tapmap/tapmap.conf;
#  - the installed tapmap.conf is accepted by the installed tapmap.
# Usage: tools_install_test.sh BUILD_DIR. Exits 77 (skipped) while the daemons are
# not built yet.
set -u
build=${1:?usage: $0 BUILD_DIR}
root=$(mktemp -d /tmp/tools_install.XXXXXX)
trap 'rm -rf "$root"' EXIT
failures=0
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }

if ! DESTDIR="$root" cmake --install "$build" --prefix /usr >"$root.log" 2>&1; then
  cat "$root.log"; rm -f "$root.log"; echo "FAIL: cmake --install"; exit 1
fi
rm -f "$root.log"

for f in usr/sbin/tapmap etc/xen/scripts/block-tapmap; do
  [ -x "$root/$f" ] || fail "$f missing or not executable"
done
for f in usr/lib/systemd/system/mapserver.service usr/lib/systemd/system/tapdisk-map.service \
         usr/share/man/man1/tapmap.1 usr/share/man/man8/mapserver.8 usr/share/man/man8/tapdisk-map.8 \
         usr/share/man/man8/block-tapmap.8 etc/tapmap/tapmap.conf usr/share/doc/tapmap/tapmap.conf.example; do
  [ -f "$root/$f" ] || fail "$f missing"
done

# The script and units must name the installed programs.
grep -q 'TAPMAP_CLI:-/usr/sbin/tapmap}' "$root/etc/xen/scripts/block-tapmap" ||
  fail "block-tapmap does not call /usr/sbin/tapmap"
bash -n "$root/etc/xen/scripts/block-tapmap" || fail "block-tapmap does not parse"

for page in "$root"/usr/share/man/man*/*; do
  warnings=$(LC_ALL=C groff -man -ww -z "$page" 2>&1)
  [ -z "$warnings" ] || fail "$(basename "$page"): $warnings"
done

# Config: the installed file is accepted (exit 3 = parsed, daemon not reachable; 2
# would be a config error), and a reinstall keeps an operator's edits.
"$root/usr/sbin/tapmap" vbd list --config "$root/etc/tapmap/tapmap.conf" \
    --control "$root/no-such.sock" >/dev/null 2>&1
rc=$?
[ $rc -eq 3 ] || fail "installed tapmap.conf rejected by tapmap (exit $rc)"
echo "# edited by the operator" >>"$root/etc/tapmap/tapmap.conf"
DESTDIR="$root" cmake --install "$build" --prefix /usr >/dev/null 2>&1 || fail "second install"
grep -q "edited by the operator" "$root/etc/tapmap/tapmap.conf" || fail "reinstall overwrote tapmap.conf"

if [ ! -x "$root/usr/sbin/mapserver" ] || [ ! -x "$root/usr/sbin/tapdisk-map" ]; then
  echo "SKIP: systemd-analyze verify needs the mapserver and tapdisk-map programs, not built yet"
  [ $failures -eq 0 ] || exit 1
  exit 77
fi

# systemd resolves the units' dependencies (sysinit.target, ...) inside --root: give
# it the host's unit files, without replacing ours.
cp -rn /lib/systemd/system/. "$root/usr/lib/systemd/system/"
out=$(systemd-analyze verify --man=no --root="$root" \
        /usr/lib/systemd/system/mapserver.service /usr/lib/systemd/system/tapdisk-map.service 2>&1)
rc=$?
[ $rc -eq 0 ] || fail "systemd-analyze verify exit $rc"
[ -z "$out" ] || fail "systemd-analyze verify warnings:
$out"

if [ $failures -ne 0 ]; then echo "$failures failure(s)"; exit 1; fi
echo "install tree OK"
