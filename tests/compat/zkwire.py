"""A tiny, strict ZooKeeper wire client for tests that kazoo cannot express.

kazoo 2.11 has no createContainer/createTTL/addWatch, and it hides the frame
order on the socket. This module speaks jute directly over one blocking
socket so tests can send exactly the bytes they mean (including broken ones)
and observe exactly what comes back: reply headers, watch events and their
order, and whether the server closed the connection.

Reference: shared/docs/zookeeper-protocol.md (section numbers in comments).
"""

import socket
import struct
import time
from collections import namedtuple

# Opcodes (section 6).
OP_NOTIFICATION = 0
OP_CREATE = 1
OP_DELETE = 2
OP_EXISTS = 3
OP_GET_DATA = 4
OP_SET_DATA = 5
OP_GET_ACL = 6
OP_SET_ACL = 7
OP_GET_CHILDREN = 8
OP_SYNC = 9
OP_PING = 11
OP_GET_CHILDREN2 = 12
OP_CHECK = 13
OP_MULTI = 14
OP_CREATE2 = 15
OP_RECONFIG = 16
OP_CHECK_WATCHES = 17
OP_REMOVE_WATCHES = 18
OP_CREATE_CONTAINER = 19
OP_CREATE_TTL = 21
OP_MULTI_READ = 22
OP_AUTH = 100
OP_SET_WATCHES = 101
OP_GET_EPHEMERALS = 103
OP_GET_ALL_CHILDREN_NUMBER = 104
OP_ADD_WATCH = 106
OP_WHO_AM_I = 107
OP_CLOSE_SESSION = -11

# Special xids (section 4.3).
XID_NOTIFICATION = -1
XID_PING = -2
XID_AUTH = -4
XID_SET_WATCHES = -8

# Error codes (section 14).
OK = 0
RUNTIME_INCONSISTENCY = -2
MARSHALLING_ERROR = -5
UNIMPLEMENTED = -6
BAD_ARGUMENTS = -8
NO_NODE = -101
NO_AUTH = -102
BAD_VERSION = -103
NO_CHILDREN_FOR_EPHEMERALS = -108
NODE_EXISTS = -110
NOT_EMPTY = -111
INVALID_ACL = -114
AUTH_FAILED = -115
NO_WATCHER = -121
RECONFIG_DISABLED = -123

# Event types (section 12.1).
EV_NODE_CREATED = 1
EV_NODE_DELETED = 2
EV_NODE_DATA_CHANGED = 3
EV_NODE_CHILDREN_CHANGED = 4
STATE_SYNC_CONNECTED = 3

# addWatch modes.
WATCH_PERSISTENT = 0
WATCH_PERSISTENT_RECURSIVE = 1

# CreateMode flags (section 7.1).
PERSISTENT = 0
EPHEMERAL = 1
PERSISTENT_SEQUENTIAL = 2
EPHEMERAL_SEQUENTIAL = 3
CONTAINER = 4
PERSISTENT_WITH_TTL = 5
PERSISTENT_SEQUENTIAL_WITH_TTL = 6

PERM_READ, PERM_WRITE, PERM_CREATE, PERM_DELETE, PERM_ADMIN = 1, 2, 4, 8, 16
PERM_ALL = 31

JUTE_MAXBUFFER = 0xFFFFF  # largest accepted frame payload (section 1)

OPEN_ACL = [(PERM_ALL, "world", "anyone")]

Stat = namedtuple(
    "Stat",
    "czxid mzxid ctime mtime version cversion aversion ephemeralOwner "
    "dataLength numChildren pzxid",
)
Reply = namedtuple("Reply", "xid zxid err body")
Event = namedtuple("Event", "type state path")
ConnectResponse = namedtuple("ConnectResponse", "protocol timeout session_id passwd read_only raw")


def closed_by_peer(sock, timeout):
    """True once the other side of a plain socket closes it (EOF or a reset) within
    `timeout` (whatever it sends first is read and dropped); False if it stays open."""
    sock.settimeout(timeout)
    try:
        while True:
            if not sock.recv(65536):
                return True
    except socket.timeout:  # an OSError too: it must be caught first
        return False
    except OSError:
        return True


class Closed(Exception):
    """The server closed the connection (EOF) where a frame was expected."""


class ProtocolError(Exception):
    """The server sent bytes that do not parse."""


# ----------------------------------------------------------------------------
# jute encoding


