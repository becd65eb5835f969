"""Replicated ensembles (harness.Ensemble): 3 and 5 members on 127.0.0.1.

Replication (data and Stat identical on every member), acknowledged writes
surviving a leader crash, followers catching up after a restart or a wiped
data dir, the quorum rule (5 members survive 2 losses, not 3), sessions
moving between members, srvr/mntr modes, observers, and (ringkeeper only)
a network partition made with per-link proxies.

Every member is checked through a client connected to that member only,
after a `sync`. Runs against both targets; ZooKeeper checks the tests."""

import collections
import socket
import threading
import time

import pytest
from kazoo.client import KazooClient
from kazoo.exceptions import KazooException, NodeExistsError
from kazoo.handlers.threading import KazooTimeoutError

import harness
import peerwire
import zkwire
from harness import NOT_SERVING, Ensemble, WriterThread, make_kazoo, parse_kv, wait_until

CALL_TIMEOUT = 10.0  # one request, while the ensemble may be electing
RECOVER_S = 60.0  # an election plus a reconnect, on a busy 2-core machine
NO_QUORUM_WAIT_S = 5.0  # how long a write without a quorum gets to (wrongly) succeed
FAILURES = (KazooException, KazooTimeoutError)


# ----------------------------------------------------------------------------
# helpers


@pytest.fixture
def kz(kazoo_clients):
    """Makes started kazoo clients (`hosts`: one member or several) that try
    the hosts in the order given."""

    def make(hosts, timeout=10.0, **kw):
        kw.setdefault("randomize_hosts", False)
        return kazoo_clients(hosts, timeout=timeout, **kw)

    return make


def rotated(ens, first):
    """All members' client addresses, `first` first (with randomize_hosts=False
    the client connects there, and moves on to the others when it goes)."""
    i = ens.members.index(first)
    return Ensemble.hosts_of(ens.members[i:] + ens.members[:i])


def peer_port(zk):
    """The client port of the member a kazoo client is connected to (None
    while it has no connection)."""
    try:
        return zk._connection._socket.getpeername()[1]
    except (AttributeError, OSError):
        return None


def create_eventually(zk, path, data=b"", timeout=RECOVER_S):
    """Creates `path`, retrying through connection losses and elections;
    NodeExists on a retry means an earlier attempt was applied."""
    deadline = time.monotonic() + timeout
    attempt = 0
    while True:
        attempt += 1
        try:
            return zk.create_async(path, data).get(timeout=CALL_TIMEOUT)
        except NodeExistsError:
            if attempt == 1:
                raise
            return path
        except FAILURES as e:
            if time.monotonic() > deadline:
                pytest.fail("create %s not acknowledged within %.0fs (last: %r)" % (path, timeout, e))
            time.sleep(0.1)


def acknowledged_within(zk, path, within=NO_QUORUM_WAIT_S):
    """Keeps trying to create `path` for `within` seconds; True as soon as one
    attempt is acknowledged (or a retry finds it applied), False if none is."""
    deadline = time.monotonic() + within
    tried = False
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        try:
            zk.create_async(path, b"must not be acknowledged").get(timeout=left)
            return True
        except NodeExistsError:
            if tried:
                return True
            raise
        except FAILURES:
            tried = True
            time.sleep(0.1)


def refuses_clients(member, within=3.0):
    """True if a new kazoo client cannot get a session from `member` alone."""
    c = KazooClient(hosts=member.hosts, timeout=4.0, connection_retry=dict(max_tries=-1, delay=0.05, max_delay=0.3))
    try:
        c.start(timeout=within)  # stops the client itself when it times out
    except KazooTimeoutError:
        return True
    c.stop()
    c.close()
    return False


