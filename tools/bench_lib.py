"""Pieces shared by tools/bench_resync.py and tools/bench_backup.py.

Both benchmarks run on the same tree of mixed file sizes, change the same 1% of
its files between a full and a second pass, and print the same table of
medians with targets; this module holds those so the two stay comparable.  It
does not depend on tools/bench: callers pass their progress function.
"""

import importlib.machinery
import importlib.util
import os
import platform
import random
import shutil
import signal
import statistics
import subprocess
import sys

MIB = 1 << 20

# The tree's file classes: (smallest, largest, share of the tree's bytes).  The big
# ones come first so that a quick run's tree still holds one.
FILE_CLASSES = (("big", 64 * MIB, 256 * MIB, 0.30),
                ("mid", 1 * MIB, 16 * MIB, 0.40),
                ("small", 1 << 10, 64 << 10, 0.30))
TREE_SEED = 1
POOL_SIZE = 64 * MIB      # random bytes the files' contents are cut from
WRITE_BLOCK = 1 * MIB
FORGET_EVERY = 4000       # files written between two evictions of the kernel's inodes
CHANGE_FRACTION = 0.01


# ---- the tree ---------------------------------------------------------------------------


def tree_plan(total):
    """([(relative path, size)], [directories]) of a tree of about total bytes; the same
    for the same total.

    Three directory levels (d*/e*/f*), small files anywhere, larger ones in the upper two.
    A class's bytes that do not fill one more file of its smallest size go to the next.
    """
    rng = random.Random(TREE_SEED)
    upper, leaves = [], []
    for i in range(4):
        upper.append(f"d{i}")
        for j in range(4):
            upper.append(f"d{i}/e{j}")
            leaves += [f"d{i}/e{j}/f{k}" for k in range(4)]
    plan, carry = [], 0
    for kind, lo, hi, share in FILE_CLASSES:
        budget = int(total * share) + carry
        dirs = upper if kind != "small" else upper + leaves
        while budget >= lo:
            size = min(rng.randint(lo, hi), budget)
            plan.append((f"{rng.choice(dirs)}/{kind}{len(plan):06d}.dat", size))
            budget -= size
        carry = budget
    return plan, sorted(set(upper + leaves))


