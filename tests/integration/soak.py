#!/usr/bin/env python3
"""The differential tester with faults, for as long as asked (tools/soak).

    soak.py [SECONDS] [--seed N] [--rounds R] [--batch B] [--faults K,K...]

Each seed (time-based unless given; printed) makes a three-node cluster whose
nodes listen on their own loopback addresses (Cluster hosts=True) and runs
difftest's random operations on a native directory and on the primary's mount
in rounds.  Each round injects one fault while a batch of operations runs,
heals it, and then checks:

  * every operation had the same outcome on both sides (as in difftest);
  * the replicas converge (equal digests, no refusal or divergence in any
    node's log) within CONVERGE_TIMEOUT; the time it took is logged;
  * the primary's tree equals the native one;
  * every file fsync'd on the primary and not changed since holds, on every
    node, the content it had when fsync(2) returned.

Faults (--faults picks among them; each round draws one):

  kill9-replica  kill -9 of a replica; the batch runs while it is down; restart
  kill9-primary  kill -9 of the primary at a random moment of the batch (an
                 operation may be in flight); restart
  pause          SIGSTOP of a random node for PAUSE_S seconds while operations
                 go on (on the primary they wait for SIGCONT)
  cut            a network cut between two random nodes for CUT_S seconds while
                 operations go on and both keep running: nftables rules on lo
                 drop their packets both ways (see NetCut)

The primary is killed without a sync, so the writes the kernel's writeback
cache held and had not sent it are lost, and the operation in flight may or
may not have happened: after the restart the native directory is no longer
the reference.  What must hold then: every fsync'd file is intact, and the
primary's tree differs from the native one only in file contents and sizes
(unsynced data) and around the operation in flight.  The native directory is
then rebuilt as a copy of the primary's tree and the seed goes on from there.

At the end of each seed every node is stopped and `fsck.ledgerfs -n` must be
clean.  The run log (per seed: operations, faults by kind, the time to
converge after each) goes to stdout, and a summary line at the end.  On the
first failure the soak stops with exit 1, printing the seed, the failure and
the operation log (the faults in it); with --save DIR the log, the operations
as JSON and every node's log are kept there.
"""

import argparse
import errno
import hashlib
import json
import os
import random
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import difftest                 # noqa: E402
import lfs                      # noqa: E402
from difftest import Mismatch   # noqa: E402
from lfs import Failure         # noqa: E402

FAULTS = ["kill9-replica", "kill9-primary", "pause", "cut"]
CONVERGE_TIMEOUT = 60
PAUSE_S = (2.0, 9.0)     # a pause lasts this long (uniform); past REPL_SILENT_MS a link is dead
CUT_S = (2.0, 12.0)
KILL_DELAY_S = (0.0, 1.5)
FSYNC_SHARE = 0.08       # of the operations: fsync a file and remember its content
MAX_BATCHES = 4          # a round runs at most this many batches while its fault lasts
CONTENT_OPS = ("create", "write", "truncate", "fallocate", "copy")


def _say_progress(text):
    """A progress line, overwritten by the next one: on a terminal only."""
    if sys.stderr.isatty():
        sys.stderr.write("\r\033[K" + text[:150])
        sys.stderr.flush()


def say(text):
    """A line of the run log, on stdout, after clearing any progress line."""
    _say_progress("")
    print(text, flush=True)


# ------------------------------------------------------------------ network cut

