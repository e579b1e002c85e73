"""Every mutating operation, checked through the mount, in the store, and in
the journal (`ledgerctl log --json`), and the journal replays to the store."""

import errno
import mmap
import os
import stat
import struct

import lfs
from lfs import check, check_eq, check_events, expect_errno


def test_create_write_is_journaled_and_stored():
    """create + write: the mount and the store hold the bytes, the journal a
    create then write(s) of exactly that many bytes; rebuild gives the store."""
    with lfs.one_node() as n:
        mark = n.last_seq()
        data = os.urandom(200_000)
        lfs.write_file(n.m("f.bin"), data, fsync=True)
        check_eq(lfs.read_file(n.m("f.bin")), data, "content through the mount")
        check_eq(lfs.read_file(n.s("f.bin")), data, "content in the store")
        evs = n.events_since(mark)
        check_events(evs, [("create", "f.bin"), ("write", "f.bin")])
        check_eq(lfs.written_bytes(evs, "f.bin"), len(data), "bytes journaled")
        check(all(len(e.get("origin", "")) == 16 for e in evs), "origin is 16 hex digits")
        seqs = [e["seq"] for e in evs]
        check_eq(seqs, sorted(seqs), "seq order")
        check_eq(len(set(seqs)), len(seqs), "seqs are unique")
        n.unmount()
        lfs.check_rebuild_matches(n)


def test_mknod_fifo():
    """mkfifo makes a FIFO in the mount and the store, journaled as mknod."""
    with lfs.one_node() as n:
        mark = n.last_seq()
        os.mkfifo(n.m("pipe"), 0o640)
        check(stat.S_ISFIFO(os.lstat(n.m("pipe")).st_mode), "FIFO through the mount")
        st = os.lstat(n.s("pipe"))
        check(stat.S_ISFIFO(st.st_mode), "FIFO in the store")
        check_eq(stat.S_IMODE(st.st_mode), 0o640 & ~current_umask(), "store mode")
        check_events(n.events_since(mark), [("mknod", "pipe")])
        n.unmount()
        lfs.check_rebuild_matches(n)


def current_umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_mkdir_rmdir_unlink():
    """mkdir, create, unlink, rmdir: each appears and disappears in mount and
    store, and the journal has mkdir, create, unlink, rmdir in that order."""
    with lfs.one_node() as n:
        mark = n.last_seq()
        os.mkdir(n.m("d"), 0o750)
        check(os.path.isdir(n.s("d")), "directory in the store")
        check_eq(stat.S_IMODE(os.stat(n.s("d")).st_mode), 0o750 & ~current_umask(),
                 "directory mode in the store")
        lfs.write_file(n.m("d/x"), b"x")
        expect_errno(errno.ENOTEMPTY, os.rmdir, n.m("d"))
        os.unlink(n.m("d/x"))
        check(not os.path.lexists(n.s("d/x")), "unlinked file gone from the store")
        os.rmdir(n.m("d"))
        check(not os.path.lexists(n.m("d")), "directory gone from the mount")
        check(not os.path.lexists(n.s("d")), "directory gone from the store")
        check_events(n.events_since(mark), [("mkdir", "d"), ("create", "d/x"),
                                            ("write", "d/x"), ("unlink", "d/x"),
                                            ("rmdir", "d")])
        n.unmount()
        lfs.check_rebuild_matches(n)


