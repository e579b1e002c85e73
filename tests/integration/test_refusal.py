"""Refusals on the replication links (DESIGN invariants 6, 7, 8).

Hostile peers are played from Python with the ssl module: as a client of a
node's listener (no certificate, another cluster's certificate, a
non-member's certificate, and with a real member's certificate an
oversized frame, garbage and a truncated frame), and as the server a node
dials (a stopped member's address and certificate) that answers its HELLO
and then ships an event whose path escapes the store (the record made by
the journal's own codec, through ledgerfs-evtool).

Each refusal must be logged by the refusing node with its reason (its
stderr log is searched), write nothing (its journal's event count does not
change, no file appears outside the store), and leave the node serving:
afterwards a write on the primary still reaches the replica.  A peer that
takes a node's link and drops it at once is dialled again with a growing,
capped backoff, never in a tight loop.
"""

import os
import re
import secrets
import socket
import ssl
import struct
import threading
import time

import lfs
from cluster import Cluster, grep, read_config, vector
from lfs import Failure, check, check_eq

# net/proto.h
PROTO_VERSION = 1
PROTO_MAX_FRAME = 64 << 20
HELLO, EVENTS, ACK, FETCH, PING, PONG, ERROR = range(1, 8)
FRAME_NAMES = {1: "HELLO", 2: "EVENTS", 3: "ACK", 4: "FETCH", 5: "PING", 6: "PONG",
               7: "ERROR"}
# Event records come from the journal's own codec (cmd/evtool), never from
# a copy of their format here.
EVTOOL = lfs.BUILD / "ledgerfs-evtool"

LOG_TIMEOUT = 15


# ------------------------------------------------------------ wire format

def encode_event(type_, origin, seq, path=b"", path2=b"", name=b"", data=b"", mode=0,
                 term=1, fid=None):
    """One event record of type_ (a name: "create", ...) with a correct CRC,
    as `ledgerfs-evtool encode` makes it; its times are now's."""
    now = time.time()
    fid = fid or (origin, seq)
    cp = lfs.run([EVTOOL, "encode", type_, f"origin={origin}", f"seq={seq}",
                  f"hlc={int(now * 1000) << 16}", f"term={term}", f"fid={fid[0]}:{fid[1]}",
                  f"mode={mode}", f"atime={int(now)}:0", f"mtime={int(now)}:0",
                  f"path-hex={path.hex()}", f"path2-hex={path2.hex()}",
                  f"name-hex={name.hex()}", f"data-hex={data.hex()}"])
    return bytes.fromhex(cp.stdout.strip())


def frame(type_, body=b""):
    """u32 length (type + body) | u8 type | body."""
    return struct.pack("<IB", 1 + len(body), type_) + body


def _hello_has_primary():
    """Whether HELLO carries `u64 primary` after the term, as proto.h in this
    tree says (the field came with roles; the tests follow the header)."""
    text = (lfs.REPO / "net" / "proto.h").read_text()
    return re.search(r"u64 term,\s*\*?\s*u64 primary", text) is not None


HELLO_HAS_PRIMARY = _hello_has_primary()


def hello_body(cluster_hex, node_hex, term, applied, primary_hex=None):
    """HELLO: u16 version, u8[16] cluster, u64 node, u64 term, [u64 primary,]
    u32 n, n x (u64 origin, u64 seq) in origin order."""
    items = sorted((int(o, 16), int(s)) for o, s in applied.items())
    out = struct.pack("<H16sQQ", PROTO_VERSION, bytes.fromhex(cluster_hex),
                      int(node_hex, 16), term)
    if HELLO_HAS_PRIMARY:
        out += struct.pack("<Q", int(primary_hex or "0", 16))
    out += struct.pack("<I", len(items))
    return out + b"".join(struct.pack("<QQ", o, s) for o, s in items)


