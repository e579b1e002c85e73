#!/usr/bin/env python3
"""tools/bench resync: snapshot resync and synchronous replication, in one run.

Measures, with every reference taken in the same run on the same machine:

* a full snapshot resync of a tree of mixed file sizes to a new, empty node
  (ledgerctl init --join, peer add, start), in MB/s, against the loopback
  TLS ceiling (ledgerfs-benchtls) and against `rsync -a` of the same store
  to an rsync daemon on 127.0.0.1;
* the resync of that node after 1% of the files changed (ledgerctl resync
  on the stopped node, then start), against the full one, with `rsync -a`
  of the same change as context;
* 4 KiB writes each followed by fsync on a primary with one replica, with
  sync_peers = 1 against sync_peers = 0.

The cluster machinery (nodes, mounts, status over the control socket, the
TLS ceiling, ledgerfs-benchio) is tools/bench's: this file gets that module
from `tools/bench resync`, or loads it when run by itself.  The tree is
written once through the primary's mount, so it is journaled as a user's
files would be, and every run resyncs a fresh node from it.
"""

import argparse
import mmap
import os
import re
import shutil
import signal
import statistics
import tempfile
import threading
import time

from bench_lib import (MIB, TREE_SEED, add_run_args, change_files, changed_count, check_ready,
                       collect_runs, commit, load_notes, missing_rows, parse_run_args, print_head,
                       print_table, remove_workdirs, run_phases, run_standalone, store_size,
                       tree_plan, write_tree)

FULL = {"tree": 2048 * MIB, "fsync_secs": 10, "tls_mib": 1024}
QUICK = {"tree": 256 * MIB, "fsync_secs": 3, "tls_mib": 256}

RESYNC_TIMEOUT = 1200     # seconds a resync may take before the phase fails
POLL_SECS = 0.05          # status polls of the resyncing node (about 0.5 ms of its CPU each)

# key, label, unit, target kind ("atleast": >= target, "above": > target,
# "below": < target), target
ROWS = (
    ("full_mbps", "full resync to an empty node", "MB/s", None, None),
    ("full_secs", "  start of the node to all applied", "s", None, None),
    ("full_log_secs", "  the resync itself (its log line)", "s", None, None),
    ("full_post", "  resync done to all applied", "s", None, None),
    ("full_attempts", "  resync attempts (starts in its log)", "count", None, None),
    ("full_write_p99", "  p99 of a's 4 KiB O_DIRECT writes meanwhile", "ms", "below", 20),
    ("full_write_max", "  max of a's 4 KiB O_DIRECT writes meanwhile", "ms", "below", 100),
    ("tls", "loopback TLS ceiling (link.c, 1 MiB frames)", "MB/s", None, None),
    ("tls_decode", "  with every record decoded", "MB/s", None, None),
    ("tls_small", "  192 KiB frames", "MB/s", None, None),
    ("full_tls", "full resync / TLS ceiling", "ratio", "atleast", 0.8),
    ("rsync_mbps", "rsync -a over loopback (rsyncd)", "MB/s", None, None),
    ("rsync_sync_mbps", "  rsync -a, then sync -f of the copy", "MB/s", None, None),
    ("full_rsync", "full resync / rsync -a", "ratio", "above", 1.0),
    ("delta_secs", "resync after changing 1% of the files", "s", None, None),
    ("delta_log_secs", "  the resync itself (its log line)", "s", None, None),
    ("delta_post", "  resync done to all applied", "s", None, None),
    ("delta_attempts", "  resync attempts (starts in its log)", "count", None, None),
    ("rsync_delta_secs", "  rsync -a of the same change", "s", None, None),
    ("delta_speedup", "full resync time / 1% resync time", "ratio", "atleast", 20),
    ("fsync_async", "4 KiB write+fsync, sync_peers = 0", "ops/s", None, None),
    ("fsync_sync", "4 KiB write+fsync, sync_peers = 1", "ops/s", None, None),
    ("fsync_ratio", "sync_peers = 1 / sync_peers = 0", "ratio", "atleast", 0.5),
    ("rss", "daemon peak RSS (anonymous; max of a, cN, p, r)", "MiB", "atmost", None),
    ("rss_hwm", "daemon peak RSS incl. mapped files (max of a, cN, p, r)", "MiB", None, None),
)
# The daemons whose peak RSS a run reports, as the rss_NAME keys of its results.
DAEMONS = ("a", "c", "p", "r")

