"""multi (kazoo transactions) and multiRead (shared/docs/zookeeper-protocol.md section 9)."""

import threading

import pytest
from kazoo.exceptions import (
    BadVersionError,
    NodeExistsError,
    NoNodeError,
    NotEmptyError,
    RolledBackError,
    RuntimeInconsistency,
)

import zkwire


@pytest.mark.timeout(30)
def test_transaction_success(zk, base):
    zk.create(base + "/old", b"o")
    zk.create(base + "/chk", b"")
    t = zk.transaction()
    t.create(base + "/a", b"A")
    t.create(base + "/s-", b"", sequence=True)
    t.set_data(base + "/old", b"changed")
    t.check(base + "/chk", 0)
    t.delete(base + "/chk")
    res = t.commit()
    assert res[0] == base + "/a"
    assert res[1] == base + "/s-0000000003"
    assert res[2].version == 1  # setData result is a Stat
    assert res[3] is True
    assert res[4] is True
    assert zk.get(base + "/a")[0] == b"A"
    assert zk.get(base + "/old")[0] == b"changed"
    assert zk.exists(base + "/chk") is None
    # all ops share one zxid
    a = zk.exists(base + "/a")
    old = zk.exists(base + "/old")
    assert a.czxid == old.mzxid == zk.exists(base + "/s-0000000003").czxid
    assert zk.exists(base).pzxid == a.czxid


@pytest.mark.timeout(30)
def test_transaction_failure_rolls_back(zk, base):
    zk.create(base + "/v", b"v")
    t = zk.transaction()
    t.create(base + "/new", b"")
    t.set_data(base + "/v", b"x", version=5)  # fails
    t.delete(base + "/v")
    t.create(base + "/new2", b"")
    res = t.commit()
    assert isinstance(res[0], RolledBackError)
    assert isinstance(res[1], BadVersionError)
    assert isinstance(res[2], RuntimeInconsistency)
    assert isinstance(res[3], RuntimeInconsistency)
    assert zk.exists(base + "/new") is None
    assert zk.exists(base + "/new2") is None
    assert zk.get(base + "/v") == (b"v", zk.exists(base + "/v"))
    assert zk.exists(base + "/v").version == 0


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    "build,expected",
    [
        (lambda t, b: t.create(b + "/exists", b""), NodeExistsError),
        (lambda t, b: t.delete(b + "/missing"), NoNodeError),
        (lambda t, b: t.delete(b + "/full"), NotEmptyError),
        (lambda t, b: t.check(b + "/exists", 3), BadVersionError),
        (lambda t, b: t.check(b + "/missing", 0), NoNodeError),
        (lambda t, b: t.create(b + "/missing/child", b""), NoNodeError),
    ],
)
def test_transaction_failure_kinds(zk, base, build, expected):
    zk.create(base + "/exists", b"")
    zk.create(base + "/full/kid", b"", makepath=True)
    t = zk.transaction()
    t.create(base + "/first", b"")
    build(t, base)
    res = t.commit()
    assert isinstance(res[0], RolledBackError)
    assert isinstance(res[1], expected)
    assert zk.exists(base + "/first") is None


@pytest.mark.timeout(30)
def test_transaction_sees_its_own_earlier_ops(zk, base):
    t = zk.transaction()
    t.create(base + "/p", b"")
    t.create(base + "/p/c", b"")
    t.set_data(base + "/p/c", b"x", version=0)
    t.check(base + "/p/c", 1)
    t.delete(base + "/p/c")
    t.delete(base + "/p")
    res = t.commit()
    assert not any(isinstance(r, Exception) for r in res), res
    assert zk.exists(base + "/p") is None
    # the parent's cversion counts both the create and the delete
    assert zk.exists(base).cversion == 2


@pytest.mark.timeout(30)
def test_transaction_ephemeral_and_sequence(kazoo_factory, base):
    a = kazoo_factory()
    b = kazoo_factory()
    t = a.transaction()
    t.create(base + "/e", b"", ephemeral=True)
    t.create(base + "/es-", b"", ephemeral=True, sequence=True)
    res = t.commit()
    assert res == [base + "/e", base + "/es-0000000001"]
    assert b.exists(base + "/e").ephemeralOwner == a.client_id[0]
    a.stop()
    assert b.get_children(base) == []


@pytest.mark.timeout(60)
def test_concurrent_transactions_are_atomic(kazoo_factory, base):
    """Each transaction moves one unit between two counters guarded by
    versions; the total never changes and no update is lost."""
    zk = kazoo_factory()
    zk.create(base + "/x", b"100")
    zk.create(base + "/y", b"0")
    moves = []
    lock = threading.Lock()

    def worker():
        c = kazoo_factory()
        done = 0
        while done < 10:
            xd, xs = c.get(base + "/x")
            yd, ys = c.get(base + "/y")
            t = c.transaction()
            t.set_data(base + "/x", b"%d" % (int(xd) - 1), version=xs.version)
            t.set_data(base + "/y", b"%d" % (int(yd) + 1), version=ys.version)
            res = t.commit()
            if not any(isinstance(r, Exception) for r in res):
                done += 1
        with lock:
            moves.append(done)

    ts = [threading.Thread(target=worker) for _ in range(4)]
    [t.start() for t in ts]
    [t.join() for t in ts]
    assert sum(moves) == 40
    assert int(zk.get(base + "/x")[0]) == 60
    assert int(zk.get(base + "/y")[0]) == 40
    assert zk.exists(base + "/x").version == 40


