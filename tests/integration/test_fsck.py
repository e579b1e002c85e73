"""fsck.ledgerfs finds, reports and repairs damage to an unmounted node
(issue point 8): a corrupted journal record, a lost or duplicated fid, an
unapplied tail, store entries changed, added or removed behind ledgerfs's
back.  Exit codes as e2fsck: 0 clean, 1 all fixed, 4 left uncorrected,
8 operational error.  -n must not write a single byte inside NODE_DIR."""

import hashlib
import os
import stat

import lfs
from lfs import check, check_eq

FID = "trusted.ledgerfs.fid"
BIG = 200_000          # above the journal's inline limit: the payload goes to the value log


def fsck_expect(node, args, code, want=(), what="fsck"):
    """Run fsck with args, require exit `code` and each string of `want` in stdout."""
    cp = lfs.fsck(node, *args)
    detail = f"\nstdout:\n{cp.stdout[-3000:]}\nstderr:\n{cp.stderr[-2000:]}"
    check(cp.returncode == code,
          f"{what}: fsck.ledgerfs {' '.join(args)} exited {cp.returncode}, want {code}{detail}")
    for w in want:
        check(w in cp.stdout, f"{what}: fsck output lacks {w!r}{detail}")
    return cp


def find_fix_rerun(node, want, what):
    """The common cycle: -n finds (4) and changes nothing, -y fixes (1), a rerun is clean (0)."""
    before = snapshot(node.dir)
    fsck_expect(node, ["-n"], 4, want, f"{what} (-n)")
    check_snapshot(node.dir, before, f"{what}: fsck -n")
    fsck_expect(node, ["-y"], 1, want, f"{what} (-y)")
    fsck_expect(node, ["-n"], 0, (), f"{what} (rerun after -y)")


def snapshot(root):
    """Every name under root with its type, bytes (or link target) and xattrs."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            if stat.S_ISREG(st.st_mode):
                with open(p, "rb") as f:
                    body = hashlib.sha256(f.read()).hexdigest()
            elif stat.S_ISLNK(st.st_mode):
                body = os.readlink(p)
            else:
                body = ""
            xattrs = {} if stat.S_ISLNK(st.st_mode) else {
                x: os.getxattr(p, x, follow_symlinks=False)
                for x in os.listxattr(p, follow_symlinks=False)}
            out[os.path.relpath(p, root)] = (stat.S_IFMT(st.st_mode), body, xattrs)
    return out


def check_snapshot(root, before, what):
    after = snapshot(root)
    added = sorted(set(after) - set(before))
    removed = sorted(set(before) - set(after))
    changed = sorted(k for k in set(before) & set(after) if before[k] != after[k])
    check(not (added or removed or changed),
          f"{what} changed NODE_DIR: added {added[:10]}, removed {removed[:10]}, "
          f"changed {changed[:10]}")


def populated_node(wd):
    """A node with a small tree written through the mount, unmounted cleanly."""
    n = wd.node("a")
    os.makedirs(n.m("dir/sub"))
    lfs.write_file(n.m("small"), "small file\n")
    lfs.write_file(n.m("dir/two"), "two\n")
    lfs.write_file(n.m("dir/sub/three"), b"3" * 5000)
    lfs.write_file(n.m("big"), os.urandom(BIG), fsync=True)
    os.link(n.m("small"), n.m("dir/small-link"))
    os.symlink("../small", n.m("dir/link"))
    os.setxattr(n.m("dir/two"), "user.note", b"kept")
    n.unmount()
    return n


def lost_found_files(node):
    """{relative path below lost+found/<time>/: bytes} of the regular files fsck moved aside."""
    out = {}
    base = node.dir / "lost+found"
    if not base.exists():
        return out
    for stamp in os.listdir(base):
        for dirpath, _, filenames in os.walk(base / stamp):
            for name in filenames:
                p = os.path.join(dirpath, name)
                out[os.path.relpath(p, base / stamp)] = lfs.read_file(p)
    return out


def test_fsck_clean_node_exits_0():
    """A node written and unmounted cleanly checks clean, with -n and with -y."""
    with lfs.Workdir() as wd:
        n = populated_node(wd)
        before = snapshot(n.dir)
        fsck_expect(n, ["-n"], 0, ("clean",))
        check_snapshot(n.dir, before, "fsck -n of a clean node")
        before = snapshot(n.store)      # LevelDB rewrites its own files on every open
        fsck_expect(n, ["-y"], 0, ("clean",))
        check_snapshot(n.store, before, "fsck -y of a clean node")
        check(not (n.dir / "lost+found").exists(), "no lost+found made for a clean node")


def test_fsck_refuses_a_mounted_node():
    """fsck of a mounted node exits 8 without touching it, -n and -y alike."""
    with lfs.one_node() as n:
        lfs.write_file(n.m("f"), "x")
        for args in (["-n"], ["-y"], []):
            cp = lfs.fsck(n, *args)
            check_eq(cp.returncode, 8, f"fsck {args} of a mounted node")
            check("is mounted" in cp.stderr, f"fsck says why it refused: {cp.stderr!r}")
        check_eq(lfs.read_file(n.m("f")), b"x", "mounted node still serves its file")


def test_fsck_usage_errors_exit_8():
    """No node, two nodes, -n with -y, a missing directory: exit 8; --help: exit 0."""
    with lfs.Workdir() as wd:
        for argv in ([], ["a", "b"], [str(wd / "nothing")]):
            cp = lfs.run([lfs.FSCK, *argv], check=False)
            check_eq(cp.returncode, 8, f"fsck.ledgerfs {argv}")
        n = populated_node(wd)
        check_eq(lfs.fsck(n, "-n", "-y").returncode, 8, "fsck -n -y")
        cp = lfs.run([lfs.FSCK, "--help"], check=False)
        check_eq(cp.returncode, 0, "fsck.ledgerfs --help")
        check("-n" in cp.stdout and "lost+found" in cp.stdout, "help describes the options")


def test_fsck_corrupted_value_log_payload():
    """A flipped byte in a large write's value-log payload is a bad record:
    -y voids it (warning that its change is lost from the journal), the
    store is brought back to what the journal still says, the store's old
    version is kept in lost+found, and a rerun is clean."""
    with lfs.Workdir() as wd:
        n = populated_node(wd)
        original = lfs.read_file(n.s("big"))
        vlog = n.journal / "vlog"
        segs = sorted(p for p in os.listdir(vlog) if p.endswith(".vlog"))
        check(segs, f"the value log holds the {BIG}-byte write: {os.listdir(vlog)}")
        with open(vlog / segs[0], "r+b") as f:
            f.seek(24 + 1000)             # past the 24-byte record header, in the payload
            b = f.read(1)
            f.seek(24 + 1000)
            f.write(bytes([b[0] ^ 0xFF]))
        before = snapshot(n.dir)
        cp = fsck_expect(n, ["-n"], 4, ("journal: event ", "crc"), "bad payload (-n)")
        check_snapshot(n.dir, before, "fsck -n with a bad record")
        cp = fsck_expect(n, ["-y"], 1, ("journal: event ", "lost from the journal"),
                         "bad payload (-y)")
        fsck_expect(n, ["-n"], 0, (), "bad payload (rerun)")
        kept = lost_found_files(n)
        check_eq(kept.get("big"), original, "the store's version of big kept in lost+found")
        n.mount()
        check(lfs.read_file(n.m("big")) != original, "big no longer holds the lost write")
        check_eq(lfs.read_file(n.m("small")), b"small file\n", "other files untouched")
        n.unmount()


def test_fsck_deleted_fid_xattr():
    """A store file that lost its fid xattr gets the journal's fid back."""
    with lfs.Workdir() as wd:
        n = populated_node(wd)
        fid = os.getxattr(n.s("dir/two"), FID)
        os.removexattr(n.s("dir/two"), FID)
        find_fix_rerun(n, ("store: dir/two: has no fid",), "deleted fid")
        check_eq(os.getxattr(n.s("dir/two"), FID), fid, "fid restored")
        check_eq(lfs.read_file(n.s("dir/two")), b"two\n", "contents untouched")