DONE_RE = re.compile(r"snapshot resync from \S+ done in ([0-9.]+) s.*")
STARTING_RE = re.compile(r"snapshot resync from \S+: starting")
DROPPED_RE = re.compile(r"peer \S+ \(\S+\): retrying: .*")


# ---- the bench --------------------------------------------------------------------------


def set_conf_key(node, key, value):
    """Set key = value in a stopped node's ledgerfs.conf (the key must be there)."""
    path = os.path.join(node.dir, "ledgerfs.conf")
    with open(path) as f:
        text = f.read()
    text, n = re.subn(rf"^{key} = .*$", f"{key} = {value}", text, flags=re.M)
    if n != 1:
        raise bench.BenchError(f"{path}: {key} found {n} times")
    with open(path, "w") as f:
        f.write(text)


def in_sync(*nodes):
    return all((n.status() or {}).get("in_sync") for n in nodes)


class ResyncBench:
    def __init__(self, args, sizes, benchio, benchtls, root):
        self.args = args
        self.sizes = sizes
        self.ctl = os.path.join(args.build, "ledgerctl")
        # tools/bench repl's phases give benchio_run(), forget_inodes() and tls().
        self.repl = bench.ReplBench(args, sizes, benchio, benchtls)
        self.notes = self.repl.notes
        self.root = root
        self.ca = os.path.join(root, "ca")
        self.a = None
        self.plan = None
        self.tree_files = self.tree_bytes = 0
        self.loads = []

    def sample_load(self):
        self.loads.append(os.getloadavg()[0])

    # setup: the primary and its tree, written once for every run --------------------------

    def setup(self):
        bench.run([self.ctl, "ca", "init", self.ca])
        port = bench.free_ports(1)[0]
        self.a = bench.ReplNode(self.args.build, self.root, "a", f"127.0.0.1:{port}")
        bench.run([self.ctl, "init", self.a.dir, "--name", "a", "--ca", self.ca, "--primary",
                   "--listen", self.a.address])
        self.a.start()
        self.plan, dirs = tree_plan(self.sizes["tree"])
        t0 = time.monotonic()
        write_tree(self.a.mnt, self.plan, dirs, self.repl.forget_inodes, bench.progress)
        secs = time.monotonic() - t0
        self.repl.forget_inodes()
        os.sync()
        self.tree_files, self.tree_bytes = store_size(self.a.store)
        if self.tree_files != len(self.plan):
            raise bench.BenchError(f"a's store holds {self.tree_files} files, "
                                   f"{len(self.plan)} were written")
        # The file start_writer() rewrites during full resyncs, part of the tree.
        with open(os.path.join(self.a.mnt, "latency.dat"), "wb") as f:
            f.write(b"x" * MIB)
        os.sync()
        self.tree_files, self.tree_bytes = store_size(self.a.store)
        self.notes.add(f"tree: {self.tree_files} files, {self.tree_bytes / MIB:.0f} MiB, "
                       f"{len(dirs)} directories in 3 levels, written through a's mount in "
                       f"{secs:.0f} s; files changed per run: {changed_count(self.plan)}")

    def stop(self):
        if self.a:
            self.a.stop()

    # phases ---------------------------------------------------------------------------------

    def make_joiner(self, name):
        """A new node made with --join through a; not yet a peer of a, not started."""
        port = bench.free_ports(1)[0]
        c = bench.ReplNode(self.args.build, self.root, name, f"127.0.0.1:{port}")
        bench.run([self.ctl, "init", c.dir, "--name", name, "--ca", self.ca,
                   "--listen", c.address, "--join", self.a.address])
        return c

    def add_peer(self, c):
        bench.run([self.ctl, "peer", "add", self.a.dir, f"{c.name}={c.address}"])
        # a re-reads its config by itself; until it has, it would refuse c and c would
        # back off, which is no part of a resync's time.
        bench.wait_for(f"a to list {c.name} as a peer",
                       lambda: c.name in [p.get("name") for p in
                                          (self.a.status() or {}).get("peers", [])], 30)

    def timed_start(self, c, what, res, key):
        """Start c and wait until its snapshot resync is done and it has applied all that
        a has.  Sets res[key + "_secs"] (from the start), _post (from the status first
        showing it done) and _log_secs (its log line's time); returns (c's snapshot status,
        the log line's match or None).  The status cannot tell when the resync starts: it
        shows it active only once both hash trees are built and compared."""
        target = bench.vector(self.a.must_status())
        os.sync()  # no writeback of earlier phases during this one
        t0 = time.monotonic()
        c.spawn()
        shown = t0
        done = None
        while True:
            st = c.status()
            t = time.monotonic()
            if st is not None:
                c.id = st["node_id"].lower()
                snap = st.get("snapshot") or {}
                if done is None and snap.get("done") and not snap.get("active"):
                    done = t
                have = bench.vector(st)
                if done and all(have.get(o, 0) >= s for o, s in target.items() if o != c.id):
                    break
                if t - shown >= 5:
                    shown = t
                    bench.progress(f"  {what}: {t - t0:.0f} s, {snap.get('fetched', 0)} "
                                   f"entries, {snap.get('bytes', 0) / MIB:.0f} MiB received")
            if c.mount.proc.poll() is not None:
                raise bench.BenchError(f"node {c.name} exited with {c.mount.proc.returncode} "
                                       f"during the {what}: {c.mount.log_tail()}")
            if t - t0 > RESYNC_TIMEOUT:
                raise bench.BenchError(f"node {c.name}: {what} not done within "
                                       f"{RESYNC_TIMEOUT} s: {snap if st else 'no status'}")
            time.sleep(POLL_SECS)
        res[key + "_secs"] = t - t0
        res[key + "_post"] = t - done
        c.mount.wait_mounted()
        line = None
        with open(c.mount.log, errors="replace") as f:
            text = f.read()
        for line in DONE_RE.finditer(text):
            pass
        if line:
            res[key + "_log_secs"] = float(line.group(1))
        res[key + "_attempts"] = len(STARTING_RE.findall(text))
        drop = DROPPED_RE.search(text)
        if res[key + "_attempts"] > 1 and drop:
            self.notes.add(f"{what}: started {res[key + '_attempts']} times in some run; "
                           f"{c.name}'s log: {drop.group(0)}")
        return snap, line

    def start_writer(self):
        """A thread writing 4 KiB with O_DIRECT (so each write reaches the
        daemon) to a file on a's mount once a millisecond, timing each.
        Returns stop(), which ends it and gives the latencies in ms."""
        path = os.path.join(self.a.mnt, "latency.dat")
        fd = os.open(path, os.O_RDWR | os.O_DIRECT)
        buf = mmap.mmap(-1, 4096)
        buf.write(b"x" * 4096)
        lat, done = [], threading.Event()

        def loop():
            k = 0
            nxt = time.monotonic()
            while not done.is_set():
                t0 = time.monotonic()
                os.pwritev(fd, [buf], (k % 256) * 4096)
                lat.append((time.monotonic() - t0) * 1000)
                k += 1
                nxt += 0.001
                delay = nxt - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                else:
                    nxt = time.monotonic()

        t = threading.Thread(target=loop, daemon=True)
        t.start()

        def stop():
            done.set()
            t.join()
            os.close(fd)
            buf.close()
            return lat
        return stop

    def full_resync(self, c, res, log):
        stop = self.start_writer()
        try:
            snap, line = self.timed_start(c, "full resync", res, "full")
        finally:
            lat = sorted(stop())
        if lat:
            res["full_write_p99"] = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
            res["full_write_max"] = lat[-1]
        res["full_mbps"] = self.tree_bytes / res["full_secs"] / 1e6
        if line:
            log.append(f"{c.name}, full: {line.group(0)}")
        files, size = store_size(c.store)
        if (files, size) != (self.tree_files, self.tree_bytes):
            raise bench.BenchError(f"after the resync {c.name}'s store holds {files} files, "
                                   f"{size} bytes; a's {self.tree_files}, {self.tree_bytes}")
        res["full_fetched"], res["full_bytes"] = snap.get("fetched", 0), snap.get("bytes", 0)

    def delta_resync(self, c, res, log):
        bench.run([self.ctl, "resync", c.dir])
        snap, line = self.timed_start(c, "1% resync", res, "delta")
        if line:
            log.append(f"{c.name}, 1%: {line.group(0)}")
        res["delta_fetched"], res["delta_bytes"] = snap.get("fetched", 0), snap.get("bytes", 0)
        if res.get("full_secs"):
            res["delta_speedup"] = res["full_secs"] / res["delta_secs"]

    def sync_cost(self, rundir, order, res):
        """4 KiB write+fsync on a primary p with one replica r, for each sync_peers in
        order (the config is edited and p restarted between the two)."""
        ports = bench.free_ports(2)
        p = bench.ReplNode(self.args.build, rundir, "p", f"127.0.0.1:{ports[0]}")
        r = bench.ReplNode(self.args.build, rundir, "r", f"127.0.0.1:{ports[1]}")
        for n, o, role in ((p, r, "--primary"), (r, p, "--replica")):
            bench.run([self.ctl, "init", n.dir, "--name", n.name, "--ca", self.ca,
                       "--listen", n.address, "--peer", f"{o.name}={o.address}", role])
        set_conf_key(p, "sync_peers", order[0])
        try:
            p.start()
            r.start()
            for i, mode in enumerate(order):
                if i:
                    p.stop()
                    set_conf_key(p, "sync_peers", mode)
                    p.start()
                bench.wait_for("p and r to be in sync", lambda: in_sync(p, r), 60)
                st = p.must_status()
                if st.get("sync_peers") != int(mode):
                    raise bench.BenchError(f"p reports sync_peers {st.get('sync_peers')}, "
                                           f"configured {mode}")
                d = os.path.join(p.mnt, f"sync{mode}")
                os.mkdir(d)
                os.sync()
                got = self.repl.benchio_run("fsyncwrite", d, "--secs",
                                            str(self.sizes["fsync_secs"]))
                if p.must_status().get("degraded"):
                    raise bench.BenchError("p degraded to asynchronous during the sync_peers = 1 "
                                           "writes")
                res["fsync_sync" if mode == "1" else "fsync_async"] = got["iops"]
        finally:
            p.stop()
            r.stop()
            p.record_rss(res)
            r.record_rss(res)
        res["fsync_ratio"] = res["fsync_sync"] / res["fsync_async"]

    # one run --------------------------------------------------------------------------------

    def run_once(self, i, rsyncd, rsync_root, log):
        res = {}
        rundir = tempfile.mkdtemp(prefix="r.", dir=self.root)
        sub = f"rsync{i + 1}"
        dest = os.path.join(rsync_root, sub)
        c = None
        added = False
        failed = set()

        def rsync_full():
            os.sync()
            t0 = time.monotonic()
            rsyncd.copy(self.a.store, sub)
            t1 = time.monotonic()
            bench.run(["sync", "-f", dest])
            t2 = time.monotonic()
            res["rsync_mbps"] = self.tree_bytes / (t1 - t0) / 1e6
            res["rsync_sync_mbps"] = self.tree_bytes / (t2 - t0) / 1e6

        def full():
            nonlocal c, added
            c = self.make_joiner(f"c{i + 1}")
            added = True  # removed again at the end of the run, even if adding fails
            self.add_peer(c)
            self.full_resync(c, res, log)

        def tls():
            self.repl.tls(self.a.dir, res)

        def change():
            c.stop()
            n, size = change_files(self.a.mnt, self.plan, TREE_SEED + 1 + i)
            res["changed_files"], res["changed_bytes"] = n, size

        def rsync_delta():
            os.sync()
            res["rsync_delta_secs"] = rsyncd.copy(self.a.store, sub)

        def delta():
            self.delta_resync(c, res, log)

        order = ("0", "1") if i % 2 == 0 else ("1", "0")
        phases = (("rsync -a", rsync_full, ()),
                  ("full resync", full, ()),
                  ("TLS ceiling", tls, ()),
                  ("change 1% of the files", change, ("full resync",)),
                  ("rsync -a of the change", rsync_delta, ("rsync -a", "change 1% of the files")),
                  ("1% resync", delta, ("change 1% of the files",)),
                  ("sync_peers", lambda: self.sync_cost(rundir, order, res), ()))
        try:
            run_phases(bench, i, phases, res, ROWS, failed, self.sample_load, self.a)
        finally:
            if c:
                c.stop()
                c.record_rss(res, "c")
            # a runs through every run: its peak so far, tree writing included.
            self.a.record_rss(res)
            if added:
                try:
                    bench.run([self.ctl, "peer", "remove", self.a.dir, c.name])
                except bench.BenchError as e:
                    bench.warn(str(e))
        for key, num, den in (("full_tls", "full_mbps", "tls"),
                              ("full_rsync", "full_mbps", "rsync_mbps")):
            if res.get(num) and res.get(den):
                res[key] = res[num] / res[den]
        bench.rss_highest(res, DAEMONS)
        return res