def test_symlink_and_hard_link():
    """symlink keeps its target; a hard link shares the inode number through
    the mount and in the store; both are journaled."""
    with lfs.one_node() as n:
        lfs.write_file(n.m("target"), b"hello")
        mark = n.last_seq()
        os.symlink("target", n.m("sl"))
        os.symlink("/nonexistent/abs", n.m("dangling"))
        os.link(n.m("target"), n.m("hard"))
        check_eq(os.readlink(n.m("sl")), "target", "symlink target in the mount")
        check_eq(os.readlink(n.s("sl")), "target", "symlink target in the store")
        check_eq(os.readlink(n.s("dangling")), "/nonexistent/abs", "dangling target")
        check_eq(lfs.read_file(n.m("sl")), b"hello", "read through the symlink")
        check_eq(os.stat(n.m("hard")).st_ino, os.stat(n.m("target")).st_ino,
                 "hard link inode number through the mount")
        check_eq(os.stat(n.m("hard")).st_nlink, 2, "link count through the mount")
        check_eq(os.stat(n.s("hard")).st_ino, os.stat(n.s("target")).st_ino,
                 "hard link inode number in the store")
        evs = n.events_since(mark)
        got = lfs.simplify(evs)
        check_eq([t for t, _ in got], ["symlink", "symlink", "link"], "event types")
        check_eq([p for _, p in got[:2]], ["sl", "dangling"], "symlink event paths")
        link = [e for e in evs if e["type"] == "link"][0]
        check_eq({lfs.rel(link.get("path")), lfs.rel(link.get("path2"))},
                 {"target", "hard"}, "link event names both paths")
        lfs.write_file(n.m("hard"), b"changed")
        check_eq(lfs.read_file(n.m("target")), b"changed", "write via one name, read other")
        n.unmount()
        lfs.check_rebuild_matches(n)


def test_rename_plain_noreplace_exchange():
    """rename moves and replaces; RENAME_NOREPLACE refuses an existing target
    with EEXIST and journals nothing; RENAME_EXCHANGE swaps both names."""
    with lfs.one_node() as n:
        lfs.write_file(n.m("a"), b"A")
        lfs.write_file(n.m("b"), b"B")
        os.mkdir(n.m("dir"))
        mark = n.last_seq()
        os.rename(n.m("a"), n.m("dir/a2"))
        check_eq(lfs.read_file(n.s("dir/a2")), b"A", "renamed file in the store")
        check(not os.path.lexists(n.s("a")), "old name gone from the store")
        expect_errno(errno.EEXIST, lfs.renameat2, n.m("dir/a2"), n.m("b"),
                     lfs.RENAME_NOREPLACE)
        check_eq(lfs.read_file(n.s("b")), b"B", "NOREPLACE left the target alone")
        lfs.renameat2(n.m("dir/a2"), n.m("c"), lfs.RENAME_NOREPLACE)
        lfs.renameat2(n.m("b"), n.m("c"), lfs.RENAME_EXCHANGE)
        check_eq(lfs.read_file(n.m("b")), b"A", "exchange: b through the mount")
        check_eq(lfs.read_file(n.m("c")), b"B", "exchange: c through the mount")
        check_eq(lfs.read_file(n.s("b")), b"A", "exchange: b in the store")
        check_eq(lfs.read_file(n.s("c")), b"B", "exchange: c in the store")
        lfs.write_file(n.m("d"), b"D")
        os.rename(n.m("d"), n.m("b"))     # replaces b
        check_eq(lfs.read_file(n.s("b")), b"D", "rename over an existing file")
        evs = n.events_since(mark)
        check_events(evs, [("rename", "a"), ("rename", "dir/a2"), ("rename", "b"),
                           ("create", "d"), ("write", "d"), ("rename", "d")])
        check_eq([lfs.rel(e.get("path2")) for e in evs if e["type"] == "rename"],
                 ["dir/a2", "c", "c", "b"], "rename targets (path2)")
        n.unmount()
        lfs.check_rebuild_matches(n)


def test_truncate_grow_and_shrink():
    """truncate shrinks and grows (with zeros) in mount and store, journaled
    as truncate events carrying the new size."""
    with lfs.one_node() as n:
        lfs.write_file(n.m("t"), b"0123456789")
        mark = n.last_seq()
        os.truncate(n.m("t"), 4)
        check_eq(lfs.read_file(n.s("t")), b"0123", "shrunk in the store")
        fd = os.open(n.m("t"), os.O_RDWR)
        os.ftruncate(fd, 8)
        os.close(fd)
        check_eq(lfs.read_file(n.m("t")), b"0123\0\0\0\0", "grown through the mount")
        check_eq(lfs.read_file(n.s("t")), b"0123\0\0\0\0", "grown in the store")
        evs = n.events_since(mark)
        check_events(evs, [("truncate", "t"), ("truncate", "t")])
        check_eq([e.get("size") for e in evs if e["type"] == "truncate"], [4, 8],
                 "truncate sizes")
        n.unmount()
        lfs.check_rebuild_matches(n)