class NetCut:
    """Network cuts between nodes on loopback, with nftables.

    The nodes listen on (and dial from) their own addresses 127.0.0.X, so the
    packets of a pair are told apart by address; the rules also match the
    pair's listen ports, so other clusters on those addresses are untouched.
    The drop is at the input hook: the sender's packets leave and vanish, as
    on a real network, instead of failing at once (EPERM) as a drop at the
    output hook makes them.  The table is per process and always deleted by
    lfs.cleanup(), on failure and on SIGTERM too; tables of dead soaks are
    deleted at start."""

    PREFIX = "ledgerfs_soak_"

    def __init__(self):
        self.table = f"{self.PREFIX}{os.getpid()}"
        self.cuts = []       # [(name, name)] in force
        self._remove_stale()
        self._nft(f"add table inet {self.table}\n"
                  f"add chain inet {self.table} input "
                  "{ type filter hook input priority -10; policy accept; }\n")
        lfs.on_cleanup(self.close)

    @staticmethod
    def _nft(script):
        cp = subprocess.run(["nft", "-f", "-"], input=script, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)
        if cp.returncode != 0:
            raise Failure(f"nft -f - exited {cp.returncode}: {cp.stderr.strip()}\n"
                          f"script:\n{script}")
        return cp.stdout

    def _remove_stale(self):
        cp = subprocess.run(["nft", "-j", "list", "tables"], text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, timeout=30)
        if cp.returncode != 0:
            raise Failure(f"nft -j list tables exited {cp.returncode}: {cp.stderr.strip()}")
        for item in json.loads(cp.stdout or '{"nftables": []}').get("nftables", []):
            t = item.get("table")
            if not t or not t.get("name", "").startswith(self.PREFIX):
                continue
            try:
                pid = int(t["name"][len(self.PREFIX):])
            except ValueError:
                continue
            if pid != os.getpid() and not os.path.exists(f"/proc/{pid}"):
                self._nft(f"delete table {t['family']} {t['name']}\n")

    def cut(self, x, y):
        """Drop every packet between nodes x and y (ClusterNodes), both ways."""
        hosts = f"{{ {x.host}, {y.host} }}"
        ports = f"{{ {x.port}, {y.port} }}"
        rules = "".join(
            f"add rule inet {self.table} input iifname \"lo\" ip saddr {hosts} "
            f"ip daddr {hosts} tcp {d} {ports} counter drop\n" for d in ("dport", "sport"))
        self._nft(rules)
        self.cuts.append((x.name, y.name))

    def dropped(self):
        """Packets the cuts in force dropped so far."""
        cp = subprocess.run(["nft", "-j", "list", "chain", "inet", self.table, "input"],
                            text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            timeout=30)
        if cp.returncode != 0:
            raise Failure(f"nft -j list chain inet {self.table} input exited "
                          f"{cp.returncode}: {cp.stderr.strip()}")
        n = 0
        for item in json.loads(cp.stdout).get("nftables", []):
            for e in (item.get("rule") or {}).get("expr", []):
                n += (e.get("counter") or {}).get("packets", 0)
        return n

    def heal(self):
        """Remove every cut."""
        self._nft(f"flush chain inet {self.table} input\n")
        self.cuts = []

    def close(self):
        """Delete the table (safe to call twice)."""
        if self.table:
            subprocess.run(["nft", "delete", "table", "inet", self.table],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=30)
            self.table = None


# ------------------------------------------------------------------ helpers

def fsync_op(root, o):
    """Open o's path read-only and fsync it: ["ok", None] or ["err", name]."""
    try:
        fd = os.open(os.path.join(root, o["path"]), os.O_RDONLY | os.O_NONBLOCK)
    except OSError as e:
        return ["err", errno.errorcode.get(e.errno, str(e.errno))]
    res = ["ok", None]
    try:
        os.fsync(fd)
    except OSError as e:
        res = ["err", errno.errorcode.get(e.errno, str(e.errno))]
    # A mount whose daemon was just killed fails the close too (ENOTCONN):
    # that is the operation's outcome, not the soak's end.
    try:
        os.close(fd)
    except OSError as e:
        if res[0] == "ok":
            res = ["err", errno.errorcode.get(e.errno, str(e.errno))]
    return res


