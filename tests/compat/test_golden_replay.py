"""Replays the golden wire vectors captured from Apache ZooKeeper 3.8.0 against ringkeeper.

The vectors are in tests/testdata/zk-wire/vectors.jsonl (read its
README.md first): 127 request/response exchanges in capture order, grouped in three phases.
Each phase runs against its own fresh ringkeeper with the settings the capture used:

    main         tickTime 2000, every four-letter word allowed
    ttl          the same plus --ttl-enabled
    default-4lw  tickTime 2000 and ringkeeper's own default whitelist (see below)

For every vector, in order: the socket named by `conn` is opened or reused (one label = one
socket), `request_hex` is sent (after patching the spans the README lists as variable:
sessionId/passwd of a resumed session, lastZxidSeen, setWatches' relativeZxid), frames are read
up to the reply with the request's xid (watch notifications before it included), and the bytes
are compared with `response_hex` once the documented variable spans (session, zxid, time) are
zeroed on both sides. Two refinements of that recipe:

* a masked span whose captured value is all 0x00 or all 0xff is a constant, not a run-dependent
  value (README: auth replies carry zxid 0, the unknown-opcode reply zxid -1, /zookeeper/config's
  Stat is all zeros), so it is compared as is;
* the lists the README calls hash-set ordered (getChildren/getChildren2 children, getEphemerals,
  multiRead children, whoAmI entries) are compared as sets: their elements are sorted in the byte
  image on both sides (element bytes and total length must still match).

`server_closed` is checked too: an expected close must come (EOF) within 2.5 s; a connection
that must stay open is probed for EOF for a short moment (and any later vector on it would
notice a close anyway). Masked session ids are checked semantically instead: a resumed session
must come back with the id and password ringkeeper issued for it, and an ephemeralOwner must be
the ringkeeper id of the session that owns the node in the capture.

The capture also did a few things it recorded no vector for; they are replayed off the record
(OFF_RECORD_SESSIONS, and the steps in `_before`): handshakes of the sockets whose first vector
is not a ConnectRequest, /seqtest's create + child create + delete (A's xids 50-52), session G
with its ephemeral /rk/g-eph watched by B, session K before K2 resumes it, and the ~12 s wait for
session C (4000 ms) to expire before C2.

Vectors that cannot be compared byte for byte are listed in SKIP with the reason; they are still
sent, so that the state stays that of the capture, and where a deliberate ringkeeper choice
replaces ZooKeeper's behaviour, a separate test asserts ringkeeper's documented behaviour.
"""

import json
import select
import socket
import struct
import time

import pytest

import harness
import zkwire

pytestmark = pytest.mark.ringkeeper_only

GOLDEN_DIR = harness.REPO_ROOT / "tests" / "testdata" / "zk-wire"
VECTORS_PATH = GOLDEN_DIR / "vectors.jsonl"

VECTORS = [json.loads(line) for line in VECTORS_PATH.read_text().splitlines() if line.strip()]
PHASES = list(dict.fromkeys(v["phase"] for v in VECTORS))

TICK_MS = 2000  # the capture's tickTime (harness.TICK_MS is 200: not used here)
PHASE_FLAGS = {
    "main": ["--four-letter-whitelist", "*"],
    "ttl": ["--four-letter-whitelist", "*", "--ttl-enabled"],
    # no --four-letter-whitelist: ringkeeper's default, which differs from ZooKeeper's on purpose
    "default-4lw": [],
}

READ_TIMEOUT_S = 5.0  # for any one reply
CLOSE_WAIT_S = 2.5  # the capture's "EOF seen within about 2 s", plus slack
OPEN_PROBE_S = 0.03  # how long an expected-open connection is watched for an early EOF
EXPIRY_WAIT_S = 12.0  # C2 was sent ~12 s after C (negotiated 4000 ms) disconnected

# Socket labels that resume the session of another label (README: "D2/D3/C2/K2").
RESUMES = {"D2": "D", "D3": "D", "C2": "C", "K2": "K"}

