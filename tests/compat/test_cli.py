"""Clients that are not Python: the C client's shell (cli_st, or cli_mt as
Debian's zookeeper-bin ships it) and the Java zkCli.sh, cross-checked with kazoo.

Set RK_REQUIRE_CLI=1 (scripts/test.sh does) to fail instead of skipping
when the tools are missing."""

import os
import re
import shutil
import subprocess
import threading
import time

import pytest

C_CLI_CANDIDATES = [
    "cli_st",
    "cli_mt",
    "/usr/lib/zookeeper/bin/cli_st",
    "/usr/lib/zookeeper/bin/cli_mt",
]
ZKCLI_CANDIDATES = ["zkCli.sh", "/usr/share/zookeeper/bin/zkCli.sh"]


def find_tool(candidates, what):
    for c in candidates:
        path = shutil.which(c) or (c if os.path.isabs(c) and os.access(c, os.X_OK) else None)
        if path:
            return path
    msg = "%s not installed (Debian: apt-get install zookeeper-bin zookeeper)" % what
    if os.environ.get("RK_REQUIRE_CLI") == "1":
        pytest.fail(msg)
    pytest.skip(msg)


class CShell:
    """Drives the C client's interactive shell: one command per line on stdin,
    waiting for the answer each time."""

    def __init__(self, binary, hosts):
        self.proc = subprocess.Popen(
            [binary, hosts],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        self.out = b""
        self.cond = threading.Condition()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        while True:
            b = os.read(self.proc.stdout.fileno(), 65536)
            with self.cond:
                if not b:
                    self.cond.notify_all()
                    return
                self.out += b
                self.cond.notify_all()

    def expect(self, pattern, start=0, timeout=15):
        rx = re.compile(pattern.encode() if isinstance(pattern, str) else pattern)
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                m = rx.search(self.out, start)
                if m:
                    return m
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None and not self.reader.is_alive():
                    pytest.fail("C shell: no %r in output:\n%s" % (pattern, self.out[start:].decode("utf-8", "replace")))
                self.cond.wait(min(left, 0.2))

    def run(self, cmd, pattern, timeout=15):
        with self.cond:
            start = len(self.out)
        self.proc.stdin.write((cmd + "\n").encode())
        self.proc.stdin.flush()
        return self.expect(pattern, start, timeout)

    def close(self):
        try:
            self.proc.stdin.write(b"quit\n")
            self.proc.stdin.flush()
            self.proc.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait(timeout=10)


@pytest.fixture
def cshell(server):
    sh = CShell(find_tool(C_CLI_CANDIDATES, "the ZooKeeper C client shell (cli_st/cli_mt)"), server.hosts)
    sh.expect(r"state = CONNECTED_STATE")
    yield sh
    sh.close()


@pytest.mark.timeout(60)
def test_c_client_basic_ops(cshell, zk, base):
    p = base + "/c"
    # the C shell's create always stores the data "new"
    cshell.run("create %s" % p, r"\[%s\]: rc = 0\n\tname = %s\n" % (re.escape(p), re.escape(p)))
    assert zk.get(p)[0] == b"new"

    m = cshell.run("get %s" % p, r"%s: rc = 0\n value_len = 3\nnew\nStat:" % re.escape(p))
    assert m

    cshell.run("set %s hello" % p, r"%s: rc = 0 Stat:" % re.escape(p))
    assert zk.get(p)[0] == b"hello"

    zk.set(p, b"from-kazoo")
    cshell.run("get %s" % p, r"value_len = 10\nfrom-kazoo\n")

    zk.create(base + "/k1", b"")
    # the shell writes each child with its own write(): wait for the whole list
    # (children come in the server's hash order)
    cshell.run("ls %s" % base, r"%s: rc = 0\n(\tc\n\tk1\n|\tk1\n\tc\n)" % re.escape(base))

    m = cshell.run("create +s %s/s-" % base, r"name = (%s/s-\d{10})\n" % re.escape(base))
    assert m.group(1).decode() == base + "/s-0000000002"

    cshell.run("exists %s/nope" % base, r"Error -101 for %s/nope" % re.escape(base))
    cshell.run("delete %s" % p, r"%s: rc = 0\n" % re.escape(p))
    assert zk.exists(p) is None
    cshell.run("delete %s" % base, r"%s: rc = -111\n" % re.escape(base))  # NotEmpty


@pytest.mark.timeout(60)
def test_c_client_sees_watch_events(cshell, zk, base):
    p = base + "/w"
    zk.create(p, b"x")
    cshell.run("get %s" % p, r"value_len = 1\nx\n")  # the shell's get sets a watch
    zk.set(p, b"y")
    cshell.expect(r"Watcher CHANGED_EVENT state = CONNECTED_STATE for path %s\n" % re.escape(p))


@pytest.mark.timeout(60)
def test_c_client_ephemeral_gone_after_quit(server, zk, base):
    sh = CShell(find_tool(C_CLI_CANDIDATES, "the ZooKeeper C client shell"), server.hosts)
    m = sh.expect(r"Got a new session id: 0x([0-9a-f]+)")
    sid = int(m.group(1), 16)
    sh.run("create +e %s/eph" % base, r"name = %s/eph\n" % re.escape(base))
    assert zk.exists(base + "/eph").ephemeralOwner == sid
    sh.close()
    assert sh.proc.returncode == 0
    # the shell closes its session on quit (or it expires): either way it goes
    deadline = time.monotonic() + 20
    while zk.exists(base + "/eph") is not None:
        assert time.monotonic() < deadline, "ephemeral of the C client's session still there"
        time.sleep(0.1)


def zkcli(server, *args):
    tool = find_tool(ZKCLI_CANDIDATES, "zkCli.sh")
    r = subprocess.run(
        [tool, "-server", server.hosts] + list(args),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=60,
    )
    out = r.stdout.decode("utf-8", "replace") + r.stderr.decode("utf-8", "replace")
    return r.returncode, out


@pytest.mark.timeout(120)
def test_java_zkcli(server, zk, base):
    p = base + "/j"
    rc, out = zkcli(server, "create", p, "hello")
    assert rc == 0 and "Created %s" % p in out, out
    assert zk.get(p)[0] == b"hello"

    zk.set(p, b"kazoo-wrote-this")
    rc, out = zkcli(server, "get", "-s", p)
    assert rc == 0, out
    assert "kazoo-wrote-this" in out
    assert "dataVersion = 1" in out and "dataLength = 16" in out

    zk.create(p + "/a", b"")
    rc, out = zkcli(server, "ls", p)
    assert rc == 0 and "[a]" in out, out

    rc, out = zkcli(server, "create", "-s", p + "/s-", "x")
    assert "Created %s/s-0000000001" % p in out, out

    rc, out = zkcli(server, "get", base + "/missing")
    assert rc != 0 and "Node does not exist: %s/missing" % base in out, out

    rc, out = zkcli(server, "delete", p)
    assert rc != 0 and "Node not empty: %s" % p in out, out
    rc, out = zkcli(server, "deleteall", p)
    assert rc == 0, out
    assert zk.exists(p) is None
