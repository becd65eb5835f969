"""ACLs and authentication (shared/docs/zookeeper-protocol.md sections 7.6, 8)."""

import threading

import pytest
from kazoo.exceptions import (
    BadVersionError,
    InvalidACLError,
    NoAuthError,
    NoNodeError,
)
from kazoo.protocol.states import KazooState
from kazoo.security import (
    ACL,
    CREATOR_ALL_ACL,
    OPEN_ACL_UNSAFE,
    READ_ACL_UNSAFE,
    Id,
    Permissions,
    make_acl,
    make_digest_acl,
    make_digest_acl_credential,
)

import zkwire

ALICE = ("alice", "wonderland")
BOB = ("bob", "builder")


def authed(kazoo_factory, user):
    c = kazoo_factory(auth_data=[("digest", "%s:%s" % user)])
    return c


@pytest.mark.timeout(10)
def test_digest_credential_format():
    # base64(sha1("user:password")), as the server computes it
    assert make_digest_acl_credential("rkuser", "rkpass") == "rkuser:4qUOOcmElT7pbeggxNcoq/O3awQ="


@pytest.mark.timeout(30)
def test_digest_acl_read_write(kazoo_factory, base):
    alice = authed(kazoo_factory, ALICE)
    bob = authed(kazoo_factory, BOB)
    anon = kazoo_factory()
    p = base + "/secret"
    alice.create(p, b"s3cret", acl=[make_digest_acl(*ALICE, all=True)])
    assert alice.get(p)[0] == b"s3cret"
    for c in (bob, anon):
        with pytest.raises(NoAuthError):
            c.get(p)
        with pytest.raises(NoAuthError):
            c.set(p, b"x")
        with pytest.raises(NoAuthError):
            c.get_children(p)
        with pytest.raises(NoAuthError):
            c.create(p + "/child", b"")
        with pytest.raises(NoAuthError):
            c.get_acls(p)
        # exists needs no permission
        assert c.exists(p).dataLength == 6
    alice.set(p, b"new")
    alice.create(p + "/child", b"")
    # DELETE is checked on the parent
    with pytest.raises(NoAuthError):
        anon.delete(p + "/child")
    alice.delete(p + "/child")
    # the parent (base) is open, so anyone may delete the node itself
    anon.delete(p)
    assert alice.exists(p) is None


@pytest.mark.timeout(30)
def test_mixed_permissions(kazoo_factory, base):
    alice = authed(kazoo_factory, ALICE)
    anon = kazoo_factory()
    p = base + "/ro"
    acl = [make_digest_acl(*ALICE, all=True), make_acl("world", "anyone", read=True)]
    alice.create(p, b"v", acl=acl)
    assert anon.get(p)[0] == b"v"
    assert anon.get_children(p) == []
    with pytest.raises(NoAuthError):
        anon.set(p, b"x")
    with pytest.raises(NoAuthError):
        anon.create(p + "/c", b"")
    # only CREATE on the parent
    q = base + "/dropbox"
    alice.create(q, b"", acl=[make_acl("world", "anyone", create=True), make_digest_acl(*ALICE, all=True)])
    anon.create(q + "/letter", b"hi")
    with pytest.raises(NoAuthError):
        anon.get_children(q)
    with pytest.raises(NoAuthError):
        anon.delete(q + "/letter")
    assert alice.get_children(q) == ["letter"]


