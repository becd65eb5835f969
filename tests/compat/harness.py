"""Server processes, a breakable TCP proxy and small helpers for the compat suite.

The same tests run against two targets, picked by the environment:

    RK_TARGET=ringkeeper   target/release/ringkeeper (override with RK_BIN)
    RK_TARGET=zookeeper    Apache ZooKeeper 3.8 from Debian's jars (override the
                           classpath with ZK_CLASSPATH)

Every server listens on a free 127.0.0.1 port with a fresh data dir, and counts
as started only once it answers a real ZooKeeper handshake. Its output goes to
a log file under target/compat-logs/<target>/ (RK_COMPAT_LOG_DIR overrides);
the tail of that log is attached to the report of any failing test.

Both servers run with tickTime 200 ms, so negotiated session timeouts are
clamped to [400 ms, 4000 ms] and expiry tests finish quickly.

`Ensemble` runs a replicated ensemble of such servers (ringkeeper members with
--member flags, ZooKeeper QuorumPeerMain with a zoo.cfg + myid each).
"""

import base64
import collections
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest
from kazoo.client import KazooClient

import zkwire

REPO_ROOT = Path(__file__).resolve().parents[2]
TARGET = os.environ.get("RK_TARGET", "ringkeeper")
if TARGET not in ("ringkeeper", "zookeeper"):
    raise pytest.UsageError("RK_TARGET must be 'ringkeeper' or 'zookeeper', not %r" % TARGET)

TICK_MS = 200
START_TIMEOUT_S = 60.0  # a cold JVM on a busy 2-core machine can take a while
STOP_GRACE_S = 10.0
LOG_DIR = Path(os.environ.get("RK_COMPAT_LOG_DIR", REPO_ROOT / "target" / "compat-logs" / TARGET))

# Servers currently running, so a failing test's report can show their logs.
LIVE_SERVERS = []


# ----------------------------------------------------------------------------
# how each target is started (keep the command lines here, and only here)


def ringkeeper_binary():
    return Path(os.environ.get("RK_BIN", REPO_ROOT / "target" / "release" / "ringkeeper"))


def ringkeeper_command(port, data_dir, ttl_enabled):
    cmd = [
        str(ringkeeper_binary()),
        "serve",
        "--client-addr", "127.0.0.1:%d" % port,
        "--data-dir", str(data_dir),
        "--tick-time", str(TICK_MS),
        "--shards", "2",
        # the same settings the ZooKeeper run gets from zoo.cfg / -D flags
        "--four-letter-whitelist", "*",
        "--container-check-interval", "500",
    ]
    if ttl_enabled:
        cmd.append("--ttl-enabled")
    return cmd


def zookeeper_classpath():
    if os.environ.get("ZK_CLASSPATH"):
        return os.environ["ZK_CLASSPATH"]
    # zookeeper.jar's manifest Class-Path names its other dependencies; it
    # ships no slf4j binding, so add slf4j-simple to get a log on stderr.
    jars = ["/usr/share/java/zookeeper.jar", "/usr/share/java/slf4j-simple.jar"]
    return ":".join(j for j in jars if os.path.exists(j))


def _zookeeper_java(main_class, cfg, ttl_enabled):
    cmd = [
        "java",
        "-Xmx512m",
        "-XX:+UseSerialGC",
        "-Dzookeeper.admin.enableServer=false",
        "-Dznode.container.checkIntervalMs=500",
        "-Dorg.slf4j.simpleLogger.showDateTime=true",
        "-Dorg.slf4j.simpleLogger.dateTimeFormat=HH:mm:ss.SSS",
    ]
    if ttl_enabled:
        cmd.append("-Dzookeeper.extendedTypesEnabled=true")
    return cmd + ["-cp", zookeeper_classpath(), main_class, str(cfg)]


