"""Retried writes are idempotent (ringkeeper only: ZooKeeper cannot do this).

A client that lost its connection before it read a write's reply reconnects to the same
session and resends the write with the same xid. The server recognises the retry because the
client's lastZxidSeen (in its ConnectRequest) is older than the original write's zxid, and
answers with the original result instead of applying the write twice. A client that did see
the reply (kazoo restarts xids at every connection) is never mistaken for a retry.
"""

import pytest

import zkwire
from zkwire import OP_CREATE, create_body

pytestmark = pytest.mark.ringkeeper_only

SEQUENTIAL = 2


def _resume(server, a, last_zxid):
    b = zkwire.RawConn(server.addr)
    resp = b.handshake(session_id=a.session_id, passwd=a.passwd, last_zxid=last_zxid)
    assert resp.session_id == a.session_id
    return b


@pytest.mark.timeout(60)
def test_retry_after_lost_reply_gets_the_original_result(server, base):
    a = zkwire.connect(server.addr, timeout_ms=10000)
    try:
        seen = a.ping().zxid
        xid = 77
        # Send a sequential create and drop the connection without reading the reply.
        a.send_frame(zkwire.request_header(xid, OP_CREATE) + create_body(base + "/job-", b"x", flags=SEQUENTIAL))
        first_sock = a.sock
        # Resume on a new connection, telling the server what we had seen before the write.
        b = _resume(server, a, seen)
        first_sock.close()
        with b:
            rep = b.call(OP_CREATE, create_body(base + "/job-", b"x", flags=SEQUENTIAL), xid=xid)
            assert rep.err == 0
            path = zkwire.Reader(rep.body).ustring()
            rep_children = b.call(zkwire.OP_GET_CHILDREN, zkwire.path_watch_body(base))
            names = zkwire.Reader(rep_children.body).string_vector()
            assert names == [path.rsplit("/", 1)[1]], "the retry created a second node: %r" % names
            assert b.close_session().err == 0
    finally:
        a.close()


@pytest.mark.timeout(60)
def test_same_xid_after_seeing_the_reply_is_a_new_write(server, base):
    """kazoo restarts xids on every connection: a write that repeats the last one's xid and
    content after the client saw its reply must be applied again."""
    a = zkwire.connect(server.addr, timeout_ms=10000)
    try:
        xid = 5
        rep = a.call(OP_CREATE, create_body(base + "/seq-", b"x", flags=SEQUENTIAL), xid=xid)
        assert rep.err == 0
        first = zkwire.Reader(rep.body).ustring()
        seen = a.ping().zxid
        a.sock.close()
        with _resume(server, a, seen) as b:
            rep = b.call(OP_CREATE, create_body(base + "/seq-", b"x", flags=SEQUENTIAL), xid=xid)
            assert rep.err == 0
            second = zkwire.Reader(rep.body).ustring()
            assert second != first, "a fresh write was answered as a retry"
            assert b.close_session().err == 0
    finally:
        a.close()
