"""A node dials its peers from the host of its listen address.

Each node of the cluster listens on its own loopback address (127.0.0.2,
.3, .4); every peer must see its inbound links come from that address, not
from 127.0.0.1, the kernel's pick for a loopback destination.  This is what
lets a firewall rule on a node's address cut it off in both directions (the
soak's network cut rests on it).
"""

import re

import lfs
from cluster import Cluster
from lfs import check


def test_peers_see_a_node_at_its_listen_host():
    """Every inbound link a node logs comes from the dialing peer's listen host."""
    with lfs.Workdir() as wd:
        cl = Cluster(wd, ["a", "b", "c"], hosts=True)
        cl.wait_in_sync()
        hosts = {nm: cl[nm].host for nm in cl.names}
        check(len(set(hosts.values())) == 3 and "127.0.0.1" not in hosts.values(),
              f"each node has its own loopback address: {hosts}")
        for nm in cl.names:
            seen = {}
            for m in re.finditer(r"peer (\S+) \(([0-9.]+):\d+\) subscribed", cl.log_text(nm)):
                seen.setdefault(m.group(1), set()).add(m.group(2))
            for peer in cl.names:
                if peer == nm:
                    continue
                check(seen.get(peer) == {hosts[peer]},
                      f"node {nm} sees peer {peer}'s links from {seen.get(peer)}, "
                      f"want {{{hosts[peer]!r}}}; log:\n{cl[nm].log_tail()}")
