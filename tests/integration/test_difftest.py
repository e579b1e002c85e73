"""The seeded random differential tester (difftest.py) over a fixed set of
seeds: the same random operations on a native directory and on a three-node
cluster's primary must give the same outcomes and trees, every replica must
converge without refusing an event, and fsck must be clean on every node.
A failure names the seed and a shrunk minimal sequence."""

import os

import difftest

SEEDS = [int(s) for s in os.environ.get("LFS_DIFF_SEEDS", "1 2 3 4 5 6 7 8").split()]
OPS = int(os.environ.get("LFS_DIFF_OPS", "300"))


def test_random_operations_match_native_and_replicas_converge():
    """Each seed: OPS random operations (every kind the mount supports, some
    as other uids, deep trees past PATH_MAX), checked every 50."""
    os.umask(0o022)
    for seed in SEEDS:
        difftest.run_seed(seed, OPS, nodes=3, batch=50, do_shrink=True)