def zookeeper_command(port, data_dir, ttl_enabled):
    cfg = Path(data_dir).parent / ("zoo-%d.cfg" % port)
    cfg.write_text(
        "\n".join(
            [
                "tickTime=%d" % TICK_MS,
                "dataDir=%s" % data_dir,
                "clientPort=%d" % port,
                "clientPortAddress=127.0.0.1",
                "4lw.commands.whitelist=*",
                "forceSync=yes",
                "preAllocSize=4096",
                "",
            ]
        )
    )
    return _zookeeper_java("org.apache.zookeeper.server.ZooKeeperServerMain", cfg, ttl_enabled)


# Ensemble members. `members` maps every member id (this one included) to its
# `server.N=` right-hand side as THIS member sees it (see member_line): a
# member listens on its own entry's peer address and dials the others' (which
# may be proxies, for partitions).


def member_line(peer_port, election_port, client_port, observer=False, host="127.0.0.1"):
    """A ZooKeeper `server.N=` right-hand side:
    host:peerPort:electionPort[:observer];host:clientPort."""
    return "%s:%d:%d%s;%s:%d" % (host, peer_port, election_port, ":observer" if observer else "", host, client_port)


def ringkeeper_member_command(member_id, port, data_dir, members, ttl_enabled):
    cmd = ringkeeper_command(port, data_dir, ttl_enabled) + ["--server-id", str(member_id)]
    for mid in sorted(members):
        cmd += ["--member", "%d=%s" % (mid, members[mid])]
    return cmd


def zookeeper_member_command(member_id, port, data_dir, members, observer, ttl_enabled):
    """A QuorumPeerMain with its own zoo.cfg (next to the data dir) and
    dataDir/myid; both are (re)written on every start, so a wiped data dir
    gets its myid back."""
    cfg = Path(data_dir).parent / ("zoo-%d.cfg" % member_id)
    lines = [
        "tickTime=%d" % TICK_MS,
        # in ticks: 5 s to connect and sync to a leader (JVMs start slowly on a
        # busy machine), 2 s of silence before a peer counts as gone
        "initLimit=25",
        "syncLimit=10",
        "dataDir=%s" % data_dir,
        "4lw.commands.whitelist=*",
        "forceSync=yes",
        "preAllocSize=4096",
    ]
    if observer:
        lines.append("peerType=observer")
    lines += ["server.%d=%s" % (mid, members[mid]) for mid in sorted(members)]
    cfg.write_text("\n".join(lines + [""]))
    Path(data_dir).mkdir(parents=True, exist_ok=True)
    (Path(data_dir) / "myid").write_text("%d\n" % member_id)
    return _zookeeper_java("org.apache.zookeeper.server.quorum.QuorumPeerMain", cfg, ttl_enabled)


