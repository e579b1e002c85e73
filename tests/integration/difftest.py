#!/usr/bin/env python3
"""Seeded random differential tester (DESIGN invariant 10).

The same random sequence of file operations runs on a directory of the
native filesystem and on the primary's mount of a ledgerfs cluster.  After
each batch:

  * every operation had the same outcome on both sides (errno of a refusal,
    bytes of a read);
  * the primary's tree equals the native one (names, types, modes, owners,
    sizes, contents, symlink targets, user xattrs, link counts);
  * every replica's `ledgerctl digest` equals the primary's (mtimes too)
    and no replica refused an event.

At the end every node is stopped and `fsck.ledgerfs -n` must be clean.  On a
failure the seed is printed and the sequence shrunk (delta debugging, each
trial on a fresh cluster) to a minimal one, printed as Python.

    difftest.py [--seed N] [--ops K] [--nodes N] [--batch B] [--no-shrink]

soak.py (tools/soak) runs the same operations for as long as asked, with
faults: kill -9, SIGSTOP, network cuts.

Operations: create (O_EXCL, O_TRUNC), mknod, mkdir, symlink, link, unlink,
rmdir, rename (plain, over a file, non-empty directories, NOREPLACE,
EXCHANGE), write (plain, O_APPEND, O_DIRECT, mmap, sparse), read, truncate,
fallocate (every mode), chmod and chown of files and directories (modes
without search or write permission too), utimens, set/remove xattr,
copy_file_range, deep chains of directories, and names with odd bytes; a
share of them runs as uid 1000 or 2000 through allow_other.
"""

import argparse
import errno
import hashlib
import json
import mmap
import os
import random
import signal
import stat
import sys
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import lfs                      # noqa: E402
from cluster import Cluster     # noqa: E402
from lfs import Failure         # noqa: E402

USERS = [(0, 0)] * 6 + [(1000, 1000), (2000, 2000)]
NAMES = ["a", "b", "c", "d", "e"]
ODD_NAMES = ["sp ace", "new\nline", "\u00e9t\u00e9", "-dash", "x" * 255, "*?[", "b\\s"]
XATTRS = ["user.k1", "user.k2"]
FALLOC_MODES = [0, 0x01, 0x01 | 0x02, 0x10, 0x10 | 0x01]   # KEEP_SIZE, PUNCH_HOLE, ZERO_RANGE (FUSE has no COLLAPSE or INSERT)
BLOCK = 4096


# ------------------------------------------------------------------ generator