def tree(zk):
    """path -> (data, czxid, mzxid, version, ephemeralOwner) of every node but
    /zookeeper (per-server config), read through `zk` after a sync."""
    zk.sync("/")
    out = {}
    level = ["/"]
    while level:
        nxt = []
        for i in range(0, len(level), 500):  # bounded pipelining
            batch = [(p, zk.get_async(p), zk.get_children_async(p)) for p in level[i : i + 500]]
            for p, g, c in batch:
                data, st = g.get(timeout=CALL_TIMEOUT)
                out[p] = (data, st.czxid, st.mzxid, st.version, st.ephemeralOwner)
                for name in c.get(timeout=CALL_TIMEOUT):
                    child = p.rstrip("/") + "/" + name
                    if child != "/zookeeper":
                        nxt.append(child)
        level = nxt
    return out


def member_trees(ens, kz):
    """{member id: tree} for every running member, each read through a client
    connected to that member only; fails unless all are identical."""
    trees = {}
    for m in ens.members:
        if m.running():
            trees[m.id] = tree(kz(m.hosts))
    first_id = min(trees)
    first = trees[first_id]
    for mid, t in trees.items():
        if t == first:
            continue
        only_first = sorted(set(first) - set(t))[:10]
        only_this = sorted(set(t) - set(first))[:10]
        differ = [(p, first[p], t[p]) for p in sorted(set(first) & set(t)) if first[p] != t[p]][:10]
        pytest.fail(
            "member %d's tree differs from member %d's (%d vs %d nodes): only on %d: %s; only on %d: %s; "
            "differ (path, on %d, on %d): %s"
            % (mid, first_id, len(t), len(first), first_id, only_first, mid, only_this, first_id, mid, differ)
        )
    return trees


def children_on(ens, kz, path):
    """{member id: get_children(path)} through per-member clients after a sync."""
    out = {}
    for m in ens.members:
        if m.running():
            c = kz(m.hosts)
            c.sync(path)
            out[m.id] = c.get_children(path)
    return out


class Writer(WriterThread):
    """Creates <base>/w<idx>-<k> for k = 1, 2, ... through a client that knows
    every member (its own first). A create without an answer is retried under
    the same name until acknowledged; NodeExists on a retry means an earlier
    attempt was applied, which counts as acknowledged. Records the outcomes."""

    def __init__(self, idx, hosts, base, stop):
        super().__init__(idx, make_kazoo(hosts, timeout=4.0, randomize_hosts=False), stop)
        self.base = base
        self.acked = {}  # path -> payload
        self.uncertain = {}  # path -> payload: sent, never acknowledged
        self.retried = 0  # acknowledged only by NodeExists on a retry

    def work(self):
        k = 0
        while not self.stop.is_set():
            k += 1
            path = "%s/w%d-%06d" % (self.base, self.idx, k)
            payload = b"w%d-%d" % (self.idx, k)
            self.uncertain[path] = payload
            attempt = 0
            while True:
                attempt += 1
                try:
                    self.zk.create_async(path, payload).get(timeout=CALL_TIMEOUT)
                    break
                except NodeExistsError:
                    if attempt == 1:
                        raise AssertionError("NodeExists for a name never tried before: %s" % path)
                    self.retried += 1
                    break
                except FAILURES as e:
                    self.failures[type(e).__name__] += 1
                    if self.stop.is_set():
                        return  # the path stays uncertain
                    self.wait_connected(RECOVER_S)
            del self.uncertain[path]
            self.acked[path] = payload
            self.acks += 1


def start_writers(ens, base, stop):
    """One writer per member, connected to that member first."""
    writers = []
    for i, m in enumerate(ens.members):
        w = Writer(i, rotated(ens, m), base, stop)
        assert peer_port(w.zk) == m.port, "writer %d is not connected to member %d" % (i, m.id)
        writers.append(w)
    for w in writers:
        w.start()
    return writers


def wait_for_acks(writers, more, timeout=RECOVER_S):
    harness.wait_for_acks(writers, more, timeout)


def stop_writers(writers, stop):
    stop.set()
    for w in writers:
        w.join(timeout=2 * CALL_TIMEOUT + 5)


def check_writers_ended(writers):
    for w in writers:
        assert not w.is_alive(), "writer %d stuck" % w.idx
        assert w.error is None, "writer %d: %r" % (w.idx, w.error)


