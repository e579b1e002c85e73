"""Divergence heals, never stalls (DESIGN invariant 9).

A replica whose store no longer holds what an event of the primary expects
(its base version or fid differ) is made here without relying on a bug:
the replica is stopped and an object in its store is changed behind
ledgerfs's back (its version xattr rewritten, its contents changed), then
the primary changes that object.  The replica must not retry the event in
a loop: it says it diverged at that event and why (status, JSON, metrics),
heals by resyncing only the affected subtree from the primary (not the
whole store), journals DIVERGED and HEALED events that `ledgerctl log`
shows, and converges.  A heal that cannot succeed (the subtree made
immutable with chattr +i) stops, says so, and reconnects only a few times
in ten seconds; once the obstacle is gone it heals by itself.
"""

import os
import struct
import subprocess
import time

import lfs
from cluster import Cluster
from lfs import check, check_eq
from test_longpath import level_name, open_chain

VER_XATTR = "trusted.ledgerfs.ver"
BULK_FILES = 100
BULK_SIZE = 8192
# An origin no node has: a version from it matches no event's base.
FOREIGN_ORIGIN = 0x00000000DEADBEEF


def populate(cl):
    """A bulk tree outside the subtree that will diverge, and sub/dir/{f,g}."""
    a = cl["a"]
    os.makedirs(a.m("bulk"))
    for i in range(BULK_FILES):
        lfs.write_file(a.m(f"bulk/f{i:03}"), bytes([i]) * BULK_SIZE)
    os.makedirs(a.m("sub/dir"))
    lfs.write_file(a.m("sub/dir/f"), b"the primary's f\n")
    lfs.write_file(a.m("sub/dir/g"), b"the primary's g\n", fsync=True)
    cl.wait_in_sync()


def tamper(cl, name, rel):
    """Change rel in the stopped node's store behind ledgerfs's back: other
    contents and a version no event of any node carries."""
    path = cl[name].store / rel
    with open(path, "r+b") as f:
        f.write(b"tampered ")
    os.setxattr(path, VER_XATTR, struct.pack("<QQ", FOREIGN_ORIGIN, 5))


