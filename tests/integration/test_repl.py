"""Replication between real nodes on loopback (DESIGN sections 3, 6, 8).

Real file tools on the primary must leave every replica with the same tree
(invariant 4: convergence); a replica serves reads and refuses writes with
EROFS; a replica killed with SIGKILL or cut off with SIGSTOP catches up
exactly, each event applied once (invariant 3), and records the OUTAGE and
the RECOVERED range; a node catches up through a relay when the primary is
gone, and switches source mid-way without starting over; and a replica's
kernel caches never serve stale data once an event is applied (section 8).
"""

import errno
import os
import shutil
import stat
import struct
import threading
import time

import lfs
from cluster import Cluster, vector
from lfs import Failure, check, check_eq, expect_errno

LONG_CACHE = "entry_timeout=3600,attr_timeout=3600"
# Events c misses in the source-switch test; enough that catching up takes a while.
SWITCH_EVENTS = int(os.environ.get("LFS_SWITCH_EVENTS", "20000"))


def check_bytes(got, want, what):
    """check_eq for contents: on a mismatch, lengths and the first difference."""
    if got != want:
        i = next((k for k, (x, y) in enumerate(zip(got, want)) if x != y),
                 min(len(got), len(want)))
        raise Failure(f"{what}: {len(got)} bytes, want {len(want)}; first difference at "
                      f"byte {i}: got {got[i:i + 16]!r}, want {want[i:i + 16]!r}")


# ------------------------------------------------------------ file tools