def file_sha(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(1 << 20)
            if not b:
                break
            h.update(b)
    return h.hexdigest()[:16]


def stat_key(path):
    """What changes when a file's content (or anything else about it) may have
    changed: inode, size, mtime, ctime; None if it is gone."""
    try:
        st = os.stat(path, follow_symlinks=False)
    except OSError:
        return None
    if not stat.S_ISREG(st.st_mode):
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def clone_tree(src, dst):
    """Copy the tree under src into the empty directory dst: names, types,
    contents, modes, owners, user xattrs, symlink targets and hard links, with
    relative calls (trees deeper than PATH_MAX)."""
    linked = {}   # src inode -> fd of its first copy, for the other names

    def xattrs(sfd, dfd):
        for x in os.listxattr(sfd):
            if x.startswith("user."):
                os.setxattr(dfd, x, os.getxattr(sfd, x))

    def walk(sdir, ddir):
        for name in sorted(os.listdir(sdir)):
            st = os.stat(name, dir_fd=sdir, follow_symlinks=False)
            m = st.st_mode
            if stat.S_ISDIR(m):
                os.mkdir(name, 0o700, dir_fd=ddir)
                s = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=sdir)
                try:
                    d = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=ddir)
                    try:
                        walk(s, d)
                        xattrs(s, d)
                        os.fchown(d, st.st_uid, st.st_gid)
                        os.fchmod(d, stat.S_IMODE(m))
                    finally:
                        os.close(d)
                finally:
                    os.close(s)
            elif stat.S_ISLNK(m):
                os.symlink(os.readlink(name, dir_fd=sdir), name, dir_fd=ddir)
                os.chown(name, st.st_uid, st.st_gid, dir_fd=ddir, follow_symlinks=False)
            elif stat.S_ISREG(m):
                if st.st_ino in linked:
                    os.link(f"/proc/self/fd/{linked[st.st_ino]}", name, dst_dir_fd=ddir,
                            follow_symlinks=True)
                    continue
                s = os.open(name, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=sdir)
                try:
                    d = os.open(name, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600, dir_fd=ddir)
                    off = 0
                    while True:
                        b = os.pread(s, 1 << 20, off)
                        if not b:
                            break
                        os.pwrite(d, b, off)
                        off += len(b)
                    os.ftruncate(d, st.st_size)
                    xattrs(s, d)
                    os.fchown(d, st.st_uid, st.st_gid)
                    os.fchmod(d, stat.S_IMODE(m))
                    if st.st_nlink > 1:
                        linked[st.st_ino] = d
                    else:
                        os.close(d)
                finally:
                    os.close(s)
            elif stat.S_ISFIFO(m):
                if st.st_ino in linked:
                    os.link(f"/proc/self/fd/{linked[st.st_ino]}", name, dst_dir_fd=ddir,
                            follow_symlinks=True)
                    continue
                os.mkfifo(name, 0o600, dir_fd=ddir)
                os.chown(name, st.st_uid, st.st_gid, dir_fd=ddir)
                os.chmod(name, stat.S_IMODE(m), dir_fd=ddir)
                if st.st_nlink > 1:   # a FIFO's other names are links to it too
                    linked[st.st_ino] = os.open(name, os.O_PATH | os.O_NOFOLLOW, dir_fd=ddir)
            else:
                raise Failure(f"clone_tree: {name!r} has an unexpected type {oct(m)}")

    s = os.open(src, os.O_RDONLY | os.O_DIRECTORY)
    d = os.open(dst, os.O_RDONLY | os.O_DIRECTORY)
    try:
        walk(s, d)
    finally:
        os.close(s)
        os.close(d)
        for fd in linked.values():
            os.close(fd)


def op_paths(o):
    return [o[k] for k in ("path", "src", "dst") if k in o]


def near(key, paths):
    """True if snapshot entry `key` is one of paths, below one, or a parent of one."""
    for p in paths:
        p = os.path.normpath(p)
        if key == p or key.startswith(p + "/") or p.startswith(key + "/"):
            return True
    return False


def crash_differences(native, mount, in_flight, fsynced):
    """Sort the differences between the native snapshot and the primary's
    after a kill -9: (bad, unsynced, around) lists of keys.  Around the
    operation in flight anything goes; elsewhere only the content and size of
    a file not fsync'd may differ (unsynced); anything else is bad."""
    paths = op_paths(in_flight) if in_flight else []
    bad, unsynced, around = [], [], []
    for k in sorted(set(native) | set(mount)):
        a, b = native.get(k), mount.get(k)
        if a == b:
            continue
        if near(k, paths) or any(near(x, paths) for x in
                                 (a or {}).get("links", []) + (b or {}).get("links", [])):
            around.append(k)
            continue
        if a and b and "sha" in a and "sha" in b and k not in fsynced:
            strip = lambda d: {x: v for x, v in d.items() if x not in ("sha", "size")}  # noqa: E731
            if strip(a) == strip(b):
                unsynced.append(k)
                continue
        bad.append(f"  {k!r}: native={a} ledgerfs={b}")
    return bad, unsynced, around