def test_fallocate_modes():
    """fallocate KEEP_SIZE keeps st_size, PUNCH_HOLE|KEEP_SIZE zeroes a range
    and ZERO_RANGE zeroes a range, in the mount and in the store."""
    with lfs.one_node() as n:
        data = b"\xab" * 65536
        lfs.write_file(n.m("fa"), data)
        mark = n.last_seq()
        fd = os.open(n.m("fa"), os.O_RDWR)
        try:
            lfs.fallocate(fd, lfs.FALLOC_FL_KEEP_SIZE, 0, 1 << 20)
            check_eq(os.fstat(fd).st_size, 65536, "KEEP_SIZE kept the size (mount)")
            check_eq(os.stat(n.s("fa")).st_size, 65536, "KEEP_SIZE kept the size (store)")
            check(os.stat(n.s("fa")).st_blocks * 512 >= 1 << 20,
                  "KEEP_SIZE allocated blocks in the store")
            lfs.fallocate(fd, lfs.FALLOC_FL_PUNCH_HOLE | lfs.FALLOC_FL_KEEP_SIZE,
                          4096, 8192)
            lfs.fallocate(fd, lfs.FALLOC_FL_ZERO_RANGE, 32768, 4096)
            lfs.fallocate(fd, 0, 0, 131072)
        finally:
            os.close(fd)
        want = bytearray(data)
        want[4096:12288] = bytes(8192)
        want[32768:36864] = bytes(4096)
        want += bytes(131072 - 65536)
        check_eq(lfs.read_file(n.m("fa")), bytes(want), "content through the mount")
        check_eq(lfs.read_file(n.s("fa")), bytes(want), "content in the store")
        evs = n.events_since(mark)
        check_events(evs, [("fallocate", "fa")] * 4)
        n.unmount()
        lfs.check_rebuild_matches(n)


def test_chmod_chown_utimens():
    """chmod, chown and utimens (ns precision) change the mount and the store,
    and are journaled with mode / uid+gid."""
    with lfs.one_node() as n:
        lfs.write_file(n.m("m"), b"m")
        mark = n.last_seq()
        os.chmod(n.m("m"), 0o600)
        os.chown(n.m("m"), 1234, 5678)
        os.utime(n.m("m"), ns=(1_600_000_000_123_456_789, 1_500_000_000_987_654_321))
        for where in (n.m("m"), n.s("m")):
            st = os.stat(where)
            check_eq(stat.S_IMODE(st.st_mode), 0o600, f"mode of {where}")
            check_eq((st.st_uid, st.st_gid), (1234, 5678), f"owner of {where}")
            check_eq(st.st_mtime_ns, 1_500_000_000_987_654_321, f"mtime of {where}")
            check_eq(st.st_atime_ns, 1_600_000_000_123_456_789, f"atime of {where}")
        evs = n.events_since(mark)
        check_events(evs, [("chmod", "m"), ("chown", "m"), ("utimens", "m")],
                     keep_utimens=True)
        check_eq(int(str(evs[0].get("mode")), 8) & 0o7777, 0o600, "chmod event mode")
        check_eq((evs[1].get("uid"), evs[1].get("gid")), (1234, 5678), "chown event ids")
        n.unmount()
        lfs.check_rebuild_matches(n)


