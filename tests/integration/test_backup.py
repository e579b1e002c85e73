"""ledgerctl backup and restore (issue 17): a consistent backup of a running
node without stopping its writes, into content-addressed repositories, and a
restore that equals the source at the backup's journal position.

The source is normally a replica run with --serve; the writes go to the
primary's mount.  Digests (`ledgerctl digest`) compare stores.
"""

import hashlib
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
    """count files under a few directories, a symlink, a hard link, a fifo, an
    xattr, another owner, empty directories."""
    os.makedirs(top, exist_ok=True)
    for i in range(count):
        d = top / f"d{i % 4}"
        d.mkdir(exist_ok=True)
        lfs.write_file(d / f"f{i:03d}", bytes([(i + seed) % 251]) * (size + i))
    os.symlink("d0/f000", top / "link")
    os.link(top / "d1" / "f001", top / "hard")
    os.chmod(top / "d2" / "f002", 0o600)
    os.mkfifo(top / "fifo")
    os.setxattr(top / "d0" / "f000", "user.note", b"kept by the backup")
    os.chown(top / "d3" / "f003", 1234, 5678)
    os.makedirs(top / "empty" / "dir")


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


def _read_only(wd, node_dir):
    """node_dir bind-mounted read-only (a disk from a dead machine); unmounted at cleanup."""
    ro = wd.path / f"{node_dir.name}-readonly"
    ro.mkdir()
    lfs.run(["mount", "--bind", node_dir, ro])
    lfs.on_cleanup(lambda: lfs.run(["umount", ro], check=False))
    lfs.run(["mount", "-o", "remount,bind,ro", ro])
    return ro


def test_backup_and_restore_of_a_stopped_node():
    """A stopped node is backed up from its disk, mounted read-only; the
    restore equals it."""
    with lfs.Workdir() as wd:
        cl = _cluster(wd)
        cl.stop("b")
        repo = wd.path / "repo"
        cp = _backup(_read_only(wd, cl["b"].dir), repo)
        check("0 events replayed at restore" in cp.stdout, cp.stdout)
        _restore(repo, wd.path / "r")
        check_eq(lfs.digest(wd.path / "r" / "store"), lfs.digest(cl["b"].store),
                 "restored store and the stopped node's")
        cl.start("b")
        cl.wait_in_sync()


def test_backup_of_a_node_killed_mid_write_carries_its_unapplied_tail():
    """A primary killed with SIGKILL while writing (its replica down) is
    backed up from its disk, read-only, without starting it: the restore
    equals its store once its own start has replayed what it journaled."""
    with lfs.Workdir() as wd:
        cl = _cluster(wd)
        cl.stop("b")
        a = cl["a"]
        for i in range(30):
            lfs.write_file(a.m("data") / f"late{i}", f"late {i}\n".encode() * 100)
            os.rename(a.m("data") / f"late{i}", a.m("data") / f"moved{i}")
        cl.kill9("a")
        repo = wd.path / "repo"
        cp = _backup(_read_only(wd, a.dir), repo)
        m = re.search(r"(\d+) events replayed at restore", cp.stdout)
        check(m and int(m.group(1)) >= 1,
              f"the events journaled beyond the applied marks go with the backup: {cp.stdout!r}")
        _restore(repo, wd.path / "r")
        cl.start("a")
        check_eq(lfs.digest(wd.path / "r" / "store"), lfs.digest(a.store),
                 "the restore and the killed node's store after its start")


