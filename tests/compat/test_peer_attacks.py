"""Attacks on the peer port of an ensemble (ringkeeper only: its own peer
protocol). Each one, against ringkeeper before members authenticated each
other, took a member or the whole ensemble down, or changed data; here every
member must stay up with the same leader and the same data.

Strangers (no secret) are refused at the handshake, before any message is
read. A peer that does hold the secret is still validated (defence in depth):
nothing it sends reaches a raft-rs panic or the log unchecked."""

import os
import resource
import socket
import time

import pytest

import harness
import peerwire as pw
import zkwire
from harness import counter, mntr, wait_until

pytestmark = pytest.mark.skipif(harness.TARGET != "ringkeeper", reason="ringkeeper's peer protocol")


@pytest.fixture
def kz(kazoo_clients):
    def make(hosts, timeout=10.0, **kw):
        kw.setdefault("randomize_hosts", False)
        return kazoo_clients(hosts, timeout=timeout, **kw)

    return make


def setup_state(ens, kz):
    """Data, and a lock held by a session of its own (an ephemeral node)."""
    c = kz(ens.hosts)
    c.create("/before", b"1")
    owner = kz(ens.members[0].hosts)
    owner.create("/lock", b"", ephemeral=True)
    return c, owner


def check_unharmed(ens, kz, leader, owner, tag):
    """Every member up and serving, the same leader, the data and the lock as
    they were, and the ensemble still takes writes (through every member)."""
    for m in ens.members:
        assert m.running(), "member %d exited:\n%s" % (m.id, m.log_tail())
    assert ens.leader() is leader, "the leader changed"
    owner.set("/lock", tag.encode())  # its session neither expired nor moved
    for m in ens.members:
        r = kz(m.hosts)
        r.create("/after-%s-%d" % (tag, m.id), b"x")
        r.sync("/")
        assert r.get("/before")[0] == b"1"
        assert r.get("/lock")[0] == tag.encode()
        assert r.exists("/lock").ephemeralOwner == owner.client_id[0]


def forged_raft_frames(sender, receiver, term):
    """The raft messages that crashed or disrupted members, as a member
    `sender` would send them to `receiver`."""
    return {
        "heartbeat at term 2^64-1": pw.raft_message(pw.MSG_HEARTBEAT, sender, receiver, pw.U64_MAX),
        "pre-vote at term 2^64-1": pw.raft_message(pw.MSG_REQUEST_PRE_VOTE, sender, receiver, pw.U64_MAX,
                                                   log_term=pw.U64_MAX, index=pw.U64_MAX),
        "vote at term 2^64-1": pw.raft_message(pw.MSG_REQUEST_VOTE, sender, receiver, pw.U64_MAX),
        "append with an undecodable entry": pw.raft_message(
            pw.MSG_APPEND, sender, receiver, term, log_term=term, index=1_000_000, commit=1_000_001,
            entries=[pw.entry(term, 1_000_001, b"\xff" * 64)]),
        "append with a conf change that does not decode": pw.raft_message(
            pw.MSG_APPEND, sender, receiver, term, log_term=term, index=1_000_000,
            entries=[pw.entry(term, 1_000_001, b"\x0a\xff\xff", pw.ENTRY_CONF_CHANGE_V2)]),
        "TimeoutNow": pw.raft_message(pw.MSG_TIMEOUT_NOW, sender, receiver, term),
        "vote with CampaignTransfer": pw.raft_message(pw.MSG_REQUEST_VOTE, sender, receiver, term + 1,
                                                      log_term=pw.U64_MAX >> 1, index=pw.U64_MAX >> 1,
                                                      context=b"CampaignTransfer"),
    }


def raft_term(member):
    return int(mntr(member).get("rk_raft_term", 1))