# ---- table and main ---------------------------------------------------------------------


def parse_args(argv):
    p = argparse.ArgumentParser(
        prog="tools/bench resync",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Benchmark snapshot resync and synchronous replication on loopback, "
                    "in one run.",
        epilog="""\
what is measured (sizes in brackets are --quick's):
  tree        2 GiB [256 MiB] in 3 directory levels: 30% of the bytes in files of
              64-256 MiB, 40% in files of 1-16 MiB, 30% in files of 1-64 KiB
              (about 20,000 [2,500]); written once through the mount of a primary a
              (ledgerctl ca init, init --primary --listen), so it is journaled, and
              used by every run. Each run then:
  rsync -a    of a's store to an rsync daemon on 127.0.0.1 (a temporary rsyncd.conf),
              into an empty directory; also until sync -f of the copy returns.
  full resync a new node cN (init --join a, peer add on a, mounted with ledgerfs -f) is
              timed from its start until its status shows the snapshot done and it
              has applied all that a has; MB/s = the tree's bytes / that time.
  TLS         ledgerfs-benchtls (as tools/bench repl: 1 GiB [256 MiB] of 1 MiB
              EVENTS frames through net/link.c, with a's certificates).
  1% resync   cN is stopped, 4 KiB of 1% of the files (chosen at random) are
              overwritten through a's mount, ledgerctl resync cN, cN is started and
              timed as above; rsync -a of the same change to the run's copy too.
  sync_peers  a fresh primary p with one replica r, both mounted: ledgerfs-benchio
              fsyncwrite (4 KiB appends, each followed by fsync) for 10 s [3 s] on p
              with sync_peers = 0 and = 1 (config edited, p restarted; the order
              alternates between runs).

  peak RSS    of each daemon (a, cN, p, r): the highest RssAnon + RssShmem of its
              /proc/PID/status, sampled every 50 ms from its start until just before
              it is stopped (a's until the end of each run: it runs throughout); the
              row is the highest, and a note gives each node's. The row incl. mapped
              files is the VmHWM, no target: it also counts LevelDB's table files,
              mapped read-only (RssFile; page cache, shared and reclaimable).

Targets (issue): full resync >= 0.8 of the TLS ceiling and faster than rsync -a; the
1% resync at least 20 times faster than the full one; write+fsync with sync_peers = 1
>= 0.5 of sync_peers = 0; each daemon's anonymous peak RSS at most 64 MiB plus its
caches (issue 16; a note gives the figure). Each figure is the median of --runs runs (ratios: the
median of each run's ratio); the runs column gives each run's value.
Run as root; the bench directory must be on the disk ledgerfs will use (not tmpfs)
and have room for the tree about 2 + 2 x runs times. Exit status 0; 1 if a phase
failed in some run (the table still prints, with "-" where no run succeeded).""")
    add_run_args(p, bench, "/var/tmp/ledgerfs-bench-resync", "256 MiB tree, 3 s of fsyncs",
                 "meson build directory with ledgerfs, ledgerctl and "
                 "ledgerfs-benchtls (default $LEDGERFS_BUILD, else build/)")
    return parse_run_args(p, argv)


