"""Permissions as on ext4 with `-o allow_other,default_permissions` (root mount):
owners come from the caller, setgid and sticky directories work, and chmod,
chown and writes follow the POSIX rules."""

import contextlib
import errno
import os
import stat

import lfs
from lfs import as_user, check, check_eq

OPTS = "allow_other,default_permissions"
ALICE = (1000, 1000)
BOB = (1001, 1001)


@contextlib.contextmanager
def perm_node():
    """A node mounted with OPTS whose root is 0755 and has a 1777 dir `pub`."""
    with lfs.one_node(opts=OPTS) as n:
        os.chmod(n.m(), 0o755)
        os.mkdir(n.m("pub"))
        os.chmod(n.m("pub"), 0o1777)
        yield n


def owner(path):
    st = os.lstat(path)
    return st.st_uid, st.st_gid


def expect_user_errno(want, who, func, *args):
    """Run func as `who` and require it to fail with errno `want`."""
    kind, value = as_user(*who, func, *args)
    name = getattr(func, "__name__", str(func))
    check(kind != "exc", f"{name} as {who}: {value}")
    check(kind == "err", f"{name} as {who} succeeded, expected {errno.errorcode[want]}")
    check_eq(errno.errorcode.get(value, value), errno.errorcode[want], f"{name} as {who}")


def must(who, func, *args):
    """Run func as `who` and require it to succeed; return its value."""
    kind, value = as_user(*who, func, *args)
    name = getattr(func, "__name__", str(func))
    check(kind == "ok", f"{name} as {who} failed: "
                        f"{errno.errorcode.get(value, value) if kind == 'err' else value}")
    return value


def make_things(base):
    """As the caller: a file, a dir, a fifo and a symlink under base."""
    lfs.write_file(os.path.join(base, "file"), b"mine")
    os.mkdir(os.path.join(base, "dir"))
    os.mkfifo(os.path.join(base, "fifo"))
    os.symlink("file", os.path.join(base, "sym"))
    return True


def test_new_entries_belong_to_the_caller():
    """A file, dir, fifo and symlink made by uid 1000 belong to 1000:1000
    through the mount, in the store and in the journal's events."""
    with perm_node() as n:
        mark = n.last_seq()
        must(ALICE, make_things, str(n.m("pub")))
        for name in ("file", "dir", "fifo", "sym"):
            check_eq(owner(n.m(f"pub/{name}")), ALICE, f"owner of {name} in the mount")
            check_eq(owner(n.s(f"pub/{name}")), ALICE, f"owner of {name} in the store")
        creations = [e for e in n.events_since(mark)
                     if e["type"] in ("create", "mkdir", "mknod", "symlink")]
        check_eq(len(creations), 4, "creation events")
        for e in creations:
            check_eq((e.get("uid"), e.get("gid")), ALICE, f"owner in {e['type']} event")
        n.unmount()
        lfs.check_rebuild_matches(n)


def test_setgid_directory_passes_group_and_bit():
    """In a setgid dir of group 2000, uid 1000's new file gets group 2000 and
    its new subdirectory gets group 2000 and the setgid bit (mount and store)."""
    with perm_node() as n:
        os.mkdir(n.m("sg"))
        os.chown(n.m("sg"), 0, 2000)
        os.chmod(n.m("sg"), 0o2777)

        def work(base):
            lfs.write_file(os.path.join(base, "f"), b"f")
            os.mkdir(os.path.join(base, "sub"))
            return True
        must(ALICE, work, str(n.m("sg")))
        for where in (n.m(), n.s()):
            check_eq(owner(where / "sg/f"), (1000, 2000), f"file owner in {where}")
            check_eq(owner(where / "sg/sub"), (1000, 2000), f"subdir owner in {where}")
            check(os.stat(where / "sg/sub").st_mode & stat.S_ISGID,
                  f"subdir in {where} inherits the setgid bit")
            check(not os.stat(where / "sg/f").st_mode & stat.S_ISGID,
                  f"file in {where} has no setgid bit")


