"""ledgerctl backup and restore (issue 17): a consistent backup of a running
node without stopping its writes, into content-addressed repositories, and a
restore that equals the source at the backup's journal position.

The source is normally a replica run with --serve; the writes go to the
primary's mount.  Digests (`ledgerctl digest`) compare stores.
"""

import os
import re
import shutil
import signal
import subprocess
import threading
import time

import lfs
from cluster import Cluster
from lfs import check, check_eq

SYNC = 60


def _tree(top, count=60, size=4000, seed=0):
    """count files under a few directories, a symlink, a hard link."""
    os.makedirs(top, exist_ok=True)
    for i in range(count):
        d = top / f"d{i % 4}"
        d.mkdir(exist_ok=True)
        lfs.write_file(d / f"f{i:03d}", bytes([(i + seed) % 251]) * (size + i))
    os.symlink("d0/f000", top / "link")
    os.link(top / "d1" / "f001", top / "hard")
    os.chmod(top / "d2" / "f002", 0o600)


def _backup(node_dir, *repos, env=None, extra=(), check_rc=True):
    argv = ["backup", node_dir]
    for r in repos:
        argv += ["--to", r]
    cp = lfs.ctl(*argv, *extra, check=False, env=env, timeout=300)
    if check_rc:
        check_eq(cp.returncode, 0, f"backup exit status (stderr {cp.stderr.strip()!r})")
    return cp


def _restore(repo, target, *extra, check_rc=True):
    cp = lfs.ctl("restore", repo, target, *extra, check=False, timeout=300)
    if check_rc:
        check_eq(cp.returncode, 0, f"restore exit status (stderr {cp.stderr.strip()!r})")
    return cp


def _env(**kw):
    return dict(os.environ, **{k: str(v) for k, v in kw.items()})


def _repo_bytes(repo):
    total = 0
    for root, _dirs, files in os.walk(repo):
        for f in files:
            total += os.lstat(os.path.join(root, f)).st_size
    return total


def _blobs(repo):
    return [os.path.join(r, f) for r, _d, fs in os.walk(repo / "packs") for f in fs]


def _manifests(repo):
    return sorted((repo / "manifests").iterdir())


class _Writer(threading.Thread):
    """Writes, renames, deletes and makes files in top until stopped."""

    def __init__(self, top):
        super().__init__(daemon=True)
        self.top = top
        self.stop_flag = threading.Event()
        self.ops = 0
        self.error = None

    def run(self):
        i = 0
        try:
            os.makedirs(self.top / "w", exist_ok=True)
            while not self.stop_flag.is_set():
                p = self.top / "w" / f"n{i % 40}"
                lfs.write_file(p, f"write {i}\n".encode() * (1 + i % 50))
                if i % 3 == 0:
                    os.rename(p, self.top / "w" / f"r{i % 7}")
                if i % 5 == 0 and (self.top / "w" / f"n{(i + 1) % 40}").exists():
                    os.unlink(self.top / "w" / f"n{(i + 1) % 40}")
                with open(self.top / f"d{i % 4}" / f"f{i % 60:03d}", "r+b") as f:
                    f.seek(i % 100)
                    f.write(b"changed!")
                i += 1
                self.ops += 1
                time.sleep(0.002)
        except Exception as e:  # reported by the test
            self.error = e

    def finish(self):
        self.stop_flag.set()
        self.join(30)
        check(self.error is None, f"the writer failed: {self.error!r}")


def _cluster(wd):
    cl = Cluster(wd, ["a", "b"], serve=["b"])
    _tree(cl["a"].m("data"))
    cl.wait_in_sync()
    return cl


def test_backup_of_a_replica_under_writes_restores_to_its_position():
    """While the primary renames, deletes and writes, a replica is backed up
    (slowly, so the copy overlaps many changes).  The writes stop before the
    backup reads its end position; the restore then equals the replica,
    which proves the events that ran during the copy were kept and
    replayed over a copy that had seen some of them."""
    with lfs.Workdir() as wd:
        cl = _cluster(wd)
        repo = wd.path / "repo"
        pause = wd.path / "pause"
        w = _Writer(cl["a"].m("data"))
        w.start()
        lfs.wait_until(lambda: w.ops > 20, 30, "the writer to get going")
        env = _env(LEDGERFS_FAULT_BACKUP_DELAY_MS=30, LEDGERFS_FAULT_BACKUP_PAUSE=pause)
        proc = subprocess.Popen([str(lfs.LEDGERCTL), "backup", str(cl["b"].dir), "--to",
                                 str(repo), "--jobs", "2"], env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        lfs.on_cleanup(proc.kill)
        lfs.wait_until(lambda: os.path.exists(f"{pause}.waiting") or proc.poll() is not None,
                       120, "the backup to copy the files")
        ops = w.ops
        w.finish()
        check(ops > 50, f"the writer ran during the copy ({ops} operations)")
        cl.wait_in_sync()
        pause.write_text("go\n")
        out, err = proc.communicate(timeout=120)
        check_eq(proc.returncode, 0, f"backup exit status (stderr {err!r})")
        m = re.search(r"(\d+) events replayed at restore", out)
        check(m and int(m.group(1)) > 0, f"the backup kept the events of its span: {out!r}")
        cp = _restore(repo, wd.path / "r")
        check(re.search(r"(\d+) events replayed", cp.stdout), cp.stdout)
        check_eq(lfs.digest(wd.path / "r" / "store"), lfs.digest(cl["b"].store),
                 "digest of the restored store and of the replica at the backup's position")


def test_backup_and_restore_of_a_stopped_node():
    """A stopped node is backed up from its disk; the restore equals it."""
    with lfs.Workdir() as wd:
        cl = _cluster(wd)
        cl.stop("b")
        repo = wd.path / "repo"
        cp = _backup(cl["b"].dir, repo)
        check("0 events replayed at restore" in cp.stdout, cp.stdout)
        _restore(repo, wd.path / "r")
        check_eq(lfs.digest(wd.path / "r" / "store"), lfs.digest(cl["b"].store),
                 "restored store and the stopped node's")
        cl.start("b")
        cl.wait_in_sync()
