#!/usr/bin/env python3
"""Hostile and good clients of bench/hostile/soak.sh (python3 standard library only).

Subcommands (each run by soak.sh; see its header for the phases and the ceilings):
  sample  every second: VmRSS, VmHWM and open fds of the daemons, tagged with the phase
  good    the good client: NBD I/O with qemu-img bench + qemu-io (data verified),
          `tapmap volume list` over mutual TLS, metrics scrapes; one JSON line per op
  attack  the hostile clients, every kind at once on one asyncio loop, bounded in
          count and time; writes per-kind counts to --out
  report  the table and the PASS/FAIL verdict (exit 1 on any FAIL)

Loopback only: every address used is in 127.0.0.0/8 (checked at start).
"""

import argparse
import asyncio
import http.client
import ipaddress
import json
import os
import random
import socket
import ssl
import statistics
import struct
import subprocess
import sys
import threading
import time

# ---------------------------------------------------------------------------------------
# The hour-equivalent attacker model (counts; soak.sh's header restates them)

CONNECTIONS_PER_KIND = 3600      # one new connection per second per kind for an hour
FLOOD_CONNECTIONS = 360          # nbd-flood: one connection every 10 s for an hour
FLOOD_REQUESTS = 100000          # at most, per flood connection; replies never read
# NBD and metrics attackers come from 4 addresses; each mapserver kind from its own (7 in
# all, 127.0.0.2-127.0.0.8: the mapserver lets 8 connections per address and 64 in all
# wait for a login, so 8 attacking addresses would lock out every new login; that is
# the prelogin-lockout probe, not the default run).
ATTACKER_ADDRESSES = ["127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"]
MS_ADDRESSES = {"silent": ["127.0.0.2", "127.0.0.3"], "garbage": ["127.0.0.4"], "tls-half": ["127.0.0.5"],
                "one": ["127.0.0.6"], "tls-nocert": ["127.0.0.7"], "rogue": ["127.0.0.8"]}
GOOD_ADDRESS = "127.0.0.1"

# Ceilings (see soak.sh): RSS in MiB, fds in count.
MS_RSS_MIB = 32
TD_RSS_EXTRA_MIB = 192           # tapdisk-map: cache size + this
MS_FDS = 128                     # 64 pre-login connections in all + its own
TD_FDS = 320                     # the NBD kinds hold <= 228 at once by construction
FD_AFTER_SLACK = 8
GOOD_MIN_RATIO = 0.5

NBD_MAGIC_REQUEST = 0x25609513
OPT_MAGIC = b"IHAVEOPT"
NBD_OPT_ABORT, NBD_OPT_INFO, NBD_OPT_GO, NBD_OPT_STRUCTURED_REPLY = 2, 6, 7, 8
NBD_CMD_READ, NBD_CMD_WRITE, NBD_CMD_FLUSH, NBD_CMD_TRIM = 0, 1, 3, 4


def loopback_only(address):
    host = address.rsplit(":", 1)[0] if ":" in address else address
    if not ipaddress.ip_address(host).is_loopback:
        sys.exit(f"hostile_clients: {address} is not a loopback address; refusing")


def split_hostport(text):
    host, port = text.rsplit(":", 1)
    loopback_only(host)
    return host, int(port)


# ---------------------------------------------------------------------------------------
# sample

def read_status(pid):
    """(VmRSS KiB, VmHWM KiB, open fds, CPU seconds so far) of a live process."""
    rss = hwm = None
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
            elif line.startswith("VmHWM:"):
                hwm = int(line.split()[1])
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return rss, hwm, len(os.listdir(f"/proc/{pid}/fd")), cpu


def cmd_sample(args):
    pids = [p.split("=", 1) for p in args.pid]
    with open(args.out, "w") as out:
        out.write("t,phase,daemon,rss_kib,hwm_kib,fds,cpu_s,load1\n")
        start = time.monotonic()
        while True:
            phase = open(args.phase_file).read().strip()
            if phase == "done":
                return
            load1 = open("/proc/loadavg").read().split()[0]
            for name, pid in pids:
                try:
                    rss, hwm, fds, cpu = read_status(pid)
                    if rss is None:  # a zombie: exited, not yet reaped
                        raise ProcessLookupError(pid)
                except (FileNotFoundError, ProcessLookupError, PermissionError):
                    out.write(f"{time.monotonic() - start:.1f},{phase},{name},gone,gone,gone,gone,{load1}\n")
                    continue
                out.write(f"{time.monotonic() - start:.1f},{phase},{name},{rss},{hwm},{fds},{cpu:.2f},{load1}\n")
            out.flush()
            time.sleep(1.0)


# ---------------------------------------------------------------------------------------
# good

class GoodLog:
    def __init__(self, path, phase_file):
        self.f = open(path, "w")
        self.phase_file = phase_file
        self.lock = threading.Lock()

    def phase(self):
        return open(self.phase_file).read().strip()

    def record(self, **rec):
        with self.lock:
            self.f.write(json.dumps(rec) + "\n")
            self.f.flush()


def run_timed(argv, timeout=60):
    t0 = time.monotonic()
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        ok, err = p.returncode == 0, (p.stderr or p.stdout).strip()[-300:]
    except subprocess.TimeoutExpired:
        ok, err = False, f"timed out after {timeout}s"
    except OSError as e:
        ok, err = False, f"could not run {argv[0]}: {e}"
    return ok, err, time.monotonic() - t0


