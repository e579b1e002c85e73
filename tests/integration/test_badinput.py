"""Hostile names and a full disk give clean errors and leave the node sound."""

import errno
import os

import lfs
from lfs import check, check_eq, expect_errno


def test_dotdot_and_dot_cannot_be_created():
    """`..` and `.` name existing directories: creating them fails with the
    kernel's error (EEXIST/EISDIR), and nothing escapes the store."""
    with lfs.one_node() as n:
        os.mkdir(n.m("sub"))
        for name in ("..", "."):
            path = os.path.join(n.m("sub"), name)
            expect_errno(errno.EEXIST, os.mkdir, path)
            expect_errno(errno.EEXIST, os.open, path,
                         os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            expect_errno(errno.EISDIR, os.open, path, os.O_CREAT | os.O_WRONLY, 0o644)
        expect_errno((errno.EBUSY, errno.EINVAL, errno.EEXIST, errno.ENOTEMPTY), os.rename, n.m("sub"),
                     os.path.join(n.m("sub"), ".."))
        check_eq(os.listdir(n.m()), ["sub"], "mount root after the attempts")
        check_eq(os.listdir(n.s()), ["sub"], "store root after the attempts")


HOSTILE = [b"with\nnewline", b"\xff\xfe invalid utf8 \x80", b"...", b" leading space",
           b"-rf", b"trailing.", b"tab\there", b"back\\slash", b"quote\"'",
           "unicod\u00e9 \u540d\u524d".encode(), b"%s%n", b"\x01\x1f ctrl"]


def test_hostile_names_round_trip():
    """Names with newlines, invalid UTF-8, control bytes and shell metacharacters
    are created, listed, read back, renamed and removed exactly, in mount and
    store, and `ledgerctl log --json` still prints valid JSON for them."""
    with lfs.one_node() as n:
        root = os.fsencode(n.m())
        store = os.fsencode(n.s())
        mark = n.last_seq()
        for name in HOSTILE:
            lfs.write_file(os.path.join(root, name), name)
        check_eq(sorted(os.listdir(root)), sorted(HOSTILE), "mount listing (bytes)")
        check_eq(sorted(os.listdir(store)), sorted(HOSTILE), "store listing (bytes)")
        for name in HOSTILE:
            check_eq(lfs.read_file(os.path.join(store, name)), name, f"store file {name!r}")
        for name in HOSTILE:
            os.rename(os.path.join(root, name), os.path.join(root, name + b".2"))
        check_eq(sorted(os.listdir(store)), sorted(h + b".2" for h in HOSTILE),
                 "store listing after renames")
        evs = n.events_since(mark)   # parses every line as JSON
        check_eq([t for t, _ in lfs.simplify(evs)],
                 ["create", "write"] * len(HOSTILE) + ["rename"] * len(HOSTILE),
                 "event types")
        for name in HOSTILE:
            os.unlink(os.path.join(root, name + b".2"))
        check_eq(os.listdir(store), [], "store empty after unlinks")
        n.unmount()
        lfs.check_rebuild_matches(n)


def test_name_max_and_path_max():
    """A 255-byte name works; 256 bytes gives ENAMETOOLONG; a path longer than
    PATH_MAX gives ENAMETOOLONG.  (A tree deeper than PATH_MAX, built with
    relative calls, works: test_longpath.)"""
    with lfs.one_node() as n:
        ok = "n" * 255
        lfs.write_file(n.m(ok), b"ok")
        check_eq(lfs.read_file(n.s(ok)), b"ok", "255-byte name in the store")
        os.mkdir(n.m("d" * 255))
        long = "L" * 256
        expect_errno(errno.ENAMETOOLONG, lfs.write_file, n.m(long), b"no")
        expect_errno(errno.ENAMETOOLONG, os.mkdir, n.m(long))
        expect_errno(errno.ENAMETOOLONG, os.symlink, "t", n.m(long))
        expect_errno(errno.ENAMETOOLONG, os.rename, n.m(ok), n.m(long))
        expect_errno(errno.ENAMETOOLONG, os.link, n.m(ok), n.m(long))
        too_long_path = os.path.join(n.m(), *(["p" * 200] * 21))
        expect_errno(errno.ENAMETOOLONG, os.open, too_long_path, os.O_CREAT | os.O_WRONLY)

        check(n.alive(), "daemon still running")
        lfs.write_file(n.m("after"), b"still serving")
        check_eq(lfs.read_file(n.s("after")), b"still serving", "write after the errors")
        n.unmount()
        lfs.check_rebuild_matches(n)


def fill_until_error(path, chunk=1 << 20, limit=256):
    """Write `chunk`-sized blocks to `path` (fsync every 4) until an OSError.

    Returns (errno, bytes written before it).  The error may come from open
    (no room for the new file's event), write, fsync or close, as the
    kernel's writeback cache decides.
    """
    block = os.urandom(chunk)
    written = 0
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    except OSError as e:
        return e.errno, 0
    try:
        for i in range(limit):
            os.write(fd, block)
            written += chunk
            if i % 4 == 3:
                os.fsync(fd)
        os.fsync(fd)
    except OSError as e:
        try:
            os.close(fd)
        except OSError:
            pass
        return e.errno, written
    try:
        os.close(fd)
    except OSError as e:
        return e.errno, written
    return None, written


def test_enospc_is_clean():
    """With the node on a 16 MiB tmpfs, filling the mount gives the writer
    ENOSPC (not EIO, no crash); the daemon keeps serving, space freed by an
    unlink is usable again, and after unmount `fsck.ledgerfs -n` exits 0."""
    with lfs.Workdir() as wd:
        small = wd / "small"
        lfs.mount_tmpfs(small, "16m")
        n = lfs.Node(small, "a").init()
        n.mount()
        lfs.write_file(n.m("keep"), b"precious", fsync=True)
        err, written = fill_until_error(n.m("big"))
        check(err is not None, f"wrote {written} bytes to a 16 MiB disk without error")
        check_eq(errno.errorcode.get(err, err), "ENOSPC", "error the writer got")
        check(n.alive(), "daemon still running after ENOSPC")
        check_eq(lfs.read_file(n.m("keep")), b"precious", "old file still readable")
        err2, _ = fill_until_error(n.m("big2"), chunk=65536, limit=1024)
        check_eq(errno.errorcode.get(err2, err2), "ENOSPC", "second writer's error")
        for name in ("big", "big2"):
            if os.path.lexists(n.m(name)):
                os.unlink(n.m(name))
        lfs.write_file(n.m("after"), b"space again", fsync=True)
        check_eq(lfs.read_file(n.s("after")), b"space again", "write after freeing space")
        check(n.alive(), "daemon still running")
        n.unmount()
        res = lfs.fsck(n, "-n")
        check_eq(res.returncode, 0, f"fsck.ledgerfs -n exit code (output: "
                                    f"{res.stdout[-1500:]}{res.stderr[-1500:]})")
        check_eq(lfs.read_file(n.s("keep")), b"precious", "store kept the old file")