def check_writes(trees, listings, base, writers):
    """Every acknowledged create is there with its data on every member,
    nothing is there that no writer sent, and no name is listed twice."""
    acked, uncertain = {}, {}
    for w in writers:
        acked.update(w.acked)
        uncertain.update(w.uncertain)
    assert acked, "no write was ever acknowledged"
    print(
        "ensemble writes: %d acknowledged (%d by NodeExists on a retry), %d uncertain, failures %s"
        % (
            len(acked),
            sum(w.retried for w in writers),
            len(uncertain),
            dict(sum((w.failures for w in writers), collections.Counter())),
        )
    )
    for mid, t in trees.items():
        names = listings[mid]
        assert len(names) == len(set(names)), "member %d lists a child twice" % mid
        present = {p: v[0] for p, v in t.items() if p.startswith(base + "/")}
        assert sorted(base + "/" + n for n in names) == sorted(present), "member %d: listing and tree differ" % mid
        lost = sorted(p for p in acked if p not in present)
        assert not lost, "member %d lost %d acknowledged creates: %s" % (mid, len(lost), lost[:10])
        wrong = sorted(p for p in acked if present[p] != acked[p])
        assert not wrong, "member %d: wrong data in %s" % (mid, wrong[:10])
        phantom = sorted(p for p in present if p not in acked and p not in uncertain)
        assert not phantom, "member %d: nodes nobody wrote: %s" % (mid, phantom[:10])
        bad = sorted(p for p in present if p in uncertain and present[p] != uncertain[p])
        assert not bad, "member %d: wrong data in %s" % (mid, bad[:10])


def other_members(ens, *these):
    return [m for m in ens.members if m not in these]


# ----------------------------------------------------------------------------
# replication


@pytest.mark.timeout(90)
def test_replication_identical_on_every_member(ensemble, kz):
    ens = ensemble(3)
    clients = {m.id: kz(m.hosts) for m in ens.members}
    for origin in ens.members:
        c = clients[origin.id]
        path = "/rep-from-%d" % origin.id
        c.create(path, b"v0")
        c.set(path, b"v1")
        c.create(path + "/child", b"c")
        want_data, want = c.get(path)
        assert want_data == b"v1" and want.version == 1
        for m in ens.members:
            r = clients[m.id]
            r.sync(path)
            data, st = r.get(path)
            assert data == b"v1", (origin.id, m.id)
            assert (st.czxid, st.mzxid, st.pzxid, st.version, st.cversion, st.numChildren) == (
                want.czxid,
                want.mzxid,
                want.pzxid,
                want.version,
                want.cversion,
                want.numChildren,
            ), "member %d's Stat of %s differs from member %d's" % (m.id, path, origin.id)
            assert r.get_children(path) == ["child"]
    ens.wait_converged(30)
    member_trees(ens, kz)


@pytest.mark.timeout(90)
@pytest.mark.skipif(harness.TARGET != "ringkeeper", reason="ringkeeper's digest metrics")
def test_followers_compare_tree_digests_with_the_leader(ensemble, kz):
    """The leader sends its tree digest at an applied index about once a second; every
    follower compares it with its own at the same index (mntr rk_digest_*)."""
    ens = ensemble(3)
    c = kz(ens.hosts)
    for i in range(50):
        c.create("/digest-%d" % i, b"x" * i)
    c.set("/digest-7", b"changed")
    c.delete("/digest-3")

    def mntr(m):
        return parse_kv(zkwire.four_letter(m.addr, "mntr", timeout=3.0), "\t")

    leader = ens.leader()
    followers = [m for m in ens.members if m is not leader]

    def compared():
        return all(int(mntr(m).get("rk_digest_checks", 0)) >= 2 for m in followers)

    wait_until(compared, 30, what="followers to compare digests with the leader")
    for m in ens.members:
        assert mntr(m)["rk_digest_mismatches"] == "0", "member %d diverged" % m.id