def test_fsck_duplicated_fid():
    """A file carrying another file's fid gets its own fid back; the other keeps its own."""
    with lfs.Workdir() as wd:
        n = populated_node(wd)
        fid_small = os.getxattr(n.s("small"), FID)
        fid_two = os.getxattr(n.s("dir/two"), FID)
        os.setxattr(n.s("dir/two"), FID, fid_small)
        find_fix_rerun(n, ("store: dir/two: fid", "also held by another file"), "duplicated fid")
        check_eq(os.getxattr(n.s("dir/two"), FID), fid_two, "dir/two has its own fid again")
        check_eq(os.getxattr(n.s("small"), FID), fid_small, "small keeps its fid")
        check_eq(os.getxattr(n.s("dir/small-link"), FID), fid_small,
                 "a hard link shares its file's fid, and that is no problem")


def copy_over_hard_link(n, fid):
    """Replace the store's dir/small-link, a hard link of small, by a copy of
    it with small's times and the given fid (None: no fid); its path."""
    link = n.s("dir/small-link")
    data = lfs.read_file(link)
    os.unlink(link)
    lfs.write_file(link, data)
    if fid is not None:
        os.setxattr(link, FID, fid)
    st = os.stat(n.s("small"))
    os.utime(link, ns=(st.st_atime_ns, st.st_mtime_ns))
    return link


def test_fsck_hard_link_broken_behind_the_back():
    """Two names that the journal holds as one file but the store as two
    copies sharing a fid are made one file again."""
    with lfs.Workdir() as wd:
        n = populated_node(wd)
        link = copy_over_hard_link(n, os.getxattr(n.s("small"), FID))
        find_fix_rerun(n, ("shares fid",), "broken hard link")
        check_eq(os.stat(link).st_ino, os.stat(n.s("small")).st_ino, "one inode again")