def chmod_on_primary(cl, rel, mode):
    """chmod through a's mount; the seq of the event it made."""
    before = cl.seq("a")
    os.chmod(cl["a"].m(rel), mode)
    fd = os.open(cl["a"].m(rel), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    seq = cl.seq("a")
    check(seq > before, f"chmod {rel} on a made an event ({before} -> {seq})")
    return seq


def link_to(st, peer):
    return next(p for p in st["peers"] if p["name"] == peer)


def wait_linked(cl, name, peer):
    """Poll until node name's link to peer is up; its status then."""
    last = {}

    def up():
        last["st"] = cl[name].try_status()
        return last["st"] is not None and link_to(last["st"], peer)["state"] == "connected"
    lfs.wait_until(up, 30, f"{name}'s link to {peer}")
    return last["st"]


def metrics(node):
    cp = lfs.ctl("metrics", node.dir)
    return {line.split("{")[0] + "{" + line.split("{", 1)[1].split("}")[0] + "}":
            line.rsplit(" ", 1)[1]
            for line in cp.stdout.splitlines() if line and not line.startswith("#")}


def metric(m, name):
    vals = [v for k, v in m.items() if k.startswith(name + "{")]
    check(vals, f"metric {name} present")
    return float(vals[0])


def divergence_events(cl, name, seq):
    """b's DIVERGED and HEALED events about a's event seq."""
    aid = cl["a"].id
    evs = [e for e in cl.log_events(name) if e["type"] in ("diverged", "healed")]
    return [e for e in evs if e["event_origin"].lower() == aid and e["event_seq"] == seq]


def test_divergent_replica_heals_only_the_affected_subtree():
    with lfs.Workdir() as wd:
        cl = Cluster(wd, ["a", "b"])
        populate(cl)
        cl.stop("b")
        tamper(cl, "b", "sub/dir/f")
        cl.start("b")
        st = wait_linked(cl, "b", "a")
        connects = link_to(st, "a")["connects"]
        received = link_to(st, "a")["bytes_received"]

        seq = chmod_on_primary(cl, "sub/dir/f", 0o600)
        sts = cl.wait_in_sync()
        st = sts["b"]
        d = st["divergence"]
        lfs.log(f"b's divergence: {d}")
        check_eq(d["state"], "resolved", "b's divergence after the heal")
        check(not st["diverged"], "b no longer diverged")
        check_eq((d["event"]["origin"].lower(), d["event"]["seq"]), (cl["a"].id, seq),
                 "the event b diverged at")
        check_eq(d["path"], "sub/dir/f", "the diverged event's path")
        check(d["text"].startswith(f"diverged at event {cl['a'].id}:{seq} (chmod sub/dir/f): ")
              and "base version mismatch" in d["text"],
              f"status says where and why b diverged: {d['text']!r}")
        check_eq(d["scope"], "sub/dir", "the subtree healed")
        check_eq(d["peer"], "a", "the peer healed from")
        check_eq((d["heals"], d["entries"]), (1, 1), "one heal, replacing one entry")
        check_eq((st["divergence"]["divergences"], st["divergence"]["healed"],
                  st["divergence"]["heal_failures"]), (1, 1, 0), "divergence counters")
        # Not a full resync: the bulk tree (800 KiB) was neither compared away nor sent.
        check(d["bytes"] < 1024, f"the heal received {d['bytes']} bytes of contents")
        check(link_to(st, "a")["bytes_received"] - received < BULK_FILES * BULK_SIZE // 4,
              "b did not receive the event stream again and again")
        check_eq(link_to(st, "a")["connects"], connects,
                 "b healed over the link it had, without reconnecting")
        check_eq(os.stat(cl["b"].m("sub/dir/f")).st_mode & 0o7777, 0o600, "b's f mode")
        check_eq(lfs.read_file(cl["b"].m("sub/dir/f")), b"the primary's f\n", "b's f")

        evs = divergence_events(cl, "b", seq)
        check_eq([e["type"] for e in evs], ["diverged", "healed"],
                 f"b's journal records the divergence and the heal: {evs}")
        div, healed = evs
        check_eq((div["path"], div["path2"], div["name"], div["stopped"]),
                 ("sub/dir", "sub/dir/f", "a", False), "the DIVERGED event")
        check("base version mismatch" in div["why"], f"DIVERGED says why: {div['why']!r}")
        check_eq((healed["path"], healed["name"], healed["entries"], healed["replaced"]),
                 ("sub/dir", "a", 1, ["fetch sub/dir/f"]), "the HEALED event")
        check(healed["position"] >= seq, f"healed at a's position {healed['position']}, "
                                         f"at or after the event {seq}")
        text = lfs.ctl("log", cl["b"].dir).stdout
        check(f"{cl['a'].id}:{seq}" in text and "fetch sub/dir/f" in text,
              f"ledgerctl log shows the heal:\n{text[-1500:]}")
        m = metrics(cl["b"])
        check_eq((metric(m, "ledgerfs_diverged"), metric(m, "ledgerfs_divergences_total"),
                  metric(m, "ledgerfs_heals_total"), metric(m, "ledgerfs_heal_entries_total")),
                 (0, 1, 1, 1), "b's divergence metrics")
        # The events after the heal apply as usual, once each.
        lfs.write_file(cl["a"].m("sub/dir/f"), b"after the heal\n", fsync=True)
        cl.wait_in_sync()
        cl.check_exactly_once(["a", "b"])


def test_missing_object_on_replica_heals_from_its_directory():
    """A file gone from the replica's store (ENOENT on apply) is a divergence
    too: the heal brings it back from the primary."""
    with lfs.Workdir() as wd:
        cl = Cluster(wd, ["a", "b"])
        populate(cl)
        cl.stop("b")
        os.unlink(cl["b"].store / "sub/dir/g")
        cl.start("b")
        seq = chmod_on_primary(cl, "sub/dir/g", 0o640)
        st = cl.wait_in_sync()["b"]
        d = st["divergence"]
        check_eq((d["state"], d["event"]["seq"], d["scope"]), ("resolved", seq, "sub/dir"),
                 f"b healed sub/dir: {d}")
        check_eq(lfs.read_file(cl["b"].m("sub/dir/g")), b"the primary's g\n", "b's g")
        check_eq([e["type"] for e in divergence_events(cl, "b", seq)], ["diverged", "healed"],
                 "DIVERGED and HEALED journaled")


def test_rename_out_of_a_healed_subtree_heals_both_sides():
    """An event the heal's subtree already shows, renaming a name out of it:
    the healed side says applied, the other side lacks the name, so it is a
    divergence too, healed by the subtree holding both names."""
    with lfs.Workdir() as wd:
        cl = Cluster(wd, ["a", "b"])
        populate(cl)
        os.mkdir(cl["a"].m("sub/other"))
        cl.wait_in_sync()
        cl.stop("b")
        tamper(cl, "b", "sub/dir/f")
        seq = chmod_on_primary(cl, "sub/dir/f", 0o600)
        os.rename(cl["a"].m("sub/dir/g"), cl["a"].m("sub/other/g"))
        lfs.write_file(cl["a"].m("marker"), b"m", fsync=True)
        cl.start("b")
        st = cl.wait_in_sync()["b"]
        check_eq(lfs.read_file(cl["b"].m("sub/other/g")), b"the primary's g\n", "b's moved g")
        check(not os.path.lexists(cl["b"].m("sub/dir/g")), "g gone from b's sub/dir")
        evs = [(e["type"], e["event_seq"], e["path"]) for e in cl.log_events("b")
               if e["type"] in ("diverged", "healed")]
        check_eq(evs, [("diverged", seq, "sub/dir"), ("healed", seq, "sub/dir"),
                       ("diverged", seq + 1, "sub"), ("healed", seq + 1, "sub")],
                 "b healed sub/dir, then sub for the rename across its edge")
        check_eq(st["divergence"]["healed"], 2, "two heals")
        cl.check_exactly_once(["a", "b"])


def chattr(flag, path):
    subprocess.run(["chattr", flag, str(path)], check=True)


def test_heal_that_cannot_succeed_stops_and_backs_off():
    with lfs.Workdir() as wd:
        cl = Cluster(wd, ["a", "b"])
        populate(cl)
        cl.stop("b")
        tamper(cl, "b", "sub/dir/f")
        locked = cl["b"].store / "sub/dir"
        chattr("+i", locked)
        try:
            heal_stops_until_unlocked(cl, locked)
        finally:
            subprocess.run(["chattr", "-i", str(locked)], check=False)


def heal_stops_until_unlocked(cl, locked):
    """b's heal of sub/dir fails while locked is immutable: it stops, says so,
    backs off; unlocked, it heals."""
    cl.start("b")
    seq = chmod_on_primary(cl, "sub/dir/f", 0o600)

    def stopped():
        return cl.status("b")["divergence"]["state"] == "stopped"
    lfs.wait_until(stopped, 30, "b's heal to stop")
    st = cl.status("b")
    d = st["divergence"]
    lfs.log(f"b's divergence: {d}")
    check(st["diverged"] and not st["in_sync"], "b says it diverged and is not in sync")
    check_eq(d["event"]["seq"], seq, "the event b diverged at")
    check("Operation not permitted" in d["stopped"] and "sub/dir" in d["stopped"],
          f"status says why the heal stopped: {d['stopped']!r}")
    text = lfs.ctl("status", cl["b"].dir).stdout
    check(f"diverged at event {cl['a'].id}:{seq} (chmod sub/dir/f)" in text and
          "heal stopped" in text, f"ledgerctl status says so:\n{text}")
    check_eq(metric(metrics(cl["b"]), "ledgerfs_heal_stopped"), 1, "heal_stopped metric")

    # Stable: a few reconnects in ten seconds, not hundreds.
    c0 = link_to(st, "a")["connects"]
    time.sleep(10)
    st = cl.status("b")
    c1 = link_to(st, "a")["connects"]
    lfs.log(f"b reconnected to a {c1 - c0} times in 10 s: {link_to(st, 'a')['why']!r}")
    check(c1 - c0 <= 5, f"b reconnected {c1 - c0} times in 10 s")
    check_eq(st["divergence"]["state"], "stopped", "b's heal still stopped")
    evs = divergence_events(cl, "b", seq)
    check_eq([(e["type"], e.get("stopped")) for e in evs],
             [("diverged", False), ("diverged", True)],
             "one DIVERGED as the heal starts and one as it stops, however often it "
             "is tried again")
    check_eq(cl.seq("a"), seq, "a made no events meanwhile")

    # The obstacle gone, the next try heals.
    chattr("-i", locked)
    st = cl.wait_in_sync(timeout=90)["b"]
    check_eq(st["divergence"]["state"], "resolved", "b healed once it could")
    check_eq(lfs.read_file(cl["b"].m("sub/dir/f")), b"the primary's f\n", "b's f")
    check_eq([e["type"] for e in divergence_events(cl, "b", seq)],
             ["diverged", "diverged", "healed"], "then HEALED is journaled")


def test_divergence_deeper_than_path_max_heals_the_directory_it_is_in():
    """A divergence at a file whose path is longer than PATH_MAX is healed
    (and journaled) at the directory holding it, not at an ancestor short
    enough for a fixed buffer."""
    names = [level_name(i) for i in range(25)]  # 25 levels of 201 bytes: past PATH_MAX
    deep = "/".join(names)
    check(len(deep) > 4096, f"the directory is {len(deep)} bytes down, past Linux's PATH_MAX")
    with lfs.Workdir() as wd:
        cl = Cluster(wd, ["a", "b"])
        d = open_chain(cl["a"].m(""), names, make=True)
        try:
            fd = os.open("f", os.O_CREAT | os.O_WRONLY, 0o644, dir_fd=d)
            os.write(fd, b"the primary's deep f\n")
            os.fsync(fd)
            os.close(fd)
        finally:
            os.close(d)
        cl.wait_in_sync()
        cl.stop("b")
        d = open_chain(cl["b"].store, names)
        try:
            fd = os.open("f", os.O_WRONLY, dir_fd=d)
            os.write(fd, b"tampered ")
            os.setxattr(fd, VER_XATTR, struct.pack("<QQ", FOREIGN_ORIGIN, 5))
            os.close(fd)
        finally:
            os.close(d)
        cl.start("b")
        wait_linked(cl, "b", "a")

        before = cl.seq("a")
        d = open_chain(cl["a"].m(""), names)
        try:
            os.chmod("f", 0o600, dir_fd=d)
            fd = os.open("f", os.O_RDONLY, dir_fd=d)
            os.fsync(fd)
            os.close(fd)
        finally:
            os.close(d)
        seq = cl.seq("a")
        check(seq > before, f"chmod of the deep f on a made an event ({before} -> {seq})")
        st = cl.wait_in_sync()["b"]
        check_eq(st["divergence"]["state"], "resolved", "b's divergence after the heal")

        evs = divergence_events(cl, "b", seq)
        check_eq([e["type"] for e in evs], ["diverged", "healed"],
                 "DIVERGED and HEALED journaled")
        div, healed = evs
        check_eq(div["path2"], deep + "/f", "DIVERGED names the whole path of the event")
        check_eq(div["path"], deep, "DIVERGED's subtree is the directory holding f")
        check_eq((healed["path"], healed["entries"], healed["replaced"]),
                 (deep, 1, [f"fetch {deep}/f"]), "the HEALED event")
        d = open_chain(cl["b"].m(""), names)
        try:
            check_eq(os.stat("f", dir_fd=d).st_mode & 0o7777, 0o600, "b's deep f mode")
            fd = os.open("f", os.O_RDONLY, dir_fd=d)
            check_eq(os.read(fd, 100), b"the primary's deep f\n", "b's deep f")
            os.close(fd)
        finally:
            os.close(d)
