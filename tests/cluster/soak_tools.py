#!/usr/bin/env python3
"""Verdicts and figures of the lease soak (bench/cluster/lease_soak.sh): one writer
log of fence_tools.py (writer) against what was read back of its volume.

  soak_tools.py verify WRITER_LOG FINAL [--takeover JSON --snapshot SNAPSHOT] [--blocks N]
  soak_tools.py flushes WRITER_LOG [--after T]

verify: the rules of fence_tools.py check, counted rather than only judged:
  - every block of the volume as read back (the takeover's SNAPSHOT for a volume taken
    over, else FINAL) holds a well-formed record of the writer, at least the writer's
    last flushed record for that block, and no seq that was never issued: otherwise
    the block counts as a lost flushed write ("lost") or a torn one ("torn");
  - with --takeover: writes acknowledged to the writer after the takeover's rw open was
    granted ("late_acks"), and blocks of FINAL that differ from the SNAPSHOT but for
    the takeover's markers ("late_landed": a write of the fenced writer reached the
    pool after the takeover);
  - for information only, without --takeover: blocks that do not hold the writer's
    last acknowledged (possibly unflushed) record ("unflushed_missing"; NBD promises
    nothing for an unflushed write, so this is no failure).
It prints one line

    VERIFY acked flushed_acked blocks lost torn late_acks late_landed unflushed_missing errors last_ack

(last_ack: the monotonic time of the writer's last acknowledged write, 0 if none) and
the problems, if any, on stderr; exit 1 if there are problems.

flushes: the number of flushes the writer logged (after the monotonic time T).
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fence_tools import RECORD, flushed_per_block, parse_record, read_log, record  # noqa: E402


def verify(args):
    acked, flushes, errors, issued = read_log(args.writer_log)
    last_flush = max((s for _, s in flushes), default=0)
    bs = args.block_size
    final = open(args.final, "rb").read()
    takeover = None
    if args.takeover:
        with open(args.takeover) as f:
            takeover = json.load(f)
        seen = open(args.snapshot, "rb").read()
    else:
        seen = final
    problems = []
    flushed = flushed_per_block(acked, last_flush)
    last_acked = {}
    for (_, seq, off) in acked:
        last_acked[off] = max(last_acked.get(off, 0), seq)
    lost = torn = late_landed = unflushed_missing = 0
    for b in range(args.blocks):
        off = b * bs
        if len(seen) < off + RECORD:
            problems.append("block %d: read back short (%d bytes)" % (b, len(seen)))
            torn += 1
            continue
        got = parse_record(seen[off:off + RECORD])
        want = flushed.get(off, 0)
        if got == -1:
            torn += 1
            problems.append("block %d: a torn or foreign record" % b)
        elif got is not None and got != 0 and got > issued:
            torn += 1
            problems.append("block %d: seq %d was never issued" % (b, got))
        elif (got or 0) < want:
            lost += 1
            problems.append("block %d: read seq %s, but seq %d was flushed" % (b, got, want))
        elif takeover is None and (got or 0) != last_acked.get(off, 0):
            unflushed_missing += 1
    late_acks = 0
    if takeover is not None:
        late = [a for a in acked if a[0] > takeover["granted"]]
        late_acks = len(late)
        if late:
            problems.append("%d write(s) acknowledged after the takeover was granted (first: seq %d, %.3f s after)"
                            % (len(late), late[0][1], late[0][0] - takeover["granted"]))
        for b in range(args.blocks):
            off = b * bs
            if b in takeover["marks"]:
                if final[off:off + RECORD] != record(0):
                    late_landed += 1
                    problems.append("block %d: the takeover's marker is gone" % b)
                    continue
                want_rest, got_rest = seen[off + RECORD:off + bs], final[off + RECORD:off + bs]
            else:
                want_rest, got_rest = seen[off:off + bs], final[off:off + bs]
            if want_rest != got_rest:
                late_landed += 1
                problems.append("block %d changed after the takeover (now seq %s)"
                                % (b, parse_record(final[off:off + RECORD])))
    flushed_acked = sum(1 for (_, s, _) in acked if s <= last_flush)
    last_ack = max((t for t, _, _ in acked), default=0.0)
    print("VERIFY %d %d %d %d %d %d %d %d %d %.6f" % (len(acked), flushed_acked, args.blocks, lost, torn, late_acks,
                                                     late_landed, unflushed_missing, errors, last_ack))
    for p in problems:
        print("  " + p, file=sys.stderr)
    return 1 if problems else 0


def flushes(args):
    try:
        _, fl, _, _ = read_log(args.writer_log)
    except FileNotFoundError:
        fl = []
    print(sum(1 for t, _ in fl if t > args.after))
    return 0


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    v = sub.add_parser("verify")
    v.add_argument("writer_log")
    v.add_argument("final")
    v.add_argument("--takeover")
    v.add_argument("--snapshot")
    v.add_argument("--blocks", type=int, default=16)
    v.add_argument("--block-size", type=int, default=65536)
    f = sub.add_parser("flushes")
    f.add_argument("writer_log")
    f.add_argument("--after", type=float, default=0.0)
    args = ap.parse_args()
    if args.cmd == "verify" and bool(args.takeover) != bool(args.snapshot):
        ap.error("--takeover and --snapshot go together")
    return {"verify": verify, "flushes": flushes}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
