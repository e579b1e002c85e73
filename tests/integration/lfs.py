"""Harness for the ledgerfs integration tests: real nodes, real mounts.

A test makes a `Workdir`, creates `Node`s in it, mounts them with
`ledgerfs -f` as child processes and checks what it did through the mount,
in the node's store and in `ledgerctl log --json`.

Everything started here is stopped again, whatever happens: every mount is
recorded and lazily unmounted by `cleanup()`, which runs from `atexit`, from
the SIGTERM/SIGINT/SIGHUP handlers and from `Workdir.__exit__`.  Every wait
is a poll with a deadline; no test sleeps a fixed time hoping for the best.

The binaries come from $LEDGERFS_BUILD (default: <repo>/build), so the
same tests run against the plain and the sanitizer builds.
"""

import atexit
import contextlib
import ctypes
import ctypes.util
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BUILD = Path(os.environ.get("LEDGERFS_BUILD", REPO / "build")).resolve()
LEDGERFS = BUILD / "ledgerfs"
LEDGERCTL = BUILD / "ledgerctl"
FSCK = BUILD / "fsck.ledgerfs"

MOUNT_TIMEOUT = float(os.environ.get("LFS_MOUNT_TIMEOUT", "30"))
CMD_TIMEOUT = float(os.environ.get("LFS_CMD_TIMEOUT", "120"))

_mounts = []      # mountpoints (str) this process mounted, in mount order
_children = []    # Popen objects of daemons this process started
_workdirs = []    # Workdir objects not yet removed
_cleanup_hooks = []  # callables cleanup() runs first (see on_cleanup())


class Failure(AssertionError):
    """A test expectation that did not hold; the message says which."""


def check(cond, message):
    """Raise Failure(message) unless cond is true."""
    if not cond:
        raise Failure(message)


def check_eq(got, want, what):
    """Raise Failure naming `what` unless got == want."""
    if got != want:
        raise Failure(f"{what}: got {got!r}, want {want!r}")


def expect_errno(want, func, *args, **kwargs):
    """Call func and require that it fails with OSError errno `want`.

    `want` is one errno or a tuple of acceptable ones.  Returns the error.
    """
    wants = want if isinstance(want, tuple) else (want,)
    names = "/".join(errno.errorcode.get(w, str(w)) for w in wants)
    try:
        func(*args, **kwargs)
    except OSError as e:
        if e.errno not in wants:
            raise Failure(f"{getattr(func, '__name__', func)}: expected {names}, "
                          f"got {errno.errorcode.get(e.errno, e.errno)} ({e})")
        return e
    raise Failure(f"{getattr(func, '__name__', func)}: expected {names}, it succeeded")


# ---------------------------------------------------------------- processes

def excerpt(text, size=2000):
    """The part of a command's output worth showing: a sanitizer report from
    its first line (where the stack is), else the tail."""
    for marker in ("==ERROR: ", "runtime error: ", "ERROR SUMMARY"):
        i = text.find(marker)
        if i >= 0:
            start = text.rfind("\n", 0, i) + 1
            return text[start:start + 2 * size]
    return text[-size:]


def run(argv, timeout=CMD_TIMEOUT, check=True, cwd=None, env=None, input=None):
    """Run argv, capture its output as text, and return the CompletedProcess.

    With check=True a non-zero exit raises Failure with the command's output.
    A command that outlives `timeout` is killed and raises Failure.
    """
    argv = [str(a) for a in argv]
    try:
        cp = subprocess.run(argv, cwd=cwd, env=env, input=input, timeout=timeout,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=None if input is not None else subprocess.DEVNULL,
                            text=True, errors="replace")
    except subprocess.TimeoutExpired:
        raise Failure(f"timed out after {timeout}s: {' '.join(argv)}")
    if check and cp.returncode != 0:
        raise Failure(f"exit {cp.returncode}: {' '.join(argv)}\n"
                      f"stdout: {excerpt(cp.stdout)}\nstderr: {excerpt(cp.stderr)}")
    return cp


