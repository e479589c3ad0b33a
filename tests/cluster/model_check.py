#!/usr/bin/python3
"""tests/cluster/model_check.py — a randomized model check of tapmap on the cluster rig.

Runs thousands of random steps spread over the rig's hosts (open rw/ro, close, writes of
whole blocks, partial blocks and multi-block spans, flush, read, trim, write-zeroes,
snapshot, clone, resize, delete) against a reference model of every volume's content,
and compares every read with the model. On the first wrong read (or any outcome the
model says cannot happen) it prints the seed, the step and the difference, then shrinks
the recorded step list (delta debugging, replayed on a fresh rig state) and prints the
shortest failing list, replayable with --replay FILE.

Started by tests/cluster/run_model_check.sh, which builds the rig (tests/cluster/rig.sh)
and passes --rig-env RIG_DIR/rig.env. NBD clients are libnbd's Python binding
(python3-libnbd) on each host's unix socket; admin operations are the tapmap CLI in the
host's network namespace.

What the model promises (the product's contract, each acceptance set justified):
  * One rw opener host per volume: a host's rw open while another host holds the volume
    rw is admitted as a standby (live migration; the driver closes it again at once) or,
    if the volume has a standby already, refused busy. Connections on one host share its
    open volume. A host's NBD close is
    asynchronous: before another host opens rw (or a volume is deleted, snapshotted or
    resized) the driver polls `tapmap volume info` until the lease is gone (bounded).
  * A rw opener's reads return exactly what was written (its own writes at once; what
    earlier writers wrote, once their lease ended).
  * Snapshots read exactly the content at the time they were taken (the driver flushes
    the writer first); clones start with it.
  * A read-only opener (export name VOLUME@ro) of a volume another host — or its own
    host — writes sees, per 4 KiB sector, the content as of the last flush or as of any
    write since (a history state of that sector; never a mix within a sector).
  * Write-zeroes reads exact zeros. Trim: whole pool blocks inside the range read
    zeros; in partial blocks each 4 KiB sector reads either its old content or the old
    content with the trimmed part zeroed (the model keeps both candidates until a read
    by an exact reader settles which one the volume holds).
  * Resize: a new connection sees the new size; grown parts read zeros; shrinking
    truncates (data beyond the end is gone, also after growing again). A shrink that
    does not end on a pool block boundary is refused (invalid-argument), unchanged.
  * Delete of a volume with openers is refused (busy); without, it succeeds.
"""

import argparse
import copy
import json
import os
import random
import signal
import struct
import subprocess
import sys
import threading
import time

try:
    import nbd
except ImportError:  # pragma: no cover
    sys.stderr.write("model_check: the Python libnbd binding is missing (apt-get install python3-libnbd)\n")
    sys.exit(77)

SECTOR = 4096            # the granularity of the read-only opener's acceptance sets
NBD_SECTOR = 512         # request alignment of the NBD export
MAGIC = b"TMW1"          # every 512-byte unit written starts with MAGIC, write id, offset
WAIT_S = 20.0            # bound of every wait for the mapserver to see a close
STEP_TIMEOUT_S = 90.0    # a step taking longer is reported as hung
SETTLED_OTHER = [0]      # uncertain sectors (trim, crash) an exact read found not holding the latest data


class CheckFailure(Exception):
    """A read differing from the model, or an outcome the model says cannot happen."""

    def __init__(self, kind, message):
        super().__init__(message)
        self.kind = kind          # "wrong-read" or "unexpected"
        self.message = message


# ---------------------------------------------------------------------------------------
# Data written: self-describing, so a wrong read says whose data it returned

_fill_cache = {}


def pattern(wid, off, length):
    """The bytes write `wid` puts at volume offset `off` (512-aligned), `length` bytes.
    Each 512-byte unit: MAGIC, wid (u32), its own volume offset (u64), then a fill byte."""
    fill = _fill_cache.get(wid)
    if fill is None:
        fill = bytes([wid % 251 + 1]) * (NBD_SECTOR - 16)
        if len(_fill_cache) > 4096:
            _fill_cache.clear()
        _fill_cache[wid] = fill
    return b"".join(MAGIC + struct.pack("<IQ", wid, o) + fill for o in range(off, off + length, NBD_SECTOR))


def describe(chunk, wid_steps):
    """Says what a 512-byte unit holds: zeros, whose write, or raw bytes."""
    if not any(chunk):
        return "zeros"
    if len(chunk) >= 16 and chunk[:4] == MAGIC:
        wid, o = struct.unpack("<IQ", chunk[4:16])
        intact = chunk == pattern(wid, o, NBD_SECTOR)[: len(chunk)]
        where = f" (step {wid_steps[wid]})" if wid in wid_steps else ""
        return f"data of write #{wid}{where} for volume offset {o}" + ("" if intact else " (damaged)")
    zeros = sum(1 for b in chunk if b == 0)
    return f"unknown bytes {bytes(chunk[:16]).hex()}… ({zeros}/{len(chunk)} zero bytes)"


# ---------------------------------------------------------------------------------------
# The reference model


