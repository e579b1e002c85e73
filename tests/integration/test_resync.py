"""Snapshot resync (DESIGN sections 2 and 6, issue 5).

A node behind its peers' trim point, or a new node, is brought level by
comparing hash trees of the stores and fetching only what differs; the
entries are staged aside and installed from a plan, so a crash in the
middle leaves a store that is consistent and a resync that resumes
without fetching again what already arrived.  Then the event stream
resumes from the snapshot's position.
"""

import os
import re
import time

import lfs
from cluster import Cluster, ClusterNode, free_ports
from lfs import check, check_eq

# retain_max_age on the primary: events a stopped replica has not confirmed
# go after this many seconds, so it comes back behind the trim point.
MAX_AGE = 2


def set_key(node, key, value):
    """Set a key in the [journal] section of a stopped node's config."""
    conf = node.dir / "ledgerfs.conf"
    text = conf.read_text()
    text, n = re.subn(rf"^{key} = .*$", f"{key} = {value}", text, flags=re.M)
    if n == 0:
        text, n = re.subn(r"^\[journal\]$", f"[journal]\n{key} = {value}", text, flags=re.M)
    check_eq(n, 1, f"{key} in {conf}")
    conf.write_text(text)


def snapshot(cl, name):
    return cl.status(name)["snapshot"]


def trimmed_past(cl, name, origin_name, seq):
    """Node name no longer holds origin_name's event seq (0: it holds none at all)."""
    oldest = cl.status(name)["oldest"].get(cl[origin_name].id, 0)
    return oldest == 0 or oldest > seq


def start_behind_trim_point(cl, writes):
    """Stop b, run writes() on a, wait until a trimmed what b lacks, start b."""
    a = cl["a"]
    cl.wait_in_sync()
    b_had = cl.applied("b", "a")
    cl.stop("b")
    writes()
    lfs.write_file(a.m("marker"), b"m", fsync=True)
    lfs.wait_until(lambda: trimmed_past(cl, "a", "a", b_had + 1), 30,
                   "a to trim events b has not confirmed (retain_max_age)")
    cl.start("b")


def trimming_pair(wd):
    """Primary a and replica b, running; a trims what b has not confirmed
    after MAX_AGE seconds."""
    cl = Cluster(wd, ["a", "b"], start=False)
    for key, value in (("retain_age", "1"), ("retain_max_age", str(MAX_AGE))):
        set_key(cl["a"], key, value)
    cl.start("a")
    cl.start("b")
    return cl


def test_node_behind_the_trim_point_resyncs_sending_only_what_differs():
    with lfs.Workdir() as wd:
        cl = trimming_pair(wd)
        a, b = cl["a"], cl["b"]
        os.mkdir(a.m("d"))
        for i in range(1000):
            lfs.write_file(a.m(f"d/f{i:04}"), f"file {i}\n".encode() * 20)

        def writes():
            for i in (7, 500, 993):
                lfs.write_file(a.m(f"d/f{i:04}"), b"changed while b was away\n")
        start_behind_trim_point(cl, writes)
        cl.wait_in_sync()
        snap = snapshot(cl, "b")
        check(snap["done"], f"b resynced by snapshot: {snap}")
        # The three changed files and the marker; nothing else is sent.
        check(4 <= snap["fetched"] <= 6, f"about 4 entries sent of 1,000: {snap}")
        check("snapshot resync from a done" in b.log_text(), "b logs the resync")
        check_eq(lfs.read_file(b.m("d/f0500")), b"changed while b was away\n", "b sees it")
        # The event stream resumes from the snapshot's position.
        lfs.write_file(a.m("after"), b"after\n", fsync=True)
        cl.wait_in_sync()
        check_eq(lfs.read_file(b.m("after")), b"after\n", "events flow again after it")
        cl.stop("b")
        cp = lfs.run([lfs.FSCK, "-n", b.dir], check=False)
        check_eq(cp.returncode, 0, f"fsck -n of b after the resync: {cp.stdout}{cp.stderr}")


