"""Trees deeper than PATH_MAX (DESIGN section 3: paths are never rebuilt as
strings that a deep tree can push past PATH_MAX).

PATH_MAX limits a path handed to one system call, not the depth of a tree:
through relative calls a file can sit 9,000 bytes below the mount root.
Every operation on it must work on the primary, reach the replica, leave
both trees identical, and leave fsck.ledgerfs nothing to report.  The
absolute paths are too long for the kernel here too, so every call below
is made relative to a directory descriptor opened one level at a time.
"""

import errno
import os
import stat

import lfs
from cluster import Cluster
from lfs import check, check_eq, expect_errno
from test_resync import snapshot, start_behind_trim_point, trimming_pair

NAME_LEN = 200
DEPTH = 45  # 45 levels of 201 bytes: the deepest files sit about 9,000 bytes down
MTIME_NS = 1_600_000_000_987_654_321
ATIME_NS = 1_600_000_000_123_456_789


def level_name(i):
    return f"level{i:03d}-".ljust(NAME_LEN, "x")


RENAMED = "renamed-".ljust(NAME_LEN, "r")  # level 20, after the directory moves


def open_chain(root, names, make=False):
    """A directory descriptor of root/names[0]/names[1]/..., reached (and with
    make, made) one level at a time; the caller closes it."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for name in names:
            if make:
                os.mkdir(name, 0o755, dir_fd=fd)
            nfd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            os.close(fd)
            fd = nfd
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_at(d, name):
    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=d)
    try:
        out = b""
        while chunk := os.read(fd, 65536):
            out += chunk
        return out
    finally:
        os.close(fd)


def write_at(d, name, data, flags=os.O_CREAT | os.O_WRONLY | os.O_EXCL, mode=0o644):
    fd = os.open(name, flags, mode, dir_fd=d)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def exists_at(d, name):
    try:
        os.stat(name, dir_fd=d, follow_symlinks=False)
        return True
    except FileNotFoundError:
        return False


def operate(a, names):
    """Every kind of operation on files at the bottom of the tree, through
    a's mount; returns the final names of the levels."""
    root = os.open(a.mnt, os.O_RDONLY | os.O_DIRECTORY)
    d = open_chain(a.mnt, names)
    try:
        write_at(d, "f", b"hello from the deep end\n")
        os.chmod("f", 0o640, dir_fd=d)                       # setattr without a handle
        os.chown("f", 1234, 5678, dir_fd=d)
        fd = os.open("f", os.O_WRONLY, dir_fd=d)
        try:
            os.ftruncate(fd, 10)                             # setattr with a handle
        finally:
            os.close(fd)
        write_at(d, "t", b"to be cut away")
        os.close(os.open("t", os.O_WRONLY | os.O_TRUNC, dir_fd=d))
        os.link("f", "f-link", src_dir_fd=d, dst_dir_fd=d)
        os.rename("f", "f-moved", src_dir_fd=d, dst_dir_fd=d)
        fd = os.open("f-moved", os.O_RDONLY, dir_fd=d)
        try:
            os.setxattr(fd, "user.depth", b"deep")
            os.setxattr(fd, "user.doomed", b"x")
            os.removexattr(fd, "user.doomed")
        finally:
            os.close(fd)
        os.utime("f-moved", ns=(ATIME_NS, MTIME_NS), dir_fd=d)
        os.symlink("f-moved", "sym", dir_fd=d)
        os.chown("sym", 4321, 8765, dir_fd=d, follow_symlinks=False)
        os.mkdir("gone", dir_fd=d)
        os.rmdir("gone", dir_fd=d)
        write_at(d, "victim", b"short-lived")
        os.unlink("victim", dir_fd=d)
        # Up to the mount root and back down, changed on the way.
        os.rename("f-link", "up-link", src_dir_fd=d, dst_dir_fd=root)
        os.chmod("up-link", 0o644, dir_fd=root)
        os.chmod("up-link", 0o640, dir_fd=root)
        os.rename("up-link", "back-link", src_dir_fd=root, dst_dir_fd=d)
        # The name the mount remembers for h1 is h2, removed: it must find h1.
        fd = os.open("h1", os.O_CREAT | os.O_RDWR, 0o644, dir_fd=d)
        try:
            os.link("h1", "h2", src_dir_fd=d, dst_dir_fd=d)
            os.unlink("h2", dir_fd=d)
            os.fchmod(fd, 0o600)
            os.write(fd, b"written after the link went away\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        # A directory far above moves while a file below is open.
        fd = os.open("late", os.O_CREAT | os.O_WRONLY, 0o644, dir_fd=d)
        try:
            p = open_chain(a.mnt, names[:20])
            try:
                os.rename(names[20], RENAMED, src_dir_fd=p, dst_dir_fd=p)
            finally:
                os.close(p)
            os.write(fd, b"after the move\n")
            os.fchmod(fd, 0o604)
            os.fsync(fd)
        finally:
            os.close(fd)
    finally:
        os.close(d)
        os.close(root)
    return names[:20] + [RENAMED] + names[21:]


def check_tree(tree, names, what):
    """The bottom of the tree at `tree` holds what operate() left."""
    d = open_chain(tree, names)
    try:
        st = os.stat("f-moved", dir_fd=d, follow_symlinks=False)
        check_eq(read_at(d, "f-moved"), b"hello from", f"{what}: f-moved contents")
        check_eq(stat.S_IMODE(st.st_mode), 0o640, f"{what}: f-moved mode")
        check_eq((st.st_uid, st.st_gid), (1234, 5678), f"{what}: f-moved owner")
        check_eq(st.st_mtime_ns, MTIME_NS, f"{what}: f-moved mtime")
        check_eq(st.st_nlink, 2, f"{what}: f-moved link count")
        check_eq(os.stat("back-link", dir_fd=d).st_ino, st.st_ino,
                 f"{what}: back-link is f-moved's inode")
        check_eq(os.getxattr(f"/proc/self/fd/{d}/f-moved", "user.depth"), b"deep",
                 f"{what}: f-moved xattr")
        check("user.doomed" not in os.listxattr(f"/proc/self/fd/{d}/f-moved"),
              f"{what}: removed xattr gone")
        check_eq(read_at(d, "t"), b"", f"{what}: t after O_TRUNC")
        check_eq(os.readlink("sym", dir_fd=d), "f-moved", f"{what}: symlink target")
        st = os.stat("sym", dir_fd=d, follow_symlinks=False)
        check_eq((st.st_uid, st.st_gid), (4321, 8765), f"{what}: symlink owner")
        check_eq(read_at(d, "h1"), b"written after the link went away\n", f"{what}: h1")
        check_eq(stat.S_IMODE(os.stat("h1", dir_fd=d).st_mode), 0o600, f"{what}: h1 mode")
        check_eq(read_at(d, "late"), b"after the move\n", f"{what}: late")
        check_eq(stat.S_IMODE(os.stat("late", dir_fd=d).st_mode), 0o604, f"{what}: late mode")
        for gone in ("f", "f-link", "gone", "victim", "h2"):
            check(not exists_at(d, gone), f"{what}: {gone} still there")
        check_eq(sorted(os.listdir(d)),
                 ["back-link", "f-moved", "h1", "late", "sym", "t"], f"{what}: entries")
    finally:
        os.close(d)


def test_deep_tree_operations_replicate():
    """Create, write, chmod, chown, truncate, link, rename, xattrs, utimens,
    symlink, mkdir/rmdir and unlink 9,000 bytes below the mount root of a
    primary: right on its mount and store, the same on the replica, events
    that name the deep paths, and fsck -n clean on both nodes."""
    with lfs.Workdir() as wd:
        cl = Cluster(wd, ["a", "b"])
        a, b = cl["a"], cl["b"]
        names = [level_name(i) for i in range(DEPTH)]
        deep = "/".join(names)
        check(len(deep) > 8000, f"the tree is only {len(deep)} bytes deep")
        os.close(open_chain(a.mnt, names, make=True))
        final = operate(a, names)

        check_tree(a.mnt, final, "primary mount")
        check_tree(a.store, final, "primary store")
        evs = a.events()
        paths = {(e["type"], e.get("path")) for e in evs}
        for want in [("create", deep + "/f"), ("chmod", deep + "/f"), ("chown", deep + "/f"),
                     ("truncate", deep + "/f"), ("link", deep + "/f"),
                     ("setxattr", deep + "/f-moved"), ("symlink", deep + "/sym"),
                     ("rmdir", deep + "/gone"), ("unlink", deep + "/victim"),
                     ("chmod", deep + "/h1"), ("chmod", "/".join(final) + "/late")]:
            check(want in paths, f"no {want[0]} event for the deep path "
                                 f"...{want[1][-60:]}")
        cl.wait_in_sync()
        check_tree(b.mnt, final, "replica mount")
        check_tree(b.store, final, "replica store")
        lfs.check_same_tree(a.store, b.store, "primary vs replica store")

        cl.stop("b")
        cl.stop("a")
        for n in (a, b):
            cp = lfs.fsck(n, "-n")
            check_eq(cp.returncode, 0, f"fsck -n of {n.name} (stdout: {cp.stdout[-2000:]} "
                                       f"stderr: {cp.stderr[-2000:]})")


def test_replica_behind_the_trim_point_resyncs_a_deep_tree():
    """A snapshot resync carries a tree deeper than PATH_MAX: a replica that
    comes back behind the primary's trim point ends with the same tree,
    hard link included, and fsck -n clean."""
    with lfs.Workdir() as wd:
        cl = trimming_pair(wd)
        a, b = cl["a"], cl["b"]
        names = [level_name(i) for i in range(DEPTH)]
        os.close(open_chain(a.mnt, names[:10], make=True))

        def writes():
            p = open_chain(a.mnt, names[:10])
            try:
                os.close(open_chain(f"/proc/self/fd/{p}", names[10:], make=True))
            finally:
                os.close(p)
            d = open_chain(a.mnt, names)
            try:
                write_at(d, "f", b"resynced from the deep end\n")
                os.link("f", "g", src_dir_fd=d, dst_dir_fd=d)
                os.symlink("f", "s", dir_fd=d)
                fd = os.open("f", os.O_RDONLY, dir_fd=d)
                try:
                    os.setxattr(fd, "user.depth", b"deep")
                finally:
                    os.close(fd)
            finally:
                os.close(d)
        start_behind_trim_point(cl, writes)
        cl.wait_in_sync()
        snap = snapshot(cl, "b")
        check(snap["done"], f"b resynced by snapshot: {snap}")
        d = open_chain(b.mnt, names)
        try:
            check_eq(read_at(d, "g"), b"resynced from the deep end\n", "g on b")
            check_eq(os.stat("g", dir_fd=d).st_ino, os.stat("f", dir_fd=d).st_ino,
                     "f and g one inode on b")
            check_eq(os.readlink("s", dir_fd=d), "f", "symlink on b")
            check_eq(os.getxattr(f"/proc/self/fd/{d}/f", "user.depth"), b"deep", "xattr on b")
        finally:
            os.close(d)
        cl.stop("b")
        cp = lfs.fsck(b, "-n")
        check_eq(cp.returncode, 0, f"fsck -n of b after the resync: {cp.stdout}{cp.stderr}")


def test_deep_tree_below_a_deep_store_root():
    """Where the store lives does not matter: with its root 3,000 bytes below
    / (the node directory's store/ is a symlink to it), /proc cannot tell
    any path from the fifth level down, and a deep tree still works,
    survives a remount, and rebuilds from the journal into the same tree."""
    with lfs.Workdir() as wd:
        real = wd.path
        for i in range(15):
            real = real / f"storedir{i:02d}-".ljust(NAME_LEN, "s")
        real.parent.mkdir(parents=True)
        n = lfs.Node(wd.path, "a")
        n.init()
        os.rename(n.store, real)
        n.store.symlink_to(real)
        n.mount()
        names = [level_name(i) for i in range(8)]
        d = open_chain(n.mnt, names, make=True)
        try:
            write_at(d, "f", b"deep below a deep node\n")
            os.chmod("f", 0o600, dir_fd=d)
            os.link("f", "g", src_dir_fd=d, dst_dir_fd=d)
            os.rename("f", "h", src_dir_fd=d, dst_dir_fd=d)
            fd = os.open("h", os.O_WRONLY | os.O_APPEND, dir_fd=d)
            try:
                os.write(fd, b"appended\n")
            finally:
                os.close(fd)
        finally:
            os.close(d)
        check(len(str(real)) + len("/".join(names)) > 4096,
              "the store's absolute paths are past PATH_MAX")
        n.remount()
        d = open_chain(n.mnt, names)
        try:
            check_eq(read_at(d, "g"), b"deep below a deep node\nappended\n", "after remount")
            check_eq(stat.S_IMODE(os.stat("h", dir_fd=d).st_mode), 0o600, "mode after remount")
            os.unlink("g", dir_fd=d)
        finally:
            os.close(d)
        n.unmount()
        lfs.check_rebuild_matches(n)
        cp = lfs.fsck(n, "-n")
        check_eq(cp.returncode, 0, f"fsck -n (stdout: {cp.stdout[-2000:]})")


def test_path_past_the_hard_bound_is_refused_cleanly():
    """Down to 65,535 bytes below the mount root everything works; a name
    whose path would pass that is refused with ENAMETOOLONG, and the node
    keeps serving."""
    with lfs.one_node() as n:
        name = "q" * 250
        depth = 261                   # the deepest directory: 261 * 251 - 1 = 65,510 bytes
        d = open_chain(n.mnt, [name] * depth, make=True)
        try:
            expect_errno(errno.ENAMETOOLONG, os.mkdir, name, dir_fd=d)
            expect_errno(errno.ENAMETOOLONG, write_at, d, "z" * 25, b"no")
            os.mkdir("z" * 24, dir_fd=d)  # exactly 65,535 bytes
            write_at(d, "last", b"near the bound")
            check_eq(read_at(d, "last"), b"near the bound", "file near the bound")
            expect_errno(errno.ENAMETOOLONG, os.rename, "last", "y" * 25,
                         src_dir_fd=d, dst_dir_fd=d)
        finally:
            os.close(d)
        check(n.alive(), "daemon still running")
        lfs.write_file(n.m("after"), b"still serving")
        n.unmount()
        lfs.check_rebuild_matches(n)