# ----------------------------------------------------------------------------
# helpers


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _raise_memlock():
    # glommio needs locked memory for its io_uring rings; best effort.
    try:
        resource.setrlimit(resource.RLIMIT_MEMLOCK, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    except (ValueError, OSError):
        try:
            hard = resource.getrlimit(resource.RLIMIT_MEMLOCK)[1]
            resource.setrlimit(resource.RLIMIT_MEMLOCK, (hard, hard))
        except (ValueError, OSError):
            pass


def wait_until(pred, timeout, interval=0.05, what="condition"):
    """Polls `pred` until it returns a truthy value; fails the test after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            pytest.fail("timed out after %.1fs waiting for %s" % (timeout, what))
        time.sleep(interval)


class Server:
    """One server process of the chosen target on a fixed port and data dir;
    can be stopped, killed and restarted on the same port and data."""

    def __init__(self, name, ttl_enabled=True, target=TARGET, extra_args=(), data_dir=None, port=None):
        """`extra_args`: more ringkeeper flags (ringkeeper only). `data_dir`: use this
        directory (e.g. on a filesystem a test made) instead of one in the work dir.
        `port`: the client port (default: a free one)."""
        self.name = re.sub(r"[^A-Za-z0-9_.-]+", "_", name)[:80]
        self.target = target
        self.ttl_enabled = ttl_enabled
        self.extra_args = list(extra_args)
        assert not self.extra_args or target == "ringkeeper", "extra_args are ringkeeper flags"
        self.port = port or free_port()
        self.addr = ("127.0.0.1", self.port)
        self.hosts = "127.0.0.1:%d" % self.port
        self.workdir = Path(tempfile.mkdtemp(prefix="rk-compat-%s-" % self.name))
        self.data_dir = Path(data_dir) if data_dir else self.workdir / "data"
        self.data_dir.mkdir(exist_ok=True)
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        self.log_path = LOG_DIR / ("%s-%d.log" % (self.name, self.port))
        self.proc = None
        self.starts = 0

    def command(self):
        if self.target == "ringkeeper":
            return ringkeeper_command(self.port, self.data_dir, self.ttl_enabled) + self.extra_args
        return zookeeper_command(self.port, self.data_dir, self.ttl_enabled)

    def start(self, wait=True):
        """Starts the process; with `wait`, returns once it answers a handshake
        (an ensemble member only does so once it has a quorum)."""
        assert self.proc is None or self.proc.poll() is not None, "already running"
        cmd = self.command()
        if self.target == "ringkeeper" and not Path(cmd[0]).exists():
            pytest.fail("ringkeeper binary %s not found: run `cargo build --release` first" % cmd[0])
        self.starts += 1
        with open(self.log_path, "ab") as log:
            log.write(("\n===== start #%d: %s\n" % (self.starts, " ".join(cmd))).encode())
            log.flush()
            env = dict(os.environ, RUST_BACKTRACE="1")
            # raised here and inherited, not in a preexec_fn: that is unsafe
            # while other threads run (writers, kazoo, proxies), and may hang
            _raise_memlock()
            self.proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=str(self.workdir),
                env=env,
                start_new_session=True,
            )
        if self not in LIVE_SERVERS:
            LIVE_SERVERS.append(self)
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout=None):
        """Waits until the server completes a real handshake (a new session that
        is then closed again), not just until the port accepts."""
        timeout = START_TIMEOUT_S if timeout is None else timeout
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    "%s exited with %s during start-up; log tail:\n%s"
                    % (self.target, self.proc.returncode, self.log_tail())
                )
            try:
                c = zkwire.RawConn(self.addr, timeout=2.0)
                try:
                    resp = c.handshake(timeout_ms=4000)
                    if resp.timeout > 0:
                        c.close_session()
                        return
                    last = "handshake refused: %r" % (resp,)
                finally:
                    c.close()
            except (OSError, zkwire.Closed, zkwire.ProtocolError) as e:
                last = repr(e)
            time.sleep(0.1)
        raise RuntimeError(
            "%s did not answer a handshake within %.0fs (last: %s); log tail:\n%s"
            % (self.target, timeout, last, self.log_tail())
        )

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def _signal(self, sig):
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass

    def stop(self):
        """SIGTERM, then SIGKILL if it is still there after a bound."""
        if not self.running():
            return
        self._signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            self._signal(signal.SIGKILL)
            self.proc.wait(timeout=STOP_GRACE_S)

    def kill(self):
        """SIGKILL: a crash, with no chance to flush anything."""
        if not self.running():
            return
        self._signal(signal.SIGKILL)
        self.proc.wait(timeout=STOP_GRACE_S)

    def restart(self, hard=False):
        self.kill() if hard else self.stop()
        return self.start()

    def destroy(self):
        self.stop()
        if self in LIVE_SERVERS:
            LIVE_SERVERS.remove(self)
        shutil.rmtree(self.workdir, ignore_errors=True)

    def log_tail(self, lines=60):
        try:
            text = self.log_path.read_bytes().decode("utf-8", "replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


class TcpProxy:
    """A TCP relay between clients and the server that a test can break:
    `cut()` drops every open connection (the client sees a dead socket and
    reconnects, resuming its session); `block()` also refuses new
    connections until `unblock()` (so a session can expire)."""

    def __init__(self, upstream):
        self.upstream = upstream
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(64)
        self.lsock.settimeout(0.1)
        self.port = self.lsock.getsockname()[1]
        self.hosts = "127.0.0.1:%d" % self.port
        self._lock = threading.Lock()
        self._pairs = []
        self._blocked = False
        self._stop = threading.Event()
        self.accepted = 0
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)
        self._thread.start()

    def _accept_loop(self):
        while not self._stop.is_set():
            try:
                c, _ = self.lsock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            with self._lock:
                blocked = self._blocked
            if blocked:
                c.close()
                continue
            try:
                u = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                c.close()
                continue
            for s in (c, u):
                s.settimeout(None)
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self._pairs.append((c, u))
                self.accepted += 1
            threading.Thread(target=self._pump, args=(c, u), daemon=True).start()
            threading.Thread(target=self._pump, args=(u, c), daemon=True).start()

    @staticmethod
    def _pump(src, dst):
        try:
            while True:
                b = src.recv(65536)
                if not b:
                    break
                dst.sendall(b)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def cut(self):
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for c, u in pairs:
            for s in (c, u):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()

    def block(self):
        with self._lock:
            self._blocked = True
        self.cut()

    def unblock(self):
        with self._lock:
            self._blocked = False

    def close(self):
        self._stop.set()
        self.cut()
        self.lsock.close()
        self._thread.join(timeout=2)


# ----------------------------------------------------------------------------
# replicated ensembles

# What a member without a quorum answers to srvr/stat/mntr (both targets).
NOT_SERVING = "not currently serving requests"


def parse_kv(text, sep):
    """`key<sep>value` lines (srvr: ": ", mntr: tab) as a dict."""
    out = {}
    for line in text.splitlines():
        if sep in line:
            k, v = line.split(sep, 1)
            out[k.strip()] = v.strip()
    return out


def mntr(server):
    """A server's (or member's) mntr answer as a dict (values as text)."""
    return parse_kv(zkwire.four_letter(server.addr, "mntr", timeout=3.0), "\t")


def counter(server, name):
    """One mntr counter of a server, 0 when it does not report it."""
    return int(mntr(server).get(name, 0))


class EnsembleMember(Server):
    """One member of an Ensemble: a Server (same logs, same LIVE_SERVERS)
    whose command line names every member, as this member sees them."""

    def __init__(self, ensemble, member_id, observer, port, join=False):
        self.ensemble = ensemble
        self.id = member_id
        self.observer = observer
        self.join = join  # started with --join: a reconfig adds it to a running ensemble
        self.secret_file = None  # this member's own secret file instead of the ensemble's
        super().__init__(
            "%s-m%d" % (ensemble.name, member_id),
            ttl_enabled=ensemble.ttl_enabled,
            target=ensemble.target,
            extra_args=ensemble.extra_args,
            port=port,
        )

    def command(self):
        view = self.ensemble.view(self.id)
        if self.target == "ringkeeper":
            join = ["--join"] if self.join else []
            secret_file = self.secret_file or self.ensemble.secret_file
            secret = ["--peer-secret-file", str(secret_file)] if secret_file else []
            return (ringkeeper_member_command(self.id, self.port, self.data_dir, view, self.ttl_enabled)
                    + secret + self.extra_args + join)
        return zookeeper_member_command(self.id, self.port, self.data_dir, view, self.observer, self.ttl_enabled)

    def wipe(self):
        """Deletes everything in the data dir; only while stopped."""
        assert not self.running(), "wipe() needs a stopped member"
        for p in self.data_dir.iterdir():
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink()

    def __repr__(self):
        return "<member %d %s>" % (self.id, self.hosts)


class Ensemble:
    """A replicated ensemble on 127.0.0.1: `size` voting members (ids 1..size)
    plus `observers` (the ids after them). Each member has its own client,
    peer and election port (ringkeeper gets ZooKeeper's election port in its
    --member specs too, and ignores it), work dir, data dir and log.

    With `proxied=True` (ringkeeper only) every ordered pair (i, j) gets its
    own TcpProxy to j's peer port and member i's member list names that proxy
    for j, so `cut(a, b)` / `heal()` can partition the network. This relies
    on a ringkeeper member listening on its own entry and telling peers apart
    by their hello message, not their address. (ZooKeeper's leader election
    connects back to the address a peer announces, bypassing such proxies.)"""

    def __init__(self, name, size=3, observers=0, target=TARGET, extra_args=(), proxied=False, ttl_enabled=True, spares=0,
                 secret=True):
        """`secret`: ringkeeper members authenticate each other with a shared secret
        (a random file, `secret_file`), as scripts/ensemble.sh sets them up; False
        runs them without one (the peer port open to anyone)."""
        assert size >= 1 and observers >= 0
        assert not proxied or target == "ringkeeper", "partitions (proxied=True) need ringkeeper"
        self.name = re.sub(r"[^A-Za-z0-9_.-]+", "_", name)[:60]
        self.target = target
        self.size = size
        self.extra_args = list(extra_args)
        self.ttl_enabled = ttl_enabled
        self.proxied = proxied
        self.secret_file = None
        if secret and target == "ringkeeper":
            fd, path = tempfile.mkstemp(prefix="rk-compat-%s-" % self.name, suffix=".secret")
            os.write(fd, base64.b64encode(os.urandom(32)) + b"\n")
            os.close(fd)
            self.secret_file = Path(path)
        used = set()

        def port():
            # free_port() does not reserve its port: never hand out one twice
            while True:
                p = free_port()
                if p not in used:
                    used.add(p)
                    return p

        ids = range(1, size + observers + 1)
        spare_ids = range(size + observers + 1, size + observers + spares + 1)
        self.peer_ports = {i: port() for i in list(ids) + list(spare_ids)}
        self.election_ports = {i: port() for i in self.peer_ports}
        self.members = [EnsembleMember(self, i, i > size, port()) for i in ids]
        # Spares (ringkeeper only) are not in the first configuration: each starts
        # with --join, knowing the first members and itself, and a reconfig adds
        # it (`joined()` then counts it among `members`). Every member's command
        # line keeps naming only the first members: the rest it must learn from
        # the ensemble.
        assert not spares or target == "ringkeeper", "spares need ringkeeper's --join"
        self.spares = [EnsembleMember(self, i, False, port(), join=True) for i in spare_ids]
        self.first_ids = list(ids)
        self.proxies = {}  # (i, j) -> the proxy member i dials to reach j
        for i in ids if proxied else ():
            for j in ids:
                if i == j:
                    continue
                rejected = []
                pr = TcpProxy(("127.0.0.1", self.peer_ports[j]))
                while pr.port in used:  # took a member's port before it was bound
                    rejected.append(pr)
                    pr = TcpProxy(("127.0.0.1", self.peer_ports[j]))
                for r in rejected:
                    r.close()
                used.add(pr.port)
                self.proxies[(i, j)] = pr

    # -- addresses

    def view(self, member_id):
        """Every member's `server.N=` right-hand side as `member_id` sees it."""
        out = {}
        for m in self.members + self.spares:
            if m.id not in self.first_ids and m.id != member_id:
                continue
            peer = self.peer_ports[m.id]
            if self.proxied and m.id != member_id:
                peer = self.proxies[(member_id, m.id)].port
            out[m.id] = member_line(peer, self.election_ports[m.id], m.port, m.observer)
        return out

    @property
    def hosts(self):
        """Client addresses of all members, for kazoo."""
        return self.hosts_of(self.members)

    @staticmethod
    def hosts_of(members):
        return ",".join(m.hosts for m in members)

    def member(self, member_id):
        return next(m for m in self.members + self.spares if m.id == member_id)

    def line(self, member_id, observer=False):
        """`server.N=...` for member_id (a reconfig's joining entry)."""
        m = self.member(member_id)
        return "server.%d=%s" % (m.id, member_line(self.peer_ports[m.id], self.election_ports[m.id], m.port, observer))

    def joined(self, member):
        """A spare that a reconfig added counts among the members from now on."""
        self.spares.remove(member)
        self.members.append(member)

    def left(self, member):
        """A member that a reconfig removed: no longer counted (still running
        until the test stops it)."""
        self.members.remove(member)
        self.spares.append(member)

    @property
    def voters(self):
        return [m for m in self.members if not m.observer]

    # -- life cycle

    def start(self, timeout=None):
        """Starts every member that is not running, waits until each answers a
        handshake, then until exactly one member reports leader."""
        todo = [m for m in self.members if not m.running()]
        for m in todo:
            m.start(wait=False)
        for m in todo:
            m.wait_ready(timeout)
        self.leader()
        return self

    def destroy(self):
        # SIGTERM to all first: a member stopped last may wait for its peers
        for m in self.members + self.spares:
            if m.running():
                m._signal(signal.SIGTERM)
        for m in self.members + self.spares:
            m.destroy()
        for pr in self.proxies.values():
            pr.close()
        self.proxies = {}

    # -- what the members say (srvr)

    def srvr(self, member, timeout=3.0):
        """`srvr` as a dict, or None when the member is down or not serving."""
        if not member.running():
            return None
        try:
            out = zkwire.four_letter(member.addr, "srvr", timeout=timeout)
        except OSError:
            return None
        if NOT_SERVING in out:
            return None
        kv = parse_kv(out, ": ")
        return kv if "Mode" in kv and "Zxid" in kv else None

    def mode(self, member):
        """'leader', 'follower', 'observer' or 'standalone'; None when not serving."""
        kv = self.srvr(member)
        return kv["Mode"] if kv else None

    def zxid(self, member):
        kv = self.srvr(member)
        return int(kv["Zxid"], 16) if kv else None

    def modes(self):
        return {m.id: self.mode(m) for m in self.members}

    def _wait(self, pred, timeout, what, show):
        deadline = time.monotonic() + timeout
        while True:
            v = pred()
            if v is not None:
                return v
            if time.monotonic() > deadline:
                pytest.fail("%s: timed out after %.1fs waiting for %s (last: %s)" % (self.name, timeout, what, show()))
            time.sleep(0.1)

    def leader(self, timeout=60.0):
        """Waits until exactly one member reports Mode: leader; returns it."""
        seen = {}

        def one():
            seen.clear()
            seen.update(self.modes())
            leaders = [m for m in self.members if seen[m.id] == "leader"]
            return leaders[0] if len(leaders) == 1 else None

        return self._wait(one, timeout, "exactly one leader", lambda: seen)

    def wait_converged(self, timeout=60.0):
        """Waits until every running member serves and reports the same Zxid
        in srvr; returns that zxid."""
        seen = {}

        def same():
            seen.clear()
            seen.update({m.id: self.zxid(m) for m in self.members if m.running()})
            vals = set(seen.values())
            if len(vals) == 1 and None not in vals:
                return vals.pop()
            if self.target == "zookeeper" and None not in vals and time.monotonic() > lenient_after:
                # A ZooKeeper follower can go on reporting a zxid a commit or two behind
                # until the next write reaches it (seen once in ~20 full runs, stuck for a
                # minute): every member serves; the tree checks that follow read through
                # each member after a sync.
                return max(vals)
            return None

        lenient_after = time.monotonic() + min(10.0, timeout / 2)

        return self._wait(same, timeout, "every running member at the same zxid",
                          lambda: {k: (v if v is None else hex(v)) for k, v in seen.items()})

    # -- partitions (proxied=True)

    def cut(self, a, b):
        """Breaks every peer connection between the members (or ids) in `a` and
        those in `b`, in both directions, and refuses new ones until heal()."""
        assert self.proxied, "cut() needs Ensemble(proxied=True)"
        ids = lambda xs: [x.id if isinstance(x, EnsembleMember) else x for x in xs]  # noqa: E731
        for i in ids(a):
            for j in ids(b):
                self.proxies[(i, j)].block()
                self.proxies[(j, i)].block()

    def heal(self):
        for pr in self.proxies.values():
            pr.unblock()


