#!/usr/bin/env python3
"""tools/bench backup: ledgerctl backup and restore against restic and tar, in one run.

Measures, with every reference taken in the same run on the same machine and on
the same tree (tools/bench resync's tree of mixed file sizes, written through
the mount of one node so that it is journaled as a user's files would be):

* a full backup of the node's store into an empty repository, with
  --jobs 1 and --jobs 4, against Debian's restic (`restic backup` into an
  empty local repository) and against `tar c | tar x` of the store;
* a second backup after 1% of the files changed, against restic's second
  snapshot after the same change (restic must scan the tree; ledgerfs's
  digest cache knows what it read last time);
* a full restore into an empty directory, against `restic restore`.

The node stays mounted and idle while it is backed up (backing up a running
node is the normal way); restic and tar read the node's store directory
directly.  Before every timed phase the bench syncs and drops the kernel's
caches, so each one starts reading from the disk; each phase is timed until
`sync -f` of what it wrote returns, so no phase leaves its writeback to the
next.  The cluster machinery and the tree are tools/bench's and
tools/bench_lib.py's: this file gets tools/bench from `tools/bench backup`, or
loads it when run by itself.
"""

import argparse
import os
import re
import shutil
import signal
import statistics
import subprocess
import tempfile
import time

from bench_lib import (MIB, TREE_SEED, add_run_args, change_files, changed_count, check_ready,
                       collect_runs, commit, load_notes, missing_rows, parse_run_args, print_head,
                       print_table, remove_workdirs, run_phases, run_standalone, store_size,
                       tree_plan, write_tree)

FULL = {"tree": 2048 * MIB}
QUICK = {"tree": 256 * MIB}
RESTIC_PASSWORD = "ledgerfs-bench"  # the repositories are the bench's own, removed after
SECOND_JOBS = 4           # --jobs of the second backup (into the --jobs 4 repository)

# key, label, unit, target kind ("atleast": >= target), target
ROWS = (
    ("lfs1_mbps", "ledgerfs full backup, --jobs 1", "MB/s", None, None),
    ("lfs4_mbps", "ledgerfs full backup, --jobs 4", "MB/s", None, None),
    ("restic_mbps", "restic backup, first snapshot", "MB/s", None, None),
    ("tar_mbps", "tar c | tar x of the store (xattrs too)", "MB/s", None, None),
    ("full1_restic", "full backup --jobs 1 / restic", "ratio", "atleast", 1.0),
    ("full4_restic", "full backup --jobs 4 / restic", "ratio", "atleast", 1.0),
    ("lfs_second_secs", "ledgerfs second backup, 1% of the files changed", "s", None, None),
    ("lfs_second_mib", "  added to its repository", "MiB", None, None),
    ("restic_second_secs", "restic second snapshot, the same change", "s", None, None),
    ("restic_second_mib", "  added to its repository", "MiB", None, None),
    ("second_speedup", "restic second / ledgerfs second (time)", "ratio", "atleast", 10),
    ("lfs_restore_mbps", "ledgerfs full restore", "MB/s", None, None),
    ("restic_restore_mbps", "restic restore latest", "MB/s", None, None),
    ("restore_restic", "full restore / restic", "ratio", "atleast", 1.0),
)
# Each row's seconds are kept too (KEY_secs for a KEY_mbps row) for the notes.


def dir_bytes(path):
    """Bytes of the regular files under path (0 if it is missing)."""
    return store_size(path)[1] if os.path.isdir(path) else 0