def parse_hello(body):
    """(node id hex, term, {origin hex: seq}) of a HELLO body, with or without
    the primary field (the fixed part is 38 or 46 bytes, entries 16)."""
    _version, _cluster, node, term = struct.unpack_from("<H16sQQ", body)
    off = struct.calcsize("<H16sQQ")
    if len(body) % 16 == (off + 12) % 16:
        off += 8                           # u64 primary
    count = struct.unpack_from("<I", body, off)[0]
    off += 4
    vec = {}
    for _ in range(count):
        o, s = struct.unpack_from("<QQ", body, off)
        vec[f"{o:016x}"] = s
        off += 16
    return f"{node:016x}", term, vec


def events_body(records):
    """EVENTS: u32 count, count x (u32 len, record)."""
    return struct.pack("<I", len(records)) + b"".join(
        struct.pack("<I", len(r)) + r for r in records)


class Closed(Exception):
    """The other side closed the connection or failed it; str() says how."""


class Conn:
    """Frames over a TLS socket."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = b""

    def send(self, data):
        self.sock.sendall(data)

    def frame(self, timeout):
        """The next (type, body), None if none came within timeout; Closed at the end."""
        deadline = time.monotonic() + timeout
        while True:
            if len(self.buf) >= 5:
                n = struct.unpack_from("<I", self.buf)[0]
                if len(self.buf) >= 4 + n:
                    t, body = self.buf[4], self.buf[5:4 + n]
                    self.buf = self.buf[4 + n:]
                    return t, body
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(1 << 16)
            except (socket.timeout, TimeoutError):
                return None
            except (ssl.SSLError, OSError) as e:
                raise Closed(f"{type(e).__name__}: {e}")
            if not data:
                raise Closed("end of stream")
            self.buf += data

    def until_closed(self, timeout, what):
        """Read until the peer closes; returns (frames, how). Failure if it does not."""
        frames = []
        deadline = time.monotonic() + timeout
        while True:
            try:
                f = self.frame(max(0.0, deadline - time.monotonic()))
            except Closed as e:
                return frames, str(e)
            if f is None:
                raise Failure(f"{what}: the node kept the connection open for {timeout}s; "
                              f"frames: {[FRAME_NAMES.get(t, t) for t, _ in frames]}")
            frames.append(f)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def error_text(frames):
    """The messages of the ERROR frames among frames."""
    out = []
    for t, body in frames:
        if t == ERROR and len(body) >= 4:
            code, n = struct.unpack_from("<HH", body)
            out.append(f"{code}: {body[4:4 + n].decode(errors='replace')}")
    return out


def client_context(cert=None, key=None):
    """TLS 1.3 client context that presents cert/key (if any) and checks nothing."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if cert:
        ctx.load_cert_chain(str(cert), str(key))
    return ctx


def dial(node, ctx):
    """A TLS connection to node's listener.  Returns Conn, or Closed if the
    handshake itself was refused."""
    raw = socket.create_connection(("127.0.0.1", node.port), timeout=10)
    try:
        return Conn(ctx.wrap_socket(raw))
    except (ssl.SSLError, OSError) as e:
        raw.close()
        raise Closed(f"handshake: {type(e).__name__}: {e}")


def try_client(node, ctx, *frames):
    """Dial node's listener with ctx and send frames: the Conn, or Closed if
    the node refused on the way (at the handshake or by closing)."""
    try:
        conn = dial(node, ctx)
    except Closed as e:
        return e
    try:
        for f in frames:
            conn.send(f)
    except OSError as e:
        conn.close()
        return Closed(f"send: {type(e).__name__}: {e}")
    return conn


# ------------------------------------------------------------ checks

def expect_logged(node, mark, pattern, what):
    """Poll node's log (after mark) for a line matching pattern (a regex,
    case-insensitive); Failure showing what it did log otherwise."""
    found = []

    def logged():
        found[:] = grep(node.log_since(mark), pattern)
        return found
    try:
        lfs.wait_until(logged, LOG_TIMEOUT, f"node {node.name} to log {what}")
    except Failure:
        raise Failure(f"node {node.name} did not log {what} (no line matching "
                      f"{pattern!r}); it logged:\n{node.log_since(mark)[-3000:]}")
    lfs.log(f"{node.name} logged: {found[0]}")
    return found