@pytest.mark.timeout(90)
@pytest.mark.skipif(harness.TARGET != "ringkeeper", reason="ringkeeper's peer protocol")
def test_garbage_on_a_peer_port_changes_nothing(ensemble, kz):
    """Strangers on the peer port (no hello, a wrong member id, a frame that announces
    256 MiB and then stops) are dropped; the ensemble keeps working."""
    ens = ensemble(3)
    c = kz(ens.hosts)
    c.create("/before", b"1")
    leader = ens.leader()
    port = ens.peer_ports[leader.id]
    payloads = [
        b"GET / HTTP/1.0\r\n\r\n",
        # a hello from a member that does not exist
        peerwire.hello(99, leader.id)[0],
        (256 << 20).to_bytes(4, "little") + b"\x02" + b"\x00" * 1000,
    ]
    for p in payloads:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(p)
            time.sleep(0.2)
    c.create("/after", b"2")
    assert ens.leader() is leader, "the leader changed"
    for m in ens.members:
        r = kz(m.hosts)
        r.sync("/after")
        assert r.get("/after")[0] == b"2" and r.exists("/before")


def writes_through(ens, kz, base, disrupt, before=20, after=20):
    """One writer per member under `base` while `disrupt(writers)` runs (after
    `before` acknowledged writes each, and until `after` more once it
    returns); then every member must hold every acknowledged write once,
    nothing nobody wrote, and the same tree."""
    kz(ens.hosts).create(base, b"")
    stop = threading.Event()
    writers = start_writers(ens, base, stop)
    try:
        wait_for_acks(writers, before)
        disrupt(writers)
        wait_for_acks(writers, after)
    finally:
        stop_writers(writers, stop)
    check_writers_ended(writers)
    ens.wait_converged(RECOVER_S)
    trees = member_trees(ens, kz)
    check_writes(trees, children_on(ens, kz, base), base, writers)


@pytest.mark.timeout(240)
def test_acknowledged_writes_survive_leader_sigkill(ensemble, kz):
    """A writer per member; the leader is SIGKILLed mid-run and restarted."""
    ens = ensemble(3)

    def kill_leader(writers):
        leader = ens.leader()
        leader.kill()
        wait_for_acks(writers, 20)  # two of three keep accepting writes
        assert ens.leader() is not leader
        leader.start()

    writes_through(ens, kz, "/writes", kill_leader)


@pytest.mark.timeout(240)
@pytest.mark.parametrize("how", ["restart", "wiped"])
def test_follower_catches_up(ensemble, kz, how):
    """A follower goes away while writes go on and comes back (on its own
    data, or on an empty data dir): it ends up with the same tree."""
    ens = ensemble(3)

    def take_a_follower_away(writers):
        follower = other_members(ens, ens.leader())[0]
        if how == "restart":
            follower.kill()
        else:
            follower.stop()
            follower.wipe()
            assert not any(follower.data_dir.iterdir())
        wait_for_acks(writers, 30)
        follower.start()

    writes_through(ens, kz, "/catch-up", take_a_follower_away, before=30)


# ----------------------------------------------------------------------------
# quorum


@pytest.mark.timeout(300)
def test_five_members_survive_two_losses_not_three(ensemble, kz):
    ens = ensemble(5)
    zk = kz(ens.hosts, timeout=4.0)
    acked = []

    def write(path):
        create_eventually(zk, path, path.encode())
        acked.append(path)

    write("/q")
    for i in range(5):
        write("/q/all-%d" % i)

    # two down, the leader among them: three of five still make a quorum
    leader = ens.leader()
    down = [leader, other_members(ens, leader)[0]]
    for m in down:
        m.kill()
    for i in range(5):
        write("/q/two-down-%d" % i)
    new_leader = ens.leader()
    assert new_leader not in down

    # a third (a follower, so the new leader has to notice it lost its quorum)
    third = next(m for m in other_members(ens, new_leader, *down))
    survivors = other_members(ens, third, *down)
    short = kz(Ensemble.hosts_of(survivors), timeout=2.0)  # connected while there still is a quorum
    third.kill()
    down.append(third)
    assert not acknowledged_within(short, "/q/no-quorum"), "a write was acknowledged by 2 of 5 members"
    for s in survivors:
        wait_until(lambda: ens.mode(s) is None, 30, what="member %d to stop serving without a quorum" % s.id)
        out = zkwire.four_letter(s.addr, "srvr", timeout=5)
        assert NOT_SERVING in out, out
        assert refuses_clients(s), "member %d gives out sessions without a quorum" % s.id
    # (the write above may still be applied later: it was never answered)
    short.stop()

    ens.start()  # the three come back
    write("/q/after")
    ens.wait_converged(RECOVER_S)
    trees = member_trees(ens, kz)
    for mid, t in trees.items():
        missing = [p for p in acked if t.get(p, (None,))[0] != p.encode()]
        assert not missing, "member %d lacks acknowledged writes %s" % (mid, missing)


