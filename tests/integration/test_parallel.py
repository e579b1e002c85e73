"""Writers of different files apply in parallel (node.h's parallel writes):
the journal keeps one order, each file's writes apply in it, and nothing
else touches the store while a write is applying.  Several threads write,
truncate, chmod, fsync and rename at once; a replica must end identical,
and a kill -9 in the middle must leave a node that fsck finds clean and
whose journal replays to its store."""

import os
import random
import threading
import time

import lfs
from cluster import Cluster
from lfs import check

FILE_SIZE = 256 * 1024


def _writer(root, tid, seed, stop, errors):
    """One thread: writes to its own files and to the shared one, with a
    truncate, chmod, fsync or rename now and then."""
    rng = random.Random(seed)
    own = [os.path.join(root, f"t{tid}-{i}") for i in range(3)]
    shared = os.path.join(root, "shared")
    try:
        fds = [os.open(p, os.O_RDWR | os.O_CREAT, 0o644) for p in own]
        sfd = os.open(shared, os.O_RDWR)
        while not stop.is_set():
            op = rng.random()
            fd = sfd if op < 0.3 else fds[rng.randrange(len(fds))]
            if op < 0.85:
                off = rng.randrange(FILE_SIZE // 4096) * 4096
                os.pwrite(fd, os.urandom(4096), off)
            elif op < 0.9:
                os.ftruncate(fd, rng.randrange(FILE_SIZE))
            elif op < 0.94:
                os.fchmod(fd, rng.choice([0o600, 0o644, 0o640]))
            elif op < 0.97:
                os.fsync(fd)
            else:
                i = rng.randrange(len(own))
                new = os.path.join(root, f"t{tid}-{i}-{rng.randrange(1000)}")
                os.rename(own[i], new)
                own[i] = new
        for fd in fds + [sfd]:
            os.close(fd)
    except OSError as e:
        # A mount killed under the writers ends them; anything else is a failure.
        if e.errno not in (107, 5, 2):  # ENOTCONN, EIO, ENOENT after a kill
            errors.append(f"thread {tid}: {e!r}")


def _namespace(root, seed, stop):
    """Directories made, filled and renamed while the writers run."""
    rng = random.Random(seed)
    i = 0
    try:
        while not stop.is_set():
            d = os.path.join(root, f"dir{i}")
            os.mkdir(d)
            lfs.write_file(os.path.join(d, "f"), os.urandom(rng.randrange(1, 9000)))
            os.rename(d, os.path.join(root, f"moved{i}"))
            i += 1
    except OSError:
        pass


def _run(root, seconds, seed, kill=None):
    with open(os.path.join(root, "shared"), "wb") as f:
        f.write(b"\0" * FILE_SIZE)
    stop = threading.Event()
    errors = []
    threads = [threading.Thread(target=_writer, args=(root, t, seed + t, stop, errors))
               for t in range(6)]
    threads.append(threading.Thread(target=_namespace, args=(root, seed, stop)))
    for t in threads:
        t.start()
    time.sleep(seconds)
    if kill:
        kill()
    stop.set()
    for t in threads:
        t.join(timeout=60)
        check(not t.is_alive(), "a writer thread did not end within 60 s")
    return errors


def test_parallel_writers_converge_on_a_replica():
    """Six writers and a namespace thread for 4 s: the replica's digest equals
    the primary's and it never refused an event."""
    seed = int(os.environ.get("LFS_PARALLEL_SEED", random.randrange(1 << 32)))
    lfs.log(f"LFS_PARALLEL_SEED={seed}")
    with lfs.Workdir() as wd:
        cl = Cluster(wd, ["a", "b"])
        errors = _run(cl["a"].m(""), 4, seed)
        check(not errors, f"writers failed: {errors}")
        cl.wait_in_sync(timeout=60)
        log = cl.log_text("b")
        check("refused" not in log and "mismatch" not in log and "diverged" not in log,
              f"replica b refused an event:\n{lfs.excerpt(log)}")


def test_kill9_during_parallel_writes_leaves_a_clean_node():
    """kill -9 while six writers run, three times: fsck -n is clean and the
    journal replays to the store's digest each time."""
    seed = int(os.environ.get("LFS_PARALLEL_SEED", random.randrange(1 << 32)))
    lfs.log(f"LFS_PARALLEL_SEED={seed}")
    rng = random.Random(seed)
    with lfs.Workdir() as wd:
        n = wd.node("a")
        for rnd in range(3):
            top = n.m(f"r{rnd}")
            os.mkdir(top)
            _run(top, rng.uniform(0.5, 2.0), seed + 100 * rnd, kill=n.kill9)
            n.mount()
            n.unmount()
            cp = lfs.fsck(n, "-n")
            check(cp.returncode == 0, f"round {rnd} (LFS_PARALLEL_SEED={seed}): fsck -n "
                                      f"exited {cp.returncode}:\n{cp.stdout[-3000:]}\n"
                                      f"{cp.stderr[-1500:]}")
            lfs.check_rebuild_matches(n)
            n.mount()
        n.unmount()