# ------------------------------------------------------------------ one seed

class SeedRun:
    """One seed: a rig, the operation generator, the faults and the checks."""

    def __init__(self, seed, wd, batch, log):
        self.seed = seed
        self.rng = random.Random(seed ^ 0x5EED)
        self.gen = difftest.Gen(seed)
        self.batch = batch
        self.log = log
        self.rig = difftest.Rig(wd, 3, "s", hosts=True)
        self.cl = self.rig.cl
        self.net = NetCut()
        self.oplog = []          # operations and fault markers, in order
        self.nops = 0
        self.fsynced = {}        # path -> (sha, native stat key) of files fsync'd, unchanged since
        self.faults = {}         # kind -> count
        self.converge_s = []     # (kind, seconds)
        self.clones = 0
        self.cut_drops = []      # packets each cut dropped
        self.in_flight = None    # the operation running when the primary was killed
        self.current = "no fault"  # the last fault marker, for the progress line

    # ---------------------------------------------------------- operations

    def next_op(self):
        native = str(self.rig.native)
        if self.rng.random() < FSYNC_SHARE:
            _, files, _ = self.gen._existing(native)
            regular = [f for f in files if os.path.isfile(os.path.join(native, f))
                       and not os.path.islink(os.path.join(native, f))]
            if regular:
                return {"op": "fsync", "path": self.rng.choice(regular), "uid": 0, "gid": 0}
        return self.gen.op(native)

    def run(self, root, o):
        if o["op"] == "fsync":
            return fsync_op(root, o)
        return difftest.run_op(root, o)

    def note(self, what):
        self.oplog.append({"fault": what, "t": round(time.monotonic(), 2)})
        self.current = what

    def track(self, o, result, done=True):
        """Remember a file fsync'd with success (if the operation is known
        done on the mount too); forget those changed since."""
        native = str(self.rig.native)
        if done and o["op"] == "fsync" and result[0] == "ok":
            p = os.path.join(native, o["path"])
            self.fsynced[o["path"]] = (file_sha(p), stat_key(p))
        for rel, (sha, key) in list(self.fsynced.items()):
            p = os.path.join(native, rel)
            # Two changes within one tick of a coarse clock leave the times
            # alike: after an operation that writes data the content decides.
            if stat_key(p) != key or (o["op"] in CONTENT_OPS and file_sha(p) != sha):
                del self.fsynced[rel]

    def ops(self, min_ops, min_seconds=0.0, killed=None):
        """Run operations on both sides until at least min_ops ran and
        min_seconds passed (at most MAX_BATCHES batches, then wait), or, with
        `killed`, until it is set.  Returns the operation in flight when it was set
        (run on the native side, perhaps not on the mount), else None."""
        t0 = time.monotonic()
        n = 0
        while n < min_ops or time.monotonic() - t0 < min_seconds:
            if killed is not None and killed.is_set():
                return None
            if killed is None and n >= MAX_BATCHES * self.batch:
                time.sleep(0.1)
                continue
            o = self.next_op()
            self.oplog.append(o)
            self.nops += 1
            ra = self.run(str(self.rig.native), o)
            rb = self.run(str(self.rig.mount), o)
            if killed is not None and killed.is_set():
                self.track(o, ra, done=False)
                self.oplog.append({"in_flight": self.nops - 1, "native": ra, "ledgerfs": rb})
                return o
            if ra != rb:
                raise Mismatch(f"op {self.nops - 1} {json.dumps(o)}: native gave {ra}, "
                               f"ledgerfs {rb}")
            self.track(o, ra)
            n += 1
            if n % 10 == 0:
                _say_progress(f"seed {self.seed}: {self.nops} ops, {self.current}")
        return None

    # ---------------------------------------------------------- checks

    def check_logs(self):
        for n in self.rig.names:
            log = self.cl.log_text(n)
            for word in ("refused:", "diverged"):
                if word in log:
                    line = next(x for x in log.splitlines() if word in x)
                    raise Mismatch(f"node {n} {word.rstrip(':')}: {line.strip()}")

    def converge(self, kind):
        t0 = time.monotonic()
        self.check_logs()
        difftest.check_converged(self.rig, CONVERGE_TIMEOUT)
        self.check_logs()
        took = time.monotonic() - t0
        self.converge_s.append((kind, took))
        return took

    def check_fsynced(self):
        """Every file fsync'd and unchanged since is intact on every node."""
        for rel, (sha, _) in sorted(self.fsynced.items()):
            for n in self.rig.names:
                p = self.cl[n].mnt / rel
                try:
                    got = file_sha(p)
                except OSError as e:
                    got = errno.errorcode.get(e.errno, str(e.errno))
                if got != sha:
                    raise Mismatch(f"fsync'd file {rel!r} on node {n}: content {got}, "
                                   f"fsync'd as {sha}")

    # ---------------------------------------------------------- faults

    def round(self, kind):
        self.faults[kind] = self.faults.get(kind, 0) + 1
        detail = getattr(self, "fault_" + kind.replace("-", "_"))()
        took = self.converge(kind)
        self.check_fsynced()
        if kind == "kill9-primary":
            detail += self.after_primary_crash()
        else:
            difftest.check_native(self.rig)
        self.log(f"  seed {self.seed}: {kind} {detail}: converged in {took:.1f}s, "
                 f"{self.nops} ops, {len(self.fsynced)} fsync'd files intact")

    def fault_kill9_replica(self):
        name = self.rng.choice(self.rig.names[1:])
        self.note(f"kill -9 {name}")
        self.cl.kill9(name)
        self.ops(self.batch)
        self.note(f"restart {name}")
        self.cl.start(name)
        return name

    def fault_kill9_primary(self):
        name = self.rig.names[0]
        node = self.cl[name]
        delay = self.rng.uniform(*KILL_DELAY_S)
        done, killed = threading.Event(), threading.Event()

        def killer():
            done.wait(delay)
            node.proc.send_signal(signal.SIGKILL)
            killed.set()
        self.note(f"kill -9 {name} (primary) after {delay:.2f}s of ops")
        t = threading.Thread(target=killer, daemon=True)
        t.start()
        try:
            self.in_flight = self.ops(sys.maxsize, killed=killed)   # until the kill
        finally:
            done.set()
            t.join()
        self.cl.kill9(name)          # reap it and drop the dead mount
        self.note(f"restart {name}")
        self.cl.start(name)
        return f"after {delay:.2f}s"

    def after_primary_crash(self):
        """Once the replicas followed the restarted primary (and the fsync'd
        files were found intact): its tree may differ from the native one in
        unsynced data and around the operation in flight only; the native
        directory becomes a copy of it."""
        o = self.in_flight
        a, b = difftest.snapshot(self.rig.native), difftest.snapshot(self.rig.mount)
        bad, unsynced, around = crash_differences(a, b, o, self.fsynced)
        if bad:
            raise Mismatch("after kill -9 of the primary its tree differs from the native "
                           f"one beyond unsynced data (in flight: {json.dumps(o)}):\n"
                           + "\n".join(bad[:12]))
        if unsynced or around:
            self.rebase()
        self.oplog.append({"after_crash": {"unsynced": unsynced, "around_in_flight": around}})
        return (f" (in flight: {o['op'] if o else 'none'}; differing from native: "
                f"{len(around)} entries around it, {len(unsynced)} files' unsynced data"
                f"{'; native re-copied' if unsynced or around else ''})")

    def rebase(self):
        """Make a copy of the primary's tree the native reference."""
        self.clones += 1
        new = self.rig.wd.path / f"native-s-{self.clones}"
        os.mkdir(new)
        clone_tree(self.rig.mount, new)
        os.chmod(new, stat.S_IMODE(os.stat(self.rig.mount).st_mode))
        self.rig.native = new
        self.note(f"native re-copied from the primary into {new.name}")
        a, b = difftest.snapshot(new), difftest.snapshot(self.rig.mount)
        if a != b:
            raise Failure("soak: the copy of the primary's tree differs from it:\n"
                          + difftest.diff_snapshots(a, b, "copy", "ledgerfs"))

    def fault_pause(self):
        name = self.rng.choice(self.rig.names)
        secs = self.rng.uniform(*PAUSE_S)
        node = self.cl[name]
        self.note(f"SIGSTOP {name} for {secs:.1f}s")
        node.pause()
        t = threading.Timer(secs, node.resume)
        t.start()
        try:
            self.ops(self.batch, secs)
        finally:
            t.join()
            node.resume()
        self.note(f"SIGCONT {name}")
        return f"{name} {secs:.1f}s"

    def fault_cut(self):
        x, y = self.rng.sample(self.rig.names, 2)
        secs = self.rng.uniform(*CUT_S)
        self.note(f"cut {x}-{y} for {secs:.1f}s")
        self.net.cut(self.cl[x], self.cl[y])
        try:
            self.ops(self.batch, secs)
            dropped = self.net.dropped()
        finally:
            self.net.heal()
        self.cut_drops.append(dropped)
        self.note(f"heal {x}-{y} ({dropped} packets dropped)")
        return f"{x}-{y} {secs:.1f}s, {dropped} packets dropped"

    def close(self):
        self.net.heal()
        self.net.close()