def test_user_xattrs():
    """setxattr/removexattr of user.* reach the store and the journal."""
    with lfs.one_node() as n:
        lfs.write_file(n.m("x"), b"x")
        mark = n.last_seq()
        os.setxattr(n.m("x"), "user.color", b"blue")
        os.setxattr(n.m("x"), "user.bin", bytes(range(256)))
        check_eq(os.getxattr(n.m("x"), "user.color"), b"blue", "xattr via mount")
        check_eq(os.getxattr(n.s("x"), "user.bin"), bytes(range(256)), "xattr in store")
        os.removexattr(n.m("x"), "user.color")
        expect_errno(errno.ENODATA, os.getxattr, n.m("x"), "user.color")
        expect_errno(errno.ENODATA, os.getxattr, n.s("x"), "user.color")
        expect_errno(errno.ENODATA, os.removexattr, n.m("x"), "user.color")
        evs = n.events_since(mark)
        check_events(evs, [("setxattr", "x"), ("setxattr", "x"), ("removexattr", "x")])
        check_eq([e.get("name") for e in evs if e["type"] in ("setxattr", "removexattr")],
                 ["user.color", "user.bin", "user.color"],
                 "xattr names in the journal")
        n.unmount()
        lfs.check_rebuild_matches(n)


# security.capability of a file allowed CAP_NET_BIND_SERVICE (VFS_CAP_REVISION_2).
CAPS = struct.pack("<IIIII", 0x02000000, 1 << 10, 0, 0, 0)


def test_file_capabilities_are_never_stale():
    """The kernel asks for security.capability before every write(2), and the
    mount remembers that a file has none: a capability set later must still be
    seen at once, and the next write by root must remove it, as on ext4."""
    with lfs.one_node() as n:
        lfs.write_file(n.m("tool"), b"#!/bin/sh\n")
        with open(n.m("tool"), "ab") as f:   # each write(2) asks for the capability
            f.write(b"true\n")
        expect_errno(errno.ENODATA, os.getxattr, n.m("tool"), "security.capability")
        os.setxattr(n.m("tool"), "security.capability", CAPS)
        check_eq(os.getxattr(n.m("tool"), "security.capability"), CAPS,
                 "capability through the mount right after it was set")
        check_eq(os.getxattr(n.s("tool"), "security.capability"), CAPS, "capability in store")
        with open(n.m("tool"), "ab") as f:
            f.write(b"exit 0\n")
        expect_errno(errno.ENODATA, os.getxattr, n.m("tool"), "security.capability")
        expect_errno(errno.ENODATA, os.getxattr, n.s("tool"), "security.capability")
        n.unmount()
        lfs.check_rebuild_matches(n)


def test_ledgerfs_metadata_is_hidden():
    """The store keeps trusted.ledgerfs.* xattrs; the mount never lists or
    returns them, and they cannot be set or removed through it."""
    with lfs.one_node() as n:
        lfs.write_file(n.m("h"), b"h")
        os.mkdir(n.m("hd"))
        for name in ("h", "hd"):
            stored = [x for x in os.listxattr(n.s(name)) if x.startswith("trusted.ledgerfs.")]
            check(stored, f"store file {name} carries trusted.ledgerfs.* xattrs")
            listed = os.listxattr(n.m(name))
            check(not [x for x in listed if x.startswith("trusted.ledgerfs")],
                  f"mount lists {listed} for {name}")
            expect_errno((errno.ENODATA, errno.EPERM, errno.EACCES, errno.EOPNOTSUPP),
                         os.getxattr, n.m(name), stored[0])
            expect_errno((errno.EPERM, errno.EACCES, errno.EOPNOTSUPP, errno.EINVAL),
                         os.setxattr, n.m(name), stored[0], b"forged")
            expect_errno((errno.ENODATA, errno.EPERM, errno.EACCES, errno.EOPNOTSUPP),
                         os.removexattr, n.m(name), stored[0])
        names = os.listdir(n.m())
        check_eq(sorted(names), ["h", "hd"], "mount root lists only user files")


