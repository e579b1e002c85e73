"""Membership edits: `ledgerctl peer add | remove | list NODE_DIR`.

Only the configuration file is involved (a running node re-reads it by
itself), so most of these tests need no mount: they check what the
commands print, what they leave in NODE_DIR/ledgerfs.conf, and that every
refusal leaves the file exactly as it was.  The last one replaces a node
of a running cluster by the procedure in docs/operations.md.
"""

import re
import shutil

import lfs
from cluster import Cluster
from lfs import check, check_eq


def _node(wd, name="a", listen="127.0.0.1:7101"):
    """A node with a listen address and no peers; returns (dir, config path, own id)."""
    d = wd / name
    lfs.ctl("init", d, "--name", name, "--listen", listen)
    conf = d / "ledgerfs.conf"
    own = re.search(r"^id = ([0-9a-f]{16})$", conf.read_text(), re.M).group(1)
    return d, conf, own


def _peer_sections(conf):
    """[(name, address, id or None)] in file order, read from the config text."""
    out = []
    for m in re.finditer(r"^\[peer ([^\]]+)\]\n((?:[a-z_]+ = .*\n?)*)", conf.read_text(), re.M):
        keys = dict(re.findall(r"^([a-z_]+) = (.*)$", m.group(2), re.M))
        out.append((m.group(1), keys.get("address"), keys.get("id")))
    return out


def _list(d):
    """`ledgerctl peer list` as [[name, address, id-or-note], ...]."""
    cp = lfs.ctl("peer", "list", d)
    return [re.split(r"\s{2,}", line.strip()) for line in cp.stdout.splitlines()]


def _refused(want_rc, conf, want_text, *args):
    """Run `ledgerctl peer ARGS`; require exit want_rc, want_text on stderr, conf unchanged."""
    before = conf.read_bytes()
    cp = lfs.ctl("peer", *args, check=False)
    check_eq(cp.returncode, want_rc, f"exit code of peer {' '.join(map(str, args))}")
    check(want_text in cp.stderr, f"peer {' '.join(map(str, args))} says {want_text!r}: "
                                  f"{cp.stderr!r}")
    check_eq(cp.stdout, "", "nothing on stdout after a refusal")
    check_eq(conf.read_bytes(), before, "config file untouched by a refusal")


def test_peer_add_list_remove_round_trip():
    """Peers added with and without an id are listed and saved in order; remove keeps the rest."""
    with lfs.Workdir() as wd:
        d, conf, _ = _node(wd)
        check_eq(_list(d), [], "a new node has no peers")
        cp = lfs.ctl("peer", "add", d, "b=127.0.0.1:7102", "--id", "00000000000000b2")
        check("added peer b" in cp.stdout, f"add says what it did: {cp.stdout!r}")
        lfs.ctl("peer", "add", d, "c=[::1]:7103")
        lfs.ctl("peer", "add", "--id", "00000000000000d4", d, "d=host-d.example:65535")
        check_eq(_list(d), [["b", "127.0.0.1:7102", "00000000000000b2"],
                            ["c", "[::1]:7103", "(not seen yet)"],
                            ["d", "host-d.example:65535", "00000000000000d4"]],
                 "peer list after three adds")
        check_eq(_peer_sections(conf), [("b", "127.0.0.1:7102", "00000000000000b2"),
                                        ("c", "[::1]:7103", None),
                                        ("d", "host-d.example:65535", "00000000000000d4")],
                 "peer sections in the config")
        check("listen = 127.0.0.1:7101" in conf.read_text(), "listen address kept")
        cp = lfs.ctl("peer", "remove", d, "c")
        check("removed peer c" in cp.stdout, f"remove says what it did: {cp.stdout!r}")
        check_eq([p[0] for p in _list(d)], ["b", "d"], "peers after removing c")
        lfs.ctl("peer", "remove", d, "b")
        lfs.ctl("peer", "remove", d, "d")
        check_eq(_list(d), [], "no peers after removing all")
        check_eq(_peer_sections(conf), [], "no peer sections left")


