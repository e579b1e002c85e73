"""Journal retention and trimming (DESIGN section 5, issue 5).

Events every member confirmed are trimmed once the retention window has
passed or the journal is over its bound (retain_bytes, by default a share
of its filesystem), so the journal's size on disk stays near the bound;
fsck does not mistake the trimmed prefix for a gap, and events some member
has not confirmed are kept however old they get and whatever the bound.
"""

import json
import os
import random
import re
import time

import lfs
import cluster
from cluster import Cluster
from lfs import check, check_eq

MiB = 1 << 20
# What LevelDB holds whatever is trimmed: the log of the writes its 8 MiB
# write buffer holds, and its manifest and info log.
LEVELDB_FIXED = 10 * MiB


def set_key(node, key, value):
    """Set an existing key of a node's config (node stopped)."""
    conf = node.dir / "ledgerfs.conf"
    text, n = re.subn(rf"^{key} = .*$", f"{key} = {value}", conf.read_text(), flags=re.M)
    check_eq(n, 1, f"{key} in {conf}")
    conf.write_text(text)


def remove_keys(node, section):
    """Drop every key of [section] from a node's config (node stopped)."""
    conf = node.dir / "ledgerfs.conf"
    text, n = re.subn(rf"(^\[{section}\]\n)(?:[a-z_]+ = .*\n)+", r"\1", conf.read_text(),
                      flags=re.M)
    check_eq(n, 1, f"[{section}] with keys in {conf}")
    conf.write_text(text)


def disk_bytes(path):
    """Sum of the sizes of the files under path, as the filesystem has them."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(root, f)).st_size
            except FileNotFoundError:
                pass
    return total


def status_json(node):
    return json.loads(lfs.ctl("status", node.dir, "--json").stdout)


def oldest(cl, name, origin_name):
    """Oldest seq of origin_name's events that node name still holds (0: none)."""
    return cl.status(name)["oldest"].get(cl[origin_name].id, 0)


def trimmed(cl, name, origin_name):
    """Node name has trimmed a prefix of origin_name's events."""
    return oldest(cl, name, origin_name) != 1


def test_confirmed_events_are_trimmed_and_fsck_stays_clean():
    with lfs.Workdir() as wd:
        cl = Cluster(wd, ["a", "b"], start=False)
        for name in ("a", "b"):
            set_key(cl[name], "retain_age", "1")
            cl.start(name)
        a = cl["a"]
        for i in range(30):
            lfs.write_file(a.m(f"f{i}"), b"x" * 100)
        lfs.write_file(a.m("last"), b"y", fsync=True)
        cl.wait_in_sync()
        lfs.wait_until(lambda: trimmed(cl, "a", "a") and trimmed(cl, "b", "a"), 30,
                       "a's confirmed events to be trimmed on a and b")
        check("trimmed" in a.log_text(), "a logs what it trimmed")
        seqs = [e["seq"] for e in cl.log_events("a") if e["origin"] == a.id]
        check(1 not in seqs, f"ledgerctl log no longer lists the trimmed prefix: {seqs[:5]}")
        cl.stop("a")
        cp = lfs.run([lfs.FSCK, "-n", a.dir], check=False)
        check_eq(cp.returncode, 0, f"fsck -n after trimming: {cp.stdout}{cp.stderr}")
        cl.start("a")
        lfs.write_file(a.m("more"), b"z", fsync=True)
        cl.wait_in_sync()


def test_events_a_member_has_not_confirmed_are_kept():
    with lfs.Workdir() as wd:
        cl = Cluster(wd, ["a", "b"], start=False)
        for name in ("a", "b"):
            set_key(cl[name], "retain_age", "1")
        cl.start("a")
        a = cl["a"]
        for i in range(20):
            lfs.write_file(a.m(f"f{i}"), b"x" * 100)
        lfs.write_file(a.m("last"), b"y", fsync=True)
        # Three trim rounds (every 2 s) with b never having confirmed anything.
        deadline = time.monotonic() + 6
        while time.monotonic() < deadline:
            check_eq(oldest(cl, "a", "a"), 1, "a keeps what b has not confirmed")
            time.sleep(0.5)
        cl.start("b")
        cl.wait_in_sync()
        check_eq(lfs.read_file(cl["b"].m("last")), b"y", "b catches up from the kept events")