@pytest.mark.timeout(120)
def test_strangers_cannot_speak_raft(ensemble, kz):
    """A stranger that names a member in its hello but cannot prove the
    secret is closed before any raft message is read, whatever it sends: a
    made-up proof, or no proof and the message straight away."""
    ens = ensemble(3)
    c, owner = setup_state(ens, kz)
    leader = ens.leader()
    followers = [m for m in ens.members if m is not leader]
    before = {m.id: counter(m, "rk_peer_auth_failures") for m in ens.members}
    refused = {m.id: 0 for m in ens.members}
    for target in ens.members:
        sender = leader.id if target is not leader else followers[0].id
        for name, frame in forged_raft_frames(sender, target.id, raft_term(target)).items():
            # a made-up proof, then the message
            s = pw.connect(ens.peer_ports[target.id], sender, target.id)
            try:
                s.sendall(frame * 4)
            except OSError:
                pass
            assert zkwire.closed_by_peer(s, 10), "%s: member %d kept the connection" % (name, target.id)
            s.close()
            # no proof at all: the message where the proof belongs
            with socket.create_connection(("127.0.0.1", ens.peer_ports[target.id]), timeout=5) as s:
                s.sendall(pw.hello(sender, target.id)[0])
                pw.read_frame(s)
                try:
                    s.sendall(frame)
                except OSError:
                    pass
                assert zkwire.closed_by_peer(s, 10), "%s (no proof): member %d kept the connection" % (name, target.id)
            refused[target.id] += 2
    time.sleep(1.0)  # let anything that did get through do its damage
    check_unharmed(ens, kz, leader, owner, "raft")
    for m in ens.members:
        assert counter(m, "rk_peer_auth_failures") - before[m.id] >= refused[m.id], "member %d" % m.id


@pytest.mark.timeout(120)
def test_strangers_cannot_forward_expire_touch_or_stream(ensemble, kz):
    """Forged forwards (a create as the super user, SetConfig, ExpireSessions:
    whatever their bytes, they are not read), session touches and attaches
    for another client's session, and a snapshot stream that never ends: all
    refused at the handshake; the lock's session neither expires nor moves."""
    ens = ensemble(3)
    c, owner = setup_state(ens, kz)
    leader = ens.leader()
    session = owner.client_id[0]
    frames = {
        "forward": pw.frame(pw.FORWARD, os.urandom(512)),
        "touch": pw.frame(pw.TOUCH, session.to_bytes(8, "little", signed=True) + (1 << 30).to_bytes(4, "little")),
        "attached": pw.frame(pw.ATTACHED, session.to_bytes(8, "little", signed=True)),
        "digest": pw.frame(pw.DIGEST, os.urandom(16)),
    }
    for target in ens.members:
        sender = next(m.id for m in ens.members if m is not target)
        for name, frame in frames.items():
            s = pw.connect(ens.peer_ports[target.id], sender, target.id)
            try:
                s.sendall(frame)
            except OSError:
                pass
            assert zkwire.closed_by_peer(s, 10), "%s: member %d kept the connection" % (name, target.id)
            s.close()
    # snapshot chunks that never end (1 MiB each) to a follower: closed at once
    follower = next(m for m in ens.members if m is not leader)
    s = pw.connect(ens.peer_ports[follower.id], leader.id, follower.id)
    sent = 0
    chunk = pw.frame(pw.SNAPSHOT_CHUNK, b"\0" * (1 << 20))
    try:
        while sent < (512 << 20):
            s.sendall(chunk)
            sent += len(chunk)
    except OSError:
        pass
    s.close()
    assert sent < (64 << 20), "the member read %d bytes of a stranger's snapshot" % sent
    check_unharmed(ens, kz, leader, owner, "forward")


@pytest.mark.timeout(120)
def test_half_open_connections_neither_stall_nor_exhaust_a_member(ensemble, kz):
    """Hundreds of peer connections that send nothing, or half a hello: each
    is closed once the handshake deadline passes (at most a few at a time are
    even kept), and the member goes on replicating and serving."""
    ens = ensemble(3)
    c, owner = setup_state(ens, kz)
    leader = ens.leader()
    follower = next(m for m in ens.members if m is not leader)
    port = ens.peer_ports[follower.id]
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    n = min(400, soft - 100)
    socks = []
    for i in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        if i % 2:
            s.sendall(pw.hello(leader.id, follower.id)[0][:20])  # half a hello
        socks.append(s)
    fc = kz(follower.hosts)
    for i in range(20):
        fc.create("/during-%d" % i, b"x")  # forwarded to the leader and applied here
    open_now = 0
    for s in socks:
        if not zkwire.closed_by_peer(s, 15):
            open_now += 1
        s.close()
    assert open_now == 0, "%d of %d half-open connections still open" % (open_now, n)
    assert counter(follower, "rk_peer_connections_refused") + counter(follower, "rk_peer_auth_failures") >= n
    check_unharmed(ens, kz, leader, owner, "halfopen")


