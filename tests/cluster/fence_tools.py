#!/usr/bin/env python3
"""NBD guests and the checker of the fencing cases of the cluster suite (run_cluster.sh,
cases f_*; mapserver/doc/leases.md).

  fence_tools.py writer URL LOG [--blocks N] [--flush-every N] [--max-errors N]
  fence_tools.py takeover URL OUT.json SNAPSHOT [--blocks N] [--mark-blocks K,...]
  fence_tools.py dump URL FILE [--blocks N]
  fence_tools.py check WRITER_LOG TAKEOVER.json SNAPSHOT FINAL [--blocks N]
  fence_tools.py durable WRITER_LOG FINAL --after T [--blocks N]

writer: a guest on one host that writes 4 KiB records to the first BLOCKS pool blocks
of a volume round robin, flushes every FLUSH_EVERY writes, and logs one line per
outcome with the monotonic clock (shared by every network namespace of the machine):

    W <t> <seq> <offset>       write seq acknowledged
    F <t> <seq>                flush acknowledged (covers every write <= seq)
    E <t> <seq> <message>      a write or flush failed

A record is 4096 bytes: b"TAPMAP-SEQ %012d\\n" % seq, then the byte (seq % 251) + 1.
It stops at SIGTERM or after --max-errors failures (a fenced host that lost its lease
fails every request).

takeover: another host's guest: connects (the rw open waits for the writer's lease to
end), notes the time, saves what it reads of the blocks (SNAPSHOT), then writes a
marker record (seq 0) over the first 4 KiB of each of --mark-blocks and flushes; the
times go to OUT.json.

check: the verdict (exit 1 and the reasons on stderr if any fails):
  - no write of the writer was acknowledged after the takeover's open was granted;
  - the takeover saw, in every block, the writer's last flushed record or a later one
    it issued (nothing acknowledged and flushed is lost);
  - FINAL (the blocks read by a third host after the writer's link healed) equals the
    snapshot, but for the marked blocks, which hold the marker: no write of the fenced
    writer landed after the takeover.
"""
import argparse
import json
import signal
import sys
import time

import nbd

RECORD = 4096


def record(seq):
    head = b"TAPMAP-SEQ %012d\n" % seq
    return head + bytes([(seq % 251) + 1]) * (RECORD - len(head))


def parse_record(data):
    """The seq of a well-formed record, None for zeros, -1 for anything else."""
    if data == bytes(len(data)):
        return None
    if not data.startswith(b"TAPMAP-SEQ ") or len(data) != RECORD:
        return -1
    try:
        seq = int(data[11:23])
    except ValueError:
        return -1
    return seq if data == record(seq) else -1


def writer(args):
    # The writer's records sit at the start of each of the first --blocks pool blocks.
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    h = nbd.NBD()
    h.connect_uri(args.url)
    errors = 0
    seq = 0
    with open(args.log, "a", buffering=1) as log:
        while not stop and errors < args.max_errors:
            seq += 1
            off = ((seq - 1) % args.blocks) * args.block_size
            try:
                h.pwrite(record(seq), off)
                log.write("W %.6f %d %d\n" % (time.monotonic(), seq, off))
            except nbd.Error as e:
                errors += 1
                log.write("E %.6f %d %s\n" % (time.monotonic(), seq, str(e).replace("\n", " ")))
                continue
            if seq % args.flush_every == 0:
                try:
                    h.flush()
                    log.write("F %.6f %d\n" % (time.monotonic(), seq))
                except nbd.Error as e:
                    errors += 1
                    log.write("E %.6f %d flush: %s\n" % (time.monotonic(), seq, str(e).replace("\n", " ")))
    try:
        h.shutdown()
    except nbd.Error:
        pass
    return 0


def takeover(args):
    h = nbd.NBD()
    asked = time.monotonic()
    h.connect_uri(args.url)
    granted = time.monotonic()
    data = h.pread(args.blocks * args.block_size, 0)
    with open(args.snapshot, "wb") as f:
        f.write(data)
    marks = [int(b) for b in args.mark_blocks.split(",") if b != ""]
    first_write = time.monotonic()
    for b in marks:
        h.pwrite(record(0), b * args.block_size)
    h.flush()
    h.shutdown()
    with open(args.out, "w") as f:
        json.dump({"asked": asked, "granted": granted, "first_write": first_write, "marks": marks}, f)
    return 0


def dump(args):
    h = nbd.NBD()
    h.connect_uri(args.url)
    total, chunk, parts = args.blocks * args.block_size, 16 << 20, []
    for off in range(0, total, chunk):  # NBD requests are bounded (32 MiB)
        parts.append(h.pread(min(chunk, total - off), off))
    data = b"".join(parts)
    h.shutdown()
    with open(args.file, "wb") as f:
        f.write(data)
    return 0


def read_log(path):
    """A writer log: acknowledged writes [(t, seq, offset)], flushes [(t, seq)], the
    number of errors and the highest seq issued (acknowledged or not)."""
    acked, flushes, errors, issued = [], [], 0, 0
    for line in open(path):
        parts = line.split()
        if not parts:
            continue
        if parts[0] == "W":
            acked.append((float(parts[1]), int(parts[2]), int(parts[3])))
            issued = max(issued, int(parts[2]))
        elif parts[0] == "F":
            flushes.append((float(parts[1]), int(parts[2])))
        elif parts[0] == "E":
            errors += 1
            issued = max(issued, int(parts[2]))
    return acked, flushes, errors, issued


