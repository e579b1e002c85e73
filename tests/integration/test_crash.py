"""Crash test (DESIGN invariants 1-3): a random workload on the mount, the
daemon killed with SIGKILL at a random moment, then remount and check.

Each round runs the workload in a child process in its own directory of
the mount.  The child writes with and without fsync, renames, unlinks,
makes directories, truncates and hard-links; right after each successful
fsync it records the file's content in a side file outside the mount (the
side file fsync'd too).  A file, once fsync'd, is only ever appended to,
and the child marks it "may have grown" before each append, so that after
the crash every such file must hold exactly its last recorded content, or
at least begin with it.  After the remount (which replays the unapplied
tail), `fsck.ledgerfs -n` must find the unmounted node clean and a replay
of the whole journal into an empty directory must digest like the store.

Knobs: LFS_CRASH_ROUNDS (default 30), LFS_CRASH_SEED (default: random,
printed so that a failing run can be repeated).
"""

import base64
import json
import os
import random
import signal
import subprocess
import sys
import time

import lfs
from lfs import check, check_eq

ROUNDS = int(os.environ.get("LFS_CRASH_ROUNDS", "30"))


def workload(root, side_path, seed):
    """The child: mutate `root` forever (until the mount dies under it)."""
    rng = random.Random(seed)
    side = os.open(side_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def record(obj):
        os.write(side, (json.dumps(obj) + "\n").encode())
        os.fsync(side)

    def rel(path):
        return os.path.relpath(path, root)

    def data():
        size = rng.choice([0, 1, 100, 4096, 5000, rng.randrange(1, 20000), 40000])
        return rng.randbytes(size)

    dirs = [root]
    loose = []        # files never fsync'd: any operation goes
    durable = {}      # fsync'd files: path -> content; only appended to from then on
    n = 0
    while True:
        n += 1
        op = rng.random()
        if op < 0.25 or not loose:
            path = os.path.join(rng.choice(dirs), f"f{n}")
            body = data()
            sync = rng.random() < 0.5
            lfs.write_file(path, body, fsync=sync)
            if sync:
                durable[path] = body
                record({"p": rel(path), "c": base64.b64encode(body).decode()})
            else:
                loose.append(path)
        elif op < 0.35 and durable:
            path = rng.choice(sorted(durable))
            more = data()
            record({"p": rel(path), "grows": True})
            fd = os.open(path, os.O_WRONLY | os.O_APPEND)
            try:
                view = memoryview(more)
                while view:
                    view = view[os.write(fd, view):]
                durable[path] += more
                if rng.random() < 0.5:
                    os.fsync(fd)
                    record({"p": rel(path), "c": base64.b64encode(durable[path]).decode()})
            finally:
                os.close(fd)
        elif op < 0.50:
            path = rng.choice(loose)
            fd = os.open(path, os.O_WRONLY)
            try:
                os.pwrite(fd, data(), rng.randrange(0, 30000))
            finally:
                os.close(fd)
        elif op < 0.60:
            src = loose.pop(rng.randrange(len(loose)))
            if loose and rng.random() < 0.3:
                dst = rng.choice(loose)          # replaces another loose file
            else:
                dst = os.path.join(rng.choice(dirs), f"r{n}")
                loose.append(dst)
            os.rename(src, dst)
        elif op < 0.70:
            os.unlink(loose.pop(rng.randrange(len(loose))))
        elif op < 0.80:
            path = os.path.join(rng.choice(dirs), f"d{n}")
            os.mkdir(path)
            dirs.append(path)
        elif op < 0.90:
            os.truncate(rng.choice(loose), rng.randrange(0, 50000))
        else:
            path = os.path.join(rng.choice(dirs), f"l{n}")
            os.link(rng.choice(loose), path)
            loose.append(path)


def read_side(path):
    """{path: (content, exact)} from the side file: the last fsync'd content of each file."""
    state = {}
    if not os.path.exists(path):
        return state
    with open(path, "rb") as f:
        for line in f:
            if not line.endswith(b"\n"):
                break                     # the child died in the middle of a record
            rec = json.loads(line)
            if "c" in rec:
                state[rec["p"]] = (base64.b64decode(rec["c"]), True)
            elif rec["p"] in state:
                state[rec["p"]] = (state[rec["p"]][0], False)
    return state


def check_durable(node, state, what):
    """Every fsync'd file holds its fsync'd content (exactly, unless it grew after)."""
    for rel, (content, exact) in sorted(state.items()):
        path = node.m(rel)
        check(os.path.exists(path), f"{what}: fsync'd file {rel} is gone")
        got = lfs.read_file(path)
        if exact:
            check(got == content, f"{what}: {rel} holds {len(got)} bytes, fsync'd "
                                  f"{len(content)} bytes and never written again")
        else:
            check(got[:len(content)] == content,
                  f"{what}: {rel} ({len(got)} bytes) does not start with its fsync'd "
                  f"{len(content)} bytes")


def test_crash_kill9_random_workload():
    """30 rounds of kill -9 during a random workload: nothing fsync'd is lost,
    fsck finds the node clean, the journal replays to the store's digest."""
    seed = int(os.environ.get("LFS_CRASH_SEED", random.randrange(1 << 32)))
    lfs.log(f"crash test: {ROUNDS} rounds, LFS_CRASH_SEED={seed}")
    rng = random.Random(seed)
    start = time.monotonic()
    with lfs.Workdir() as wd:
        n = wd.node("a")
        state = {}
        for rnd in range(ROUNDS):
            what = f"round {rnd} (LFS_CRASH_SEED={seed})"
            top = f"r{rnd}"
            os.mkdir(n.m(top))
            side = wd / f"side-{rnd}.jsonl"
            child = subprocess.Popen(
                [sys.executable, __file__, "workload", str(n.m(top)), str(side),
                 str(rng.randrange(1 << 32))],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL)
            try:
                time.sleep(rng.uniform(0.005, 1.0))
                n.kill9()
            finally:
                child.kill()
                child.wait(timeout=30)
            for rel, value in read_side(side).items():
                state[f"{top}/{rel}"] = value
            n.mount()
            check_durable(n, state, what)
            n.unmount()
            cp = lfs.fsck(n, "-n")
            check(cp.returncode == 0, f"{what}: fsck.ledgerfs -n exited {cp.returncode}:\n"
                                      f"{cp.stdout[-3000:]}\n{cp.stderr[-1500:]}")
            lfs.check_rebuild_matches(n)
            n.mount()
        n.unmount()
    lfs.log(f"crash test: {ROUNDS} rounds, {len(state)} fsync'd files checked, "
            f"{time.monotonic() - start:.0f}s")


if __name__ == "__main__" and len(sys.argv) == 5 and sys.argv[1] == "workload":
    # The workload child: it ends when the mount dies under it.
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    try:
        workload(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    except OSError:
        sys.exit(0)