class Gen:
    """Random operations over the names that exist in the reference tree."""

    def __init__(self, seed, deep=True):
        self.rng = random.Random(seed)
        self.deep = deep

    def _existing(self, root):
        dirs, files, alll = [""], [], []
        for cur, ds, fs in os.walk(root):
            rel = os.path.relpath(cur, root)
            rel = "" if rel == "." else rel
            for d in ds:
                p = os.path.join(rel, d)
                (dirs if not os.path.islink(os.path.join(root, p)) else files).append(p)
            files += [os.path.join(rel, f) for f in fs]
        alll = dirs[1:] + files
        return dirs, files, alll

    def _new_name(self, dirs):
        r = self.rng
        d = r.choice(dirs)
        if len(os.path.join(d, "x")) > 3000:
            d = ""
        name = r.choice(ODD_NAMES) if r.random() < 0.08 else r.choice(NAMES)
        return os.path.join(d, name)

    def _any(self, dirs, alll):
        r = self.rng
        if alll and r.random() < 0.85:
            return r.choice(alll)
        return self._new_name(dirs)

    def op(self, root):
        r = self.rng
        dirs, files, alll = self._existing(root)
        regular = [f for f in files if os.path.isfile(os.path.join(root, f))
                   and not os.path.islink(os.path.join(root, f))] or [self._new_name(dirs)]
        user = r.choice(USERS)
        k = r.random()
        kinds = [
            ("create", 8), ("mkdir", 6), ("write", 14), ("read", 3), ("unlink", 4),
            ("rmdir", 3), ("rename", 8), ("link", 3), ("symlink", 3), ("mknod", 1),
            ("truncate", 4), ("fallocate", 3), ("chmod", 6), ("chown", 4), ("utime", 3),
            ("setxattr", 3), ("removexattr", 2), ("copy", 3), ("deep", 1 if self.deep else 0),
        ]
        total = sum(w for _, w in kinds)
        pick = k * total
        for kind, w in kinds:
            if pick < w:
                break
            pick -= w
        o = {"op": kind, "uid": user[0], "gid": user[1]}
        if kind == "create":
            o.update(path=self._any(dirs, alll) if r.random() < 0.3 else self._new_name(dirs),
                     mode=r.choice([0o644, 0o600, 0o755, 0o444, 0o000, 0o2755]),
                     flags=r.choice(["", "excl", "trunc"]))
        elif kind == "mkdir":
            o.update(path=self._new_name(dirs), mode=r.choice([0o755, 0o700, 0o555, 0o1777, 0o000]))
        elif kind == "write":
            o.update(path=r.choice(regular),
                     how=r.choice(["plain"] * 4 + ["append", "direct", "mmap", "sparse"]),
                     off=r.choice([0, 1, 4095, 4096, 10000, 65536 * 3 + 7]),
                     len=r.choice([1, 100, 4096, 8192, 70000, 200000]), seed=r.randrange(1 << 30))
        elif kind == "read":
            o.update(path=r.choice(regular), off=r.choice([0, 100, 4096, 70000]),
                     len=r.choice([1, 5000, 300000]))
        elif kind == "unlink":
            o.update(path=self._any(dirs, files))
        elif kind == "rmdir":
            o.update(path=self._any(dirs, dirs[1:]))
        elif kind in ("rename", "link"):
            src = self._any(dirs, alll)
            dst = self._any(dirs, alll) if r.random() < 0.4 else self._new_name(dirs)
            o.update(src=src, dst=dst)
            if kind == "rename":
                o.update(flags=r.choice([0, 0, 0, 1, 2]))
        elif kind == "symlink":
            o.update(path=self._new_name(dirs),
                     target=r.choice(["a", "b/c", "e", "no/where", "/nonexistent-lfs/x", "x" * 300]))
        elif kind == "mknod":
            o.update(path=self._new_name(dirs), mode=r.choice([0o644, 0o600]))
        elif kind == "truncate":
            o.update(path=r.choice(regular), size=r.choice([0, 1, 4096, 5000, 1 << 20, 300000]))
        elif kind == "fallocate":
            o.update(path=r.choice(regular), mode=r.choice(FALLOC_MODES),
                     off=r.choice([0, 4096, 8192, 100]), len=r.choice([4096, 8192, 65536, 3]))
        elif kind == "chmod":
            o.update(path=self._any(dirs, alll),
                     mode=r.choice([0o755, 0o700, 0o644, 0o600, 0o000, 0o311, 0o555, 0o1777,
                                    0o2755, 0o4755, 0o222]))
        elif kind == "chown":
            o.update(path=self._any(dirs, alll), owner=r.choice([0, 1000, 2000, -1]),
                     group=r.choice([0, 1000, 2000, -1]),
                     nofollow=r.random() < 0.3)
        elif kind == "utime":
            o.update(path=self._any(dirs, alll),
                     times=r.choice([None, [1, 2], [1_600_000_000, 1_700_000_000]]))
        elif kind == "setxattr":
            o.update(path=self._any(dirs, alll), name=r.choice(XATTRS),
                     value=r.choice(["", "v", "w" * 3000]), flags=r.choice([0, 0, 1, 2]))
        elif kind == "removexattr":
            o.update(path=self._any(dirs, alll), name=r.choice(XATTRS))
        elif kind == "copy":
            o.update(src=r.choice(regular), dst=r.choice(regular),
                     src_off=r.choice([0, 10, 4096]), dst_off=r.choice([0, 7, 8192, 100000]),
                     len=r.choice([1, 4096, 50000]))
        elif kind == "deep":
            o.update(path=self._new_name(dirs), depth=r.choice([5, 20, 40]),
                     name_len=r.choice([30, 200]))
        return o


