"""Watches: one-shot data/child/exist watches, kazoo's DataWatch and
ChildrenWatch, persistent and recursive watches, and the order of events
against replies (shared/docs/zookeeper-protocol.md section 12)."""

import threading
import time

import pytest
from kazoo.protocol.states import Callback, EventType

import zkwire
from harness import EventBox




def settle(client, box):
    """Returns the events delivered so far, after making sure any event the
    earlier writes caused has arrived: the server queues an event before any
    later reply on the same connection, and kazoo runs callbacks in order."""
    client.exists("/")
    # kazoo runs watch callbacks on its own thread; give it the round trip too
    done = threading.Event()
    client.handler.dispatch_callback(Callback("watch", done.set, ()))
    done.wait(5)
    with box.cond:
        return list(box.events)


# ----------------------------------------------------------------------------
# kazoo one-shot watches


@pytest.mark.timeout(30)
def test_data_watch_is_one_shot(kazoo_factory, base):
    watcher = kazoo_factory()
    writer = kazoo_factory()
    p = base + "/d"
    writer.create(p, b"0")
    box = EventBox()
    watcher.get(p, watch=box)
    writer.set(p, b"1")
    ev = box.wait(1)[0]
    assert (ev.type, ev.path) == (EventType.CHANGED, p)
    writer.set(p, b"2")
    writer.set(p, b"3")
    assert len(settle(watcher, box)) == 1


@pytest.mark.timeout(30)
def test_exists_watch_on_missing_node(kazoo_factory, base):
    watcher = kazoo_factory()
    writer = kazoo_factory()
    p = base + "/later"
    box = EventBox()
    assert watcher.exists(p, watch=box) is None
    writer.create(p, b"")
    ev = box.wait(1)[0]
    assert (ev.type, ev.path) == (EventType.CREATED, p)


@pytest.mark.timeout(30)
def test_exists_watch_on_present_node_fires_on_delete(kazoo_factory, base):
    watcher = kazoo_factory()
    writer = kazoo_factory()
    p = base + "/x"
    writer.create(p, b"")
    box = EventBox()
    assert watcher.exists(p, watch=box) is not None
    writer.delete(p)
    assert box.wait(1)[0].type == EventType.DELETED


@pytest.mark.timeout(30)
def test_child_watch(kazoo_factory, base):
    watcher = kazoo_factory()
    writer = kazoo_factory()
    box = EventBox()
    assert watcher.get_children(base, watch=box) == []
    writer.create(base + "/c", b"")
    ev = box.wait(1)[0]
    assert (ev.type, ev.path) == (EventType.CHILD, base)
    # setData on a child does not touch the parent's child watch
    box2 = EventBox()
    watcher.get_children(base, watch=box2)
    writer.set(base + "/c", b"data")
    writer.delete(base + "/c")
    ev = box2.wait(1)[0]
    assert (ev.type, ev.path) == (EventType.CHILD, base)
    assert len(settle(watcher, box2)) == 1


@pytest.mark.timeout(30)
def test_child_watch_fires_deleted_for_the_node_itself(kazoo_factory, base):
    watcher = kazoo_factory()
    writer = kazoo_factory()
    p = base + "/p"
    writer.create(p, b"")
    box = EventBox()
    watcher.get_children(p, watch=box)
    writer.delete(p)
    ev = box.wait(1)[0]
    assert (ev.type, ev.path) == (EventType.DELETED, p)


@pytest.mark.timeout(30)
def test_no_watch_set_on_missing_node_get(kazoo_factory, base):
    from kazoo.exceptions import NoNodeError

    watcher = kazoo_factory()
    writer = kazoo_factory()
    box = EventBox()
    with pytest.raises(NoNodeError):
        watcher.get(base + "/none", watch=box)
    writer.create(base + "/none", b"")
    assert settle(watcher, box) == []


@pytest.mark.timeout(30)
def test_ephemeral_delete_on_close_fires_watches(kazoo_factory, base):
    watcher = kazoo_factory()
    owner = kazoo_factory()
    owner.create(base + "/e", b"", ephemeral=True)
    data_box, child_box = EventBox(), EventBox()
    watcher.get(base + "/e", watch=data_box)
    watcher.get_children(base, watch=child_box)
    owner.stop()
    assert data_box.wait(1)[0].type == EventType.DELETED
    assert child_box.wait(1)[0].type == EventType.CHILD


# ----------------------------------------------------------------------------
# kazoo recipes


