"""The soak's machinery (soak.py, what tools/soak runs) on one seed with two
faults of each kind (about 40 s): kill -9 of a replica, kill -9 of the primary with
operations in flight, SIGSTOP of a node, and a network cut between two
running nodes.  After each the replicas must converge, the primary equal the
native reference (or, after the primary's crash, differ only in unsynced
data), every fsync'd file be intact on every node; fsck clean at the end."""

import os
import subprocess

import soak
from lfs import check, check_eq

SEED = int(os.environ.get("LFS_SOAK_SEED", "20240601"))


def test_soak_one_seed_with_each_fault():
    """Each fault kind twice; the cuts really dropped packets and left no rule behind."""
    os.umask(0o022)
    st = soak.run_seed(SEED, None, batch=30, plan=list(soak.FAULTS) * 2, log=print)
    check_eq(st["faults"], {k: 2 for k in soak.FAULTS}, "faults injected")
    check(len(st["cut_drops"]) == 2 and all(n > 0 for n in st["cut_drops"]),
          f"each network cut dropped packets between its two nodes: {st['cut_drops']}")
    tables = subprocess.run(["nft", "list", "tables"], text=True, stdout=subprocess.PIPE,
                            check=True).stdout
    check(f"{soak.NetCut.PREFIX}{os.getpid()}" not in tables,
          f"the soak's nftables table is gone after the seed: {tables!r}")
