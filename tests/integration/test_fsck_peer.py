"""fsck.ledgerfs NODE_DIR --against HOST:PORT (issue 17, point 2): a stopped
replica's store compared with a live peer's by the snapshot resync's hash
tree, over mutual TLS with the replica's own certificate.

Damage made behind ledgerfs's back in the stopped replica's store - a
byte flipped with its mtime put back, a file deleted, a mode changed, a
file added - is each found with its kind and path; -y repairs it from the
peer (a rerun is clean, and after a restart the replica digests as the
peer does); -n writes nothing at all in NODE_DIR.  A running node and an
unreachable peer are refused with exit 8."""

import os
import shutil

import lfs
from cluster import Cluster, free_ports
from lfs import check, check_eq
from test_fsck import check_snapshot, fsck_expect, snapshot

FILES = {"d/f1": b"first file, whose byte is flipped\n" * 50,
         "d/f2": b"second file, deleted behind ledgerfs's back\n",
         "d/f3": b"third file, whose mode changes\n",
         "d/sub/f4": b"fourth file, left alone\n" * 10,
         "top": b"a file at the top\n"}


def replica_pair(wd):
    """Primary a and replica b with FILES, in sync; b stopped."""
    cl = Cluster(wd, ["a", "b"])
    a = cl["a"]
    os.makedirs(a.m("d/sub"))
    for rel, data in FILES.items():
        lfs.write_file(a.m(rel), data)
        os.chmod(a.m(rel), 0o644)
    cl.wait_in_sync()
    cl.stop("b")
    return cl


def flip_byte(store, rel):
    """Flip one byte of store/rel and put its atime and mtime back."""
    p = store / rel
    st = os.stat(p)
    with open(p, "r+b") as f:
        f.seek(7)
        c = f.read(1)
        f.seek(7)
        f.write(bytes([c[0] ^ 0x20]))
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
    check_eq(os.stat(p).st_mtime_ns, st.st_mtime_ns, "mtime put back")


def delete(store, rel):
    os.unlink(store / rel)


def chmod(store, rel):
    os.chmod(store / rel, 0o600)


def add_extra(store, rel):
    (store / rel).write_bytes(b"made behind ledgerfs's back\n")


# (what is done to b's store, the line fsck must print)
DAMAGE = [
    (lambda s: flip_byte(s, "d/f1"), "content: d/f1 (contents:"),
    (lambda s: delete(s, "d/f2"), "missing: d/f2 (regular file"),
    (lambda s: chmod(s, "d/f3"), "metadata: d/f3 (mode 0600 here, 0644 on the peer)"),
    (lambda s: add_extra(s, "d/extra"), "extra: d/extra (regular file"),
]


def against(cl, name="a"):
    return ["--against", cl[name].address]


def test_fsck_against_finds_and_repairs_each_damage():
    """Each damage on its own: -n finds it (4) and writes nothing, -y repairs
    it (1), a rerun is clean (0), and the restarted replica converges."""
    with lfs.Workdir() as wd:
        cl = replica_pair(wd)
        b = cl["b"]
        fsck_expect(b, ["-n"] + against(cl), 0, ("clean against peer a",), "undamaged")
        for damage, line in DAMAGE:
            damage(b.store)
            before = snapshot(b.dir)
            cp = fsck_expect(b, ["-n"] + against(cl), 4, ("peer a: " + line,), line)
            check_snapshot(b.dir, before, f"fsck -n --against ({line})")
            problems = [ln for ln in cp.stdout.splitlines() if ln.startswith("peer a: ")]
            check_eq(len(problems), 1, f"one difference reported for {line}: {cp.stdout}")
            fsck_expect(b, ["-y"] + against(cl), 1, ("peer a: " + line, "fixing"), line)
            fsck_expect(b, ["-n"] + against(cl), 0, ("clean against peer a",),
                        f"rerun after repairing {line}")
            cl.start("b")
            cl.wait_in_sync()
            check_eq(lfs.digest(b.mnt), lfs.digest(cl["a"].mnt), f"digests after {line}")
            cl.stop("b")
        kept = list((b.dir / "lost+found").rglob("*"))
        check(any(p.name == "extra" for p in kept), f"the extra file kept aside: {kept}")
        check(any(p.name == "f1" for p in kept), f"the flipped file kept aside: {kept}")