# ------------------------------------------------------------------ executor

def _data(seed, n):
    rnd = random.Random(seed)
    return rnd.randbytes(n)


def _do(root, o):
    """Run operation o under root (in this process); return a JSON-able result.

    The operation runs from root as the working directory with relative
    paths, so that a path's length limit is the same on the native tree and
    on a mount whatever the two roots' own paths are."""
    here = os.open(".", os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.chdir(root)
        return _do_here(o)
    finally:
        os.fchdir(here)
        os.close(here)


def _do_here(o):
    p = o.get("path") if "path" in o else None
    kind = o["op"]
    if kind == "create":
        flags = os.O_WRONLY | os.O_CREAT | {"": 0, "excl": os.O_EXCL, "trunc": os.O_TRUNC}[o["flags"]]
        os.close(os.open(p, flags | os.O_NONBLOCK, o["mode"]))
    elif kind == "mkdir":
        os.mkdir(p, o["mode"])
    elif kind == "write":
        data = _data(o["seed"], o["len"])
        how = o["how"]
        if how == "mmap":
            fd = os.open(p, os.O_RDWR | os.O_NONBLOCK)
            try:
                end = o["off"] + len(data)
                if os.fstat(fd).st_size < end:
                    os.ftruncate(fd, end)
                with mmap.mmap(fd, end) as mm:
                    mm[o["off"]:end] = data
                    mm.flush()
            finally:
                os.close(fd)
        elif how == "direct":
            off = o["off"] - o["off"] % BLOCK
            n = max(BLOCK, len(data) - len(data) % BLOCK)
            buf = mmap.mmap(-1, n)
            buf[:min(n, len(data))] = data[:n]
            fd = os.open(p, os.O_WRONLY | os.O_DIRECT | os.O_NONBLOCK)
            try:
                os.pwritev(fd, [buf], off)
            finally:
                os.close(fd)
                buf.close()
        else:
            flags = os.O_WRONLY | (os.O_APPEND if how == "append" else 0)
            fd = os.open(p, flags | os.O_NONBLOCK)
            try:
                off = o["off"] * (50 if how == "sparse" else 1)
                if how == "append":
                    os.write(fd, data)
                else:
                    os.pwrite(fd, data, off)
            finally:
                os.close(fd)
    elif kind == "read":
        fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK)
        try:
            return hashlib.sha256(os.pread(fd, o["len"], o["off"])).hexdigest()[:16]
        finally:
            os.close(fd)
    elif kind == "unlink":
        os.unlink(p)
    elif kind == "rmdir":
        os.rmdir(p)
    elif kind == "rename":
        src, dst = o["src"], o["dst"]
        if o["flags"]:
            lfs.renameat2(src, dst, o["flags"])
        else:
            os.rename(src, dst)
    elif kind == "link":
        os.link(o["src"], o["dst"], follow_symlinks=False)
    elif kind == "symlink":
        os.symlink(o["target"], p)
    elif kind == "mknod":
        os.mkfifo(p, o["mode"])
    elif kind == "truncate":
        os.truncate(p, o["size"])
    elif kind == "fallocate":
        fd = os.open(p, os.O_RDWR | os.O_NONBLOCK)
        try:
            lfs.fallocate(fd, o["mode"], o["off"], o["len"])
        finally:
            os.close(fd)
    elif kind == "chmod":
        os.chmod(p, o["mode"])
    elif kind == "chown":
        os.chown(p, o["owner"], o["group"], follow_symlinks=not o["nofollow"])
    elif kind == "utime":
        t = o["times"]
        os.utime(p, None if t is None else (t[0], t[1]), follow_symlinks=False)
    elif kind == "setxattr":
        os.setxattr(p, o["name"], o["value"].encode(), o["flags"], follow_symlinks=False)
    elif kind == "removexattr":
        os.removexattr(p, o["name"], follow_symlinks=False)
    elif kind == "copy":
        fi = os.open(o["src"], os.O_RDONLY | os.O_NONBLOCK)
        try:
            fo = os.open(o["dst"], os.O_WRONLY | os.O_NONBLOCK)
            try:
                return os.copy_file_range(fi, fo, o["len"], o["src_off"], o["dst_off"])
            finally:
                os.close(fo)
        finally:
            os.close(fi)
    elif kind == "deep":
        # A chain of directories made by relative calls, so that its depth
        # is not bounded by PATH_MAX; one file at the bottom.
        fd = os.open(os.path.dirname(p) or ".", os.O_RDONLY | os.O_DIRECTORY)
        try:
            name = os.path.basename(p)
            for i in range(o["depth"]):
                os.mkdir(name, 0o755, dir_fd=fd)
                nfd = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
                os.close(fd)
                fd = nfd
                name = ("d%d" % i).ljust(o["name_len"], "_")
            w = os.open("leaf", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
            os.write(w, b"deep\n")
            os.close(w)
        finally:
            os.close(fd)
    else:
        raise ValueError(f"unknown op {kind}")
    return None


OP_TIMEOUT = 30


def _hung(signum, frame):
    raise Mismatch(f"an operation hung for over {OP_TIMEOUT}s")


def run_op(root, o):
    """Outcome of o on root: ["ok", value] or ["err", errno name]; an
    operation that hangs (a deadlock in the mount) raises Mismatch."""
    old = signal.signal(signal.SIGALRM, _hung)
    signal.alarm(OP_TIMEOUT)
    try:
        return _run_op(root, o)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def _run_op(root, o):
    if o["uid"] == 0:
        try:
            return ["ok", _do(root, o)]
        except OSError as e:
            return ["err", errno.errorcode.get(e.errno, str(e.errno))]
    kind, value = lfs.as_user(o["uid"], o["gid"], _do, root, o)
    if kind == "err":
        return ["err", errno.errorcode.get(value, str(value))]
    if kind == "exc":
        raise Failure(f"op {o} raised in the child: {value}")
    return [kind, value]


# ------------------------------------------------------------------ comparison

def snapshot(root):
    """{rel: description} of every entry under root, walked with relative
    calls (deep trees); times left out (the native side has its own)."""
    out = {}
    inodes = {}

    def walk(dfd, rel):
        for name in sorted(os.listdir(dfd)):
            st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
            r = os.path.join(rel, name) if rel else name
            d = {"mode": oct(st.st_mode), "uid": st.st_uid, "gid": st.st_gid}
            if stat.S_ISREG(st.st_mode):
                fd = os.open(name, os.O_RDONLY, dir_fd=dfd)
                try:
                    h = hashlib.sha256()
                    while True:
                        b = os.read(fd, 1 << 20)
                        if not b:
                            break
                        h.update(b)
                    d["sha"] = h.hexdigest()[:16]
                    d["size"] = st.st_size
                    d["xattrs"] = _xattrs(f"/proc/self/fd/{fd}")
                finally:
                    os.close(fd)
                d["nlink"] = st.st_nlink
                inodes.setdefault(st.st_ino, []).append(r)
            elif stat.S_ISLNK(st.st_mode):
                d["target"] = os.readlink(name, dir_fd=dfd)
            elif stat.S_ISDIR(st.st_mode):
                d["nlink"] = st.st_nlink
                try:
                    sub = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=dfd)
                except OSError as e:
                    d["open"] = errno.errorcode.get(e.errno)
                else:
                    try:
                        d["xattrs"] = _xattrs(f"/proc/self/fd/{sub}")
                        walk(sub, r)
                    finally:
                        os.close(sub)
            else:
                d["nlink"] = st.st_nlink
            out[r] = d
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        walk(fd, "")
    finally:
        os.close(fd)
    # Hard-link identity: which names share an inode.
    for names in inodes.values():
        if len(names) > 1:
            for n in names:
                out[n]["links"] = sorted(names)
    return out