def test_copy_file_range():
    """copy_file_range inside the mount copies the bytes (journaled as writes
    or its own event) and the store agrees."""
    with lfs.one_node() as n:
        data = os.urandom(300_000)
        lfs.write_file(n.m("src"), data)
        lfs.write_file(n.m("dst"), b"")
        mark = n.last_seq()
        fi = os.open(n.m("src"), os.O_RDONLY)
        fo = os.open(n.m("dst"), os.O_WRONLY)
        try:
            left, off = len(data), 0
            while left:
                k = os.copy_file_range(fi, fo, left, off, off)
                check(k > 0, "copy_file_range made progress")
                off += k
                left -= k
            os.fsync(fo)
        finally:
            os.close(fi)
            os.close(fo)
        check_eq(lfs.read_file(n.m("dst")), data, "copy through the mount")
        check_eq(lfs.read_file(n.s("dst")), data, "copy in the store")
        evs = [e for e in n.events_since(mark) if e["type"] != "utimens"]
        check(evs and all(lfs.rel(e.get("path")) == "dst" for e in evs),
              f"events name only dst: {evs}")
        n.unmount()
        lfs.check_rebuild_matches(n)


def test_fsync_makes_content_durable_in_store():
    """After write+fsync (no close) the store file already has the bytes."""
    with lfs.one_node() as n:
        fd = os.open(n.m("durable"), os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            os.write(fd, b"first")
            os.fsync(fd)
            check_eq(lfs.read_file(n.s("durable")), b"first", "store after fsync")
            os.pwrite(fd, b"SECOND", 5)
            os.fdatasync(fd)
            check_eq(lfs.read_file(n.s("durable")), b"firstSECOND", "store after fdatasync")
        finally:
            os.close(fd)


def test_unlinked_open_file_keeps_working():
    """A file unlinked while open stays readable and writable for its holder,
    vanishes from the mount listing (no .fuse_hidden files) and the store."""
    with lfs.one_node() as n:
        lfs.write_file(n.m("ghost"), b"boo")
        fd = os.open(n.m("ghost"), os.O_RDWR)
        try:
            os.unlink(n.m("ghost"))
            check_eq(os.listdir(n.m()), [], "mount listing after unlink")
            check(not os.path.lexists(n.s("ghost")), "name gone from the store")
            os.pwrite(fd, b"!!!", 3)
            check_eq(os.pread(fd, 100, 0), b"boo!!!", "read back via the open fd")
            os.fsync(fd)
            os.ftruncate(fd, 2)
            check_eq(os.fstat(fd).st_size, 2, "fstat via the open fd")
            check_eq(os.fstat(fd).st_nlink, 0, "link count of an unlinked file")
        finally:
            os.close(fd)
        check_eq(os.listdir(n.m()), [], "mount listing after close")
        visible = [x for x in os.listdir(n.s()) if not x.startswith(".ledgerfs")]
        check_eq(visible, [], "store listing after close")


def test_mmap_shared_write_persists():
    """MAP_SHARED writes + msync reach the store and survive a remount."""
    with lfs.one_node() as n:
        size = 256 * 1024
        lfs.write_file(n.m("mm"), bytes(size))
        mark = n.last_seq()
        with open(n.m("mm"), "r+b") as f:
            mm = mmap.mmap(f.fileno(), size, mmap.MAP_SHARED)
            pattern = os.urandom(4096)
            for off in range(0, size, 65536):
                mm[off:off + 4096] = pattern
            mm.flush()
            mm.close()
        want = bytearray(size)
        for off in range(0, size, 65536):
            want[off:off + 4096] = pattern
        check_eq(lfs.read_file(n.s("mm")), bytes(want), "store after msync")
        check(any(e["type"] == "write" for e in n.events_since(mark)),
              "mmap writes are journaled as write events")
        n.remount()
        check_eq(lfs.read_file(n.m("mm")), bytes(want), "content after remount")
        n.unmount()
        lfs.check_rebuild_matches(n)


def test_mount_and_store_digests_agree():
    """A mixed tree digests the same through the mount and in the store."""
    with lfs.one_node() as n:
        os.makedirs(n.m("p/q"))
        lfs.write_file(n.m("p/q/f"), b"data")
        os.symlink("q/f", n.m("p/l"))
        os.setxattr(n.m("p/q/f"), "user.k", b"v")
        os.chmod(n.m("p/q/f"), 0o640)
        lfs.check_same_tree(n.m(), n.s(), "mount vs store")