def run_seed(seed, rounds, batch, kinds=FAULTS, deadline=None, log=print, save=None, plan=None):
    """One seed end to end: rounds of (fault, batch, checks), then fsck.
    The faults are drawn from kinds, or are plan (a list of kinds) in order.
    Returns the stats {ops, faults, converge, seconds}; raises Failure with
    the seed and the operation log."""
    t0 = time.monotonic()
    with lfs.Workdir(prefix="lfs-soak-") as wd:
        run = None
        try:
            run = SeedRun(seed, wd, batch, log)
            run.ops(batch)
            run.converge("start")
            difftest.check_native(run.rig)
            i = 0
            while True:
                if plan is not None:
                    if i >= len(plan):
                        break
                    kind = plan[i]
                else:
                    if i >= rounds or (deadline is not None and time.monotonic() >= deadline):
                        break
                    kind = run.rng.choice(kinds)
                run.round(kind)
                i += 1
            run.note("final fsck")
            difftest.final_fsck(run.rig)
        except (Mismatch, Failure) as e:
            text = failure_text(seed, e, run)
            if save and run is not None:
                text += "\n" + keep(save, seed, run, text)
            err = Failure(text)
            err.stats = ({"ops": run.nops, "faults": dict(run.faults)} if run is not None
                         else {"ops": 0, "faults": {}})
            raise err
        finally:
            if run is not None:
                run.close()
                try:
                    run.rig.stop()
                except Failure:
                    pass
    stats = {"ops": run.nops, "faults": dict(run.faults), "converge": run.converge_s,
             "cut_drops": run.cut_drops, "in_flight": run.in_flight,
             "seconds": time.monotonic() - t0}
    conv = ", ".join(f"{k} {s:.1f}s" for k, s in run.converge_s if k != "start")
    log(f"seed {seed}: {run.nops} ops, faults {fmt_faults(run.faults)}; converged after: "
        f"{conv or '-'}; fsck clean ({stats['seconds']:.0f}s)")
    return stats