def good_nbd(log, url):
    # One round: 1,024 4 KiB writes (a pattern byte), 2,048 4 KiB reads (qemu-img bench,
    # queue depth 8), then the 4 MiB written is read back and compared (qemu-io -P).
    ops, i = 3072, 0
    while True:
        phase = log.phase()
        if phase == "done":
            return
        i += 1
        pattern = i % 250 + 1
        ok1, err1, t1 = run_timed(["qemu-img", "bench", "-f", "raw", "-w", "-c", "1024", "-d", "8", "-s", "4096",
                                   "-S", "4096", f"--pattern={pattern}", url])
        ok2, err2, t2 = run_timed(["qemu-img", "bench", "-f", "raw", "-c", "2048", "-d", "8", "-s", "4096",
                                   "-S", "4096", url])
        ok3, err3, t3 = run_timed(["qemu-io", "-f", "raw", "-c", f"read -P {pattern} 0 4M", url])
        ok3 = ok3 and "Pattern verification failed" not in err3
        end_phase = log.phase()
        log.record(kind="nbd", phase=phase if end_phase == phase else "mixed", ok=ok1 and ok2 and ok3,
                   ops=ops, seconds=t1 + t2, verify_s=t3,
                   error=None if ok1 and ok2 and ok3 else (err1 if not ok1 else err2 if not ok2 else err3))


def good_rpc(log, tapmap, config):
    while True:
        phase = log.phase()
        if phase == "done":
            return
        ok, err, dt = run_timed([tapmap, "--config", config, "volume", "list"], timeout=30)
        log.record(kind="rpc", phase=phase if log.phase() == phase else "mixed", ok=ok, ops=1, seconds=dt,
                   error=None if ok else err)
        time.sleep(0.5)


def good_metrics(log, metrics):
    host, port = split_hostport(metrics)
    while True:
        phase = log.phase()
        if phase == "done":
            return
        t0 = time.monotonic()
        try:
            c = http.client.HTTPConnection(host, port, timeout=10, source_address=(GOOD_ADDRESS, 0))
            c.request("GET", "/metrics")
            r = c.getresponse()
            body = r.read()
            c.close()
            ok, err = r.status == 200 and b"tapmap" in body, None if r.status == 200 else f"HTTP {r.status}"
            if r.status == 200 and b"tapmap" not in body:
                err = "no tapmap metric in the body"
        except OSError as e:
            ok, err = False, repr(e)
        log.record(kind="metrics", phase=phase if log.phase() == phase else "mixed", ok=ok, ops=1,
                   seconds=time.monotonic() - t0, error=err)
        time.sleep(0.5)