class BackupBench:
    def __init__(self, args, sizes, root, tmp):
        self.args = args
        self.sizes = sizes
        self.ctl = os.path.join(args.build, "ledgerctl")
        self.root = root
        self.notes = set()
        self.loads = []
        self.node = None
        self.plan = None
        self.tree_files = self.tree_bytes = 0
        self.env = dict(os.environ, RESTIC_PASSWORD=RESTIC_PASSWORD,
                        RESTIC_CACHE_DIR=os.path.join(tmp, "restic-cache"))
        self.summaries = []  # ledgerctl's summary lines of the first run

    def sample_load(self):
        self.loads.append(os.getloadavg()[0])

    # setup: the node and its tree, written once for every run -----------------------------

    def forget_inodes(self):
        # The daemon holds a descriptor per inode the kernel caches (see tools/bench repl).
        with open(bench.DROP_CACHES, "w") as f:
            f.write("2\n")

    def setup(self):
        self.node = bench.ReplNode(self.args.build, self.root, "a")
        bench.run([self.ctl, "init", self.node.dir, "--name", "a"])
        self.node.start()
        self.plan, dirs = tree_plan(self.sizes["tree"])
        t0 = time.monotonic()
        write_tree(self.node.mnt, self.plan, dirs, self.forget_inodes, bench.progress)
        secs = time.monotonic() - t0
        self.forget_inodes()
        os.sync()
        self.tree_files, self.tree_bytes = store_size(self.node.store)
        if self.tree_files != len(self.plan):
            raise bench.BenchError(f"a's store holds {self.tree_files} files, "
                                   f"{len(self.plan)} were written")
        self.notes.add(f"tree: {self.tree_files} files, {self.tree_bytes / MIB:.0f} MiB, "
                       f"{len(dirs)} directories in 3 levels, written through a's mount in "
                       f"{secs:.0f} s; files changed per run: {changed_count(self.plan)}")

    def stop(self):
        if self.node:
            self.node.stop()

    # timing ---------------------------------------------------------------------------------

    def timed(self, cmd, dest, shell=False):
        """Drop the caches, then run cmd (a list, or a bash script if shell) and `sync -f
        dest`; returns (seconds, cmd's stdout)."""
        bench.drop_caches()
        t0 = time.monotonic()
        if shell:
            cmd = ["bash", "-o", "pipefail", "-c", cmd]
        out = bench.run(cmd, env=self.env)
        bench.run(["sync", "-f", dest])
        return time.monotonic() - t0, out

    def check_copy(self, what, path):
        files, size = store_size(path)
        if (files, size) != (self.tree_files, self.tree_bytes):
            raise bench.BenchError(f"{what}: {path} holds {files} files, {size} bytes; "
                                   f"the store {self.tree_files}, {self.tree_bytes}")

    # one run --------------------------------------------------------------------------------

    def run_once(self, i):
        res = {}
        rundir = tempfile.mkdtemp(prefix="r.", dir=self.root)
        repo1, repo4 = os.path.join(rundir, "repo1"), os.path.join(rundir, "repo4")
        rrepo = os.path.join(rundir, "restic")
        store = self.node.store
        failed = set()

        def mbps(key, secs):
            res[key + "_secs"] = secs
            res[key + "_mbps"] = self.tree_bytes / secs / 1e6

        def lfs_backup(repo, jobs, what):
            secs, out = self.timed([self.ctl, "backup", self.node.dir, "--to", repo,
                                    "--jobs", str(jobs)], repo)
            if i == 0 and out.strip():
                self.summaries.append(f"{what} --jobs {jobs}: {out.strip().splitlines()[-1]}")
            return secs

        def full1():
            mbps("lfs1", lfs_backup(repo1, 1, "full backup"))
            shutil.rmtree(repo1)

        def full4():
            mbps("lfs4", lfs_backup(repo4, 4, "full backup"))

        def restic_full():
            bench.run(["restic", "init", "--quiet", "-r", rrepo], env=self.env)
            secs, _ = self.timed(["restic", "backup", "--quiet", "-r", rrepo, store], rrepo)
            mbps("restic", secs)

        def tar():
            dest = os.path.join(rundir, "tar")
            os.mkdir(dest)
            x = "--xattrs --xattrs-include='*'"
            secs, _ = self.timed(f"tar -C '{store}' {x} -cf - . | tar -C '{dest}' {x} -xf -",
                                 dest, shell=True)
            self.check_copy("tar", dest)
            mbps("tar", secs)
            shutil.rmtree(dest)

        def change():
            n, size = change_files(self.node.mnt, self.plan, TREE_SEED + 1 + i)
            os.sync()
            res["changed_files"], res["changed_bytes"] = n, size
            self.tree_files, self.tree_bytes = store_size(store)

        def lfs_second():
            before = dir_bytes(repo4)
            res["lfs_second_secs"] = lfs_backup(repo4, SECOND_JOBS, "second backup")
            res["lfs_second_mib"] = (dir_bytes(repo4) - before) / MIB

        def restic_second():
            before = dir_bytes(rrepo)
            res["restic_second_secs"], _ = self.timed(
                ["restic", "backup", "--quiet", "-r", rrepo, store], rrepo)
            res["restic_second_mib"] = (dir_bytes(rrepo) - before) / MIB

        def lfs_restore():
            dest = os.path.join(rundir, "restore")
            secs, out = self.timed([self.ctl, "restore", repo4, dest], rundir)
            if i == 0 and out.strip():
                self.summaries.append(f"restore: {out.strip().splitlines()[-1]}")
            self.check_copy("ledgerctl restore", os.path.join(dest, "store"))
            mbps("lfs_restore", secs)
            shutil.rmtree(dest)

        def restic_restore():
            dest = os.path.join(rundir, "restic-restore")
            secs, _ = self.timed(["restic", "restore", "--quiet", "-r", rrepo, "latest",
                                  "--target", dest], rundir)
            # restic lays the snapshot's absolute paths down under the target
            self.check_copy("restic restore", dest + store)
            mbps("restic_restore", secs)
            shutil.rmtree(dest)

        # name, function, the phases it needs
        phases = (("full backup --jobs 1", full1, ()),
                  ("full backup --jobs 4", full4, ()),
                  ("restic backup", restic_full, ()),
                  ("tar c | tar x", tar, ()),
                  ("change 1% of the files", change, ()),
                  ("second backup", lfs_second, ("full backup --jobs 4",)),
                  ("restic second backup", restic_second, ("restic backup",)),
                  ("restore", lfs_restore, ("full backup --jobs 4",)),
                  ("restic restore", restic_restore, ("restic backup",)))
        try:
            run_phases(bench, i, phases, res, ROWS, failed, self.sample_load, self.node)
        finally:
            shutil.rmtree(rundir, ignore_errors=True)
        for key, num, den in (("full1_restic", "lfs1_mbps", "restic_mbps"),
                              ("full4_restic", "lfs4_mbps", "restic_mbps"),
                              ("restore_restic", "lfs_restore_mbps", "restic_restore_mbps")):
            if res.get(num) and res.get(den):
                res[key] = res[num] / res[den]
        if res.get("lfs_second_secs") and res.get("restic_second_secs"):
            res["second_speedup"] = res["restic_second_secs"] / res["lfs_second_secs"]
        return res


