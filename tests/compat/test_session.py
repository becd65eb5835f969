"""Sessions: negotiation, resume after a dropped connection, expiry
(shared/docs/zookeeper-protocol.md sections 3, 13)."""

import threading
import time

import pytest
from kazoo.protocol.states import EventType, KazooState

import zkwire
from harness import EventBox, make_kazoo, wait_until


class StateLog:
    """Records kazoo connection states in order."""

    def __init__(self, client):
        self.states = []
        self.cond = threading.Condition()
        client.add_listener(self)

    def __call__(self, state):
        with self.cond:
            self.states.append(state)
            self.cond.notify_all()

    def wait_for(self, state, timeout, after=0):
        deadline = time.monotonic() + timeout
        with self.cond:
            while state not in self.states[after:]:
                left = deadline - time.monotonic()
                if left <= 0:
                    pytest.fail("no %s state within %.1fs (saw %s)" % (state, timeout, self.states))
                self.cond.wait(left)
            return self.states.index(state, after)




# ----------------------------------------------------------------------------
# negotiation (raw handshakes)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("requested,negotiated", [(1, 400), (100, 400), (1000, 1000), (4000, 4000), (100000, 4000)])
def test_timeout_negotiation(server, requested, negotiated):
    with zkwire.RawConn(server.addr) as c:
        resp = c.handshake(timeout_ms=requested)
        assert resp.protocol == 0
        assert resp.timeout == negotiated
        assert resp.session_id != 0
        assert len(resp.passwd) == 16
        assert resp.read_only is False
        c.close_session()


@pytest.mark.timeout(30)
def test_old_client_without_readonly_byte(server):
    with zkwire.RawConn(server.addr) as c:
        resp = c.handshake(with_read_only_byte=False)
        assert resp.timeout == 4000
        assert resp.read_only is None
        assert len(resp.raw) == 36
        c.close_session()


@pytest.mark.timeout(30)
def test_readonly_request_on_rw_server(server):
    with zkwire.RawConn(server.addr) as c:
        resp = c.handshake(read_only=True)
        assert resp.timeout > 0 and resp.read_only is False
        c.close_session()


# ----------------------------------------------------------------------------
# resume


@pytest.mark.timeout(30)
def test_raw_resume_keeps_session_and_ephemerals(server, zk, base):
    a = zkwire.connect(server.addr)
    rep, path, _ = a.create(base + "/eph", b"x", flags=zkwire.EPHEMERAL)
    assert rep.err == 0
    sid, pw = a.session_id, a.passwd
    a.close()  # drop the socket without closeSession
    assert zk.exists(base + "/eph").ephemeralOwner == sid
    with zkwire.RawConn(server.addr) as b:
        resp = b.handshake(session_id=sid, passwd=pw)
        assert resp.session_id == sid
        assert resp.passwd == pw
        assert resp.timeout == 4000
        rep, data, stat = b.get_data(base + "/eph")
        assert rep.err == 0 and data == b"x" and stat.ephemeralOwner == sid
        b.close_session()
    wait_until(lambda: zk.exists(base + "/eph") is None, 5, what="ephemeral gone after close")


@pytest.mark.timeout(30)
def test_resume_closes_old_connection(server):
    a = zkwire.connect(server.addr)
    try:
        with zkwire.RawConn(server.addr) as b:
            resp = b.handshake(session_id=a.session_id, passwd=a.passwd)
            assert resp.session_id == a.session_id
            assert a.wait_closed(timeout=10), "server kept the old connection of a resumed session"
            assert b.ping().err == 0
            b.close_session()
    finally:
        a.close()


@pytest.mark.timeout(30)
def test_resume_wrong_password(server):
    a = zkwire.connect(server.addr)
    sid, pw = a.session_id, a.passwd
    a.close()
    with zkwire.RawConn(server.addr) as b:
        bad = bytes(x ^ 0xFF for x in pw)
        resp = b.handshake(session_id=sid, passwd=bad)
        assert (resp.timeout, resp.session_id, resp.passwd) == (0, 0, b"\x00" * 16)
        assert resp.read_only is False
        assert b.wait_closed(timeout=10)
    # the session itself is untouched: the right password still resumes it
    with zkwire.RawConn(server.addr) as c:
        resp = c.handshake(session_id=sid, passwd=pw)
        assert resp.session_id == sid and resp.timeout == 4000
        assert c.close_session().err == 0


