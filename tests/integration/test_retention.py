"""Journal retention and trimming (DESIGN section 5, issue 5).

Events every member confirmed are trimmed once the retention window has
passed, fsck does not mistake the trimmed prefix for a gap, and events some
member has not confirmed are kept however old they get.
"""

import re
import time

import lfs
from cluster import Cluster
from lfs import check, check_eq


def set_key(node, key, value):
    """Set an existing key of a node's config (node stopped)."""
    conf = node.dir / "ledgerfs.conf"
    text, n = re.subn(rf"^{key} = .*$", f"{key} = {value}", conf.read_text(), flags=re.M)
    check_eq(n, 1, f"{key} in {conf}")
    conf.write_text(text)


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
