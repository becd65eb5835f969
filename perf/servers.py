"""Starting and stopping the two servers the perf scripts compare, and small helpers.

ringkeeper:  target/release/ringkeeper serve (RK_BIN overrides), --max-client-cnxns 0, defaults
             otherwise (tickTime 2000, one shard per core, fdatasync before every ack).
zookeeper:   Apache ZooKeeper 3.8 from Debian's jars (ZK_CLASSPATH overrides), standalone,
             forceSync=yes, maxClientCnxns=0, heap ZK_HEAP (default 2g) as -Xms and -Xmx,
             defaults otherwise (snapCount 100000, preAllocSize 64 MiB, tickTime 2000).

A server counts as started once it answers a real ZooKeeper handshake (a new session, closed
again), not when its port accepts.

3-member ensembles (Ensemble), all members on 127.0.0.1, one data dir each:
ringkeeper:  each member `serve --server-id N --member '1=127.0.0.1:P1;127.0.0.1:C1' (x3)
             --data-dir DIR_N --client-addr 127.0.0.1:C_N --max-client-cnxns 0`, shards per member
             RK_ENSEMBLE_SHARDS (default: ringkeeper's own, one per core; a member pins shard i to
             core i % cores, so `--shards 1` would put all three members on core 0).
zookeeper:   three QuorumPeerMain JVMs, zoo.cfg as the standalone's plus initLimit=10,
             syncLimit=5 and `server.N=127.0.0.1:QUORUM_PORT:ELECTION_PORT`, dataDir/myid; heap
             ZK_ENSEMBLE_HEAP per member (default ZK_HEAP).
An ensemble counts as started once every member answers a handshake and `srvr` says `Mode: leader`
on exactly one member and `Mode: follower` on the others.
"""

import os
import resource
import shutil
import signal
import socket
import struct
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SERVERS = ("ringkeeper", "zookeeper")
TOPOLOGIES = ("standalone", "ensemble3")
ZK_HEAP = os.environ.get("ZK_HEAP", "2g")
ZK_ENSEMBLE_HEAP = os.environ.get("ZK_ENSEMBLE_HEAP", ZK_HEAP)
RK_ENSEMBLE_SHARDS = os.environ.get("RK_ENSEMBLE_SHARDS") or None  # None: ringkeeper's default


def ringkeeper_binary():
    return Path(os.environ.get("RK_BIN", ROOT / "target" / "release" / "ringkeeper"))


def zookeeper_classpath():
    if os.environ.get("ZK_CLASSPATH"):
        return os.environ["ZK_CLASSPATH"]
    jars = ["/usr/share/java/zookeeper.jar", "/usr/share/java/slf4j-simple.jar"]
    return ":".join(j for j in jars if os.path.exists(j))


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _raise_memlock():
    # glommio needs locked memory for its io_uring rings; best effort.
    for limit in (resource.RLIM_INFINITY, None):
        try:
            hard = resource.getrlimit(resource.RLIMIT_MEMLOCK)[1]
            v = hard if limit is None else limit
            resource.setrlimit(resource.RLIMIT_MEMLOCK, (v, v))
            return
        except (ValueError, OSError):
            continue


def handshake(port, timeout=2.0):
    """One ZooKeeper handshake on 127.0.0.1:port, session closed again. True on success."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        # ConnectRequest: protocolVersion, lastZxidSeen, timeOut, sessionId, passwd, readOnly
        body = struct.pack(">iqiqi16s?", 0, 0, 30000, 0, 16, b"\0" * 16, False)
        s.sendall(struct.pack(">i", len(body)) + body)
        n = struct.unpack(">i", _recv_exact(s, 4))[0]
        reply = _recv_exact(s, n)
        _proto, negotiated = struct.unpack(">ii", reply[:8])
        if negotiated <= 0:
            return False
        close = struct.pack(">ii", 1, -11)  # xid 1, closeSession
        s.sendall(struct.pack(">i", len(close)) + close)
        try:
            n = struct.unpack(">i", _recv_exact(s, 4))[0]
            _recv_exact(s, n)
        except OSError:
            pass
        return True


def _recv_exact(s, n):
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("closed")
        buf += chunk
    return buf


def rss_kib(pid):
    """VmRSS of a process in KiB (from /proc/PID/status)."""
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS for pid %d" % pid)


def cpu_seconds(pid):
    """User + system CPU seconds a process has used so far."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def jvm_live_heap_kib(pid):
    """Heap in use right after a full GC (jcmd), or None where jcmd is missing or fails."""
    jcmd = shutil.which("jcmd")
    if not jcmd:
        return None
    try:
        subprocess.run([jcmd, str(pid), "GC.run"], capture_output=True, timeout=60, check=True)
        out = subprocess.run(
            [jcmd, str(pid), "GC.heap_info"], capture_output=True, text=True, timeout=60, check=True
        ).stdout
    except (subprocess.SubprocessError, OSError):
        return None
    for line in out.splitlines():
        # " garbage-first heap   total 2097152K, used 412345K [0x..."
        if "total" in line and "used" in line:
            try:
                return int(line.split("used")[1].split("K")[0].strip())
            except (IndexError, ValueError):
                return None
    return None


