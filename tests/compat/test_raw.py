"""Bad input through raw sockets: oversized and broken frames, unknown
opcodes, requests before the handshake, invalid paths. Whatever one
connection sends, the server must keep serving everyone else
(shared/docs/zookeeper-protocol.md sections 1, 4, 6, 10, 11)."""

import random
import socket
import struct
import threading

import pytest
from kazoo.protocol.states import KazooState

import zkwire

KNOWN_OPS = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22,
             100, 101, 102, 103, 104, 105, 106, 107, -10, -11}


@pytest.fixture
def bystander(kazoo_factory, base):
    """A kazoo client that must not notice anything: it checks at the end that
    its connection never dropped and that it still reads and writes."""
    c = kazoo_factory()
    states = []
    c.add_listener(states.append)
    c.create(base + "/bystander", b"0")
    sid = c.client_id[0]
    yield c
    c.set(base + "/bystander", b"1")
    assert c.get(base + "/bystander")[0] == b"1"
    assert c.client_id[0] == sid
    assert KazooState.SUSPENDED not in states and KazooState.LOST not in states, states


def create_frame(path, data, xid=1):
    return zkwire.request_header(xid, zkwire.OP_CREATE) + zkwire.create_body(path, data)


# ----------------------------------------------------------------------------
# frame limits


@pytest.mark.timeout(60)
def test_frame_at_limit_is_accepted_and_over_is_closed(server, bystander, base):
    path = base + "/big"
    overhead = len(create_frame(path, b""))
    fits = zkwire.JUTE_MAXBUFFER - overhead
    assert len(create_frame(path, b"x" * fits)) == zkwire.JUTE_MAXBUFFER

    with zkwire.connect(server.addr) as c:
        try:
            c.send_frame(create_frame(path, b"x" * (fits + 1)))
        except OSError:
            pass  # closed while we were still sending: fine
        assert c.wait_closed(timeout=10), "a frame over jute.maxbuffer must close the connection"
    assert bystander.exists(path) is None

    data = random.Random(1).randbytes(fits)
    with zkwire.connect(server.addr) as c:
        c.send_frame(create_frame(path, data))
        rep, _ = c._read_until_xid(1, 30)
        assert rep.err == 0
        # replies are not limited: the ~1 MiB node comes back whole
        rep, got, stat = c.get_data(path)
        assert got == data and stat.dataLength == fits
        c.close_session()
    assert bystander.get(path)[1].dataLength == fits


@pytest.mark.timeout(30)
@pytest.mark.parametrize("length", [zkwire.JUTE_MAXBUFFER + 1, 0x7FFFFFFF, -1, -0x80000000])
def test_bad_frame_length_closes(server, bystander, length):
    with zkwire.connect(server.addr) as c:
        c.send_raw(struct.pack(">i", length) + b"\x00" * 16)
        assert c.wait_closed(timeout=10)


@pytest.mark.timeout(30)
def test_over_limit_length_before_handshake_closes(server, bystander):
    with zkwire.RawConn(server.addr) as c:
        c.send_raw(struct.pack(">i", zkwire.JUTE_MAXBUFFER + 1))
        assert c.wait_closed(timeout=10)


@pytest.mark.timeout(30)
def test_unknown_four_letters_are_a_huge_length(server, bystander):
    with zkwire.RawConn(server.addr) as c:
        c.send_raw(b"xxxx")
        assert c.wait_closed(timeout=10)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("payload", [b"", b"\x00", b"\x00\x00\x01", b"\x00\x00\x00\x01\x00\x00\x00"])
def test_frame_shorter_than_header_closes(server, bystander, payload):
    with zkwire.connect(server.addr) as c:
        c.send_frame(payload)
        assert c.wait_closed(timeout=10)