# ----------------------------------------------------------------------------
# sessions


@pytest.mark.timeout(120)
@pytest.mark.parametrize("victim", ["follower", "leader"])
def test_session_survives_its_member(ensemble, kz, victim):
    """A client's member dies: the client moves to another member with the
    same session; its ephemeral stays and its watches work there (kazoo's
    DataWatch sets them again; a raw client resumes and re-registers with
    setWatches as the Java client does, catching up on what it missed);
    closing the session then removes the ephemeral everywhere."""
    ens = ensemble(3)
    leader = ens.leader()
    a = leader if victim == "leader" else other_members(ens, leader)[0]
    zk = kz(rotated(ens, a), timeout=4.0)
    assert peer_port(zk) == a.port
    sid = zk.client_id[0]
    zk.create("/eph", b"e", ephemeral=True)
    zk.create("/watched", b"0")
    zk.create("/missed", b"0")
    seen = []
    cond = threading.Condition()

    @zk.DataWatch("/watched")
    def on_data(data, stat):
        with cond:
            seen.append(data)
            cond.notify_all()

    raw = zkwire.connect(a.addr, timeout_ms=4000)
    for path in ("/watched", "/missed"):
        assert raw.get_data(path, watch=True)[0].err == zkwire.OK
    raw_sid, raw_pw, raw_last = raw.session_id, raw.passwd, raw.last_zxid

    a.kill()
    raw.close()
    wait_until(lambda: zk.connected and peer_port(zk) not in (None, a.port), RECOVER_S, what="the client to move")
    assert zk.client_id[0] == sid, "the session was not resumed on another member"
    assert zk.exists("/eph").ephemeralOwner == sid

    b = next(m for m in other_members(ens, a) if peer_port(zk) != m.port)
    writer = kz(b.hosts)
    writer.set("/missed", b"1")  # while the raw session has no connection
    r = zkwire.RawConn(b.addr)
    try:
        resp = r.handshake(timeout_ms=4000, session_id=raw_sid, passwd=raw_pw, last_zxid=raw_last)
        assert resp.timeout > 0 and resp.session_id == raw_sid, "member %d did not resume the raw session" % b.id
        rep, _ = r.set_watches(raw_last, data=["/watched", "/missed"])
        assert rep.err == zkwire.OK
        assert {(e.type, e.path) for e in r.drain_events(probe="/missed")} == {
            (zkwire.EV_NODE_DATA_CHANGED, "/missed")
        }
        writer.set("/watched", b"1")
        ev = r.wait_event(10)
        assert (ev.type, ev.path) == (zkwire.EV_NODE_DATA_CHANGED, "/watched")
        with cond:
            assert cond.wait_for(lambda: b"1" in seen, timeout=10), seen
        r.close_session()
    finally:
        r.close()

    a.start()
    for m in ens.members:
        c = kz(m.hosts)
        c.sync("/eph")
        st = c.exists("/eph")
        assert st is not None and st.ephemeralOwner == sid, "member %d: %s" % (m.id, st)

    zk.stop()  # closes the session
    zk.close()
    for m in ens.members:
        c = kz(m.hosts)

        def gone():
            c.sync("/eph")
            return c.exists("/eph") is None

        wait_until(gone, 15, interval=0.1, what="the closed session's ephemeral to go on member %d" % m.id)