@pytest.mark.timeout(30)
def test_data_watch_recipe(kazoo_factory, base):
    watcher = kazoo_factory()
    writer = kazoo_factory()
    p = base + "/dw"
    seen = []
    cond = threading.Condition()

    @watcher.DataWatch(p)
    def on_change(data, stat):
        with cond:
            seen.append((data, stat.version if stat else None))
            cond.notify_all()

    def wait_for(item):
        with cond:
            assert cond.wait_for(lambda: item in seen, timeout=10), seen

    wait_for((None, None))
    writer.create(p, b"a")
    wait_for((b"a", 0))
    writer.set(p, b"b")
    wait_for((b"b", 1))
    writer.delete(p)
    with cond:
        assert cond.wait_for(lambda: seen[-1] == (None, None) and len(seen) >= 4, timeout=10), seen


@pytest.mark.timeout(30)
def test_children_watch_recipe(kazoo_factory, base):
    watcher = kazoo_factory()
    writer = kazoo_factory()
    seen = []
    cond = threading.Condition()

    @watcher.ChildrenWatch(base)
    def on_children(children):
        with cond:
            seen.append(sorted(children))
            cond.notify_all()

    def wait_for(item):
        with cond:
            assert cond.wait_for(lambda: seen and seen[-1] == item, timeout=10), seen

    wait_for([])
    writer.create(base + "/a", b"")
    wait_for(["a"])
    writer.create(base + "/b", b"")
    wait_for(["a", "b"])
    writer.delete(base + "/a")
    wait_for(["b"])


# ----------------------------------------------------------------------------
# raw: event order, dedup, persistent watches


@pytest.mark.timeout(30)
def test_own_write_event_comes_before_reply(raw, base):
    raw.create(base + "/own", b"0")
    assert raw.get_data(base + "/own", watch=True)[0].err == 0
    assert raw.get_children(base, watch=True)[0].err == 0
    rep, before = raw.request(zkwire.OP_SET_DATA,
                              zkwire.Writer().ustring(base + "/own").buffer(b"1").int(-1).bytes())
    assert rep.err == 0
    assert before == [zkwire.Event(zkwire.EV_NODE_DATA_CHANGED, zkwire.STATE_SYNC_CONNECTED, base + "/own")]
    # delete: the node's own event, then the parent's children event, then the reply
    raw.events.clear()
    assert raw.get_data(base + "/own", watch=True)[0].err == 0
    rep, before = raw.request(zkwire.OP_DELETE, zkwire.Writer().ustring(base + "/own").int(-1).bytes())
    assert rep.err == 0
    assert [(e.type, e.path) for e in before] == [
        (zkwire.EV_NODE_DELETED, base + "/own"),
        (zkwire.EV_NODE_CHILDREN_CHANGED, base),
    ]


@pytest.mark.timeout(60)
def test_event_before_read_of_new_data(server, base):
    """A client sees the watch event for a change before it sees the new data.
    (Whether its very next read already returns the new data is a separate
    question: see test_basic.test_read_after_another_clients_write.)"""
    p = base + "/r"
    with zkwire.connect(server.addr) as a, zkwire.connect(server.addr) as b:
        a.create(p, b"v-1")
        for i in range(20):
            a.events.clear()
            assert a.get_data(p, watch=True)[0].err == 0
            assert b.set_data(p, b"v%d" % i)[0].err == 0
            for _ in range(1000):
                rep = a.call(zkwire.OP_GET_DATA, zkwire.path_watch_body(p))
                data = zkwire.Reader(rep.body).buffer()
                if data == b"v%d" % i:
                    break
                assert data == b"v%d" % (i - 1)
            else:
                pytest.fail("never saw v%d" % i)
            assert [(e.type, e.path) for e in a.events] == [(zkwire.EV_NODE_DATA_CHANGED, p)]
        a.close_session()
        b.close_session()


@pytest.mark.timeout(30)
def test_one_event_per_connection_per_trigger(raw, zk, base):
    p = base + "/dup"
    zk.create(p, b"")
    assert raw.get_data(p, watch=True)[0].err == 0
    assert raw.exists(p, watch=True)[0].err == 0
    assert raw.get_children(p, watch=True)[0].err == 0
    zk.delete(p)
    evs = raw.drain_events(probe=p)
    assert [(e.type, e.path) for e in evs] == [(zkwire.EV_NODE_DELETED, p)]


@pytest.mark.timeout(30)
def test_event_frame_shape(raw, zk, base):
    p = base + "/shape"
    assert raw.exists(p, watch=True)[0].err == zkwire.NO_NODE
    zk.create(p, b"")
    data = raw.recv_frame(timeout=10)
    r = zkwire.Reader(data)
    assert (r.int(), r.long(), r.int()) == (-1, -1, 0)  # xid -1, zxid -1, err 0
    assert (r.int(), r.int(), r.ustring()) == (zkwire.EV_NODE_CREATED, zkwire.STATE_SYNC_CONNECTED, p)
    assert r.remaining() == 0


