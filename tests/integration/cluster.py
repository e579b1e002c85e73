"""Harness for the replication tests: a cluster of real nodes on loopback.

`Cluster(wd, ["a", "b", "c"])` makes a cluster CA and one node per name
(`a` is the primary, the others replicas), each listening on a free
loopback port with every other node as a peer, and starts them: as a
mount (`ledgerfs NODE_DIR MNT -f`) or, for the names in `serve`, as a
relay without a mount (`ledgerfs --serve NODE_DIR -f`).  Each daemon's
stderr goes to its own log file (ROOT/NAME.log, appended across restarts),
so a test can look for what a node reported.

A test then stops, kills, pauses (SIGSTOP: a network cut as the peers see
it) and restarts nodes, reads `ledgerctl status --json` and
`ledgerctl log --json`, and waits until the cluster is in sync: every node
says in_sync, the applied vectors are equal, and every store and mount has
the same `ledgerctl digest`.

Everything is stopped and unmounted by lfs.cleanup() whatever happens; a
paused daemon is resumed first, so nothing waits on a stopped process.
Every wait polls with a deadline.
"""

import configparser
import json
import os
import re
import signal
import socket
import subprocess
import time

import lfs
from lfs import Failure, check

SYNC_TIMEOUT = float(os.environ.get("LFS_SYNC_TIMEOUT", "60"))
STATUS_TIMEOUT = 10