def failure_text(seed, e, run):
    lines = [f"FAIL seed {seed}: {e}"]
    if run is not None:
        lines.append(f"operation log ({run.nops} ops; faults as {{\"fault\": ...}}):")
        lines += [json.dumps(o) for o in run.oplog]
        lines += [f"--- node {n} ({run.cl[n].logfile}), {_proc_state(run.cl[n])}:\n"
                  f"{run.cl[n].log_tail(30)}" for n in run.rig.names]
        lines.append("--- FUSE mounts at the failure:")
        lines += [f"{mp} {fs} {dev}" for mp, fs, dev in lfs.mount_table() if fs.startswith("fuse")]
    return "\n".join(lines)


def _proc_state(node):
    """Whether a node's daemon still ran when the failure was seen: an
    operation failing with ENOTCONN or ECONNABORTED means its FUSE
    connection ended, by the daemon's exit or by an abort."""
    p = node.proc
    if p is None:
        return "daemon not running"
    rc = p.poll()
    return f"daemon pid {p.pid} running" if rc is None else f"daemon exited with {rc}"


def keep(save, seed, run, text):
    d = Path(save) / f"seed-{seed}"
    d.mkdir(parents=True, exist_ok=True)
    (d / "failure.txt").write_text(text)
    (d / "ops.json").write_text(json.dumps([o for o in run.oplog if "op" in o], indent=1))
    for n in run.rig.names:
        try:
            shutil.copy(run.cl[n].logfile, d / f"{n}.log")
        except OSError:
            pass
    return f"kept in {d}"