# Sockets whose first vector is not a ConnectRequest: the capture opened their session off the
# record (the capture's session ids ...0005 to ...0009 show E, F, G, H, K were created in that
# order). Value: requested session timeout (K's is the one K2 asks for; the others are unobserved).
OFF_RECORD_SESSIONS = {"E": 30000, "F": 30000, "G": 30000, "H": 30000, "K": 30000}

# Vectors whose golden bytes are not compared. Each is still sent during the replay.
SKIP = {
    "check_standalone": "ZooKeeper 3.8.0 sends no reply to a top-level check (server-side NPE); "
    "ringkeeper deliberately answers err=0 with no body, see test_check_standalone_replies_ok",
    "fourletter_ruok_not_whitelisted": "ringkeeper's default 4lw whitelist allows ruok on purpose "
    "(README, docs/CONFIGURATION.md); see test_default_whitelist_shared_words",
}

# Vectors that currently fail for a known server bug: {name: reason}. Empty on purpose: a
# failing vector must be reported, not hidden.
XFAIL = {}

# Opcodes whose reply holds lists whose order is a Java hash-set artifact (README).
SET_LIKE_OPS = {
    zkwire.OP_GET_CHILDREN,
    zkwire.OP_GET_CHILDREN2,
    zkwire.OP_GET_EPHEMERALS,
    zkwire.OP_MULTI_READ,
    zkwire.OP_WHO_AM_I,
}


def _original_sessions():
    """{label: (sessionId, passwd)} of the sessions in the capture, from the ConnectResponses."""
    out = {}
    for v in VECTORS:
        rsp = bytes.fromhex(v["response_hex"])
        if _is_connect_request(bytes.fromhex(v["request_hex"])) and len(rsp) >= 40:
            timeout, sid = struct.unpack(">iq", rsp[8:20])
            if timeout > 0:
                out.setdefault(RESUMES.get(v["conn"], v["conn"]), (sid, rsp[24:40]))
    return out


def _is_connect_request(req):
    # a ConnectRequest frame: 44 or 45 payload bytes, protocolVersion 0
    return len(req) in (48, 49) and struct.unpack(">ii", req[:8]) in ((44, 0), (45, 0))


ORIGINAL_SESSIONS = _original_sessions()
ORIGINAL_LABEL_OF_SID = {sid: label for label, (sid, _) in ORIGINAL_SESSIONS.items()}


# ----------------------------------------------------------------------------
# decoding, masking, set-like canonical form


def split_frames(data):
    """Payloads of the length-prefixed frames in `data`; a broken tail is returned as bytes."""
    out, off = [], 0
    while off < len(data):
        if off + 4 > len(data):
            out.append(("tail", data[off:]))
            break
        (n,) = struct.unpack(">i", data[off : off + 4])
        if n < 0 or off + 4 + n > len(data):
            out.append(("tail", data[off:]))
            break
        out.append(data[off + 4 : off + 4 + n])
        off += 4 + n
    return out


def _decode_body(op, body):
    r = zkwire.Reader(body)
    if op in (zkwire.OP_CREATE, zkwire.OP_SYNC):
        res = {"path": r.ustring()}
    elif op in (zkwire.OP_CREATE2, zkwire.OP_CREATE_CONTAINER, zkwire.OP_CREATE_TTL):
        res = {"path": r.ustring(), "stat": r.stat()}
    elif op in (zkwire.OP_EXISTS, zkwire.OP_SET_DATA, zkwire.OP_SET_ACL):
        res = {"stat": r.stat()}
    elif op == zkwire.OP_GET_DATA:
        res = {"data": r.buffer(), "stat": r.stat()}
    elif op in (zkwire.OP_GET_CHILDREN, zkwire.OP_GET_EPHEMERALS):
        res = {"list": r.string_vector()}
    elif op == zkwire.OP_GET_CHILDREN2:
        res = {"children": r.string_vector(), "stat": r.stat()}
    elif op == zkwire.OP_GET_ACL:
        res = {"acl": r.acl_list(), "stat": r.stat()}
    elif op in (zkwire.OP_MULTI, zkwire.OP_MULTI_READ):
        return {"results": [(t, e, p) for t, e, p in zkwire.parse_multi_response(body)]}
    elif op == zkwire.OP_WHO_AM_I:
        res = {"clientInfo": [(r.ustring(), r.ustring()) for _ in range(r.int())]}
    elif op in (zkwire.OP_GET_ALL_CHILDREN_NUMBER, zkwire.OP_ADD_WATCH):
        res = {"int": r.int()}
    else:
        return {"body": body.hex()}
    if r.remaining():
        res["trailing"] = body[r.off :].hex()
    return res