def still_serves(cl, what):
    """A write on the primary still reaches the replica b."""
    rel = f"after-{secrets.token_hex(4)}"
    data = f"written after {what}\n".encode()
    lfs.write_file(cl["a"].m(rel), data)
    cl.wait_file("b", rel, data)


def event_count(cl, name):
    return len(cl.log_events(name))


def refused_before_any_data(conn_or_closed, what, allow_error=False):
    """The listener sent nothing (or, with allow_error, only ERROR frames) and closed."""
    if isinstance(conn_or_closed, Closed):
        return []
    frames, how = conn_or_closed.until_closed(LOG_TIMEOUT, what)
    conn_or_closed.close()
    kinds = [FRAME_NAMES.get(t, t) for t, _ in frames]
    if allow_error:
        check(all(t == ERROR for t, _ in frames),
              f"{what}: the node sent {kinds} before closing ({how})")
    else:
        check(not frames, f"{what}: the node sent {kinds} to an unauthenticated client")
    return frames


# ------------------------------------------------------ certificate refusals

def _two_nodes(wd):
    cl = Cluster(wd, ["a", "b"])
    cl.wait_in_sync()
    return cl


def test_listener_refuses_client_without_certificate():
    """A TLS client that shows no certificate is refused at the handshake, logged."""
    with lfs.Workdir() as wd:
        cl = _two_nodes(wd)
        a = cl["a"]
        before, mark = event_count(cl, "a"), a.log_mark()
        conn = try_client(a, client_context(), frame(HELLO, b"\x01\x00" + b"\x00" * 36))
        refused_before_any_data(conn, "client without a certificate")
        expect_logged(a, mark, r"(?=.*refus)(?=.*(certificate|handshake))",
                      "the refusal of a client without a certificate")
        check_eq(event_count(cl, "a"), before, "events in a's journal after the refusal")
        still_serves(cl, "a client without a certificate")


def test_listener_refuses_certificate_from_another_ca():
    """A certificate signed by another cluster's CA is refused, logged."""
    with lfs.Workdir() as wd:
        cl = _two_nodes(wd)
        a = cl["a"]
        lfs.ctl("ca", "init", wd / "other-ca")
        lfs.ctl("init", wd / "o", "--name", "o", "--ca", wd / "other-ca")
        before, mark = event_count(cl, "a"), a.log_mark()
        conn = try_client(a, client_context(wd / "o" / "node.crt", wd / "o" / "node.key"),
                          frame(HELLO, hello_body(cl.cluster_id, "00000000000000ff", 1, {})))
        refused_before_any_data(conn, "client certified by another CA")
        expect_logged(a, mark, r"(?=.*refus)(?=.*(certificate|verify|issuer|unknown ca))",
                      "the refusal of another CA's certificate")
        check_eq(event_count(cl, "a"), before, "events in a's journal after the refusal")
        still_serves(cl, "another CA's certificate")


def test_listener_refuses_certificate_of_non_member():
    """The cluster CA's certificate of a node that is no configured peer is
    refused before any event is read, and the log names that node."""
    with lfs.Workdir() as wd:
        cl = _two_nodes(wd)
        a = cl["a"]
        lfs.ctl("init", wd / "x", "--name", "x", "--ca", cl.ca)
        x_id = read_config(wd / "x")["node"]["id"].strip().lower()
        before, mark = event_count(cl, "a"), a.log_mark()
        # a HELLO, then what a member would send next: a FETCH of a's events
        conn = try_client(a, client_context(wd / "x" / "node.crt", wd / "x" / "node.key"),
                          frame(HELLO, hello_body(cl.cluster_id, x_id, 1, {})),
                          frame(FETCH, struct.pack("<QQ", int(a.id, 16), 1)))
        refused_before_any_data(conn, "non-member client", allow_error=True)
        expect_logged(a, mark, rf"(?=.*refus)(?=.*{x_id})(?=.*member)",
                      f"the refusal of non-member node {x_id}")
        check_eq(event_count(cl, "a"), before, "events in a's journal after the refusal")
        still_serves(cl, "a non-member's certificate")


# ------------------------------------------- frames from a member's certificate

