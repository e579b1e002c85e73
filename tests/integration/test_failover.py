"""Failover and synchronous replication (DESIGN section 7, issue 5).

A replica promoted after the primary died takes writes at a higher term;
the old primary, back, steps down, converges to the new history, and keeps
its unreplicated tail aside instead of letting it reach any store.  Two
primaries of one term are refused, never merged.  With sync_peers = 1 an
fsync returns only once a peer holds the data, so promoting that peer after
the primary is killed loses nothing; with no peer reachable the fsync fails
or degrades as configured.
"""

import errno
import os
import re
import time

import lfs
from cluster import Cluster
from lfs import Failure, check, check_eq


def set_replication(node, **keys):
    """Set keys of [replication] in a node's config (node stopped)."""
    conf = node.dir / "ledgerfs.conf"
    text = conf.read_text()
    for key, value in keys.items():
        line = f"{key} = {value}"
        if re.search(rf"^{key} = .*$", text, re.M):
            text = re.sub(rf"^{key} = .*$", line, text, flags=re.M)
        else:
            text = text.replace("[replication]\n", f"[replication]\n{line}\n", 1)
    conf.write_text(text)


def role(cl, name):
    st = cl.status(name)
    return st["role"], st["term"]


def test_promoted_replica_takes_writes_and_old_primary_steps_down():
    """kill -9 the primary, promote a replica, write there; the old primary
    comes back as a replica of the new term, converges, and its mount is
    read-only."""
    with lfs.Workdir() as wd:
        cl = Cluster(wd, ["a", "b", "c"])
        a, b = cl["a"], cl["b"]
        lfs.write_file(a.m("before"), b"term 1\n", fsync=True)
        cl.wait_in_sync()
        cl.kill9("a")
        cp = lfs.ctl("promote", b.dir)
        check("primary of term 2" in cp.stdout, f"promote says the new term: {cp.stdout!r}")
        check_eq(role(cl, "b"), ("primary", 2), "b's role after promote")
        lfs.write_file(b.m("after"), b"term 2\n", fsync=True)
        cl.wait_converged(["b", "c"])
        cl.start("a")
        cl.wait_in_sync()
        check_eq(role(cl, "a"), ("replica", 2), "the old primary steps down")
        check("term 2" in a.log_text(), "a logs why it stepped down")
        check_eq(lfs.read_file(a.m("after")), b"term 2\n", "a has the new primary's write")
        try:
            lfs.write_file(a.m("x"), b"no\n")
        except OSError as e:
            check_eq(e.errno, errno.EROFS, "a write on the old primary")
        else:
            raise Failure("the old primary still takes writes")
        events = cl.log_events("c")
        roles = [e for e in events if e["type"] == "role"]
        check(any(e["term"] == 2 for e in roles), "c journaled b's promotion")


def test_old_primary_tail_is_kept_aside_and_never_reaches_a_store():
    """Writes the old primary made while cut off from everyone are fenced by
    the promotion: refused by every node, listed as kept aside, taken out
    of the old primary's store by a snapshot resync as soon as it is back
    (it converges to the new primary's digest without a restart), and
    still exportable from the copy of its store it keeps."""
    with lfs.Workdir() as wd:
        cl = Cluster(wd, ["a", "b", "c"])
        a, b, c = cl["a"], cl["b"], cl["c"]
        lfs.write_file(a.m("shared"), b"everyone has this\n", fsync=True)
        cl.wait_in_sync()
        # Stopped, not paused: a paused node still drains what the kernel buffered for it.
        cl.stop("b")
        cl.stop("c")
        lfs.write_file(a.m("lost"), b"only a saw this\n", fsync=True)
        cl.kill9("a")
        cl.start("b")
        cl.start("c")
        lfs.ctl("promote", b.dir)
        lfs.write_file(b.m("new"), b"term 2\n", fsync=True)
        cl.wait_converged(["b", "c"])
        cl.start("a")

        def kept_aside_and_resynced():
            st = cl.status("a")
            return (st["role"] == "replica" and st["tails"] and st["snapshot"]["done"]
                    and not st["rebuild_needed"])
        lfs.wait_until(kept_aside_and_resynced, 60, "a to keep its tail aside and resync")
        tail = cl.status("a")["tails"][0]
        check_eq(tail["origin"], a.id, "the tail is a's own events")
        check_eq(tail["term"], 2, "fenced by the term-2 promotion")
        cl.wait_converged(["a", "b", "c"])
        for name in ("a", "b", "c"):
            check(not os.path.exists(cl[name].store / "lost"),
                  f"a's fenced write is in no store, {name}'s included")
        check_eq(lfs.read_file(a.m("new")), b"term 2\n", "a has the new primary's write")
        check(not os.path.exists(a.m("lost")), "a's mount no longer shows the fenced write")
        cl.stop("a")
        out = wd.path / "tail"
        cp = lfs.ctl("tail-export", a.dir, out)
        check(cp.returncode == 0, "tail-export succeeds")
        check_eq((out / "files" / "lost").read_bytes(), b"only a saw this\n",
                 "tail-export gives the fenced file")
        check("lost" in (out / "events.jsonl").read_text(), "tail-export lists the events")
        kept = [p for p in a.dir.iterdir() if p.name.startswith("store.fenced-")]
        check(kept and (kept[0] / "lost").exists(), "the old store is kept, not deleted")
        cl.start("a")
        cl.wait_in_sync()
        check(not os.path.exists(a.m("lost")), "and stays out after a restart")