def _xattrs(path):
    try:
        names = sorted(x for x in os.listxattr(path) if x.startswith("user."))
        return {x: os.getxattr(path, x).hex()[:64] for x in names}
    except OSError as e:
        return errno.errorcode.get(e.errno)


def diff_snapshots(a, b, la, lb, limit=12):
    lines = []
    for k in sorted(set(a) | set(b)):
        if a.get(k) != b.get(k):
            lines.append(f"  {k!r}: {la}={a.get(k)} {lb}={b.get(k)}")
            if len(lines) >= limit:
                break
    return "\n".join(lines)


# ------------------------------------------------------------------ running

class Mismatch(Exception):
    """The cluster did not do what the native directory did."""


class Rig:
    """A native directory and a cluster (first node primary, allow_other;
    with hosts, each node on its own loopback address, see Cluster)."""

    def __init__(self, wd, nodes, tag, hosts=False):
        self.wd = wd
        self.names = [chr(ord("a") + i) for i in range(nodes)]
        os.chmod(wd.path, 0o755)
        self.native = wd.path / f"native-{tag}"
        os.mkdir(self.native)
        os.chmod(self.native, 0o755)
        sub = wd.path / f"c-{tag}"
        os.mkdir(sub)
        os.chmod(sub, 0o755)
        self.cl = Cluster(lfs_sub(wd, sub), self.names,
                          opts={n: "allow_other" for n in self.names}, hosts=hosts)
        self.mount = self.cl[self.names[0]].mnt
        os.chmod(self.mount, 0o755)

    def stop(self):
        for n in self.cl.names:
            if self.cl[n].alive():
                self.cl.stop(n)


