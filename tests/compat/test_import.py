"""Migration from Apache ZooKeeper: `ringkeeper import --zookeeper-data-dir` on data made by
a real ZooKeeper 3.8 in this very test, then every znode, its data, ACL and Stat read back
through kazoo from ringkeeper exactly as from ZooKeeper, and a ZooKeeper session resumed on
ringkeeper with its ephemerals.

Runs in the ringkeeper pass only (it starts one server of each kind itself)."""

import subprocess

import pytest
from kazoo.security import make_digest_acl, make_acl

import zkwire
from harness import Server, make_kazoo, ringkeeper_binary

pytestmark = pytest.mark.ringkeeper_only


def _snapshot_tree(zk, path="/"):
    """{path: (data, acls, stat)} for every znode under `path`, read through kazoo."""
    out = {}
    stack = [path]
    while stack:
        p = stack.pop()
        data, stat = zk.get(p)
        acls, _ = zk.get_acls(p)
        out[p] = (data, sorted((a.perms, a.id.scheme, a.id.id) for a in acls), tuple(stat))
        for c in zk.get_children(p):
            stack.append(p.rstrip("/") + "/" + c)
    return out


def _build_tree(zk, hosts):
    zk.create("/app/config", b"v1", makepath=True)
    zk.set("/app/config", b"v2")
    zk.set("/app/config", b"v3")
    for i in range(30):
        zk.create("/app/queue/item-", b"%d" % i, sequence=True, makepath=True)
    for name in zk.get_children("/app/queue")[:10]:
        zk.delete("/app/queue/" + name)
    zk.create("/bin", bytes(range(256)))
    zk.create("/empty", b"")
    zk.add_auth("digest", "alice:secret")
    zk.create("/private", b"mine", acl=[make_digest_acl("alice", "secret", all=True)])
    zk.create("/ip-only", b"x", acl=[make_acl("ip", "127.0.0.1", all=True)])
    zk.set_acls("/bin", [make_acl("world", "anyone", read=True, write=True)])
    t = zk.transaction()
    t.create("/multi-a", b"a")
    t.create("/multi-b", b"b")
    t.set_data("/app/config", b"v4")
    assert not any(isinstance(r, Exception) for r in t.commit())
    zk.create("/deep/er/and/deeper", b"d", makepath=True)
    zk.create("/ttl-less-deleted", b"")
    zk.delete("/ttl-less-deleted")
    # A container with a child, and a null-data node (kazoo cannot send null data).
    with zkwire.connect(zk_addr(hosts)) as c:
        rep, _, _ = c.create("/box", b"", flags=4, op=zkwire.OP_CREATE_CONTAINER)
        assert rep.err == 0, rep
        rep, _, _ = c.create("/null-data", None)
        assert rep.err == 0, rep
        c.close_session()
    zk.create("/box/item", b"i")
    # Ephemerals of a session that stays alive across the move.
    zk.create("/live/member-", b"me", ephemeral=True, sequence=True, makepath=True)


def _import(zk_data_dir, out):
    return subprocess.run(
        [str(ringkeeper_binary()), "import", "--zookeeper-data-dir", str(zk_data_dir), "--data-dir", str(out)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def zk_addr(hosts):
    host, port = hosts.split(":")
    return (host, int(port))


@pytest.mark.timeout(180)
def test_import_reads_back_identical_and_sessions_resume(tmp_path):
    zk_server = Server("import-zk", target="zookeeper")
    rk_server = None
    try:
        zk_server.start()
        owner = make_kazoo(zk_server.hosts, timeout=30.0)
        _build_tree(owner, zk_server.hosts)
        session_id, passwd = owner.client_id
        reader = make_kazoo(zk_server.hosts)
        reader.add_auth("digest", "alice:secret")
        before = _snapshot_tree(reader)
        assert len(before) > 30 and "/box/item" in before, sorted(before)
        reader.stop()
        reader.close()
        # A crash: the owner's session is still live in ZooKeeper's files.
        zk_server.kill()
        owner.stop()
        owner.close()

        out = tmp_path / "rk-data"
        res = _import(zk_server.data_dir, out)
        assert res.returncode == 0, res.stdout + res.stderr
        assert "imported %d znodes" % len(before) in res.stdout, res.stdout

        rk_server = Server("import-rk", data_dir=out)
        rk_server.start()
        reader = make_kazoo(rk_server.hosts)
        reader.add_auth("digest", "alice:secret")
        after = _snapshot_tree(reader)
        assert sorted(after) == sorted(before)
        for path in before:
            assert after[path] == before[path], path

        # New writes continue the zxid sequence above everything imported.
        last = max(stat[1] for _, _, stat in before.values())
        reader.create("/after-import", b"new")
        _, stat = reader.get("/after-import")
        assert stat.czxid > last
        # Sequential names continue where ZooKeeper left off.
        made = reader.create("/app/queue/item-", b"n", sequence=True)
        assert made.endswith("%010d" % 30), made
        reader.stop()
        reader.close()

        # The ZooKeeper session resumes on ringkeeper, ephemerals and all.
        resumed = make_kazoo(rk_server.hosts, client_id=(session_id, passwd), timeout=30.0)
        assert resumed.client_id[0] == session_id
        assert resumed.get_children("/live"), "the session's ephemeral is gone"
        resumed.stop()  # closes the session: its ephemeral goes with it
        resumed.close()
        check = make_kazoo(rk_server.hosts)
        assert check.get_children("/live") == []
        check.stop()
        check.close()

        # Importing into a dir that already holds ringkeeper data is refused.
        res = _import(zk_server.data_dir, out)
        assert res.returncode != 0 and "empty data dir" in res.stderr, res.stderr
    finally:
        zk_server.destroy()
        if rk_server is not None:
            rk_server.stop()