def test_journal_stays_within_its_bound_while_one_file_is_rewritten():
    """A 256 KiB file rewritten by thousands of small synced writes (4 KiB
    inline in LevelDB, 16 KiB in the value log) on a lone node with
    retain_bytes = 2M and the default retain_age of a day: the journal on
    disk comes back under 3 times its bound plus LevelDB's fixed part after
    every burst, though each burst journals 10 MiB, and status shows its
    size against the bound."""
    bound = 2 * MiB
    limit = 3 * bound + LEVELDB_FIXED
    with lfs.Workdir() as wd:
        a = wd.node("a", mount=False)
        set_key(a, "retain_bytes", "2M")
        a.mount()
        rng = random.Random(7)
        path = a.m("f")
        model = bytearray(rng.randbytes(256 << 10))
        lfs.write_file(path, bytes(model), fsync=True)
        written = 0
        fd = os.open(path, os.O_WRONLY)
        try:
            for burst in range(6):
                done = 0
                while done < 10 * MiB:
                    size = 16 << 10 if rng.random() < 0.25 else 4 << 10
                    off = rng.randrange(0, (256 << 10) - size + 1, 4096)
                    data = rng.randbytes(size)
                    os.pwrite(fd, data, off)
                    model[off:off + size] = data
                    os.fdatasync(fd)
                    done += size
                written += done
                lfs.log(f"burst {burst + 1}: journal {disk_bytes(a.journal)} bytes")
                lfs.wait_until(lambda: disk_bytes(a.journal) < limit, 30,
                               f"the journal under {limit} bytes after burst {burst + 1} "
                               f"(it holds {disk_bytes(a.journal)})")
        finally:
            os.close(fd)
        check(written >= 3 * limit, f"the test wrote {written} bytes, several times the limit")
        lfs.log(f"after the bursts: journal {disk_bytes(a.journal)} bytes")
        st = status_json(a)
        check_eq(st["journal_bound"], bound, "status: the journal's bound")
        check(0 < st["journal_bytes"] < limit,
              f"status: the journal's size {st['journal_bytes']} is under {limit}")
        check(st["oldest"][st["node_id"]] > 1, "the oldest events are trimmed")
        text = lfs.ctl("status", a.dir).stdout
        check(re.search(r"^journal: [0-9.]+ (B|KiB|MiB) of a 2\.0 MiB bound,", text, re.M),
              f"status text shows the journal against its bound:\n{text}")
        check(lfs.read_file(path) == bytes(model), "the file reads as written")
        a.unmount()
        cp = lfs.run([lfs.FSCK, "-n", a.dir], check=False)
        check_eq(cp.returncode, 0, f"fsck -n after trimming: {cp.stdout}{cp.stderr}")


def test_without_retention_keys_the_journal_has_a_finite_bound():
    """A config with an empty [journal] section: status shows a bound of 5%
    of the journal's filesystem, at most 1 GiB."""
    with lfs.Workdir() as wd:
        a = wd.node("a", mount=False)
        remove_keys(a, "journal")
        a.mount()
        vfs = os.statvfs(a.journal)
        want = min(1 << 30, vfs.f_blocks * vfs.f_frsize // 100 * 5)
        st = status_json(a)
        check_eq(st["journal_bound"], want, "the default bound")
        check(st["journal_bytes"] > 0, "the journal's size is measured")


def test_events_a_down_member_needs_are_kept_over_the_bound():
    """With a bound far below the journal's size, a trims everything b
    confirmed, but nothing b has not: while b is down the journal grows
    past its bound (status shows it over), and b catches up from the
    events when it returns, after which they go too."""
    with lfs.Workdir() as wd:
        cl = Cluster(wd, ["a", "b"], start=False)
        for name in ("a", "b"):
            set_key(cl[name], "retain_bytes", "64K")
            cl.start(name)
        a = cl["a"]
        rng = random.Random(3)
        for i in range(20):
            lfs.write_file(a.m(f"f{i}"), rng.randbytes(10 << 10))
        lfs.write_file(a.m("first"), b"y", fsync=True)
        cl.wait_in_sync()
        seen = cl.seq("a")
        # LevelDB's log of recent writes alone is over 64 KiB: all of it goes.
        lfs.wait_until(lambda: oldest(cl, "a", "a") in (0, seen + 1), 30,
                       "a to trim what b confirmed")
        cl.stop("b")
        for i in range(200):
            lfs.write_file(a.m(f"g{i}"), rng.randbytes(10 << 10))
        lfs.write_file(a.m("last"), b"z", fsync=True)
        # Three trim rounds (every 2 s) with the journal over its bound.
        deadline = time.monotonic() + 6
        while time.monotonic() < deadline:
            check_eq(oldest(cl, "a", "a"), seen + 1, "a keeps every event b lacks")
            time.sleep(0.5)
        st = cl.status("a")
        check(st["journal_bytes"] > st["journal_bound"],
              f"status shows the journal over its bound: {st['journal_bytes']} bytes, "
              f"bound {st['journal_bound']}")
        mark = cl["b"].log_mark()
        cl.start("b")
        cl.wait_in_sync()
        check_eq(lfs.read_file(cl["b"].m("last")), b"z", "b catches up")
        check(not cluster.grep(cl["b"].log_since(mark), "snapshot"),
              "b catches up from the kept events, not by snapshot")
        lfs.wait_until(lambda: oldest(cl, "a", "a") not in range(1, seen + 2), 30,
                       "a to trim the events once b confirmed them")