class WriterThread(threading.Thread):
    """A client thread that writes until `stop` is set (subclasses give
    `work()`): counts acknowledged writes in `acks` and failures by exception
    type; an unexpected exception ends it and stays in `error`; its client is
    closed at the end."""

    def __init__(self, idx, zk, stop):
        super().__init__(daemon=True)
        self.idx = idx
        self.zk = zk
        self.stop = stop
        self.acks = 0
        self.failures = collections.Counter()
        self.error = None

    def wait_connected(self, timeout):
        """Backs off until the client has a connection again (or stop)."""
        deadline = time.monotonic() + timeout
        while not self.zk.connected and not self.stop.is_set() and time.monotonic() < deadline:
            time.sleep(0.02)

    def run(self):
        try:
            self.work()
        except BaseException as e:
            self.error = e
        finally:
            try:
                self.zk.stop()
                self.zk.close()
            except Exception:
                pass


def wait_for_acks(writers, more, timeout, what="writers made no progress"):
    """Waits until every WriterThread has `more` acknowledged writes beyond
    where it stands now; fails the test if one ends with an error or they do
    not get there within `timeout`."""
    start = [w.acks for w in writers]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(w.error for w in writers):
            break
        if all(w.acks >= s + more for w, s in zip(writers, start)):
            return
        time.sleep(0.05)
    pytest.fail(
        "%s: %s" % (what, [(w.idx, w.acks - s, dict(w.failures), repr(w.error)) for w, s in zip(writers, start)])
    )