def test_fsck_against_all_at_once_and_n_writes_nothing():
    """All four damages together: one -n lists each, with its kind, and
    changes nothing in NODE_DIR, store and journal alike, byte for byte;
    one -y repairs them all."""
    with lfs.Workdir() as wd:
        cl = replica_pair(wd)
        b = cl["b"]
        for damage, _ in DAMAGE:
            damage(b.store)
        before = snapshot(b.dir)
        mtimes = {p: p.stat().st_mtime_ns for p in b.dir.rglob("*") if not p.is_symlink()}
        fsck_expect(b, ["-n"] + against(cl), 4, ["peer a: " + ln for _, ln in DAMAGE], "-n")
        check_snapshot(b.dir, before, "fsck -n --against")
        after = {p: p.stat().st_mtime_ns for p in b.dir.rglob("*") if not p.is_symlink()}
        check_eq(after, mtimes, "mtimes in NODE_DIR after fsck -n --against")
        cp = fsck_expect(b, ["-y"] + against(cl), 1, ["peer a: " + ln for _, ln in DAMAGE])
        check("4 problems found, 4 fixed" in cp.stdout, f"summary: {cp.stdout}")
        fsck_expect(b, ["-n"] + against(cl), 0, ("clean against peer a",), "rerun")
        check(not (b.dir / "snap").exists(), "the staging area is gone")
        cl.start("b")
        cl.wait_in_sync()
        for rel, data in FILES.items():
            check_eq(lfs.read_file(b.m(rel)), data, f"b's {rel}")


def test_fsck_against_summary_line_and_json_free_stdout():
    """Without a terminal: no progress line, one summary line on stderr."""
    with lfs.Workdir() as wd:
        cl = replica_pair(wd)
        cp = fsck_expect(cl["b"], ["-n"] + against(cl), 0, ("clean against peer a",))
        lines = [ln for ln in cp.stderr.splitlines() if ln.strip()]
        check_eq(len(lines), 1, f"one summary line on stderr: {cp.stderr!r}")
        check("compared with a at" in lines[0] and "entries here" in lines[0],
              f"summary: {lines[0]!r}")
        check("\r" not in cp.stderr, "no progress line without a terminal")


def test_fsck_against_refuses_a_running_node_and_an_unreachable_peer():
    with lfs.Workdir() as wd:
        cl = replica_pair(wd)
        b = cl["b"]
        cl.start("b")
        for args in (["-y"], ["-n"]):
            cp = lfs.fsck(b, *args, *against(cl))
            check_eq(cp.returncode, 8, f"fsck {args} --against of a running node")
            check("is mounted" in cp.stderr, f"says why: {cp.stderr!r}")
        cl.stop("b")
        port = free_ports(1)[0]
        cp = lfs.fsck(b, "-n", "--against", f"127.0.0.1:{port}")
        check_eq(cp.returncode, 8, f"fsck --against a closed port: {cp.stdout}{cp.stderr}")
        check(f"127.0.0.1:{port}" in cp.stderr, f"names the address: {cp.stderr!r}")
        cp = lfs.fsck(b, "-n", "--against", "nocolon")
        check_eq(cp.returncode, 8, "--against without a port")


def test_fsck_against_a_peer_that_lacks_our_events_repairs_nothing():
    """The primary, stopped, checked against a replica that missed its last
    writes: the differences are listed, but taking the replica's version
    would drop events the primary applied, so -y fixes nothing (4) and the
    store is left as it was.  The replica, checked the other way, is told
    that its peer is ahead."""
    with lfs.Workdir() as wd:
        cl = replica_pair(wd)
        a, b = cl["a"], cl["b"]
        lfs.write_file(a.m("d/late"), b"written while b was stopped\n", fsync=True)
        cl.stop("a")
        cl.start("b")
        before = snapshot(a.store)
        cp = fsck_expect(a, ["-y", "--against", b.address], 4,
                         ("peer b: extra: d/late", "note: peer b has applied events of origin",
                          " 0 fixed"), "primary against a lagging replica")
        check("fixing" not in cp.stdout, f"nothing fixed: {cp.stdout}")
        check_snapshot(a.store, before, "fsck -y against a peer that lacks events")
        cl.stop("b")
        cl.start("a")
        fsck_expect(b, ["-n", "--against", a.address], 4,
                    ("peer a: missing: d/late", "note: peer a is ahead of this node"),
                    "lagging replica against the primary")