def describe(data, op=None, connect=False):
    """A readable decoding of a response byte string (for failure messages)."""
    if not data:
        return "(nothing)"
    if op is None and not connect and isinstance(split_frames(data)[0], tuple):
        return "raw %r" % data  # a four-letter-word answer, not frames
    parts = []
    for i, p in enumerate(split_frames(data)):
        if isinstance(p, tuple):
            parts.append("broken tail %s" % p[1].hex())
            continue
        try:
            if connect and i == 0:
                r = zkwire.Reader(p)
                proto, to, sid, pw = r.int(), r.int(), r.long(), r.buffer()
                ro = r.bool() if r.remaining() else "absent"
                parts.append(
                    "ConnectResponse(proto=%d timeOut=%d sessionId=%#x passwd=%s readOnly=%s%s)"
                    % (proto, to, sid, pw.hex(), ro, " +%d bytes" % r.remaining() if r.remaining() else "")
                )
                continue
            xid, zxid, err = struct.unpack(">iqi", p[:16])
            body = p[16:]
            if xid == zkwire.XID_NOTIFICATION:
                er = zkwire.Reader(body)
                parts.append("Event(type=%d state=%d path=%r) zxid=%d" % (er.int(), er.int(), er.ustring(), zxid))
            else:
                dec = _decode_body(op, body) if (body and err == 0) else (body.hex() if body else "")
                parts.append("Reply(xid=%d zxid=%d err=%d body=%s)" % (xid, zxid, err, dec))
        except Exception:  # noqa: BLE001 - a failure message must never crash
            parts.append("undecodable frame %s" % p.hex())
    return "; ".join(parts)


def apply_masks(data, spans):
    """Zeroes the variable spans, except those whose captured value is a constant sentinel."""
    b = bytearray(data)
    for s in spans:
        lo, hi = s["offset"], s["offset"] + s["length"]
        if hi <= len(b):
            b[lo:hi] = bytes(hi - lo)
    return bytes(b)


def maskable_spans(expected, spans):
    out = []
    for s in spans:
        val = expected[s["offset"] : s["offset"] + s["length"]]
        if val and (val == bytes(len(val)) or val == b"\xff" * len(val)):
            continue  # 0 / -1: a constant, compared as is
        out.append(s)
    return out


def _vector_chunks(data, off, elem):
    """(start, end, [element byte chunks]) of a jute vector at `off`; elem(off) -> end of element."""
    (n,) = struct.unpack(">i", data[off : off + 4])
    pos = off + 4
    chunks = []
    for _ in range(max(n, 0)):
        end = elem(data, pos)
        chunks.append(data[pos:end])
        pos = end
    return off + 4, pos, chunks


def _ustring_end(data, pos):
    (n,) = struct.unpack(">i", data[pos : pos + 4])
    end = pos + 4 + max(n, 0)
    if end > len(data):
        raise ValueError("short")
    return end


def _pair_end(data, pos):
    return _ustring_end(data, _ustring_end(data, pos))


def _sorted_vector(data, off, elem):
    start, end, chunks = _vector_chunks(data, off, elem)
    return data[:start] + b"".join(sorted(chunks)) + data[end:], end