class Writer:
    def __init__(self):
        self.parts = []

    def int(self, v):
        self.parts.append(struct.pack(">i", v))
        return self

    def long(self, v):
        self.parts.append(struct.pack(">q", v))
        return self

    def bool(self, v):
        self.parts.append(b"\x01" if v else b"\x00")
        return self

    def buffer(self, b):
        if b is None:
            return self.int(-1)
        self.int(len(b))
        self.parts.append(bytes(b))
        return self

    def ustring(self, s):
        if s is None:
            return self.int(-1)
        return self.buffer(s.encode("utf-8") if isinstance(s, str) else s)

    def raw(self, b):
        self.parts.append(bytes(b))
        return self

    def acl_list(self, acls):
        self.int(len(acls))
        for perms, scheme, ident in acls:
            self.int(perms).ustring(scheme).ustring(ident)
        return self

    def bytes(self):
        return b"".join(self.parts)


class Reader:
    def __init__(self, data, offset=0):
        self.data = data
        self.off = offset

    def _take(self, n):
        if n < 0 or self.off + n > len(self.data):
            raise ProtocolError("short record: need %d at %d of %d" % (n, self.off, len(self.data)))
        b = self.data[self.off : self.off + n]
        self.off += n
        return b

    def int(self):
        return struct.unpack(">i", self._take(4))[0]

    def long(self):
        return struct.unpack(">q", self._take(8))[0]

    def bool(self):
        return self._take(1) != b"\x00"

    def buffer(self):
        n = self.int()
        if n == -1:
            return None
        return self._take(n)

    def ustring(self):
        b = self.buffer()
        return None if b is None else b.decode("utf-8")

    def stat(self):
        return Stat(
            self.long(), self.long(), self.long(), self.long(), self.int(), self.int(),
            self.int(), self.long(), self.int(), self.int(), self.long(),
        )

    def string_vector(self):
        n = self.int()
        if n == -1:
            return None
        return [self.ustring() for _ in range(n)]

    def acl_list(self):
        n = self.int()
        return [(self.int(), self.ustring(), self.ustring()) for _ in range(n)]

    def remaining(self):
        return len(self.data) - self.off


def frame(payload):
    return struct.pack(">i", len(payload)) + payload


def connect_request(timeout_ms=4000, session_id=0, passwd=b"\x00" * 16, last_zxid=0,
                    read_only=False, with_read_only_byte=True):
    w = Writer().int(0).long(last_zxid).int(timeout_ms).long(session_id).buffer(passwd)
    if with_read_only_byte:
        w.bool(read_only)
    return w.bytes()


def request_header(xid, op):
    return struct.pack(">ii", xid, op)


def create_body(path, data=b"", acl=None, flags=0, ttl=None):
    w = Writer().ustring(path).buffer(data).acl_list(OPEN_ACL if acl is None else acl).int(flags)
    if ttl is not None:
        w.long(ttl)
    return w.bytes()


def path_watch_body(path, watch=False):
    return Writer().ustring(path).bool(watch).bytes()


def multi_body(ops):
    """ops: list of (opcode, body bytes). Adds the terminator (section 9.1)."""
    w = Writer()
    for op, body in ops:
        w.int(op).bool(False).int(-1).raw(body)
    w.int(-1).bool(True).int(-1)
    return w.bytes()


def parse_multi_response(body):
    """Returns a list of (type, err, payload Reader) until the done marker."""
    r = Reader(body)
    out = []
    while True:
        typ, done, err = r.int(), r.bool(), r.int()
        if done:
            return out
        if typ == -1:
            out.append((typ, r.int(), None))
        elif typ in (OP_CREATE,):
            out.append((typ, err, r.ustring()))
        elif typ in (OP_CREATE2, OP_CREATE_CONTAINER, OP_CREATE_TTL):
            out.append((typ, err, (r.ustring(), r.stat())))
        elif typ == OP_SET_DATA:
            out.append((typ, err, r.stat()))
        elif typ in (OP_DELETE, OP_CHECK):
            out.append((typ, err, None))
        elif typ == OP_GET_DATA:
            out.append((typ, err, (r.buffer(), r.stat())))
        elif typ == OP_GET_CHILDREN:
            out.append((typ, err, r.string_vector()))
        else:
            raise ProtocolError("unknown multi result type %d" % typ)


# ----------------------------------------------------------------------------
# the connection