class lfs_sub:
    """A Workdir-like view of a subdirectory (Cluster only needs .path)."""

    def __init__(self, wd, path):
        self.path = path

    def __truediv__(self, other):
        return self.path / other


def check_converged(rig, timeout):
    """Replicas equal the primary, no refusals; raises Mismatch."""
    deadline = time.monotonic() + timeout
    while True:
        for n in rig.names[1:]:
            log = rig.cl.log_text(n)
            for word in ("refused:", "diverged"):
                if word in log:
                    line = next(x for x in log.splitlines() if word in x)
                    raise Mismatch(f"replica {n} {word.rstrip(':')}: {line.strip()}")
        try:
            rig.cl.wait_in_sync(timeout=min(5, max(0.1, deadline - time.monotonic())))
            return
        except Failure as e:
            if time.monotonic() >= deadline:
                raise Mismatch(f"replicas did not converge in {timeout}s: {e}")


def check_native(rig):
    a, b = snapshot(rig.native), snapshot(rig.mount)
    if a != b:
        raise Mismatch("primary's tree differs from the native one:\n"
                       + diff_snapshots(a, b, "native", "ledgerfs"))


# Every TIMES_EVERY-th operation also compares which timestamps it moved.
TIMES_EVERY = 4
# ext4 stamps times from a coarse clock (a jiffy, up to 4 ms): an operation
# checked for moves starts after one has passed.
TICK = 0.005
NO_TIMES = ("read", "deep")
# FUSE's kernel client stamps a ctime after every successful setxattr, where
# ext4 leaves it alone when the value is the one the object has; and under
# the writeback cache a file's ctime after a data change is the kernel's own
# coarse stamp, which a write sometimes leaves where it was
# (docs/internals.md, "Where FUSE cannot match ext4").
CTIME_OWN = ("setxattr", "removexattr", "write", "truncate", "fallocate", "copy")
# TRUNCATE_SAME_SIZE: truncate(2) to the size a file has moves its mtime on
# ext4; under the writeback cache the kernel's FUSE client neither asks for
# that nor takes a server's mtime for the file, so the mount's stays put
# (docs/internals.md, "Where FUSE cannot match ext4").