def make_kazoo(hosts, timeout=10.0, **kw):
    """A started kazoo client. The fast connection retry matters for the proxy
    tests: after a cut the client must come back well within the session."""
    kw.setdefault(
        "connection_retry", dict(max_tries=-1, delay=0.05, backoff=1.3, max_delay=0.3)
    )
    c = KazooClient(hosts=hosts, timeout=timeout, **kw)
    c.start(timeout=30)
    return c


def _probe(target, timeout):
    """`python harness.py --probe ringkeeper`: exit 0 if the target starts and
    answers a handshake (scripts/test.sh uses it to tell 'does not serve yet')."""
    global START_TIMEOUT_S
    START_TIMEOUT_S = timeout
    s = Server("probe", target=target)
    try:
        s.start()
        print("%s serves on %s" % (target, s.hosts))
        return 0
    except (RuntimeError, OSError, pytest.fail.Exception) as e:
        print("%s does not serve: %s" % (target, e))
        return 1
    finally:
        s.destroy()


if __name__ == "__main__":
    import argparse
    import sys

    ap = argparse.ArgumentParser()
    ap.add_argument("--probe", choices=["ringkeeper", "zookeeper"], required=True)
    ap.add_argument("--timeout", type=float, default=20.0)
    a = ap.parse_args()
    sys.exit(_probe(a.probe, a.timeout))


class EventBox:
    """Collects kazoo watch events."""

    def __init__(self):
        self.events = []
        self.cond = threading.Condition()

    def __call__(self, event):
        with self.cond:
            self.events.append(event)
            self.cond.notify_all()

    def wait(self, n=1, timeout=10.0):
        deadline = time.monotonic() + timeout
        with self.cond:
            while len(self.events) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    pytest.fail("got %d of %d watch events in %.1fs: %s" % (len(self.events), n, timeout, self.events))
                self.cond.wait(left)
            return list(self.events)