def test_new_name_of_an_unchanged_file_is_linked_not_copied():
    """A hard link made while the node was away, to a file it already has:
    the resync makes the new name a link to that file, so later writes
    through either name reach both."""
    with lfs.Workdir() as wd:
        cl = trimming_pair(wd)
        a, b = cl["a"], cl["b"]
        os.mkdir(a.m("keep"))
        os.mkdir(a.m("other"))
        lfs.write_file(a.m("keep/p1"), b"one inode\n")
        start_behind_trim_point(cl, lambda: os.link(a.m("keep/p1"), a.m("other/p2")))
        cl.wait_in_sync()
        check(snapshot(cl, "b")["done"], "b resynced by snapshot")
        s1, s2 = os.lstat(b.m("keep/p1")), os.lstat(b.m("other/p2"))
        check_eq((s2.st_ino, s2.st_nlink), (s1.st_ino, 2), "p2 is a link to p1 on b")
        lfs.write_file(a.m("keep/p1"), b"written through p1\n", fsync=True)
        cl.wait_in_sync()
        check_eq(lfs.read_file(b.m("other/p2")), b"written through p1\n", "p2 on b follows p1")


def test_resync_while_the_primary_keeps_writing_converges():
    """Files that change, appear, move and vanish on the sender during the
    resync: the snapshot's position and the replay after it still give an
    exact copy."""
    with lfs.Workdir() as wd:
        cl = trimming_pair(wd)
        a = cl["a"]
        for i in range(300):
            lfs.write_file(a.m(f"f{i}"), os.urandom(2000))
        start_behind_trim_point(cl, lambda: lfs.write_file(a.m("f1"), b"new"))
        # Keep changing the tree while b resyncs.
        deadline = time.monotonic() + 4
        i = 0
        while time.monotonic() < deadline:
            lfs.write_file(a.m(f"f{i % 300}"), os.urandom(1500))
            os.rename(a.m(f"f{(i + 1) % 300}"), a.m(f"g{i}"))
            os.rename(a.m(f"g{i}"), a.m(f"f{(i + 1) % 300}"))
            lfs.write_file(a.m(f"new{i}"), b"n")
            if i >= 2:
                os.unlink(a.m(f"new{i - 2}"))
            i += 1
        cl.wait_in_sync()
        check(snapshot(cl, "b")["done"], "b resynced by snapshot")
        cl.check_exactly_once(["b"])


def test_resync_while_objects_move_between_directories_converges():
    """The sender builds its hash tree without the node lock while the
    primary moves files and directories between directories, renames
    over names and links: no object may be seen twice or lost by the walk
    (a walk during which something moved is done again), so the copy is
    exact."""
    with lfs.Workdir() as wd:
        cl = trimming_pair(wd)
        a = cl["a"]
        for d in range(40):
            os.mkdir(a.m(f"d{d}"))
            for i in range(10):
                lfs.write_file(a.m(f"d{d}/f{i}"), os.urandom(1000))
        start_behind_trim_point(cl, lambda: lfs.write_file(a.m("d0/f0"), b"new"))
        deadline = time.monotonic() + 5
        i = 0
        while time.monotonic() < deadline:
            src, dst = i % 40, (i * 7 + 3) % 40
            name = f"f{i % 10}"
            if os.path.exists(a.m(f"d{src}/{name}")):
                os.rename(a.m(f"d{src}/{name}"), a.m(f"d{dst}/m{i}"))
                os.rename(a.m(f"d{dst}/m{i}"), a.m(f"d{dst}/{name}") if not
                          os.path.exists(a.m(f"d{dst}/{name}")) else a.m(f"d{src}/{name}"))
            if i % 5 == 0:
                os.rename(a.m(f"d{src}"), a.m(f"moving{i}"))
                os.rename(a.m(f"moving{i}"), a.m(f"d{src}"))
            if i % 7 == 0 and os.path.exists(a.m(f"d{dst}/f1")):
                os.link(a.m(f"d{dst}/f1"), a.m(f"d{src}/l{i}"))
                os.unlink(a.m(f"d{dst}/f1"))
                os.rename(a.m(f"d{src}/l{i}"), a.m(f"d{dst}/f1"))
            i += 1
        cl.wait_in_sync()
        check(snapshot(cl, "b")["done"], "b resynced by snapshot")
        cl.check_exactly_once(["b"])


def add_node(cl, name):
    """A new node `name` made with init --join through a."""
    port = free_ports(1)[0]
    n = ClusterNode(cl.root, name, port)
    lfs.ctl("init", n.dir, "--name", name, "--ca", cl.ca, "--listen", n.address,
            "--join", cl["a"].address)
    n.load_ids()
    cl.names.append(name)
    cl.nodes[name] = n
    cl.by_id[n.id] = name
    return n