def _size(root, rel):
    try:
        return os.lstat(os.path.join(root, rel)).st_size
    except OSError:
        return None


def _watched(o):
    """The objects an operation may stamp: its targets and their parents."""
    rels = []
    for key in ("path", "src", "dst"):
        if key in o:
            for r in (o[key], os.path.dirname(o[key])):
                if r not in rels:
                    rels.append(r)
    return rels


def _times(root, rels):
    out = {}
    for r in rels:
        try:
            st = os.lstat(os.path.join(root, r) if r else root)
            out[r] = (st.st_ino, st.st_mtime_ns, st.st_ctime_ns)
        except OSError:
            out[r] = None
    return out


def _moves(before, after):
    """{rel: "mc" letters of the times that moved} for each object that is
    at the same name before and after."""
    out = {}
    for r, b in before.items():
        a = after.get(r)
        if b and a and a[0] == b[0]:
            out[r] = ("m" if a[1] != b[1] else "") + ("c" if a[2] != b[2] else "")
    return out


def step(rig, o, idx):
    """Run operation idx on both sides: same outcome, and on every
    TIMES_EVERY-th one the same timestamps moved; raises Mismatch."""
    nat, mnt = str(rig.native), str(rig.mount)
    timed = idx % TIMES_EVERY == 0 and o["op"] not in NO_TIMES
    if timed:
        rels = _watched(o)
        time.sleep(TICK)
        tn, tm = _times(nat, rels), _times(mnt, rels)
        same_size = o["op"] == "truncate" and _size(nat, o["path"]) == o["size"]
    ra = run_op(nat, o)
    rb = run_op(mnt, o)
    if ra != rb:
        raise Mismatch(f"op {idx} {json.dumps(o)}: native gave {ra}, ledgerfs {rb}")
    if timed:
        mn, mm = _moves(tn, _times(nat, rels)), _moves(tm, _times(mnt, rels))
        if o["op"] in CTIME_OWN:
            mn = {k: v.replace("c", "") for k, v in mn.items()}
            mm = {k: v.replace("c", "") for k, v in mm.items()}
        if same_size:   # the kernel keeps its own mtime: see TRUNCATE_SAME_SIZE
            mn[o["path"]] = mm[o["path"]] = ""
        if mn != mm:
            raise Mismatch(f"op {idx} {json.dumps(o)}: timestamps moved natively {mn}, "
                           f"on ledgerfs {mm}")



def run_ops(rig, ops, batch, sync_timeout=30, start=0):
    """Run ops on both sides, checking after every batch; raises Mismatch
    with the index of the op (or batch end) where it showed."""
    for i, o in enumerate(ops):
        step(rig, o, start + i)
        if (i + 1) % batch == 0 or i + 1 == len(ops):
            check_native(rig)
            check_converged(rig, sync_timeout)


def final_fsck(rig):
    rig.stop()
    for n in rig.names:
        r = lfs.fsck(rig.cl[n], "-n")
        if r.returncode != 0:
            raise Mismatch(f"fsck.ledgerfs -n {n} exited {r.returncode}:\n"
                           f"{lfs.excerpt(r.stdout + r.stderr)}")


def trial(ops, nodes, batch, with_fsck=True):
    """Run ops on a fresh rig; None if all is well, else the Mismatch text."""
    with lfs.Workdir(prefix="lfs-diff-") as wd:
        rig = Rig(wd, nodes, "t")
        try:
            run_ops(rig, ops, batch)
            if with_fsck:
                final_fsck(rig)
        except Mismatch as e:
            return str(e)
        finally:
            try:
                rig.stop()
            except Failure:
                pass
    return None