SESSION_MOVED = -118


@pytest.mark.timeout(90)
def test_a_write_on_a_moved_session_gets_session_moved(ensemble, kz):
    """A session resumed on another member: a write on its old connection is
    refused SessionMoved and changes nothing; the new connection writes, and
    reads on the old one still work. (ZooKeeper 3.8 closes the old connection
    instead of answering; either way the write must not happen.)"""
    ens = ensemble(3)
    ens.wait_converged()  # a raw client does not retry a member that does not serve yet
    a, b = other_members(ens, ens.leader())[0], ens.leader()
    old = zkwire.connect(a.addr, timeout_ms=6000)
    new = None
    try:
        rep, _, _ = old.create("/moved-before")
        assert rep.err == zkwire.OK

        def resumed():
            # A member that has not applied what the client saw yet closes the connection
            # (as ZooKeeper does): the client tries again.
            nonlocal new
            new = zkwire.RawConn(b.addr)
            try:
                resp = new.handshake(timeout_ms=6000, session_id=old.session_id, passwd=old.passwd,
                                     last_zxid=old.last_zxid)
                return resp.timeout > 0 and resp.session_id == old.session_id
            except (zkwire.Closed, OSError):
                new.close()
                return False

        wait_until(resumed, 10, interval=0.05, what="the session to resume on member %d" % b.id)
        rep, _, _ = new.create("/moved-new")
        assert rep.err == zkwire.OK
        try:
            rep, _, _ = old.create("/moved-stale")
            answered = rep.err
        except (zkwire.Closed, OSError):
            answered = None
        if harness.TARGET == "ringkeeper":
            assert answered == SESSION_MOVED
            rep, data, _ = old.get_data("/moved-before")
            assert rep.err == zkwire.OK
        else:
            assert answered in (SESSION_MOVED, None)
        check = kz(ens.hosts)
        check.sync("/")
        assert check.exists("/moved-stale") is None
        assert check.exists("/moved-new") is not None
        rep, _, _ = new.create("/moved-after")
        assert rep.err == zkwire.OK
    finally:
        old.close()
        if new is not None:
            new.close()


@pytest.mark.timeout(90)
def test_abandoned_session_expires_on_every_member(ensemble, kz):
    ens = ensemble(3)
    follower = other_members(ens, ens.leader())[0]
    clients = {m.id: kz(m.hosts) for m in ens.members}
    raw = zkwire.connect(follower.addr, timeout_ms=1000)
    try:
        rep, _, _ = raw.create("/abandoned", b"", flags=zkwire.EPHEMERAL)
        assert rep.err == zkwire.OK
        for mid, c in clients.items():
            c.sync("/abandoned")
            st = c.exists("/abandoned")
            assert st is not None and st.ephemeralOwner == raw.session_id, "member %d: %s" % (mid, st)
    finally:
        raw.close()  # no closeSession: the client just goes away
    for mid, c in clients.items():

        def gone():
            c.sync("/abandoned")
            return c.exists("/abandoned") is None

        wait_until(gone, 30, interval=0.1, what="the expired session's ephemeral to go on member %d" % mid)


# ----------------------------------------------------------------------------
# srvr / mntr, observers


def check_modes(ens, want):
    """srvr, stat and mntr of every member agree with `want` {id: mode}."""
    for m in ens.members:
        if want[m.id] is None:
            continue
        srvr = parse_kv(zkwire.four_letter(m.addr, "srvr"), ": ")
        stat = parse_kv(zkwire.four_letter(m.addr, "stat"), ": ")
        mntr = parse_kv(zkwire.four_letter(m.addr, "mntr"), "\t")
        got = (srvr.get("Mode"), stat.get("Mode"), mntr.get("zk_server_state"))
        assert got == (want[m.id],) * 3, "member %d: srvr/stat/mntr say %s, want %s" % (m.id, got, want[m.id])