# ---- main -------------------------------------------------------------------------------


def parse_args(argv):
    p = argparse.ArgumentParser(
        prog="tools/bench backup",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Benchmark ledgerctl backup and restore against restic and tar c | tar x, "
                    "in one run.",
        epilog="""\
what is measured (sizes in brackets are --quick's):
  tree        2 GiB [256 MiB], tools/bench resync's: 3 directory levels, 30% of the
              bytes in files of 64-256 MiB, 40% in files of 1-16 MiB, 30% in files
              of 1-64 KiB; written once through the mount of a node a (ledgerctl
              init, ledgerfs -f), which
              stays mounted and idle while it is backed up. Each run then, with
              the caches dropped (sync; echo 3 > /proc/sys/vm/drop_caches) before
              every phase and each phase timed until sync -f of what it wrote:
  full backup ledgerctl backup a --to REPO --jobs 1, and --jobs 4, each into an
              empty repository; MB/s = the store's bytes / the time.
  restic      restic init (not timed), restic backup of a's store directory into
              that local repository (Debian's restic, its defaults: compression
              auto, its cache in the bench's directory; RESTIC_PASSWORD set).
  tar         tar c | tar x of a's store (with --xattrs, as both backups keep
              them) into an empty directory.
  second      4 KiB of 1% of the files (chosen at random) are overwritten through
              a's mount; ledgerctl backup --jobs 4 into the --jobs 4 repository,
              and a second restic backup into restic's; seconds, and the MiB each
              repository grew by.
  restore     ledgerctl restore of the --jobs 4 repository (its default --jobs)
              and restic restore latest --target, each into an empty directory
              and checked to hold the store's files and bytes.

Targets (issue 17): full backup (each --jobs) and restore at least as fast as
restic (ratio >= 1.0); the second backup at least 10 times faster than restic's
second snapshot. Each figure is the median of --runs runs (ratios: the median of
each run's ratio); the runs column gives each run's value. Run as root (the
backup reads trusted.* xattrs; dropping caches), with the bench directory on a
disk (not tmpfs) with room for about 7 times the tree. Exit status 0; 1 if a
phase failed in some run (the table still prints, with "-" where none
succeeded). restic comes from tools/deps.""")
    add_run_args(p, bench, "/var/tmp/ledgerfs-bench-backup", "256 MiB tree",
                 "meson build directory with ledgerfs and ledgerctl "
                 "(default $LEDGERFS_BUILD, else build/)")
    return parse_run_args(p, argv)


