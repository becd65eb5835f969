"""Connect/close and the basic node operations through kazoo, checked against
ZooKeeper 3.8's real behaviour (shared/docs/zookeeper-protocol.md, sections 5, 7)."""

import pytest
from kazoo.exceptions import (
    BadArgumentsError,
    BadVersionError,
    NoChildrenForEphemeralsError,
    NodeExistsError,
    NoNodeError,
    NotEmptyError,
)
from kazoo.protocol.states import KazooState

from harness import make_kazoo, wait_until


@pytest.mark.timeout(30)
def test_connect_and_close(server):
    zk = make_kazoo(server.hosts)
    try:
        assert zk.connected
        assert zk.state == KazooState.CONNECTED
        sid, passwd = zk.client_id
        assert sid != 0
        assert len(passwd) == 16
        assert zk.exists("/") is not None
    finally:
        zk.stop()
        zk.close()
    assert not zk.connected


@pytest.mark.timeout(30)
def test_two_sessions_have_distinct_ids(server):
    a = make_kazoo(server.hosts)
    b = make_kazoo(server.hosts)
    try:
        assert a.client_id[0] != b.client_id[0]
    finally:
        for c in (a, b):
            c.stop()
            c.close()


@pytest.mark.timeout(30)
def test_root_and_builtin_nodes(zk):
    assert "zookeeper" in zk.get_children("/")
    assert set(zk.get_children("/zookeeper")) >= {"config", "quota"}
    data, stat = zk.get("/zookeeper/config")
    assert data == b""
    assert stat.aversion == -1
    assert (stat.czxid, stat.mzxid, stat.ctime, stat.mtime) == (0, 0, 0, 0)
    for reserved in ("/zookeeper", "/zookeeper/quota", "/zookeeper/config"):
        with pytest.raises(BadArgumentsError):
            zk.delete(reserved)
    with pytest.raises(BadArgumentsError):
        zk.delete("/")


@pytest.mark.timeout(30)
def test_create_get_set_delete(zk, base):
    p = base + "/node"
    assert zk.create(p, b"hello") == p
    data, stat = zk.get(p)
    assert data == b"hello"
    assert stat.version == 0
    assert stat.dataLength == 5
    assert stat.numChildren == 0
    assert stat.ephemeralOwner == 0
    assert stat.czxid == stat.mzxid == stat.pzxid

    st2 = zk.set(p, b"world!")
    assert st2.version == 1
    assert st2.dataLength == 6
    assert st2.czxid == stat.czxid
    assert st2.mzxid > stat.mzxid
    assert st2.ctime == stat.ctime
    assert st2.mtime >= stat.mtime
    assert zk.get(p)[0] == b"world!"

    zk.delete(p)
    assert zk.exists(p) is None
    with pytest.raises(NoNodeError):
        zk.get(p)


@pytest.mark.timeout(30)
def test_empty_and_binary_data(zk, base):
    zk.create(base + "/e", b"")
    data, stat = zk.get(base + "/e")
    assert data == b"" and stat.dataLength == 0
    blob = bytes(range(256)) * 40
    zk.create(base + "/b", blob)
    assert zk.get(base + "/b")[0] == blob
    assert zk.exists(base + "/b").dataLength == len(blob)


@pytest.mark.timeout(30)
def test_unicode_path(zk, base):
    p = base + "/\u00e9t\u00e9-\u6f22\u5b57"
    zk.create(p, "caf\u00e9".encode())
    assert zk.get(p)[0] == "caf\u00e9".encode()
    assert "\u00e9t\u00e9-\u6f22\u5b57" in zk.get_children(base)


@pytest.mark.timeout(30)
def test_errors(zk, base):
    p = base + "/x"
    with pytest.raises(NoNodeError):
        zk.create(base + "/missing/child", b"")
    with pytest.raises(NoNodeError):
        zk.set(p, b"")
    with pytest.raises(NoNodeError):
        zk.delete(p)
    with pytest.raises(NoNodeError):
        zk.get_children(p)
    zk.create(p, b"")
    with pytest.raises(NodeExistsError):
        zk.create(p, b"")
    zk.create(p + "/c", b"")
    with pytest.raises(NotEmptyError):
        zk.delete(p)
    with pytest.raises(NodeExistsError):
        zk.create("/", b"")


@pytest.mark.timeout(30)
def test_versions(zk, base):
    p = base + "/v"
    zk.create(p, b"0")
    with pytest.raises(BadVersionError):
        zk.set(p, b"x", version=1)
    assert zk.set(p, b"1", version=0).version == 1
    assert zk.set(p, b"2", version=1).version == 2
    assert zk.set(p, b"3", version=-1).version == 3
    with pytest.raises(BadVersionError):
        zk.delete(p, version=2)
    # only -1 is a wildcard (section 7.2)
    with pytest.raises(BadVersionError):
        zk.delete(p, version=-2)
    zk.delete(p, version=3)
    assert zk.exists(p) is None


@pytest.mark.timeout(30)
def test_children_and_parent_stat(zk, base):
    p = base + "/parent"
    _, st0 = zk.create(p, b"", include_data=True)
    assert st0.cversion == 0 and st0.numChildren == 0 and st0.pzxid == st0.czxid
    names = ["a", "b", "c", "d"]
    last = None
    for n in names:
        _, last = zk.create(p + "/" + n, b"", include_data=True)
    st = zk.exists(p)
    assert st.numChildren == 4
    assert st.cversion == 4
    assert st.pzxid == last.czxid
    assert st.mzxid == st0.mzxid  # children don't change the parent's data
    assert st.version == 0
    assert sorted(zk.get_children(p)) == names

    children, st2 = zk.get_children(p, include_data=True)
    assert sorted(children) == names
    assert st2 == st

    zk.delete(p + "/a")
    st3 = zk.exists(p)
    assert st3.numChildren == 3
    # visible cversion counts creations and deletions (section 5.1)
    assert st3.cversion == 5
    assert st3.pzxid > st.pzxid
    assert sorted(zk.get_children(p)) == ["b", "c", "d"]