def test_new_node_joins_a_cluster_of_10000_files_then_removed_is_refused():
    with lfs.Workdir() as wd:
        cl = Cluster(wd, ["a", "b"])
        a = cl["a"]
        for d in range(10):
            os.mkdir(a.m(f"d{d}"))
            for i in range(1000):
                lfs.write_file(a.m(f"d{d}/f{i}"), f"{d}/{i}\n".encode())
        os.link(a.m("d0/f0"), a.m("hard"))
        os.symlink("d1/f1", a.m("sym"))
        cl.wait_in_sync()
        c = add_node(cl, "c")
        conf = (c.dir / "ledgerfs.conf").read_text()
        check("[peer a]" in conf, f"--join made a a peer of c: {conf}")
        lfs.ctl("peer", "add", a.dir, f"c={c.address}")
        cl.start("c")
        cl.wait_converged(["a", "c"], timeout=240)
        snap = snapshot(cl, "c")
        check(snap["done"] and snap["fetched"] >= 10000, f"c got the files by snapshot: {snap}")
        check_eq(os.stat(c.m("hard")).st_ino, os.stat(c.m("d0/f0")).st_ino,
                 "a hard link stays one inode on the new node")
        lfs.write_file(a.m("after-join"), b"x", fsync=True)
        cl.wait_file("c", "after-join", b"x")

        lfs.ctl("peer", "remove", a.dir, "c")

        def c_refused():
            peers = {p["name"]: p for p in c.status()["peers"]}
            return peers["a"]["state"] == "refused"
        lfs.wait_until(c_refused, 30, "c to be refused by a after peer remove")
        lfs.write_file(a.m("after-remove"), b"y", fsync=True)
        cl.wait_file("b", "after-remove", b"y")
        check(not os.path.exists(c.m("after-remove")), "a removed node receives nothing")


def test_kill9_mid_resync_resumes_without_fetching_again():
    with lfs.Workdir() as wd:
        cl = Cluster(wd, ["a"])
        a = cl["a"]
        for i in range(800):
            lfs.write_file(a.m(f"big{i}"), os.urandom(256 * 1024))
        c = add_node(cl, "c")
        lfs.ctl("peer", "add", a.dir, f"c={c.address}")
        cl.start("c")
        obj = c.dir / "snap" / "obj"

        def durable():
            """Entries staged under their final names: on disk, trusted by a retry."""
            try:
                return [p for p in obj.iterdir() if not p.name.startswith("tmp.")]
            except FileNotFoundError:
                return []

        def halfway():
            if len(durable()) >= 20:
                return True
            check(not snapshot(cl, "c")["done"], "c finished before it could be killed")
            return False
        lfs.wait_until(halfway, 60, "c to have staged part of its snapshot", interval=0.005)
        # With its sender paused, c cannot finish the transfer before it is killed.
        cl.pause("a")
        try:
            check(not snapshot(cl, "c")["done"], "c finished before it could be killed")
            cl.kill9("c")
        finally:
            cl.resume("a")
        staged = len(durable())
        cl.start("c")
        cl.wait_converged(["a", "c"], timeout=120)
        snap = snapshot(cl, "c")
        check(snap["done"] and snap["reused"] >= staged,
              f"the second attempt reused the {staged} entries the first staged: {snap}")
        check(snap["fetched"] <= 801 - snap["reused"] + 5, f"and fetched the rest only: {snap}")
        check(not (c.dir / "snap").exists(), "the staging area is gone")
        cl.stop("c")
        cp = lfs.run([lfs.FSCK, "-n", c.dir], check=False)
        check_eq(cp.returncode, 0, f"fsck -n of c after the resync: {cp.stdout}{cp.stderr}")


def test_join_through_an_unreachable_member_fails_and_leaves_nothing():
    with lfs.Workdir() as wd:
        ca = wd.path / "ca"
        lfs.ctl("ca", "init", ca)
        port = free_ports(1)[0]
        node = wd.path / "x"
        cp = lfs.ctl("init", node, "--name", "x", "--ca", ca, "--join", f"127.0.0.1:{port}",
                     check=False)
        check_eq(cp.returncode, 1, f"init --join fails: {cp.stdout}{cp.stderr}")
        check(f"--join 127.0.0.1:{port}" in cp.stderr, f"the error names the member: {cp.stderr}")
        check(not node.exists(), "the half-made node is removed, so init can run again")
        cp = lfs.ctl("init", node, "--name", "x", "--join", f"127.0.0.1:{port}", check=False)
        check_eq(cp.returncode, 2, "--join without --ca is a usage error")
