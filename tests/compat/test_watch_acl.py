"""Watches and ACLs, and the bound on watches.

ACLs at delivery (CVE-2024-23944, fixed in ZooKeeper by ZOOKEEPER-4799): a watch
event is delivered only if the watcher's session, with its identities at that
moment, may READ the node the event names (the created, changed or deleted node;
the parent for NodeChildrenChanged), whatever kind of watch fired: persistent,
persistent recursive, or re-registered with setWatches2 after a reconnect. The
Debian ZooKeeper 3.8.0 (3.8.0-11+deb12u2) carries that fix: every test here but
the limit tests runs against both targets.

kazoo 2.11 cannot send addWatch or setWatches2, so the watchers are zkwire raw
connections; the writer is a kazoo client authenticated as the owner."""

import pytest
from kazoo.exceptions import QuotaExceededError
from kazoo.security import ACL, Id, Permissions, make_digest_acl

import zkwire
from harness import TARGET

OWNER = ("owner", "s3cret")
CREATED, DELETED, CHANGED, CHILDREN = (
    zkwire.EV_NODE_CREATED,
    zkwire.EV_NODE_DELETED,
    zkwire.EV_NODE_DATA_CHANGED,
    zkwire.EV_NODE_CHILDREN_CHANGED,
)
QUOTA_EXCEEDED = -125


def events(conn, probe):
    return [(e.type, e.path) for e in conn.drain_events(probe=probe)]


def resume(server, old, last_zxid):
    """The same session on a new connection, as a client reconnects."""
    c = zkwire.RawConn(server.addr)
    resp = c.handshake(session_id=old.session_id, passwd=old.passwd, last_zxid=last_zxid)
    assert resp.session_id == old.session_id
    return c


@pytest.mark.timeout(60)
def test_events_need_read_on_the_node_they_name(server, kazoo_factory, base):
    owner = kazoo_factory(auth_data=[("digest", "%s:%s" % OWNER)])
    private = [make_digest_acl(*OWNER, all=True)]
    secret = base + "/secret"
    owner.create(secret, b"", acl=private)
    owner.create(base + "/open", b"")

    # An anonymous session watching the whole tree and /secret/x with watches from addWatch.
    added = zkwire.connect(server.addr)
    assert added.add_watch("/", zkwire.WATCH_PERSISTENT_RECURSIVE).err == 0
    assert added.add_watch(secret + "/x", zkwire.WATCH_PERSISTENT).err == 0
    assert added.add_watch(secret, zkwire.WATCH_PERSISTENT).err == 0
    # Another one whose same watches come back through setWatches2 after a reconnect.
    first = zkwire.connect(server.addr)
    assert first.exists("/")[0].err == 0
    last = first.last_zxid
    first.close()
    again = resume(server, first, last)
    rep, _ = again.set_watches(
        last, persistent=[secret + "/x", secret], persistent_recursive=["/"]
    )
    assert rep.err == 0 and rep.xid == zkwire.XID_SET_WATCHES
    # The owner's own session, watching the same way, sees everything.
    mine = zkwire.connect(server.addr)
    assert mine.auth_digest("%s:%s" % OWNER).err == 0
    assert mine.add_watch("/", zkwire.WATCH_PERSISTENT_RECURSIVE).err == 0
    assert mine.add_watch(secret + "/x", zkwire.WATCH_PERSISTENT).err == 0
    try:
        x, y, pub, a = secret + "/x", secret + "/x/y", secret + "/pub", base + "/open/a"
        owner.create(x, b"", acl=private)
        owner.set(x, b"1")
        owner.create(y, b"", acl=private)
        owner.set(y, b"2")
        owner.delete(y)
        owner.delete(x)
        # The rule is the node's own ACL, not its ancestors': a readable node under /secret
        # is seen (ZooKeeper's PersistentWatcherACLTest: "b changes allowed/seen").
        owner.create(pub, b"")
        owner.delete(pub)
        owner.create(a, b"")
        owner.set(a, b"3")
        owner.delete(a)

        readable = [
            (CREATED, pub),
            (DELETED, pub),
            (CREATED, a),
            (CHANGED, a),
            (DELETED, a),
        ]
        for watcher in (added, again):
            got = events(watcher, a)
            assert [e for e in got if e[1].startswith(secret + "/x")] == [], got
            assert got == readable
        # The owner sees them all; its persistent watch on x also gets x's children events.
        assert events(mine, a) == [
            (CREATED, x),
            (CHANGED, x),
            (CREATED, y),
            (CHILDREN, x),
            (CHANGED, y),
            (DELETED, y),
            (CHILDREN, x),
            (DELETED, x),
        ] + readable
    finally:
        for c in (added, again, mine):
            c.close()