@pytest.mark.timeout(30)
def test_resume_unknown_session(server):
    with zkwire.RawConn(server.addr) as b:
        resp = b.handshake(session_id=0x0123456789ABCD, passwd=b"\x07" * 16)
        assert (resp.timeout, resp.session_id, resp.passwd) == (0, 0, b"\x00" * 16)
        assert b.wait_closed(timeout=10)


@pytest.mark.timeout(30)
def test_last_zxid_ahead_is_refused(server):
    with zkwire.RawConn(server.addr) as b:
        b.send_frame(zkwire.connect_request(last_zxid=1 << 60))
        assert b.wait_closed(timeout=10)


@pytest.mark.timeout(40)
def test_kazoo_resumes_after_connection_cut(server, proxy, kazoo_factory, base):
    zk = kazoo_factory(hosts=proxy.hosts)
    direct = kazoo_factory()
    log = StateLog(zk)
    sid = zk.client_id[0]
    zk.create(base + "/eph", b"e", ephemeral=True)
    zk.create(base + "/watched", b"0")
    seen = []
    cond = threading.Condition()

    @zk.DataWatch(base + "/watched")
    def on_data(data, stat):
        with cond:
            seen.append(data)
            cond.notify_all()

    n = len(log.states)
    proxy.cut()
    i = log.wait_for(KazooState.SUSPENDED, 10, after=n)
    log.wait_for(KazooState.CONNECTED, 10, after=i)
    assert proxy.accepted >= 2
    assert zk.client_id[0] == sid
    assert KazooState.LOST not in log.states
    assert direct.exists(base + "/eph").ephemeralOwner == sid
    assert zk.get(base + "/eph")[0] == b"e"

    # the recipe's watch works again on the resumed session
    direct.set(base + "/watched", b"1")
    with cond:
        assert cond.wait_for(lambda: b"1" in seen, timeout=10), seen


@pytest.mark.timeout(40)
def test_set_watches_catch_up_on_resume(server, zk, base):
    """After a reconnect the client re-registers its watches with setWatches and
    relativeZxid; changes it missed fire at once, others stay registered
    (section 12.5)."""
    for n in ("d", "gone", "same"):
        zk.create("%s/%s" % (base, n), b"0")
    a = zkwire.connect(server.addr)
    assert a.get_data(base + "/d", watch=True)[0].err == 0
    assert a.get_data(base + "/gone", watch=True)[0].err == 0
    assert a.get_data(base + "/same", watch=True)[0].err == 0
    assert a.get_children(base, watch=True)[0].err == 0
    assert a.exists(base + "/later", watch=True)[0].err == zkwire.NO_NODE
    sid, pw, last = a.session_id, a.passwd, a.last_zxid
    a.close()  # the server forgets this connection's watches

    zk.set(base + "/d", b"1")
    zk.delete(base + "/gone")
    zk.create(base + "/later", b"")

    b = zkwire.RawConn(server.addr)
    try:
        resp = b.handshake(session_id=sid, passwd=pw, last_zxid=last)
        assert resp.session_id == sid
        rep, _ = b.set_watches(
            last,
            data=[base + "/d", base + "/gone", base + "/same"],
            exist=[base + "/later"],
            child=[base],
        )
        assert rep.err == 0 and rep.xid == zkwire.XID_SET_WATCHES
        got = {(e.type, e.path) for e in b.drain_events(probe=base + "/later")}
        assert got == {
            (zkwire.EV_NODE_DATA_CHANGED, base + "/d"),
            (zkwire.EV_NODE_DELETED, base + "/gone"),
            (zkwire.EV_NODE_CREATED, base + "/later"),
            (zkwire.EV_NODE_CHILDREN_CHANGED, base),
        }
        # fired watches are gone (one-shot); the unchanged one is registered
        zk.set(base + "/d", b"2")
        zk.set(base + "/same", b"1")
        ev = b.wait_event(timeout=10)
        assert (ev.type, ev.path) == (zkwire.EV_NODE_DATA_CHANGED, base + "/same")
        assert b.drain_events(probe=base + "/same") == []
        b.close_session()
    finally:
        b.close()