@pytest.mark.timeout(30)
def test_persistent_watch(raw, zk, base):
    p = base + "/pw"
    assert raw.add_watch(p, zkwire.WATCH_PERSISTENT).body == b"\x00\x00\x00\x00"
    zk.create(p, b"")
    zk.set(p, b"1")
    zk.set(p, b"2")
    zk.create(p + "/kid", b"")
    zk.set(p + "/kid", b"not for us")
    zk.delete(p + "/kid")
    zk.delete(p)
    zk.create(p, b"")
    got = [(e.type, e.path) for e in raw.drain_events(probe=p)]
    assert got == [
        (zkwire.EV_NODE_CREATED, p),
        (zkwire.EV_NODE_DATA_CHANGED, p),
        (zkwire.EV_NODE_DATA_CHANGED, p),
        (zkwire.EV_NODE_CHILDREN_CHANGED, p),
        (zkwire.EV_NODE_CHILDREN_CHANGED, p),
        (zkwire.EV_NODE_DELETED, p),
        (zkwire.EV_NODE_CREATED, p),
    ]


@pytest.mark.timeout(30)
def test_persistent_recursive_watch(raw, zk, base):
    p = base + "/tree"
    zk.create(p, b"")
    assert raw.add_watch(p, zkwire.WATCH_PERSISTENT_RECURSIVE).err == 0
    zk.create(p + "/a", b"")
    zk.create(p + "/a/b", b"")
    zk.set(p + "/a/b", b"x")
    zk.set(p, b"y")
    zk.create(base + "/sibling", b"")  # outside the tree
    zk.create(base + "/tree2", b"")  # shares the prefix but not the path
    zk.delete(p + "/a/b")
    got = [(e.type, e.path) for e in raw.drain_events(probe=p + "/a/b")]
    # never NodeChildrenChanged for recursive watches
    assert got == [
        (zkwire.EV_NODE_CREATED, p + "/a"),
        (zkwire.EV_NODE_CREATED, p + "/a/b"),
        (zkwire.EV_NODE_DATA_CHANGED, p + "/a/b"),
        (zkwire.EV_NODE_DATA_CHANGED, p),
        (zkwire.EV_NODE_DELETED, p + "/a/b"),
    ]


@pytest.mark.timeout(30)
def test_recursive_watch_on_root(raw, zk, base):
    assert raw.add_watch("/", zkwire.WATCH_PERSISTENT_RECURSIVE).err == 0
    zk.create(base + "/r", b"")
    evs = raw.drain_events(probe=base + "/r")
    assert (zkwire.EV_NODE_CREATED, base + "/r") in [(e.type, e.path) for e in evs]


@pytest.mark.timeout(30)
def test_add_watch_bad_mode(raw, base):
    assert raw.add_watch(base, 5).err == zkwire.MARSHALLING_ERROR
    assert raw.exists(base)[0].err == 0


@pytest.mark.timeout(30)
def test_check_and_remove_watches(raw, zk, base):
    p = base + "/cw"
    zk.create(p, b"")

    def check(typ):
        return raw.call(zkwire.OP_CHECK_WATCHES, zkwire.Writer().ustring(p).int(typ).bytes()).err

    def remove(typ):
        return raw.call(zkwire.OP_REMOVE_WATCHES, zkwire.Writer().ustring(p).int(typ).bytes()).err

    assert check(3) == zkwire.NO_WATCHER
    assert remove(3) == zkwire.NO_WATCHER
    raw.get_data(p, watch=True)
    assert check(2) == 0
    assert check(1) == zkwire.NO_WATCHER
    raw.get_children(p, watch=True)
    assert check(1) == 0
    assert remove(2) == 0
    assert check(2) == zkwire.NO_WATCHER
    assert check(1) == 0
    # removal sends no event; the removed watch no longer fires
    zk.set(p, b"x")
    assert raw.drain_events(probe=p) == []
    assert remove(3) == 0
    assert check(3) == zkwire.NO_WATCHER
    # persistent watches count as data and child watches
    raw.add_watch(p, zkwire.WATCH_PERSISTENT)
    assert check(1) == 0 and check(2) == 0
    assert check(9) == zkwire.MARSHALLING_ERROR


@pytest.mark.timeout(30)
def test_watches_are_per_connection(server, zk, base):
    p = base + "/pc"
    zk.create(p, b"")
    a = zkwire.connect(server.addr)
    try:
        assert a.get_data(p, watch=True)[0].err == 0
        sid, pw = a.session_id, a.passwd
        a.close()
        with zkwire.RawConn(server.addr) as b:
            assert b.handshake(session_id=sid, passwd=pw).session_id == sid
            zk.set(p, b"changed")
            # the resumed connection did not re-register: nothing arrives
            assert b.drain_events(probe=p) == []
            b.close_session()
    finally:
        a.close()