def test_backup_of_the_running_primary():
    """The primary itself, mounted and written to, can be backed up too."""
    with lfs.Workdir() as wd:
        cl = _cluster(wd)
        repo = wd.path / "repo"
        w = _Writer(cl["a"].m("data"))
        w.start()
        lfs.wait_until(lambda: w.ops > 20, 30, "the writer to get going")
        pause = wd.path / "pause"
        proc = subprocess.Popen([str(lfs.LEDGERCTL), "backup", str(cl["a"].dir), "--to",
                                 str(repo)], env=_env(LEDGERFS_FAULT_BACKUP_DELAY_MS=10,
                                                      LEDGERFS_FAULT_BACKUP_PAUSE=pause),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        lfs.on_cleanup(proc.kill)
        lfs.wait_until(lambda: os.path.exists(f"{pause}.waiting") or proc.poll() is not None,
                       120, "the backup to copy the files")
        w.finish()
        pause.write_text("go\n")
        out, err = proc.communicate(timeout=120)
        check_eq(proc.returncode, 0, f"backup of the primary (stderr {err!r})")
        _restore(repo, wd.path / "r")
        check_eq(lfs.digest(wd.path / "r" / "store"), lfs.digest(cl["a"].store),
                 "restore of the primary's backup")


def test_backup_retries_a_failed_subtask_alone():
    """A subtask made to fail once (fault hook) is retried and the backup
    completes; the restore equals the source."""
    with lfs.Workdir() as wd:
        cl = _cluster(wd)
        repo = wd.path / "repo"
        cp = _backup(cl["b"].dir, repo, env=_env(LEDGERFS_FAULT_BACKUP_FAIL_ONCE="data/d1/f005"),
                     extra=("--jobs", "3", "--retries", "2"))
        check(re.search(r"subtask of \d+ files from .* failed \(data/d1/f005: injected fault",
                        cp.stderr), f"the failure is reported: {cp.stderr!r}")
        check("retrying (1 of 2)" in cp.stderr, cp.stderr)
        check("1 subtasks retried" in cp.stdout, cp.stdout)
        _restore(repo, wd.path / "r")
        check_eq(lfs.digest(wd.path / "r" / "store"), lfs.digest(cl["b"].store), "restore")
        # With no retries left the failure ends the backup, naming the file.
        cp = _backup(cl["b"].dir, wd.path / "repo2", check_rc=False,
                     env=_env(LEDGERFS_FAULT_BACKUP_FAIL_ONCE="data/d1/f005"),
                     extra=("--retries", "0"))
        check_eq(cp.returncode, 1, "a subtask failing with no retry left")
        check("data/d1/f005: injected fault" in cp.stderr, cp.stderr)
        check_eq(list((wd.path / "repo2" / "manifests").iterdir()), [],
                 "no manifest for a failed backup")


def test_backup_killed_half_way_resumes_without_uploading_twice():
    """A backup killed with SIGKILL half-way leaves whole blobs only; run
    again, it stores only the rest and completes."""
    with lfs.Workdir() as wd:
        cl = Cluster(wd, ["a", "b"], serve=["b"])
        _tree(cl["a"].m("data"), count=120, size=20000)
        cl.wait_in_sync()
        repo = wd.path / "repo"
        proc = subprocess.Popen([str(lfs.LEDGERCTL), "backup", str(cl["b"].dir), "--to",
                                 str(repo), "--jobs", "1"],
                                env=_env(LEDGERFS_FAULT_BACKUP_DELAY_MS=40),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        lfs.on_cleanup(proc.kill)
        lfs.wait_until(lambda: (repo / "packs").exists() and len(_blobs(repo)) >= 30, 60,
                       "the backup to store 30 blobs")
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        before = len(_blobs(repo))
        check(before < 120, f"killed half-way ({before} blobs stored)")
        check_eq(list((repo / "manifests").iterdir()), [], "no manifest yet")
        cp = _backup(cl["b"].dir, repo)
        m = re.search(r"new in (\d+) blobs", cp.stdout)
        check(m and 0 < int(m.group(1)) <= 120 - before + 2,
              f"the rerun stores only what was missing ({before} there): {cp.stdout!r}")
        check_eq(os.listdir(repo / "tmp"), [], "no temp file of the killed run left")
        _restore(repo, wd.path / "r")
        check_eq(lfs.digest(wd.path / "r" / "store"), lfs.digest(cl["b"].store), "restore")


def test_second_backup_after_a_one_percent_change_stores_about_one_percent():
    """200 files of 50 KB; 2 change; the repository grows by about their size,
    and the digest cache spares reading the files that did not change."""
    with lfs.Workdir() as wd:
        cl = Cluster(wd, ["a", "b"], serve=["b"])
        _tree(cl["a"].m("data"), count=200, size=50000)
        cl.wait_in_sync()
        time.sleep(2.2)   # the cache keeps only files whose ctime is over 2 s old
        repo = wd.path / "repo"
        cp = _backup(cl["b"].dir, repo)
        check(" 0 unchanged files not read" in cp.stdout, cp.stdout)
        first = _repo_bytes(repo)
        for i in (3, 77):
            lfs.write_file(cl["a"].m("data") / f"d{i % 4}" / f"f{i:03d}", os.urandom(50000))
        cl.wait_in_sync()
        cp = _backup(cl["b"].dir, repo)
        m = re.search(r"(\d+) unchanged files not read", cp.stdout)
        check(m and int(m.group(1)) >= 190, f"the digest cache was used: {cp.stdout!r}")
        grown = _repo_bytes(repo) - first
        check(grown < 0.03 * first,
              f"second backup grew the repository by {grown} of {first} bytes: {cp.stdout!r}")
        check(grown >= 100000, f"and it stored the changed files ({grown} bytes)")
        check_eq(len(_manifests(repo)), 2, "two backups")
        listing = lfs.ctl("backup", "list", repo).stdout.splitlines()
        check_eq(len(listing), 2, f"backup list: {listing!r}")
        check(all("  node b  term 1  " in ln and " as of " in ln for ln in listing), listing)
        _restore(repo, wd.path / "r")
        check_eq(lfs.digest(wd.path / "r" / "store"), lfs.digest(cl["b"].store),
                 "the newest backup is restored")


def test_a_second_backup_copies_what_did_not_change_and_reads_every_change():
    """After a first backup of a settled tree, the second copies the entries
    of unchanged objects from the first's manifest without opening them
    (the summary counts them), and reads every object a change touched:
    metadata only (chmod of a file and of a directory, an xattr), a rename
    across directories, a hard link to an unchanged file, a symlink, a new
    directory, a removal, a rewrite of the same size.  Its restore is the
    store, xattrs and versions included."""
    with lfs.Workdir() as wd:
        cl = Cluster(wd, ["a", "b"], serve=["b"])
        data = cl["a"].m("data")
        _tree(data, count=80, size=3000)
        cl.wait_in_sync()
        time.sleep(2.2)   # the cache keeps only objects whose ctime is over 2 s old
        repo = wd.path / "repo"
        cp = _backup(cl["b"].dir, repo)
        check(" 0 entries copied from the last backup" in cp.stdout, cp.stdout)
        os.chmod(data / "d0" / "f000", 0o600)
        os.chmod(data / "d1", 0o700)
        os.setxattr(data / "d2" / "f002", "user.note", b"changed")
        os.rename(data / "d3" / "f003", data / "d0" / "moved")
        os.link(data / "d1" / "f005", data / "d2" / "link")
        os.symlink("d0/moved", data / "sym")
        os.mkdir(data / "new")
        lfs.write_file(data / "new" / "g", b"new file\n")
        os.unlink(data / "d2" / "f006")
        lfs.write_file(data / "d3" / "f007", os.urandom(3000))
        cl.wait_in_sync()
        cp = _backup(cl["b"].dir, repo)
        m = re.search(r"(\d+) entries copied from the last backup", cp.stdout)
        entries = re.search(r": (\d+) entries,", cp.stdout)
        check(m and entries, cp.stdout)
        # The root, data, d1, d2, d3, d0 and the nine objects changed are read.
        check(int(entries.group(1)) - 20 <= int(m.group(1)) < int(entries.group(1)) - 12,
              f"only the changed objects are read: {cp.stdout!r}")
        _restore(repo, wd.path / "r")
        lfs.check_same_tree(wd.path / "r" / "store", cl["b"].store, "the second backup's restore")


def test_corrupt_blob_or_manifest_is_found_and_refused_by_name():
    with lfs.Workdir() as wd:
        cl = _cluster(wd)
        repo = wd.path / "repo"
        _backup(cl["b"].dir, repo)
        cp = lfs.ctl("backup", "verify", repo)
        check("all good" in cp.stdout, cp.stdout)
        # Flip a byte in the blob of a known file.
        want = (cl["b"].store / "data" / "d2" / "f006").read_bytes()
        sha = hashlib.sha256(want).hexdigest()
        blob = repo / "packs" / sha[:2] / sha
        data = bytearray(blob.read_bytes())
        data[10] ^= 0xff
        blob.write_bytes(bytes(data))
        cp = lfs.ctl("backup", "verify", repo, check=False)
        check_eq(cp.returncode, 1, "verify finds the corrupt blob")
        check(f"corrupt: blob {blob}" in cp.stdout and "data/d2/f006" in cp.stdout, cp.stdout)
        cp = _restore(repo, wd.path / "r", check_rc=False)
        check_eq(cp.returncode, 1, "restore refuses")
        check(f"blob {blob}" in cp.stderr and "corrupt" in cp.stderr, cp.stderr)
        data[10] ^= 0xff
        blob.write_bytes(bytes(data))
        # The refused restore was cut short: run again, it is taken up where it stopped.
        check((wd.path / "r" / "restore.incomplete").exists(), "the cut restore is marked")
        cp = _restore(repo, wd.path / "r")
        check("resuming an interrupted restore" in cp.stderr, cp.stderr)
        check(not (wd.path / "r" / "restore.incomplete").exists(), "the mark is gone")
        check_eq(lfs.digest(wd.path / "r" / "store"), lfs.digest(cl["b"].store),
                 "the resumed restore")
        # A manifest with one byte changed.
        man = _manifests(repo)[0]
        data = bytearray(man.read_bytes())
        data[len(data) // 2] ^= 0x01
        man.write_bytes(bytes(data))
        cp = _restore(repo, wd.path / "r2", check_rc=False)
        check_eq(cp.returncode, 1, "restore refuses a corrupt manifest")
        check(f"manifest {man} is corrupt: checksum mismatch" in cp.stderr, cp.stderr)
        check(not (wd.path / "r2").exists(), "nothing written for a corrupt manifest")
        cp = lfs.ctl("backup", "verify", repo, check=False)
        check_eq(cp.returncode, 1, "verify names the corrupt manifest")
        check(f"manifest {man} is corrupt" in cp.stdout, cp.stdout)
        # A manifest whose checksum is right but whose paths leave the store.
        data[len(data) // 2] ^= 0x01
        body = bytes(data[:-32]).replace(b"data/d1/f005", b"../../escape", 1)
        man.write_bytes(body + hashlib.sha256(body).digest())
        cp = _restore(repo, wd.path / "r3", check_rc=False)
        check_eq(cp.returncode, 1, "restore refuses a path out of the store")
        check("refused: manifest" in cp.stderr and "../../escape" in cp.stderr, cp.stderr)
        check(not (wd.path / "escape").exists() and not (wd.path / "r3" / "store" / "data").exists(),
              "nothing written")


def test_a_full_or_vanished_repository_fails_alone_and_keeps_what_it_had():
    """Two repositories; one a 2 MiB tmpfs.  A first small backup fits in
    both; a second larger one fills the tmpfs: that repository is named as
    failed, the other completes, and the tmpfs's first backup still
    verifies and restores.  A repository removed mid-backup likewise."""
    with lfs.Workdir() as wd:
        cl = _cluster(wd)
        good, small = wd.path / "good", wd.path / "small"
        lfs.mount_tmpfs(small, size="2m")
        _backup(cl["b"].dir, good, small)
        for i in range(40):
            lfs.write_file(cl["a"].m("data") / f"big{i}", os.urandom(100000))
        cl.wait_in_sync()
        cp = _backup(cl["b"].dir, good, small, check_rc=False)
        check_eq(cp.returncode, 1, "a repository failed")
        check(re.search(rf"repository {small} FAILED: .*No space left on device", cp.stderr),
              f"the full repository is named: {cp.stderr!r}")
        check(f"{good}: backup " in cp.stdout, f"the other completed: {cp.stdout!r}")
        check_eq(len(_manifests(good)), 2, "both backups in the good repository")
        check_eq(len(_manifests(small)), 1, "the first backup only in the full one")
        check_eq(os.listdir(small / "tmp"), [], "no partial blob left in the full repository")
        cp = lfs.ctl("backup", "verify", small)
        check("all good" in cp.stdout, cp.stdout)
        _restore(small, wd.path / "r-small")
        _restore(good, wd.path / "r-good")
        check_eq(lfs.digest(wd.path / "r-good" / "store"), lfs.digest(cl["b"].store),
                 "the good repository's backup")
        # A repository that vanishes mid-backup.
        gone = wd.path / "gone"
        proc = subprocess.Popen([str(lfs.LEDGERCTL), "backup", str(cl["b"].dir), "--to",
                                 str(good), "--to", str(gone), "--retries", "1"],
                                env=_env(LEDGERFS_FAULT_BACKUP_DELAY_MS=20),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        lfs.on_cleanup(proc.kill)
        lfs.wait_until(lambda: (gone / "packs").exists(), 30, "the backup to start")
        time.sleep(0.3)

        def removed():
            # The backup may create a file between rmtree's listing and its
            # rmdir: remove again until the directory is gone.
            shutil.rmtree(gone, ignore_errors=True)
            return not gone.exists()
        lfs.wait_until(removed, 30, f"{gone} to be removed under the running backup")
        for i in range(3):   # new contents, so both repositories need to store a blob
            lfs.write_file(cl["a"].m("data") / f"late{i}", os.urandom(1000))
        out, err = proc.communicate(timeout=120)
        check_eq(proc.returncode, 1, f"a vanished repository fails (stdout {out!r})")
        check(f"repository {gone} FAILED" in err, f"named: {err!r}")
        check_eq(len(_manifests(good)), 3, "the other repository completed")
        cp = lfs.ctl("backup", "verify", good)
        check("all good" in cp.stdout, cp.stdout)


def test_restore_delta_rewrites_only_what_differs():
    with lfs.Workdir() as wd:
        cl = _cluster(wd)
        repo = wd.path / "repo"
        _backup(cl["b"].dir, repo)
        target = wd.path / "r"
        _restore(repo, target)
        store = target / "store"
        lfs.write_file(store / "data" / "d0" / "f004", b"damaged\n")
        os.unlink(store / "data" / "d3" / "f003")
        lfs.write_file(store / "data" / "extra", b"not in the backup\n")
        os.makedirs(store / "data" / "extradir" / "sub")
        os.chmod(store / "data" / "d1" / "f005", 0o600)
        cp = _restore(repo, target, check_rc=False)
        check_eq(cp.returncode, 1, "a restore over a non-empty store needs --delta")
        check("--delta" in cp.stderr, cp.stderr)
        cp = _restore(repo, target, "--delta")
        m = re.search(r"(\d+) files written .* (\d+) kept, (\d+) removed", cp.stdout)
        check(m, cp.stdout)
        check_eq((int(m.group(1)), int(m.group(3))), (2, 2), f"written, removed: {cp.stdout!r}")
        check(int(m.group(2)) > 50, f"the others kept: {cp.stdout!r}")
        check_eq(lfs.digest(store), lfs.digest(cl["b"].store), "delta restore")


def test_restore_node_starts_at_the_backup_and_catches_up():
    """A node made by init and restored with --node starts at the backup's
    position and fetches only what came after it from its peers."""
    from cluster import ClusterNode, free_ports
    with lfs.Workdir() as wd:
        cl = _cluster(wd)
        repo = wd.path / "repo"
        _backup(cl["b"].dir, repo)
        lfs.write_file(cl["a"].m("data") / "after-backup", b"written after the backup\n",
                       fsync=True)
        cl.wait_in_sync()
        port = free_ports(1)[0]
        c = ClusterNode(wd.path, "c", port, serve=True)
        lfs.ctl("init", c.dir, "--name", "c", "--ca", cl.ca, "--listen", c.address,
                "--peer", f"a={cl['a'].address}", "--peer", f"b={cl['b'].address}",
                "--replica")
        c.load_ids()
        for nm in ("a", "b"):
            lfs.ctl("peer", "add", cl[nm].dir, f"c={c.address}")
        cp = _restore(repo, c.dir, "--node", "c")
        check("events replayed" in cp.stdout, cp.stdout)
        c.start()
        lfs.on_cleanup(lambda: c.stop() if c.alive() else None)

        def caught_up():
            st = c.try_status()
            return st and lfs.digest(c.store) == lfs.digest(cl["a"].store)
        lfs.wait_until(caught_up, SYNC, "the restored node to catch up")
        check_eq((c.store / "data" / "after-backup").read_bytes(),
                 b"written after the backup\n", "the event after the backup reached it")
        check("snapshot" not in c.log_text().lower(), f"no snapshot resync: {c.log_tail()}")
        cp = _restore(repo, c.dir, "--node", "x", check_rc=False)
        check_eq(cp.returncode, 1, "--node names the node")


def _archived_cluster(wd, repo):
    """a (primary, mounted) and b (--serve) archiving into repo."""
    cl = Cluster(wd, ["a", "b"], serve=["b"], start=False)
    with open(cl["b"].dir / "ledgerfs.conf", "a") as f:
        f.write(f"\n[archive]\nrepository = {repo}\n")
    cl.start("a")
    cl.start("b")
    return cl


def _wait_archived(cl, name):
    def done():
        st = cl.status(name)
        arch = st.get("archive")
        return arch is not None and arch["lag_events"] == 0 and not arch["error"]
    lfs.wait_until(done, SYNC, f"{name}'s archive to catch up")


def test_point_in_time_restore_to_a_seq_and_to_a_time():
    """With b archiving, a history of writes, renames, a chmod and deletes
    runs after a backup; restoring to a seq and to a time in the middle
    each equals b's store as recorded at that moment, and a file deleted
    after the backup comes back.  A corrupt segment is refused by name."""
    with lfs.Workdir() as wd:
        repo = wd.path / "repo"
        cl = _archived_cluster(wd, repo)
        a = cl["a"]
        top = a.m("data")
        _tree(top, count=20)
        cl.wait_in_sync()
        _backup(cl["b"].dir, repo)
        steps = [
            lambda: lfs.write_file(top / "new1", b"first new file\n"),
            lambda: os.rename(top / "d0" / "f004", top / "moved"),
            lambda: os.unlink(top / "d1" / "f005"),           # deleted after the backup
            lambda: os.chmod(top / "moved", 0o640),
            lambda: lfs.write_file(top / "d2" / "f006", b"overwritten\n"),
            lambda: shutil.rmtree(top / "d3"),
            lambda: lfs.write_file(top / "new2", b"last\n"),
        ]
        points = []   # (a's seq, time, digest of b's store) after each step
        for step in steps:
            step()
            cl.wait_in_sync()
            points.append((cl.seq("a"), time.time(), lfs.digest(cl["b"].store)))
            time.sleep(0.3)
        _wait_archived(cl, "b")
        check(list((repo / "archive").iterdir()), "segments were archived")
        # To a seq in the middle: right after the deletion.
        seq, _t, dig = points[2]
        cp = _restore(repo, wd.path / "r-seq", "--to-seq", f"{a.id}:{seq}")
        check(re.search(r"then \d+ archived events", cp.stdout), cp.stdout)
        check_eq(lfs.digest(wd.path / "r-seq" / "store"), dig, f"restore to {a.id}:{seq}")
        # To a time in the middle: after the chmod.
        _seq, t, dig = points[3]
        _restore(repo, wd.path / "r-time", "--to-time", f"{t:.3f}")
        check_eq(lfs.digest(wd.path / "r-time" / "store"), dig, f"restore to time {t:.3f}")
        iso = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t * 1000) % 1000:03d}Z"
        _restore(repo, wd.path / "r-iso", "--to-time", iso)
        check_eq(lfs.digest(wd.path / "r-iso" / "store"), dig, f"restore to time {iso}")
        # To a point before the deletion: the file comes back.
        seq, _t, dig = points[1]
        _restore(repo, wd.path / "r-back", "--to-seq", f"{a.id}:{seq}")
        check_eq(lfs.digest(wd.path / "r-back" / "store"), dig, "restore before the delete")
        back = wd.path / "r-back" / "store" / "data" / "d1" / "f005"
        check_eq(back.read_bytes(), bytes([5]) * 4005, "the deleted file is back")
        # The whole history.
        seq, _t, dig = points[-1]
        _restore(repo, wd.path / "r-end", "--to-seq", f"{a.id}:{seq}")
        check_eq(lfs.digest(wd.path / "r-end" / "store"), dig, "restore to the end")
        # Beyond what is archived: refused.
        cp = _restore(repo, wd.path / "r-far", "--to-seq", f"{a.id}:{seq + 1000}",
                      check_rc=False)
        check_eq(cp.returncode, 1, f"a point beyond the archive: {cp.stdout!r}")
        check("does not reach" in cp.stderr, cp.stderr)
        # A corrupt segment is refused, named.
        segs = sorted((repo / "archive" / a.id).iterdir())
        data = bytearray(segs[-1].read_bytes())
        data[len(data) // 2] ^= 0x10
        segs[-1].write_bytes(bytes(data))
        cp = _restore(repo, wd.path / "r-bad", "--to-seq", f"{a.id}:{seq}", check_rc=False)
        check_eq(cp.returncode, 1, "restore over a corrupt segment")
        check(f"segment {segs[-1]} is corrupt: checksum mismatch" in cp.stderr, cp.stderr)
        st = lfs.ctl("status", cl["b"].dir).stdout
        check(re.search(r"^archive: 0 events behind", st, re.M), st)
        # A restart goes on from where the archive was: nothing is archived twice.
        before = sorted(p.name for p in (repo / "archive" / a.id).iterdir())
        cl.stop("b")
        cl.start("b")
        _wait_archived(cl, "b")
        time.sleep(1.5)
        check_eq(sorted(p.name for p in (repo / "archive" / a.id).iterdir()), before,
                 "segments after a restart of b")


def test_a_lost_cluster_comes_back_as_a_new_node_from_the_backup_and_the_archive():
    """Both nodes gone: a node made anew with the cluster's CA and restored
    with --node and --to-seq holds the store as it was at the end of the
    archive, starts there with nothing to fetch, takes writes as the new
    primary, and fsck finds it clean.  The README's "whole cluster is
    lost" case."""
    from cluster import ClusterNode, free_ports
    with lfs.Workdir() as wd:
        repo = wd.path / "repo"
        cl = _archived_cluster(wd, repo)
        a = cl["a"]
        top = a.m("data")
        _tree(top, count=12)
        cl.wait_in_sync()
        _backup(cl["b"].dir, repo)
        lfs.write_file(top / "after", b"written after the backup\n")
        os.rename(top / "d0" / "f000", top / "renamed")
        os.unlink(top / "d1" / "f001")
        cl.wait_in_sync()
        _wait_archived(cl, "b")
        seq, dig = cl.seq("a"), lfs.digest(cl["b"].store)
        cl.stop("a")
        cl.stop("b")
        n = ClusterNode(wd.path, "a2", free_ports(1)[0])
        lfs.ctl("init", n.dir, "--name", "a2", "--ca", cl.ca, "--listen", n.address)
        cp = _restore(repo, n.dir, "--node", "a2", "--to-seq", f"{a.id}:{seq}")
        check(re.search(r"then \d+ archived events", cp.stdout), cp.stdout)
        check_eq(lfs.digest(n.store), dig, "the restored node's store at the archive's end")
        n.start()
        lfs.on_cleanup(lambda: n.stop() if n.alive() else None)
        from cluster import vector
        check_eq(vector(n.status()).get(a.id, 0), seq, f"a2 starts at {a.id}:{seq}")
        lfs.write_file(n.m("data") / "new-primary", b"the cluster goes on\n", fsync=True)
        check_eq((n.store / "data" / "renamed").read_bytes(), bytes([0]) * 4000,
                 "a file renamed after the backup is there under its new name")
        n.stop()
        cp = lfs.fsck(n, "-n")
        check_eq(cp.returncode, 0, f"fsck -n of the restored node:\n{cp.stdout[-2000:]}")


def test_expire_keeps_the_point_in_time_chain_of_what_it_keeps():
    """Three backups with archived history between them; expire --keep-last 1
    drops the first two, their blobs no longer named and the segments below
    the kept backup, and a point-in-time restore after the kept backup still
    works; one before it is refused as having no backup."""
    with lfs.Workdir() as wd:
        repo = wd.path / "repo"
        cl = _archived_cluster(wd, repo)
        a = cl["a"]
        top = a.m("data")
        _tree(top, count=10)
        cl.wait_in_sync()
        _wait_archived(cl, "b")
        _backup(cl["b"].dir, repo)
        early = cl.seq("a")
        for k in range(2):
            lfs.write_file(top / f"gen{k}", os.urandom(30000))
            os.unlink(top / "d0" / f"f{k * 4:03d}")
            cl.wait_in_sync()
            _wait_archived(cl, "b")   # so that segments end between the backups
            _backup(cl["b"].dir, repo)
        lfs.write_file(top / "after", b"after the last backup\n")
        cl.wait_in_sync()
        _wait_archived(cl, "b")
        end, dig = cl.seq("a"), lfs.digest(cl["b"].store)
        cp = lfs.ctl("backup", "expire", repo, "--keep-within", "1h")
        check("3 backups kept, 0 expired" in cp.stdout, cp.stdout)
        cp = lfs.ctl("backup", "expire", repo, "--keep-last", "1")
        m = re.search(r"1 backups kept, 2 expired, (\d+) blobs .* (\d+) archive segments removed",
                      cp.stdout)
        check(m and int(m.group(1)) > 0 and int(m.group(2)) > 0, cp.stdout)
        check_eq(len(_manifests(repo)), 1, "one backup left")
        cp = lfs.ctl("backup", "verify", repo)
        check("all good" in cp.stdout, cp.stdout)
        _restore(repo, wd.path / "r-end", "--to-seq", f"{a.id}:{end}")
        check_eq(lfs.digest(wd.path / "r-end" / "store"), dig, "the kept chain restores")
        cp = _restore(repo, wd.path / "r-early", "--to-seq", f"{a.id}:{early}", check_rc=False)
        check_eq(cp.returncode, 1, "a point before every kept backup")
        check("no backup before the target point" in cp.stderr, cp.stderr)


def test_trimming_waits_for_the_archive():
    """While b cannot archive (REPO/archive is a file), b keeps every event
    of a that a trims, and its status names the failure; once archiving
    works again b's archive catches up and b trims too."""
    from test_retention import set_key, oldest
    with lfs.Workdir() as wd:
        repo = wd.path / "repo"
        cl = Cluster(wd, ["a", "b"], serve=["b"], start=False)
        for name in ("a", "b"):
            set_key(cl[name], "retain_age", "1")
        with open(cl["b"].dir / "ledgerfs.conf", "a") as f:
            f.write(f"\n[archive]\nrepository = {repo}\n")
        cl.start("a")
        cl.start("b")
        lfs.write_file(cl["a"].m("first"), b"1\n", fsync=True)
        cl.wait_in_sync()
        _wait_archived(cl, "b")
        archived = cl.applied("b", "a")
        cl.stop("b")
        shutil.rmtree(repo / "archive")
        (repo / "archive").write_text("in the way\n")
        cl.start("b")
        a = cl["a"]
        for i in range(30):
            lfs.write_file(a.m(f"f{i}"), b"x" * 100)
        lfs.write_file(a.m("last"), b"y", fsync=True)
        cl.wait_in_sync()
        def trimmed_past(name):
            held = oldest(cl, name, "a")   # 0: none held, all trimmed
            return held == 0 or held > archived + 1

        lfs.wait_until(lambda: trimmed_past("a"), 30,
                       "a to trim its confirmed events past what b archived")
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            check(not trimmed_past("b"),
                  f"b keeps what it has not archived (archived up to {archived}, oldest held "
                  f"{oldest(cl, 'b', 'a')})")
            time.sleep(0.5)
        arch = cl.status("b")["archive"]
        check(arch["lag_events"] > 30 and "archive" in arch["error"], f"status: {arch!r}")
        st = lfs.ctl("status", cl["b"].dir).stdout
        check(re.search(r"^archive: \d+ events behind, .*; failing: ", st, re.M), st)
        metrics = lfs.ctl("metrics", cl["b"].dir).stdout
        check(re.search(r"^ledgerfs_archive_failing\{.*\} 1$", metrics, re.M), metrics)
        (repo / "archive").unlink()
        _wait_archived(cl, "b")
        lfs.wait_until(lambda: trimmed_past("b"), 30, "b to trim once archived")


def test_backup_and_restore_help_and_usage():
    for args in (["backup", "--help"], ["backup", "list", "--help"], ["backup", "verify", "--help"],
                 ["backup", "expire", "--help"], ["restore", "--help"], ["help", "restore"]):
        cp = lfs.ctl(*args, check=False)
        check_eq(cp.returncode, 0, f"ledgerctl {' '.join(args)}")
        check("usage: ledgerctl" in cp.stdout, f"usage from {args}: {cp.stdout!r}")
    for args in (["backup"], ["backup", "/nonexistent"], ["restore", "/r"],
                 ["backup", "expire", "/r"], ["backup", "x", "--to", "/r", "--jobs", "0"],
                 ["restore", "/r", "/t", "--to-seq", "bad"], ["restore", "/r", "/t", "--to-time",
                                                              "yesterday"]):
        cp = lfs.ctl(*args, check=False)
        check_eq(cp.returncode, 2, f"ledgerctl {' '.join(args)}: {cp.stderr!r}")
    with lfs.Workdir() as wd:
        cp = lfs.ctl("restore", wd.path / "none", wd.path / "t", check=False)
        check_eq(cp.returncode, 1, "restore from a missing repository")
        check(str(wd.path / "none") in cp.stderr, cp.stderr)


def test_progress_on_a_terminal_and_one_summary_line_otherwise():
    from test_rescue import _run_on_pty
    with lfs.Workdir() as wd:
        cl = _cluster(wd)
        repo = wd.path / "repo"
        cp = _backup(cl["b"].dir, repo)
        check("ETA" not in cp.stderr, f"no progress line without a terminal: {cp.stderr!r}")
        check_eq(len([ln for ln in cp.stdout.splitlines() if ln.startswith("backup of b")]), 1,
                 f"one summary line: {cp.stdout!r}")
        rc, out, err = _run_on_pty(["env", "LEDGERFS_FAULT_BACKUP_DELAY_MS=10", lfs.LEDGERCTL,
                                    "backup", cl["b"].dir, "--to", repo, "--jobs", "1"])
        check_eq(rc, 0, f"backup on a terminal: {err!r}")
        check(re.search(r"backup \[[#.]+\] +\d+% .* of .*/s, ETA ", err),
              f"a progress line with rate and ETA: {err!r}")
        rc, out, err = _run_on_pty([lfs.LEDGERCTL, "backup", "verify", repo])
        check_eq(rc, 0, f"verify on a terminal: {err!r}")
        check("verify [" in err, err)


class _MovingWriter(_Writer):
    """Also renames directories back and forth, and hard-links, while writing."""

    def run(self):
        i = 0
        cur = "x"
        try:
            os.makedirs(self.top / "mv" / cur, exist_ok=True)
            while not self.stop_flag.is_set():
                d = self.top / "mv" / cur
                lfs.write_file(d / f"g{i % 10}", f"{i}\n".encode() * 30)
                if i % 9 == 0:
                    link = self.top / "mv" / f"h{i % 3}"
                    if link.exists():
                        os.unlink(link)
                    os.link(d / f"g{i % 10}", link)
                if i % 4 == 0:
                    new = "y" if cur == "x" else "x"
                    os.rename(d, self.top / "mv" / new)
                    cur = new
                with open(self.top / f"d{i % 4}" / f"f{i % 60:03d}", "r+b") as f:
                    f.seek(i % 300)
                    f.write(b"moving!")
                i += 1
                self.ops += 1
                time.sleep(0.003)
        except Exception as e:  # reported by the test
            self.error = e


def test_a_member_restored_from_a_backup_taken_under_renames_converges():
    """A backup taken while files and directories are renamed, linked and
    written throughout, its walks slowed down so that every free one sees
    names move (the last is made under the node's lock), restores into a
    new member, which then
    applies every later event strictly and converges with the cluster,
    without a divergence: the backup was the store exactly at its
    position."""
    from cluster import ClusterNode, free_ports
    with lfs.Workdir() as wd:
        cl = _cluster(wd)
        repo = wd.path / "repo"
        w = _MovingWriter(cl["a"].m("data"))
        w.start()
        lfs.wait_until(lambda: w.ops > 20, 30, "the writer to get going")
        # Walks slowed down so that names move during each: the last walk is made
        # while the node holds its lock for the backup.
        cp = _backup(cl["b"].dir, repo, env=_env(LEDGERFS_FAULT_BACKUP_DELAY_MS=15,
                                                 LEDGERFS_FAULT_BACKUP_WALK_DELAY_MS=10),
                     extra=("--jobs", "2"))
        check("walking once more under the node's lock" in cp.stderr, cp.stderr)
        check("let go of the node lock" in cl["b"].log_text(), "b let go of its lock")
        m = re.search(r"(\d+) events replayed at restore", cp.stdout)
        check(m and int(m.group(1)) > 0, f"writes ran during the backup: {cp.stdout!r}")
        time.sleep(0.5)
        w.finish()
        cl.wait_in_sync()
        port = free_ports(1)[0]
        c = ClusterNode(wd.path, "c", port, serve=True)
        lfs.ctl("init", c.dir, "--name", "c", "--ca", cl.ca, "--listen", c.address,
                "--peer", f"a={cl['a'].address}", "--peer", f"b={cl['b'].address}",
                "--replica")
        c.load_ids()
        for nm in ("a", "b"):
            lfs.ctl("peer", "add", cl[nm].dir, f"c={c.address}")
        _restore(repo, c.dir, "--node", "c")
        c.start()
        lfs.on_cleanup(lambda: c.stop() if c.alive() else None)
        want = lfs.digest(cl["a"].store)
        lfs.wait_until(lambda: lfs.digest(c.store) == want, SYNC, "c to converge")
        st = c.status()
        check_eq(st["divergence"]["divergences"], 0, f"no divergence on c: {st['divergence']!r}")
        check("snapshot" not in c.log_text().lower(), f"no snapshot resync: {c.log_tail()}")