@pytest.mark.timeout(60)
def test_children_changed_needs_read_on_the_parent(server, kazoo_factory, base):
    """NodeChildrenChanged names the parent: its ACL decides, for a persistent watch and for
    a one-shot child watch alike (the one-shot one is used up all the same)."""
    owner = kazoo_factory(auth_data=[("digest", "%s:%s" % OWNER)])
    private = [make_digest_acl(*OWNER, all=True)]
    readable = private + [ACL(Permissions.READ, Id("world", "anyone"))]
    persistent, one_shot = base + "/persistent", base + "/one-shot"
    for p in (persistent, one_shot):
        owner.create(p, b"", acl=readable)
    anon = zkwire.connect(server.addr)

    def check_children(path):
        body = zkwire.Writer().ustring(path).int(1).bytes()  # WatcherType.Children
        return anon.call(zkwire.OP_CHECK_WATCHES, body).err

    try:
        assert anon.add_watch(persistent, zkwire.WATCH_PERSISTENT).err == 0
        assert anon.get_children(one_shot, watch=True)[0].err == 0
        owner.create(persistent + "/seen", b"")
        owner.create(one_shot + "/seen", b"")
        assert events(anon, one_shot) == [(CHILDREN, persistent), (CHILDREN, one_shot)]

        assert anon.get_children(one_shot, watch=True)[0].err == 0
        for p in (persistent, one_shot):
            owner.set_acls(p, private)
        owner.create(persistent + "/hidden", b"")
        owner.create(one_shot + "/hidden", b"")
        assert events(anon, base) == []
        assert check_children(one_shot) == zkwire.NO_WATCHER, "used up by the withheld event"
        assert check_children(persistent) == 0

        owner.set_acls(persistent, readable)
        owner.delete(persistent + "/hidden")
        assert events(anon, base) == [(CHILDREN, persistent)]
    finally:
        anon.close()


@pytest.mark.timeout(60)
def test_identities_at_delivery_count(server, kazoo_factory, base):
    """The watcher's identities when the event is delivered decide: authenticating after
    the watch was set is enough."""
    owner = kazoo_factory(auth_data=[("digest", "%s:%s" % OWNER)])
    secret = base + "/secret"
    owner.create(secret, b"", acl=[make_digest_acl(*OWNER, all=True)])
    w = zkwire.connect(server.addr)
    try:
        assert w.add_watch(secret, zkwire.WATCH_PERSISTENT).err == 0
        owner.set(secret, b"1")
        assert events(w, base) == []
        assert w.auth_digest("%s:%s" % OWNER).err == 0
        owner.set(secret, b"2")
        assert events(w, secret) == [(CHANGED, secret)]
    finally:
        w.close()


# ----------------------------------------------------------------------------
# the bound on watches (ringkeeper only: ZooKeeper has none)

ringkeeper_only = pytest.mark.skipif(TARGET != "ringkeeper", reason="a ringkeeper setting")