def flushed_per_block(acked, last_flush):
    """offset -> the newest acknowledged seq at that offset covered by a flush."""
    flushed = {}
    for (_, seq, off) in acked:
        if seq <= last_flush:
            flushed[off] = max(flushed.get(off, 0), seq)
    return flushed


def check(args):
    with open(args.takeover) as f:
        t = json.load(f)
    snap = open(args.snapshot, "rb").read()
    final = open(args.final, "rb").read()
    bs = args.block_size
    problems = []
    acked, flushes, _, issued = read_log(args.writer_log)
    last_flush = max((seq for _, seq in flushes), default=0)
    late = [a for a in acked if a[0] > t["granted"]]
    if late:
        problems.append("%d write(s) acknowledged to the fenced writer after the takeover was granted "
                        "(first: seq %d, %.3f s after)" % (len(late), late[0][1], late[0][0] - t["granted"]))
    flushed = flushed_per_block(acked, last_flush)
    for b in range(args.blocks):
        off = b * bs
        got = parse_record(snap[off:off + RECORD])
        want = flushed.get(off, 0)
        if got == -1:
            problems.append("block %d: the takeover read a torn or foreign record" % b)
        elif (got or 0) < want:
            problems.append("block %d: the takeover read seq %s, but seq %d was flushed" % (b, got, want))
        elif got is not None and got > issued:
            problems.append("block %d: seq %d was never issued" % (b, got))
    for b in range(args.blocks):
        off = b * bs
        if b in t["marks"]:
            if final[off:off + RECORD] != record(0):
                problems.append("block %d: the takeover's marker is gone (seq %s)" % (b, parse_record(final[off:off + RECORD])))
            want_rest, got_rest = snap[off + RECORD:off + bs], final[off + RECORD:off + bs]
        else:
            want_rest, got_rest = snap[off:off + bs], final[off:off + bs]
        if want_rest != got_rest:
            problems.append("block %d changed after the takeover (now seq %s): a write of the fenced "
                            "host landed late" % (b, parse_record(final[off:off + RECORD])))
    print("fence check: %d writes acknowledged (last flush at seq %d, %d issued); takeover granted %.3f s "
          "after it asked; %d problem(s)" % (len(acked), last_flush, issued, t["granted"] - t["asked"], len(problems)))
    for p in problems:
        print("  " + p, file=sys.stderr)
    return 1 if problems else 0


def durable(args):
    """Mapserver fail-over (case s_*): a writer that kept going across the kill of the
    active mapserver. Verdict: no write or flush of it failed, some flush completed
    after time T (the kill) — the writer went on with the new active —, and FINAL (the
    blocks as another host reads them afterwards) holds, in every block, the writer's
    last flushed record or a later one it issued. Prints the longest gap between two
    flushes that spans T (how long the guest's flushes stalled)."""
    final = open(args.final, "rb").read()
    bs = args.block_size
    problems = []
    acked, flushes, errors, issued = read_log(args.writer_log)
    if errors:
        problems.append("%d write(s) or flush(es) failed" % errors)
    last_flush = max((seq for _, seq in flushes), default=0)
    if not any(t > args.after for t, _ in flushes):
        problems.append("no flush completed after the kill")
    flushed = flushed_per_block(acked, last_flush)
    for b in range(args.blocks):
        off = b * bs
        got = parse_record(final[off:off + RECORD])
        want = flushed.get(off, 0)
        if got == -1:
            problems.append("block %d: a torn or foreign record" % b)
        elif (got or 0) < want:
            problems.append("block %d: reads seq %s, but seq %d was flushed: an acknowledged write was lost"
                            % (b, got, want))
        elif got is not None and got > issued:
            problems.append("block %d: seq %d was never issued" % (b, got))
    # Writes into blocks already allocated go on without the mapserver; a flush waits for
    # the commit, so the flushes show how long the fail-over held the guest up.
    times = sorted(t for t, _ in flushes)
    stall = max((b - a for a, b in zip(times, times[1:]) if a <= args.after <= b), default=0.0)
    print("durable check: %d writes acknowledged (last flush at seq %d), flushes stalled %.2f s across the kill; "
          "%d problem(s)" % (len(acked), last_flush, stall, len(problems)))
    for p in problems:
        print("  " + p, file=sys.stderr)
    return 1 if problems else 0


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("writer")
    w.add_argument("url")
    w.add_argument("log")
    w.add_argument("--flush-every", type=int, default=8)
    w.add_argument("--max-errors", type=int, default=5)
    t = sub.add_parser("takeover")
    t.add_argument("url")
    t.add_argument("out")
    t.add_argument("snapshot")
    t.add_argument("--mark-blocks", default="0")
    d = sub.add_parser("dump")
    d.add_argument("url")
    d.add_argument("file")
    c = sub.add_parser("check")
    c.add_argument("writer_log")
    c.add_argument("takeover")
    c.add_argument("snapshot")
    c.add_argument("final")
    u = sub.add_parser("durable")
    u.add_argument("writer_log")
    u.add_argument("final")
    u.add_argument("--after", type=float, required=True)
    for p in (w, t, d, c, u):
        p.add_argument("--blocks", type=int, default=16)
        p.add_argument("--block-size", type=int, default=65536)
    args = ap.parse_args()
    return {"writer": writer, "takeover": takeover, "dump": dump, "check": check, "durable": durable}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
