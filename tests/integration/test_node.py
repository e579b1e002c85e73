"""Node lifecycle: init, mounting (foreground, detached, mount(8)), refusals.

These prove the guards around the store: a node never serves a store that is
missing, unstamped while its journal holds events, or another node's; and
that a kill -9 loses nothing that had returned to the caller.
"""

import os
import shutil
import subprocess

import lfs
from lfs import check, check_eq


def test_init_refuses_non_empty_directory():
    """`ledgerctl init` into a directory holding a file fails and leaves it alone."""
    with lfs.Workdir() as wd:
        target = wd / "busy"
        target.mkdir()
        (target / "keep").write_bytes(b"precious")
        cp = lfs.ctl("init", target, "--name", "a", check=False)
        check_eq(cp.returncode, 1, "exit code of init into a non-empty directory")
        check("not empty" in cp.stderr, f"init names the problem: {cp.stderr!r}")
        check_eq(sorted(os.listdir(target)), ["keep"], "directory contents after refusal")
        check_eq((target / "keep").read_bytes(), b"precious", "file left untouched")


def _mount_fails(node, want_text):
    """Run `ledgerfs NODE MNT` (detaching); it must fail, saying want_text."""
    node.mnt.mkdir(exist_ok=True)
    cp = lfs.run([str(lfs.LEDGERFS), str(node.dir), str(node.mnt)], check=False)
    check(cp.returncode != 0, "ledgerfs refused to mount")
    check(want_text in cp.stderr, f"ledgerfs says {want_text!r}: {cp.stderr!r}")
    check(not lfs.is_mounted(os.path.realpath(node.mnt)), "nothing mounted after refusal")


def test_mount_refuses_replaced_empty_store():
    """An empty directory in place of a store that held files is refused."""
    with lfs.Workdir() as wd:
        n = wd.node("a")
        lfs.write_file(n.m("data"), b"x" * 100)
        n.unmount()
        os.rename(n.store, n.dir / "store.real")
        n.store.mkdir()
        _mount_fails(n, "no ledgerfs stamp")
        os.rmdir(n.store)
        _mount_fails(n, "store missing")
        os.rename(n.dir / "store.real", n.store)
        n.mount()
        check_eq(lfs.read_file(n.m("data")), b"x" * 100, "data back with the real store")


def test_mount_refuses_another_nodes_store():
    """A store stamped by another cluster is refused."""
    with lfs.Workdir() as wd:
        a = wd.node("a", mount=False)
        b = wd.node("b", mount=False)
        shutil.rmtree(a.store)
        os.rename(b.store, a.store)
        _mount_fails(a, "another cluster")


def test_detached_mount_reports_and_cleans_up():
    """Without -f: the command returns once mounted; umount stops the daemon cleanly."""
    with lfs.Workdir() as wd:
        n = wd.node("a", mount=False)
        n.mnt.mkdir()
        mp = os.path.realpath(n.mnt)
        lfs.run([str(lfs.LEDGERFS), str(n.dir), mp])
        lfs._mounts.append(mp)
        check(lfs.is_mounted(mp, "fuse.ledgerfs"), "mounted when the command returned")
        lfs.write_file(n.m("f"), b"detached")
        lfs.run(["umount", mp])
        lfs.wait_until(lambda: not _daemon_running(n), 30, "the daemon to exit")
        lfs._mounts.remove(mp)
        n.mount()
        check_eq(lfs.read_file(n.m("f")), b"detached", "content after remount")
        check("not clean" not in n.log_tail(), "a clean unmount is recorded as clean")


def _daemon_running(node):
    """True while some ledgerfs process serves node.dir."""
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if argv and argv[0].endswith(b"ledgerfs") and str(node.dir).encode() in argv:
            return True
    return False


def test_mount_through_mount_fuse3():
    """mount(8) with the fstab form `/path/ledgerfs#NODE MNT fuse` works."""
    with lfs.Workdir() as wd:
        n = wd.node("a", mount=False)
        n.mnt.mkdir()
        mp = os.path.realpath(n.mnt)
        lfs.run(["mount", "-t", "fuse", f"{lfs.LEDGERFS}#{n.dir}", mp,
                 "-o", "allow_other,entry_timeout=2"])
        lfs._mounts.append(mp)
        check(lfs.is_mounted(mp, "fuse.ledgerfs"), "mounted through mount.fuse3")
        lfs.write_file(n.m("via-fstab"), b"ok")
        lfs.run(["umount", mp])
        lfs.wait_until(lambda: not _daemon_running(n), 30, "the daemon to exit")
        lfs._mounts.remove(mp)
        check_eq((n.store / "via-fstab").read_bytes(), b"ok", "file in the store")


def test_kill9_loses_nothing_that_returned():
    """Writes that returned (no fsync) survive a SIGKILL of the daemon."""
    with lfs.Workdir() as wd:
        n = wd.node("a")
        want = {}
        for i in range(50):
            data = os.urandom(1000 + i * 977)
            lfs.write_file(n.m(f"f{i}"), data)
            want[f"f{i}"] = data
        os.rename(n.m("f0"), n.m("renamed"))
        want["renamed"] = want.pop("f0")
        n.kill9()
        n.mount()
        check("not clean" in n.log_tail(), "the unclean stop is noticed")
        for name, data in want.items():
            check_eq(lfs.read_file(n.m(name)), data, f"content of {name} after kill -9")
        n.unmount()
        check_eq(lfs.fsck(n, "-n").returncode, 0, "fsck -n after kill -9")
        lfs.check_rebuild_matches(n)


def test_metadata_is_hidden_from_the_mount():
    """trusted.ledgerfs.* can be neither read, listed nor set through the mount."""
    with lfs.one_node() as n:
        lfs.write_file(n.m("f"), b"x")
        names = os.listxattr(n.m("f"))
        check(not any(x.startswith("trusted.ledgerfs") for x in names),
              f"no ledgerfs xattr listed: {names}")
        check("trusted.ledgerfs.fid" in os.listxattr(n.s("f")), "the store has the fid")
        lfs.expect_errno(61, os.getxattr, n.m("f"), "trusted.ledgerfs.fid")
        lfs.expect_errno(1, os.setxattr, n.m("f"), "trusted.ledgerfs.fid", b"x" * 16)
        check_eq(sorted(os.listdir(n.mnt)), ["f"], "only user files at the mount root")


def test_help_and_usage_exit_codes():
    """Every command answers --help with 0 and a bad call with 2."""
    for argv in ([lfs.LEDGERFS, "--help"], [lfs.LEDGERCTL, "--help"], [lfs.FSCK, "--help"],
                 [lfs.LEDGERCTL, "init", "--help"], [lfs.LEDGERCTL, "log", "--help"],
                 [lfs.LEDGERCTL, "digest", "--help"], [lfs.LEDGERCTL, "rebuild", "--help"]):
        cp = subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=30)
        check_eq(cp.returncode, 0, f"exit code of {' '.join(map(str, argv))}")
        check("usage" in (cp.stdout + cp.stderr).lower(), f"usage text from {argv}")
    cp = subprocess.run([str(lfs.LEDGERCTL), "frobnicate"], capture_output=True, timeout=30)
    check_eq(cp.returncode, 2, "exit code of an unknown ledgerctl command")
    cp = subprocess.run([str(lfs.LEDGERCTL), "init"], capture_output=True, timeout=30)
    check_eq(cp.returncode, 2, "exit code of init without arguments")