def free_ports(count, hosts=None):
    """`count` distinct loopback TCP ports that were free a moment ago (the
    i-th on hosts[i], default 127.0.0.1)."""
    socks = []
    try:
        for i in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((hosts[i] if hosts else "127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def read_config(node_dir):
    """NODE_DIR/ledgerfs.conf as a ConfigParser."""
    cp = configparser.ConfigParser(inline_comment_prefixes=(";", "#"))
    cp.read(os.path.join(node_dir, "ledgerfs.conf"))
    return cp


def vector(status):
    """A status's applied vector as {origin hex: seq}, zero entries dropped."""
    return {k.lower(): int(v) for k, v in (status.get("applied") or {}).items() if int(v)}


class ClusterNode(lfs.Node):
    """A node of a Cluster: a mount (lfs.Node) or, with serve, a relay without one."""

    def __init__(self, root, name, port, serve=False, opts=None, host="127.0.0.1"):
        super().__init__(root, name)
        self.port = port
        self.host = host
        self.address = f"{host}:{port}"
        self.serve = serve
        self.mount_opts = opts
        self.paused = False
        self.id = None         # 16 hex digits, read from the config after init
        self.cluster = None    # 32 hex digits

    # ------------------------------------------------------------ lifecycle

    def load_ids(self):
        cfg = read_config(self.dir)
        self.id = cfg["node"]["id"].strip().lower()
        self.cluster = cfg["node"]["cluster"].strip().lower()

    def start(self, timeout=lfs.MOUNT_TIMEOUT):
        """Start the daemon; return once it is mounted (if a mount) and its
        control socket answers `ledgerctl status`."""
        check(not self.alive(), f"node {self.name} is already running")
        if self.serve:
            argv = [str(lfs.LEDGERFS), "--serve", str(self.dir), "-f"]
            log = open(self.logfile, "ab")
            log.write(f"\n=== {' '.join(argv)}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL)
            log.close()
            lfs._children.append(self.proc)
        else:
            self.mount(opts=self.mount_opts, timeout=timeout)

        def answers():
            if self.proc is None or self.proc.poll() is not None:
                rc = None if self.proc is None else self.proc.returncode
                raise Failure(f"node {self.name} exited ({rc}) while starting; log:\n"
                              f"{self.log_tail()}")
            return self.try_status() is not None
        lfs.wait_until(answers, timeout, f"node {self.name}'s control socket to answer")
        return self

    def stop(self, timeout=lfs.MOUNT_TIMEOUT):
        """Stop cleanly: unmount (a mount) or SIGTERM (a relay); require exit 0."""
        if self.paused:
            self.resume()
        if self.serve:
            if self.proc is None:
                return
            self.proc.send_signal(signal.SIGTERM)
            try:
                rc = self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                raise Failure(f"ledgerfs --serve {self.name} did not exit within "
                              f"{timeout}s of SIGTERM")
            self.proc = None
            check(rc == 0, f"ledgerfs --serve {self.name} exited with {rc} after "
                           f"SIGTERM; log:\n{self.log_tail()}")
        else:
            self.unmount(timeout=timeout)

    def kill9(self):
        """SIGKILL the daemon (a stopped one too) and drop its dead mount."""
        self.paused = False
        if self.serve:
            if self.proc is not None:
                self.proc.kill()
                self.proc.wait(timeout=30)
                self.proc = None
        else:
            super().kill9()

    def pause(self):
        """SIGSTOP the daemon: to its peers the links go silent, as in a cut."""
        check(self.alive(), f"node {self.name} is not running")
        os.kill(self.proc.pid, signal.SIGSTOP)
        self.paused = True
        lfs.wait_until(lambda: _proc_state(self.proc.pid) in ("T", "t"), 10,
                       f"node {self.name} to stop")

    def resume(self):
        """SIGCONT a paused daemon."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)
        self.paused = False

    # ---------------------------------------------------------------- views

    @property
    def tree(self):
        """Where its files are read: the mount, or the store of a relay."""
        return self.store if self.serve else self.mnt

    def try_status(self):
        """`ledgerctl status NODE_DIR --json` parsed, or None if it fails."""
        try:
            cp = lfs.ctl("status", self.dir, "--json", check=False, timeout=STATUS_TIMEOUT)
        except Failure:
            return None
        if cp.returncode != 0:
            return None
        try:
            return json.loads(cp.stdout)
        except json.JSONDecodeError:
            return None

    def status(self):
        """`ledgerctl status NODE_DIR --json` parsed; Failure if it does not answer."""
        cp = lfs.ctl("status", self.dir, "--json", check=False, timeout=STATUS_TIMEOUT)
        if cp.returncode != 0:
            raise Failure(f"ledgerctl status {self.name} --json: exit {cp.returncode}: "
                          f"{lfs.excerpt(cp.stderr)}")
        try:
            return json.loads(cp.stdout)
        except json.JSONDecodeError as e:
            raise Failure(f"ledgerctl status {self.name} --json is not JSON ({e}): "
                          f"{cp.stdout[:500]!r}")

    def events(self, *args):
        """`ledgerctl log NODE_DIR --json [args]` as a list of dicts (the node may run)."""
        cp = lfs.ctl("log", self.dir, "--json", *args, check=False)
        if cp.returncode != 0:
            raise Failure(f"ledgerctl log {self.name} --json: exit {cp.returncode}: "
                          f"{lfs.excerpt(cp.stderr)}")
        out = []
        for i, line in enumerate(cp.stdout.splitlines()):
            if line.strip():
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise Failure(f"ledgerctl log {self.name} --json line {i + 1} is not "
                                  f"JSON ({e}): {line[:300]!r}")
        return out

    def log_text(self):
        """Everything the daemon wrote to stderr, across restarts."""
        try:
            return self.logfile.read_text(errors="replace")
        except OSError:
            return ""

    def log_mark(self):
        """A position in the log file, for log_since()."""
        try:
            return self.logfile.stat().st_size
        except OSError:
            return 0

    def log_since(self, mark):
        """What the daemon logged after log_mark() returned `mark`."""
        try:
            with open(self.logfile, "rb") as f:
                f.seek(mark)
                return f.read().decode(errors="replace")
        except OSError:
            return ""


def _proc_state(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "?"


class Cluster:
    """A CA and nodes `names` (the first is the primary) in Workdir `wd`.

    serve: names started as `ledgerfs --serve` instead of a mount.
    opts:  {name: mount options}.
    start: start every node now (else call start(name) for each).
    primaries: names made --primary (default: the first only).
    hosts: node i listens on (and dials from) 127.0.0.(i+2) instead of
           127.0.0.1, so that a firewall rule can cut two nodes apart.
    """

    def __init__(self, wd, names=("a", "b"), serve=(), opts=None, start=True, primaries=None,
                 hosts=False):
        self.wd = wd
        self.root = wd.path
        self.ca = self.root / "ca"
        self.names = list(names)
        lfs.ctl("ca", "init", self.ca)
        addrs = ([f"127.0.0.{i + 2}" for i in range(len(self.names))] if hosts
                 else ["127.0.0.1"] * len(self.names))
        ports = free_ports(len(self.names), addrs)
        self.nodes = {}
        for name, port, host in zip(self.names, ports, addrs):
            self.nodes[name] = ClusterNode(self.root, name, port, serve=name in serve,
                                           opts=(opts or {}).get(name), host=host)
        for i, name in enumerate(self.names):
            n = self.nodes[name]
            argv = ["init", n.dir, "--name", name, "--ca", self.ca, "--listen", n.address]
            for other in self.names:
                if other != name:
                    argv += ["--peer", f"{other}={self.nodes[other].address}"]
            primary = name in primaries if primaries is not None else i == 0
            argv.append("--primary" if primary else "--replica")
            lfs.ctl(*argv)
            n.load_ids()
        self.by_id = {n.id: name for name, n in self.nodes.items()}
        lfs.on_cleanup(self._resume_all)
        if start:
            for name in self.names:
                self.start(name)

    def __getitem__(self, name):
        return self.nodes[name]

    @property
    def primary(self):
        return self.nodes[self.names[0]]

    @property
    def cluster_id(self):
        return self.primary.cluster

    def _resume_all(self):
        for n in self.nodes.values():
            if n.paused:
                n.resume()

    # ------------------------------------------------------------ lifecycle

    def start(self, name):
        return self.nodes[name].start()

    def stop(self, name):
        self.nodes[name].stop()

    def kill9(self, name):
        self.nodes[name].kill9()

    def pause(self, name):
        self.nodes[name].pause()

    def resume(self, name):
        self.nodes[name].resume()

    def running(self):
        """Names of nodes whose daemon runs and is not paused."""
        return [nm for nm in self.names
                if self.nodes[nm].alive() and not self.nodes[nm].paused]

    # ---------------------------------------------------------------- views

    def status(self, name):
        return self.nodes[name].status()

    def log_events(self, name, *args):
        return self.nodes[name].events(*args)

    def log_text(self, name):
        return self.nodes[name].log_text()

    def applied(self, name, origin):
        """How far node `name` has applied the events of node `origin` (0 if none)."""
        return vector(self.status(name)).get(self.nodes[origin].id, 0)

    def seq(self, name):
        """The highest seq node `name` has applied of its own events."""
        return self.applied(name, name)

    def wait_applied(self, name, origin, seq, timeout=SYNC_TIMEOUT):
        """Poll until node `name` has applied origin's events up to `seq`."""
        last = {}

        def reached():
            st = self.nodes[name].try_status()
            if st is None:
                return False
            last["st"] = st
            return vector(st).get(self.nodes[origin].id, 0) >= seq
        try:
            lfs.wait_until(reached, timeout,
                           f"node {name} to apply {origin}'s events up to {seq}")
        except Failure as e:
            raise Failure(f"{e}\n{self.describe(name, last.get('st'))}")
        return last["st"]

    def name_of(self, node_id):
        return self.by_id.get((node_id or "").lower(), node_id)

    def describe(self, name, st=None):
        """One paragraph on a node's status, with names instead of ids."""
        if st is None:
            st = self.nodes[name].try_status()
        if st is None:
            return f"  {name}: no status (daemon {'running' if self.nodes[name].alive() else 'down'})"
        applied = {self.name_of(k): v for k, v in vector(st).items()}
        lines = [f"  {name}: role={st.get('role')} in_sync={st.get('in_sync')} "
                 f"applied={applied}"]
        for p in st.get("peers", []):
            lag = p.get("lag") or {}
            lines.append(f"    peer {p.get('name')}: {p.get('state')} inbound={p.get('inbound')}"
                         f" why={p.get('why')!r} lag={lag.get('events')}ev/"
                         f"{lag.get('bytes')}B checkpoints="
                         f"{ {self.name_of(k): v for k, v in (p.get('checkpoints') or {}).items()} }")
        return "\n".join(lines)

    def digests(self, names):
        """{label: digest} of the store of each node and the mount of each mounted one."""
        out = {}
        for nm in names:
            n = self.nodes[nm]
            out[f"{nm}:store"] = lfs.digest(n.store)
            if not n.serve:
                out[f"{nm}:mnt"] = lfs.digest(n.mnt)
        return out

    def _tree_of(self, label):
        nm, kind = label.split(":")
        return self.nodes[nm].store if kind == "store" else self.nodes[nm].mnt

    # ---------------------------------------------------------------- waits

    def wait_in_sync(self, timeout=SYNC_TIMEOUT, names=None):
        """Poll until every node in `names` (default: all) says in_sync, their
        applied vectors are equal and every store and mount digests the same.
        Returns {name: status}."""
        return self._wait_converged(names or self.names, timeout, need_in_sync=True)

    def wait_converged(self, names, timeout=SYNC_TIMEOUT):
        """Like wait_in_sync() among `names` only, without in_sync (which needs
        every configured peer up): equal applied vectors and equal digests."""
        return self._wait_converged(names, timeout, need_in_sync=False)

    def _wait_converged(self, names, timeout, need_in_sync):
        deadline = time.monotonic() + timeout
        interval = 0.02
        last, differing = "nothing polled yet", None
        while True:
            sts = {}
            for nm in names:
                st = self.nodes[nm].try_status()
                if st is None:
                    break
                sts[nm] = st
            if len(sts) < len(names):
                last = f"node {nm} gives no status"
            else:
                vecs = {nm: vector(st) for nm, st in sts.items()}
                lagging = [nm for nm in names if need_in_sync and not sts[nm].get("in_sync")]
                if lagging:
                    last = f"not in_sync: {lagging}"
                elif len({json.dumps(v, sort_keys=True) for v in vecs.values()}) > 1:
                    last = "applied vectors differ"
                else:
                    ds = self.digests(names)
                    if len(set(ds.values())) == 1:
                        return sts
                    last = f"applied vectors equal but digests differ: {ds}"
                    differing = ds
            if time.monotonic() >= deadline:
                detail = "\n".join(self.describe(nm) for nm in names)
                msg = (f"cluster {names} not {'in sync' if need_in_sync else 'converged'} "
                       f"after {timeout}s: {last}\n{detail}")
                if differing:
                    labels = sorted(differing)
                    first = labels[0]
                    for other in labels[1:]:
                        if differing[other] != differing[first]:
                            try:
                                lfs.check_same_tree(self._tree_of(first),
                                                    self._tree_of(other),
                                                    f"{first} vs {other}")
                            except Failure as e:
                                msg += f"\n{e}"
                            break
                raise Failure(msg)
            time.sleep(interval)
            interval = min(interval * 2, 0.25)

    def wait_file(self, name, rel, content, timeout=SYNC_TIMEOUT):
        """Poll until node `name`'s tree holds `rel` with `content` (bytes)."""
        path = self.nodes[name].tree / rel

        def there():
            try:
                return lfs.read_file(path) == content
            except OSError:
                return False
        try:
            lfs.wait_until(there, timeout, f"{rel} to reach node {name}")
        except Failure as e:
            raise Failure(f"{e}\n" + "\n".join(self.describe(nm) for nm in self.running()))

    # -------------------------------------------------------------- journal

    def check_exactly_once(self, names, origins=None):
        """Each node's journal names every (origin, seq) once, each origin's
        seqs are contiguous, and all nodes hold the same seqs of each origin
        (default: every origin any of them holds).  Returns
        {name: {origin name: count}}."""
        seqs = {}
        for nm in names:
            per = {}
            for e in self.log_events(nm):
                per.setdefault(e["origin"].lower(), []).append(e["seq"])
            for origin, lst in per.items():
                dups = len(lst) - len(set(lst))
                check(dups == 0, f"node {nm}: {dups} events of origin "
                                 f"{self.name_of(origin)} listed twice")
                lo, hi = min(lst), max(lst)
                check(hi - lo + 1 == len(lst),
                      f"node {nm}: origin {self.name_of(origin)} has gaps: "
                      f"{len(lst)} events in seqs {lo}..{hi}")
            seqs[nm] = {o: set(v) for o, v in per.items()}
        wanted = origins or sorted({o for per in seqs.values() for o in per})
        for origin in wanted:
            ref = seqs[names[0]].get(origin, set())
            for nm in names[1:]:
                got = seqs[nm].get(origin, set())
                if got != ref:
                    raise Failure(
                        f"origin {self.name_of(origin)}: node {names[0]} holds {len(ref)} "
                        f"events, node {nm} {len(got)}; only on {names[0]}: "
                        f"{sorted(ref - got)[:10]}, only on {nm}: {sorted(got - ref)[:10]}")
        return {nm: {self.name_of(o): len(v) for o, v in per.items()}
                for nm, per in seqs.items()}

    def node_events(self, name, types, origin=None):
        """Events of the given types in node `name`'s journal (of `origin` if given)."""
        oid = self.nodes[origin].id if origin else None
        return [e for e in self.log_events(name) if e["type"] in types
                and (oid is None or e["origin"].lower() == oid)]


def grep(text, pattern):
    """Lines of text matching the regex pattern (case-insensitive)."""
    rx = re.compile(pattern, re.I)
    return [line for line in text.splitlines() if rx.search(line)]