def test_fsck_against_shows_progress_on_a_terminal():
    """Under a pseudo-terminal (script(1)) stderr carries the progress line."""
    script = shutil.which("script")
    if not script:
        return
    with lfs.Workdir() as wd:
        cl = replica_pair(wd)
        b = cl["b"]
        cmd = f"{lfs.FSCK} {b.dir} -n --against {cl['a'].address}"
        cp = lfs.run([script, "-qec", cmd, "/dev/null"], check=False)
        check("\x1b[Khashing the store [" in cp.stdout, f"a progress line: {cp.stdout!r}")
        check("clean against peer a" in cp.stdout, f"the result: {cp.stdout!r}")


def test_fsck_against_type_changes_directories_symlinks_and_hard_links():
    """A file made a directory and the other way round, a directory tree deleted, a symlink retargeted
    and a hard link's second name removed: one line each (a missing tree is
    one line, with what is below it), and -y brings back the peer's tree,
    the hard link as a link."""
    with lfs.Workdir() as wd:
        cl = replica_pair(wd)
        a, b = cl["a"], cl["b"]
        cl.start("b")
        os.makedirs(a.m("tree/x/y"))
        lfs.write_file(a.m("tree/x/y/z"), b"z\n")
        os.symlink("top", a.m("sl"))
        os.link(a.m("top"), a.m("toplink"))
        cl.wait_in_sync()
        cl.stop("b")
        os.unlink(b.store / "d/f3")
        os.mkdir(b.store / "d/f3")
        shutil.rmtree(b.store / "tree")
        os.unlink(b.store / "sl")
        os.symlink("elsewhere", b.store / "sl")
        os.unlink(b.store / "toplink")
        shutil.rmtree(b.store / "d/sub")
        (b.store / "d/sub").write_bytes(b"a file where the peer has a directory\n")
        want = ("peer a: content: d/sub (type: regular file here, directory on the peer)","peer a: content: d/f3 (type: directory here, regular file on the peer)",
                "peer a: missing: tree (directory, with everything below it)",
                "peer a: content: sl (symlink target",
                "peer a: missing: toplink (regular file")
        cp = fsck_expect(b, ["-n"] + against(cl), 4, want, "-n")
        check_eq(len([ln for ln in cp.stdout.splitlines() if ln.startswith("peer a: ")]), 5,
                 f"five lines: {cp.stdout}")
        fsck_expect(b, ["-y"] + against(cl), 1, want, "-y")
        fsck_expect(b, ["-n"] + against(cl), 0, ("clean against peer a",), "rerun")
        s1, s2 = os.lstat(b.store / "top"), os.lstat(b.store / "toplink")
        check_eq(s2.st_ino, s1.st_ino, "toplink is a hard link of top again")
        check_eq((b.store / "d/sub/f4").read_bytes(), FILES["d/sub/f4"], "d/sub is back")
        cl.start("b")
        cl.wait_in_sync()


def chattr(path, flag):
    lfs.run(["chattr", flag, str(path)])


def lost_dir(node):
    """The one lost+found/<time> directory of node's fsck runs."""
    runs = sorted((node.dir / "lost+found").iterdir())
    check_eq(len(runs), 1, f"one lost+found run: {runs}")
    return runs[0]