def ctl(*args, **kwargs):
    """Run `ledgerctl ARGS...` (see run())."""
    return run([LEDGERCTL, *args], **kwargs)


def wait_until(pred, timeout, what, interval=0.01):
    """Poll pred() until it returns a true value, which is returned.

    Raises Failure naming `what` after `timeout` seconds.  The poll interval
    grows from `interval` to at most 0.2 s.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise Failure(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)
        interval = min(interval * 2, 0.2)


# ------------------------------------------------------------------ mounts

def _unescape_mount_field(field):
    """Decode the octal escapes (\\040 etc.) used in /proc/*/mounts."""
    out, i = bytearray(), 0
    raw = field.encode("utf-8", "surrogateescape")
    while i < len(raw):
        if raw[i:i + 1] == b"\\" and raw[i + 1:i + 4].isdigit():
            out.append(int(raw[i + 1:i + 4], 8))
            i += 4
        else:
            out.append(raw[i])
            i += 1
    return out.decode("utf-8", "surrogateescape")


def mount_table():
    """Return [(mountpoint, fstype, major:minor)] from /proc/self/mountinfo."""
    rows = []
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fields = left.split()
            rows.append((_unescape_mount_field(fields[4]), right.split()[0], fields[2]))
    return rows


def is_mounted(path, fstype_prefix=None):
    """True if `path` is a mountpoint (optionally of a given fs type prefix)."""
    path = os.path.realpath(path)
    return any(mp == path and (fstype_prefix is None or fs.startswith(fstype_prefix))
               for mp, fs, _ in mount_table())


def abort_fuse(path):
    """Abort the FUSE connection behind mountpoint `path` so nothing blocks on it."""
    path = os.path.realpath(path)
    for mp, fs, dev in mount_table():
        if mp == path and fs.startswith("fuse"):
            conn = f"/sys/fs/fuse/connections/{dev.split(':')[1]}/abort"
            try:
                with open(conn, "w") as f:
                    f.write("1")
            except OSError:
                pass


def force_unmount(path):
    """Unmount `path` by every means available, lazily if need be; never raises."""
    for argv in (["fusermount3", "-u", path], ["fusermount3", "-uz", path],
                 ["umount", path], ["umount", "-l", path]):
        if not is_mounted(path):
            return
        subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       stdin=subprocess.DEVNULL, timeout=30, check=False)
    if is_mounted(path):
        abort_fuse(path)
        subprocess.run(["umount", "-l", path], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=30, check=False)


def unmount_all_under(base):
    """Unmount every mount at or below `base`, deepest first (used by the runner)."""
    base = os.path.realpath(base)
    below = [mp for mp, _, _ in mount_table()
             if mp == base or mp.startswith(base + "/")]
    for mp in sorted(set(below), key=len, reverse=True):
        abort_fuse(mp)
        force_unmount(mp)


def on_cleanup(func):
    """Have cleanup() call func() before it unmounts anything, e.g. to resume
    a daemon stopped with SIGSTOP, which an unmount could wait on.  Errors
    from func are ignored: cleanup must go on."""
    _cleanup_hooks.append(func)


def cleanup():
    """Unmount what this process mounted, stop its daemons, remove its dirs."""
    for hook in list(_cleanup_hooks):
        try:
            hook()
        except Exception:   # cleanup must go on whatever one step does
            pass
    for node in _nodes:   # logs may live on a tmpfs about to go away
        node.saved_tail = node.log_tail(200)
    for mp in reversed(_mounts):
        try:
            force_unmount(mp)
        except Exception:   # cleanup must go on whatever one step does
            pass
    _mounts.clear()
    for proc in _children:
        if proc.poll() is None:
            proc.kill()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
    _children.clear()
    for wd in list(_workdirs):
        wd.remove()


def _on_signal(signum, _frame):
    cleanup()
    os._exit(128 + signum)


atexit.register(cleanup)
for _sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
    signal.signal(_sig, _on_signal)


def mount_tmpfs(path, size="16m"):
    """Mount a tmpfs of `size` at `path`; it is unmounted by cleanup()."""
    os.makedirs(path, exist_ok=True)
    run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", path])
    _mounts.append(os.path.realpath(path))


# ---------------------------------------------------------------- workdirs

class Workdir:
    """A temporary directory for one test, removed (after unmounting) at the end.

    The base is $LFS_TMP if set (the runner gives each test its own), else /tmp.
    The directory is mode 0755 so other uids can reach mounts inside it.
    """

    def __init__(self, prefix="lfs-"):
        base = os.environ.get("LFS_TMP") or tempfile.gettempdir()
        self.path = Path(tempfile.mkdtemp(prefix=prefix, dir=base))
        os.chmod(self.path, 0o755)
        _workdirs.append(self)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        cleanup()
        return False

    def __truediv__(self, other):
        return self.path / other

    def node(self, name="a", init=True, mount=True, opts=None):
        """Create a Node named `name` here, optionally init'd and mounted."""
        n = Node(self.path, name)
        if init:
            n.init()
        if mount:
            n.mount(opts=opts)
        return n

    def remove(self):
        """Unmount anything left below the directory, then delete it."""
        unmount_all_under(self.path)
        shutil.rmtree(self.path, ignore_errors=True)
        if self in _workdirs:
            _workdirs.remove(self)


# ------------------------------------------------------------------- nodes

_nodes = []   # every Node made in this process, for log tails on failure


class Node:
    """One ledgerfs node: NODE_DIR at root/name, mountpoint at root/name-mnt."""

    def __init__(self, root, name="a"):
        self.name = name
        self.dir = Path(root) / name
        self.mnt = Path(root) / f"{name}-mnt"
        self.logfile = Path(root) / f"{name}.log"
        self.proc = None
        self.opts = None
        self.saved_tail = "(no log)"
        _nodes.append(self)

    @property
    def store(self):
        """The backing directory: the mount's files are exactly the files here."""
        return self.dir / "store"

    @property
    def journal(self):
        return self.dir / "journal"

    def init(self):
        """`ledgerctl init NODE_DIR --name NAME`."""
        ctl("init", self.dir, "--name", self.name)
        return self

    def mount(self, opts=None, timeout=MOUNT_TIMEOUT):
        """Start `ledgerfs NODE_DIR MNT -f [-o opts]` and wait until it is mounted."""
        self.mnt.mkdir(exist_ok=True)
        self.opts = opts
        argv = [str(LEDGERFS), str(self.dir), str(self.mnt), "-f"]
        if opts:
            argv += ["-o", opts]
        log = open(self.logfile, "ab")
        log.write(f"\n=== {' '.join(argv)}\n".encode())
        log.flush()
        self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
        log.close()
        _children.append(self.proc)
        mp = os.path.realpath(self.mnt)
        _mounts.append(mp)

        def ready():
            if self.proc.poll() is not None:
                raise Failure(f"ledgerfs exited with {self.proc.returncode} before "
                              f"mounting; log:\n{self.log_tail()}")
            return is_mounted(mp, "fuse")
        wait_until(ready, timeout, f"{self.mnt} to be mounted")
        return self

    def alive(self):
        """True while the daemon process runs."""
        return self.proc is not None and self.proc.poll() is None

    def unmount(self, timeout=MOUNT_TIMEOUT):
        """`fusermount3 -u`, then wait for the daemon to exit; require exit 0."""
        mp = os.path.realpath(self.mnt)
        wait_until(lambda: run(["fusermount3", "-u", mp], check=False).returncode == 0
                   or not is_mounted(mp), timeout, f"fusermount3 -u {mp} to succeed")
        if self.proc is not None:
            try:
                rc = self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                raise Failure(f"ledgerfs did not exit within {timeout}s of unmount")
            self.proc = None
            check(rc == 0, f"ledgerfs exited with {rc} after unmount; log:\n"
                           f"{self.log_tail()}")
        if mp in _mounts:
            _mounts.remove(mp)

    def kill9(self):
        """SIGKILL the daemon and clean up the dead mount lazily."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=30)
            self.proc = None
        force_unmount(os.path.realpath(self.mnt))

    def remount(self, opts=None):
        """Unmount cleanly, then mount again with the same (or new) options."""
        self.unmount()
        return self.mount(opts=opts if opts is not None else self.opts)

    def m(self, rel=""):
        """Path of `rel` inside the mount."""
        return self.mnt / rel if rel else self.mnt

    def s(self, rel=""):
        """Path of `rel` inside the store."""
        return self.store / rel if rel else self.store

    def events(self, *args):
        """Parse `ledgerctl log NODE_DIR --json [args]` into a list of dicts.

        If ledgerctl cannot read the journal of the mounted node (it is
        locked by the daemon), the node is unmounted for the read and mounted
        again; test_log_readable_while_mounted reports that limitation.
        """
        cp = ctl("log", self.dir, "--json", *args, check=False)
        if cp.returncode != 0 and self.alive() and "in use" in cp.stderr:
            opts = self.opts
            self.unmount()
            try:
                cp = ctl("log", self.dir, "--json", *args, check=False)
            finally:
                self.mount(opts=opts)
        if cp.returncode != 0:
            raise Failure(f"ledgerctl log {self.dir} --json {' '.join(args)}: exit "
                          f"{cp.returncode}: {excerpt(cp.stderr)}")
        out = cp.stdout
        events = []
        for i, line in enumerate(out.splitlines()):
            if not line.strip():
                continue
            try:
                events.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise Failure(f"ledgerctl log --json line {i + 1} is not JSON ({e}): "
                              f"{line[:300]!r}")
        return events

    def last_seq(self):
        """The highest seq in the journal (0 if empty)."""
        evs = self.events()
        return max((e["seq"] for e in evs), default=0)

    def events_since(self, seq):
        """Events with seq > `seq`, in journal order."""
        return [e for e in self.events() if e["seq"] > seq]

    def log_tail(self, lines=40):
        """The last lines of the daemon's log file, or its first sanitizer
        report (with the stack) if it has one."""
        try:
            data = self.logfile.read_text(errors="replace").splitlines()
        except OSError:
            return "\n".join(self.saved_tail.splitlines()[-lines:])
        for i, line in enumerate(data):
            if "==ERROR: " in line or "runtime error: " in line:
                return "\n".join(data[i:i + 60])
        return "\n".join(data[-lines:])


def all_log_tails(lines=40):
    """Log tails of every node made in this process, for failure reports."""
    return "\n".join(f"--- node {n.name} ({n.logfile}):\n{n.log_tail(lines)}"
                     for n in _nodes)


# ---------------------------------------------------------------- journal

def rel(path):
    """Normalise an event path: relative to the store root, no leading '/'."""
    if path is None:
        return None
    return path.lstrip("/") or "."


def simplify(events, keep_utimens=False):
    """Reduce events to [(type, path)] for order checks.

    Consecutive writes to one path merge into one (the kernel's writeback
    cache may split or join them), utimens events the kernel sends on its
    own are dropped unless `keep_utimens`, and void events (a refused
    operation's placeholder, which never counts) are dropped.
    """
    out = []
    for e in events:
        t, p = e["type"], rel(e.get("path"))
        if t == "void" or (t == "utimens" and not keep_utimens):
            continue
        if t == "write" and out and out[-1] == ("write", p):
            continue
        out.append((t, p))
    return out


def check_events(events, want, keep_utimens=False):
    """Require simplify(events) == want (a list of (type, path))."""
    got = simplify(events, keep_utimens)
    if got != want:
        raise Failure(f"journal events: got {got}, want {want}\nraw: "
                      + "\n".join(json.dumps(e) for e in events[-20:]))


def written_bytes(events, path):
    """Sum of write lengths to `path` in `events`."""
    return sum(e.get("length", 0) for e in events
               if e["type"] == "write" and rel(e.get("path")) == path)


def digest(path, listing=False):
    """`ledgerctl digest PATH`: the hex digest (and the --list lines if asked)."""
    args = ["digest", path] + (["--list"] if listing else [])
    lines = ctl(*args).stdout.strip().splitlines()
    check(lines, f"ledgerctl digest {path} printed nothing")
    return (lines[-1].strip(), lines[:-1]) if listing else lines[-1].strip()


def check_same_tree(a, b, what):
    """Require equal digests of trees a and b, showing the --list diff if not."""
    da, la = digest(a, listing=True)
    db, lb = digest(b, listing=True)
    if da != db:
        only_a = sorted(set(la) - set(lb))[:15]
        only_b = sorted(set(lb) - set(la))[:15]
        raise Failure(f"{what}: digests differ\n only in {a}: {only_a}\n"
                      f" only in {b}: {only_b}")


def check_rebuild_matches(node):
    """Unmounted node: `ledgerctl rebuild` into an empty dir digests like the store."""
    out = node.dir.parent / f"{node.name}-rebuild-{time.monotonic_ns()}"
    ctl("rebuild", node.dir, out)
    check_same_tree(out, node.store, "rebuild from journal vs store")
    shutil.rmtree(out, ignore_errors=True)


def fsck(node, *args, timeout=CMD_TIMEOUT):
    """Run fsck.ledgerfs NODE_DIR ARGS; return the CompletedProcess (not checked)."""
    return run([FSCK, node.dir, *args], check=False, timeout=timeout)


# ---------------------------------------------------------------- syscalls

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int,
                            ctypes.c_char_p, ctypes.c_uint]
_libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]

AT_FDCWD = -100
RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2
FALLOC_FL_KEEP_SIZE = 0x01
FALLOC_FL_PUNCH_HOLE = 0x02
FALLOC_FL_ZERO_RANGE = 0x10


def _raise_errno(what):
    e = ctypes.get_errno()
    raise OSError(e, f"{what}: {os.strerror(e)}")


def renameat2(old, new, flags):
    """renameat2(2) with `flags`; raises OSError on failure."""
    if _libc.renameat2(AT_FDCWD, os.fsencode(old), AT_FDCWD, os.fsencode(new), flags):
        _raise_errno("renameat2")


def fallocate(fd, mode, offset, length):
    """fallocate(2) with `mode`; raises OSError on failure."""
    if _libc.fallocate(fd, mode, offset, length):
        _raise_errno("fallocate")


def as_user(uid, gid, func, *args):
    """Run func(*args) in a forked child with uid/gid set and no extra groups.

    Returns ("ok", value) or ("err", errno) or ("exc", text); the value must
    be JSON-serialisable.
    """
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)
            res = ["ok", func(*args)]
        except OSError as e:
            res = ["err", e.errno]
        except BaseException as e:   # report, never let the child run on
            res = ["exc", f"{type(e).__name__}: {e}"]
        os.write(w, json.dumps(res).encode())
        os._exit(0)
    os.close(w)
    data = b""
    while True:
        chunk = os.read(r, 65536)
        if not chunk:
            break
        data += chunk
    os.close(r)
    os.waitpid(pid, 0)
    kind, value = json.loads(data or b'["exc", "child died"]')
    return kind, value


def write_file(path, data, fsync=False, mode=0o644):
    """Create/replace `path` with `data` (bytes or str), optionally fsync'd."""
    if isinstance(data, str):
        data = data.encode()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]
        if fsync:
            os.fsync(fd)
    finally:
        os.close(fd)


def read_file(path):
    with open(path, "rb") as f:
        return f.read()


def binaries_present():
    """True if the three binaries exist in BUILD."""
    return all(p.exists() for p in (LEDGERFS, LEDGERCTL, FSCK))


def log(msg):
    """Progress line on stderr (shown by the runner on failure)."""
    print(msg, file=sys.stderr, flush=True)


@contextlib.contextmanager
def one_node(opts=None, name="a"):
    """A fresh Workdir with one initialised, mounted node; all cleaned up after."""
    with Workdir() as wd:
        yield wd.node(name, opts=opts)
