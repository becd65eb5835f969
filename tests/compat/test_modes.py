"""Create modes beyond kazoo's reach: create2, containers, TTL nodes, flag
checks (shared/docs/zookeeper-protocol.md section 7.1). Sent as raw frames."""

import pytest

import zkwire
from harness import wait_until

REAP_WAIT_S = 20  # container/TTL reaping runs every 500 ms on the test servers


@pytest.mark.timeout(30)
def test_create2_returns_stat(raw, zk, base):
    rep, path, stat = raw.create(base + "/c2", b"abc", op=zkwire.OP_CREATE2)
    assert rep.err == 0 and path == base + "/c2"
    assert stat.version == 0 and stat.dataLength == 3 and stat.numChildren == 0
    assert stat.czxid == stat.mzxid == stat.pzxid == rep.zxid
    assert stat == raw.exists(base + "/c2")[1]
    # sequential create2
    rep, path, stat = raw.create(base + "/s-", b"", op=zkwire.OP_CREATE2, flags=zkwire.PERSISTENT_SEQUENTIAL)
    assert path == base + "/s-0000000001"


@pytest.mark.timeout(30)
def test_create_null_and_empty_data(raw, base):
    assert raw.create(base + "/null", None)[0].err == 0
    rep, data, stat = raw.get_data(base + "/null")
    assert data is None and stat.dataLength == 0
    assert rep.body[:4] == b"\xff\xff\xff\xff"
    assert raw.create(base + "/empty", b"")[0].err == 0
    rep, data, stat = raw.get_data(base + "/empty")
    assert data == b"" and stat.dataLength == 0
    assert rep.body[:4] == b"\x00\x00\x00\x00"


@pytest.mark.timeout(30)
@pytest.mark.parametrize("flags", [7, 8, -1, 100])
def test_invalid_flags(raw, base, flags):
    rep, _, _ = raw.create(base + "/bad", b"", flags=flags)
    assert rep.err == zkwire.BAD_ARGUMENTS


@pytest.mark.timeout(30)
def test_create_with_container_flag_but_op1_is_persistent(raw, base):
    rep, path, _ = raw.create(base + "/notc", b"", flags=zkwire.CONTAINER)
    assert rep.err == 0 and path == base + "/notc"
    st = raw.exists(base + "/notc")[1]
    assert st.ephemeralOwner == 0


@pytest.mark.timeout(30)
def test_ephemeral_owner_hidden_for_container_and_ttl(raw, base):
    rep, _, stat = raw.create(base + "/c", b"", op=zkwire.OP_CREATE_CONTAINER, flags=zkwire.CONTAINER)
    assert rep.err == 0 and stat.ephemeralOwner == 0
    rep, _, stat = raw.create(base + "/t", b"", op=zkwire.OP_CREATE_TTL,
                              flags=zkwire.PERSISTENT_WITH_TTL, ttl=60000)
    assert rep.err == 0 and stat.ephemeralOwner == 0
    assert raw.exists(base + "/c")[1].ephemeralOwner == 0
    assert raw.exists(base + "/t")[1].ephemeralOwner == 0
    rep, _, stat = raw.create(base + "/e", b"", op=zkwire.OP_CREATE2, flags=zkwire.EPHEMERAL)
    assert stat.ephemeralOwner == raw.session_id


@pytest.mark.timeout(60)
def test_container_reaped_after_last_child_goes(raw, zk, base):
    used = base + "/used"
    never = base + "/never"
    plain = base + "/plain"
    for p in (used, never):
        rep, path, stat = raw.create(p, b"", op=zkwire.OP_CREATE_CONTAINER, flags=0)
        assert rep.err == 0 and path == p
    zk.create(plain, b"")
    zk.create(used + "/child", b"")
    zk.create(plain + "/child", b"")
    # a container with a child stays
    assert zk.exists(used) is not None
    zk.delete(used + "/child")
    zk.delete(plain + "/child")
    wait_until(lambda: zk.exists(used) is None, REAP_WAIT_S, what="emptied container reaped")
    # a container that never had a child, and a plain node, are kept
    assert zk.exists(never) is not None
    assert zk.exists(plain) is not None


@pytest.mark.timeout(60)
def test_container_with_ephemeral_child_reaped_after_session_close(server, zk, base):
    c = base + "/cont"
    with zkwire.connect(server.addr) as owner:
        assert owner.create(c, b"", op=zkwire.OP_CREATE_CONTAINER)[0].err == 0
        # ephemerals may live under containers
        assert owner.create(c + "/e", b"", flags=zkwire.EPHEMERAL)[0].err == 0
        owner.close_session()
    assert zk.exists(c + "/e") is None
    wait_until(lambda: zk.exists(c) is None, REAP_WAIT_S, what="container reaped")


