"""Cluster membership material: `ledgerctl ca init` and `ledgerctl init --ca`.

A node made with --ca belongs to the CA's cluster (same cluster id), holds a
key and a CA-signed certificate naming its node id, and records its listen
address and peers; the node still mounts and works as before.
"""

import os
import re

import lfs
from lfs import check, check_eq


def _cluster_of(conf_text):
    m = re.search(r"^cluster = ([0-9a-f]{32})$", conf_text, re.M)
    check(m is not None, f"cluster id in the config: {conf_text!r}")
    return m.group(1)


def test_node_joins_the_ca_cluster_with_a_signed_certificate():
    """init --ca: CA's cluster id, node.key 0600, node.crt verifies, SAN names the id."""
    with lfs.Workdir() as wd:
        ca = wd / "ca"
        lfs.ctl("ca", "init", ca)
        check_eq(os.stat(ca / "ca.key").st_mode & 0o777, 0o600, "ca.key mode")
        ids = {}
        for name, port in (("a", 7101), ("b", 7102)):
            lfs.ctl("init", wd / name, "--name", name, "--ca", ca,
                    "--listen", f"127.0.0.1:{port}",
                    "--peer", f"{'b' if name == 'a' else 'a'}=127.0.0.1:{7203 - port}",
                    "--primary" if name == "a" else "--replica")
            conf = (wd / name / "ledgerfs.conf").read_text()
            ids[name] = re.search(r"^id = ([0-9a-f]{16})$", conf, re.M).group(1)
            check(f"listen = 127.0.0.1:{port}" in conf, f"listen address in {name}'s config")
            check("[peer " in conf, f"peer section in {name}'s config")
            check_eq(os.stat(wd / name / "node.key").st_mode & 0o777, 0o600, "node.key mode")
            cp = lfs.run(["openssl", "verify", "-CAfile", str(ca / "ca.crt"),
                          str(wd / name / "node.crt")])
            check("OK" in cp.stdout, f"openssl verify of {name}'s certificate: {cp.stdout!r}")
            cp = lfs.run(["openssl", "x509", "-in", str(wd / name / "node.crt"), "-noout",
                          "-ext", "subjectAltName"])
            check(f"URI:ledgerfs://node/{ids[name]}" in cp.stdout,
                  f"node id in the certificate: {cp.stdout!r}")
        check_eq(_cluster_of((wd / "a" / "ledgerfs.conf").read_text()),
                 _cluster_of((wd / "b" / "ledgerfs.conf").read_text()),
                 "both nodes in the CA's cluster")
        n = lfs.Node(wd.path, "a")
        n.mount()
        lfs.write_file(n.m("f"), b"certified")
        n.unmount()
        check_eq((n.store / "f").read_bytes(), b"certified", "a CA node mounts and writes")


def test_ca_and_init_refuse_bad_input():
    """Non-empty CA dir, unknown CA, malformed or own-name peers: clear errors, nothing made."""
    with lfs.Workdir() as wd:
        busy = wd / "busy"
        busy.mkdir()
        (busy / "x").write_text("keep")
        cp = lfs.ctl("ca", "init", busy, check=False)
        check_eq(cp.returncode, 1, "ca init into a non-empty directory")
        check("not empty" in cp.stderr, f"ca init names the problem: {cp.stderr!r}")
        cp = lfs.ctl("init", wd / "n", "--name", "n", "--ca", wd / "nothing", check=False)
        check_eq(cp.returncode, 1, "init with a missing CA")
        check("not a cluster CA" in cp.stderr, f"init names the problem: {cp.stderr!r}")
        for bad in ("noequals", "b=nocolon", "n=127.0.0.1:1", "b/x=127.0.0.1:1"):
            cp = lfs.ctl("init", wd / "n", "--name", "n", "--peer", bad, check=False)
            check_eq(cp.returncode, 2, f"init --peer {bad}")
            check(bad in cp.stderr, f"the message names {bad}: {cp.stderr!r}")
        check(not (wd / "n").exists(), "no node directory left behind")
