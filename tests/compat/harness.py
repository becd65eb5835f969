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
"""

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
    cmd += ["-cp", zookeeper_classpath(), "org.apache.zookeeper.server.ZooKeeperServerMain", str(cfg)]
    return cmd


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

    def __init__(self, name, ttl_enabled=True, target=TARGET, extra_args=(), data_dir=None):
        """`extra_args`: more ringkeeper flags (ringkeeper only). `data_dir`: use this
        directory (e.g. on a filesystem a test made) instead of one in the work dir."""
        self.name = re.sub(r"[^A-Za-z0-9_.-]+", "_", name)[:80]
        self.target = target
        self.ttl_enabled = ttl_enabled
        self.extra_args = list(extra_args)
        assert not self.extra_args or target == "ringkeeper", "extra_args are ringkeeper flags"
        self.port = free_port()
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

    def start(self):
        assert self.proc is None or self.proc.poll() is not None, "already running"
        cmd = self.command()
        if self.target == "ringkeeper" and not Path(cmd[0]).exists():
            pytest.fail("ringkeeper binary %s not found: run `cargo build --release` first" % cmd[0])
        self.starts += 1
        with open(self.log_path, "ab") as log:
            log.write(("\n===== start #%d: %s\n" % (self.starts, " ".join(cmd))).encode())
            log.flush()
            env = dict(os.environ, RUST_BACKTRACE="1")
            self.proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=str(self.workdir),
                env=env,
                start_new_session=True,
                preexec_fn=_raise_memlock,
            )
        if self not in LIVE_SERVERS:
            LIVE_SERVERS.append(self)
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