# ----------------------------------------------------------------------------
# undecodable bodies keep the connection; unknown opcodes close it


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    "name,body_op,body",
    [
        ("getData header only", zkwire.OP_GET_DATA, b""),
        ("create truncated", zkwire.OP_CREATE, b"\x00\x00\x00\x05/ab"),
        ("string length past the frame", zkwire.OP_GET_DATA, b"\x7f\xff\xff\xff/ab\x00"),
        ("negative string length", zkwire.OP_GET_DATA, b"\xff\xff\xff\xfe/ab\x00"),
        ("null create path", zkwire.OP_CREATE, zkwire.create_body(None)),
        ("setData truncated", zkwire.OP_SET_DATA, zkwire.Writer().ustring("/x").bytes()),
        ("multi truncated", zkwire.OP_MULTI, b"\x00\x00\x00\x01\x00"),
        ("acl count huge", zkwire.OP_CREATE, zkwire.Writer().ustring("/x").buffer(b"").int(0x7FFFFFFF).bytes()),
    ],
)
def test_undecodable_body_is_marshalling_error(server, bystander, base, name, body_op, body):
    with zkwire.connect(server.addr) as c:
        rep = c.call(body_op, body)
        assert rep.err == zkwire.MARSHALLING_ERROR, name
        assert rep.body == b""
        # the connection stays open and usable
        assert c.exists(base)[0].err == 0
        c.close_session()


@pytest.mark.timeout(30)
@pytest.mark.parametrize("op", [999, 10, 0, 23, 99, 108, -3, 0x7FFFFFFF])
def test_unknown_opcode_unimplemented_then_close(server, bystander, op):
    c = zkwire.connect(server.addr)
    sid, pw = c.session_id, c.passwd
    try:
        c.send_frame(zkwire.request_header(7, op))
        reply = c.recv_frame(timeout=10)
        r = zkwire.Reader(reply)
        assert (r.int(), r.long(), r.int()) == (7, -1, zkwire.UNIMPLEMENTED)
        assert r.remaining() == 0
        assert c.wait_closed(timeout=10)
    finally:
        c.close()
    # only the connection was closed, not the session
    with zkwire.RawConn(server.addr) as again:
        assert again.handshake(session_id=sid, passwd=pw).session_id == sid
        again.close_session()


@pytest.mark.timeout(60)
def test_random_garbage_frames(server, bystander):
    rnd = random.Random(20240601)
    for i in range(40):
        n = rnd.randrange(8, 200)
        data = bytes(rnd.randrange(256) for _ in range(n))
        xid, op = struct.unpack(">ii", data[:8])
        if op in KNOWN_OPS or xid in (-1, -2, -4, -8):
            continue
        with zkwire.connect(server.addr) as c:
            c.send_frame(data)
            reply = c.recv_frame(timeout=10)
            r = zkwire.Reader(reply)
            assert (r.int(), r.long(), r.int()) == (xid, -1, zkwire.UNIMPLEMENTED), data.hex()
            assert c.wait_closed(timeout=10)


@pytest.mark.timeout(60)
def test_random_garbage_stream_after_handshake(server, bystander):
    """Unframed noise: whatever the server makes of it, it must not take
    anyone else down; each connection ends up closed or still answering."""
    rnd = random.Random(99)
    for i in range(20):
        c = zkwire.connect(server.addr)
        try:
            noise = bytes(rnd.randrange(256) for _ in range(rnd.randrange(1, 4096)))
            try:
                c.send_raw(noise)
            except OSError:
                continue
            c.wait_closed(timeout=1)
        finally:
            c.close()


@pytest.mark.timeout(30)
def test_request_before_handshake_is_closed(server, bystander, base):
    with zkwire.RawConn(server.addr) as c:
        c.send_frame(zkwire.request_header(1, zkwire.OP_GET_DATA) + zkwire.path_watch_body(base))
        assert c.wait_closed(timeout=15)
    with zkwire.RawConn(server.addr) as c:
        c.send_frame(zkwire.request_header(1, zkwire.OP_PING))
        assert c.wait_closed(timeout=15)