def main(argv, bench_module):
    global bench
    bench = bench_module
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, bench.on_signal)
    signal.signal(signal.SIGHUP, bench.on_signal)
    sizes = QUICK if args.quick else FULL
    if not shutil.which("rsync"):
        raise bench.BenchError("rsync not found (tools/deps installs it)")
    benchtls = bench.find_benchtls(args.build)
    if not benchtls:
        raise bench.BenchError(f"{args.build}/ledgerfs-benchtls missing or older than "
                               "cmd/bench/benchtls.c (run ninja): the TLS ceiling is a reference")

    made_dir = check_ready(bench, args, "the nodes mount FUSE filesystems and keep their ids "
                           "in trusted.* xattrs", sizes["tree"] * (2 + 2 * args.runs) * 1.2)
    tmp = tempfile.mkdtemp(prefix="ledgerfs-bench-")
    workroot = tempfile.mkdtemp(prefix="run.", dir=args.dir)
    rb = rsyncd = None
    try:
        benchio = bench.find_benchio(args.build, tmp)
        rb = ResyncBench(args, sizes, benchio, benchtls, workroot)
        rb.sample_load()
        load_start = os.getloadavg()
        head = commit(bench.ROOT)  # at the start: another commit may land during a long run
        bench.progress(f"writing the {sizes['tree'] // MIB} MiB tree on a's mount ...")
        rb.setup()
        rsync_root = os.path.join(workroot, "rsync")
        os.mkdir(rsync_root)
        rsyncd = bench.Rsyncd(tmp, rsync_root)
        logs = []
        # Every run's copies stay until the end: on ext4 without a journal, inode
        # allocation skips inodes freed in the last minute or more (recently_deleted()).
        samples, failed = collect_runs(
            bench, args.runs, lambda i: rb.run_once(i, rsyncd, rsync_root, logs), rb.a)
        rb.sample_load()
        load_end = os.getloadavg()
        missing, notes = missing_rows(ROWS, samples, args.runs)
        med = {k: statistics.median(v) for k, v in samples.items()}
        notes += sorted(rb.notes)
        if "full_fetched" in med:
            notes.append(f"full resync: {med['full_fetched']:.0f} entries, "
                         f"{med['full_bytes'] / MIB:.0f} MiB received (medians)")
        if "delta_fetched" in med:
            notes.append(f"1% resync: {med['delta_fetched']:.0f} entries, "
                         f"{med['delta_bytes'] / MIB:.1f} MiB received; the changed files "
                         f"total {med['changed_bytes'] / MIB:.1f} MiB (medians)")
        notes += logs
        notes.append(bench.rss_note())
        by_daemon = bench.rss_by_daemon(med, DAEMONS)
        if by_daemon:
            notes.append(f"daemon peak RSS by node, MiB (medians), anonymous/incl. mapped "
                         f"files/mapped files alone (RssFile): {by_daemon}; a's is its peak "
                         "since it started (it writes the tree and serves every run), "
                         "cN's the higher of its full and 1% resync daemons, p's of both its "
                         "sync_peers settings")
        notes += load_notes(rb.loads)
        print_head(bench, args, head, load_start, load_end, notes)
        print_table(ROWS, samples, args.runs, {"rss": bench.RSS_TARGET_MIB})
        return 1 if failed or missing else 0
    finally:
        if rsyncd:
            rsyncd.stop()
        if rb:
            try:
                rb.stop()
            except Exception as e:  # still remove the directories
                bench.warn(f"stopping node a: {e}")
        remove_workdirs(workroot, tmp, made_dir, args.dir)


bench = None  # tools/bench, set by main()

if __name__ == "__main__":
    run_standalone(main)