@pytest.mark.timeout(120)
def test_srvr_and_mntr_report_modes(ensemble):
    ens = ensemble(3)
    leader = ens.leader()
    check_modes(ens, {m.id: "leader" if m is leader else "follower" for m in ens.members})

    leader.kill()
    new = ens.leader()
    assert new is not leader
    check_modes(ens, {m.id: None if m is leader else "leader" if m is new else "follower" for m in ens.members})

    leader.start()  # comes back as a follower of the new leader
    wait_until(lambda: ens.mode(leader) is not None, RECOVER_S, what="the old leader to serve again")
    assert ens.leader() is new
    check_modes(ens, {m.id: "leader" if m is new else "follower" for m in ens.members})


@pytest.mark.timeout(150)
def test_observer_serves_but_does_not_vote(ensemble, kz):
    ens = ensemble(3, observers=1)
    obs = ens.members[3]
    assert obs.observer
    leader = ens.leader()
    want = {m.id: "observer" if m is obs else "leader" if m is leader else "follower" for m in ens.members}
    check_modes(ens, want)

    oc = kz(obs.hosts, timeout=2.0)
    lc = kz(leader.hosts)
    # reads
    lc.create("/via-leader", b"l")
    oc.sync("/via-leader")
    assert oc.get("/via-leader")[0] == b"l"
    # writes, forwarded
    oc.create("/via-observer", b"o")
    for m in ens.voters:
        c = kz(m.hosts)
        c.sync("/via-observer")
        assert c.get("/via-observer")[0] == b"o", "member %d" % m.id
    ens.wait_converged(30)
    member_trees(ens, kz)

    # the leader plus the observer are not a quorum of three voters
    followers = other_members(ens, leader, obs)
    for m in followers:
        m.kill()
    assert not acknowledged_within(oc, "/no-quorum-via-observer"), "a write was acknowledged without a quorum"
    for m in (leader, obs):
        wait_until(lambda: ens.mode(m) is None, 30, what="member %d to stop serving without a quorum" % m.id)
    oc.stop()


# ----------------------------------------------------------------------------
# partitions (ringkeeper only: needs members that tell peers apart by hello)


@pytest.mark.ringkeeper_only
@pytest.mark.timeout(150)
def test_partitioned_leader_steps_down(ensemble, kz):
    ens = ensemble(3, proxied=True)
    old = ens.leader()
    majority = other_members(ens, old)
    maj = kz(Ensemble.hosts_of(majority), timeout=4.0)
    maj.create("/part", b"")
    maj.create("/part/before", b"")
    ens.wait_converged(30)
    raw = zkwire.connect(old.addr, timeout_ms=4000, timeout=NO_QUORUM_WAIT_S)

    ens.cut([old], majority)
    # a write sent to the cut-off leader right away must never be acknowledged
    try:
        rep, _, _ = raw.create("/part/minority", b"m")
        minority_acked = rep.err == zkwire.OK
    except (socket.timeout, zkwire.Closed, OSError):
        minority_acked = False
    assert not minority_acked, "the partitioned leader acknowledged a write"
    raw.close()

    # the two elect a leader among themselves and take writes
    def new_leader():
        leaders = [m for m in majority if ens.mode(m) == "leader"]
        return leaders[0] if len(leaders) == 1 else None

    wait_until(new_leader, RECOVER_S, interval=0.1, what="a leader among the majority")
    for i in range(10):
        create_eventually(maj, "/part/majority-%d" % i)
    # the old leader steps down, stops serving and refuses sessions
    wait_until(lambda: ens.mode(old) is None, 30, interval=0.1, what="the cut-off leader to stop serving")
    assert refuses_clients(old), "the cut-off member gives out sessions"

    ens.heal()
    ens.wait_converged(RECOVER_S)
    assert len([m for m in ens.members if ens.mode(m) == "leader"]) == 1
    trees = member_trees(ens, kz)
    for mid, t in trees.items():
        assert "/part/minority" not in t, "member %d has the minority's write" % mid
        missing = [i for i in range(10) if "/part/majority-%d" % i not in t]
        assert not missing and "/part/before" in t, "member %d lacks majority writes %s" % (mid, missing)