def cmd_good(args):
    log = GoodLog(args.out, args.phase_file)
    threads = [threading.Thread(target=good_nbd, args=(log, args.nbd_url)),
               threading.Thread(target=good_rpc, args=(log, args.tapmap, args.config)),
               threading.Thread(target=good_metrics, args=(log, args.metrics))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


# ---------------------------------------------------------------------------------------
# attack: the kinds

class Kind:
    """One hostile kind: `count` attempts spread over the phase, at most `concurrency`
    at once; `attempt(ctx, stats, i)` is one connection's life."""

    def __init__(self, name, target, count, concurrency, attempt, what, addresses=None):
        self.name, self.target, self.count, self.concurrency = name, target, count, concurrency
        self.attempt, self.what = attempt, what
        self.addresses = addresses or ATTACKER_ADDRESSES
        self.stats = {"target": target, "what": what, "from": ",".join(self.addresses), "planned": count,
                      "attempts": 0, "connected": 0, "connect_failed": 0, "tls_refused": 0,
                      "closed_by_server": 0, "held_to_limit": 0, "requests": 0, "bytes_sent": 0, "errors": 0,
                      "server_close_s": []}

    def addr(self, i):
        return self.addresses[i % len(self.addresses)]


class Ctx:
    def __init__(self, args):
        self.args = args
        self.rng = random.Random(args.seed)
        self.deadline = 0.0
        self.exports = args.exports.split(",")
        self.nocert_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        self.nocert_ctx.check_hostname = False
        self.nocert_ctx.verify_mode = ssl.CERT_NONE
        self.rogue_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        self.rogue_ctx.check_hostname = False
        self.rogue_ctx.verify_mode = ssl.CERT_NONE
        self.rogue_ctx.load_cert_chain(os.path.join(args.rogue_tls, "host.crt"),
                                       os.path.join(args.rogue_tls, "host.key"))
        self.client_hello = self._client_hello()

    def _client_hello(self):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        obj = ctx.wrap_bio(incoming, outgoing, server_hostname="tapmap-mapserver")
        try:
            obj.do_handshake()
        except ssl.SSLWantReadError:
            pass
        return outgoing.read()

    def left(self):
        return max(0.0, self.deadline - time.monotonic())


async def open_tcp(ctx, stats, target, src, rcvbuf=None, tls=None):
    """Connects from `src` (a loopback address); None when the connect failed."""
    stats["attempts"] += 1
    host, port = split_hostport(target)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    try:
        sock.bind((src, 0))
        await asyncio.wait_for(asyncio.get_running_loop().sock_connect(sock, (host, port)), 5)
    except (OSError, asyncio.TimeoutError):
        sock.close()
        stats["connect_failed"] += 1
        return None
    try:
        kw = {"ssl": tls, "server_hostname": "tapmap-mapserver", "ssl_handshake_timeout": 10} if tls else {}
        reader, writer = await asyncio.open_connection(sock=sock, limit=1 << 20, **kw)
    except (OSError, asyncio.TimeoutError, ssl.SSLError):
        sock.close()
        stats["tls_refused"] += 1  # the server ended the handshake (or closed at once)
        return None
    stats["connected"] += 1
    return reader, writer


async def open_nbd(ctx, stats, target, src, rcvbuf=None):
    if target.startswith("unix:"):
        stats["attempts"] += 1
        try:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            if rcvbuf:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            sock.setblocking(False)
            await asyncio.wait_for(asyncio.get_running_loop().sock_connect(sock, target[5:]), 5)
            reader, writer = await asyncio.open_connection(sock=sock, limit=1 << 20)
        except (OSError, asyncio.TimeoutError):
            stats["connect_failed"] += 1
            return None
        stats["connected"] += 1
        return reader, writer
    return await open_tcp(ctx, stats, target, src, rcvbuf)


def abort(writer):
    """Closes with a reset (SO_LINGER 0) where possible: the rudest way out."""
    sock = writer.get_extra_info("socket")
    try:
        if sock is not None and sock.family == socket.AF_INET:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    writer.transport.abort()


async def hold_until_closed(ctx, stats, reader, t0, limit):
    """Reads (and drops) whatever the server sends until it closes or `limit` seconds
    pass; counts which. Returns True when the server closed."""
    end = min(time.monotonic() + limit, ctx.deadline)
    try:
        while True:
            left = end - time.monotonic()
            if left <= 0:
                stats["held_to_limit"] += 1
                return False
            data = await asyncio.wait_for(reader.read(65536), left)
            if not data:
                break
    except asyncio.TimeoutError:
        stats["held_to_limit"] += 1
        return False
    except (OSError, ssl.SSLError):
        pass
    stats["closed_by_server"] += 1
    stats["server_close_s"].append(round(time.monotonic() - t0, 2))
    return True


async def send(stats, writer, data, timeout=5):
    """Writes `data`; False when the peer stopped reading (timeout) or hung up."""
    try:
        writer.write(data)
        await asyncio.wait_for(writer.drain(), timeout)
    except (OSError, asyncio.TimeoutError, ssl.SSLError):
        return False
    stats["bytes_sent"] += len(data)
    return True


def rand_bytes(ctx, n):
    return ctx.rng.randbytes(n)


# -- mapserver ---------------------------------------------------------------------------

async def ms_silent(ctx, k, i):
    st, t0 = k.stats, time.monotonic()
    c = await open_tcp(ctx, st, ctx.args.mapserver, k.addr(i))
    if c:
        await hold_until_closed(ctx, st, c[0], t0, 30)
        abort(c[1])


async def ms_one_address(ctx, k, i):
    await ms_silent(ctx, k, i)


async def ms_garbage(ctx, k, i):
    st, t0 = k.stats, time.monotonic()
    c = await open_tcp(ctx, st, ctx.args.mapserver, k.addr(i))
    if c:
        await send(st, c[1], rand_bytes(ctx, 4096))
        await hold_until_closed(ctx, st, c[0], t0, 15)
        abort(c[1])


async def big_frame(ctx, st, reader, writer, t0):
    # A Cap'n Proto frame header announcing one segment of 8 Mi - 16 words (~64 MiB),
    # then up to 16 MiB of it in 64 KiB pieces while the server keeps reading.
    if await send(st, writer, struct.pack("<II", 0, 8 * 1024 * 1024 - 16)):
        st["requests"] += 1
        chunk = rand_bytes(ctx, 65536)
        for _ in range(256):
            if ctx.left() <= 0 or not await send(st, writer, chunk, timeout=3):
                break
    await hold_until_closed(ctx, st, reader, t0, 15)
    abort(writer)


async def ms_bigframe(ctx, k, i):
    st, t0 = k.stats, time.monotonic()
    c = await open_tcp(ctx, st, ctx.args.mapserver, k.addr(i))
    if c:
        await big_frame(ctx, st, c[0], c[1], t0)


async def ms_tls_half(ctx, k, i):
    st, t0 = k.stats, time.monotonic()
    c = await open_tcp(ctx, st, ctx.args.mapserver, k.addr(i))
    if c:
        await send(st, c[1], ctx.client_hello[:len(ctx.client_hello) // 2])
        await hold_until_closed(ctx, st, c[0], t0, 30)
        abort(c[1])


async def ms_tls_nocert(ctx, k, i):
    # A full TLS handshake without a client certificate, then a frame: TLS 1.3 lets the
    # client finish first, so the refusal comes as an alert or a close.
    st, t0 = k.stats, time.monotonic()
    c = await open_tcp(ctx, st, ctx.args.mapserver, k.addr(i), tls=ctx.nocert_ctx)
    if c:
        await send(st, c[1], struct.pack("<II", 0, 2) + bytes(16))
        await hold_until_closed(ctx, st, c[0], t0, 15)
        abort(c[1])


async def ms_rogue_bigframe(ctx, k, i):
    # A compromised host's valid credential: TLS completes, then the ~64 MiB frame
    # before any login (the server's pre-login read limit is 16 KiB).
    st, t0 = k.stats, time.monotonic()
    c = await open_tcp(ctx, st, ctx.args.mapserver, k.addr(i), tls=ctx.rogue_ctx)
    if c:
        await big_frame(ctx, st, c[0], c[1], t0)


async def ms_rogue_garbage(ctx, k, i):
    st, t0 = k.stats, time.monotonic()
    c = await open_tcp(ctx, st, ctx.args.mapserver, k.addr(i), tls=ctx.rogue_ctx)
    if c:
        await send(st, c[1], rand_bytes(ctx, 4096))
        await hold_until_closed(ctx, st, c[0], t0, 15)
        abort(c[1])


# -- NBD ---------------------------------------------------------------------------------

async def nbd_greeting(reader):
    data = await asyncio.wait_for(reader.readexactly(18), 10)
    if data[:16] != b"NBDMAGICIHAVEOPT":
        raise ValueError("not an NBD newstyle greeting")


async def nbd_option(reader, writer, opt, payload):
    """Sends one option and reads its replies up to ACK or an error; returns the list of
    (type, payload)."""
    writer.write(OPT_MAGIC + struct.pack(">II", opt, len(payload)) + payload)
    replies = []
    while True:
        head = await asyncio.wait_for(reader.readexactly(20), 10)
        _, _, rtype, length = struct.unpack(">QIII", head)
        body = await asyncio.wait_for(reader.readexactly(length), 10) if length else b""
        replies.append((rtype, body))
        if rtype == 1 or rtype & 0x80000000:
            return replies


def info_payload(name, requests=()):
    name = name.encode()
    return struct.pack(">I", len(name)) + name + struct.pack(">H", len(requests)) + \
        b"".join(struct.pack(">H", r) for r in requests)


async def nbd_go(ctx, st, target, src, i, rcvbuf=None, structured=False):
    """Connects and negotiates an export with NBD_OPT_GO; returns (reader, writer, size)
    or None (failure counted)."""
    c = await open_nbd(ctx, st, target, src, rcvbuf)
    if not c:
        return None
    reader, writer = c
    try:
        await nbd_greeting(reader)
        writer.write(struct.pack(">I", 3))
        if structured:
            await nbd_option(reader, writer, NBD_OPT_STRUCTURED_REPLY, b"")
        replies = await nbd_option(reader, writer, NBD_OPT_GO, info_payload(ctx.exports[i % len(ctx.exports)]))
        if replies[-1][0] != 1:
            raise ValueError(f"GO refused: type {replies[-1][0]:#x} {replies[-1][1][:80]!r}")
        size = next(struct.unpack(">QH", b[2:12])[0] for t, b in replies if t == 3 and b[:2] == b"\0\0")
        return reader, writer, size
    except (OSError, ValueError, asyncio.TimeoutError, asyncio.IncompleteReadError, StopIteration) as e:
        st["errors"] += 1
        st.setdefault("last_error", repr(e)[:200])
        abort(writer)
        return None


def nbd_target(ctx):
    return ctx.args.nbd_tcp or "unix:" + ctx.args.nbd_unix


async def nbd_silent(ctx, k, i):
    st, t0 = k.stats, time.monotonic()
    c = await open_nbd(ctx, st, nbd_target(ctx), k.addr(i))
    if c:  # never sends
        await hold_until_closed(ctx, st, c[0], t0, 45)
        abort(c[1])


async def nbd_garbage_pre(ctx, k, i):
    st, t0 = k.stats, time.monotonic()
    c = await open_nbd(ctx, st, nbd_target(ctx), k.addr(i))
    if c:
        await send(st, c[1], rand_bytes(ctx, 1024))
        await hold_until_closed(ctx, st, c[0], t0, 15)
        abort(c[1])


async def nbd_halfopen(ctx, k, i):
    # Greeting read, flags sent, then an option header announcing 1,000 bytes of which
    # only 10 come: the server waits inside the handshake until its deadline.
    st, t0 = k.stats, time.monotonic()
    c = await open_nbd(ctx, st, nbd_target(ctx), k.addr(i))
    if c:
        try:
            await nbd_greeting(c[0])
            await send(st, c[1], struct.pack(">I", 3) + OPT_MAGIC + struct.pack(">II", NBD_OPT_GO, 1000) + bytes(10))
            await hold_until_closed(ctx, st, c[0], t0, 45)
        except (OSError, ValueError, asyncio.TimeoutError, asyncio.IncompleteReadError):
            st["errors"] += 1
        abort(c[1])


async def nbd_garbage_post(ctx, k, i):
    st, t0 = k.stats, time.monotonic()
    c = await nbd_go(ctx, st, nbd_target(ctx), k.addr(i), i)
    if c:
        await send(st, c[1], rand_bytes(ctx, 1024))
        await hold_until_closed(ctx, st, c[0], t0, 15)
        abort(c[1])


def flood_requests(size, n):
    """n requests that all fail without data (the issue's attack 2): zero-length READs,
    unaligned READs, READs past the end, zero-length TRIMs, unknown commands."""
    out = []
    for h in range(n):
        sel = h % 5
        if sel == 0:
            out.append(struct.pack(">IHHQQI", NBD_MAGIC_REQUEST, 0, NBD_CMD_READ, h, 0, 0))
        elif sel == 1:
            out.append(struct.pack(">IHHQQI", NBD_MAGIC_REQUEST, 0, NBD_CMD_READ, h, 1, 512))
        elif sel == 2:
            out.append(struct.pack(">IHHQQI", NBD_MAGIC_REQUEST, 0, NBD_CMD_READ, h, size, 4096))
        elif sel == 3:
            out.append(struct.pack(">IHHQQI", NBD_MAGIC_REQUEST, 0, NBD_CMD_TRIM, h, 0, 0))
        else:
            out.append(struct.pack(">IHHQQI", NBD_MAGIC_REQUEST, 0, 99, h, 0, 4096))
    return b"".join(out)


FLOOD_BLOBS = {}


async def nbd_flood(ctx, k, i):
    # Never reads a reply, with a 4 KiB receive buffer so the server's replies back up;
    # sends until the server stops reading (3 s without progress: "stalled", the reply
    # budget at work) or FLOOD_REQUESTS went out, then holds the connection 10 s.
    st, t0 = k.stats, time.monotonic()
    # Every other connection on the unix socket: its small kernel buffers (~200 KiB)
    # make the server's replies back up after ~13,000 of them; on TCP loopback the
    # kernel takes up to 4 MiB first.
    target = "unix:" + ctx.args.nbd_unix if i % 2 else nbd_target(ctx)
    c = await nbd_go(ctx, st, target, k.addr(i), i, rcvbuf=4096, structured=(i % 4 < 2))
    if not c:
        return
    reader, writer, size = c
    writer.transport.pause_reading()  # nothing is read from here on, not even by asyncio
    if size not in FLOOD_BLOBS:
        FLOOD_BLOBS[size] = flood_requests(size, 1000)
    piece = FLOOD_BLOBS[size]
    st.setdefault("stalled", 0)
    for _ in range(FLOOD_REQUESTS // 1000):
        if ctx.left() <= 0:
            break
        if not await send(st, writer, piece, timeout=3):
            st["stalled"] += 1
            break
        st["requests"] += 1000
    await asyncio.sleep(min(10, ctx.left()))
    st["held_to_limit"] += 1
    abort(writer)


async def nbd_idle_post(ctx, k, i, hold=60):
    # Negotiated, then silent and never reading: holds a connection slot (and the
    # export open) as long as the server lets it.
    st, t0 = k.stats, time.monotonic()
    c = await nbd_go(ctx, st, nbd_target(ctx), k.addr(i), i)
    if c:
        await hold_until_closed(ctx, st, c[0], t0, hold)
        abort(c[1])


async def nbd_info_spam(ctx, k, i):
    # 1,000 NBD_OPT_INFO (known, unknown and overlong-count names), replies read, then
    # the connection is dropped without ABORT.
    st, t0 = k.stats, time.monotonic()
    c = await open_nbd(ctx, st, nbd_target(ctx), k.addr(i))
    if not c:
        return
    reader, writer = c
    try:
        await nbd_greeting(reader)
        writer.write(struct.pack(">I", 3))
        for j in range(1000):
            if ctx.left() <= 0:
                break
            name = ctx.exports[j % len(ctx.exports)] if j % 3 else f"no-such-{j}\n forged log line"
            await nbd_option(reader, writer, NBD_OPT_INFO, info_payload(name, (0, 1, 3)))
            st["requests"] += 1
    except (OSError, ValueError, asyncio.TimeoutError, asyncio.IncompleteReadError):
        st["closed_by_server"] += 1  # (the 30 s negotiation deadline, typically)
        st["server_close_s"].append(round(time.monotonic() - t0, 2))
    abort(writer)


async def nbd_midwrite(ctx, k, i):
    # A 1 MiB WRITE of which 100 KiB arrive, then a reset.
    st, t0 = k.stats, time.monotonic()
    c = await nbd_go(ctx, st, nbd_target(ctx), k.addr(i), i)
    if c:
        header = struct.pack(">IHHQQI", NBD_MAGIC_REQUEST, 0, NBD_CMD_WRITE, 1, 0, 1 << 20)
        if await send(st, c[1], header + bytes(100 * 1024)):
            st["requests"] += 1
        await asyncio.sleep(0.2)
        abort(c[1])


async def nbd_bigread(ctx, k, i):
    # Probe: 32 MiB READs, replies never read (4 KiB receive buffer), held to the end.
    st, t0 = k.stats, time.monotonic()
    c = await nbd_go(ctx, st, nbd_target(ctx), k.addr(i), i, rcvbuf=4096)
    if not c:
        return
    reader, writer, size = c
    writer.transport.pause_reading()
    length = min(32 << 20, size)
    reqs = b"".join(struct.pack(">IHHQQI", NBD_MAGIC_REQUEST, 0, NBD_CMD_READ, h, 0, length) for h in range(64))
    if await send(st, writer, reqs, timeout=5):
        st["requests"] += 64
    await asyncio.sleep(ctx.left())
    st["held_to_limit"] += 1
    abort(writer)


# -- metrics -----------------------------------------------------------------------------

async def metrics_idle(ctx, k, i):
    st, t0 = k.stats, time.monotonic()
    c = await open_tcp(ctx, st, ctx.args.metrics, k.addr(i))
    if c:
        await hold_until_closed(ctx, st, c[0], t0, 30)
        abort(c[1])


async def metrics_slow(ctx, k, i):
    # Slowloris: the request line one byte every 0.5 s, never finished.
    st, t0 = k.stats, time.monotonic()
    c = await open_tcp(ctx, st, ctx.args.metrics, k.addr(i))
    if not c:
        return
    reader, writer = c
    request = b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 200
    closed = False
    for b in request:
        if ctx.left() <= 0 or reader.at_eof() or not await send(st, writer, bytes([b]), timeout=2):
            break
        try:
            data = await asyncio.wait_for(reader.read(4096), 0.5)
            if not data:
                closed = True
                break
        except asyncio.TimeoutError:
            pass
        except OSError:
            closed = True
            break
    if closed:
        st["closed_by_server"] += 1
        st["server_close_s"].append(round(time.monotonic() - t0, 2))
    else:
        await hold_until_closed(ctx, st, reader, t0, 10)
    abort(writer)


async def metrics_garbage(ctx, k, i):
    st, t0 = k.stats, time.monotonic()
    c = await open_tcp(ctx, st, ctx.args.metrics, k.addr(i))
    if c:
        await send(st, c[1], rand_bytes(ctx, 8192))
        await hold_until_closed(ctx, st, c[0], t0, 15)
        abort(c[1])


async def metrics_noread(ctx, k, i):
    # Ten pipelined requests on a 4 KiB receive buffer, never read, held 10 s.
    st, t0 = k.stats, time.monotonic()
    c = await open_tcp(ctx, st, ctx.args.metrics, k.addr(i), rcvbuf=4096)
    if c:
        c[1].transport.pause_reading()
        if await send(st, c[1], b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n" * 10):
            st["requests"] += 10
        await asyncio.sleep(min(10, ctx.left()))
        st["held_to_limit"] += 1
        abort(c[1])


def kinds_for(args):
    n = CONNECTIONS_PER_KIND
    ms, met, nbd = args.mapserver, args.metrics, args.nbd_tcp or "unix:" + args.nbd_unix
    if args.probe == "prelogin-lockout":
        return [Kind("ms-silent-9addr", ms, n, 9 * 12, ms_silent,
                     "never sends, from 9 addresses (12 at once from each)",
                     [f"127.0.0.{j}" for j in range(2, 11)])]
    if args.probe == "nbd-slots":
        return [Kind("nbd-idle-post-1100", nbd, 1100, 1100, lambda c, k, i: nbd_idle_post(c, k, i, 1e9),
                     "1,100 negotiated NBD connections held idle to the end")]
    if args.probe == "nbd-bigread":
        return [Kind("nbd-bigread", nbd, 16, 16, nbd_bigread,
                     "64 x 32 MiB READs per connection, replies never read, 16 connections")]
    if args.probe:
        sys.exit(f"hostile_clients: unknown probe {args.probe}")
    return [
        Kind("ms-silent", ms, n, 24, ms_silent, "TCP connect, never sends (12 at once per address)",
             MS_ADDRESSES["silent"]),
        Kind("ms-garbage", ms, n, 16, ms_garbage, "4 KiB of random bytes instead of a TLS ClientHello",
             MS_ADDRESSES["garbage"]),
        Kind("ms-bigframe", ms, n, 16, ms_bigframe, "Cap'n Proto header for ~64 MiB, then 16 MiB, no TLS",
             MS_ADDRESSES["garbage"]),
        Kind("ms-tls-half", ms, n, 12, ms_tls_half, "half a TLS ClientHello, then silence",
             MS_ADDRESSES["tls-half"]),
        Kind("ms-tls-nocert", ms, n, 8, ms_tls_nocert, "TLS handshake without a client certificate",
             MS_ADDRESSES["tls-nocert"]),
        Kind("ms-rogue-bigframe", ms, n, 8, ms_rogue_bigframe,
             "valid host credential (no scope): TLS, then the ~64 MiB frame before login", MS_ADDRESSES["rogue"]),
        Kind("ms-rogue-garbage", ms, n, 8, ms_rogue_garbage, "valid host credential: TLS, then 4 KiB garbage",
             MS_ADDRESSES["rogue"]),
        Kind("ms-one-address", ms, n, 200, ms_one_address, "200 silent connections at once from one address",
             MS_ADDRESSES["one"]),
        Kind("nbd-silent", nbd, n, 64, nbd_silent, "connect, never send"),
        Kind("nbd-garbage-pre", nbd, n, 16, nbd_garbage_pre, "1 KiB garbage instead of the client flags"),
        Kind("nbd-halfopen", nbd, n, 32, nbd_halfopen, "option header for 1,000 bytes, 10 sent, silence"),
        Kind("nbd-garbage-post", nbd, n, 16, nbd_garbage_post, "NBD_OPT_GO, then 1 KiB garbage"),
        Kind("nbd-flood", nbd, FLOOD_CONNECTIONS, 24, nbd_flood,
             f"NBD_OPT_GO, {FLOOD_REQUESTS} failing requests, replies never read (4 KiB rcvbuf)"),
        Kind("nbd-idle-post", nbd, n, 64, nbd_idle_post, "NBD_OPT_GO, then idle and never reading, 60 s"),
        Kind("nbd-info-spam", nbd, n, 4, nbd_info_spam, "1,000 NBD_OPT_INFO (a third unknown, with newlines)"),
        Kind("nbd-midwrite", nbd, n, 8, nbd_midwrite, "1 MiB WRITE, 100 KiB of it, reset"),
        Kind("metrics-idle", met, n, 64, metrics_idle, "connect, never send"),
        Kind("metrics-slow", met, n, 16, metrics_slow, "request line one byte per 0.5 s"),
        Kind("metrics-garbage", met, n, 16, metrics_garbage, "8 KiB random bytes"),
        Kind("metrics-noread", met, n, 16, metrics_noread, "10 pipelined GETs, never read, 4 KiB rcvbuf"),
    ]


async def run_kind(ctx, kind, seconds):
    sem = asyncio.Semaphore(kind.concurrency)
    tasks = set()
    start = time.monotonic()
    interval = seconds / kind.count

    async def one(i):
        try:
            await kind.attempt(ctx, kind, i)
        except Exception as e:  # an attacker's own bug must not end the run silently
            kind.stats["errors"] += 1
            kind.stats.setdefault("last_error", repr(e)[:200])
        finally:
            sem.release()

    for i in range(kind.count):
        delay = start + i * interval - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        if ctx.left() <= 0:
            break
        try:
            await asyncio.wait_for(sem.acquire(), ctx.left())
        except asyncio.TimeoutError:
            break
        t = asyncio.create_task(one(i))
        tasks.add(t)
        t.add_done_callback(tasks.discard)
    if tasks:
        await asyncio.wait(tasks, timeout=ctx.left() + 20)
    for t in tasks:
        t.cancel()


async def attack_main(args):
    ctx = Ctx(args)
    kinds = kinds_for(args)
    ctx.deadline = time.monotonic() + args.seconds
    started = time.monotonic()
    await asyncio.gather(*(run_kind(ctx, k, args.seconds) for k in kinds))
    report = {"seconds": round(time.monotonic() - started, 1), "planned_seconds": args.seconds,
              "probe": args.probe, "kinds": {}}
    for k in kinds:
        s = dict(k.stats)
        closes = sorted(s.pop("server_close_s"))
        s["server_close_median_s"] = closes[len(closes) // 2] if closes else None
        s["server_close_max_s"] = closes[-1] if closes else None
        report["kinds"][k.name] = s
    with open(args.out, "w") as f:
        json.dump(report, f, indent=1)


def cmd_attack(args):
    for a in (args.mapserver, args.metrics) + ((args.nbd_tcp,) if args.nbd_tcp else ()):
        split_hostport(a)
    asyncio.run(attack_main(args))


# ---------------------------------------------------------------------------------------
# report

def cmd_report(args):
    import csv
    rows = list(csv.DictReader(open(args.samples)))
    good = [json.loads(line) for line in open(args.good)]
    attack = json.load(open(args.attack))
    fails = []

    def samples(daemon, phases=None):
        return [r for r in rows if r["daemon"] == daemon and r["rss_kib"] != "gone"
                and (phases is None or r["phase"] in phases)]

    print("\n== daemons: VmRSS (MiB) and open fds, sampled every second; idle = no client,"
          "\n   good = good client alone (baseline phase), attack = hostile phase, after = last 10 s")
    print(f"{'daemon':<12} {'RSS idle':>8} {'good':>6} {'attack':>6} {'VmHWM':>6} {'ceiling':>7} | "
          f"{'fds idle':>8} {'good':>5} {'attack':>6} {'after':>5} {'ceiling':>7} | verdict")
    ceilings = {"mapserver": (MS_RSS_MIB, MS_FDS), "tapdisk-map": (args.cache_mib + TD_RSS_EXTRA_MIB, TD_FDS)}
    for daemon, (rss_ceiling, fd_ceiling) in ceilings.items():
        by_phase = {ph: samples(daemon, (ph,)) for ph in ("idle", "baseline", "hostile", "after")}
        allr = samples(daemon)
        if not by_phase["baseline"] or not by_phase["hostile"]:
            fails.append(f"{daemon}: no samples")
            continue
        if any(r["rss_kib"] == "gone" for r in rows if r["daemon"] == daemon):
            fails.append(f"{daemon}: process gone during the soak")

        def peak(ph, key):
            return max((int(r[key]) for r in by_phase[ph]), default=0)
        idle_rss = peak("idle", "rss_kib") / 1024
        good_rss = peak("baseline", "rss_kib") / 1024
        attack_rss = peak("hostile", "rss_kib") / 1024
        hwm = max(int(r["hwm_kib"]) for r in allr) / 1024
        good_fds = peak("baseline", "fds")
        tail = by_phase["after"][-10:]
        after_fds = max(int(r["fds"]) for r in tail) if tail else None
        bad = []
        if hwm > rss_ceiling:
            bad.append(f"RSS {hwm:.1f} > {rss_ceiling} MiB")
        if peak("hostile", "fds") > fd_ceiling:
            bad.append(f"fds {peak('hostile', 'fds')} > {fd_ceiling}")
        if after_fds is not None and after_fds > good_fds + FD_AFTER_SLACK:
            bad.append(f"fds after {after_fds} > good-client peak {good_fds} + {FD_AFTER_SLACK}")
        fails += [f"{daemon}: {b}" for b in bad]
        print(f"{daemon:<12} {idle_rss:>8.1f} {good_rss:>6.1f} {attack_rss:>6.1f} {hwm:>6.1f} {rss_ceiling:>7} | "
              f"{peak('idle', 'fds'):>8} {good_fds:>5} {peak('hostile', 'fds'):>6} {str(after_fds):>5} "
              f"{fd_ceiling:>7} | {'PASS' if not bad else 'FAIL: ' + '; '.join(bad)}")

    print("\n== CPU: each daemon's share of one core per phase, and the machine's 1-min load")
    print(f"{'daemon':<12} {'idle':>6} {'good':>6} {'attack':>6} {'after':>6}")
    for daemon in ceilings:
        cells = []
        for ph in ("idle", "baseline", "hostile", "after"):
            rs = samples(daemon, (ph,))
            if len(rs) < 2:
                cells.append("-")
                continue
            dt = float(rs[-1]["t"]) - float(rs[0]["t"])
            cells.append(f"{100 * (float(rs[-1]['cpu_s']) - float(rs[0]['cpu_s'])) / dt:.0f}%" if dt > 0 else "-")
        print(f"{daemon:<12} " + " ".join(f"{c:>6}" for c in cells))
    loads = [max((float(r["load1"]) for r in samples("mapserver", (ph,))), default=0)
             for ph in ("idle", "baseline", "hostile", "after")]
    print(f"{'load (max)':<12} " + " ".join(f"{x:>6.2f}" for x in loads) + "   (2 cores, shared)")

    print(f"\n== hostile clients: {attack['seconds']} s (planned {attack['planned_seconds']} s)"
          + (f", probe {attack['probe']}" if attack.get("probe") else ""))
    print(f"{'kind':<18} {'planned':>7} {'made':>6} {'refused':>7} {'srv-closed':>10} {'median/max close s':>18} "
          f"{'held':>5} {'requests':>9} {'MiB sent':>8} {'err':>4}")
    total_conn = total_req = 0
    for name, s in attack["kinds"].items():
        total_conn += s["connected"]
        total_req += s["requests"]
        close = (f"{s['server_close_median_s']}/{s['server_close_max_s']}"
                 if s["server_close_median_s"] is not None else "-")
        print(f"{name:<18} {s['planned']:>7} {s['connected']:>6} {s['connect_failed'] + s['tls_refused']:>7} {s['closed_by_server']:>10} "
              f"{close:>18} {s['held_to_limit']:>5} {s['requests']:>9} {s['bytes_sent'] / 2**20:>8.1f} "
              f"{s['errors']:>4}" + (f"  stalled {s['stalled']}" if "stalled" in s else "")
              + (f"  ({s['last_error']})" if s.get("last_error") else ""))
    print(f"{'total':<18} {'':>7} {total_conn:>6} {'':>7} {'':>10} {'':>18} {'':>5} {total_req:>9}")

    print("\n== good client (127.0.0.1 / unix socket)")
    print(f"{'op':<8} {'phase':<9} {'rounds':>6} {'errors':>6} {'rate':>12} {'median s':>9} {'max s':>7}")
    rates = {}
    for kind in ("nbd", "rpc", "metrics"):
        for phase in ("baseline", "hostile", "after"):
            recs = [g for g in good if g["kind"] == kind and g["phase"] == phase]
            if not recs:
                print(f"{kind:<8} {phase:<9} {0:>6}")
                if kind == "nbd" or phase != "after":
                    fails.append(f"good {kind}: no complete round in the {phase} phase")
                continue
            errs = [g for g in recs if not g["ok"]]
            oks = [g for g in recs if g["ok"]]
            rate = sum(g["ops"] for g in oks) / sum(g["seconds"] for g in oks) if oks else 0.0
            rates[(kind, phase)] = rate
            med = statistics.median(g["seconds"] for g in recs)
            unit = "4K ops/s" if kind == "nbd" else "ops/s"
            print(f"{kind:<8} {phase:<9} {len(recs):>6} {len(errs):>6} {rate:>7.0f} {unit:<9}"
                  f"{med:>6.2f} {max(g['seconds'] for g in recs):>7.2f}")
            for g in errs[:3]:
                print(f"         error: {g['error']}")
            if errs:
                fails.append(f"good {kind}: {len(errs)} failed round(s) in the {phase} phase")
    for kind in ("nbd", "rpc", "metrics"):
        b, h = rates.get((kind, "baseline")), rates.get((kind, "hostile"))
        if b and h is not None:
            print(f"{kind}: under attack / baseline = {h / b:.2f}")
            if kind == "nbd" and h / b < GOOD_MIN_RATIO:
                fails.append(f"good nbd rate under attack {h / b:.2f} x baseline < {GOOD_MIN_RATIO}")

    print("\n== daemon logs")
    for spec in args.log:
        name, path = spec.split("=", 1)
        size = os.path.getsize(path) if os.path.exists(path) else 0
        lines = sum(1 for _ in open(path, errors="replace")) if size else 0
        print(f"{name:<12} {size / 1024:.0f} KiB, {lines} lines")

    print()
    if fails:
        for f in fails:
            print(f"FAIL: {f}")
        return 1
    print("PASS: every ceiling held and the good client never failed")
    return 0


# ---------------------------------------------------------------------------------------

def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("sample")
    s.add_argument("--pid", action="append", required=True, help="NAME=PID")
    s.add_argument("--phase-file", required=True)
    s.add_argument("--out", required=True)
    g = sub.add_parser("good")
    g.add_argument("--phase-file", required=True)
    g.add_argument("--out", required=True)
    g.add_argument("--nbd-url", required=True)
    g.add_argument("--tapmap", required=True)
    g.add_argument("--config", required=True)
    g.add_argument("--metrics", required=True)
    a = sub.add_parser("attack")
    a.add_argument("--mapserver", required=True)
    a.add_argument("--nbd-unix", required=True)
    a.add_argument("--nbd-tcp")
    a.add_argument("--metrics", required=True)
    a.add_argument("--exports", required=True)
    a.add_argument("--rogue-tls", required=True)
    a.add_argument("--seconds", type=float, required=True)
    a.add_argument("--seed", type=int, default=1)
    a.add_argument("--probe")
    a.add_argument("--out", required=True)
    r = sub.add_parser("report")
    r.add_argument("--samples", required=True)
    r.add_argument("--good", required=True)
    r.add_argument("--attack", required=True)
    r.add_argument("--cache-mib", type=int, required=True)
    r.add_argument("--log", action="append", default=[])
    args = p.parse_args()
    rc = {"sample": cmd_sample, "good": cmd_good, "attack": cmd_attack, "report": cmd_report}[args.cmd](args)
    sys.exit(rc or 0)


if __name__ == "__main__":
    main()
