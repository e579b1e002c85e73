"""ledgerctl rescue (issue 17): a stopped node's events reach a live peer.

A primary whose replicas were down writes, and its machine dies (kill -9):
its journal, read from its disk, holds events nobody else has.  `ledgerctl
rescue` ships exactly those the peer lacks over the normal authenticated
protocol (a HELLO that pushes), after which the peer's store digests like
the dead node's.  It refuses a node that still runs, works from a LevelDB
that was never closed and from a disk mounted read-only, writing nothing
to it, and reports the peer's refusal of events of a lower
term than its own (a failover fenced them), leaving the peer as it was.
"""

import os
import pty
import re
import select
import subprocess
import time

import lfs
from cluster import Cluster
from lfs import check, check_eq
from test_fsck import check_snapshot, snapshot

N_FILES = 40


def _write_history(node):
    """A few kinds of change, one large enough for the value log.  The last
    ones are not synced, so that after a kill -9 the journal's applied mark
    lags the store and the event is replayed."""
    top = node.m("lost-work")
    os.mkdir(top)
    for i in range(N_FILES):
        lfs.write_file(top / f"f{i:02d}", f"file {i}\n" * (i + 1))
    lfs.write_file(top / "big", os.urandom(300 * 1024))
    os.rename(top / "f00", top / "renamed")
    os.unlink(top / "f01")
    os.symlink("renamed", top / "link")
    os.chmod(top / "f02", 0o600)
    lfs.write_file(top / "synced", b"an fsync'd write\n", fsync=True)
    lfs.write_file(top / "last", b"the last write\n")
    os.truncate(top / "f03", 2)


def _own_events_after(cl, name, seq):
    """(count, first, last) of node `name`'s own events above seq in its journal."""
    oid = cl[name].id
    seqs = sorted(e["seq"] for e in cl[name].events() if e["origin"].lower() == oid
                  and e["seq"] > seq)
    check(seqs, f"{name} holds no events of its own after {seq}")
    check_eq(seqs, list(range(seqs[0], seqs[-1] + 1)), f"{name}'s seqs are contiguous")
    return len(seqs), seqs[0], seqs[-1]


def _dead_primary_with_unshipped_tail(wd):
    """Cluster a, b, c; a writes while b and c are stopped, then is killed.
    Returns (cluster, what b had applied of a before)."""
    cl = Cluster(wd, ["a", "b", "c"])
    a = cl["a"]
    lfs.write_file(a.m("shared"), b"everyone has this\n", fsync=True)
    cl.wait_in_sync()
    base = cl.applied("b", "a")
    # Stopped, not paused: a paused node still drains what the kernel buffered for it.
    cl.stop("b")
    cl.stop("c")
    _write_history(a)
    cl.kill9("a")
    cl.start("b")
    cl.start("c")
    return cl, base


def _rescue(*args):
    return lfs.ctl("rescue", *args, check=False)


def _check_shipped(cp, name, count, first, last):
    check_eq(cp.returncode, 0, f"rescue exit status (stderr: {cp.stderr.strip()!r})")
    want = f"{name} ("
    lines = [ln for ln in cp.stdout.splitlines() if ln.strip().startswith(want)]
    check_eq(len(lines), 1, f"one report line for origin {name} in {cp.stdout!r}")
    check(f": {count} events, seqs {first}..{last}" in lines[0],
          f"rescue reports {count} events {first}..{last}: {lines[0]!r}")
    check(re.search(rf"^rescued {count} of {count} missing events", cp.stdout, re.M),
          f"summary line: {cp.stdout!r}")