@pytest.mark.timeout(30)
def test_get_acl_hides_digest_without_admin(kazoo_factory, base):
    alice = authed(kazoo_factory, ALICE)
    anon = kazoo_factory()
    p = base + "/n"
    acl = [make_digest_acl(*ALICE, all=True), make_acl("world", "anyone", read=True)]
    alice.create(p, b"", acl=acl)

    full, stat = alice.get_acls(p)
    assert set((a.perms, a.id.scheme, a.id.id) for a in full) == {
        (Permissions.ALL, "digest", make_digest_acl_credential(*ALICE)),
        (Permissions.READ, "world", "anyone"),
    }
    assert stat.aversion == 0

    hidden, _ = anon.get_acls(p)
    assert set((a.perms, a.id.scheme, a.id.id) for a in hidden) == {
        (Permissions.ALL, "digest", "alice:x"),
        (Permissions.READ, "world", "anyone"),
    }

    # READ or ADMIN is enough for getACL; neither gives NoAuth
    q = base + "/adminonly"
    alice.create(q, b"", acl=[make_acl("world", "anyone", admin=True), make_digest_acl(*ALICE, all=True)])
    assert len(anon.get_acls(q)[0]) == 2
    r = base + "/writeonly"
    alice.create(r, b"", acl=[make_acl("world", "anyone", write=True)])
    with pytest.raises(NoAuthError):
        anon.get_acls(r)


@pytest.mark.timeout(30)
def test_set_acl(kazoo_factory, base):
    alice = authed(kazoo_factory, ALICE)
    anon = kazoo_factory()
    p = base + "/acl"
    _, st0 = alice.create(p, b"d", include_data=True)
    st1 = alice.set(p, b"e")
    st2 = alice.set_acls(p, [make_digest_acl(*ALICE, all=True)], version=0)
    assert st2.aversion == 1
    assert st2.version == 1
    # setACL changes no zxid field
    assert st2.mzxid == st1.mzxid and st2.czxid == st0.czxid
    with pytest.raises(BadVersionError):
        alice.set_acls(p, OPEN_ACL_UNSAFE, version=0)
    # setACL needs ADMIN
    with pytest.raises(NoAuthError):
        anon.set_acls(p, OPEN_ACL_UNSAFE)
    with pytest.raises(NoAuthError):
        anon.get(p)
    st3 = alice.set_acls(p, READ_ACL_UNSAFE + [make_digest_acl(*ALICE, all=True)], version=1)
    assert st3.aversion == 2
    assert anon.get(p)[0] == b"e"
    with pytest.raises(NoAuthError):
        anon.set(p, b"x")
    with pytest.raises(NoNodeError):
        alice.set_acls(base + "/missing", OPEN_ACL_UNSAFE)
    # duplicate entries are stored once
    alice.set_acls(p, [make_digest_acl(*ALICE, all=True)] * 3)
    assert len(alice.get_acls(p)[0]) == 1
    # without ADMIN for anyone, nobody can change the ACL again
    alice.set_acls(p, READ_ACL_UNSAFE)
    with pytest.raises(NoAuthError):
        alice.set_acls(p, OPEN_ACL_UNSAFE)


@pytest.mark.timeout(30)
def test_creator_all_acl(kazoo_factory, base):
    alice = authed(kazoo_factory, ALICE)
    anon = kazoo_factory()
    with pytest.raises(InvalidACLError):
        anon.create(base + "/c", b"", acl=CREATOR_ALL_ACL)
    alice.create(base + "/c", b"x", acl=CREATOR_ALL_ACL)
    acls, _ = alice.get_acls(base + "/c")
    assert [(a.perms, a.id.scheme, a.id.id) for a in acls] == [
        (Permissions.ALL, "digest", make_digest_acl_credential(*ALICE))
    ]
    with pytest.raises(NoAuthError):
        anon.get(base + "/c")


@pytest.mark.timeout(30)
def test_multiple_identities(kazoo_factory, base):
    both = kazoo_factory(auth_data=[("digest", "%s:%s" % ALICE), ("digest", "%s:%s" % BOB)])
    alice = authed(kazoo_factory, ALICE)
    bob = authed(kazoo_factory, BOB)
    bob.create(base + "/b", b"bob", acl=[make_digest_acl(*BOB, all=True)])
    alice.create(base + "/a", b"alice", acl=[make_digest_acl(*ALICE, all=True)])
    assert both.get(base + "/a")[0] == b"alice"
    assert both.get(base + "/b")[0] == b"bob"
    # add_auth later adds an identity, it does not replace one
    alice.add_auth("digest", "%s:%s" % BOB)
    assert alice.get(base + "/b")[0] == b"bob"
    assert alice.get(base + "/a")[0] == b"alice"