def write_tree(mnt, plan, dirs, forget, progress):
    """Write plan's files under mnt: contents cut from a random pool, each file headed by
    its own index so that no two are equal; forget() every FORGET_EVERY files (a mount's
    daemon holds a descriptor per inode the kernel caches)."""
    pool = memoryview(os.urandom(POOL_SIZE))
    for d in dirs:
        os.makedirs(os.path.join(mnt, d), exist_ok=True)
    for i, (rel, size) in enumerate(plan):
        if i % FORGET_EVERY == 0:
            progress(f"  tree: {i} of {len(plan)} files written")
            forget()
        start = (i * 1_048_573) % (POOL_SIZE - WRITE_BLOCK)
        fd = os.open(os.path.join(mnt, rel), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            head = i.to_bytes(16, "little")
            os.write(fd, head)
            done = len(head)
            while done < size:
                n = min(WRITE_BLOCK, size - done)
                off = (start + done * 7) % (POOL_SIZE - WRITE_BLOCK)
                done += os.write(fd, pool[off:off + n])
        finally:
            os.close(fd)


def changed_count(plan):
    """How many files change_files() changes."""
    return max(1, round(len(plan) * CHANGE_FRACTION))


def change_files(mnt, plan, seed):
    """Overwrite 4 KiB (the whole file if smaller) of CHANGE_FRACTION of plan's files,
    keeping their sizes; returns (files changed, their total size)."""
    rng = random.Random(seed)
    chosen = rng.sample(range(len(plan)), changed_count(plan))
    total = 0
    for i in chosen:
        rel, size = plan[i]
        n = min(4096, size)
        off = rng.randrange(0, size - n + 1) & ~4095
        fd = os.open(os.path.join(mnt, rel), os.O_WRONLY)
        try:
            os.pwrite(fd, os.urandom(n), off)
        finally:
            os.close(fd)
        total += size
    return len(chosen), total


def store_size(store):
    """(regular files, their bytes) under store."""
    files = size = 0
    for root, _dirs, names in os.walk(store):
        for nm in names:
            st = os.lstat(os.path.join(root, nm))
            files += 1
            size += st.st_size
    return files, size


def run_phases(bench, run, phases, res, rows, failed, sample_load, node):
    """Run one run's phases, (name, fn, needs) each, in order, recording the
    rows each adds to res.  A phase whose needs failed in this run is
    skipped, and one that raises is warned about; either is added to
    failed.  After each phase node (with alive() and mount) must still
    run, else BenchError."""
    for name, fn, needs in phases:
        missing = [n for n in needs if n in failed]
        if missing:
            bench.warn(f"run {run + 1}: {name}: skipped ({', '.join(missing)} failed)")
            failed.add(name)
            continue
        sample_load()
        bench.progress(f"  {name} ...")
        before = set(res)
        try:
            fn()
        except (bench.BenchError, OSError) as e:
            bench.warn(f"run {run + 1}: {name}: {e}")
            failed.add(name)
        for key, _, unit, _, _ in rows:
            if key in res and key not in before:
                bench.progress(f"  {key} {fmt(res[key])} {unit}")
        if not node.alive():
            raise bench.BenchError(f"node a exited: {node.mount.log_tail()}")


def add_run_args(p, bench, default_dir, quick_help, build_help):
    """The options every tree benchmark takes: --quick, --runs, --dir, --build."""
    p.add_argument("--quick", action="store_true", help=quick_help)
    p.add_argument("--runs", type=int, metavar="N",
                   help="repeat N times and report medians (default 3, with --quick 1)")
    p.add_argument("--dir", default=default_dir,
                   help=f"where to run; removed afterwards (default {default_dir})")
    p.add_argument("--build", default=os.environ.get("LEDGERFS_BUILD",
                                                     os.path.join(bench.ROOT, "build")),
                   help=build_help)


def parse_run_args(p, argv):
    """Parse argv with p (add_run_args()'s options): --runs defaulted and checked,
    the directories made absolute."""
    args = p.parse_args(argv)
    if args.runs is None:
        args.runs = 1 if args.quick else 3
    if args.runs < 1:
        p.error("--runs must be at least 1")
    args.dir = os.path.abspath(args.dir)
    args.build = os.path.abspath(args.build)
    return args


def check_ready(bench, args, why_root, need):
    """Root, ledgerfs and ledgerctl built in args.build, need bytes free under
    args.dir (made if missing); else BenchError.  True if args.dir was made."""
    if os.geteuid() != 0:
        raise bench.BenchError(f"run as root: {why_root}")
    for exe in ("ledgerfs", "ledgerctl"):
        if not os.access(os.path.join(args.build, exe), os.X_OK):
            raise bench.BenchError(f"{args.build}/{exe} not built (meson setup + ninja, "
                                   "or --build)")
    made_dir = not os.path.exists(args.dir)
    os.makedirs(args.dir, exist_ok=True)
    free = shutil.disk_usage(args.dir).free
    if free < need:
        raise bench.BenchError(f"{args.dir}: {free / 2**30:.1f} GiB free, the bench needs "
                               f"about {need / 2**30:.1f} GiB")
    return made_dir


def collect_runs(bench, runs, run_once, node):
    """Call run_once(i) for each run, gathering its {row key: value} into
    samples; stop early if node no longer runs.  (samples, whether a run
    failed as a whole)."""
    samples, failed = {}, False
    for i in range(runs):
        bench.progress(f"run {i + 1}/{runs}")
        try:
            res = run_once(i)
        except (bench.BenchError, OSError) as e:
            bench.warn(f"run {i + 1}: {e}")
            res, failed = {}, True
        for key, v in res.items():
            samples.setdefault(key, []).append(v)
        if not node.alive():
            break
    return samples, failed


def missing_rows(rows, samples, runs):
    """(the rows some run did not measure, a note for each)."""
    missing = [k for k, *_ in rows if len(samples.get(k, [])) < runs]
    return missing, [f"{key}: failed in {runs - len(samples.get(key, []))} of {runs} run(s), "
                     "see the errors above" for key in missing]


def load_notes(loads):
    """The notes on the machine's load during the run."""
    notes = [f"load (1 min) during the run: {min(loads):.1f}-{max(loads):.1f}"]
    if max(loads) > os.cpu_count() / 2:
        notes.append("the machine was busy (see load): figures are noisy")
    return notes


def print_head(bench, args, head, load_start, load_end, notes):
    """The machine, the commit and the bench directory, then the notes."""
    print(f"machine: {os.cpu_count()} CPUs ({bench.cpu_model()}), "
          f"{bench.mem_gib():.1f} GiB RAM, Linux {platform.release()}, load "
          f"{'/'.join(f'{x:.1f}' for x in load_start)} at start, "
          f"{'/'.join(f'{x:.1f}' for x in load_end)} at end")
    print(f"commit {head} at the start; bench dir: {args.dir} ({bench.fs_type(args.dir)}); "
          f"{'quick' if args.quick else 'full'} sizes, median of {args.runs} run(s)")
    for n in notes:
        print(f"note: {n}")
    print()


# ---- the table --------------------------------------------------------------------------


def fmt(v):
    if v is None:
        return "-"
    if v >= 100:
        return f"{v:.0f}"
    return f"{v:.1f}" if v >= 10 else f"{v:.2f}"


def verdict(kind, target, v):
    """(the target as shown, "met"/"missed"/"") of value v; kind "atleast" (>=), "above"
    (>), "below" (<) or "atmost" (<=), None for a row without a target."""
    if not kind:
        return "-", ""
    sign, ok = {"atleast": (">=", lambda x: x >= target),
                "above": (">", lambda x: x > target),
                "below": ("<", lambda x: x < target),
                "atmost": ("<=", lambda x: x <= target)}[kind]
    return f"{sign} {target}", "" if v is None else ("met" if ok(v) else "missed")


def print_table(rows, samples, runs, targets=None):
    """rows: (key, label, unit, target kind, target); samples: {key: [value per run]}.
    One line per row: the median, the target and its verdict, and with several runs each
    run's value.  targets: {key: target} for rows whose target is None in rows."""
    out = [("figure", "unit", "median", "target", "", "runs" if runs > 1 else "")]
    for key, label, unit, kind, target in rows:
        if target is None and targets:
            target = targets.get(key)
        vals = samples.get(key, [])
        v = statistics.median(vals) if vals else None
        tgt, verd = verdict(kind, target, v)
        out.append((label, unit, fmt(v), tgt, verd,
                    " ".join(fmt(x) for x in vals) if runs > 1 else ""))
    widths = [max(len(r[i]) for r in out) for i in range(len(out[0]))]
    for r in out:
        print("  ".join([r[0].ljust(widths[0]), r[1].ljust(widths[1]), r[2].rjust(widths[2]),
                         r[3].ljust(widths[3]), r[4].ljust(widths[4]), r[5]]).rstrip())


def commit(root):
    """The short hash of root's HEAD, or "unknown"."""
    res = subprocess.run(["git", "-C", root, "rev-parse", "--short", "HEAD"],
                         capture_output=True, text=True)
    return res.stdout.strip() or "unknown"


def remove_workdirs(workroot, tmp, made_dir, bench_dir):
    """Remove a benchmark's directories (and bench_dir if the run made it),
    with the signals that would cut the removal short held off."""
    blocked = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}
    signal.pthread_sigmask(signal.SIG_BLOCK, blocked)
    try:
        shutil.rmtree(workroot, ignore_errors=True)
        shutil.rmtree(tmp, ignore_errors=True)
        if made_dir:
            try:
                os.rmdir(bench_dir)
            except OSError:
                pass
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, blocked)


def load_bench():
    """tools/bench as a module (it has no .py suffix)."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bench")
    loader = importlib.machinery.SourceFileLoader("ledgerfs_bench", path)
    spec = importlib.util.spec_from_loader(loader.name, loader)
    mod = importlib.util.module_from_spec(spec)
    loader.exec_module(mod)
    return mod


def run_standalone(main):
    """Run main(argv, bench) as a script run by itself: tools/bench loaded,
    its errors and Ctrl-C turned into exit codes."""
    b = load_bench()
    try:
        sys.exit(main(sys.argv[1:], b))
    except b.BenchError as e:
        b.warn(str(e))
        sys.exit(1)
    except KeyboardInterrupt:
        b.warn("interrupted; mounts unmounted, bench directory removed")
        sys.exit(130)