def test_peer_add_refuses_self_duplicates_and_bad_arguments():
    """Own name/id/listen address, a taken name/id/address: exit 1 naming the config;
    malformed NAME=HOST:PORT or id: exit 2 naming the argument; file unchanged."""
    with lfs.Workdir() as wd:
        d, conf, own = _node(wd)
        lfs.ctl("peer", "add", d, "b=127.0.0.1:7102", "--id", "00000000000000b2")
        where = str(conf)
        _refused(1, conf, where, "add", d, "a=127.0.0.1:7109")
        _refused(1, conf, "own name", "add", d, "a=127.0.0.1:7109")
        _refused(1, conf, "own id", "add", d, "x=127.0.0.1:7109", "--id", own)
        _refused(1, conf, "own listen address", "add", d, "x=127.0.0.1:7101")
        _refused(1, conf, "already a peer named 'b'", "add", d, "b=127.0.0.1:7109")
        _refused(1, conf, "already has id", "add", d, "x=127.0.0.1:7109",
                 "--id", "00000000000000B2")
        _refused(1, conf, "already has address", "add", d, "x=127.0.0.1:7102")
        for bad in ("noequals", "=127.0.0.1:1", "x=nocolon", "x=127.0.0.1:", "x=:7109",
                    "x=127.0.0.1:0", "x=127.0.0.1:65536", "x=127.0.0.1:+80", "x=::1:7109",
                    "x=[::1]", "x=h;h:1", "x=h h:1", "b/x=127.0.0.1:1", "../x=127.0.0.1:1",
                    "x" * 64 + "=127.0.0.1:1", "x=" + "h" * 300 + ":1"):
            _refused(2, conf, bad[:60], "add", d, bad)
        for bad_id in ("b2", "0000000000000000", "00000000000000zz", "000000000000000b2"):
            _refused(2, conf, bad_id, "add", d, "x=127.0.0.1:7109", "--id", bad_id)
        _refused(2, conf, "usage", "add", d)
        _refused(2, conf, "usage", "add", d, "x=127.0.0.1:7109", "y=127.0.0.1:7110")
        check_eq(_list(d), [["b", "127.0.0.1:7102", "00000000000000b2"]], "peers unchanged")


def test_peer_remove_refuses_unknown_name():
    """Removing a name that is not a peer fails (exit 1), naming it and the config."""
    with lfs.Workdir() as wd:
        d, conf, _ = _node(wd)
        _refused(1, conf, "no peer named 'b'", "remove", d, "b")
        lfs.ctl("peer", "add", d, "b=127.0.0.1:7102")
        _refused(1, conf, str(conf), "remove", d, "c")
        _refused(1, conf, "no peer named 'a'", "remove", d, "a")
        _refused(2, conf, "invalid name", "remove", d, "b/..")
        _refused(2, conf, "usage", "remove", d, "b", "--id", "00000000000000b2")
        check_eq([p[0] for p in _list(d)], ["b"], "b still there")


def test_peer_add_stops_at_the_peer_limit():
    """A node takes at most 32 peers; the 33rd is refused and the file keeps 32."""
    with lfs.Workdir() as wd:
        d, conf, _ = _node(wd)
        for i in range(32):
            lfs.ctl("peer", "add", d, f"p{i}=10.0.0.{i + 1}:7000")
        _refused(1, conf, "at most 32 peers", "add", d, "p32=10.0.0.99:7000")
        check_eq(len(_list(d)), 32, "peers listed")
        lfs.ctl("peer", "remove", d, "p0")
        lfs.ctl("peer", "add", d, "p32=10.0.0.99:7000")
        check_eq(_list(d)[-1][0], "p32", "room again after a remove")


def test_peer_commands_name_a_missing_or_broken_node():
    """No node dir or a broken config: exit 1 with the path; nothing is created."""
    with lfs.Workdir() as wd:
        missing = wd / "nothing"
        for args in (("add", missing, "b=127.0.0.1:7102"), ("remove", missing, "b"),
                     ("list", missing)):
            cp = lfs.ctl("peer", *args, check=False)
            check_eq(cp.returncode, 1, f"peer {args[0]} on a missing node")
            check(str(missing / "ledgerfs.conf") in cp.stderr,
                  f"peer {args[0]} names the config path: {cp.stderr!r}")
        check(not missing.exists(), "no node directory created")
        d, conf, _ = _node(wd)
        conf.write_text(conf.read_text() + "\n[peer b]\nadress = 127.0.0.1:7102\n")
        before = conf.read_bytes()
        cp = lfs.ctl("peer", "add", d, "c=127.0.0.1:7103", check=False)
        check_eq(cp.returncode, 1, "peer add on a broken config")
        check(re.search(re.escape(str(conf)) + r":\d+: .*adress", cp.stderr),
              f"the error names file, line and key: {cp.stderr!r}")
        check_eq(conf.read_bytes(), before, "a broken config is not rewritten")


def test_peer_usage_and_help():
    """--help (also via `ledgerctl help peer`) exits 0; unknown verbs and missing args exit 2."""
    cp = lfs.ctl("peer", "--help")
    for verb in ("peer add", "peer remove", "peer list"):
        check(verb in cp.stdout, f"--help shows {verb}: {cp.stdout!r}")
    check_eq(lfs.ctl("help", "peer").stdout, cp.stdout, "ledgerctl help peer")
    check("peer" in lfs.ctl("--help").stdout, "ledgerctl --help lists peer")
    for args in ((), ("add",), ("list",), ("rename", "/tmp", "x"), ("list", "/tmp", "x"),
                 ("--bogus", "list", "/tmp")):
        cp = lfs.ctl("peer", *args, check=False)
        check_eq(cp.returncode, 2, f"exit code of peer {' '.join(args)}")
        check("usage:" in cp.stderr, f"usage on stderr for peer {' '.join(args)}")


