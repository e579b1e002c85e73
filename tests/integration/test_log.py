"""`ledgerctl log`: count, order and content of events for a scripted
sequence, and the --from and --origin filters."""

import datetime
import json
import os
import re

import lfs
from lfs import check, check_eq

SCRIPT_EVENTS = [("mkdir", "d"), ("create", "d/f"), ("write", "d/f"), ("chmod", "d/f"),
                 ("rename", "d/f"), ("setxattr", "d/g"), ("truncate", "d/g"),
                 ("removexattr", "d/g"), ("unlink", "d/g"), ("rmdir", "d")]


def scripted(n):
    """Do the SCRIPT_EVENTS sequence through the mount of node n."""
    os.mkdir(n.m("d"))
    lfs.write_file(n.m("d/f"), b"0123456789", fsync=True)
    os.chmod(n.m("d/f"), 0o640)
    os.rename(n.m("d/f"), n.m("d/g"))
    os.setxattr(n.m("d/g"), "user.tag", b"v")
    os.truncate(n.m("d/g"), 3)
    os.removexattr(n.m("d/g"), "user.tag")
    os.unlink(n.m("d/g"))
    os.rmdir(n.m("d"))


def parse_time(text):
    """Parse an ISO-8601 timestamp (a trailing Z allowed)."""
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_log_json_lists_scripted_sequence():
    """The journal holds exactly the scripted events in order, with the
    fields each type needs, one fid following the file through its rename,
    contiguous seqs, non-decreasing HLCs and ISO-8601 times."""
    with lfs.one_node() as n:
        mark = n.last_seq()
        scripted(n)
        evs = n.events_since(mark)
        lfs.check_events(evs, SCRIPT_EVENTS)
        by = {}
        for e in evs:
            by.setdefault(e["type"], []).append(e)
        check_eq(lfs.written_bytes(evs, "d/f"), 10, "write length")
        check_eq(by["write"][0].get("offset"), 0, "write offset")
        check_eq(lfs.rel(by["rename"][0].get("path2")), "d/g", "rename path2")
        check_eq(int(str(by["chmod"][0]["mode"]), 8) & 0o7777, 0o640, "chmod mode")
        check_eq(by["truncate"][0].get("size"), 3, "truncate size")
        check_eq(by["setxattr"][0].get("name"), "user.tag", "setxattr name")
        check_eq(by["removexattr"][0].get("name"), "user.tag", "removexattr name")
        file_events = [e for e in evs if e["type"] not in ("mkdir", "rmdir", "utimens")]
        fids = {e.get("fid") for e in file_events}
        check(None not in fids and len(fids) == 1, f"one fid for the file: {fids}")
        check(by["mkdir"][0].get("fid") not in fids, "directory has its own fid")
        origins = {e["origin"] for e in evs}
        check_eq(len(origins), 1, "one origin")
        check(re.fullmatch(r"[0-9a-f]{16}", origins.pop()), "origin is 16 hex digits")
        seqs = [e["seq"] for e in evs]
        check_eq(seqs, list(range(seqs[0], seqs[0] + len(seqs))), "contiguous seqs")
        hlcs = [int(str(e["hlc"]), 0) if isinstance(e["hlc"], str) else e["hlc"]
                for e in evs]
        check_eq(hlcs, sorted(hlcs), "HLCs non-decreasing")
        times = [parse_time(e["time"]) for e in evs]
        check_eq(times, sorted(times), "times non-decreasing")
        n.unmount()
        check_eq([(e["seq"], e["type"]) for e in n.events_since(mark)],
                 [(e["seq"], e["type"]) for e in evs], "log of the unmounted node")


def test_log_from_and_origin_filters():
    """--from SEQ gives exactly the events from SEQ on; --origin with the
    node's own id gives all of them, with an unknown id none."""
    with lfs.one_node() as n:
        scripted(n)
        n.unmount()
        full = n.events()
        check(len(full) >= len(SCRIPT_EVENTS), "journal has the scripted events")
        middle = full[len(full) // 2]["seq"]
        tail = n.events("--from", str(middle))
        check_eq([e["seq"] for e in tail], [e["seq"] for e in full if e["seq"] >= middle],
                 f"--from {middle}")
        origin = full[0]["origin"]
        check_eq(len(n.events("--origin", origin)), len(full), "--origin own id")
        other = "0123456789abcdef" if origin != "0123456789abcdef" else "fedcba9876543210"
        check_eq(n.events("--origin", other), [], "--origin unknown id")
        check_eq(n.events("--from", str(full[-1]["seq"] + 1)), [], "--from past the end")


def test_log_human_format_mentions_each_event():
    """Without --json the log prints one readable line per event naming its
    type and path."""
    with lfs.one_node() as n:
        scripted(n)
        n.unmount()
        evs = n.events()
        text = lfs.ctl("log", n.dir).stdout
        lines = [line for line in text.splitlines() if line.strip()]
        check(len(lines) >= len(evs), f"{len(lines)} lines for {len(evs)} events")
        for t, p in SCRIPT_EVENTS:
            check(t in text and p in text, f"human log mentions {t} {p}")


def test_failed_operations_are_not_journaled():
    """An operation the store refuses (rmdir of a non-empty dir, mkdir of an
    existing name, rename NOREPLACE onto a file) adds no event that counts
    (at most a void placeholder)."""
    with lfs.one_node() as n:
        os.mkdir(n.m("full"))
        lfs.write_file(n.m("full/x"), b"x")
        mark = n.last_seq()
        for func, args in ((os.rmdir, (n.m("full"),)), (os.mkdir, (n.m("full"),)),
                           (lfs.renameat2, (n.m("full/x"), n.m("full"),
                                            lfs.RENAME_NOREPLACE))):
            try:
                func(*args)
            except OSError:
                pass
            else:
                raise lfs.Failure(f"{func.__name__}{args} succeeded")
        counted = [e for e in n.events_since(mark) if e["type"] != "void"]
        check_eq(counted, [], "events that count after refused operations")


def test_log_readable_while_mounted():
    """`ledgerctl log` reads the journal of a node that is mounted (the demo
    tells users to run it while the mount serves)."""
    with lfs.one_node() as n:
        lfs.write_file(n.m("f"), b"x")
        cp = lfs.ctl("log", n.dir, "--json", check=False)
        check_eq(cp.returncode, 0, f"exit code of ledgerctl log on a mounted node "
                                   f"(stderr: {cp.stderr.strip()})")
        types = [json.loads(line)["type"] for line in cp.stdout.splitlines() if line]
        check("create" in types, f"the create is listed: {types}")