@pytest.mark.timeout(120)
def test_a_member_with_the_secret_still_cannot_crash_the_others(ensemble, kz):
    """Defence in depth: a peer that completes the handshake (it has the
    secret) and then sends the messages that made raft-rs panic, or entries
    that do not decode, is refused message by message; nobody panics, nothing
    reaches the log, the leader stays."""
    ens = ensemble(3)
    c, owner = setup_state(ens, kz)
    leader = ens.leader()
    key = ens.secret_file.read_bytes().rstrip()
    followers = [m for m in ens.members if m is not leader]
    for target in ens.members:
        # as a follower talking to anyone but itself: the leader's id would be
        # the leader's own link, and a new connection from it replaces that one
        sender = next(m.id for m in followers if m is not target)
        for name, frame in forged_raft_frames(sender, target.id, raft_term(target)).items():
            s = pw.connect(ens.peer_ports[target.id], sender, target.id, key=key)
            s.sendall(frame)
            time.sleep(0.05)
            s.close()
            assert target.running(), "%s made member %d exit:\n%s" % (name, target.id, target.log_tail())
    # snapshot chunks from a member that is not the leader: refused
    s = pw.connect(ens.peer_ports[followers[0].id], followers[1].id, followers[0].id, key=key)
    try:
        s.sendall(pw.frame(pw.SNAPSHOT_CHUNK, b"\0" * 1024))
    except OSError:
        pass
    assert zkwire.closed_by_peer(s, 10)
    s.close()
    time.sleep(1.0)
    check_unharmed(ens, kz, leader, owner, "member")
    for m in ens.members:
        m.restart()  # nothing it wrote stops it at start-up
    ens.leader()
    for m in ens.members:
        r = kz(m.hosts)
        r.sync("/")
        assert r.get("/before")[0] == b"1"


@pytest.mark.timeout(60)
def test_without_a_secret_the_peer_port_is_declared_open(ensemble):
    """zoo.cfg files without a secret keep working, and the log says loudly
    that the peer port is open to anyone."""
    ens = ensemble(3, secret=False)
    ens.leader()
    for m in ens.members:
        wait_until(lambda: "NO PEER SECRET" in m.log_tail(400), 10, what="the warning in member %d's log" % m.id)


@pytest.mark.timeout(120)
def test_a_member_with_another_secret_is_kept_out(ensemble, kz, tmp_path):
    """A member started with another secret file neither joins nor disturbs:
    the other two elect a leader and serve without it, every attempt it makes
    is refused and counted, and once it has the ensemble's secret it catches
    up with what was written meanwhile."""
    ens = ensemble(3, start=False)
    odd = ens.members[2]
    odd.secret_file = tmp_path / "other.secret"
    odd.secret_file.write_bytes(os.urandom(24).hex().encode() + b"\n")
    odd.start(wait=False)  # first: it finds nobody listening, then refuses them
    for m in ens.members[:2]:
        m.start(wait=False)
    for m in ens.members[:2]:
        m.wait_ready()
    c = kz(",".join(m.hosts for m in ens.members[:2]))
    c.create("/without-3", b"x")
    wait_until(lambda: all(counter(m, "rk_peer_auth_failures") > 0 for m in ens.members[:2]), 20,
               what="the others to refuse member 3")
    assert ens.srvr(odd) is None, "member 3 serves without the ensemble's secret"
    assert "does not hold this ensemble's secret" in odd.log_tail(400)
    odd.stop()
    odd.secret_file = None
    odd.start()
    r = kz(odd.hosts)
    r.sync("/")
    assert r.get("/without-3")[0] == b"x"