@ringkeeper_only
@pytest.mark.timeout(60)
def test_watches_per_session_bound(server_factory, kazoo_clients):
    srv = server_factory(extra_args=["--max-watches-per-session", "3"])
    zk = kazoo_clients(srv.hosts)
    for n in "abcde":
        zk.create("/" + n, b"")
    c = zkwire.connect(srv.addr)
    try:
        assert c.exists("/a", watch=True)[0].err == 0
        assert c.get_data("/b", watch=True)[0].err == 0
        assert c.add_watch("/c", zkwire.WATCH_PERSISTENT).err == 0
        # Another kind on a path already watched is no new watch.
        assert c.get_children("/a", watch=True)[0].err == 0
        # One more path: every way of asking fails and registers nothing.
        assert c.exists("/d", watch=True)[0].err == QUOTA_EXCEEDED
        assert c.exists("/missing", watch=True)[0].err == QUOTA_EXCEEDED
        assert c.get_data("/d", watch=True)[0].err == QUOTA_EXCEEDED
        assert c.get_children("/d", watch=True)[0].err == QUOTA_EXCEEDED
        for mode in (zkwire.WATCH_PERSISTENT, zkwire.WATCH_PERSISTENT_RECURSIVE):
            assert c.add_watch("/d", mode).err == QUOTA_EXCEEDED
        assert c.call(zkwire.OP_CHECK_WATCHES,
                      zkwire.Writer().ustring("/d").int(3).bytes()).err == zkwire.NO_WATCHER
        # The same reads without a watch still work.
        assert c.exists("/d")[0].err == 0
        # The watches held before still fire.
        zk.set("/a", b"1")
        zk.set("/b", b"1")
        zk.set("/c", b"1")
        zk.set("/d", b"1")
        assert events(c, "/d") == [(CHANGED, "/a"), (CHANGED, "/b"), (CHANGED, "/c")]
        # Two one-shot watches fired and made room.
        assert c.exists("/d", watch=True)[0].err == 0

        # setWatches2 re-registration after a reconnect is bounded the same way.
        last = c.last_zxid
        c.close()
        c = resume(srv, c, last)
        rep, _ = c.set_watches(last, data=["/a", "/b"], persistent=["/c"], persistent_recursive=["/e"])
        assert rep.err == QUOTA_EXCEEDED
        zk.set("/a", b"2")
        zk.set("/c", b"2")
        zk.set("/e", b"2")
        assert events(c, "/e") == [(CHANGED, "/a"), (CHANGED, "/c")]

        # kazoo surfaces it as QuotaExceededError.
        k = kazoo_clients(srv.hosts)
        for n in "abc":
            k.exists("/" + n, watch=lambda e: None)
        with pytest.raises(QuotaExceededError):
            k.get("/d", watch=lambda e: None)
        assert k.get("/d")[0] == b"1"

        mntr = zkwire.four_letter(srv.addr, "mntr")
        refused = [l for l in mntr.splitlines() if l.startswith("rk_watches_refused\t")]
        assert refused and int(refused[0].split("\t")[1]) >= 8, mntr
    finally:
        c.close()


@ringkeeper_only
@pytest.mark.timeout(60)
def test_watches_per_member_bound(server_factory, kazoo_clients):
    srv = server_factory(extra_args=["--max-watches", "2"])
    zk = kazoo_clients(srv.hosts)
    zk.create("/a", b"")
    conns = [zkwire.connect(srv.addr) for _ in range(3)]
    try:
        assert conns[0].exists("/a", watch=True)[0].err == 0
        assert conns[1].exists("/a", watch=True)[0].err == 0
        assert conns[2].exists("/a", watch=True)[0].err == QUOTA_EXCEEDED
        assert conns[2].add_watch("/", zkwire.WATCH_PERSISTENT_RECURSIVE).err == QUOTA_EXCEEDED
        zk.set("/a", b"1")
        for c in conns[:2]:
            assert events(c, "/a") == [(CHANGED, "/a")]
        # Fired watches give their room back to the member.
        assert conns[2].add_watch("/", zkwire.WATCH_PERSISTENT_RECURSIVE).err == 0
    finally:
        for c in conns:
            c.close()
