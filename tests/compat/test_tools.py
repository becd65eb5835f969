"""The operator tools on a data dir a real server wrote (ringkeeper only):

- `ringkeeper verify` passes a cleanly stopped server's dir (exit 0);
- `ringkeeper log dump --json` prints one JSON object per line, with the zxids kazoo saw;
- `ringkeeper snapshot dump` of the newest snapshot holds the nodes kazoo created before it;
- a flipped byte in the middle of a segment that is not the last makes verify fail (exit 1)
  naming that segment, and an unreadable dir exits 2 with one line on stderr.
"""

import json
import shutil
import subprocess
from pathlib import Path

import pytest

import harness
from harness import make_kazoo

pytestmark = pytest.mark.ringkeeper_only

NODES = 3000
# Large enough that the commands between two snapshots (at least --snap-count 200 of them)
# fill more than one 1 MiB segment: the log the server keeps (back to the snapshot before the
# newest) always holds a segment that is not the last.
DATA = b"d" * 8000
# The built-in znodes: /, /zookeeper, /zookeeper/quota, /zookeeper/config.
BUILTIN_NODES = 4


def _tool(*args, timeout=120):
    return subprocess.run(
        [str(harness.ringkeeper_binary())] + [str(a) for a in args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _json_lines(out):
    lines = out.stdout.splitlines()
    assert lines, out.stderr
    return [json.loads(line) for line in lines]


def _data_segments(data_dir):
    """Segments holding records, in order (the server preallocates empty spares)."""
    segs = sorted(Path(data_dir, "log").glob("*.seg"))
    return [s for s in segs if s.read_bytes().strip(b"\x00")]


def _fill(server):
    """Creates NODES znodes under /tools; returns {path: czxid} as kazoo saw them."""
    zk = make_kazoo(server.hosts)
    try:
        _, stat = zk.create("/tools", b"", include_data=True)
        czxid = {"/tools": stat.czxid}
        paths = ["/tools/n%05d" % i for i in range(NODES)]
        # At most 50 in flight: one log entry carries whatever is pending, and it must fit a
        # segment (50 x 8 KB is well under 1 MiB).
        for at in range(0, NODES, 50):
            pending = [(p, zk.create_async(p, DATA, include_data=True)) for p in paths[at : at + 50]]
            for p, result in pending:
                created, stat = result.get(timeout=30)
                assert created == p
                czxid[p] = stat.czxid
        assert len(zk.get_children("/tools")) == NODES
    finally:
        zk.stop()
        zk.close()
    return czxid


def _check_replayed_creates(records, czxid):
    """Zxids of replayed commands strictly increase, and every replayed create has the zxid
    kazoo saw for it. Returns how many creates were replayed."""
    commands = [r for r in records if r["type"] == "command"]
    assert commands
    zxids = [int(r["zxid"], 16) for r in commands if r["zxid"] is not None]
    assert all(a < b for a, b in zip(zxids, zxids[1:]))
    replayed = {
        r["created"]: int(r["zxid"], 16)
        for r in commands
        if r["op"] in ("create", "create2") and r["zxid"] is not None and r["result"] == "ok"
    }
    for path, zxid in replayed.items():
        assert czxid[path] == zxid, path
    return len(replayed)


@pytest.mark.timeout(240)
def test_tools_on_a_real_data_dir(server_factory, tmp_path):
    s = server_factory(extra_args=["--snap-count", "200", "--log-segment-bytes", "1048576"])
    czxid = _fill(s)
    s.stop()
    assert s.proc.returncode == 0

    # A cleanly stopped server's dir is healthy.
    out = _tool("verify", s.data_dir, "--ttl-enabled")
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.splitlines()[-1].startswith("healthy"), out.stdout
    assert "FAIL" not in out.stdout, out.stdout
    assert "ok match" in out.stdout, out.stdout  # at least one snapshot checked against the log

    # The log dump: every line parses; the creates it replays carry kazoo's zxids, in order.
    out = _tool("log", "dump", s.data_dir, "--json", "--ttl-enabled")
    assert out.returncode == 0, out.stderr
    records = _json_lines(out)
    _check_replayed_creates(records, czxid)
    assert any(r["type"] == "segment" for r in records)
    assert any(r["type"] == "hardstate" for r in records)
    # The dump replays from the newest snapshot the log goes on from, which may leave no
    # create after it; without that snapshot it replays from the one before, and so at least
    # the --snap-count commands between the two, nearly all creates.
    copy = tmp_path / "copy"
    shutil.copytree(s.data_dir, copy)
    sorted(Path(copy, "snap").glob("*.snap"))[-1].unlink()
    out = _tool("log", "dump", copy, "--json", "--ttl-enabled")
    assert out.returncode == 0, out.stderr
    assert _check_replayed_creates(_json_lines(out), czxid) >= 150

    # The newest snapshot holds exactly the nodes created at or before its last zxid.
    snaps = sorted(Path(s.data_dir, "snap").glob("*.snap"))
    assert snaps
    out = _tool("snapshot", "dump", snaps[-1], "--json")
    assert out.returncode == 0, out.stderr
    lines = _json_lines(out)
    header = lines[0]
    assert header["type"] == "snapshot"
    last_zxid = int(header["last_zxid"], 16)
    expected = BUILTIN_NODES + sum(1 for z in czxid.values() if z <= last_zxid)
    assert header["nodes"] == expected
    nodes = [line for line in lines if line["type"] == "node"]
    assert len(nodes) == expected
    assert {n["path"] for n in nodes} >= {p for p, z in czxid.items() if z <= last_zxid}
    # Text mode agrees.
    text = _tool("snapshot", "dump", snaps[-1])
    assert text.returncode == 0, text.stderr
    assert ("nodes=%d " % expected) in text.stdout.splitlines()[0]

    # Damage in the middle of a segment that is not the last: verify fails, naming it.
    segs = _data_segments(s.data_dir)
    assert len(segs) >= 2, segs
    victim = segs[0]
    offsets = [
        r["offset"]
        for r in records
        if r["type"] == "command" and r.get("file") == victim.name
    ]
    assert offsets, victim
    at = offsets[len(offsets) // 2] + 24  # inside the record's payload, past its header
    raw = bytearray(victim.read_bytes())
    raw[at] ^= 0x01
    victim.write_bytes(bytes(raw))
    out = _tool("verify", s.data_dir, "--ttl-enabled")
    assert out.returncode == 1, out.stdout + out.stderr
    fails = [line for line in out.stdout.splitlines() if line.startswith("FAIL")]
    assert any(victim.name in line for line in fails), out.stdout
    assert out.stdout.splitlines()[-1].startswith("NOT HEALTHY"), out.stdout
    # The dump still works on the damaged dir and reports where.
    out = _tool("log", "dump", s.data_dir)
    assert out.returncode == 0, out.stderr
    assert "# DAMAGE at offset" in out.stdout


@pytest.mark.timeout(30)
def test_unreadable_dir_exits_2(tmp_path):
    out = _tool("verify", tmp_path / "missing")
    assert out.returncode == 2
    assert out.stdout == ""
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr
    out = _tool("snapshot", "dump", tmp_path)
    assert out.returncode == 2
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr
