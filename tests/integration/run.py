#!/usr/bin/env python3
"""Run the ledgerfs integration tests.

Discovers tests/integration/test_*.py and runs every `test_*` function in
its own child process (its own process group and temp directory), so that
one test's hang, crash or leftover mount cannot touch the next.  A test
that outlives its timeout gets SIGTERM (its harness unmounts), then
SIGKILL; whatever it left mounted under its temp directory is then aborted
and lazily unmounted here.

Prints `PASS name (1.2s)` or `FAIL name: reason` (with the output and the
node log tails of a failed test) and ends with
`integration: N passed, M failed`.  Exit status 1 if any test failed.

    run.py [-k PATTERN] [--timeout SECONDS] [--list]

Binaries are taken from $LEDGERFS_BUILD (default <repo>/build); temp
directories go under $TMPDIR (default /tmp).
"""

import argparse
import importlib
import inspect
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


BROKEN = {}   # "module:import" -> traceback of a test module that does not import


def discover(pattern=None):
    """Return ['module:function', ...] for every test, in file and source order."""
    names = []
    for f in sorted(HERE.glob("test_*.py")):
        try:
            mod = importlib.import_module(f.stem)
        except Exception:   # a broken module is one failed test, not a dead runner
            BROKEN[f"{f.stem}:import"] = traceback.format_exc()
            if pattern is None or pattern in f.stem:
                names.append(f"{f.stem}:import")
            continue
        funcs = [(obj.__code__.co_firstlineno, name) for name, obj in vars(mod).items()
                 if name.startswith("test_") and inspect.isfunction(obj)
                 and obj.__module__ == mod.__name__]
        for _, name in sorted(funcs):
            full = f"{f.stem}:{name}"
            if pattern is None or pattern in full:
                names.append(full)
    return names


def child_main(target, result_path):
    """Run one test in this (child) process and write its result as JSON."""
    import lfs
    modname, funcname = target.split(":")
    result = {"ok": False, "reason": "", "logs": ""}
    try:
        func = getattr(importlib.import_module(modname), funcname)
        func()
        result["ok"] = True
    except lfs.Failure as e:
        result["reason"] = str(e)
        result["trace"] = traceback.format_exc(limit=-3)
    except BaseException as e:   # any error is a failed test, never a crashed runner
        result["reason"] = f"{type(e).__name__}: {e}"
        result["trace"] = traceback.format_exc()
    if not result["ok"]:
        result["logs"] = lfs.all_log_tails()
    try:
        lfs.cleanup()
    except BaseException as e:
        result["ok"] = False
        result["reason"] += f"\ncleanup failed: {e}"
    Path(result_path).write_text(json.dumps(result))
    return 0


def stop_group(proc, grace):
    """SIGTERM the child's process group, then SIGKILL it after `grace` seconds."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def run_one(target, timeout, keep):
    """Run one test in a child; return (ok, seconds, reason, report text)."""
    import lfs
    tmp = Path(tempfile.mkdtemp(prefix="lfs-run-"))
    os.chmod(tmp, 0o755)
    result_path = tmp / "result.json"
    out_path = tmp / "output.txt"
    env = dict(os.environ, LFS_TMP=str(tmp), PYTHONDONTWRITEBYTECODE="1")
    start = time.monotonic()
    with open(out_path, "wb") as out:
        proc = subprocess.Popen([sys.executable, __file__, "--child", target,
                                 "--result", str(result_path)],
                                stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=env,
                                start_new_session=True)
        timed_out = False
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            lfs.unmount_all_under(tmp)   # unblocks a test stuck on a dead mount
            stop_group(proc, grace=15)
    # anything still alive in the group (a daemon the test started) goes too
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    lfs.unmount_all_under(tmp)
    elapsed = time.monotonic() - start
    try:
        result = json.loads(result_path.read_text())
    except (OSError, ValueError):
        result = {"ok": False, "reason": f"test process exited {proc.returncode} "
                                         "without a result", "logs": ""}
    if timed_out:
        result["ok"] = False
        result["reason"] = f"timed out after {timeout}s"
    report = ""
    if not result["ok"]:
        output = out_path.read_text(errors="replace").splitlines()[-40:]
        report = "\n".join(filter(None, [
            result.get("trace", "").rstrip(),
            "--- output (tail):\n" + "\n".join(output) if output else "",
            result.get("logs", "").rstrip()]))
    if keep and not result["ok"]:
        print(f"    (kept {tmp})")
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    return result["ok"], elapsed, result.get("reason", ""), report


def indent(text, prefix="    "):
    return "\n".join(prefix + line for line in text.splitlines())


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-k", dest="pattern", help="run only tests whose module:name "
                    "contains PATTERN")
    ap.add_argument("--timeout", type=float, default=float(
        os.environ.get("LFS_TEST_TIMEOUT", "180")), help="per-test timeout (s)")
    ap.add_argument("--list", action="store_true", help="list the tests and exit")
    ap.add_argument("--keep", action="store_true", help="keep temp dirs of failures")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.child:
        return child_main(args.child, args.result)

    if os.geteuid() != 0:
        print("run.py: the integration tests mount filesystems and need root",
              file=sys.stderr)
        return 2
    tests = discover(args.pattern)
    if args.list:
        print("\n".join(tests))
        return 0
    import lfs
    print(f"integration: {len(tests)} tests, binaries from {lfs.BUILD}", flush=True)
    if not lfs.binaries_present():
        print(f"FAIL all: ledgerfs, ledgerctl or fsck.ledgerfs missing in {lfs.BUILD}")
        print(f"integration: 0 passed, {len(tests)} failed", flush=True)
        return 1
    passed = failed = 0
    for target in tests:
        if target in BROKEN:
            ok, secs, reason, report = False, 0.0, "module does not import", BROKEN[target]
        else:
            ok, secs, reason, report = run_one(target, args.timeout, args.keep)
        name = target.replace(":", ".")
        if ok:
            passed += 1
            print(f"PASS {name} ({secs:.1f}s)", flush=True)
        else:
            failed += 1
            first = reason.splitlines()[0] if reason else "(no reason)"
            print(f"FAIL {name}: {first} ({secs:.1f}s)", flush=True)
            rest = "\n".join(reason.splitlines()[1:])
            if rest:
                print(indent(rest))
            if report:
                print(indent(report), flush=True)
    print(f"integration: {passed} passed, {failed} failed", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