def test_init_and_peer_add_share_one_address_parser():
    """init --listen/--peer and peer add accept and refuse the same spellings."""
    with lfs.Workdir() as wd:
        d, conf, _ = _node(wd)
        good = ("127.0.0.1:1", "[::1]:65535", "[fe80::1%eth0]:7000", "node-b.example.org:7102")
        for i, addr in enumerate(good):
            lfs.ctl("init", wd / f"listen{i}", "--name", "n", "--listen", addr)
            lfs.ctl("init", wd / f"peer{i}", "--name", "n", "--peer", f"x={addr}", "--primary")
            lfs.ctl("peer", "add", d, f"g{i}={addr}")
        for bad in ("nocolon", "h:0", "h:65536", "::1:7000", "[::1]", "h h:1", ":7000"):
            cp = lfs.ctl("init", wd / "n", "--name", "n", "--listen", bad, check=False)
            check_eq(cp.returncode, 2, f"init --listen {bad}")
            check(bad in cp.stderr, f"init names {bad}: {cp.stderr!r}")
            cp = lfs.ctl("init", wd / "n", "--name", "n", "--primary",
                         "--peer", f"x={bad}", check=False)
            check_eq(cp.returncode, 2, f"init --peer x={bad}")
            reason = cp.stderr.rsplit(": ", 1)[-1].strip()
            _refused(2, conf, reason, "add", d, f"x={bad}")
        check(not (wd / "n").exists(), "no node directory left behind")


def _set_retain_age(node, value):
    conf = node.dir / "ledgerfs.conf"
    text, n = re.subn(r"^retain_age = .*$", f"retain_age = {value}", conf.read_text(), flags=re.M)
    check_eq(n, 1, f"retain_age in {conf}")
    conf.write_text(text)


def _oldest(cl, name, origin_name):
    """Oldest seq of origin_name's events node name holds (0: none)."""
    return cl.status(name)["oldest"].get(cl[origin_name].id, 0)


def test_a_wiped_node_made_again_under_its_name_converges():
    """docs/operations.md, "Replacing a node": c is stopped and its node directory
    removed, made again with init --join (a new id), given b as a peer;
    each member does peer remove c then peer add c=ADDR, a while it runs, b
    while it is stopped.  The members learn c's new id, c resyncs and
    converges, the old id's checkpoints are gone from the members' status
    (and their journals, as they log), and trimming (retain_age 1 s) goes
    past what the old c had confirmed."""
    with lfs.Workdir() as wd:
        cl = Cluster(wd, ["a", "b", "c"], start=False)
        for name in cl.names:
            _set_retain_age(cl[name], "1")
            cl.start(name)
        a, b, c = cl["a"], cl["b"], cl["c"]
        for i in range(20):
            lfs.write_file(a.m(f"f{i}"), f"{i}\n".encode())
        lfs.write_file(a.m("before"), b"1", fsync=True)
        cl.wait_in_sync()
        old = c.id
        cl.stop("c")
        cl.stop("b")
        shutil.rmtree(c.dir)
        lfs.write_file(a.m("while-away"), b"2", fsync=True)
        held = cl.seq("a")
        lfs.ctl("init", c.dir, "--name", "c", "--ca", cl.ca, "--listen", c.address,
                "--join", a.address)
        lfs.ctl("peer", "add", c.dir, f"b={b.address}")
        for m in ("a", "b"):
            lfs.ctl("peer", "remove", cl[m].dir, "c")
            lfs.ctl("peer", "add", cl[m].dir, f"c={c.address}")
        c.load_ids()
        check(c.id != old, "init --join made a new id")
        cl.by_id[c.id] = "c"
        mark = b.log_mark()
        cl.start("b")
        # c starts once a holds b's events (b's restart made some) and took in
        # the new [peer c]: c may then resync from b without a, the primary,
        # having to fetch from c events of b's that c's snapshot skipped.
        cl.wait_converged(["a", "b"])

        def a_forgot_old_id():
            return {p["name"]: p["id"] for p in a.status()["peers"]}.get("c") is None
        lfs.wait_until(a_forgot_old_id, 10, "a to drop c's old id on re-reading its config")
        cl.start("c")
        cl.wait_in_sync()
        check_eq(lfs.read_file(c.m("while-away")), b"2", "c has what was written before")
        check(cl.status("c")["snapshot"]["done"], "c came back by snapshot resync")
        lfs.write_file(a.m("after"), b"3", fsync=True)
        cl.wait_file("c", "after", b"3")
        for m in ("a", "b"):
            peers = {p["name"]: p for p in cl.status(m)["peers"]}
            check_eq(peers["c"]["id"], c.id, f"{m} knows c by its new id")
            check(not [p for p in peers.values() if p["id"] == old],
                  f"{m} shows no peer with the old id {old}: {peers}")
        check(f"forgot the checkpoints of node {old}" in b.log_since(mark),
              "b forgets the old id's checkpoints when it starts")
        # What the old c confirmed stopped there; the new c's confirmations count.
        lfs.wait_until(lambda: _oldest(cl, "a", "a") not in range(1, held + 1), 30,
                       f"a to trim past seq {held}, which the old c never confirmed")