def test_fsck_against_an_install_cut_short_loses_nothing_and_is_finished():
    """The repair's install stops part-way (d/ made immutable, so bringing
    back d/f2 fails after the extra a_extra was removed and before top is
    replaced): every original is kept in lost+found and what was not
    replaced is still in the store; the plan stays, -n refuses to compare
    over it, and a rerun with -y finishes it; the node then converges."""
    with lfs.Workdir() as wd:
        cl = replica_pair(wd)
        b = cl["b"]
        add_extra(b.store, "a_extra")
        delete(b.store, "d/f2")
        flip_byte(b.store, "top")
        orig = {rel: (b.store / rel).read_bytes() for rel in ("a_extra", "top")}
        chattr(b.store / "d", "+i")
        try:
            cp = lfs.fsck(b, "-y", *against(cl))
        finally:
            chattr(b.store / "d", "-i")
        check_eq(cp.returncode, 4, f"fsck -y with a failing install: {cp.stdout}{cp.stderr}")
        check((b.store / "top").exists(), f"top still in the store: {cp.stdout}")
        check_eq((b.store / "top").read_bytes(), orig["top"], "top's contents")
        check("note: the repair stopped at d/f2" in cp.stdout, f"says where: {cp.stdout}")
        check("3 problems found, 1 fixed" in cp.stdout,
              f"the extra is repaired, the rest not: {cp.stdout}")
        check(not (b.store / "a_extra").exists(), "the install's first step was carried out")
        lost = lost_dir(b)
        for rel, data in orig.items():
            check_eq((lost / rel).read_bytes(), data, f"{rel} kept in lost+found")
        check((b.dir / "snap" / "plan").exists(), "the plan is kept")
        before = snapshot(b.dir)
        cp = lfs.fsck(b, "-n", *against(cl))
        check_eq(cp.returncode, 8, f"-n over an interrupted repair: {cp.stdout}{cp.stderr}")
        check("was interrupted" in cp.stderr, f"says why: {cp.stderr!r}")
        check_snapshot(b.dir, before, "fsck -n over an interrupted repair")
        fsck_expect(b, ["-y"] + against(cl), 1,
                    ("interrupted install of an earlier repair", "fixing"),
                    "rerun finishes the install")
        fsck_expect(b, ["-n"] + against(cl), 0, ("clean against peer a",), "then clean")
        check(not (b.dir / "snap").exists(), "the staging area is gone")
        cl.start("b")
        cl.wait_in_sync()
        check_eq(lfs.digest(b.mnt), lfs.digest(cl["a"].mnt), "digests")


def test_fsck_against_an_install_cut_short_is_finished_by_the_node():
    """The same cut-short repair, left to the node: its start finishes the
    plan before the store is used."""
    with lfs.Workdir() as wd:
        cl = replica_pair(wd)
        b = cl["b"]
        flip_byte(b.store, "d/f1")
        flip_byte(b.store, "top")
        chattr(b.store / "d", "+i")
        try:
            cp = lfs.fsck(b, "-y", *against(cl))
        finally:
            chattr(b.store / "d", "-i")
        check_eq(cp.returncode, 4, f"fsck -y with a failing install: {cp.stdout}{cp.stderr}")
        cl.start("b")
        check("finishing the install of an fsck --against repair" in b.log_text(),
              "the node finishes the repair")
        cl.wait_in_sync()
        check_eq(lfs.digest(b.mnt), lfs.digest(cl["a"].mnt), "digests")
        check_eq(lfs.read_file(b.m("d/f1")), FILES["d/f1"], "d/f1 repaired")
        cl.stop("b")
        fsck_expect(b, ["-n"] + against(cl), 0, ("clean against peer a",), "then clean")