# ----------------------------------------------------------------------------
# expiry


@pytest.mark.timeout(60)
def test_session_expiry_removes_ephemerals_and_fires_watches(server, proxy, kazoo_factory, base):
    victim = kazoo_factory(hosts=proxy.hosts, timeout=2.0)
    observer = kazoo_factory()
    log = StateLog(victim)
    old_sid = victim.client_id[0]
    victim.create(base + "/e1", b"", ephemeral=True)
    victim.create(base + "/e2-", b"", ephemeral=True, sequence=True)
    deleted, children = EventBox(), EventBox()
    assert observer.exists(base + "/e1", watch=deleted) is not None
    assert len(observer.get_children(base, watch=children)) == 2

    proxy.block()
    # the session outlives the connection until its timeout
    assert observer.exists(base + "/e1") is not None
    ev = deleted.wait(1, timeout=20)[0]
    assert ev.type == EventType.DELETED and ev.path == base + "/e1"
    assert children.wait(1, timeout=20)[0].type == EventType.CHILD
    assert observer.get_children(base) == []

    n = len(log.states)
    proxy.unblock()
    # the client learns of the expiry at its next handshake, then starts afresh
    i = log.wait_for(KazooState.LOST, 20, after=n)
    log.wait_for(KazooState.CONNECTED, 20, after=i)
    assert victim.client_id[0] != old_sid
    assert victim.exists(base + "/e1") is None
    victim.create(base + "/e1", b"", ephemeral=True)
    assert observer.exists(base + "/e1").ephemeralOwner == victim.client_id[0]


@pytest.mark.timeout(60)
def test_silent_connection_is_expired_and_closed(server, zk, base):
    c = zkwire.RawConn(server.addr)
    try:
        resp = c.handshake(timeout_ms=1000)
        assert resp.timeout == 1000
        assert c.create(base + "/silent", b"", flags=zkwire.EPHEMERAL)[0].err == 0
        # no pings: the server expires the session and closes the socket
        assert c.wait_closed(timeout=20)
    finally:
        c.close()
    wait_until(lambda: zk.exists(base + "/silent") is None, 10, what="ephemeral of expired session gone")
    with zkwire.RawConn(server.addr) as again:
        resp = again.handshake(session_id=resp.session_id, passwd=resp.passwd)
        assert (resp.timeout, resp.session_id) == (0, 0)
        assert again.wait_closed(timeout=10)


@pytest.mark.timeout(60)
def test_pings_keep_a_session_alive(server, zk, base):
    c = zkwire.connect(server.addr, timeout_ms=1000)
    try:
        assert c.create(base + "/kept", b"", flags=zkwire.EPHEMERAL)[0].err == 0
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:
            assert c.ping().err == 0
            time.sleep(0.2)
        assert zk.exists(base + "/kept") is not None
        assert c.exists(base + "/kept")[0].err == 0
        c.close_session()
    finally:
        c.close()


@pytest.mark.timeout(30)
def test_close_session_reply_then_eof(server, zk, base):
    c = zkwire.connect(server.addr)
    try:
        assert c.create(base + "/bye", b"", flags=zkwire.EPHEMERAL)[0].err == 0
        rep = c.close_session()
        assert rep.err == 0 and rep.xid == 2
        assert rep.body == b""
        assert c.wait_closed(timeout=10)
    finally:
        c.close()
    assert zk.exists(base + "/bye") is None


@pytest.mark.timeout(30)
def test_session_survives_kazoo_restart_of_other_client(server, kazoo_factory, base):
    a = kazoo_factory()
    b = make_kazoo(server.hosts)
    b.create(base + "/b", b"", ephemeral=True)
    b.stop()
    b.close()
    assert a.exists(base + "/b") is None
