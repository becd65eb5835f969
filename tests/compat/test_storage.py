"""The data directory as an operator meets it (ringkeeper only: these poke at its log files).

- a clean stop (SIGTERM) says so in its last line and loses nothing;
- a second server on the same data dir refuses to start and names the holder;
- garbage after the last record (a torn write) is cut off, everything acknowledged stays;
- a flipped byte in the middle of the log stops the member with the file and the offset.
"""

import subprocess
import time
from pathlib import Path

import pytest

import zkwire

pytestmark = pytest.mark.ringkeeper_only

SEQUENTIAL = 2


def _segments(server):
    return sorted(Path(server.data_dir, "log").glob("*.seg"))


def _write_nodes(server, n, prefix="/n"):
    """n creates, each acknowledged on its own (so each is its own log write)."""
    with zkwire.connect(server.addr) as c:
        for i in range(n):
            rep, _, _ = c.create("%s%04d" % (prefix, i), b"v%d" % i)
            assert rep.err == 0
        assert c.close_session().err == 0


def _count_nodes(server, prefix="n"):
    with zkwire.connect(server.addr) as c:
        rep = c.call(zkwire.OP_GET_CHILDREN, zkwire.path_watch_body("/"))
        names = zkwire.Reader(rep.body).string_vector()
        c.close_session()
    return sorted(x for x in names if x.startswith(prefix))


def _used_bytes(seg):
    """Offset just past the last non-zero byte (segments are pre-zeroed)."""
    data = seg.read_bytes()
    return len(data.rstrip(b"\x00"))


@pytest.mark.timeout(60)
def test_sigterm_is_clean_and_loses_nothing(server_factory):
    s = server_factory()
    _write_nodes(s, 50)
    s.stop()
    assert s.proc.returncode == 0
    tail = s.log_tail()
    assert "stopped cleanly" in tail.strip().splitlines()[-1], tail
    s.start()
    assert len(_count_nodes(s)) == 50


@pytest.mark.timeout(60)
def test_second_server_on_the_same_data_dir_is_refused(server_factory):
    s = server_factory()
    cmd = s.command()
    # Same data dir, another port: must refuse, naming the dir and the process holding it.
    port_i = cmd.index("--client-addr") + 1
    cmd[port_i] = "127.0.0.1:%d" % zkwire_free_port()
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=30, cwd=str(s.workdir))
    assert out.returncode != 0
    text = out.stdout + out.stderr
    assert str(s.data_dir) in text and str(s.proc.pid) in text, text
    # The first one is unharmed.
    assert len(_count_nodes(s)) == 0


def zkwire_free_port():
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.timeout(90)
def test_torn_tail_is_truncated_and_acknowledged_writes_stay(server_factory):
    s = server_factory()
    _write_nodes(s, 100)
    s.kill()
    seg = _segments(s)[-1]
    used = _used_bytes(seg)
    # A write that was cut short: half a record's worth of garbage after the last record.
    with open(seg, "r+b") as f:
        f.seek(used + 16)
        f.write(b"\x5a" * 40)
    s.start()
    assert len(_count_nodes(s)) == 100
    assert "torn" in s.log_tail()
    # And the log goes on cleanly after the cut.
    _write_nodes(s, 10, prefix="/m")
    s.kill()
    s.start()
    assert len(_count_nodes(s)) == 100
    assert len(_count_nodes(s, prefix="m")) == 10


@pytest.mark.timeout(90)
def test_corruption_in_the_middle_stops_the_member_with_file_and_offset(server_factory):
    s = server_factory()
    _write_nodes(s, 200)
    s.stop()
    seg = _segments(s)[0]
    used = _used_bytes(seg)
    assert used > 8192
    # Flip one byte well before the last write.
    at = used // 3
    data = bytearray(seg.read_bytes()[: used])
    with open(seg, "r+b") as f:
        f.seek(at)
        f.write(bytes([data[at] ^ 0x01]))
    before = seg.read_bytes()
    with pytest.raises(RuntimeError) as exc:
        s.start()
    msg = str(exc.value)
    assert str(seg) in msg, msg
    assert "offset" in msg, msg
    # Nothing on disk was "repaired" away.
    time.sleep(0.2)
    assert seg.read_bytes() == before


@pytest.mark.timeout(60)
def test_relative_data_dir_works(server_factory):
    """`ringkeeper serve` from a checkout uses ./data: relative paths must work."""
    s = server_factory(start=False)
    cmd = s.command()
    cmd[cmd.index("--data-dir") + 1] = "relative-data"
    proc = subprocess.Popen(cmd, cwd=str(s.workdir), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while True:
            assert proc.poll() is None, proc.stdout.read().decode(errors="replace")
            try:
                with zkwire.connect(s.addr) as c:
                    assert c.create("/rel", b"x")[0].err == 0
                    c.close_session()
                break
            except (OSError, zkwire.Closed, zkwire.ProtocolError):
                assert time.monotonic() < deadline, "server did not come up"
                time.sleep(0.1)
        assert any(Path(s.workdir, "relative-data", "log").glob("*.seg"))
    finally:
        proc.terminate()
        proc.wait(timeout=15)


@pytest.mark.timeout(60)
def test_second_server_on_the_same_port_is_refused(server_factory):
    """Shards bind with SO_REUSEPORT; a second server must not silently share the port."""
    s = server_factory()
    other = server_factory(start=False)
    cmd = other.command()
    cmd[cmd.index("--client-addr") + 1] = "127.0.0.1:%d" % s.port
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=30, cwd=str(other.workdir))
    assert out.returncode != 0
    assert "cannot listen" in out.stdout + out.stderr
    assert len(_count_nodes(s)) == 0


@pytest.mark.timeout(90)
def test_batches_never_exceed_a_segment(server_factory):
    """Pipelined large writes are split across log entries instead of one record larger than
    a segment (which would stop the log); a single write too large for a segment fails alone
    with MarshallingError and the server goes on."""
    from harness import make_kazoo
    from kazoo.exceptions import MarshallingError

    s = server_factory(extra_args=["--log-segment-bytes", "1048576"])
    zk = make_kazoo(s.hosts)
    try:
        payload = b"p" * 8000
        pending = [zk.create_async("/big-%04d" % i, payload) for i in range(400)]
        for p in pending:
            p.get(timeout=30)
        with pytest.raises(MarshallingError):
            zk.create("/too-big", b"x" * 1048400)
        zk.create("/after", b"ok")
        assert zk.get("/after")[0] == b"ok"
    finally:
        zk.stop()
        zk.close()
    s.stop()
    assert s.proc.returncode == 0, s.log_tail()
    s.start()
    zk = make_kazoo(s.hosts)
    try:
        assert len([c for c in zk.get_children("/") if c.startswith("big-")]) == 400
    finally:
        zk.stop()
        zk.close()