@pytest.mark.timeout(30)
def test_many_connections_dropped_mid_frame(server, bystander):
    for i in range(30):
        s = socket.create_connection(server.addr)
        s.sendall(zkwire.frame(zkwire.connect_request())[: (i % 40) + 1])
        s.close()


@pytest.mark.timeout(60)
def test_slow_writer_frame_in_pieces(server, base):
    """A frame may arrive in many small TCP segments."""
    with zkwire.connect(server.addr) as c:
        payload = zkwire.frame(create_frame(base + "/slow", b"abcdef" * 100))
        for i in range(0, len(payload), 7):
            c.send_raw(payload[i : i + 7])
        rep, _ = c._read_until_xid(1, 10)
        assert rep.err == 0
        c.close_session()


@pytest.mark.timeout(30)
def test_pipelined_requests_answered_in_order(server, base):
    with zkwire.connect(server.addr) as c:
        frames = []
        for i in range(1, 101):
            if i % 2:
                frames.append(zkwire.frame(create_frame("%s/p%03d" % (base, i), b"", xid=i)))
            else:
                frames.append(zkwire.frame(zkwire.request_header(i, zkwire.OP_EXISTS)
                                           + zkwire.path_watch_body("%s/p%03d" % (base, i - 1))))
        c.send_raw(b"".join(frames))
        for i in range(1, 101):
            rep = c._next_reply(10)
            assert rep.xid == i
            assert rep.err == 0
        c.close_session()


# ----------------------------------------------------------------------------
# paths


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    "suffix,err",
    [
        ("/", zkwire.BAD_ARGUMENTS),  # trailing slash, not sequential
        ("/.", zkwire.BAD_ARGUMENTS),
        ("/..", zkwire.BAD_ARGUMENTS),
        ("/a\x00b", zkwire.BAD_ARGUMENTS),
        ("/\x01", zkwire.BAD_ARGUMENTS),
        ("/x\x1f", zkwire.BAD_ARGUMENTS),
        ("/\x7f", zkwire.BAD_ARGUMENTS),
        ("/\u0085", zkwire.BAD_ARGUMENTS),
        ("/\ue000", zkwire.BAD_ARGUMENTS),
        ("/\uf8ff", zkwire.BAD_ARGUMENTS),
        ("/\ufff0", zkwire.BAD_ARGUMENTS),
        ("/\ufffd", zkwire.BAD_ARGUMENTS),
        # outside the BMP: Java sees a surrogate pair, which is forbidden
        ("/\U0001F600", zkwire.BAD_ARGUMENTS),
        ("//x", zkwire.NO_NODE),  # the parent "<base>/" does not exist
        ("/./x", zkwire.NO_NODE),
        ("/a.b", zkwire.OK),
        ("/..x", zkwire.OK),
        ("/\u00e9\u6f22", zkwire.OK),
        ("/\uf900", zkwire.OK),
    ],
)
def test_create_path_validation(raw, base, suffix, err):
    rep, path, _ = raw.create(base + suffix, b"")
    assert rep.err == err, repr(suffix)
    if err == zkwire.OK:
        assert path == base + suffix


@pytest.mark.timeout(30)
@pytest.mark.parametrize("path,err", [("", zkwire.BAD_ARGUMENTS), ("noslash", zkwire.BAD_ARGUMENTS),
                                      ("x/y", zkwire.NO_NODE)])  # has a "/": the parent "x" is missing
def test_create_relative_path(raw, path, err):
    rep, _, _ = raw.create(path, b"")
    assert rep.err == err


@pytest.mark.timeout(30)
def test_write_ops_validate_paths(raw, base):
    assert raw.set_data("bad", b"")[0].err == zkwire.BAD_ARGUMENTS
    assert raw.set_data(base + "/", b"")[0].err == zkwire.BAD_ARGUMENTS
    assert raw.delete("bad").err == zkwire.BAD_ARGUMENTS
    assert raw.delete("/").err == zkwire.BAD_ARGUMENTS
    assert raw.exists(base + "/a\x00b")[0].err == zkwire.BAD_ARGUMENTS


