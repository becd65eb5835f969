#!/usr/bin/env python3
"""Builds tests/testdata/zk-datadir: a real ZooKeeper 3.8 data directory plus what a
client saw in it, for the unit tests of `ringkeeper::zkdata` (the importer's reader).

It starts Apache ZooKeeper standalone on a temporary dataDir (snapCount=50 so there are
several snapshots and log files, extended types on for TTL nodes), builds a varied tree
through kazoo and the raw wire client of the compat suite, reads every znode back
(data, ACL, full Stat) into expected.json, and then kills ZooKeeper with SIGKILL, so the
newest txn log is left as a crashed server leaves it (preallocated, zero-padded).

Run from the repository root:  .venv/bin/python scripts/make-zk-fixture.py

Output (commit both):
    tests/testdata/zk-datadir/version-2/   snapshot.* and log.* files
    tests/testdata/zk-datadir/expected.json

Every snapshot (from snapshot.0 of the empty tree on) and log is kept, so a load can
start from any snapshot. The zero padding is cut off every log but the newest (so the
reader sees both shapes); the whole fixture stays well under 300 KB.
"""

import base64
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "compat"))

import zkwire  # noqa: E402  (the compat suite's raw client: containers, TTL, create2, null data)
from kazoo.client import KazooClient  # noqa: E402
from kazoo.security import ACL, Id, make_digest_acl  # noqa: E402

OUT = REPO / "tests" / "testdata" / "zk-datadir"
SUPER_PASSWORD = "fixture-super"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def classpath():
    if os.environ.get("ZK_CLASSPATH"):
        return os.environ["ZK_CLASSPATH"]
    jars = ["/usr/share/java/zookeeper.jar", "/usr/share/java/slf4j-simple.jar"]
    return ":".join(j for j in jars if os.path.exists(j))


def super_digest():
    # DigestAuthenticationProvider's format: user:base64(sha1("user:password"))
    raw = hashlib.sha1(("super:" + SUPER_PASSWORD).encode()).digest()
    return "super:" + base64.b64encode(raw).decode()


def start_zookeeper(workdir, port):
    data_dir = workdir / "data"
    data_dir.mkdir()
    cfg = workdir / "zoo.cfg"
    cfg.write_text(
        "\n".join(
            [
                "tickTime=2000",
                "dataDir=%s" % data_dir,
                "clientPort=%d" % port,
                "clientPortAddress=127.0.0.1",
                "4lw.commands.whitelist=*",
                "forceSync=yes",
                "",
            ]
        )
    )
    cmd = [
        "java",
        "-Xmx256m",
        "-XX:+UseSerialGC",
        "-Dzookeeper.admin.enableServer=false",
        "-Dzookeeper.snapCount=50",
        # preallocate 16 KiB at a time instead of 64 MiB: the padded tail stays small
        "-Dzookeeper.preAllocSize=16",
        "-Dzookeeper.extendedTypesEnabled=true",
        "-Dznode.container.checkIntervalMs=300",
        "-Dzookeeper.DigestAuthenticationProvider.superDigest=" + super_digest(),
        "-cp",
        classpath(),
        "org.apache.zookeeper.server.ZooKeeperServerMain",
        str(cfg),
    ]
    log = open(workdir / "zookeeper.log", "wb")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(b"ruok")
                if s.recv(4) == b"imok":
                    return proc, data_dir / "version-2"
        except OSError:
            pass
        if proc.poll() is not None:
            break
        time.sleep(0.2)
    proc.kill()
    sys.exit("ZooKeeper did not start; see %s" % (workdir / "zookeeper.log"))


def four_letter(port, cmd):
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(cmd.encode())
        out = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return out.decode()
            out += chunk


def server_zxid(port):
    m = re.search(r"Zxid: 0x([0-9a-f]+)", four_letter(port, "srvr"))
    return int(m.group(1), 16)


def zxid_of(name):
    return int(name.split(".")[1], 16)


def snapshots(v2):
    return sorted((p for p in v2.iterdir() if p.name.startswith("snapshot.")), key=lambda p: zxid_of(p.name))


def logs(v2):
    return sorted((p for p in v2.iterdir() if p.name.startswith("log.")), key=lambda p: zxid_of(p.name))


def wait_until(pred, what, timeout=20.0):
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            sys.exit("timed out waiting for " + what)
        time.sleep(0.1)


def raw_conn(port):
    c = zkwire.RawConn(("127.0.0.1", port))
    c.handshake(timeout_ms=10000)
    return c