def canonical_reply(payload, op):
    """Sorts the set-like lists of a successful reply payload in place (same length)."""
    try:
        if len(payload) < 16 or struct.unpack(">i", payload[12:16])[0] != 0:
            return payload
        if op in (zkwire.OP_GET_CHILDREN, zkwire.OP_GET_CHILDREN2, zkwire.OP_GET_EPHEMERALS):
            return _sorted_vector(payload, 16, _ustring_end)[0]
        if op == zkwire.OP_WHO_AM_I:
            return _sorted_vector(payload, 16, _pair_end)[0]
        if op == zkwire.OP_MULTI_READ:
            pos = 16
            while True:
                typ, done = struct.unpack(">ib", payload[pos : pos + 5])
                pos += 9
                if done:
                    return payload
                if typ == zkwire.OP_GET_CHILDREN:
                    payload, pos = _sorted_vector(payload, pos, _ustring_end)
                elif typ == zkwire.OP_GET_DATA:
                    (n,) = struct.unpack(">i", payload[pos : pos + 4])
                    pos += 4 + max(n, 0) + 68
                elif typ == -1:
                    pos += 4
                else:
                    return payload
    except (struct.error, ValueError):
        pass
    return payload


def canonical(data, op, reply_xid):
    """Canonical form of a whole response: the reply frame's set-like lists sorted."""
    if op not in SET_LIKE_OPS:
        return data
    out = []
    for p in split_frames(data):
        if isinstance(p, tuple):
            out.append(p[1])
            continue
        if len(p) >= 4 and struct.unpack(">i", p[:4])[0] == reply_xid:
            p = canonical_reply(p, op)
        out.append(zkwire.frame(p))
    return b"".join(out)


# ----------------------------------------------------------------------------
# the replay


class SetupError(Exception):
    """An off-the-record step failed: the rest of the phase is not meaningful."""


class PhaseServer(harness.Server):
    """harness.Server with the capture's settings (tickTime 2000, per-phase flags)."""

    def __init__(self, phase):
        super().__init__("golden-" + phase, ttl_enabled=(phase == "ttl"))
        self.phase = phase

    def command(self):
        return [
            str(harness.ringkeeper_binary()),
            "serve",
            "--client-addr", "127.0.0.1:%d" % self.port,
            "--data-dir", str(self.data_dir),
            "--tick-time", str(TICK_MS),
            "--shards", "2",
        ] + PHASE_FLAGS[self.phase]


class Record:
    """What happened to one vector: the bytes read and the problems found."""

    def __init__(self, v):
        self.v = v
        self.sent = b""
        self.actual = b""
        self.closed = False
        self.problems = []