def test_rescue_ships_exactly_the_events_a_dead_primary_held_alone():
    """kill -9 a primary whose replicas were stopped; rescue its journal to b
    with its own certificate: exactly the missing events are shipped, b and
    then c (which relays them from b) digest like a's store, and a second
    rescue finds nothing to ship."""
    with lfs.Workdir() as wd:
        cl, base = _dead_primary_with_unshipped_tail(wd)
        a, b = cl["a"], cl["b"]
        count, first, last = _own_events_after(cl, "a", base)
        check_eq(first, base + 1, "the tail starts right after what b had")
        check(count > N_FILES, f"the history made {count} events")
        check_eq(cl.applied("b", "a"), base, "b lacks a's tail before the rescue")
        cp = _rescue(a.dir, "--to", b.address)
        _check_shipped(cp, "a", count, first, last)
        check_eq(cp.stderr.count("ETA"), 0, "no progress bar without a terminal")
        cl.wait_applied("b", "a", last)
        cl.wait_converged(["b", "c"])
        lfs.check_same_tree(a.store, b.store, "the dead primary's store vs b's")
        check_eq(lfs.read_file(b.m("lost-work/last")), b"the last write\n",
                 "b's mount shows the rescued files")
        check("pushes events (ledgerctl rescue)" in b.log_text(), "b logs the rescue")
        cl.check_exactly_once(["b", "c"], origins=[a.id])
        again = _rescue(a.dir, "--to", b.address)
        check_eq(again.returncode, 0, f"a second rescue: {again.stderr!r}")
        check("nothing to rescue" in again.stdout, f"a second rescue: {again.stdout!r}")


def test_rescue_refuses_a_running_node():
    """Rescue of a node that runs is refused, naming the node, its
    directory and the process holding it; the usage is checked too."""
    with lfs.Workdir() as wd:
        cl = Cluster(wd, ["a", "b"])
        a, b = cl["a"], cl["b"]
        lfs.write_file(a.m("f"), b"x", fsync=True)
        cp = _rescue(a.dir, "--to", b.address)
        check_eq(cp.returncode, 1, "rescue of a running node")
        check("is running" in cp.stderr and str(a.dir) in cp.stderr,
              f"the refusal names the node's directory: {cp.stderr!r}")
        check(f"process {a.proc.pid}" in cp.stderr, f"and the daemon's pid: {cp.stderr!r}")
        check(a.alive() and cl.status("a")["role"] == "primary", "a runs on, untouched")
        check_eq(_rescue(a.dir).returncode, 2, "no peer given")
        check_eq(_rescue(a.dir, "--to", b.address, "--to-node", b.dir).returncode, 2,
                 "two peers given")
        check_eq(_rescue("--bogus").returncode, 2, "an unknown option")
        helped = _rescue("--help")
        check(helped.returncode == 0 and "--to-node" in helped.stdout, "--help")


def _leveldb_log_bytes(journal):
    return sum(p.stat().st_size for p in journal.glob("*.log"))


def _run_on_pty(argv):
    """Run argv with stderr on a pseudo-terminal: (exit status, stdout, stderr)."""
    master, slave = pty.openpty()
    proc = subprocess.Popen([str(x) for x in argv], stdout=subprocess.PIPE, stderr=slave,
                            stdin=subprocess.DEVNULL)
    os.close(slave)
    err = b""
    deadline = time.monotonic() + lfs.CMD_TIMEOUT
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.5)
        if ready:
            try:
                chunk = os.read(master, 65536)
            except OSError:   # EIO: the child closed its end
                break
            if not chunk:
                break
            err += chunk
        elif proc.poll() is not None:
            break
    os.close(master)
    out = proc.communicate(timeout=30)[0]
    return proc.returncode, out.decode(errors="replace"), err.decode(errors="replace")