class Server:
    """One server process on a fixed port and data dir; stop() and start() again reuse both."""

    def __init__(self, kind, workdir, name="server"):
        assert kind in SERVERS, kind
        self.kind = kind
        self.workdir = Path(workdir)
        self.data_dir = self.workdir / ("%s-%s-data" % (kind, name))
        if self.data_dir.exists():
            shutil.rmtree(self.data_dir)
        self.data_dir.mkdir(parents=True)
        self.log_path = self.workdir / ("%s-%s.log" % (kind, name))
        self.port = free_port()
        self.addr = "127.0.0.1:%d" % self.port
        self.proc = None
        self.starts = 0

    def command(self):
        if self.kind == "ringkeeper":
            return [
                str(ringkeeper_binary()),
                "serve",
                "--client-addr", self.addr,
                "--data-dir", str(self.data_dir),
                "--max-client-cnxns", "0",
            ]
        cfg = self.workdir / ("zoo-%d.cfg" % self.port)
        cfg.write_text(
            "\n".join(
                [
                    "tickTime=2000",
                    "dataDir=%s" % self.data_dir,
                    "clientPort=%d" % self.port,
                    "clientPortAddress=127.0.0.1",
                    "maxClientCnxns=0",
                    "forceSync=yes",
                    "4lw.commands.whitelist=*",
                    "admin.enableServer=false",
                    "",
                ]
            )
        )
        return [
            "java",
            "-Xms%s" % ZK_HEAP,
            "-Xmx%s" % ZK_HEAP,
            "-Dzookeeper.admin.enableServer=false",
            "-cp", zookeeper_classpath(),
            "org.apache.zookeeper.server.ZooKeeperServerMain",
            str(cfg),
        ]

    def start(self, timeout=120.0):
        """Starts the process; returns the seconds from spawn to the first successful
        handshake."""
        assert self.proc is None or self.proc.poll() is not None, "already running"
        cmd = self.command()
        if self.kind == "ringkeeper" and not Path(cmd[0]).exists():
            raise RuntimeError("%s not found: build it first (cargo build --release)" % cmd[0])
        self.starts += 1
        with open(self.log_path, "ab") as log:
            log.write(("\n===== start #%d: %s\n" % (self.starts, " ".join(cmd))).encode())
            log.flush()
            t0 = time.monotonic()
            self.proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=str(self.workdir),
                start_new_session=True,
                preexec_fn=_raise_memlock,
            )
        self.last_command = cmd
        deadline = t0 + timeout
        last = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    "%s exited with %s during start-up; log tail:\n%s"
                    % (self.kind, self.proc.returncode, self.log_tail())
                )
            try:
                if handshake(self.port, timeout=1.0):
                    return time.monotonic() - t0
                last = "handshake refused"
            except OSError as e:
                last = repr(e)
            time.sleep(0.005)
        raise RuntimeError(
            "%s did not answer a handshake within %.0fs (last: %s); log tail:\n%s"
            % (self.kind, timeout, last, self.log_tail())
        )

    @property
    def pid(self):
        return self.proc.pid

    def stop(self, grace=60.0):
        """SIGTERM (both servers shut down cleanly on it), SIGKILL after `grace` seconds."""
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            self.proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)

    def destroy(self):
        self.stop()
        shutil.rmtree(self.data_dir, ignore_errors=True)

    # What Server and Ensemble have in common (the scenario runner uses only these).
    @property
    def pids(self):
        return [self.proc.pid]

    def cpu_seconds(self):
        return cpu_seconds(self.proc.pid)

    def rss_kib(self):
        return rss_kib(self.proc.pid)

    def dead(self):
        """Why the server is not running any more (None while it runs)."""
        if self.proc is not None and self.proc.poll() is not None:
            return "%s exited with %s" % (self.kind, self.proc.returncode)
        return None

    def commands(self):
        return [self.last_command]

    def data_bytes(self):
        return sum(f.stat().st_size for f in self.data_dir.rglob("*") if f.is_file())

    def log_tail(self, lines=40):
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def four_letter(port, word, timeout=2.0):
    """A four-letter word's reply as text ('' when it fails)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(word.encode())
            buf = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                buf += chunk
    except OSError:
        return ""
    return buf.decode(errors="replace")


def mode(port):
    """`Mode:` of the srvr four-letter word (leader, follower, standalone, ...), None on failure."""
    for line in four_letter(port, "srvr").splitlines():
        if line.startswith("Mode:"):
            return line.split(":", 1)[1].strip()
    return None


class Member:
    """One member of an Ensemble: its ports, data dir, log and process."""

    def __init__(self, ensemble, sid):
        self.sid = sid
        self.data_dir = ensemble.workdir / ("%s-%s-m%d-data" % (ensemble.kind, ensemble.name, sid))
        if self.data_dir.exists():
            shutil.rmtree(self.data_dir)
        self.data_dir.mkdir(parents=True)
        self.log_path = ensemble.workdir / ("%s-%s-m%d.log" % (ensemble.kind, ensemble.name, sid))
        self.port = free_port()
        self.addr = "127.0.0.1:%d" % self.port
        self.peer_port = free_port()
        self.election_port = free_port()  # ZooKeeper only
        self.proc = None
        self.command = None


class Ensemble:
    """A `size`-member ensemble of one kind on 127.0.0.1 (fresh data dirs). `addr` is the
    comma-separated client address list for `bench --servers`: after start(), followers first
    (by id) and the leader last, so that a run with fewer sessions than members (one client)
    goes through a follower on both servers (the bench puts session i on server i % n)."""

    def __init__(self, kind, workdir, name="ensemble", size=3):
        assert kind in SERVERS, kind
        self.kind = kind
        self.workdir = Path(workdir)
        self.name = name
        self.size = size
        self.members = [Member(self, sid) for sid in range(1, size + 1)]
        self.addr = ",".join(m.addr for m in self.members)
        self.leader = None
        self.starts = 0
        self.start_s = None

    def _zk_config(self, m):
        cfg = self.workdir / ("zoo-%s-m%d-%d.cfg" % (self.name, m.sid, m.port))
        lines = [
            "tickTime=2000",
            "initLimit=10",
            "syncLimit=5",
            "dataDir=%s" % m.data_dir,
            "clientPort=%d" % m.port,
            "clientPortAddress=127.0.0.1",
            "maxClientCnxns=0",
            "forceSync=yes",
            "4lw.commands.whitelist=*",
            "admin.enableServer=false",
        ]
        lines += ["server.%d=127.0.0.1:%d:%d" % (o.sid, o.peer_port, o.election_port) for o in self.members]
        cfg.write_text("\n".join(lines + [""]))
        (m.data_dir / "myid").write_text("%d\n" % m.sid)
        return cfg

    def member_command(self, m):
        if self.kind == "ringkeeper":
            cmd = [str(ringkeeper_binary()), "serve", "--server-id", str(m.sid)]
            for o in self.members:
                cmd += ["--member", "%d=127.0.0.1:%d;127.0.0.1:%d" % (o.sid, o.peer_port, o.port)]
            cmd += ["--data-dir", str(m.data_dir), "--client-addr", m.addr, "--max-client-cnxns", "0"]
            if RK_ENSEMBLE_SHARDS:
                cmd += ["--shards", str(RK_ENSEMBLE_SHARDS)]
            return cmd
        return [
            "java",
            "-Xms%s" % ZK_ENSEMBLE_HEAP,
            "-Xmx%s" % ZK_ENSEMBLE_HEAP,
            "-Dzookeeper.admin.enableServer=false",
            "-cp", zookeeper_classpath(),
            "org.apache.zookeeper.server.quorum.QuorumPeerMain",
            str(self._zk_config(m)),
        ]

    def start(self, timeout=180.0):
        """Starts every member at once; returns the seconds from the first spawn until every
        member answered a handshake and exactly one says leader, the others follower."""
        if self.kind == "ringkeeper" and not ringkeeper_binary().exists():
            raise RuntimeError("%s not found: build it first (cargo build --release)" % ringkeeper_binary())
        self.starts += 1
        t0 = time.monotonic()
        for m in self.members:
            assert m.proc is None or m.proc.poll() is not None, "already running"
            m.command = self.member_command(m)
            with open(m.log_path, "ab") as log:
                log.write(("\n===== start #%d: %s\n" % (self.starts, " ".join(m.command))).encode())
                log.flush()
                m.proc = subprocess.Popen(
                    m.command,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=str(self.workdir),
                    start_new_session=True,
                    preexec_fn=_raise_memlock,
                )
        deadline = t0 + timeout
        answered = set()
        last = None
        while time.monotonic() < deadline:
            bad = self.dead()
            if bad:
                self.stop()
                raise RuntimeError("%s during start-up; log tails:\n%s" % (bad, self.log_tail()))
            for m in self.members:
                if m.sid in answered:
                    continue
                try:
                    if handshake(m.port, timeout=1.0):
                        answered.add(m.sid)
                    else:
                        last = "member %d: handshake refused" % m.sid
                except OSError as e:
                    last = "member %d: %r" % (m.sid, e)
            if len(answered) == self.size:
                modes = self.modes()
                if sorted(modes.values()) == ["follower"] * (self.size - 1) + ["leader"]:
                    self.start_s = time.monotonic() - t0
                    self.leader = next(sid for sid, md in modes.items() if md == "leader")
                    order = [m for m in self.members if m.sid != self.leader]
                    order += [m for m in self.members if m.sid == self.leader]
                    self.addr = ",".join(m.addr for m in order)
                    return self.start_s
                last = "modes %s" % modes
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(
            "%s ensemble not ready within %.0fs (last: %s); log tails:\n%s"
            % (self.kind, timeout, last, self.log_tail())
        )

    def modes(self):
        """{member id: srvr Mode (None when it did not answer)}."""
        return {m.sid: mode(m.port) for m in self.members}

    @property
    def pids(self):
        return [m.proc.pid for m in self.members]

    def cpu_seconds(self):
        """CPU seconds of all members together."""
        return sum(cpu_seconds(m.proc.pid) for m in self.members if m.proc.poll() is None)

    def rss_kib(self):
        """VmRSS of all members together."""
        return sum(rss_kib(m.proc.pid) for m in self.members if m.proc.poll() is None)

    def dead(self):
        gone = ["member %d exited with %s" % (m.sid, m.proc.returncode)
                for m in self.members if m.proc is not None and m.proc.poll() is not None]
        return "%s: %s" % (self.kind, ", ".join(gone)) if gone else None

    def commands(self):
        return [m.command for m in self.members]

    def stop(self, grace=60.0):
        """SIGTERM to every member at once, SIGKILL to those still there after `grace` s."""
        live = [m for m in self.members if m.proc is not None and m.proc.poll() is None]
        for m in live:
            try:
                os.killpg(m.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace
        for m in live:
            try:
                m.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(m.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                m.proc.wait(timeout=30)

    def destroy(self):
        self.stop()
        for m in self.members:
            shutil.rmtree(m.data_dir, ignore_errors=True)

    def data_bytes(self):
        return sum(f.stat().st_size for m in self.members for f in m.data_dir.rglob("*") if f.is_file())

    def log_tail(self, lines=15):
        out = []
        for m in self.members:
            try:
                tail = "\n".join(m.log_path.read_text(errors="replace").splitlines()[-lines:])
            except OSError:
                tail = "(no log)"
            out.append("--- member %d (%s):\n%s" % (m.sid, m.log_path, tail))
        return "\n".join(out)


def new_server(kind, topology, workdir, name):
    """A Server (standalone) or an Ensemble (ensemble3) of `kind`."""
    if topology == "standalone":
        return Server(kind, workdir, name)
    if topology == "ensemble3":
        return Ensemble(kind, workdir, name, size=3)
    raise ValueError("unknown topology %r" % topology)


def bench_command(addr, args):
    """The bench command line for one run (args: the workload flags)."""
    return [str(ringkeeper_binary()), "bench", "--servers", addr, "--json", "--quiet"] + list(args)


def run_bench(addr, args, out_json, timeout):
    """Runs the bench, writes its JSON report to out_json and returns it as a dict with
    "exit_code", "command" and (when it failed to run) "error" added."""
    import json

    cmd = bench_command(addr, args)
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        rc, stdout, stderr = p.returncode, p.stdout, p.stderr
    except subprocess.TimeoutExpired as e:
        rc, stdout, stderr = 124, e.stdout or "", (e.stderr or "") + "\n(timed out)"
        if isinstance(stdout, bytes):
            stdout = stdout.decode(errors="replace")
        if isinstance(stderr, bytes):
            stderr = stderr.decode(errors="replace")
    try:
        report = json.loads(stdout)
    except ValueError:
        report = {"error": "no JSON report", "stderr": stderr[-4000:]}
    report["exit_code"] = rc
    report["command"] = cmd
    if stderr.strip():
        report["stderr"] = stderr[-4000:]
    Path(out_json).parent.mkdir(parents=True, exist_ok=True)
    Path(out_json).write_text(json.dumps(report, indent=1))
    return report


def failed(report):
    """Why a bench report does not count (None when it does)."""
    if "error" in report:
        return report["error"]
    p = report.get("primary", {})
    if report.get("exit_code") != 0:
        return "bench exit %s" % report.get("exit_code")
    if not p.get("count"):
        return "no measured ops"
    if report.get("total_errors", 0) or report.get("connect_errors_total", 0):
        return "%d errors, %d failures" % (report.get("total_errors", 0), report.get("connect_errors_total", 0))
    return None