class Replay:
    def __init__(self, phase, server):
        self.phase = phase
        self.server = server
        self.addr = server.addr
        self.conns = {}  # label -> zkwire.RawConn
        self.pending = {}  # label -> payloads read off the record, not yet consumed
        self.sessions = {}  # label -> (sessionId, passwd) that ringkeeper issued
        self.closed_at = {}  # label -> monotonic time we closed it
        self.max_zxid = 0
        self.records = {}

    # -- sockets

    def conn(self, label):
        c = self.conns.get(label)
        if c is None:
            c = zkwire.RawConn(self.addr, timeout=READ_TIMEOUT_S)
            self.conns[label] = c
            self.pending[label] = []
            if label in OFF_RECORD_SESSIONS:
                self.handshake(label, OFF_RECORD_SESSIONS[label])
        return c

    def close(self, label):
        c = self.conns.get(label)
        if c is not None:
            c.close()
            self.closed_at[label] = time.monotonic()

    def close_all(self):
        for c in self.conns.values():
            c.close()

    def next_payload(self, label, timeout):
        if self.pending[label]:
            return self.pending[label].pop(0)
        return self.conns[label].recv_frame(timeout=timeout)

    def note_zxid(self, payload):
        if len(payload) >= 12:
            xid, zxid = struct.unpack(">iq", payload[:12])
            if xid != zkwire.XID_NOTIFICATION and zxid > self.max_zxid:
                self.max_zxid = zxid

    def read_until_xid(self, label, xid, timeout=READ_TIMEOUT_S):
        """Payloads up to and including the reply with `xid`; (payloads, closed, error)."""
        deadline = time.monotonic() + timeout
        got = []
        while True:
            try:
                p = self.next_payload(label, max(0.0, deadline - time.monotonic()))
            except zkwire.Closed:
                return got, True, "connection closed before the reply with xid %d" % xid
            except socket.timeout:
                return got, False, "no reply with xid %d within %.1fs" % (xid, timeout)
            except zkwire.ProtocolError as e:
                return got, False, "bad frame: %s" % e
            got.append(p)
            self.note_zxid(p)
            rxid = struct.unpack(">i", p[:4])[0] if len(p) >= 4 else None
            if rxid == xid:
                return got, False, None
            if rxid != zkwire.XID_NOTIFICATION:
                return got, False, "reply xid %s while waiting for %d" % (rxid, xid)

    def read_until_eof(self, label, timeout):
        """Raw bytes until EOF; (bytes, eof_seen)."""
        c = self.conns[label]
        data = b"".join(zkwire.frame(p) for p in self.pending[label]) + c._buf
        self.pending[label], c._buf = [], b""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return data, False
            c.sock.settimeout(left)
            try:
                chunk = c.sock.recv(65536)
            except socket.timeout:
                return data, False
            except (ConnectionResetError, BrokenPipeError):
                return data, True
            if not chunk:
                return data, True
            data += chunk

    def probe_closed(self, label, wait):
        """True if EOF is already visible on the socket (nothing buffered before it)."""
        c = self.conns[label]
        if self.pending[label] or c._buf:
            return False
        try:
            ready, _, _ = select.select([c.sock], [], [], wait)
            if not ready:
                return False
            return c.sock.recv(1, socket.MSG_PEEK) == b""
        except (ConnectionResetError, BrokenPipeError):
            return True
        except OSError:
            return False

    # -- off-the-record helpers

    def handshake(self, label, timeout_ms):
        c = self.conns[label]
        c.send_frame(zkwire.connect_request(timeout_ms=timeout_ms))
        r = zkwire.Reader(c.recv_frame())
        _, to, sid, pw = r.int(), r.int(), r.long(), r.buffer()
        if to <= 0:
            raise SetupError("off-record handshake of %s refused" % label)
        self.sessions[label] = (sid, pw)

    def call(self, label, xid, op, body=b"", want_err=0):
        c = self.conn(label)
        c.send_frame(zkwire.request_header(xid, op) + body)
        got, _closed, err = self.read_until_xid(label, xid)
        if err:
            raise SetupError("off-record op %d on %s: %s" % (op, label, err))
        # notifications that came first belong to a later vector of this socket
        self.pending[label].extend(got[:-1])
        rep = got[-1]
        rerr = struct.unpack(">i", rep[12:16])[0]
        if want_err is not None and rerr != want_err:
            raise SetupError("off-record op %d on %s: err %d, expected %d" % (op, label, rerr, want_err))
        return rep

    def current_zxid(self, label):
        rep = self.call(label, zkwire.XID_PING, zkwire.OP_PING)
        return struct.unpack(">q", rep[4:12])[0]

    # -- steps the capture took without recording a vector

    def _before(self, v):
        name = v["name"]
        if name == "connect_timeout_clamped_to_max":
            # C's only vector is done: it disconnects now, so that C2 finds it expired
            self.close("C")
        elif name == "cversion_after_create_delete":
            # A's xids 50-52: create /seqtest (empty data), create one child, delete it
            w = zkwire.Writer
            self.call("A", 50, zkwire.OP_CREATE, zkwire.create_body("/seqtest", b""))
            self.call("A", 51, zkwire.OP_CREATE, zkwire.create_body("/seqtest/x", b""))
            self.call("A", 52, zkwire.OP_DELETE, w().ustring("/seqtest/x").int(-1).bytes())
        elif name == "watch_event_ephemeral_deleted_on_close":
            # session G owns /rk/g-eph, B watches it, G closes its session
            self.conn("G")
            self.call("G", 1, zkwire.OP_CREATE,
                      zkwire.create_body("/rk/g-eph", b"", flags=zkwire.EPHEMERAL))
            self.call("B", 11, zkwire.OP_EXISTS, zkwire.path_watch_body("/rk/g-eph", True))
            self.call("G", 2, zkwire.OP_CLOSE_SESSION)
        elif name == "reconnect_while_old_connection_open":
            self.conn("K")
        elif name == "reconnect_expired_session":
            if "C" not in self.closed_at:
                self.close("C")
            left = self.closed_at["C"] + EXPIRY_WAIT_S - time.monotonic()
            if left > 0:
                time.sleep(left)

    def _after(self, v, rec):
        if v["name"] == "reconnect_while_old_connection_open":
            # notes: "The server closed the OLD connection: yes."
            data, eof = self.read_until_eof("K", CLOSE_WAIT_S)
            if not eof:
                rec.problems.append("the old connection of session K was not closed within %.1fs" % CLOSE_WAIT_S)
            if data:
                rec.problems.append("the old connection of session K got bytes: %s" % data.hex())

    # -- one vector

    def patch_request(self, v, label):
        req = bytearray(bytes.fromhex(v["request_hex"]))
        base = RESUMES.get(label, label)
        for s in v["request_variable"]:
            lo, hi = s["offset"], s["offset"] + s["length"]
            if s["field"] == "sessionId":
                req[lo:hi] = struct.pack(">q", self.sessions[base][0])
            elif s["field"] == "passwd":
                # patched only where the capture sent the session's real password (D2 sends a
                # deliberately wrong one, which stays wrong)
                if bytes(req[lo:hi]) == ORIGINAL_SESSIONS[base][1]:
                    req[lo:hi] = self.sessions[base][1]
            elif s["field"] == "lastZxidSeen":
                req[lo:hi] = struct.pack(">q", self.max_zxid)  # "a recent zxid"
            elif s["field"] == "relativeZxid":
                req[lo:hi] = struct.pack(">q", self.current_zxid(label))  # "<current zxid>"
            else:
                raise SetupError("unknown request span %r" % s)
        return bytes(req)

    def run_vector(self, v):
        rec = Record(v)
        self.records[v["name"]] = rec
        label = v["conn"]
        self._before(v)
        first_use = label not in self.conns
        self.conn(label)
        req = self.patch_request(v, label)
        rec.sent = req
        expected = bytes.fromhex(v["response_hex"])
        is_connect = first_use and _is_connect_request(req)

        if req:
            try:
                self.conns[label].send_raw(req)
            except OSError as e:
                rec.problems.append("send failed: %r" % e)

        if not req:  # a frame the server pushes on its own
            want = len(split_frames(expected))
            got = []
            for _ in range(want):
                try:
                    got.append(self.next_payload(label, READ_TIMEOUT_S))
                except zkwire.Closed:
                    rec.closed = True
                    break
                except socket.timeout:
                    rec.problems.append("no pushed frame within %.1fs" % READ_TIMEOUT_S)
                    break
            rec.actual = b"".join(zkwire.frame(p) for p in got)
        elif label.startswith("4LW") or (
            first_use and not is_connect and label not in OFF_RECORD_SESSIONS
        ):
            # four-letter words and broken first frames (L, N): everything until EOF
            rec.actual, rec.closed = self.read_until_eof(label, CLOSE_WAIT_S + READ_TIMEOUT_S)
        elif is_connect:
            try:
                p = self.conns[label].recv_frame(timeout=READ_TIMEOUT_S)
                rec.actual = zkwire.frame(p)
                if len(p) >= 16 and struct.unpack(">i", p[4:8])[0] > 0:
                    self.sessions[label] = (struct.unpack(">q", p[8:16])[0], p[20:36])
            except zkwire.Closed:
                rec.closed = True
            except socket.timeout:
                rec.problems.append("no ConnectResponse within %.1fs" % READ_TIMEOUT_S)
            except zkwire.ProtocolError as e:
                rec.problems.append("bad frame: %s" % e)
        else:
            xid = struct.unpack(">i", req[4:8])[0]
            got, rec.closed, err = self.read_until_xid(label, xid)
            rec.actual = b"".join(zkwire.frame(p) for p in got)
            if err and v["name"] not in SKIP:
                rec.problems.append(err)

        # server_closed
        if not rec.closed:
            if v["server_closed"]:
                extra, rec.closed = self.read_until_eof(label, CLOSE_WAIT_S)
                if extra:
                    rec.problems.append("bytes after the response: %s" % describe(extra))
            else:
                rec.closed = self.probe_closed(label, OPEN_PROBE_S)
        if rec.closed != v["server_closed"] and v["name"] not in SKIP:
            rec.problems.append(
                "server_closed: expected %s, got %s" % (v["server_closed"], rec.closed)
            )

        self._after(v, rec)
        if v["name"] not in SKIP:
            self.compare(v, rec, is_connect)
        return rec

    def compare(self, v, rec, is_connect):
        expected = bytes.fromhex(v["response_hex"])
        actual = rec.actual
        op = xid = None
        if len(rec.sent) >= 12 and not is_connect:
            xid, op = struct.unpack(">ii", rec.sent[4:12])
        spans = maskable_spans(expected, v["response_variable"])
        exp_m = canonical(apply_masks(expected, spans), op, xid)
        act_m = canonical(apply_masks(actual, spans), op, xid)
        if exp_m != act_m:
            diff = [i for i in range(min(len(exp_m), len(act_m))) if exp_m[i] != act_m[i]]
            where = (
                "lengths %d vs %d" % (len(exp_m), len(act_m))
                if len(exp_m) != len(act_m)
                else "differing byte offsets %s" % diff[:12]
            )
            rec.problems.append(
                "response differs (%s)\n  expected: %s\n  actual:   %s\n  expected hex: %s\n  actual hex:   %s"
                % (where, describe(expected, op, is_connect), describe(actual, op, is_connect),
                   expected.hex(), actual.hex())
            )
        # masked session ids, checked by meaning
        for s in v["response_variable"]:
            lo, hi = s["offset"], s["offset"] + s["length"]
            if hi > len(actual):
                continue
            if s["field"] == "sessionId" and v["conn"] in RESUMES:
                want = self.sessions.get(RESUMES[v["conn"]], (None,))[0]
                got = struct.unpack(">q", actual[lo:hi])[0]
                if got != want:
                    rec.problems.append("resumed sessionId %#x, expected %#x" % (got, want or 0))
            elif s["field"] == "passwd" and v["conn"] in RESUMES:
                if actual[lo:hi] != self.sessions[RESUMES[v["conn"]]][1]:
                    rec.problems.append("resumed session came back with another password")
            elif s["field"] == "stat.ephemeralOwner":
                owner = ORIGINAL_LABEL_OF_SID.get(struct.unpack(">q", expected[lo:hi])[0])
                got = struct.unpack(">q", actual[lo:hi])[0]
                if owner in self.sessions and got != self.sessions[owner][0]:
                    rec.problems.append(
                        "ephemeralOwner %#x is not session %s (%#x)" % (got, owner, self.sessions[owner][0])
                    )