def test_rescue_works_from_a_leveldb_never_closed():
    """After kill -9 the dead node's LevelDB was never closed: its newest
    events are only in LevelDB's log and its last applied mark lags.
    rescue --to-node (the peer's own certificate) recovers a private copy
    and ships them, with a progress bar on a terminal, writing nothing in
    the dead node's directory (not even LevelDB's recovery); the dead node
    starts again afterwards and the three nodes are in sync."""
    with lfs.Workdir() as wd:
        cl, base = _dead_primary_with_unshipped_tail(wd)
        a, b = cl["a"], cl["b"]
        # Nothing may open a's journal before the rescue: `ledgerctl log` of a
        # stopped node opens it in place, and LevelDB would recover it there.
        check(_leveldb_log_bytes(a.journal) > 0, "a's newest writes are in LevelDB's log")
        before = snapshot(a.dir)
        mtimes = {p: p.stat().st_mtime_ns for p in a.dir.rglob("*") if not p.is_symlink()}
        rc, out, err = _run_on_pty([lfs.LEDGERCTL, "rescue", a.dir, "--to-node", b.dir])
        check_eq(rc, 0, f"rescue exit status; stderr {err!r}")
        check_snapshot(a.dir, before, "rescue of a dead node")
        check_eq({p: p.stat().st_mtime_ns for p in a.dir.rglob("*") if not p.is_symlink()},
                 mtimes, "mtimes in the dead node's directory")
        count, first, last = _own_events_after(cl, "a", base)
        check_eq(first, base + 1, "the tail starts right after what b had")
        _check_shipped(subprocess.CompletedProcess([], rc, out, err), "a", count, first, last)
        check("ETA" in err and "events" in err, f"a progress bar on a terminal: {err!r}")
        check("with this node's own certificate" in b.log_text(),
              "b took the push under its own certificate")
        cl.wait_converged(["b", "c"])
        lfs.check_same_tree(a.store, b.store, "the dead primary's store vs b's")
        cl.start("a")
        cl.wait_in_sync()


def test_rescue_reports_events_of_a_lower_term_refused_and_leaves_the_peer_as_it_was():
    """After a failover raised the term, the old primary's unreplicated tail
    is refused by the new primary: rescue says so (the event, both terms,
    where the events stay) and exits 1; the peer's events and store are
    unchanged, and the dead node keeps the tail aside when it comes back."""
    with lfs.Workdir() as wd:
        cl, base = _dead_primary_with_unshipped_tail(wd)
        a, b = cl["a"], cl["b"]
        count, first, last = _own_events_after(cl, "a", base)
        lfs.ctl("promote", b.dir)
        lfs.write_file(b.m("new"), b"term 2\n", fsync=True)
        cl.wait_converged(["b", "c"])
        before = (lfs.digest(b.store), cl.applied("b", "a"), cl.seq("b"))
        cp = _rescue(a.dir, "--to", b.address)
        check_eq(cp.returncode, 1, f"rescue of a fenced tail; stdout {cp.stdout!r}")
        check(re.search(rf"refused event a:{first} of term 1: its term is 2", cp.stderr),
              f"the refusal names the event and both terms: {cp.stderr!r}")
        check(f"a:{first}..{last} stay in a's journal" in cp.stderr and "tail" in cp.stderr,
              f"and says the events stay aside: {cp.stderr!r}")
        check(re.search(rf"^rescued 0 of {count} missing events", cp.stdout, re.M),
              f"summary: {cp.stdout!r}")
        check_eq((lfs.digest(b.store), cl.applied("b", "a"), cl.seq("b")), before,
                 "b's store and applied vector after the refused rescue")
        check(not (b.store / "lost-work").exists(), "no fenced change reached b")
        cl.start("a")
        lfs.wait_until(lambda: cl.status("a")["tails"], 60, "a to keep its tail aside")
        check_eq(cl.status("a")["tails"][0]["first"], first, "the tail kept aside starts there")


def test_rescue_reads_a_dead_disk_mounted_read_only():
    """The dead node's directory, mounted read-only (a failing disk is
    mounted so), is rescued all the same: its journal is read from a
    private copy, and the events reach b and c."""
    with lfs.Workdir() as wd:
        cl, base = _dead_primary_with_unshipped_tail(wd)
        a, b = cl["a"], cl["b"]
        count, first, last = _own_events_after(cl, "a", base)
        ro = wd.path / "a-readonly"
        ro.mkdir()
        lfs.run(["mount", "--bind", a.dir, ro])
        try:
            lfs.run(["mount", "-o", "remount,bind,ro", ro])
            cp = _rescue(ro, "--to", b.address)
        finally:
            lfs.run(["umount", ro])
        _check_shipped(cp, "a", count, first, last)
        cl.wait_applied("b", "a", last)
        cl.wait_converged(["b", "c"])
        lfs.check_same_tree(a.store, b.store, "the dead primary's store vs b's")
        cl.start("a")
        cl.wait_in_sync()