@pytest.mark.timeout(30)
def test_sequential_container_names(raw, base):
    rep, path, _ = raw.create(base + "/sc-", b"", op=zkwire.OP_CREATE_CONTAINER, flags=zkwire.PERSISTENT_SEQUENTIAL)
    assert rep.err == 0
    assert path == base + "/sc-0000000000"


# ----------------------------------------------------------------------------
# TTL


@pytest.mark.timeout(60)
def test_ttl_node_expires(raw, zk, base):
    short = base + "/short"
    busy = base + "/busy"
    for p in (busy, short):
        rep, path, stat = raw.create(p, b"x", op=zkwire.OP_CREATE_TTL, flags=zkwire.PERSISTENT_WITH_TTL, ttl=300)
        assert rep.err == 0 and path == p
    zk.create(busy + "/child", b"")
    wait_until(lambda: zk.exists(short) is None, REAP_WAIT_S, what="TTL node removed")
    # a TTL node with children is kept even though its ttl passed
    assert zk.exists(busy) is not None
    zk.delete(busy + "/child")
    wait_until(lambda: zk.exists(busy) is None, REAP_WAIT_S, what="emptied TTL node removed")


@pytest.mark.timeout(30)
def test_ttl_node_kept_before_ttl(raw, zk, base):
    p = base + "/long"
    rep, _, _ = raw.create(p, b"", op=zkwire.OP_CREATE_TTL, flags=zkwire.PERSISTENT_WITH_TTL, ttl=3600 * 1000)
    assert rep.err == 0
    # wait for a short-lived sibling to be reaped: the reaper has run since
    rep, _, _ = raw.create(base + "/probe", b"", op=zkwire.OP_CREATE_TTL,
                           flags=zkwire.PERSISTENT_WITH_TTL, ttl=1)
    assert rep.err == 0
    wait_until(lambda: zk.exists(base + "/probe") is None, REAP_WAIT_S, what="probe TTL node removed")
    assert zk.exists(p) is not None


@pytest.mark.timeout(30)
def test_sequential_ttl(raw, base):
    rep, path, stat = raw.create(base + "/st-", b"", op=zkwire.OP_CREATE_TTL,
                                 flags=zkwire.PERSISTENT_SEQUENTIAL_WITH_TTL, ttl=60000)
    assert rep.err == 0 and path == base + "/st-0000000000"
    assert stat.ephemeralOwner == 0


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    "op,flags,ttl",
    [
        (zkwire.OP_CREATE_TTL, zkwire.PERSISTENT_WITH_TTL, 0),
        (zkwire.OP_CREATE_TTL, zkwire.PERSISTENT_WITH_TTL, -5),
        (zkwire.OP_CREATE_TTL, zkwire.PERSISTENT_WITH_TTL, 0xFFFFFFFFFF + 1),
        (zkwire.OP_CREATE_TTL, zkwire.PERSISTENT, 1000),  # ttl with a non-TTL mode
        (zkwire.OP_CREATE_TTL, zkwire.EPHEMERAL, 1000),
        (zkwire.OP_CREATE, zkwire.PERSISTENT_WITH_TTL, None),  # TTL mode without ttl field
        (zkwire.OP_CREATE2, zkwire.PERSISTENT_SEQUENTIAL_WITH_TTL, None),
    ],
)
def test_bad_ttl_requests(raw, base, op, flags, ttl):
    rep, _, _ = raw.create(base + "/t", b"", op=op, flags=flags, ttl=ttl)
    assert rep.err == zkwire.BAD_ARGUMENTS
    assert raw.exists(base + "/t")[0].err == zkwire.NO_NODE


@pytest.mark.timeout(30)
def test_max_ttl_accepted(raw, base):
    rep, _, _ = raw.create(base + "/max", b"", op=zkwire.OP_CREATE_TTL,
                           flags=zkwire.PERSISTENT_WITH_TTL, ttl=0xFFFFFFFFFF)
    assert rep.err == 0


@pytest.mark.timeout(60)
def test_ttl_disabled_is_unimplemented(server_factory):
    s = server_factory(ttl_enabled=False)
    with zkwire.connect(s.addr) as c:
        rep, _, _ = c.create("/t", b"", op=zkwire.OP_CREATE_TTL, flags=zkwire.PERSISTENT_WITH_TTL, ttl=1000)
        assert rep.err == zkwire.UNIMPLEMENTED
        assert c.exists("/t")[0].err == zkwire.NO_NODE
        # the connection stays usable; other modes work
        assert c.create("/c", b"", op=zkwire.OP_CREATE_CONTAINER)[0].err == 0
        c.close_session()
