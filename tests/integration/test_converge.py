"""Replicas converge on sequences that once left them stuck (DESIGN invariants
4, 9 and 10): each case is a minimal reproduction found by the random
differential tester or by hand, run on a primary and a replica, then the two
trees must digest alike and the replica must never have refused an event."""

import os

import lfs
from cluster import Cluster
from lfs import check


def _touch(path):
    with open(path, "ab"):
        pass


def _run_cases(cases):
    """Run each (name, func(mount_path_fn)) on a fresh subdirectory of a
    two-node cluster's primary; after each, the replica must converge."""
    with lfs.Workdir() as wd:
        cl = Cluster(wd, ["a", "b"])
        a = cl["a"]
        for i, (name, func) in enumerate(cases):
            base = f"case{i}"
            os.mkdir(a.m(base))

            def m(rel, base=base):
                return a.m(f"{base}/{rel}")
            func(m)
            try:
                cl.wait_in_sync(timeout=30)
            except lfs.Failure as e:
                raise lfs.Failure(f"case {name!r}: {e}") from None
        log = cl.log_text("b")
        check("refused" not in log and "mismatch" not in log,
              f"replica b refused an event:\n{lfs.excerpt(log)}")


def _dir_attr_cases():
    def chmod_touch_chmod(m):
        os.mkdir(m("d")); os.chmod(m("d"), 0o700); _touch(m("d/f")); os.chmod(m("d"), 0o755)

    def chown_touch_chown(m):
        os.mkdir(m("d")); os.chown(m("d"), 1, 1); _touch(m("d/f")); os.chown(m("d"), 2, 2)

    def touch_chmod_touch_chmod(m):
        os.mkdir(m("d")); _touch(m("d/f")); os.chmod(m("d"), 0o700)
        _touch(m("d/g")); os.chmod(m("d"), 0o755)

    def write_chmod_rm_chmod(m):
        os.mkdir(m("d")); lfs.write_file(m("d/f"), b"x\n"); os.chmod(m("d"), 0o600)
        os.unlink(m("d/f")); os.chmod(m("d"), 0o755)

    def xattr_touch_xattr(m):
        os.mkdir(m("d")); os.setxattr(m("d"), "user.k", b"1"); _touch(m("d/f"))
        os.setxattr(m("d"), "user.k", b"2"); os.removexattr(m("d"), "user.k")

    def rename_in_then_chmod(m):
        os.mkdir(m("d")); os.mkdir(m("e")); os.chmod(m("d"), 0o711); _touch(m("e/f"))
        os.rename(m("e/f"), m("d/f")); os.chmod(m("d"), 0o755); os.chmod(m("e"), 0o700)

    def utime_after_link(m):
        os.mkdir(m("d")); os.utime(m("d"), (1, 2)); _touch(m("f"))
        os.link(m("f"), m("d/g")); os.utime(m("d"), (3, 4))

    return [(f.__name__, f) for f in (chmod_touch_chmod, chown_touch_chown,
                                      touch_chmod_touch_chmod, write_chmod_rm_chmod,
                                      xattr_touch_xattr, rename_in_then_chmod,
                                      utime_after_link)]


def test_directory_attribute_change_after_namespace_change():
    """chmod, chown, xattrs and utimes of a directory after a create, unlink,
    rename or link inside it, once its attributes had changed before: the
    event's base version is the directory's current one, so every replica
    applies it (they once refused it forever with "base version mismatch")."""
    _run_cases(_dir_attr_cases())


def _direct_write(path, blocks, flags=0):
    """Write `blocks` (4 KiB each) at offset 0 with O_DIRECT from an aligned buffer."""
    import mmap
    buf = mmap.mmap(-1, 4096 * len(blocks))
    for i, b in enumerate(blocks):
        buf[i * 4096:(i + 1) * 4096] = b
    fd = os.open(path, os.O_RDWR | os.O_DIRECT | flags, 0o644)
    try:
        n = os.pwritev(fd, [buf], 0)
        check(n == len(buf), f"O_DIRECT write of {path}: {n} bytes, want {len(buf)}")
        os.fsync(fd)
    finally:
        os.close(fd)
        buf.close()


def test_o_direct_on_existing_and_new_files():
    """O_DIRECT writes of aligned blocks work on an existing file as on a new
    one (they once failed with EINVAL on an existing file and moved the store
    file's mtime without an event); contents replicate and fsck is clean."""
    with lfs.Workdir() as wd:
        cl = Cluster(wd, ["a", "b"])
        a = cl["a"]
        lfs.write_file(a.m("old"), b"o" * 10000, fsync=True)
        one, two = os.urandom(4096), os.urandom(4096)
        _direct_write(a.m("old"), [one, two])
        _direct_write(a.m("new"), [two, one], os.O_CREAT)
        want_old = one + two + b"o" * (10000 - 8192)
        lfs.check_eq(lfs.read_file(a.m("old")), want_old, "O_DIRECT-written existing file")
        lfs.check_eq(lfs.read_file(a.s("old")), want_old, "store copy of it")
        lfs.check_eq(lfs.read_file(a.m("new")), two + one, "O_DIRECT-created file")
        cl.wait_in_sync(timeout=30)
        for nm in ("a", "b"):
            cl.stop(nm)
            r = lfs.fsck(cl[nm], "-n")
            check(r.returncode == 0, f"fsck.ledgerfs -n {nm} exited {r.returncode}:\n"
                                     f"{r.stdout}{r.stderr}")


def test_mtime_through_the_writeback_cache_matches_the_store():
    """With the writeback cache the kernel owns a file's mtime and sends it in
    setattrs of its own.  A truncate(2) to the size a file already has moves
    no mtime on ext4 and sends none; it once stamped the store (and so every
    replica) with the daemon's clock, while the mount kept the old mtime.
    Writes, fallocate and copies must not move it either."""
    import time
    with lfs.Workdir() as wd:
        cl = Cluster(wd, ["a", "b"])
        a, b = cl["a"], cl["b"]
        lfs.write_file(a.m("f"), os.urandom(300000))
        lfs.write_file(a.m("g"), os.urandom(5000))
        time.sleep(0.02)
        os.truncate(a.m("f"), 300000)                       # same size
        fd = os.open(a.m("g"), os.O_RDWR)
        try:
            lfs.fallocate(fd, lfs.FALLOC_FL_KEEP_SIZE, 0, 65536)
            os.pwrite(fd, b"x" * 10, 100)
        finally:
            os.close(fd)
        cl.wait_in_sync(timeout=30)
        for name in ("f", "g"):
            mnt, sto, rep = os.stat(a.m(name)), os.stat(a.s(name)), os.stat(b.s(name))
            check(mnt.st_mtime_ns == sto.st_mtime_ns == rep.st_mtime_ns,
                  f"{name}: mtime {mnt.st_mtime_ns} through the mount, {sto.st_mtime_ns} in "
                  f"the store, {rep.st_mtime_ns} on the replica")