def shrink(ops, nodes, first_error, budget_s=240, log=print):
    """Delta debugging: the smallest sublist of ops that still fails."""
    deadline = time.monotonic() + budget_s
    cur, n = list(ops), 2
    err = first_error
    trials = 0
    while len(cur) >= 2 and time.monotonic() < deadline:
        chunk = max(1, len(cur) // n)
        reduced = False
        for i in range(0, len(cur), chunk):
            cand = cur[:i] + cur[i + chunk:]
            if not cand or time.monotonic() >= deadline:
                continue
            trials += 1
            e = trial(cand, nodes, batch=len(cand))
            if e:
                cur, err, n, reduced = cand, e, max(n - 1, 2), True
                log(f"shrink: {len(cur)} ops still fail")
                break
        if not reduced:
            if chunk == 1:
                break
            n = min(len(cur), n * 2)
    return cur, err, trials


def as_python(ops):
    return "ops = [\n" + "".join(f"    {json.dumps(o)},\n" for o in ops) + "]"


def run_seed(seed, nops, nodes, batch, do_shrink=True, log=print, deep=True):
    """One seed end to end; raises Failure with the seed and a minimal case."""
    gen = Gen(seed, deep=deep)
    ops = []
    with lfs.Workdir(prefix="lfs-diff-") as wd:
        rig = Rig(wd, nodes, "s")
        err = None
        try:
            done = 0
            while done < nops:
                chunk = []
                for _ in range(min(batch, nops - done)):
                    o = gen.op(str(rig.native))
                    chunk.append(o)
                    ops.append(o)
                    step(rig, o, len(ops) - 1)
                done += len(chunk)
                check_native(rig)
                check_converged(rig, 30)
            final_fsck(rig)
        except Mismatch as e:
            err = str(e)
        finally:
            try:
                rig.stop()
            except Failure:
                pass
    if err is None:
        return len(ops)
    msg = f"seed {seed}: {err}"
    if do_shrink:
        log(f"seed {seed} failed after {len(ops)} ops; shrinking")
        small, serr, trials = shrink(ops, nodes, err, log=log)
        msg += (f"\nminimal case ({len(small)} ops, {trials} trials), failing with: {serr}\n"
                + as_python(small))
    raise Failure(msg)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, action="append", help="seed (repeatable)")
    ap.add_argument("--ops", type=int, default=300, help="operations per seed (300)")
    ap.add_argument("--nodes", type=int, default=3, help="cluster size (3)")
    ap.add_argument("--batch", type=int, default=50, help="ops between checks (50)")
    ap.add_argument("--no-shrink", action="store_true", help="report without shrinking")
    ap.add_argument("--replay", help="JSON file with a list of ops to run once")
    ap.add_argument("--no-deep", action="store_true", help="no chains past PATH_MAX")
    ap.add_argument("--times-every", type=int, default=TIMES_EVERY,
                    help=f"compare timestamp moves every Nth op ({TIMES_EVERY})")
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, lfs._on_signal)
    os.umask(0o022)
    globals()["TIMES_EVERY"] = max(1, args.times_every)
    try:
        if args.replay:
            ops = json.load(open(args.replay))
            e = trial(ops, args.nodes, args.batch)
            print(e or "replay: no mismatch")
            return 1 if e else 0
        seeds = args.seed or [int(time.time())]
        failed = 0
        for s in seeds:
            t = time.monotonic()
            try:
                n = run_seed(s, args.ops, args.nodes, args.batch, not args.no_shrink,
                             deep=not args.no_deep)
                print(f"seed {s}: {n} ops, converged, fsck clean ({time.monotonic() - t:.1f}s)")
            except Failure as e:
                failed += 1
                print(f"FAIL {e}")
        return 1 if failed else 0
    finally:
        lfs.cleanup()


if __name__ == "__main__":
    sys.exit(main())