def test_fsck_against_refuses_an_interrupted_snapshot_install():
    """A snapshot resync whose install failed (a directory of b's store made
    immutable) leaves its plan and the journal's mark: fsck --against, with
    -y too, refuses (8) and changes nothing, plan included; the node's next
    start finishes the install and converges."""
    import test_resync
    with lfs.Workdir() as wd:
        cl = test_resync.trimming_pair(wd)
        a, b = cl["a"], cl["b"]
        os.makedirs(a.m("d"))
        lfs.write_file(a.m("d/old"), b"old\n")
        cl.wait_in_sync()
        mark = b.log_mark()
        chattr(b.store / "d", "+i")
        try:
            test_resync.start_behind_trim_point(
                cl, lambda: lfs.write_file(a.m("d/new"), b"new\n"))
            lfs.wait_until(lambda: "snapshot install failed" in b.log_since(mark), 60,
                           "b's snapshot install to fail")
            cl.stop("b")
        finally:
            chattr(b.store / "d", "-i")
        check((b.dir / "snap" / "plan").exists(), "the resync's plan is kept")
        # -n changes nothing in NODE_DIR; -y opens the journal itself (LevelDB
        # rewrites its files on open), and changes nothing else.
        for args, root in ((["-n"], b.dir), (["-y"], b.store), (["-y"], b.dir / "snap")):
            before = snapshot(root)
            cp = lfs.fsck(b, *args, *against(cl))
            check_eq(cp.returncode, 8, f"fsck {args} over a pending install: {cp.stdout}{cp.stderr}")
            check("snapshot resync's install was interrupted" in cp.stderr,
                  f"says why: {cp.stderr!r}")
            check_snapshot(root, before, f"fsck {args} over a pending install ({root})")
        cl.start("b")
        cl.wait_in_sync()
        check_eq(lfs.read_file(b.m("d/new")), b"new\n", "the install finished")
        check_eq(lfs.digest(b.mnt), lfs.digest(a.mnt), "digests")


def test_fsck_against_a_link_to_an_unrepaired_name_is_left_out():
    """toplink is a second name of top on the peer.  b lacks toplink, and
    top's contents differ but cannot be kept aside (immutable), so top is
    not repaired: linking toplink to b's top would give it the wrong
    contents, so that step is left out and said; once top can be repaired
    a rerun brings both back as one file."""
    with lfs.Workdir() as wd:
        cl = replica_pair(wd)
        a, b = cl["a"], cl["b"]
        cl.start("b")
        os.link(a.m("top"), a.m("toplink"))
        cl.wait_in_sync()
        cl.stop("b")
        os.unlink(b.store / "toplink")
        flip_byte(b.store, "top")
        chattr(b.store / "top", "+i")
        try:
            cp = fsck_expect(b, ["-y"] + against(cl), 4,
                             ("peer a: content: top", "peer a: missing: toplink",
                              "note: not linking toplink to top",
                              "2 problems found, 0 fixed"), "-y with top immutable")
        finally:
            chattr(b.store / "top", "-i")
        check(not (b.store / "toplink").exists(), f"toplink not made: {cp.stdout}")
        fsck_expect(b, ["-y"] + against(cl), 1, ("2 problems found, 2 fixed",), "rerun")
        s1, s2 = os.lstat(b.store / "top"), os.lstat(b.store / "toplink")
        check_eq(s2.st_ino, s1.st_ino, "toplink is a hard link of top")
        check_eq((b.store / "toplink").read_bytes(), FILES["top"], "the peer's contents")
        fsck_expect(b, ["-n"] + against(cl), 0, ("clean against peer a",), "then clean")


def test_fsck_against_refuses_a_repair_that_does_not_fit():
    """b's staging area (a 4 MiB tmpfs on NODE_DIR/snap) cannot hold what
    the repair fetches (a 6 MB file b lacks): -y lists the difference,
    says how much room a repair needs, repairs nothing (4) and leaves the
    store as it was; with room, it repairs."""
    with lfs.Workdir() as wd:
        cl = replica_pair(wd)
        a, b = cl["a"], cl["b"]
        cl.start("b")
        lfs.write_file(a.m("big"), os.urandom(6 << 20))
        cl.wait_in_sync()
        cl.stop("b")
        os.unlink(b.store / "big")
        snap = b.dir / "snap"
        snap.mkdir()
        lfs.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", snap])
        try:
            before = snapshot(b.store)
            cp = fsck_expect(b, ["-y"] + against(cl), 4,
                             ("peer a: missing: big", "note: a repair needs at least 23 MiB free",
                              " 0 fixed"), "-y without room")
            check("fixing" not in cp.stdout, f"nothing fixed: {cp.stdout}")
            check_snapshot(b.store, before, "fsck -y without room")
        finally:
            lfs.run(["umount", snap])
        fsck_expect(b, ["-y"] + against(cl), 1, ("peer a: missing: big", "1 fixed"), "with room")
        fsck_expect(b, ["-n"] + against(cl), 0, ("clean against peer a",), "then clean")