# ----------------------------------------------------------------------------
# running a phase once per module; every vector test reads its record


_REPLAYS = {}


@pytest.fixture(scope="module")
def golden_servers():
    made = {}
    yield made
    for s in made.values():
        s.destroy()


def replayed(phase, servers):
    """The Replay of `phase`, run on first use (inside the calling test's timeout)."""
    if phase not in _REPLAYS:
        server = PhaseServer(phase)
        servers[phase] = server
        replay = None
        try:
            server.start()
            replay = Replay(phase, server)
            for v in VECTORS:
                if v["phase"] == phase:
                    replay.run_vector(v)
            _REPLAYS[phase] = replay
        except BaseException as e:  # noqa: BLE001 - also pytest-timeout's Failed
            _REPLAYS[phase] = "replay of phase %r aborted: %r" % (phase, e)
            raise
        finally:
            if replay is not None:
                replay.close_all()
    r = _REPLAYS[phase]
    if isinstance(r, str):
        pytest.fail(r)
    return r


def _params():
    out = []
    for v in VECTORS:
        marks = []
        if v["name"] in SKIP:
            marks.append(pytest.mark.skip(reason=SKIP[v["name"]]))
        if v["name"] in XFAIL:
            marks.append(pytest.mark.xfail(strict=True, reason=XFAIL[v["name"]]))
        out.append(pytest.param(v["phase"], v["name"], marks=marks,
                                id="%s-%03d-%s" % (v["phase"], v["seq"], v["name"])))
    return out