def _member_cluster(wd):
    """a, b (mounts) and c (a relay): in sync, then c stopped so that its
    certificate can be borrowed.  Returns (cluster, c's last applied vector)."""
    cl = Cluster(wd, ["a", "b", "c"], serve=("c",))
    sts = cl.wait_in_sync()
    cl.stop("c")
    return cl, vector(sts["c"])


def _as_c(cl, vec):
    """Dial a's listener with c's certificate and exchange HELLOs as c."""
    a, c = cl["a"], cl["c"]
    conn = dial(a, client_context(c.dir / "node.crt", c.dir / "node.key"))
    conn.send(frame(HELLO, hello_body(cl.cluster_id, c.id, 1, vec, a.id)))
    deadline = time.monotonic() + 10
    while True:
        try:
            f = conn.frame(max(0.0, deadline - time.monotonic()))
        except Closed as e:
            raise Failure(f"a dropped a valid HELLO from member c's certificate: {e}\n"
                          f"{a.log_tail(10)}")
        check(f is not None, "a answers c's HELLO within 10 s")
        if f[0] == HELLO:
            return conn
        check(f[0] in (PING, PONG), f"a sent {FRAME_NAMES.get(f[0], f[0])} before its HELLO")


def _after_bad_frame(cl, conn, what):
    frames, how = conn.until_closed(LOG_TIMEOUT, what)
    conn.close()
    kinds = {FRAME_NAMES.get(t, t) for t, _ in frames}
    check("EVENTS" not in kinds, f"{what}: a shipped events to a link it should drop")
    return error_text(frames), how


def test_listener_drops_oversized_frame():
    """A length field over 64 MiB from a member: dropped at once, logged, nothing written."""
    with lfs.Workdir() as wd:
        cl, vec = _member_cluster(wd)
        a = cl["a"]
        before, mark = event_count(cl, "a"), a.log_mark()
        conn = _as_c(cl, vec)
        conn.send(struct.pack("<IB", PROTO_MAX_FRAME + 1, EVENTS) + b"\x00" * 1000)
        errors, how = _after_bad_frame(cl, conn, "oversized frame")
        lfs.log(f"oversized frame: a sent {errors}, then {how}")
        expect_logged(a, mark, r"(?=.*(refus|drop))(?=.*(too long|too large|too big|size))",
                      "dropping the link with an oversized frame")
        check_eq(event_count(cl, "a"), before, "events in a's journal after the drop")
        still_serves(cl, "an oversized frame")


def test_listener_drops_garbage_frames():
    """Garbage from a member, before and after HELLO: dropped, logged, nothing written."""
    with lfs.Workdir() as wd:
        cl, vec = _member_cluster(wd)
        a, c = cl["a"], cl["c"]
        before, mark = event_count(cl, "a"), a.log_mark()
        # a HELLO frame whose body is noise (version 0xbeef)
        conn = dial(a, client_context(c.dir / "node.crt", c.dir / "node.key"))
        conn.send(frame(HELLO, b"\xef\xbe" + os.urandom(60)))
        errors, how = _after_bad_frame(cl, conn, "garbage HELLO")
        lfs.log(f"garbage HELLO: a sent {errors}, then {how}")
        expect_logged(a, mark, r"(?=.*(refus|drop))(?=.*(hello|version|malformed|bad frame))",
                      "refusing a garbage HELLO")
        mark = a.log_mark()
        # after a good HELLO, a frame of an unknown type full of noise
        conn = _as_c(cl, vec)
        conn.send(frame(0xEE, os.urandom(200)))
        errors, how = _after_bad_frame(cl, conn, "garbage frame")
        lfs.log(f"garbage frame: a sent {errors}, then {how}")
        expect_logged(a, mark, r"(?=.*(refus|drop))(?=.*(type|malformed|bad frame|unknown))",
                      "dropping the link with an unknown frame type")
        check_eq(event_count(cl, "a"), before, "events in a's journal after the drops")
        still_serves(cl, "garbage frames")