@pytest.mark.timeout(30)
def test_read_ops_do_not_validate(raw, base):
    assert raw.get_data("bad path")[0].err == zkwire.NO_NODE
    assert raw.exists("no-slash")[0].err == zkwire.NO_NODE
    assert raw.get_children(base + "/")[0].err == zkwire.NO_NODE
    # "" is the root for reads
    rep, kids = raw.get_children("")
    assert rep.err == 0 and "zookeeper" in kids
    rep, data, stat = raw.get_data("")
    assert rep.err == 0 and stat.czxid == 0


@pytest.mark.timeout(30)
def test_sequential_path_may_end_in_slash(raw, base):
    rep, path, _ = raw.create(base + "/", b"", flags=zkwire.PERSISTENT_SEQUENTIAL)
    assert rep.err == 0 and path == base + "/0000000000"


# ----------------------------------------------------------------------------
# header details


@pytest.mark.timeout(30)
def test_ping_reply_always_xid_minus_2(raw):
    raw.send_frame(zkwire.request_header(5, zkwire.OP_PING))
    rep = raw._next_reply(10)
    assert (rep.xid, rep.err, rep.body) == (zkwire.XID_PING, 0, b"")


@pytest.mark.timeout(30)
@pytest.mark.parametrize("xid", [0, 12345, -77, 0x7FFFFFFF])
def test_any_xid_is_echoed(raw, xid):
    rep = raw.call(zkwire.OP_EXISTS, zkwire.path_watch_body("/"), xid=xid)
    assert rep.xid == xid and rep.err == 0


@pytest.mark.timeout(30)
def test_zxid_accounting(raw, base):
    """Writes report their own zxid; failed writes consume one too; reads
    report the current zxid without consuming one (section 4.4)."""
    rep1, _, _ = raw.create(base + "/z", b"")
    rep_read = raw.exists(base + "/z")[0]
    rep_fail, _, _ = raw.create(base + "/z", b"")
    assert rep_fail.err == zkwire.NODE_EXISTS
    rep2, _, _ = raw.create(base + "/z2", b"")
    assert rep_read.zxid >= rep1.zxid
    assert rep_fail.zxid > rep1.zxid
    assert rep2.zxid > rep_fail.zxid
    stat = raw.exists(base + "/z2")[1]
    assert stat.czxid == rep2.zxid


@pytest.mark.timeout(60)
def test_concurrent_raw_clients(server, base):
    """Many sessions writing at once through raw sockets, each in order."""
    errors = []

    def worker(i):
        try:
            with zkwire.connect(server.addr) as c:
                for k in range(20):
                    rep, path, _ = c.create("%s/w%d-%02d" % (base, i, k), b"%d" % k)
                    assert rep.err == 0
                    rep, data, _ = c.get_data(path)
                    assert data == b"%d" % k
                c.close_session()
        except BaseException as e:
            errors.append(e)

    ts = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    [t.start() for t in ts]
    [t.join(60) for t in ts]
    assert not errors, errors
    with zkwire.connect(server.addr) as c:
        assert len(c.get_children(base)[1]) == 160
        c.close_session()


@pytest.mark.timeout(60)
def test_max_client_cnxns_per_address(fresh_server):
    """maxClientCnxns (default 60) bounds connections from one address; the next one is
    closed at once, and the others keep working."""
    conns = []
    try:
        for _ in range(60):
            conns.append(zkwire.connect(fresh_server.addr))
        # Refused at any point: the connect itself, the handshake, or a close right after.
        try:
            extra = zkwire.RawConn(fresh_server.addr)
        except OSError:
            extra = None
        if extra is not None:
            try:
                try:
                    extra.handshake()
                    refused = False
                except (zkwire.Closed, OSError):
                    refused = True
                assert refused or extra.wait_closed(timeout=5), "61st connection was served"
            finally:
                extra.close()
        assert conns[0].ping().err == 0
    finally:
        for c in conns:
            c.close()