class Vol:
    """The model of one volume (or snapshot): its content and, while a writer is active
    or closing, what other openers may see (flushed state plus the history since)."""

    def __init__(self, lid, size, snap=False, cur=None, unc=None):
        self.lid = lid                     # logical name in the step list (v3, s7)
        self.size = size
        self.snap = snap
        self.cur = bytearray(size) if cur is None else cur
        self.unc = {} if unc is None else unc   # sector -> set of candidate contents (cur's included)
        self.writer = None                 # host holding the rw lease (open rw connections)
        self.last_writer = None            # the host of the latest lease (also for clones: their source's)
        self.closing = set()               # hosts whose last connection closed, not yet seen closed
        self.ro_closing = set()            # hosts whose last VOLUME@ro connection closed (export may linger)
        self.closing_writer = None         # host whose rw lease is ending
        self.flushed = None                # bytes as of the writer's last flush (None: = cur)
        self.flushed_unc = {}
        self.pend = {}                     # sector -> set of contents written since the flush
        self.conns = set()                 # open connection ids

    def relaxed(self):
        return self.writer is not None or self.closing_writer is not None

    def sector_cands(self, s, content, unc):
        if s in unc:
            return unc[s]
        return {bytes(content[s * SECTOR:(s + 1) * SECTOR])}

    # -- updates -------------------------------------------------------------------------

    def _record_pending(self, off, length):
        if not self.relaxed():
            return
        for s in range(off // SECTOR, (off + length + SECTOR - 1) // SECTOR):
            bucket = self.pend.setdefault(s, set())
            bucket |= self.sector_cands(s, self.cur, self.unc)

    def _splice_unc(self, off, data):
        """Applies data at off to every candidate of uncertain sectors it touches."""
        end = off + len(data)
        for s in range(off // SECTOR, (end + SECTOR - 1) // SECTOR):
            if s not in self.unc:
                continue
            lo, hi = max(off, s * SECTOR), min(end, (s + 1) * SECTOR)
            if lo == s * SECTOR and hi == (s + 1) * SECTOR:
                del self.unc[s]
                continue
            part = data[lo - off:hi - off]
            new = set()
            for c in self.unc[s]:
                b = bytearray(c)
                b[lo - s * SECTOR:hi - s * SECTOR] = part
                new.add(bytes(b))
            self.unc[s] = new if len(new) > 1 else None
            if self.unc[s] is None:
                del self.unc[s]

    def write(self, off, data):
        self._splice_unc(off, data)
        self.cur[off:off + len(data)] = data
        self._record_pending(off, len(data))

    def zero(self, off, length):
        self.write(off, bytes(length))

    def trim(self, off, length, block):
        """Whole pool blocks inside [off, off+length) become zeros; the rest of the range
        may keep its old content: per 4 KiB sector, old or zeroed (both kept)."""
        end = off + length
        first_whole = -(-off // block) * block
        last_whole = (end // block) * block
        whole = (first_whole, last_whole) if last_whole > first_whole else (off, off)
        # the partial parts: sectors get a zeroed alternative
        partial = [(off, whole[0]), (whole[1], end)] if whole[1] > whole[0] else [(off, end)]
        for lo, hi in partial:
            if hi <= lo:
                continue
            for s in range(lo // SECTOR, (hi + SECTOR - 1) // SECTOR):
                a, b = max(lo, s * SECTOR), min(hi, (s + 1) * SECTOR)
                cands = self.sector_cands(s, self.cur, self.unc)
                new = set(cands)
                for c in cands:
                    z = bytearray(c)
                    z[a - s * SECTOR:b - s * SECTOR] = bytes(b - a)
                    new.add(bytes(z))
                if len(new) > 1:
                    self.unc[s] = new
                else:
                    self.unc.pop(s, None)
        if whole[1] > whole[0]:
            self._splice_unc(whole[0], bytes(whole[1] - whole[0]))
            self.cur[whole[0]:whole[1]] = bytes(whole[1] - whole[0])
        self._record_pending(off, length)

    def flush(self):
        if self.relaxed():
            self.flushed = bytes(self.cur)
            self.flushed_unc = copy.deepcopy(self.unc)
            self.pend = {}

    def begin_lease(self, host):
        if self.writer is None and self.closing_writer is None:
            self.flushed = bytes(self.cur)
            self.flushed_unc = copy.deepcopy(self.unc)
            self.pend = {}
        # a same-host reopen during the close continues with the history kept (looser)
        self.closing_writer = None
        self.writer = host

    def crash(self):
        """The writer's host died (kill -9): writes since its last flush may be lost. Per
        4 KiB sector the volume now holds its flushed content or its content after any
        write since (copy-on-write data not yet committed is lost, in-place data stays);
        exact reads settle which."""
        for s_, states in self.pend.items():
            cands = set(states) | self.sector_cands(s_, self.cur, self.unc)
            if self.flushed is not None:
                cands |= self.sector_cands(s_, self.flushed, self.flushed_unc)
            if len(cands) > 1:
                self.unc[s_] = cands

    def lease_closed(self):
        self.closing_writer = None
        if self.writer is None:
            self.flushed = None
            self.flushed_unc = {}
            self.pend = {}

    def resize(self, size):
        def fit(buf):
            if buf is None:
                return None
            return bytes(buf[:size]) + bytes(max(0, size - len(buf)))
        nsec = size // SECTOR
        self.cur = bytearray(fit(self.cur))
        self.unc = {s: c for s, c in self.unc.items() if s < nsec}
        if self.flushed is not None:
            self.flushed = fit(self.flushed)
            self.flushed_unc = {s: c for s, c in self.flushed_unc.items() if s < nsec}
        self.pend = {s: c for s, c in self.pend.items() if s < nsec}
        self.size = size

    # -- checks --------------------------------------------------------------------------

    def check(self, off, got, relaxed):
        """None if `got` (read at off) is allowed, else (offset, expected, got) of the
        first differing 512-byte unit. Exact readers settle uncertain sectors."""
        n = len(got)
        if got == self.cur[off:off + n]:
            if not relaxed:
                for s in range(off // SECTOR, (off + n + SECTOR - 1) // SECTOR):
                    if s in self.unc and off <= s * SECTOR and (s + 1) * SECTOR <= off + n:
                        del self.unc[s]
            return None
        settle = {}
        for s in range(off // SECTOR, (off + n + SECTOR - 1) // SECTOR):
            lo, hi = max(off, s * SECTOR), min(off + n, (s + 1) * SECTOR)
            g = got[lo - off:hi - off]
            a, b = lo - s * SECTOR, hi - s * SECTOR
            if g == self.cur[lo:hi] and s not in self.unc:
                continue
            cands = set(self.sector_cands(s, self.cur, self.unc))
            if relaxed:
                if self.flushed is not None:
                    cands |= self.sector_cands(s, self.flushed, self.flushed_unc)
                cands |= self.pend.get(s, set())
            match = [c for c in cands if c[a:b] == g]
            if match:
                if not relaxed and s in self.unc and a == 0 and b == SECTOR:
                    settle[s] = match[0]
                continue
            # first differing 512-byte unit within this sector
            for u in range(lo, hi, NBD_SECTOR):
                if got[u - off:u - off + NBD_SECTOR] != self.cur[u:u + NBD_SECTOR]:
                    return (u, bytes(self.cur[u:u + NBD_SECTOR]), bytes(got[u - off:u - off + NBD_SECTOR]), len(cands))
            return (lo, bytes(self.cur[lo:lo + NBD_SECTOR]), bytes(g[:NBD_SECTOR]), len(cands))
        for s, c in settle.items():
            if c != self.cur[s * SECTOR:(s + 1) * SECTOR]:
                SETTLED_OTHER[0] += 1
            self.cur[s * SECTOR:(s + 1) * SECTOR] = c
            del self.unc[s]
        return None


class Conn:
    def __init__(self, cid, host, vol, kind, handle, size):
        self.cid = cid
        self.host = host
        self.vol = vol        # logical volume id
        self.kind = kind      # "rw", "ro" (VOLUME@ro of a writable volume), "snap"
        self.h = handle
        self.size = size
        self.attached = False  # shares the host's rw open (rw connections, and ro ones opened beside them)


# ---------------------------------------------------------------------------------------
# The rig


class Rig:
    def __init__(self, env_file):
        self.env = {}
        with open(env_file) as f:
            for line in f:
                line = line.strip()
                if line and "=" in line and not line.startswith("#"):
                    k, v = line.split("=", 1)
                    self.env[k] = v
        self.hosts = int(self.env["RIG_HOSTS"])
        self.bin = self.env["RIG_BIN"]
        bs = self.env.get("RIG_BLOCK_SIZE", "64K")
        self.block = int(bs[:-1]) * 1024 if bs.upper().endswith("K") else int(bs)
        self.cli_calls = 0

    def ns(self, h):
        return self.env[f"RIG_NS_H{h}"]

    def sock(self, h):
        return self.env[f"RIG_NBD_H{h}"]

    def cli(self, h, *args):
        """tapmap --json ARGS in host h's namespace: (exit code, parsed JSON or text)."""
        self.cli_calls += 1
        cmd = ["ip", "netns", "exec", self.ns(h), f"{self.bin}/tapmap", "--config", self.env[f"RIG_CONF_H{h}"],
               "--json"] + [str(a) for a in args]
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        try:
            doc = json.loads(p.stdout) if p.stdout.strip() else {}
        except ValueError:
            doc = {"raw": p.stdout}
        if p.returncode != 0 and "error" not in doc:
            doc["error"] = {"code": "?", "message": (p.stderr or p.stdout).strip()}
        return p.returncode, doc

    def info(self, h, name):
        rc, doc = self.cli(h, "volume", "info", name)
        if rc != 0:
            raise CheckFailure("unexpected", f"h{h}: tapmap volume info {name} failed: {doc.get('error')}")
        return doc.get("volume", doc)

    def nbd_open_names(self, h):
        """The export names host h's NBD exports have open (tapmap nbd list)."""
        rc, doc = self.cli(h, "nbd", "list")
        if rc != 0:
            raise CheckFailure("unexpected", f"h{h}: tapmap nbd list failed: {doc.get('error')}")
        return {n for e in doc.get("exports", []) for n in e.get("volumes_open", [])}

    def connect(self, h, export):
        c = nbd.NBD()
        c.set_export_name(export)
        c.connect_unix(self.sock(h))
        return c

    # -- daemons: crashes, restarts, and a fresh state when replaying ---------------------

    def _stop(self, pidfile, sig):
        """Signals the daemon whose pid is in pidfile and waits (bounded) until it is gone."""
        try:
            pid = int(open(pidfile).read().strip())
        except (OSError, ValueError):
            return
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.time() + WAIT_S
        while time.time() < deadline:
            try:
                os.waitpid(pid, os.WNOHANG)   # our own child after an earlier restart
            except ChildProcessError:
                pass                          # the rig's shell reaps its own
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            if sig != signal.SIGKILL and time.time() > deadline - WAIT_S / 2:
                os.kill(pid, signal.SIGKILL)
            time.sleep(0.02)
        raise RuntimeError(f"pid {pid} ({pidfile}) did not end")

    def _spawn(self, cmd, log, pidfile):
        p = subprocess.Popen(cmd, stdout=open(log, "ab"), stderr=subprocess.STDOUT)
        with open(pidfile, "w") as f:
            f.write(f"{p.pid}\n")
        return p

    def restart_host(self, h, sig=signal.SIGTERM):
        """Stops host h's tapdisk-map (SIGTERM, or SIGKILL as a crash) and starts it again
        with the same command line; waits for its sockets."""
        d = f"{self.env['RIG_DIR']}/h{h}"
        self._stop(f"{d}/pid", sig)
        for name in ("ctl.sock", "nbd.sock"):
            try:
                os.unlink(f"{d}/{name}")
            except FileNotFoundError:
                pass
        p = self._spawn(["ip", "netns", "exec", self.ns(h), f"{self.bin}/tapdisk-map", "--config",
                         self.env[f"RIG_CONF_H{h}"]], f"{d}/tapdisk-map.log", f"{d}/pid")
        deadline = time.time() + WAIT_S
        while not (os.path.exists(f"{d}/ctl.sock") and os.path.exists(f"{d}/nbd.sock")):
            if time.time() > deadline or p.poll() is not None:
                raise RuntimeError(f"h{h} did not start again (log {d}/tapdisk-map.log)")
            time.sleep(0.02)

    def restart_hosts(self):
        for h in range(1, self.hosts + 1):
            self.restart_host(h)

    def restart_mapserver(self):
        """SIGTERM to the mapserver, started again with the rig's command line; waits
        until the CLI reaches it."""
        d = f"{self.env['RIG_DIR']}/ms"
        self._stop(f"{d}/pid", signal.SIGTERM)
        cmd = ["ip", "netns", "exec", self.env["RIG_NS_MS"], f"{self.bin}/mapserver", "serve", "--config",
               f"{d}/tapmap.conf", "--listen", self.env["RIG_SERVER"]]
        if os.environ.get("RIG_RECALL_TIMEOUT"):
            cmd += ["--recall-timeout", os.environ["RIG_RECALL_TIMEOUT"]]
        p = self._spawn(cmd, f"{d}/mapserver.log", f"{d}/pid")
        deadline = time.time() + WAIT_S
        while self.cli(1, "volume", "list")[0] != 0:
            if time.time() > deadline or p.poll() is not None:
                raise RuntimeError(f"the mapserver did not start again (log {d}/mapserver.log)")
            time.sleep(0.02)


# ---------------------------------------------------------------------------------------
# Executing steps against the rig and the model


OPS = ("create", "open", "close", "write", "flush", "read", "trim", "zero", "snapshot", "clone", "resize", "delete",
       "crash", "restart_ms")


class Runner:
    """Executes steps (dicts) on the rig, keeping the model; raises CheckFailure."""

    def __init__(self, rig, prefix, ro_enabled, no_reopen_wait=False):
        self.rig = rig
        self.no_reopen_wait = no_reopen_wait
        self.prefix = prefix
        self.ro = ro_enabled
        self.vols = {}
        self.conns = {}
        self.wid_steps = {}
        self.counts = {op: 0 for op in OPS}
        self.skipped = 0
        self.reads = 0
        self.relaxed_reads = 0
        self.older_accepted = 0   # relaxed reads that returned something other than the latest data
        self.lease_moves = 0      # rw leases taken on another host than the volume's previous one
        self.bytes_compared = 0
        self.refusals = 0
        self.standbys = 0
        self.waits = 0
        self.step_no = 0

    def name(self, lid):
        return self.prefix + lid

    def export(self, conn_kind, lid):
        return self.name(lid) + ("@ro" if conn_kind == "ro" else "")

    # -- waiting for asynchronous closes -------------------------------------------------

    def settle(self, v, need):
        """Waits until the mapserver no longer counts the closing openers of v.
        need="writer": the rw lease is gone; "all": no openers at all."""
        if need == "writer" and v.closing_writer is None:
            return
        if need == "all" and not v.closing and v.closing_writer is None:
            return
        self.waits += 1
        deadline = time.time() + WAIT_S
        host = random.Random(self.step_no).randint(1, self.rig.hosts)
        while True:
            info = self.rig.info(host, self.name(v.lid))
            writer_gone = info.get("writer", "") == ""
            if need == "writer" and writer_gone:
                break
            if need == "all" and info.get("openers", 0) == 0:
                break
            if time.time() > deadline:
                raise CheckFailure("unexpected", f"{self.name(v.lid)}: {WAIT_S:.0f} s after its last connections on "
                                                 f"{sorted(v.closing)} closed, the mapserver still shows writer "
                                                 f"'{info.get('writer')}', {info.get('openers')} openers")
            time.sleep(0.02)
        if writer_gone:
            v.lease_closed()
        if need == "all":
            v.closing.clear()

    # -- one step ------------------------------------------------------------------------

    def run(self, step):
        """Executes one step; returns False if it was skipped (its preconditions do not
        hold in this replay), True otherwise."""
        op = step["op"]
        fn = getattr(self, "op_" + op)
        done = fn(step)
        if done is False:
            self.skipped += 1
            return False
        self.counts[op] += 1
        return True

    def _conn(self, step, want_rw=False):
        c = self.conns.get(step.get("conn"))
        if c is None or (want_rw and c.kind != "rw"):
            return None
        return c

    def _range_ok(self, c, off, length):
        v = self.vols[c.vol]
        return length > 0 and off + length <= min(c.size, v.size)

    def op_create(self, s):
        if s["vol"] in self.vols:
            return False
        rc, doc = self.rig.cli(s["host"], "volume", "create", self.name(s["vol"]), s["size"])
        if rc != 0:
            raise CheckFailure("unexpected", f"h{s['host']}: volume create {self.name(s['vol'])} failed: {doc.get('error')}")
        self.vols[s["vol"]] = Vol(s["vol"], s["size"])

    def _host_conns(self, v, h, pred=lambda c: True):
        return [self.conns[x] for x in sorted(v.conns) if self.conns[x].host == h and pred(self.conns[x])]

    def _wait_export_gone(self, v, h):
        """Waits until host h's NBD export no longer has VOLUME@ro open: the device of
        its last read-only connection is released asynchronously, and a new VOLUME@ro
        connection meanwhile would join it instead of opening anew."""
        export = self.export("ro", v.lid)
        self.waits += 1
        deadline = time.time() + WAIT_S
        while export in self.rig.nbd_open_names(h):
            if time.time() > deadline:
                raise CheckFailure("unexpected", f"h{h}: {export} still open in its NBD export {WAIT_S:.0f} s after "
                                                 f"its last connection closed")
            time.sleep(0.02)
        v.ro_closing.discard(h)

    def op_open(self, s):
        v = self.vols.get(s["vol"])
        if v is None or s["conn"] in self.conns:
            return False
        h = s["host"]
        kind = "snap" if v.snap else s["mode"]
        if kind == "ro" and not self.ro:
            return False
        expect_busy = False
        attached = kind == "rw"
        if kind == "rw":
            if v.writer is not None and v.writer != h:
                expect_busy = True
            elif v.closing_writer is not None and v.closing_writer != h:
                self.settle(v, "writer")
        elif kind == "ro":
            # A host shares one open volume: a VOLUME@ro connection joins the host's
            # other VOLUME@ro connections if there are any, else the engine's open of
            # the volume here: the rw one while this host holds the lease (the reader
            # then keeps the lease alive and reads exactly what the writer wrote), else
            # a read-only open at the mapserver.
            group = self._host_conns(v, h, lambda c: c.kind == "ro")
            if group:
                attached = group[0].attached
            else:
                if h in v.ro_closing:
                    self._wait_export_gone(v, h)
                if v.closing_writer == h:
                    self.settle(v, "writer")   # else it might join the volume being closed
                attached = v.writer == h
        export = self.export(kind, v.lid)
        try:
            handle = self.rig.connect(h, export)
        except nbd.Error as e:
            if expect_busy:
                self.refusals += 1
                if "NBD_OPT_GO" not in str(e):
                    raise CheckFailure("unexpected", f"h{h}: rw open of {export} while h{v.writer} holds it failed, "
                                                     f"but not by the server's refusal: {e}")
                return True
            raise CheckFailure("unexpected", f"h{h}: {kind} open of {export} refused: {e} "
                                             f"(model: writer h{v.writer}, closing {sorted(v.closing)})")
        if expect_busy:
            # Another host holds the lease: this open is a standby (a live migration's
            # destination, mapserver/doc/leases.md): admitted, not writable until the
            # holder lets go. The model drops it again at once (its promotion is covered
            # by the rig's l_* cases and the rpc test); its host closes it asynchronously.
            self.standbys += 1
            if handle.is_read_only():
                handle.shutdown()
                raise CheckFailure("unexpected", f"h{h}: standby rw open of {export} exported read-only")
            handle.shutdown()
            if not self._host_conns(v, h):
                v.closing.add(h)
            return True
        size = handle.get_size()
        ro = handle.is_read_only()
        c = Conn(s["conn"], h, v.lid, kind, handle, size)
        c.attached = attached
        self.conns[c.cid] = c
        v.conns.add(c.cid)
        if kind == "rw":
            if v.writer is None and v.last_writer not in (None, h):
                self.lease_moves += 1
            v.begin_lease(h)
            v.last_writer = h
        v.closing.discard(h)   # a reopen on h waits for (or joins) h's close in progress
        if size != v.size:
            raise CheckFailure("unexpected", f"h{h}: {export} exported with {size} bytes, the volume has {v.size}")
        if ro != (kind != "rw"):
            raise CheckFailure("unexpected", f"h{h}: {export} ({kind}) exported {'read-only' if ro else 'writable'}")

    def op_close(self, s):
        c = self.conns.pop(s["conn"], None)
        if c is None:
            return False
        v = self.vols[c.vol]
        v.conns.discard(c.cid)
        try:
            c.h.shutdown()
        except nbd.Error:
            pass
        c.h = None   # the handle is freed (and its socket closed) here
        if not self._host_conns(v, c.host):
            v.closing.add(c.host)
        if c.kind == "ro" and not self._host_conns(v, c.host, lambda x: x.kind == "ro"):
            v.ro_closing.add(c.host)
        if c.attached and v.writer == c.host and not self._host_conns(v, c.host, lambda x: x.attached):
            v.writer = None
            v.closing_writer = c.host

    def op_write(self, s):
        c = self._conn(s, want_rw=True)
        if c is None or not self._range_ok(c, s["off"], s["len"]):
            return False
        data = pattern(s["wid"], s["off"], s["len"])
        self.wid_steps[s["wid"]] = self.step_no
        flags = nbd.CMD_FLAG_FUA if s.get("fua") else 0
        try:
            c.h.pwrite(data, s["off"], flags)
        except nbd.Error as e:
            raise CheckFailure("unexpected", f"h{c.host}: write {c.cid} {self.name(c.vol)} [{s['off']}, +{s['len']}) failed: {e}")
        self.vols[c.vol].write(s["off"], data)

    def op_flush(self, s):
        c = self._conn(s, want_rw=True)
        if c is None:
            return False
        self._flush(c)

    def _flush(self, c):
        if c.kind != "rw":
            self.counts["flush"] += 1   # a flush through a reader sharing the writer's open (before a copy)
        try:
            c.h.flush()
        except nbd.Error as e:
            raise CheckFailure("unexpected", f"h{c.host}: flush of {self.name(c.vol)} ({c.cid}) failed: {e}")
        self.vols[c.vol].flush()

    def op_trim(self, s):
        c = self._conn(s, want_rw=True)
        if c is None or not self._range_ok(c, s["off"], s["len"]):
            return False
        try:
            c.h.trim(s["len"], s["off"])
        except nbd.Error as e:
            raise CheckFailure("unexpected", f"h{c.host}: trim {self.name(c.vol)} [{s['off']}, +{s['len']}) failed: {e}")
        self.vols[c.vol].trim(s["off"], s["len"], self.rig.block)

    def op_zero(self, s):
        c = self._conn(s, want_rw=True)
        if c is None or not self._range_ok(c, s["off"], s["len"]):
            return False
        try:
            c.h.zero(s["len"], s["off"])
        except nbd.Error as e:
            raise CheckFailure("unexpected", f"h{c.host}: write-zeroes {self.name(c.vol)} [{s['off']}, +{s['len']}) failed: {e}")
        self.vols[c.vol].zero(s["off"], s["len"])

    def op_read(self, s):
        c = self._conn(s)
        if c is None or not self._range_ok(c, s["off"], s["len"]):
            return False
        v = self.vols[c.vol]
        if c.kind == "ro" and s.get("settle") and v.writer is None and v.closing_writer is not None:
            self.settle(v, "writer")   # once the lease is gone, the reader must see everything exactly
        try:
            got = c.h.pread(s["len"], s["off"])
        except nbd.Error as e:
            raise CheckFailure("unexpected", f"h{c.host}: read {self.name(c.vol)} [{s['off']}, +{s['len']}) failed: {e}")
        relaxed = c.kind == "ro" and not c.attached and v.relaxed()
        self.reads += 1
        self.relaxed_reads += relaxed
        self.bytes_compared += len(got)
        if relaxed and got != v.cur[s["off"]:s["off"] + s["len"]]:
            self.older_accepted += 1
        diff = v.check(s["off"], got, relaxed)
        if diff is not None:
            at, exp, g, ncand = diff
            who = "exact" if not relaxed else f"flushed or written since the flush, {ncand} candidates for that sector"
            raise CheckFailure(
                "wrong-read",
                f"h{c.host} read {self.export(c.kind, c.vol)} ({c.cid}, {c.kind}) [{s['off']}, +{s['len']}): "
                f"first difference at volume offset {at} (sector {at // SECTOR}, pool block {at // self.rig.block})\n"
                f"    expected ({who}): {describe(exp, self.wid_steps)}\n"
                f"    got:      {describe(g, self.wid_steps)}\n"
                f"    model: writer {('h%d' % v.writer) if v.writer else '-'}, lease closing on "
                f"{('h%d' % v.closing_writer) if v.closing_writer else '-'}, size {v.size}")

    def _flush_writer(self, v):
        """Before a snapshot/clone of v: flush its writer (or wait for its lease to end)."""
        if v.writer is not None:
            # an rw connection, else a read-only one sharing the writer's open volume
            # (it holds the lease; a flush on it flushes that volume)
            held = self._host_conns(v, v.writer, lambda c: c.attached)
            self._flush(min(held, key=lambda c: c.kind != "rw"))
        self.settle(v, "writer")

    def op_snapshot(self, s):
        return self._copy(s, snap=True)

    def op_clone(self, s):
        return self._copy(s, snap=False)

    def _copy(self, s, snap):
        src = self.vols.get(s["src"])
        if src is None or s["vol"] in self.vols:
            return False
        self._flush_writer(src)
        verb = "snapshot" if snap else "clone"
        rc, doc = self.rig.cli(s["host"], "volume", verb, self.name(src.lid), self.name(s["vol"]))
        if rc != 0:
            raise CheckFailure("unexpected", f"h{s['host']}: volume {verb} {self.name(src.lid)} {self.name(s['vol'])} "
                                             f"failed: {doc.get('error')}")
        self.vols[s["vol"]] = Vol(s["vol"], src.size, snap=snap, cur=bytearray(src.cur), unc=copy.deepcopy(src.unc))
        self.vols[s["vol"]].last_writer = src.last_writer

    def op_resize(self, s):
        v = self.vols.get(s["vol"])
        if v is None or v.snap or s["size"] == v.size:
            return False
        self.settle(v, "writer")
        shrink = s["size"] < v.size
        args = ["volume", "resize", self.name(v.lid), s["size"]] + (["--allow-shrink"] if shrink else [])
        rc, doc = self.rig.cli(s["host"], *args)
        if shrink and s["size"] % self.rig.block:
            # A shrink must end on a pool block boundary (the cut block would keep its
            # old tail, which a later grow would expose): refused, nothing changes.
            code = (doc.get("error") or {}).get("code")
            if rc == 0:
                raise CheckFailure("unexpected", f"h{s['host']}: {' '.join(map(str, args))} into the middle of a pool "
                                                 f"block succeeded; the mapserver refuses such shrinks")
            if code != "invalid-argument":
                raise CheckFailure("unexpected", f"h{s['host']}: {' '.join(map(str, args))} failed with "
                                                 f"{doc.get('error')}, expected invalid-argument")
            self.refusals += 1
            return True
        if rc != 0:
            raise CheckFailure("unexpected", f"h{s['host']}: {' '.join(map(str, args))} failed: {doc.get('error')}")
        v.resize(s["size"])

    def op_delete(self, s):
        v = self.vols.get(s["vol"])
        if v is None:
            return False
        if s.get("close_first"):
            for cid in sorted(v.conns):
                self.op_close({"conn": cid})
        busy = bool(v.conns)
        if not busy:
            self.settle(v, "all")
        rc, doc = self.rig.cli(s["host"], "volume", "delete", self.name(v.lid))
        code = (doc.get("error") or {}).get("code")
        if busy:
            if rc == 0:
                raise CheckFailure("unexpected", f"h{s['host']}: delete of {self.name(v.lid)} succeeded while "
                                                 f"{len(v.conns)} connections have it open")
            if code != "busy":
                raise CheckFailure("unexpected", f"h{s['host']}: delete of open {self.name(v.lid)} failed with "
                                                 f"{doc.get('error')}, expected busy")
            self.refusals += 1
            return True
        if rc != 0:
            raise CheckFailure("unexpected", f"h{s['host']}: delete of {self.name(v.lid)} (no openers) failed: {doc.get('error')}")
        del self.vols[v.lid]

    def op_crash(self, s):
        """kill -9 of host h's tapdisk-map, then started again (empty caches): its
        connections are gone, its leases end when the mapserver sees the connection drop."""
        h = s["host"]
        self.rig.restart_host(h, signal.SIGKILL)
        for c in [c for c in self.conns.values() if c.host == h]:
            del self.conns[c.cid]
            c.h = None          # its socket led to the dead process: no NBD_CMD_DISC
            v = self.vols[c.vol]
            v.conns.discard(c.cid)
            v.closing.add(h)
        for v in self.vols.values():
            v.ro_closing.discard(h)   # the export died with the process
            if v.writer == h or v.closing_writer == h:
                v.crash()
                v.writer = None
                v.closing_writer = h

    def op_restart_ms(self, s):
        """The mapserver is stopped and started again: nothing acknowledged may change
        (hosts reconnect, re-open their volumes and re-commit what was pending). Until
        a host has re-opened its volumes the new server does not know them: a delete or
        another host's rw open would be admitted meanwhile (the restart grace period is
        issue 13's), so the driver waits until every open is back (--no-reopen-wait
        does not)."""
        self.rig.restart_mapserver()
        if self.no_reopen_wait:
            return
        for v in self.vols.values():
            if not v.conns:
                continue
            # one server opener per host and kind of open: the host's rw open (shared by
            # its rw and attached ro connections), its read-only open
            want = len({(self.conns[x].host, self.conns[x].attached) for x in v.conns})
            deadline = time.time() + 2 * WAIT_S
            while True:
                info = self.rig.info(1, self.name(v.lid))
                writer_ok = v.writer is None or info.get("writer") == f"h{v.writer}"
                if writer_ok and info.get("openers", 0) >= want:
                    break
                if time.time() > deadline:
                    raise CheckFailure("unexpected", f"{self.name(v.lid)}: {2 * WAIT_S:.0f} s after the mapserver "
                                                     f"restarted it shows writer '{info.get('writer')}' and "
                                                     f"{info.get('openers')} openers; the hosts hold "
                                                     f"{'h%d rw and ' % v.writer if v.writer else ''}{want} opens")
                time.sleep(0.05)

    # -- cleanup ---------------------------------------------------------------------------

    def close_all(self):
        for cid in sorted(self.conns):
            try:
                self.op_close({"conn": cid})
            except Exception:  # noqa: BLE001 - best effort
                pass

    def delete_all(self):
        self.close_all()
        for lid in sorted(self.vols):
            v = self.vols[lid]
            try:
                self.settle(v, "all")
            except CheckFailure:
                pass
            self.rig.cli(1, "volume", "delete", self.name(lid))
        self.vols = {}


# ---------------------------------------------------------------------------------------
# Random step generation (from the model's state)


class Generator:
    def __init__(self, rng, rig, max_vols, max_conns, ro_enabled, failures=True):
        self.rng = rng
        self.failures = failures
        self.rig = rig
        self.max_vols = max_vols
        self.max_conns = max_conns
        self.ro = ro_enabled
        self.next_vol = 0
        self.next_conn = 0
        self.next_wid = 0

    def size(self):
        r = self.rng
        bs = self.rig.block
        blocks = r.randint(16, 64)                     # 1-4 MiB
        size = blocks * bs
        if r.random() < 0.2:                           # a partial last pool block
            size -= r.randint(1, bs // SECTOR - 1) * SECTOR
        return size

    def io_range(self, limit, kind):
        r = self.rng
        bs = self.rig.block
        nblocks = max(1, limit // bs)
        if kind == "whole":
            b = r.randrange(nblocks)
            n = min(r.choice((1, 1, 1, 2, 4)), nblocks - b)
            off, length = b * bs, n * bs
        elif kind == "partial":
            b = r.randrange(nblocks)
            units = bs // NBD_SECTOR
            a = r.randrange(units)
            n = r.randint(1, min(units - a, 16 if r.random() < 0.7 else units))
            off, length = b * bs + a * NBD_SECTOR, n * NBD_SECTOR
        elif kind == "span":
            off = r.randrange(0, limit // NBD_SECTOR) * NBD_SECTOR
            length = r.randint(1, 3 * bs // NBD_SECTOR) * NBD_SECTOR
        else:  # "all"
            off, length = 0, limit
        off = min(off, limit - NBD_SECTOR)
        length = max(NBD_SECTOR, min(length, limit - off))
        return off, length

    def step(self, runner):
        r = self.rng
        vols, conns = runner.vols, runner.conns
        rw = [c for c in conns.values() if c.kind == "rw"]
        writable = [v for v in vols.values() if not v.snap]
        w = {
            "create": 3 if len(vols) < self.max_vols else 0,
            "open": (12 if len(conns) < self.max_conns else 0) if vols else 0,
            "close": 8 if conns else 0,
            "write": 26 if rw else 0,
            "flush": 7 if rw else 0,
            "read": 28 if conns else 0,
            "trim": 3 if rw else 0,
            "zero": 3 if rw else 0,
            "snapshot": 1.5 if writable and len(vols) < self.max_vols else 0,
            "clone": 1.5 if vols and len(vols) < self.max_vols else 0,
            "resize": 1.5 if writable else 0,
            "delete": (1 if len(vols) < self.max_vols else 4) if vols else 0,
            "crash": (0.4 if rw else 0.1) if self.failures else 0,
            "restart_ms": 0.3 if self.failures else 0,
        }
        op = r.choices(list(w), weights=list(w.values()))[0]
        host = r.randint(1, self.rig.hosts)
        if op == "create":
            self.next_vol += 1
            return {"op": op, "vol": f"v{self.next_vol}", "size": self.size(), "host": host}
        if op == "open":
            v = r.choice(list(vols.values()))
            mode = "rw"
            if self.ro and not v.snap and r.random() < 0.35:
                mode = "ro"
            elif not v.snap and v.writer is not None and r.random() < 0.6:
                host = v.writer if r.random() < 0.7 else host   # mostly a second connection on the writer's host
            elif not v.snap and v.writer is None and v.last_writer is not None and r.random() < 0.6:
                # the lease moves (live migration): another host than the last writer
                host = r.choice([x for x in range(1, self.rig.hosts + 1) if x != v.last_writer])
            self.next_conn += 1
            return {"op": op, "conn": f"c{self.next_conn}", "host": host, "vol": v.lid, "mode": mode}
        if op == "close":
            return {"op": op, "conn": r.choice(sorted(conns))}
        if op in ("write", "trim", "zero", "flush"):
            c = r.choice(rw)
            if op == "flush":
                return {"op": op, "conn": c.cid}
            limit = min(c.size, vols[c.vol].size)
            if op == "write":
                kind = r.choices(("whole", "partial", "span"), weights=(4, 4, 3))[0]
                off, length = self.io_range(limit, kind)
                self.next_wid += 1
                st = {"op": op, "conn": c.cid, "off": off, "len": length, "wid": self.next_wid}
                if r.random() < 0.05:
                    st["fua"] = True
                return st
            off, length = self.io_range(limit, r.choice(("whole", "partial", "span")))
            return {"op": op, "conn": c.cid, "off": off, "len": length}
        if op == "read":
            c = conns[r.choice(sorted(conns))]
            limit = min(c.size, vols[c.vol].size)
            kind = r.choices(("whole", "partial", "span", "all"), weights=(4, 3, 3, 1))[0]
            off, length = self.io_range(limit, kind)
            st = {"op": op, "conn": c.cid, "off": off, "len": length}
            if c.kind == "ro" and vols[c.vol].closing_writer is not None and r.random() < 0.5:
                st["settle"] = True
            return st
        if op in ("snapshot", "clone"):
            src = r.choice(writable if op == "snapshot" else list(vols.values()))
            self.next_vol += 1
            lid = f"s{self.next_vol}" if op == "snapshot" else f"v{self.next_vol}"
            return {"op": op, "src": src.lid, "vol": lid, "host": host}
        if op == "resize":
            v = r.choice(writable)
            size = self.size()
            return {"op": op, "vol": v.lid, "size": size, "host": host}
        if op == "crash":
            if rw and r.random() < 0.8:
                host = r.choice(rw).host      # mostly a host holding a lease
            return {"op": op, "host": host}
        if op == "restart_ms":
            return {"op": op}
        if op == "delete":
            v = r.choice(list(vols.values()))
            return {"op": op, "vol": v.lid, "host": host, "close_first": r.random() < 0.6}
        raise AssertionError(op)


# ---------------------------------------------------------------------------------------
# Runs, replays and shrinking


class Watchdog:
    """Ends the process with a report if one step hangs (libnbd calls release the GIL)."""

    def __init__(self, seed):
        self.seed = seed
        self.deadline = None
        self.what = ""
        t = threading.Thread(target=self._loop, daemon=True)
        t.start()

    def arm(self, what):
        self.what = what
        self.deadline = time.time() + STEP_TIMEOUT_S

    def disarm(self):
        self.deadline = None

    def _loop(self):
        while True:
            time.sleep(1)
            if self.deadline is not None and time.time() > self.deadline:
                sys.stdout.write(f"\nmodel_check: HUNG for {STEP_TIMEOUT_S:.0f} s at {self.what} (seed {self.seed})\n")
                sys.stdout.flush()
                os._exit(1)


def execute(rig, steps, prefix, ro, watchdog=None, progress=0, t0=None, no_reopen_wait=False):
    """Runs a fixed step list; returns (runner, failure or None, index of failing step)."""
    runner = Runner(rig, prefix, ro, no_reopen_wait=no_reopen_wait)
    for i, st in enumerate(steps):
        runner.step_no = i
        if watchdog:
            watchdog.arm(f"step {i} {json.dumps(st)}")
        try:
            runner.run(st)
        except CheckFailure as f:
            if watchdog:
                watchdog.disarm()
            return runner, f, i
        if progress and (i + 1) % progress == 0:
            print(f"  {i + 1} steps, {runner.reads} reads compared ({time.time() - t0:.0f} s)", flush=True)
    if watchdog:
        watchdog.disarm()
    return runner, None, None


def fresh_state(rig, runner, restart):
    """Forgets the state of a finished attempt: connections closed, volumes deleted and,
    with restart, every host's tapdisk-map restarted (empty caches)."""
    runner.close_all()
    if restart:
        rig.restart_hosts()
    runner.delete_all()


def shrink(rig, steps, kind, ro, budget_s, restart, watchdog, no_reopen_wait=False):
    """Delta debugging (ddmin) over the step list: the shortest list found within
    budget_s whose replay fails with the same kind of failure."""
    attempt = [0]
    t_end = time.time() + budget_s

    def fails(cand):
        attempt[0] += 1
        prefix = f"mc{os.getpid() % 10000}r{attempt[0]}_"
        runner, f, _ = execute(rig, cand, prefix, ro, watchdog, no_reopen_wait=no_reopen_wait)
        fresh_state(rig, runner, restart)
        return f is not None and f.kind == kind, f

    ok, f = fails(steps)
    if not ok:
        print(f"shrink: the failing list did not fail again on a fresh state ({f.message if f else 'no failure'}); "
              f"not shrunk", flush=True)
        return steps, None
    best, best_f = steps, f
    n = 2
    while len(best) >= 2 and time.time() < t_end:
        chunk = max(1, len(best) // n)
        reduced = False
        # try removing each chunk (complements first: cheaper progress)
        for i in range(0, len(best), chunk):
            if time.time() >= t_end:
                break
            cand = best[:i] + best[i + chunk:]
            ok, f = fails(cand)
            if ok:
                # cut after the failing step as well
                best, best_f = cand, f
                n = max(n - 1, 2)
                reduced = True
                print(f"shrink: {len(best)} steps still fail ({attempt[0]} replays)", flush=True)
                break
        if not reduced:
            if chunk == 1:
                break
            n = min(len(best), n * 2)
    return best, best_f


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rig-env", required=True, help="RIG_DIR/rig.env written by rig_init")
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--replay", help="run the steps of this JSON file (a list of steps) instead of random ones")
    ap.add_argument("--save", help="write the failing (shrunk) step list here (default RIG_TMP/model_check-SEED.json)")
    ap.add_argument("--ro", choices=("auto", "on", "off"), default="auto",
                    help="read-only opens (VOLUME@ro): auto = use them if the NBD export accepts them")
    ap.add_argument("--no-ro", action="store_const", const="off", dest="ro")
    ap.add_argument("--no-failures", action="store_true",
                    help="no host crashes (kill -9 and start again) or mapserver restarts")
    ap.add_argument("--no-reopen-wait", action="store_true",
                    help="after a mapserver restart, go on at once instead of waiting until the hosts have "
                         "re-opened their volumes (exposes the window a restart grace period must close)")
    ap.add_argument("--max-vols", type=int, default=8)
    ap.add_argument("--max-conns", type=int, default=6)
    ap.add_argument("--shrink-time", type=float, default=300, help="seconds spent shrinking a failure (0: none)")
    ap.add_argument("--no-restart", action="store_true", help="do not restart the hosts between replays when shrinking")
    ap.add_argument("--progress", type=int, default=0, help="print a line every N steps")
    args = ap.parse_args()

    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1 << 32)
    print(f"model_check: seed {seed}" + (" (unused: --replay)" if args.replay else ""), flush=True)
    label = f"replay of {args.replay}" if args.replay else f"seed {seed}"
    rig = Rig(args.rig_env)
    watchdog = Watchdog(seed)
    prefix = f"mc{os.getpid() % 10000}_"

    # Does the NBD export take VOLUME@ro?
    ro = args.ro != "off"
    if args.ro != "off":
        probe = prefix + "roprobe"
        rig.cli(1, "volume", "create", probe, rig.block)
        try:
            rig.connect(2, probe + "@ro").shutdown()
            ro_note = "on (VOLUME@ro accepted)"
        except nbd.Error as e:
            if args.ro == "on":
                print(f"model_check: --ro on but the NBD export refuses {probe}@ro: {e}")
                return 2
            ro, ro_note = False, f"off (the NBD export refuses VOLUME@ro: {e}; --ro on makes this an error)"
        deadline = time.time() + WAIT_S
        while rig.info(1, probe).get("openers", 0) != 0 and time.time() < deadline:
            time.sleep(0.02)
        rig.cli(1, "volume", "delete", probe)
    else:
        ro_note = "off (--no-ro)"
    print(f"model_check: {rig.hosts} hosts, pool block {rig.block // 1024} KiB, read-only opens {ro_note}", flush=True)

    t0 = time.time()
    failing_index = None
    if args.replay:
        with open(args.replay) as f:
            doc = json.load(f)
        steps = doc["steps"] if isinstance(doc, dict) else doc
        print(f"model_check: replaying {len(steps)} steps from {args.replay}", flush=True)
        runner, failure, failing_index = execute(rig, steps, prefix, ro, watchdog, args.progress, t0,
                                                      args.no_reopen_wait)
    else:
        rng = random.Random(seed)
        gen = Generator(rng, rig, args.max_vols, args.max_conns, ro, not args.no_failures)
        runner = Runner(rig, prefix, ro, no_reopen_wait=args.no_reopen_wait)
        steps, failure = [], None
        for i in range(args.steps):
            st = gen.step(runner)
            steps.append(st)
            runner.step_no = i
            watchdog.arm(f"step {i} {json.dumps(st)}")
            try:
                runner.run(st)
            except CheckFailure as f:
                failure, failing_index = f, i
                watchdog.disarm()
                break
            if args.progress and (i + 1) % args.progress == 0:
                print(f"  {i + 1} steps, {runner.reads} reads compared, {runner.bytes_compared >> 20} MiB "
                      f"({time.time() - t0:.0f} s)", flush=True)
        watchdog.disarm()
    elapsed = time.time() - t0

    wrong = 1 if failure is not None and failure.kind == "wrong-read" else 0
    print(f"model_check: {runner.step_no + 1 if failure else len(steps)} steps ({runner.skipped} skipped) in "
          f"{elapsed:.1f} s, {runner.reads} reads compared ({runner.relaxed_reads} by read-only openers of a "
          f"volume being written, {runner.older_accepted} of them saw older data), {runner.bytes_compared} bytes compared, {runner.refusals} refusals as expected "
          f"(busy rw opens and deletes, unaligned shrinks), {runner.standbys} standby rw opens, {runner.waits} waits for a close, {rig.cli_calls} CLI calls, "
          f"{runner.lease_moves} rw leases moved to another host, {SETTLED_OTHER[0]} sectors read back older or "
          f"zeroed after a trim or crash")
    print("model_check: ops " + " ".join(f"{k}={v}" for k, v in runner.counts.items()))
    print(f"model_check: wrong reads {wrong}, unexpected outcomes {1 if failure and not wrong else 0}", flush=True)
    if failure is None:
        fresh_state(rig, runner, False)
        print(f"model_check: PASS ({label})")
        return 0

    print(f"\nmodel_check: FAIL ({label}) at step {failing_index}: {json.dumps(steps[failing_index])}")
    print(f"  {failure.kind}: {failure.message}", flush=True)
    failing = steps[:failing_index + 1]
    save = args.save or os.path.join(os.environ.get("RIG_TMP", "/var/tmp"), f"model_check-{seed}.json")
    with open(save, "w") as f:
        json.dump({"seed": seed, "kind": failure.kind, "steps": failing}, f)
    print(f"model_check: the {len(failing)} steps up to the failure are in {save}", flush=True)
    fresh_state(rig, runner, not args.no_restart)
    if args.shrink_time > 0:
        print(f"model_check: shrinking (at most {args.shrink_time:.0f} s, each replay on fresh volumes"
              f"{'' if args.no_restart else ' and freshly restarted hosts'})", flush=True)
        best, best_f = shrink(rig, failing, failure.kind, ro, args.shrink_time, not args.no_restart, watchdog,
                                args.no_reopen_wait)
        if best_f is not None:
            small = save.replace(".json", "-min.json")
            with open(small, "w") as f:
                json.dump({"seed": seed, "kind": best_f.kind, "steps": best}, f, indent=0)
            print(f"\nmodel_check: shortest failing list found: {len(best)} steps ({label}), in {small}")
            for i, st in enumerate(best):
                print(f"  {i:4d} {json.dumps(st)}")
            print(f"  -> {best_f.kind}: {best_f.message}")
            print(f"model_check: replay with: tests/cluster/run_model_check.sh BUILD_DIR --replay {small}")
    return 1


if __name__ == "__main__":
    sys.exit(main())