def restic_version():
    out = subprocess.run(["restic", "version"], capture_output=True, text=True).stdout
    m = re.search(r"restic (\S+)", out)
    return m.group(1) if m else "unknown"


def main(argv, bench_module):
    global bench
    bench = bench_module
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, bench.on_signal)
    signal.signal(signal.SIGHUP, bench.on_signal)
    sizes = QUICK if args.quick else FULL
    if not shutil.which("restic"):
        raise bench.BenchError("restic not found (tools/deps installs it)")
    # the tree and the node's journal, then per run two repositories, a copy or restore
    made_dir = check_ready(bench, args, "the node mounts a FUSE filesystem, the backup reads "
                           "trusted.* xattrs, and the caches are dropped", sizes["tree"] * 7)
    tmp = tempfile.mkdtemp(prefix="ledgerfs-bench-")
    workroot = tempfile.mkdtemp(prefix="run.", dir=args.dir)
    bb = None
    try:
        bb = BackupBench(args, sizes, workroot, tmp)
        bb.sample_load()
        load_start = os.getloadavg()
        head = commit(bench.ROOT)  # at the start: another commit may land during a long run
        bench.progress(f"writing the {sizes['tree'] // MIB} MiB tree on a's mount ...")
        bb.setup()
        samples, failed = collect_runs(bench, args.runs, bb.run_once, bb.node)
        bb.sample_load()
        load_end = os.getloadavg()
        missing, notes = missing_rows(ROWS, samples, args.runs)
        med = {k: statistics.median(v) for k, v in samples.items()}
        notes += sorted(bb.notes)
        secs = [f"{what} {med[k]:.1f}" for k, what in
                (("lfs1_secs", "backup --jobs 1"), ("lfs4_secs", "--jobs 4"),
                 ("restic_secs", "restic backup"), ("tar_secs", "tar"),
                 ("lfs_restore_secs", "restore"), ("restic_restore_secs", "restic restore"))
                if k in med]
        if secs:
            notes.append(f"seconds (medians): {', '.join(secs)}")
        if "changed_bytes" in med:
            notes.append(f"second backups: {med['changed_files']:.0f} files changed, "
                         f"{med['changed_bytes'] / MIB:.1f} MiB in all (medians)")
        notes += [f"first run's ledgerctl {s}" for s in bb.summaries]
        notes.append(f"restic {restic_version()}, its defaults (repository format and "
                     "compression); caches dropped before every phase; each phase timed "
                     "until sync -f of what it wrote")
        notes += load_notes(bb.loads)
        print_head(bench, args, head, load_start, load_end, notes)
        print_table(ROWS, samples, args.runs)
        return 1 if failed or missing else 0
    finally:
        if bb:
            try:
                bb.stop()
            except Exception as e:  # still remove the directories
                bench.warn(f"stopping node a: {e}")
        remove_workdirs(workroot, tmp, made_dir, args.dir)


bench = None  # tools/bench, set by main()

if __name__ == "__main__":
    run_standalone(main)