def test_sticky_directory_protects_entries():
    """In a 1777 dir, uid 1001 cannot unlink or rename uid 1000's file
    (EPERM); uid 1000 can."""
    with perm_node() as n:
        victim = str(n.m("pub/alice.txt"))
        must(ALICE, lfs.write_file, victim, b"alice")
        expect_user_errno(errno.EPERM, BOB, os.unlink, victim)
        expect_user_errno(errno.EPERM, BOB, os.rename, victim, str(n.m("pub/stolen")))
        check_eq(lfs.read_file(n.s("pub/alice.txt")), b"alice", "file still in the store")
        must(ALICE, os.unlink, victim)
        check(not os.path.lexists(n.s("pub/alice.txt")), "owner's unlink reached the store")


def test_chmod_by_non_owner_fails():
    """chmod of uid 1000's file by uid 1001 fails with EPERM; mode unchanged."""
    with perm_node() as n:
        path = str(n.m("pub/f"))
        must(ALICE, lfs.write_file, path, b"x")
        must(ALICE, os.chmod, path, 0o644)
        expect_user_errno(errno.EPERM, BOB, os.chmod, path, 0o666)
        check_eq(stat.S_IMODE(os.stat(n.s("pub/f")).st_mode), 0o644, "store mode")


def test_chown_by_non_root_fails():
    """uid 1000 cannot give its file to uid 1001, nor to a group it is not in
    (EPERM); the store owner is unchanged."""
    with perm_node() as n:
        path = str(n.m("pub/f"))
        must(ALICE, lfs.write_file, path, b"x")
        expect_user_errno(errno.EPERM, ALICE, os.chown, path, 1001, -1)
        expect_user_errno(errno.EPERM, ALICE, os.chown, path, -1, 1001)
        check_eq(owner(n.s("pub/f")), ALICE, "store owner")


def test_write_without_permission_fails():
    """uid 1001 cannot open uid 1000's 0644 file for writing nor its 0600 file
    for reading (EACCES), cannot create in a 0755 dir of 1000; content unchanged."""
    with perm_node() as n:
        pub = n.m("pub")
        must(ALICE, lfs.write_file, str(pub / "ro"), b"keep", False, 0o644)
        must(ALICE, lfs.write_file, str(pub / "secret"), b"hidden", False, 0o600)
        must(ALICE, os.mkdir, str(pub / "home"), 0o755)
        expect_user_errno(errno.EACCES, BOB, os.open, str(pub / "ro"), os.O_WRONLY)
        expect_user_errno(errno.EACCES, BOB, lfs.read_file, str(pub / "secret"))
        expect_user_errno(errno.EACCES, BOB, lfs.write_file, str(pub / "home/x"), b"x")
        expect_user_errno(errno.EACCES, BOB, os.truncate, str(pub / "ro"), 0)
        check_eq(lfs.read_file(n.s("pub/ro")), b"keep", "store content unchanged")
        check(not os.path.lexists(n.s("pub/home/x")), "nothing created in the store")


def test_write_by_owner_clears_setuid():
    """A write by a non-root owner clears the setuid bit, as ext4 does, in the
    mount and in the store."""
    with perm_node() as n:
        path = str(n.m("pub/suid"))
        must(ALICE, lfs.write_file, path, b"#!/bin/sh\n", False, 0o755)
        must(ALICE, os.chmod, path, 0o4755)
        check_eq(stat.S_IMODE(os.stat(n.s("pub/suid")).st_mode), 0o4755, "after chmod")

        def append(p):
            fd = os.open(p, os.O_WRONLY | os.O_APPEND)
            os.write(fd, b"echo hi\n")
            os.fsync(fd)
            os.close(fd)
            return True
        must(ALICE, append, path)
        check_eq(stat.S_IMODE(os.stat(path).st_mode), 0o755, "mode in the mount after write")
        check_eq(stat.S_IMODE(os.stat(n.s("pub/suid")).st_mode), 0o755,
                 "mode in the store after write")