# ----------------------------------------------------------------------------
# raw multi details


@pytest.mark.timeout(30)
def test_empty_multi(raw):
    rep = raw.call(zkwire.OP_MULTI, zkwire.multi_body([]))
    assert rep.err == 0
    assert zkwire.parse_multi_response(rep.body) == []


@pytest.mark.timeout(30)
def test_multi_result_types(raw, base):
    ops = [
        (zkwire.OP_CREATE, zkwire.create_body(base + "/c1")),
        (zkwire.OP_CREATE2, zkwire.create_body(base + "/c2")),
        (zkwire.OP_CREATE_CONTAINER, zkwire.create_body(base + "/cc", flags=zkwire.CONTAINER)),
        (zkwire.OP_CREATE_TTL, zkwire.create_body(base + "/ct", flags=zkwire.PERSISTENT_WITH_TTL, ttl=60000)),
        (zkwire.OP_SET_DATA, zkwire.Writer().ustring(base + "/c1").buffer(b"d").int(0).bytes()),
        (zkwire.OP_CHECK, zkwire.Writer().ustring(base + "/c1").int(1).bytes()),
        (zkwire.OP_DELETE, zkwire.Writer().ustring(base + "/c2").int(-1).bytes()),
    ]
    rep = raw.call(zkwire.OP_MULTI, zkwire.multi_body(ops))
    assert rep.err == 0
    res = zkwire.parse_multi_response(rep.body)
    assert [(t, e) for t, e, _ in res] == [(1, 0), (1, 0), (15, 0), (15, 0), (5, 0), (13, 0), (2, 0)]
    # create2 inside multi loses its Stat; container/TTL keep it
    assert res[0][2] == base + "/c1" and res[1][2] == base + "/c2"
    path, stat = res[2][2]
    assert path == base + "/cc" and stat.czxid == rep.zxid
    assert res[4][2].version == 1 and res[4][2].mzxid == rep.zxid


@pytest.mark.timeout(30)
def test_multi_failure_wire_shape(raw, base):
    raw.create(base + "/v", b"")
    ops = [
        (zkwire.OP_CREATE, zkwire.create_body(base + "/n")),
        (zkwire.OP_SET_DATA, zkwire.Writer().ustring(base + "/v").buffer(b"").int(7).bytes()),
        (zkwire.OP_DELETE, zkwire.Writer().ustring(base + "/v").int(-1).bytes()),
    ]
    before = raw.exists(base)[0].zxid
    rep = raw.call(zkwire.OP_MULTI, zkwire.multi_body(ops))
    # the header says OK; the failure is in the results
    assert rep.err == 0
    res = zkwire.parse_multi_response(rep.body)
    assert res == [(-1, 0, None), (-1, zkwire.BAD_VERSION, None), (-1, zkwire.RUNTIME_INCONSISTENCY, None)]
    # a failed multi still consumes a zxid
    assert rep.zxid > before
    assert raw.exists(base + "/n")[0].err == zkwire.NO_NODE


@pytest.mark.timeout(30)
def test_read_op_inside_multi_is_marshalling_error(raw, base):
    ops = [(zkwire.OP_GET_DATA, zkwire.path_watch_body(base))]
    rep = raw.call(zkwire.OP_MULTI, zkwire.multi_body(ops))
    assert rep.err == zkwire.MARSHALLING_ERROR
    # the connection stays usable
    assert raw.exists(base)[0].err == 0


@pytest.mark.timeout(30)
def test_multi_read(raw, base):
    raw.create(base + "/a", b"A")
    raw.create(base + "/a/k", b"")
    ops = [
        (zkwire.OP_GET_DATA, zkwire.path_watch_body(base + "/a")),
        (zkwire.OP_GET_CHILDREN, zkwire.path_watch_body(base + "/a")),
        (zkwire.OP_GET_DATA, zkwire.path_watch_body(base + "/nope")),
        (zkwire.OP_GET_CHILDREN, zkwire.path_watch_body(base)),
    ]
    rep = raw.call(zkwire.OP_MULTI_READ, zkwire.multi_body(ops))
    assert rep.err == 0
    res = zkwire.parse_multi_response(rep.body)
    assert res[0][0] == 4 and res[0][2][0] == b"A"
    assert res[1] == (8, 0, ["k"])
    assert res[2] == (-1, zkwire.NO_NODE, None)  # a failed read does not stop the others
    assert res[3] == (8, 0, ["a"])


@pytest.mark.timeout(30)
def test_write_op_inside_multi_read(raw, base):
    ops = [(zkwire.OP_CREATE, zkwire.create_body(base + "/w"))]
    rep = raw.call(zkwire.OP_MULTI_READ, zkwire.multi_body(ops))
    assert rep.err == zkwire.MARSHALLING_ERROR
    assert raw.exists(base + "/w")[0].err == zkwire.NO_NODE