class RawConn:
    """One blocking TCP connection speaking raw ZooKeeper frames.

    Watch events that arrive while waiting for a reply are kept, in order, in
    `self.events` and also returned by `request`, so a test can check that an
    event came before the reply that caused it.
    """

    def __init__(self, addr, timeout=10.0, source=None):
        """`source`: the local address to connect from (e.g. another 127.0.0.x)."""
        self.addr = addr
        self.sock = socket.create_connection(
            addr, timeout=timeout, source_address=(source, 0) if source else None
        )
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.timeout = timeout
        self.next_xid = 1
        self.events = []
        self.session_id = 0
        self.passwd = b"\x00" * 16
        self.negotiated_timeout = 0
        self.last_zxid = 0  # highest zxid seen in a reply, for resuming
        self._buf = b""
        self._last_send = time.monotonic()

    # -- context manager
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    # -- bytes
    def send_raw(self, data):
        self.sock.sendall(data)
        self._last_send = time.monotonic()

    def send_frame(self, payload):
        self.send_raw(frame(payload))

    def _fill(self, n, deadline):
        """Waits until at least n bytes are buffered; consumes nothing, so a
        timeout never loses part of a frame."""
        while len(self._buf) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise socket.timeout("timed out waiting for %d bytes" % n)
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(max(65536, n - len(self._buf)))
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                raise Closed("server closed the connection")
            self._buf += chunk

    def recv_frame(self, timeout=None):
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        self._fill(4, deadline)
        (n,) = struct.unpack(">i", self._buf[:4])
        if n < 0 or n > 64 * 1024 * 1024:
            raise ProtocolError("bad frame length %d" % n)
        self._fill(4 + n, deadline)
        data, self._buf = self._buf[4 : 4 + n], self._buf[4 + n :]
        return data

    def wait_closed(self, timeout=5.0):
        """True if the server closes the connection (EOF/reset) within `timeout`,
        discarding whatever frames arrive first; False if still open."""
        deadline = time.monotonic() + timeout
        try:
            while True:
                self.recv_frame(timeout=max(0.0, deadline - time.monotonic()))
        except Closed:
            return True
        except socket.timeout:
            return False

    # -- handshake
    def handshake(self, timeout_ms=4000, session_id=0, passwd=b"\x00" * 16, last_zxid=0,
                  read_only=False, with_read_only_byte=True):
        self.send_frame(connect_request(timeout_ms, session_id, passwd, last_zxid, read_only,
                                        with_read_only_byte))
        raw = self.recv_frame()
        r = Reader(raw)
        proto, to, sid, pw = r.int(), r.int(), r.long(), r.buffer()
        ro = r.bool() if r.remaining() >= 1 else None
        if to > 0:
            self.session_id, self.passwd, self.negotiated_timeout = sid, pw, to
        return ConnectResponse(proto, to, sid, pw, ro, raw)

    # -- requests
    def _ping_interval(self):
        # a third of the session timeout keeps a silent session alive (section 13)
        return max(0.1, self.negotiated_timeout / 3000.0) if self.negotiated_timeout else None

    def _maybe_ping(self):
        iv = self._ping_interval()
        if iv is not None and time.monotonic() - self._last_send >= iv:
            self.send_frame(request_header(XID_PING, OP_PING))

    def _next_reply(self, timeout):
        """Reads frames until one that is not a notification arrives (returned as
        a Reply) or `timeout` passes (socket.timeout). Notifications are queued."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise socket.timeout("no reply within %.1fs" % timeout)
            try:
                data = self.recv_frame(timeout=min(left, 0.1))
            except socket.timeout:
                self._maybe_ping()
                continue
            r = Reader(data)
            rxid, zxid, err = r.int(), r.long(), r.int()
            body = data[16:]
            if rxid != XID_NOTIFICATION and zxid > self.last_zxid:
                self.last_zxid = zxid
            if rxid == XID_NOTIFICATION:
                er = Reader(body)
                self.events.append(Event(er.int(), er.int(), er.ustring()))
                continue
            return Reply(rxid, zxid, err, body)

    def _read_until_xid(self, xid, timeout):
        deadline = time.monotonic() + timeout
        before = len(self.events)
        while True:
            rep = self._next_reply(max(0.0, deadline - time.monotonic()))
            if rep.xid == XID_PING and xid != XID_PING:
                continue  # reply to one of our keep-alive pings
            if rep.xid != xid:
                raise ProtocolError("reply xid %d while waiting for %d" % (rep.xid, xid))
            return rep, list(self.events[before:])

    def request(self, op, body=b"", xid=None, timeout=None):
        """Sends one request and returns (Reply, events that arrived before it).
        Those events also stay queued in `self.events` for `wait_event`."""
        if xid is None:
            xid = self.next_xid
            self.next_xid += 1
        self.send_frame(request_header(xid, op) + body)
        if op == OP_PING:
            xid = XID_PING
        return self._read_until_xid(xid, self.timeout if timeout is None else timeout)

    def call(self, op, body=b"", **kw):
        return self.request(op, body, **kw)[0]

    def ping(self):
        return self.call(OP_PING)

    def wait_event(self, timeout=5.0):
        """Returns the next watch event (already queued or arriving within
        `timeout`), pinging meanwhile; raises socket.timeout if none."""
        deadline = time.monotonic() + timeout
        while not self.events:
            left = deadline - time.monotonic()
            if left <= 0:
                raise socket.timeout("no watch event within %.1fs" % timeout)
            try:
                rep = self._next_reply(min(left, 0.2))
            except socket.timeout:
                continue
            if rep.xid != XID_PING:
                raise ProtocolError("unexpected reply xid %d while waiting for an event" % rep.xid)
        return self.events.pop(0)

    def drain_events(self, probe="/"):
        """Returns (and dequeues) every event caused by writes that completed
        before this call: it reads `probe` and collects the events that arrive
        before that reply (the server queues an event before the reply of any
        later read that can observe its change). Pass the last changed path."""
        self.request(OP_EXISTS, path_watch_body(probe, False))
        got = list(self.events)
        self.events.clear()
        return got

    # -- typed helpers (return Reply; decode bodies on success)
    def create(self, path, data=b"", acl=None, flags=0, op=OP_CREATE, ttl=None):
        rep = self.call(op, create_body(path, data, acl, flags, ttl))
        if rep.err == OK:
            r = Reader(rep.body)
            if op == OP_CREATE:
                return rep, r.ustring(), None
            return rep, r.ustring(), r.stat()
        return rep, None, None

    def exists(self, path, watch=False):
        rep = self.call(OP_EXISTS, path_watch_body(path, watch))
        return rep, (Reader(rep.body).stat() if rep.err == OK else None)

    def get_data(self, path, watch=False):
        rep = self.call(OP_GET_DATA, path_watch_body(path, watch))
        if rep.err == OK:
            r = Reader(rep.body)
            return rep, r.buffer(), r.stat()
        return rep, None, None

    def set_data(self, path, data, version=-1):
        rep = self.call(OP_SET_DATA, Writer().ustring(path).buffer(data).int(version).bytes())
        return rep, (Reader(rep.body).stat() if rep.err == OK else None)

    def delete(self, path, version=-1):
        return self.call(OP_DELETE, Writer().ustring(path).int(version).bytes())

    def get_children(self, path, watch=False):
        rep = self.call(OP_GET_CHILDREN, path_watch_body(path, watch))
        return rep, (Reader(rep.body).string_vector() if rep.err == OK else None)

    def add_watch(self, path, mode):
        return self.call(OP_ADD_WATCH, Writer().ustring(path).int(mode).bytes())

    def set_watches(self, relative_zxid, data=(), exist=(), child=(), persistent=None,
                    persistent_recursive=None):
        """setWatches (101), or setWatches2 (105) when persistent lists are given."""
        w = Writer().long(relative_zxid)
        for lst in (data, exist, child):
            w.int(len(lst))
            for p in lst:
                w.ustring(p)
        op = OP_SET_WATCHES
        if persistent is not None or persistent_recursive is not None:
            op = 105
            for lst in (persistent or (), persistent_recursive or ()):
                w.int(len(lst))
                for p in lst:
                    w.ustring(p)
        return self.request(op, w.bytes(), xid=XID_SET_WATCHES)

    def auth_digest(self, user_pass):
        body = Writer().int(0).ustring("digest").buffer(user_pass.encode()).bytes()
        return self.call(OP_AUTH, body, xid=XID_AUTH)

    def close_session(self):
        return self.call(OP_CLOSE_SESSION)


def connect(addr, timeout_ms=4000, **kw):
    """Opens a RawConn and completes a new-session handshake."""
    c = RawConn(addr, **kw)
    resp = c.handshake(timeout_ms=timeout_ms)
    if resp.timeout <= 0:
        c.close()
        raise ProtocolError("server refused a new session: %r" % (resp,))
    return c


def four_letter(addr, cmd, timeout=10.0):
    """Sends a four-letter word and returns the full text answer (until EOF)."""
    with socket.create_connection(addr, timeout=timeout) as s:
        s.sendall(cmd.encode() if isinstance(cmd, str) else cmd)
        chunks = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                b = s.recv(65536)
            except ConnectionResetError:
                break
            if not b:
                break
            chunks.append(b)
        return b"".join(chunks).decode("utf-8", "replace")