def test_skip_and_xfail_lists_name_real_vectors():
    names = {v["name"] for v in VECTORS}
    assert set(SKIP) <= names and set(XFAIL) <= names
    assert set(PHASES) == set(PHASE_FLAGS), PHASES


# The first vector of a phase replays the whole phase (about 15 s for `main`: it waits for a
# session to expire); the timeout covers that.
@pytest.mark.timeout(180)
@pytest.mark.parametrize("phase,name", _params())
def test_vector(phase, name, golden_servers):
    rec = replayed(phase, golden_servers).records[name]
    if rec.problems:
        v = rec.v
        pytest.fail(
            "vector %d %s on conn %s (%s):\n%s"
            % (v["seq"], name, v["conn"], v["description"], "\n".join(rec.problems)),
            pytrace=False,
        )


@pytest.mark.timeout(180)
def test_check_standalone_replies_ok(golden_servers):
    """Replaces the golden bytes of check_standalone (ZooKeeper 3.8.0 answers nothing): ringkeeper
    answers a top-level check with err=0 and no body, and keeps the connection open."""
    rec = replayed("main", golden_servers).records["check_standalone"]
    frames = split_frames(rec.actual)
    xid = struct.unpack(">i", rec.sent[4:8])[0]
    assert len(frames) == 1 and not isinstance(frames[0], tuple), describe(rec.actual)
    rxid, _zxid, err = struct.unpack(">iqi", frames[0][:16])
    assert (rxid, err, len(frames[0])) == (xid, 0, 16), describe(rec.actual)
    assert not rec.closed