def test_listener_drops_truncated_frame():
    """A frame cut short, then the connection closed: dropped, logged, nothing written."""
    with lfs.Workdir() as wd:
        cl, vec = _member_cluster(wd)
        a = cl["a"]
        before, mark = event_count(cl, "a"), a.log_mark()
        conn = _as_c(cl, vec)
        whole = frame(ACK, struct.pack("<QQ", int(cl["c"].id, 16), 1))
        conn.send(whole[:9])        # the header and 4 of its 16 body bytes
        conn.close()
        expect_logged(a, mark, r"(?=.*(refus|drop))(?=.*truncated frame: link ended after 9 "
                               r"of 21 bytes)", "dropping the link with a truncated frame")
        check_eq(event_count(cl, "a"), before, "events in a's journal after the drop")
        still_serves(cl, "a truncated frame")


# --------------------------------------------- a hostile peer that is dialled

class FakePeer:
    """Listens on a stopped member's address with its certificate.  When a
    node in `plan` ({node id: path}) dials in, it answers the node's HELLO
    with the node's own applied vector (so the node lacks nothing), waits
    for its FETCH of our origin, and ships one CREATE event of that path.
    Later connections of the same node are closed after the handshake."""

    def __init__(self, cl, name, plan):
        self.cl = cl
        self.me = cl[name]
        self.plan = dict(plan)
        self.results = {}          # node id -> dict of what happened
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        ctx.load_cert_chain(str(self.me.dir / "node.crt"), str(self.me.dir / "node.key"))
        ctx.load_verify_locations(str(self.me.dir / "ca.crt"))
        ctx.verify_mode = ssl.CERT_REQUIRED
        self.ctx = ctx
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", self.me.port))
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.thread = threading.Thread(target=self._accept_loop, daemon=True)
        self.thread.start()

    def close(self):
        self.stopping.set()
        self.thread.join(timeout=10)
        self.sock.close()

    def _accept_loop(self):
        while not self.stopping.is_set():
            try:
                raw, _ = self.sock.accept()
            except (socket.timeout, TimeoutError):
                continue
            except OSError:
                return
            threading.Thread(target=self._serve, args=(raw,), daemon=True).start()

    def _serve(self, raw):
        raw.settimeout(10)
        try:
            conn = Conn(self.ctx.wrap_socket(raw, server_side=True))
        except (ssl.SSLError, OSError):
            raw.close()
            return
        try:
            self._play(conn)
        except (Closed, OSError, struct.error, Failure) as e:
            with self.lock:
                for r in self.results.values():
                    if r.get("conn") is conn and "how" not in r:
                        r["how"] = f"{type(e).__name__}: {e}"
        finally:
            conn.close()

    def _play(self, conn):
        f = conn.frame(10)
        if f is None or f[0] != HELLO:
            return
        node, term, vec = parse_hello(f[1])
        with self.lock:
            if node not in self.plan or node in self.results:
                return
            res = self.results[node] = {"conn": conn, "vector": dict(vec)}
        mine = self.me.id
        answer = dict(vec)
        answer.setdefault(mine, 0)
        conn.send(frame(HELLO, hello_body(self.cl.cluster_id, mine, max(term, 1), answer,
                                             self.cl.primary.id)))
        from_seq = None
        deadline = time.monotonic() + 5
        while from_seq is None and time.monotonic() < deadline:
            f = conn.frame(max(0.0, deadline - time.monotonic()))
            if f is None:
                break
            if f[0] == FETCH:
                origin, seq = struct.unpack("<QQ", f[1])
                if f"{origin:016x}" == mine and seq:
                    from_seq = seq
            elif f[0] == PING:
                conn.send(frame(PONG, f[1]))
        res["fetched"] = from_seq
        seq = from_seq or vec.get(mine, 0) + 1
        path = self.plan[node].encode()
        rec = encode_event("create", int(mine, 16), seq, path=path, mode=0o100644)
        conn.send(frame(EVENTS, events_body([rec])))
        res["sent"] = (seq, self.plan[node])
        frames, how = conn.until_closed(LOG_TIMEOUT, f"node {node} given {path!r}")
        res["errors"] = error_text(frames)
        res["frames"] = [FRAME_NAMES.get(t, t) for t, _ in frames]
        res["how"] = how