def check(rep, what):
    if rep.err != zkwire.OK:
        sys.exit("%s failed: err %d" % (what, rep.err))


def build_tree(zk, port):
    """Everything a client can put in a tree, in an order that leaves a history behind."""
    zk.create("/app", b"root of the app")
    # a quota on /app, set the way zkCli's setquota does: ZooKeeper then keeps the stats
    # node's data up to date without a txn for it (and recomputes it when it loads)
    zk.create("/zookeeper/quota/app/zookeeper_limits", b"count=1000,bytes=-1", makepath=True)
    zk.create("/zookeeper/quota/app/zookeeper_stats", b"count=0,bytes=0")
    zk.create("/app/config", b'{"a":1}')
    zk.create("/app/empty", b"")
    zk.create("/app/binary", bytes(range(256)))
    zk.create("/app/deep/a/b/c/d", b"leaf", makepath=True)
    zk.create("/app/unicode-\u00e9\u4e2d", "d\u00e9j\u00e0 vu".encode())

    # sequential nodes, some deleted again (cversion counts creations and deletions)
    zk.create("/app/queue", b"")
    for i in range(6):
        zk.create("/app/queue/item-", b"%d" % i, sequence=True)
    for name in sorted(zk.get_children("/app/queue"))[:2]:
        zk.delete("/app/queue/" + name)

    # data versions and ACL versions
    for i in range(4):
        zk.set("/app/config", b'{"a":%d}' % (i + 2))
    digest_acl = make_digest_acl("alice", "secret", all=True)
    ip_acl = ACL(perms=1 | 2, id=Id("ip", "127.0.0.1"))
    zk.create("/app/secret", b"only alice", acl=[digest_acl])
    zk.create("/app/iponly", b"local", acl=[ip_acl, ACL(perms=1, id=Id("world", "anyone"))])
    zk.create("/app/acl-changes", b"")
    zk.set_acls("/app/acl-changes", [ip_acl])
    zk.set_acls("/app/acl-changes", [digest_acl, ip_acl])

    # null data, create2, containers and TTL nodes: beyond kazoo, so over the raw client
    raw = raw_conn(port)
    check(raw.create("/app/null", None)[0], "create null")
    check(raw.create("/app/was-null", None)[0], "create was-null")
    check(raw.set_data("/app/was-null", b"now set")[0], "set was-null")
    check(raw.create("/app/made-null", b"x")[0], "create made-null")
    check(raw.set_data("/app/made-null", None)[0], "set made-null to null")
    check(raw.create("/app/create2", b"c2", op=zkwire.OP_CREATE2)[0], "create2")
    check(raw.create("/app/box", b"container", flags=zkwire.CONTAINER, op=zkwire.OP_CREATE_CONTAINER)[0], "container")
    check(raw.create("/app/box/item", b"keeps the box")[0], "container child")
    check(raw.create("/app/empty-box", b"", flags=zkwire.CONTAINER, op=zkwire.OP_CREATE_CONTAINER)[0], "empty container")
    check(raw.create("/app/tmp-box", b"", flags=zkwire.CONTAINER, op=zkwire.OP_CREATE_CONTAINER)[0], "tmp container")
    check(raw.create("/app/tmp-box/x", b"")[0], "tmp container child")
    check(
        raw.create("/app/ttl-long", b"an hour", flags=zkwire.PERSISTENT_WITH_TTL, op=zkwire.OP_CREATE_TTL, ttl=3600 * 1000)[0],
        "ttl node",
    )
    check(
        raw.create("/app/ttl-seq-", b"s", flags=zkwire.PERSISTENT_SEQUENTIAL_WITH_TTL, op=zkwire.OP_CREATE_TTL, ttl=7200 * 1000)[0],
        "sequential ttl node",
    )
    check(raw.create("/app/ttl-short", b"", flags=zkwire.PERSISTENT_WITH_TTL, op=zkwire.OP_CREATE_TTL, ttl=100)[0], "short ttl")
    check(raw.close_session(), "close raw session")
    raw.close()

    # the reaper deletes an emptied container and an expired TTL node (deleteContainer txns)
    zk.delete("/app/tmp-box/x")
    wait_until(lambda: zk.exists("/app/tmp-box") is None, "container reaped")
    wait_until(lambda: zk.exists("/app/ttl-short") is None, "ttl node reaped")

    # a multi that commits, one that fails (logged as a multi of error txns), a plain failure
    zk.create("/app/to-delete", b"bye")
    t = zk.transaction()
    t.create("/app/multi", b"from a multi")
    t.create("/app/multi/child", b"")
    t.set_data("/app/config", b'{"multi":true}')
    t.delete("/app/to-delete")
    t.check("/app", 0)
    results = t.commit()
    if any(isinstance(r, Exception) for r in results):
        sys.exit("multi failed: %r" % (results,))
    t = zk.transaction()
    t.create("/app/never", b"")
    t.check("/app/config", 999)
    results = t.commit()
    if not any(isinstance(r, Exception) for r in results):
        sys.exit("the failing multi committed")
    try:
        zk.create("/app/config", b"dup")
        sys.exit("duplicate create succeeded")
    except Exception:
        pass

    # a session that goes away with its ephemerals (closeSession deletes them)
    zk2 = KazooClient(hosts="127.0.0.1:%d" % port, timeout=10.0)
    zk2.start()
    zk2.create("/app/gone", b"")
    zk2.create("/app/gone/e1", b"eph", ephemeral=True)
    zk2.create("/app/gone/e-", b"eph seq", ephemeral=True, sequence=True)
    zk2.stop()
    zk2.close()