def test_fsck_hard_link_copy_without_its_fid_is_linked_again():
    """A name the journal holds as a hard link but the store as a copy with
    no fid, or a fid of its own (what a power cut can leave): the repair
    that gives it the file's fid back must link it too, in one run."""
    for case in ("no fid", "own fid"):
        with lfs.Workdir() as wd:
            n = populated_node(wd)
            own = os.getxattr(n.s("dir/two"), FID)[:8] + b"\xff" * 8
            link = copy_over_hard_link(n, own if case == "own fid" else None)
            find_fix_rerun(n, ("dir/small-link",), f"hard link copy with {case}")
            check_eq(os.stat(link).st_ino, os.stat(n.s("small")).st_ino,
                     f"{case}: one inode again")


def test_fsck_unapplied_tail_is_replayed():
    """After kill -9, the events the daemon journaled but had not marked
    applied are an unapplied tail: -n reports it, -y replays it."""
    with lfs.Workdir() as wd:
        n = wd.node("a")
        for attempt in range(20):
            lfs.write_file(n.m(f"f{attempt}"), f"attempt {attempt}\n")
            os.mkdir(n.m(f"d{attempt}"))
            n.kill9()
            cp = lfs.fsck(n, "-n")
            if "unapplied events" in cp.stdout:
                break
            check_eq(cp.returncode, 0, f"fsck -n after kill -9 without a tail:\n{cp.stdout}")
            n.mount()
        else:
            raise lfs.Failure("20 kill -9 right after a mkdir never left an unapplied tail")
        check_eq(cp.returncode, 4, f"fsck -n with an unapplied tail:\n{cp.stdout}")
        fsck_expect(n, ["-y"], 1, ("unapplied events",), "unapplied tail (-y)")
        fsck_expect(n, ["-n"], 0, (), "unapplied tail (rerun)")
        n.mount()
        check(os.path.isdir(n.m(f"d{attempt}")), "the last mkdir survived")
        check_eq(lfs.read_file(n.m(f"f{attempt}")), f"attempt {attempt}\n".encode(),
                 "the last write survived")
        n.unmount()
        lfs.check_rebuild_matches(n)


def test_fsck_store_file_changed_behind_the_back():
    """Bytes appended directly to a store file are found; -y puts the
    journal's contents back and keeps the changed file in lost+found."""
    with lfs.Workdir() as wd:
        n = populated_node(wd)
        with open(n.s("dir/sub/three"), "ab") as f:
            f.write(b"written behind ledgerfs's back")
        changed = lfs.read_file(n.s("dir/sub/three"))
        find_fix_rerun(n, ("store: dir/sub/three: differs from the journal",), "changed file")
        check_eq(lfs.read_file(n.s("dir/sub/three")), b"3" * 5000, "journal's contents back")
        check_eq(lost_found_files(n).get("dir/sub/three"), changed,
                 "the changed version kept in lost+found")
        check_eq(os.getxattr(n.s("dir/two"), "user.note"), b"kept", "other files untouched")


def test_fsck_extra_entries_go_to_lost_found():
    """A file and a directory tree created directly in the store are not
    in the journal: -y moves them, whole, to NODE_DIR/lost+found/<time>/."""
    with lfs.Workdir() as wd:
        n = populated_node(wd)
        lfs.write_file(n.s("stray"), "stray\n")
        os.makedirs(n.s("dir/straydir/deeper"))
        lfs.write_file(n.s("dir/straydir/deeper/f"), "deep stray\n")
        find_fix_rerun(n, ("store: stray: not in the journal",
                           "store: dir/straydir: not in the journal"), "extra entries")
        check(not os.path.lexists(n.s("stray")), "stray file left the store")
        check(not os.path.lexists(n.s("dir/straydir")), "stray dir left the store")
        kept = lost_found_files(n)
        check_eq(kept.get("stray"), b"stray\n", "stray file in lost+found")
        check_eq(kept.get("dir/straydir/deeper/f"), b"deep stray\n", "stray tree in lost+found")


def test_fsck_missing_entries_are_copied_back():
    """Entries deleted from the store behind ledgerfs's back come back from the journal,
    a hard link as a hard link."""
    with lfs.Workdir() as wd:
        n = populated_node(wd)
        want = lfs.digest(n.store)
        os.unlink(n.s("dir/small-link"))
        os.unlink(n.s("dir/sub/three"))
        os.rmdir(n.s("dir/sub"))
        os.unlink(n.s("big"))
        find_fix_rerun(n, ("store: dir/sub: missing", "store: big: missing"), "missing entries")
        check_eq(lfs.digest(n.store), want, "store digest after the copy back")
        check_eq(os.stat(n.s("dir/small-link")).st_ino, os.stat(n.s("small")).st_ino,
                 "hard link restored as a hard link")
        n.mount()
        check_eq(lfs.read_file(n.m("dir/sub/three")), b"3" * 5000, "served after repair")
        n.unmount()