def _make_source_tree(src):
    """A tree with hard links, symlinks, user xattrs, a FIFO, a sparse file
    and odd modes and times, built outside any mount."""
    os.makedirs(src / "sub" / "deeper")
    lfs.write_file(src / "plain", os.urandom(10_000))
    lfs.write_file(src / "sub" / "deeper" / "empty", b"")
    lfs.write_file(src / "tool", b"#!/bin/sh\necho hi\n", mode=0o755)
    os.chmod(src / "tool", 0o755)
    lfs.write_file(src / "sub" / "hl1", b"shared by two names\n")
    os.link(src / "sub" / "hl1", src / "hl2")
    os.symlink("sub/hl1", src / "link-rel")
    os.symlink("nowhere/at/all", src / "link-dangling")
    os.symlink("/etc/hostname", src / "sub" / "link-abs")
    os.setxattr(src / "plain", "user.color", b"blue")
    os.setxattr(src / "plain", "user.empty", b"")
    os.setxattr(src / "sub", "user.kind", b"directory")
    os.mkfifo(src / "fifo", 0o640)
    fd = os.open(src / "sparse", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        os.pwrite(fd, b"head", 0)
        os.pwrite(fd, b"tail", 8 << 20)
    finally:
        os.close(fd)
    os.chmod(src / "sub" / "deeper", 0o700)
    os.utime(src / "plain", (1_000_000_000, 1_234_567_890))


def _make_git_repo(path, env):
    os.makedirs(path)
    lfs.run(["git", "init", "-q", path], env=env)
    for i in range(3):
        lfs.write_file(path / f"file{i}.txt", f"version 1 of {i}\n" * (i + 1))
    os.makedirs(path / "src")
    lfs.write_file(path / "src" / "main.c", "int main(void) { return 0; }\n")
    lfs.run(["git", "-C", path, "add", "-A"], env=env)
    lfs.run(["git", "-C", path, "commit", "-q", "-m", "first"], env=env)
    lfs.write_file(path / "file0.txt", "version 2\n")
    os.unlink(path / "file1.txt")
    lfs.run(["git", "-C", path, "add", "-A"], env=env)
    lfs.run(["git", "-C", path, "commit", "-q", "-m", "second"], env=env)


def test_file_tools_on_primary_replicate_exactly():
    """cp -a, tar x, renames, hard links, chown, log rotation, truncates and
    git clone on the primary: every replica's tree digests like the primary's,
    and a hard-linked pair is one inode on the replica."""
    with lfs.Workdir() as wd:
        src = wd / "src"
        _make_source_tree(src)
        tar = wd / "tree.tar"
        lfs.run(["tar", "--xattrs", "--xattrs-include=user.*", "-cSf", tar, "-C", src, "."])
        cl = Cluster(wd, ["a", "b"])
        a, b = cl["a"], cl["b"]
        m = a.m

        lfs.run(["cp", "-a", src, m("copy")])
        os.mkdir(m("untar"))
        lfs.run(["tar", "--xattrs", "--xattrs-include=user.*", "-xf", tar, "-C", m("untar")])
        os.rename(m("copy/sub"), m("copy/sub-moved"))                 # non-empty dir
        lfs.write_file(m("victim"), b"old content")
        lfs.write_file(m("newer"), b"new content, longer than before")
        os.rename(m("newer"), m("victim"))                            # onto a file
        os.link(m("untar/plain"), m("hl-a"))
        os.rename(m("hl-a"), m("hl-b"))                               # a link, renamed
        os.chown(m("copy/plain"), 1234, 5678)
        os.lchown(m("copy/link-rel"), 4321, 8765)
        with open(m("app.log"), "ab") as f:                           # log rotation
            f.write(b"line 1\n")
        with open(m("app.log"), "ab") as f:
            f.write(b"line 2\n")
        os.rename(m("app.log"), m("app.log.1"))
        with open(m("app.log"), "ab") as f:
            f.write(b"line 3\n")
        with open(m("app.log"), "ab") as f:
            f.write(b"line 4\n")
        lfs.write_file(m("trunc"), os.urandom(100_000))               # truncates
        os.truncate(m("trunc"), 5000)
        os.truncate(m("trunc"), 200_000)
        fd = os.open(m("trunc2"), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            os.write(fd, b"y" * 70_000)
            os.ftruncate(fd, 0)
            os.lseek(fd, 0, os.SEEK_SET)
            os.write(fd, b"x")
        finally:
            os.close(fd)
        if shutil.which("git"):
            env = dict(os.environ, HOME=str(wd.path), GIT_CONFIG_NOSYSTEM="1",
                       GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@example.org",
                       GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@example.org")
            _make_git_repo(wd / "gitsrc", env)
            lfs.run(["git", "clone", "-q", wd / "gitsrc", m("repo")], env=env)
            st = lfs.run(["git", "-C", m("repo"), "status", "--porcelain"], env=env)
            check_eq(st.stdout, "", "git status of the clone on the primary")
        else:
            lfs.log("git is not installed: the git clone part of this test is skipped")

        cl.wait_in_sync()
        check_eq(lfs.digest(b.mnt), lfs.digest(a.mnt), "replica digest vs primary")
        s1, s2 = os.stat(b.m("untar/plain")), os.stat(b.m("hl-b"))
        check_eq(s1.st_ino, s2.st_ino, "one inode for untar/plain and hl-b on the replica")
        check_eq(s1.st_nlink, 2, "st_nlink of the hard-linked pair on the replica")
        s1, s2 = os.stat(b.m("copy/sub-moved/hl1")), os.stat(b.m("copy/hl2"))
        check_eq(s1.st_ino, s2.st_ino, "one inode for the pair cp -a copied")
        check_eq(s1.st_nlink, 2, "st_nlink of the cp -a pair on the replica")
        check_eq(os.readlink(b.m("copy/link-dangling")), "nowhere/at/all", "dangling symlink")
        check_eq(os.getxattr(b.m("copy/plain"), "user.color"), b"blue", "xattr on replica")
        check_eq(os.getxattr(b.m("untar/sub"), "user.kind"), b"directory",
                 "directory xattr (tar --xattrs) on the replica")
        check(stat.S_ISFIFO(os.lstat(b.m("copy/fifo")).st_mode), "FIFO on the replica")
        st = os.lstat(b.m("copy/plain"))
        check_eq((st.st_uid, st.st_gid), (1234, 5678), "owner after chown on the replica")
        check_bytes(lfs.read_file(b.m("app.log.1")), b"line 1\nline 2\n", "rotated log")
        check_bytes(lfs.read_file(b.m("app.log")), b"line 3\nline 4\n", "new log")
        check_bytes(lfs.read_file(b.m("victim")), b"new content, longer than before",
                 "file renamed onto another")
        check_eq(os.stat(b.m("trunc")).st_size, 200_000, "size after truncates")
        check_bytes(lfs.read_file(b.m("trunc2")), b"x", "ftruncate then write")
        sparse = lfs.read_file(b.m("copy/sparse"))
        check_eq(len(sparse), (8 << 20) + 4, "size of the sparse file on the replica")
        check(sparse[:4] == b"head" and sparse[-4:] == b"tail"
              and sparse.count(0) == len(sparse) - 8, "content of the sparse file")
        pa = os.stat(a.s("copy/sparse")).st_blocks * 512
        pb = os.stat(b.s("copy/sparse")).st_blocks * 512
        check(pb <= 2 * pa + (1 << 20),
              f"the sparse file stays sparse on the replica: {pb} bytes allocated, "
              f"{pa} on the primary")


# ------------------------------------------------------- replica is read-only

def test_replica_serves_reads_and_refuses_writes_with_erofs():
    """A replica mount shows what the primary wrote and returns EROFS for
    create, write, mkdir, unlink, rename, chmod, setxattr (and more); nothing
    is journaled for the refused calls."""
    with lfs.Workdir() as wd:
        cl = Cluster(wd, ["a", "b"])
        a, b = cl["a"], cl["b"]
        os.mkdir(a.m("d"))
        lfs.write_file(a.m("d/f"), b"from the primary\n", fsync=True)
        os.setxattr(a.m("d/f"), "user.tag", b"v1")
        os.symlink("d/f", a.m("sl"))
        cl.wait_in_sync()
        check_bytes(lfs.read_file(b.m("d/f")), b"from the primary\n", "replica reads the file")
        check_eq(sorted(os.listdir(b.m())), ["d", "sl"], "replica lists the root")
        check_eq(os.getxattr(b.m("d/f"), "user.tag"), b"v1", "replica reads the xattr")
        # The replica's mount remembers that d/f has no capability; a remote
        # setxattr must make it read the store again.
        expect_errno(errno.ENODATA, os.getxattr, b.m("d/f"), "security.capability")
        caps = struct.pack("<IIIII", 0x02000000, 1 << 10, 0, 0, 0)
        os.setxattr(a.m("d/f"), "security.capability", caps)
        cl.wait_in_sync()
        check_eq(os.getxattr(b.m("d/f"), "security.capability"), caps,
                 "a capability set on the primary, read on the replica")
        check_eq(os.readlink(b.m("sl")), "d/f", "replica reads the symlink")
        before = len(b.events())

        expect_errno(errno.EROFS, os.open, b.m("d/new"), os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            fd = os.open(b.m("d/f"), os.O_WRONLY)
        except OSError as e:
            check_eq(e.errno, errno.EROFS, "open O_WRONLY of an existing file")
        else:
            try:
                # the writeback cache must not take bytes that can never be stored
                expect_errno(errno.EROFS, os.write, fd, b"overwrite")
            finally:
                os.close(fd)
        expect_errno(errno.EROFS, os.mkdir, b.m("d2"))
        expect_errno(errno.EROFS, os.unlink, b.m("d/f"))
        expect_errno(errno.EROFS, os.rename, b.m("d/f"), b.m("d/g"))
        expect_errno(errno.EROFS, os.chmod, b.m("d/f"), 0o600)
        expect_errno(errno.EROFS, os.setxattr, b.m("d/f"), "user.tag", b"v2")
        expect_errno(errno.EROFS, os.removexattr, b.m("d/f"), "user.tag")
        expect_errno(errno.EROFS, os.truncate, b.m("d/f"), 0)
        expect_errno(errno.EROFS, os.symlink, "x", b.m("sl2"))
        expect_errno(errno.EROFS, os.link, b.m("d/f"), b.m("hl"))
        expect_errno(errno.EROFS, os.rmdir, b.m("d"))
        expect_errno(errno.EROFS, os.utime, b.m("d/f"), (1, 1))

        check_bytes(lfs.read_file(b.m("d/f")), b"from the primary\n", "content after refusals")
        check_eq(os.getxattr(b.m("d/f"), "user.tag"), b"v1", "xattr after refusals")
        check_eq(len(b.events()), before, "events in the replica's journal after refusals")
        lfs.write_file(a.m("d/after"), b"still replicating")
        cl.wait_in_sync()
        check_bytes(lfs.read_file(b.m("d/after")), b"still replicating", "replication goes on")


# ------------------------------------------------------------ outages

class Writer:
    """A thread that keeps writing, renaming and unlinking files on a mount."""

    def __init__(self, root, size=2000):
        self.root = root
        self.size = size
        self.count = 0
        self.error = None
        self.stop_flag = threading.Event()
        os.makedirs(root, exist_ok=True)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        try:
            i = 0
            while not self.stop_flag.is_set():
                path = os.path.join(self.root, f"w{i}")
                lfs.write_file(path, os.urandom(self.size + i % 977))
                if i % 10 == 3:
                    os.rename(path, os.path.join(self.root, f"r{i}"))
                elif i % 10 == 7:
                    os.unlink(os.path.join(self.root, f"w{i - 1}"))
                i += 1
                self.count = i
        except BaseException as e:   # reported by stop()
            self.error = e

    def stop(self):
        self.stop_flag.set()
        self.thread.join(timeout=60)
        check(not self.thread.is_alive(), "the writer thread stopped")
        if self.error:
            raise Failure(f"writing on the primary failed: {self.error!r}")
        return self.count


def _recovered_notes(st, origin_id):
    return [n for n in st.get("notes", []) if n.get("type") == "recovered"
            and (n.get("first_origin") or "").lower() == origin_id]


def test_replica_killed_during_writes_recovers_exactly_once():
    """kill -9 a replica while the primary keeps writing; restarted, it
    records OUTAGE and RECOVERED, converges, and applies each event once."""
    with lfs.Workdir() as wd:
        cl = Cluster(wd, ["a", "b"])
        a = cl["a"]
        cl.wait_in_sync()
        w = Writer(a.m("load"))
        try:
            cl.wait_applied("b", "a", cl.seq("a") + 50)
            seen_by_b = cl.applied("b", "a")
            cl.kill9("b")
            start = cl.seq("a")
            lfs.wait_until(lambda: cl.seq("a") >= start + 200, 60,
                           "the primary to make 200 more events while b is down")
            missed_from = cl.seq("a")
            cl.start("b")
            lfs.wait_until(lambda: any(p.get("name") == "a" and p.get("state") == "connected"
                                       for p in cl.status("b").get("peers", [])),
                           30, "b to reconnect to a")
            mark = cl.seq("a")
            lfs.wait_until(lambda: cl.seq("a") >= mark + 50, 60,
                           "the primary to make 50 more events after b's return")
        finally:
            w.stop()
        sts = cl.wait_in_sync(timeout=90)
        counts = cl.check_exactly_once(["a", "b"])
        check_eq(counts["b"].get("a"), counts["a"].get("a"),
                 "events of the primary in b's journal vs a's")
        for name in ("a", "b"):
            types = {e["type"] for e in cl.node_events(name, ("outage", "recovered"), "b")}
            check(types == {"outage", "recovered"},
                  f"{name}'s journal holds b's OUTAGE and RECOVERED events: {types}")
        notes = _recovered_notes(sts["b"], a.id)
        check(notes, f"b's status lists a RECOVERED range of a's events: {sts['b'].get('notes')}")
        first = min(n["first_seq"] for n in notes)
        last = max(n["last_seq"] for n in notes)
        check(seen_by_b < first <= missed_from + 1,
              f"RECOVERED starts after what b had applied ({seen_by_b}) and no later "
              f"than the gap ({missed_from}): first_seq {first}")
        check(last >= missed_from, f"RECOVERED covers the gap up to {missed_from}: "
                                   f"last_seq {last}")


def test_network_cut_replica_catches_up_exactly():
    """SIGSTOP a replica (a cut as its peers see it): the primary's checkpoint
    for it stops and its lag grows; after SIGCONT it catches up exactly."""
    with lfs.Workdir() as wd:
        cl = Cluster(wd, ["a", "b"])
        a = cl["a"]
        os.mkdir(a.m("cut"))
        cl.wait_in_sync()
        cl.pause("b")
        try:
            for i in range(150):
                lfs.write_file(a.m(f"cut/f{i}"), os.urandom(3000))
            os.rename(a.m("cut/f0"), a.m("cut/renamed"))
            seq1 = cl.seq("a")

            def peer_b(st):
                return next(p for p in st["peers"] if p["name"] == "b")
            cp1 = peer_b(cl.status("a"))["checkpoints"].get(a.id, 0)
            check(cp1 < seq1, f"b's checkpoint ({cp1}) is behind a ({seq1}) during the cut")
            for i in range(150, 250):
                lfs.write_file(a.m(f"cut/f{i}"), os.urandom(3000))
            seq2 = cl.seq("a")

            def lagging():
                p = peer_b(cl.status("a"))
                return (p["checkpoints"].get(a.id, 0) == cp1
                        and (p.get("lag") or {}).get("events", 0) >= seq2 - cp1)
            lfs.wait_until(lagging, 15, f"a's status to show b's lag of at least "
                                        f"{seq2 - cp1} events with its checkpoint still "
                                        f"{cp1}")
            p = peer_b(cl.status("a"))
            check(p["lag"]["bytes"] >= 100 * 3000, f"lag in bytes covers the data: {p['lag']}")
        finally:
            cl.resume("b")
        cl.wait_in_sync(timeout=60)
        counts = cl.check_exactly_once(["a", "b"])
        check_eq(counts["b"].get("a"), counts["a"].get("a"), "a's events in b's journal")


# ------------------------------------------------------------ relay

def test_replica_catches_up_from_relay_when_primary_is_gone():
    """a, b (relay, no mount), c: c misses writes, a stops; c catches up from b,
    records RECOVERED, and all three converge once a is back."""
    with lfs.Workdir() as wd:
        cl = Cluster(wd, ["a", "b", "c"], serve=("b",))
        a = cl["a"]
        cl.wait_in_sync()
        cl.stop("c")
        os.mkdir(a.m("relay"))
        for i in range(100):
            lfs.write_file(a.m(f"relay/f{i}"), os.urandom(1000 + 37 * i))
        os.rename(a.m("relay/f1"), a.m("relay/g1"))
        os.unlink(a.m("relay/f2"))
        want = cl.seq("a")
        cl.wait_applied("b", "a", want)
        cl.stop("a")
        cl.start("c")
        cl.wait_converged(["b", "c"])
        check_eq(cl.applied("c", "a"), want, "c applied every event of a")
        st = cl.status("c")
        notes = _recovered_notes(st, a.id)
        check(notes and max(n["last_seq"] for n in notes) >= want,
              f"c's status shows it RECOVERED a's events up to {want}: {st.get('notes')}")
        check(cl.node_events("c", ("recovered",), "c"), "c's journal has its RECOVERED event")
        peer_a = next(p for p in st["peers"] if p["name"] == "a")
        check(peer_a["state"] != "connected", f"c is not connected to the stopped a: {peer_a}")
        cl.start("a")
        cl.wait_in_sync()
        cl.check_exactly_once(["a", "b", "c"])


def _many_events(node, count):
    """Make about `count` small events on node's mount quickly: a few files,
    then setxattr and chmod calls, each its own event."""
    os.mkdir(node.m("many"))
    files = [node.m(f"many/f{i}") for i in range(50)]
    for p in files:
        lfs.write_file(p, b"x" * 100)
    value = os.urandom(400)
    for i in range(count):
        p = files[i % len(files)]
        if i % 4 == 3:
            os.chmod(p, 0o600 if i % 8 == 3 else 0o644)
        else:
            os.setxattr(p, f"user.k{i % 5}", value[:300 + i % 100])


def _sent_to(status, name):
    return next(p for p in status["peers"] if p["name"] == name).get("events_sent", 0)


def test_catch_up_switches_source_without_starting_over():
    """c misses many events; while it catches up from a, a is killed: c goes
    on from b where it was, applies each event once, and its RECOVERED
    ranges cover the gap without overlapping."""
    with lfs.Workdir() as wd:
        cl = Cluster(wd, ["a", "b", "c"], serve=("b",))
        a = cl["a"]
        cl.wait_in_sync()
        cl.stop("c")
        had = cl.applied("b", "a")
        t0 = time.monotonic()
        _many_events(a, SWITCH_EVENTS)
        want = cl.seq("a")
        lfs.log(f"made {want - had} events in {time.monotonic() - t0:.1f}s")
        cl.wait_applied("b", "a", want, timeout=120)
        missing = want - had
        cl.start("c")
        low, high = had + missing // 10, had + missing * 8 // 10
        progress = []

        def partway():
            st = cl["c"].try_status()
            if st is None:
                return False
            got = vector(st).get(a.id, 0)
            progress.append(got)
            if got > high:
                raise Failure(f"c caught up past {high} of {want} before it could be seen "
                              f"part-way (progress {progress[-10:]}); raise LFS_SWITCH_EVENTS")
            # a feeds c its own events while c's link to it is up (DESIGN 6)
            return got >= low and any(p["name"] == "a" and p["state"] == "connected"
                                      for p in st["peers"])
        lfs.wait_until(partway, 60, f"c to be part-way ({low}..{high}) through a's events "
                                    f"and connected to a")
        cl.kill9("a")
        killed_at = progress[-1]
        sent_before = _sent_to(cl.status("b"), "c")
        lfs.log(f"killed a when c had applied {killed_at} of {want}")
        cl.wait_converged(["b", "c"], timeout=120)
        check_eq(cl.applied("c", "a"), want, "c applied every event of a")
        counts = cl.check_exactly_once(["b", "c"])
        check_eq(counts["c"].get("a"), counts["b"].get("a"), "a's events in c's journal vs b's")
        st = cl.status("c")
        ranges = sorted((n["first_seq"], n["last_seq"]) for n in _recovered_notes(st, a.id))
        check(ranges, f"c's status lists RECOVERED ranges of a's events: {st.get('notes')}")
        for (f1, l1), (f2, l2) in zip(ranges, ranges[1:]):
            check(f2 > l1, f"RECOVERED ranges overlap (started over?): {ranges}")
        check(ranges[0][0] == had + 1 and ranges[-1][1] >= want,
              f"RECOVERED ranges {ranges} cover the gap {had + 1}..{want}")
        # c had applied killed_at (at least) when a died: b must not send those again.
        sent_after = _sent_to(cl.status("b"), "c") - sent_before
        check(sent_after <= want - killed_at,
              f"b sent c {sent_after} events after a died, but c lacked at most "
              f"{want - killed_at}: the catch-up started over")
        received = sum(p.get("events_received", 0) for p in st["peers"])
        lfs.log(f"c received {received} events for a gap of {missing} "
                f"({received - missing} more); b sent it {sent_after} after a died")
        cl.start("a")
        cl.wait_in_sync(timeout=90)


# ------------------------------------------------------- replica kernel caches

def test_replica_cache_invalidated_when_events_apply():
    """With day-long kernel caches on the replica, a reader there sees new
    content, sizes and names as soon as the events are applied."""
    with lfs.Workdir() as wd:
        cl = Cluster(wd, ["a", "b"], opts={"b": LONG_CACHE})
        a, b = cl["a"], cl["b"]
        old_f, old_g = b"A" * 8192, b"g" * 5000
        os.mkdir(a.m("data"))
        lfs.write_file(a.m("data/f"), old_f, fsync=True)
        lfs.write_file(a.m("data/g"), old_g, fsync=True)
        lfs.write_file(a.m("data/old-name"), b"moving", fsync=True)
        lfs.write_file(a.m("data/doomed"), b"going", fsync=True)
        cl.wait_in_sync()

        fd_f = os.open(b.m("data/f"), os.O_RDONLY)
        fd_g = os.open(b.m("data/g"), os.O_RDONLY)
        try:
            check_bytes(os.pread(fd_f, 65536, 0), old_f, "f on the replica before")
            check_bytes(os.pread(fd_g, 65536, 0), old_g, "g on the replica before")
            check_eq(os.fstat(fd_g).st_size, len(old_g), "g's size before")
            check_eq(os.stat(b.m("data/g")).st_size, len(old_g), "g's size by name before")
            check_eq(sorted(os.listdir(b.m("data"))), ["doomed", "f", "g", "old-name"],
                     "listing before")
            os.stat(b.m("data/old-name"))
            os.stat(b.m("data/doomed"))
            expect_errno(errno.ENOENT, os.stat, b.m("data/newcomer"))
            expect_errno(errno.ENOENT, os.stat, b.m("data/new-name"))

            new_f, new_g = b"B" * 8192, b"G" * 12000
            fd = os.open(a.m("data/f"), os.O_WRONLY)
            try:
                os.pwrite(fd, new_f, 0)            # same size, new bytes
                os.fsync(fd)
            finally:
                os.close(fd)
            lfs.write_file(a.m("data/g"), new_g, fsync=True)   # new size
            os.rename(a.m("data/old-name"), a.m("data/new-name"))
            lfs.write_file(a.m("data/newcomer"), b"hello", fsync=True)
            os.unlink(a.m("data/doomed"))
            target = cl.seq("a")
            cl.wait_applied("b", "a", target)

            # No waiting from here on: the events are applied, the caches must know.
            check_bytes(os.pread(fd_f, 65536, 0), new_f, "f read through the fd opened before")
            check_bytes(lfs.read_file(b.m("data/f")), new_f, "f read afresh")
            check_eq(os.fstat(fd_g).st_size, len(new_g), "g's size through the old fd")
            check_eq(os.stat(b.m("data/g")).st_size, len(new_g), "g's size by name")
            check_bytes(os.pread(fd_g, 65536, 0), new_g, "g read through the fd opened before")
            check_bytes(lfs.read_file(b.m("data/g")), new_g, "g read afresh")
            check_eq(sorted(os.listdir(b.m("data"))), ["f", "g", "new-name", "newcomer"],
                     "listing after")
            expect_errno(errno.ENOENT, os.stat, b.m("data/old-name"))
            expect_errno(errno.ENOENT, os.stat, b.m("data/doomed"))
            check_bytes(lfs.read_file(b.m("data/new-name")), b"moving", "renamed file")
            check_bytes(lfs.read_file(b.m("data/newcomer")), b"hello", "created file")
        finally:
            os.close(fd_f)
            os.close(fd_g)
        cl.wait_in_sync()


def test_running_node_takes_peer_remove_and_add_from_its_config():
    """`ledgerctl peer remove` on a running primary drops the peer's links and
    refuses it from then on (nothing more reaches it); `peer add` brings it back
    and it catches up."""
    with lfs.Workdir() as wd:
        cl = Cluster(wd, ["a", "b"])
        a, b = cl["a"], cl["b"]
        lfs.write_file(a.m("before"), b"1\n", fsync=True)
        cl.wait_in_sync()
        mark = a.log_mark()
        lfs.ctl("peer", "remove", a.dir, "b")

        def b_refused():
            peers = {p["name"]: p for p in b.status()["peers"]}
            return peers["a"]["state"] == "refused" and "not a member" in peers["a"]["why"]
        lfs.wait_until(b_refused, 30, "b to be refused by a after peer remove")
        check("b" not in [p["name"] for p in a.status()["peers"]], "a no longer lists b")
        check("not a member" in a.log_since(mark), "a logs the refusal")
        seq = cl.seq("a")
        lfs.write_file(a.m("after"), b"2\n", fsync=True)
        lfs.wait_until(lambda: cl.seq("a") > seq, 10, "a to journal the write")
        check(not os.path.exists(b.m("after")), "a removed peer receives nothing")

        lfs.ctl("peer", "add", a.dir, f"b={b.address}")
        cl.wait_in_sync()
        check_eq(lfs.read_file(b.m("after")), b"2\n", "b caught up after peer add")