def tail(zk, port):
    """About 20 txns of every kind, for the log after the newest snapshot."""
    zk.create("/app/after-snapshot", b"only in the log")
    zk.set("/app/after-snapshot", b"set in the log")
    zk.set_acls("/app/after-snapshot", [make_digest_acl("bob", "pw", read=True, write=True)])
    zk.delete("/app/queue/" + sorted(zk.get_children("/app/queue"))[0])
    zk.create("/app/queue/item-", b"late", sequence=True)
    t = zk.transaction()
    t.create("/app/tail-multi", b"")
    t.set_data("/app/after-snapshot", b"set in a multi")
    t.delete("/app/multi/child")
    results = t.commit()
    if any(isinstance(r, Exception) for r in results):
        sys.exit("tail multi failed: %r" % (results,))
    t = zk.transaction()
    t.create("/app/never-either", b"")
    t.delete("/app/does-not-exist")
    t.commit()
    try:
        zk.delete("/app/does-not-exist")  # an error txn
    except Exception:
        pass
    # a session that closes with ephemerals (closeSession with paths)
    zk4 = KazooClient(hosts="127.0.0.1:%d" % port, timeout=10.0)
    zk4.start()
    zk4.create("/app/tail-eph", b"", ephemeral=True)
    zk4.stop()
    zk4.close()
    raw = raw_conn(port)
    check(raw.create("/app/tail-create2", None, op=zkwire.OP_CREATE2)[0], "tail create2")
    check(raw.create("/app/tail-box", b"", flags=zkwire.CONTAINER, op=zkwire.OP_CREATE_CONTAINER)[0], "tail container")
    check(raw.create("/app/tail-box/in", b"")[0], "tail container child")
    check(
        raw.create("/app/tail-ttl", b"", flags=zkwire.PERSISTENT_WITH_TTL, op=zkwire.OP_CREATE_TTL, ttl=86400 * 1000)[0],
        "tail ttl",
    )
    check(raw.set_data("/app/tail-create2", b"")[0], "tail set")
    check(raw.close_session(), "close tail raw session")
    raw.close()


def churn(zk, rounds):
    """Bulk writes, pipelined so snapshots (taken on a background thread) overlap them."""
    for r in range(rounds):
        base = "/load/r%02d" % r
        zk.ensure_path(base)
        ops = [zk.create_async("%s/n%02d" % (base, i), b"v%d" % i) for i in range(12)]
        for op in ops:
            op.get()
        ops = [zk.set_async("%s/n%02d" % (base, i), b"w%d" % i) for i in range(0, 12, 2)]
        for op in ops:
            op.get()
        ops = [zk.delete_async("%s/n%02d" % (base, i)) for i in range(0, 12, 3)]
        for op in ops:
            op.get()
        if r % 3 == 2:
            zk.delete("/load/r%02d" % (r - 1), recursive=True)