def test_dialer_refuses_events_escaping_the_store():
    """A node dials a peer that ships CREATE ../x (to a) and CREATE /etc/x (to
    b) with good CRCs: each refuses before journaling, logs why, creates
    nothing outside its store, and keeps replicating."""
    check(EVTOOL.exists(), f"{EVTOOL} is built (meson builds it with the binaries)")
    with lfs.Workdir() as wd:
        cl, _vec = _member_cluster(wd)
        a, b = cl["a"], cl["b"]
        tag = secrets.token_hex(4)
        plan = {a.id: f"../escape-{tag}", b.id: f"/etc/lfs-escape-{tag}"}
        counts = {n: event_count(cl, n) for n in ("a", "b")}
        marks = {n: cl[n].log_mark() for n in ("a", "b")}
        applied_c = {n: cl.applied(n, "c") for n in ("a", "b")}
        fake = FakePeer(cl, "c", plan)
        try:
            lfs.wait_until(lambda: all("how" in fake.results.get(i, {}) for i in plan), 45,
                           "a and b to dial the fake c, take its event and drop the link")
        except Failure as e:
            raise Failure(f"{e}; so far: {fake.results}")
        finally:
            fake.close()
        for n, node in (("a", a), ("b", b)):
            res = fake.results[node.id]
            lfs.log(f"{n}: fetched from {res.get('fetched')}, sent {res.get('sent')}, "
                    f"answered {res.get('errors')} and {res.get('how')}")
            path = plan[node.id]
            expect_logged(node, marks[n], rf"(?=.*refus)(?=.*({re.escape(path)}|\.\.|"
                                          r"absolute|escape|beneath))",
                          f"refusing the event with path {path}")
            check_eq(event_count(cl, n), counts[n], f"events in {n}'s journal after refusing")
            check_eq(cl.applied(n, "c"), applied_c[n], f"{n}'s applied seq of c")
        check(not (a.dir / f"escape-{tag}").exists() and
              not (wd / f"escape-{tag}").exists(), "nothing made beside a's store")
        check(not os.path.lexists(f"/etc/lfs-escape-{tag}"), "nothing made in /etc")
        still_serves(cl, "hostile events")


class DroppingPeer(FakePeer):
    """Answers the HELLO of every node in `nodes` with its own vector, then
    closes the link at once: a peer that takes a node and drops it, again and
    again.  `handshakes` lists, per node id, the monotonic times of each."""

    def __init__(self, cl, name, nodes):
        super().__init__(cl, name, {n: "" for n in nodes})
        self.handshakes = {n: [] for n in nodes}

    def _play(self, conn):
        f = conn.frame(10)
        if f is None or f[0] != HELLO:
            return
        node, term, vec = parse_hello(f[1])
        if node not in self.plan:
            return
        answer = dict(vec)
        answer.setdefault(self.me.id, 0)
        conn.send(frame(HELLO, hello_body(self.cl.cluster_id, self.me.id, max(term, 1),
                                             answer, self.cl.primary.id)))
        with self.lock:
            self.handshakes[node].append(time.monotonic())


def test_dialer_backs_off_from_a_peer_that_drops_it_after_the_handshake():
    """A link that comes up and fails at once is retried with a growing,
    capped backoff, not every few milliseconds (the node used to start the
    backoff over at every successful handshake)."""
    with lfs.Workdir() as wd:
        cl, _vec = _member_cluster(wd)
        a = cl["a"]
        fake = DroppingPeer(cl, "c", [a.id])
        try:
            time.sleep(10)
            with fake.lock:
                times = list(fake.handshakes[a.id])
        finally:
            fake.close()
        gaps = [round(t2 - t1, 2) for t1, t2 in zip(times, times[1:])]
        lfs.log(f"a dialled the dropping c {len(times)} times in 10 s, gaps {gaps}")
        check(2 <= len(times) <= 15, f"a dialled c {len(times)} times in 10 s (gaps {gaps})")
        check(max(gaps) >= 1.0, f"the backoff grew past a second: gaps {gaps}")
        still_serves(cl, "a peer that drops the link")
