"""ringkeeper's peer protocol as an attacker (or a test) speaks it: frames,
the authentication handshake of src/peer_proto/auth.rs, and raft messages in
protobuf (eraftpb.proto). Only what the attack tests need."""

import hashlib
import hmac
import os
import socket
import struct

MAGIC = 0x524B5033  # "RKP3"
HELLO, RAFT, FORWARD, TOUCH, SNAPSHOT_CHUNK, ATTACHED, DIGEST, CHALLENGE, PROOF = range(1, 10)
ACCEPT_LABEL = b"ringkeeper peer accept v1"
DIAL_LABEL = b"ringkeeper peer dial v1"

# raft MessageType / EntryType values (eraftpb.proto)
MSG_APPEND, MSG_REQUEST_VOTE, MSG_HEARTBEAT, MSG_TIMEOUT_NOW, MSG_REQUEST_PRE_VOTE = 3, 5, 8, 14, 17
ENTRY_NORMAL, ENTRY_CONF_CHANGE_V2 = 0, 2
U64_MAX = (1 << 64) - 1


def frame(kind, payload=b""):
    return struct.pack("<I", 1 + len(payload)) + bytes([kind]) + payload


# The settings every member must share, as harness.Ensemble's members run
# (MachineConfig::shared_settings): a hello with others is refused.
SETTINGS = b"ttl_enabled=true max_sessions=1048576"


def hello(sender, receiver, nonce=None, settings=SETTINGS):
    nonce = nonce if nonce is not None else os.urandom(32)
    body = struct.pack("<IQQ", MAGIC, sender, receiver) + nonce
    return frame(HELLO, body + struct.pack("<H", len(settings)) + settings), nonce


def _mac(key, label, sender, receiver, dial_nonce, accept_nonce):
    m = hmac.new(key, label, hashlib.sha256)
    m.update(struct.pack("<QQ", sender, receiver) + dial_nonce + accept_nonce)
    return m.digest()


def read_frame(sock):
    header = _read_exact(sock, 4)
    (n,) = struct.unpack("<I", header)
    body = _read_exact(sock, n)
    return body[0], body[1:]


def _read_exact(sock, n):
    out = b""
    while len(out) < n:
        chunk = sock.recv(n - len(out))
        if not chunk:
            raise ConnectionError("closed after %d of %d bytes" % (len(out), n))
        out += chunk
    return out


def connect(port, sender, receiver, key=None, timeout=5.0):
    """Dials a member's peer port claiming to be member `sender`. With `key`
    (the ensemble's secret) completes the handshake as a member would; without
    it sends a made-up proof. Returns the socket, ready for frames."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    data, dial_nonce = hello(sender, receiver)
    sock.sendall(data)
    kind, payload = read_frame(sock)
    assert kind == CHALLENGE and len(payload) == 64, (kind, payload)
    accept_nonce, their_mac = payload[:32], payload[32:]
    if key is not None:
        expect = _mac(key, ACCEPT_LABEL, sender, receiver, dial_nonce, accept_nonce)
        assert hmac.compare_digest(expect, their_mac), "the member does not hold the same secret"
        proof = _mac(key, DIAL_LABEL, sender, receiver, dial_nonce, accept_nonce)
    else:
        proof = os.urandom(32)
    sock.sendall(frame(PROOF, proof))
    return sock


# -- protobuf, just enough for raft messages

def _varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _field(num, wire, value):
    key = _varint((num << 3) | wire)
    if wire == 0:
        return key + _varint(value)
    return key + _varint(len(value)) + value


def entry(term, index, data=b"", entry_type=ENTRY_NORMAL):
    return (_field(1, 0, entry_type) + _field(2, 0, term) + _field(3, 0, index)
            + (_field(4, 2, data) if data else b""))


def raft_message(msg_type, sender, receiver, term, log_term=0, index=0, commit=0,
                 entries=(), context=b""):
    out = (_field(1, 0, msg_type) + _field(2, 0, receiver) + _field(3, 0, sender)
           + _field(4, 0, term) + _field(5, 0, log_term) + _field(6, 0, index))
    for e in entries:
        out += _field(7, 2, e)
    out += _field(8, 0, commit)
    if context:
        out += _field(12, 2, context)
    return frame(RAFT, out)