def dump(zk, port):
    """Every znode as a client sees it. Data is read over the raw client because kazoo
    reports empty data as None, and null vs empty is part of what the reader must keep."""
    nodes = []
    raw = raw_conn(port)
    check(raw.auth_digest("super:" + SUPER_PASSWORD), "super auth")

    def walk(path):
        rep, data, _ = raw.get_data(path)
        check(rep, "get " + path)
        _, stat = zk.get(path)
        acls, _ = zk.get_acls(path)
        nodes.append(
            {
                "path": path,
                "data": None if data is None else data.hex(),
                "acl": [{"perms": a.perms, "scheme": a.id.scheme, "id": a.id.id} for a in acls],
                "stat": {
                    "czxid": stat.czxid,
                    "mzxid": stat.mzxid,
                    "ctime": stat.ctime,
                    "mtime": stat.mtime,
                    "version": stat.version,
                    "cversion": stat.cversion,
                    "aversion": stat.aversion,
                    "ephemeralOwner": stat.ephemeralOwner,
                    "dataLength": stat.dataLength,
                    "numChildren": stat.numChildren,
                    "pzxid": stat.pzxid,
                },
            }
        )
        for child in zk.get_children(path):
            walk(path.rstrip("/") + "/" + child)

    walk("/")
    check(raw.close_session(), "close dump session")
    raw.close()
    nodes.sort(key=lambda n: n["path"].encode())
    return nodes


def live_sessions(port):
    """Session id and negotiated timeout of every connected client, from `cons`."""
    out = []
    for m in re.finditer(r"sid=0x([0-9a-f]+).*?to=(\d+)", four_letter(port, "cons")):
        out.append({"id": int(m.group(1), 16), "timeout_ms": int(m.group(2))})
    return sorted(out, key=lambda s: s["id"])


def copy_out(v2, dest):
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    for p in snapshots(v2):
        shutil.copyfile(p, dest / p.name)
    all_logs = logs(v2)
    for i, p in enumerate(all_logs):
        data = p.read_bytes()
        if i < len(all_logs) - 1:
            # every record ends with 'B' (0x42), so the zero run after the last one is padding
            data = data.rstrip(b"\x00")
        (dest / p.name).write_bytes(data)


def main():
    workdir = Path(tempfile.mkdtemp(prefix="zk-fixture-"))
    port = free_port()
    proc, v2 = start_zookeeper(workdir, port)
    try:
        zk = KazooClient(hosts="127.0.0.1:%d" % port, timeout=10.0)
        zk.start()
        zk.add_auth("digest", "super:" + SUPER_PASSWORD)  # super reads every node
        build_tree(zk, port)
        churn(zk, 12)

        # ephemerals of sessions that are still alive when ZooKeeper dies
        zk.create("/app/live", b"")
        zk.create("/app/live/mine", b"main session", ephemeral=True)
        zk3 = KazooClient(hosts="127.0.0.1:%d" % port, timeout=20.0)
        zk3.start()
        zk3.create("/app/live/other-", b"second session", ephemeral=True, sequence=True)

        # Wait for a snapshot to be taken, then write a tail of every txn type: shorter than
        # the 26 txns ZooKeeper needs before its next snapshot (snapCount/2 + 1), so it
        # stays in the log only and a load must replay it.
        before = zxid_of(snapshots(v2)[-1].name)
        for i in range(200):
            zk.set("/app/config", b'{"tail":%d}' % i)
            if zxid_of(snapshots(v2)[-1].name) != before:
                break
        else:
            sys.exit("no snapshot was taken")
        time.sleep(0.5)  # let the snapshot thread finish writing
        newest = zxid_of(snapshots(v2)[-1].name)
        tail(zk, port)
        if zxid_of(snapshots(v2)[-1].name) != newest:
            sys.exit("a snapshot was taken during the tail; run the script again")

        nodes = dump(zk, port)  # opens and closes a session of its own: two more txns
        expected = {
            "generator": "scripts/make-zk-fixture.py",
            "zookeeper": "3.8 (Debian zookeeper.jar), standalone",
            "last_zxid": server_zxid(port),
            "sessions": live_sessions(port),
            "nodes": nodes,
        }
    except BaseException:
        proc.kill()
        raise
    # die like a crash: no clean shutdown, no final snapshot, padded log left as is
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    for client in (zk, zk3):
        client.stop()
        client.close()

    copy_out(v2, OUT / "version-2")
    (OUT / "expected.json").write_text(json.dumps(expected, indent=1, ensure_ascii=False) + "\n")
    total = sum(p.stat().st_size for p in (OUT / "version-2").iterdir())
    print("wrote %s: %d files, %d bytes; %d znodes, last zxid 0x%x" % (
        OUT, len(list((OUT / "version-2").iterdir())), total, len(expected["nodes"]), expected["last_zxid"]))
    for p in sorted((OUT / "version-2").iterdir()):
        print("  %-24s %7d" % (p.name, p.stat().st_size))
    shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