# ZooKeeper's default whitelist is `srvr` only; ringkeeper's adds ruok and isro on purpose (they
# reveal nothing). The words both treat the same: srvr (answered) and the words neither enables
# by default (refused with ZooKeeper's message), among them every word that shows session ids,
# client addresses, paths or raft positions.
REFUSED_BY_BOTH = ["stat", "mntr", "conf", "envi", "cons", "wchs",
                   "dump", "wchc", "wchp", "dirs", "gtmk", "crst", "srst", "hash"]


@pytest.mark.timeout(180)
def test_default_whitelist_shared_words(golden_servers):
    replay = replayed("default-4lw", golden_servers)
    fl = GOLDEN_DIR / "fourletter"
    template = (fl / "default-whitelist-ruok.txt").read_text()
    assert template.startswith("ruok ")
    assert (fl / "default-whitelist-stat.txt").read_text() == template.replace("ruok", "stat", 1)
    problems = []
    for word in REFUSED_BY_BOTH:
        want = template.replace("ruok", word, 1)
        got = zkwire.four_letter(replay.addr, word, timeout=5.0)
        if got != want:
            problems.append("%s: expected %r, got %r" % (word, want, got))

    def keys(text):
        return [line.split(":", 1)[0] for line in text.splitlines() if line.strip()]

    want = (fl / "default-whitelist-srvr.txt").read_text()
    got = zkwire.four_letter(replay.addr, "srvr", timeout=5.0)
    if keys(got) != keys(want):
        problems.append("srvr keys: expected %s, got %s\n%s" % (keys(want), keys(got), got))
    assert not problems, "\n".join(problems)