def test_two_primaries_of_one_term_are_refused():
    """Two nodes made primary of the same term by hand: the conflict is
    detected and logged on both, and neither applies the other's changes."""
    with lfs.Workdir() as wd:
        cl = Cluster(wd, ["a", "b"], primaries=("a", "b"))
        a, b = cl["a"], cl["b"]
        lfs.write_file(a.m("from-a"), b"a\n", fsync=True)
        lfs.write_file(b.m("from-b"), b"b\n", fsync=True)
        for node in (a, b):
            lfs.wait_until(lambda: "two primaries" in node.log_text(), 30,
                           f"{node.name} to detect the second primary")
        # Both links stay refused: nothing crosses in either direction.
        for name in ("a", "b"):
            peer = cl.status(name)["peers"][0]
            check(peer["state"] != "connected" or not peer["inbound"],
                  f"{name}'s link to the other primary is not in use: {peer}")
        check(not os.path.exists(b.store / "from-a"), "a's change never reaches b")
        check(not os.path.exists(a.store / "from-b"), "b's change never reaches a")


def test_sync_peers_fsync_survives_primary_kill_and_promotion():
    """sync_peers = 1: every byte whose fsync returned is on the synchronous
    replica when the primary is killed right after, while the other replica
    is cut off; promoting that replica loses nothing."""
    with lfs.Workdir() as wd:
        cl = Cluster(wd, ["a", "b", "c"], start=False)
        set_replication(cl["a"], sync_peers=1)
        for name in ("a", "b", "c"):
            cl.start(name)
        a, b = cl["a"], cl["b"]
        cl.wait_in_sync()
        cl.pause("c")
        done = []
        fd = os.open(a.m("log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            for i in range(200):
                line = f"record {i}\n".encode()
                os.write(fd, line)
                os.fsync(fd)
                done.append(line)
        finally:
            os.close(fd)
        cl.kill9("a")
        cl.resume("c")
        lfs.ctl("promote", b.dir)
        check_eq(lfs.read_file(b.m("log")), b"".join(done),
                 "every fsync'd record is on the promoted replica")


def test_sync_peers_without_peers_fails_or_degrades():
    """With every peer down an fsync waits sync_timeout, then fails with EIO
    (sync_degrade = no) or returns and marks the node degraded (yes)."""
    with lfs.Workdir() as wd:
        cl = Cluster(wd, ["a", "b"], start=False)
        set_replication(cl["a"], sync_peers=1, sync_timeout=300, sync_degrade="no")
        cl.start("a")
        a = cl["a"]
        fd = os.open(a.m("f"), os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            os.write(fd, b"x")
            t0 = time.monotonic()
            try:
                os.fsync(fd)
            except OSError as e:
                check_eq(e.errno, errno.EIO, "fsync with no synchronous peer")
            else:
                raise Failure("fsync returned without a synchronous peer")
            check(time.monotonic() - t0 >= 0.25, "fsync waited sync_timeout first")
        finally:
            os.close(fd)
        cl.stop("a")
        set_replication(a, sync_degrade="yes")
        cl.start("a")
        lfs.write_file(a.m("g"), b"y", fsync=True)
        st = cl.status("a")
        check(st["degraded"], "the node says it is degraded")
        check_eq(st["sync_peers"], 1, "status shows sync_peers")
        cl.start("b")
        lfs.wait_until(lambda: not cl.status("a")["degraded"], 30,
                       "synchronous replication to come back once b confirms")
        lfs.write_file(a.m("h"), b"z", fsync=True)
        check(os.path.exists(cl["b"].store / "h"), "a synchronous fsync: b holds the file")