def fmt_faults(faults):
    return " ".join(f"{k}={faults.get(k, 0)}" for k in FAULTS) or "none"


def main(argv=None):
    ap = argparse.ArgumentParser(
        prog="soak.py", description="Run the random differential tester on a three-node "
        "cluster for SECONDS, new seeds one after another, with faults: kill -9 of a "
        "replica or of the primary, SIGSTOP of a node, a network cut between two nodes. "
        "Exit 0 when every seed was clean, 1 on a failure (printed with its seed and "
        "operation log).")
    ap.add_argument("seconds", nargs="?", type=float, default=600,
                    help="how long to run (default 600); the seed running then finishes "
                    "(with --seed: ignored, each seed runs all its rounds)")
    ap.add_argument("--seed", type=int, action="append",
                    help="run this seed (repeatable) instead of time-based ones")
    ap.add_argument("--rounds", type=int, default=8, help="faults per seed (8)")
    ap.add_argument("--batch", type=int, default=40, help="operations per batch (40)")
    ap.add_argument("--faults", default=",".join(FAULTS),
                    help=f"fault kinds to draw from (default {','.join(FAULTS)})")
    ap.add_argument("--save", help="keep a failure's log, operations and node logs here")
    args = ap.parse_args(argv)
    kinds = [k for k in args.faults.split(",") if k]
    unknown = [k for k in kinds if k not in FAULTS]
    if unknown or not kinds:
        ap.error(f"unknown fault kinds {unknown}; known: {','.join(FAULTS)}")
    if os.geteuid() != 0:
        print("soak.py: must run as root (FUSE mounts, nftables)", file=sys.stderr)
        return 2
    os.umask(0o022)
    deadline = time.monotonic() + args.seconds
    total = {"seeds": 0, "ops": 0, "faults": {}}
    failures = 0
    prev = 0
    try:
        say(f"soak: {args.seconds:.0f}s, faults {','.join(kinds)}, binaries from {lfs.BUILD}")
        queue = list(args.seed or [])
        while True:
            if queue:
                seed = queue.pop(0)
            elif args.seed or time.monotonic() >= deadline:
                break
            else:
                seed = max(prev + 1, int(time.time()))
            prev = seed
            say(f"seed {seed}: start")
            try:
                st = run_seed(seed, args.rounds, args.batch, kinds,
                              None if args.seed else deadline, log=say, save=args.save)
            except Failure as e:
                failures += 1
                say(str(e))
                st = getattr(e, "stats", {"ops": 0, "faults": {}})
            total["seeds"] += 1
            total["ops"] += st["ops"]
            for k, v in st["faults"].items():
                total["faults"][k] = total["faults"].get(k, 0) + v
            if failures:
                break
    finally:
        lfs.cleanup()
    say(f"soak: {total['seeds']} seeds, {total['ops']} ops, faults "
        f"{fmt_faults(total['faults'])}, {failures} failures")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