@pytest.mark.timeout(30)
def test_ip_acl(kazoo_factory, base):
    zk = kazoo_factory()
    zk.create(base + "/ip", b"local", acl=[ACL(Permissions.ALL, Id("ip", "127.0.0.1"))])
    assert zk.get(base + "/ip")[0] == b"local"
    zk.create(base + "/net", b"", acl=[ACL(Permissions.ALL, Id("ip", "127.0.0.0/8"))])
    assert zk.get(base + "/net")[0] == b""
    zk.create(base + "/other", b"", acl=[ACL(Permissions.ALL, Id("ip", "10.1.2.3"))])
    with pytest.raises(NoAuthError):
        zk.get(base + "/other")
    with pytest.raises(InvalidACLError):
        zk.create(base + "/bad", b"", acl=[ACL(Permissions.ALL, Id("ip", "not-an-ip"))])


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    "acl",
    [
        [],
        [(zkwire.PERM_ALL, "nosuchscheme", "x")],
        [(zkwire.PERM_ALL, "digest", "no-colon-here")],
        [(zkwire.PERM_ALL, "world", "someone")],
        [(zkwire.PERM_ALL, "auth", "")],  # no authenticated ids to expand
    ],
)
def test_invalid_acls(raw, base, acl):
    rep, _, _ = raw.create(base + "/x", b"", acl=acl)
    assert rep.err == zkwire.INVALID_ACL
    assert raw.exists(base + "/x")[0].err == zkwire.NO_NODE


@pytest.mark.timeout(30)
def test_auth_reply_and_who_am_i(server):
    with zkwire.connect(server.addr) as c:
        rep = c.call(zkwire.OP_WHO_AM_I)
        assert rep.err == 0
        r = zkwire.Reader(rep.body)
        ids = [(r.ustring(), r.ustring()) for _ in range(r.int())]
        assert ids == [("ip", "127.0.0.1")]

        rep = c.auth_digest("%s:%s" % ALICE)
        assert (rep.xid, rep.zxid, rep.err) == (zkwire.XID_AUTH, 0, 0)
        rep = c.call(zkwire.OP_WHO_AM_I)
        r = zkwire.Reader(rep.body)
        ids = [(r.ustring(), r.ustring()) for _ in range(r.int())]
        assert sorted(ids) == [("digest", "alice"), ("ip", "127.0.0.1")]
        c.close_session()


@pytest.mark.timeout(30)
def test_unknown_auth_scheme_fails_and_closes(server):
    with zkwire.connect(server.addr) as c:
        body = zkwire.Writer().int(0).ustring("nosuchscheme").buffer(b"x").bytes()
        c.send_frame(zkwire.request_header(zkwire.XID_AUTH, zkwire.OP_AUTH) + body)
        rep = c._next_reply(10)
        assert (rep.xid, rep.err) == (zkwire.XID_AUTH, zkwire.AUTH_FAILED)
        assert c.wait_closed(timeout=10)


@pytest.mark.timeout(40)
def test_auth_is_resent_after_reconnect(server, proxy, kazoo_factory, base):
    owner = authed(kazoo_factory, ALICE)
    owner.create(base + "/s", b"v", acl=[make_digest_acl(*ALICE, all=True)])
    zk = kazoo_factory(hosts=proxy.hosts, auth_data=[("digest", "%s:%s" % ALICE)])
    assert zk.get(base + "/s")[0] == b"v"
    reconnected = threading.Event()
    seen_suspend = threading.Event()

    def listener(state):
        if state == KazooState.SUSPENDED:
            seen_suspend.set()
        elif state == KazooState.CONNECTED and seen_suspend.is_set():
            reconnected.set()

    zk.add_listener(listener)
    proxy.cut()
    assert reconnected.wait(15)
    assert zk.get(base + "/s")[0] == b"v"