@pytest.mark.timeout(30)
def test_sequential_names(zk, base):
    p = base + "/seq"
    zk.create(p, b"")
    zk.create(p + "/plain", b"")
    a = zk.create(p + "/s-", b"", sequence=True)
    b = zk.create(p + "/s-", b"", sequence=True)
    e = zk.create(p + "/e-", b"", sequence=True, ephemeral=True)
    # the suffix is the parent's creation counter before this create, %010d,
    # shared by every child and mode (section 7.1)
    assert a == p + "/s-0000000001"
    assert b == p + "/s-0000000002"
    assert e == p + "/e-0000000003"
    zk.delete(b)
    zk.delete(p + "/plain")
    # deletions never lower the counter
    c = zk.create(p + "/s-", b"", sequence=True)
    assert c == p + "/s-0000000004"
    # a sequential create may end in "/" (validated after the suffix)
    d = zk.create(p + "/", b"", sequence=True)
    assert d == p + "/0000000005"


@pytest.mark.timeout(30)
def test_sequential_concurrent_unique(kazoo_factory, base):
    import threading

    clients = [kazoo_factory() for _ in range(4)]
    made = []
    lock = threading.Lock()

    def worker(c):
        mine = [c.create(base + "/q-", b"", sequence=True) for _ in range(25)]
        with lock:
            made.extend(mine)

    ts = [threading.Thread(target=worker, args=(c,)) for c in clients]
    [t.start() for t in ts]
    [t.join() for t in ts]
    assert len(made) == 100
    assert len(set(made)) == 100
    assert sorted(made) == [base + "/q-%010d" % i for i in range(100)]


@pytest.mark.timeout(30)
def test_ephemeral(kazoo_factory, base):
    owner = kazoo_factory()
    other = kazoo_factory()
    p = base + "/eph"
    owner.create(p, b"mine", ephemeral=True)
    st = other.exists(p)
    assert st is not None
    assert st.ephemeralOwner == owner.client_id[0]
    with pytest.raises(NoChildrenForEphemeralsError):
        owner.create(p + "/child", b"")
    with pytest.raises(NoChildrenForEphemeralsError):
        other.create(p + "/child", b"")
    # an explicit close deletes the session's ephemerals at once
    owner.stop()
    assert other.exists(p) is None


@pytest.mark.timeout(30)
def test_ephemeral_stays_after_delete_by_other(kazoo_factory, base):
    owner = kazoo_factory()
    other = kazoo_factory()
    p = base + "/eph2"
    owner.create(p, b"", ephemeral=True)
    other.delete(p)
    assert owner.exists(p) is None
    owner.create(p, b"", ephemeral=True)
    assert other.exists(p).ephemeralOwner == owner.client_id[0]


@pytest.mark.timeout(30)
def test_ensure_path_and_recursive_delete(zk, base):
    zk.ensure_path(base + "/a/b/c/d")
    assert zk.exists(base + "/a/b/c/d") is not None
    zk.create(base + "/a/b/x", b"")
    zk.delete(base + "/a", recursive=True)
    assert zk.exists(base + "/a") is None


@pytest.mark.timeout(30)
def test_large_fanout_children(zk, base):
    t = zk.transaction()
    for i in range(300):
        t.create("%s/c%03d" % (base, i), b"")
    assert all(r is not None and not isinstance(r, Exception) for r in t.commit())
    kids = zk.get_children(base)
    assert len(kids) == 300
    assert sorted(kids) == ["c%03d" % i for i in range(300)]
    assert zk.exists(base).numChildren == 300


@pytest.mark.timeout(30)
def test_get_children_of_root_empty_path(zk):
    # kazoo refuses "" itself; sanity: "/" lists the built-in node
    assert "zookeeper" in zk.get_children("/")


@pytest.mark.timeout(30)
def test_stat_times_are_wall_clock_ms(zk, base):
    import time

    before = int(time.time() * 1000)
    _, st = zk.create(base + "/t", b"", include_data=True)
    after = int(time.time() * 1000)
    assert before - 5000 <= st.ctime <= after + 5000
    assert st.ctime == st.mtime


@pytest.mark.timeout(30)
def test_exists_returns_stat_or_none(zk, base):
    assert zk.exists(base + "/nope") is None
    st = zk.exists(base)
    assert st is not None and st.numChildren == 0


@pytest.mark.timeout(60)
def test_read_after_another_clients_write(server, base):
    """Once client B's write is acknowledged, client A's next read on the same
    server returns it. A standalone ZooKeeper runs every request through one
    pipeline, so this always holds there (across the servers of an ensemble
    ZooKeeper promises it only after sync())."""
    import zkwire

    with zkwire.connect(server.addr) as a, zkwire.connect(server.addr) as b:
        p = base + "/raw"
        assert b.create(p, b"0")[0].err == 0
        for i in range(1, 301):
            assert b.set_data(p, b"%d" % i)[0].err == 0
            rep, data, stat = a.get_data(p)
            assert (data, stat.version) == (b"%d" % i, i)
        a.close_session()
        b.close_session()


@pytest.mark.timeout(30)
def test_client_close_is_clean(server):
    zk = make_kazoo(server.hosts)
    zk.create("/close-me", b"", ephemeral=True)
    zk.stop()
    zk.close()
    other = make_kazoo(server.hosts)
    try:
        wait_until(lambda: other.exists("/close-me") is None, 5, what="ephemeral removed on close")
    finally:
        other.stop()
        other.close()
