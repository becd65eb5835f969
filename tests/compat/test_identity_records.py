"""A connection's identities (its address and what addauth added) are recorded
once, by its first write, and its later writes refer to them: a session with
many large identities no longer makes every write it sends large (issue 11).
Rights stay exactly the connection's, also when the session resumes on
another member (kazoo sends its addauth again there, as ZooKeeper expects)."""

import pytest
from kazoo.exceptions import NoAuthError
from kazoo.security import make_digest_acl

from harness import TARGET, mntr, wait_until

ringkeeper_only = pytest.mark.skipif(
    TARGET != "ringkeeper", reason="what ringkeeper logs per write (ZooKeeper logs no identities)"
)

# Close to the per-session bounds (src/server/identities.rs): 31 digests of
# ~1 KiB each beside the address, about 31 KiB of identities.
USERS = ["u%02d" % i + "x" * 1000 for i in range(31)]


def authenticate(client):
    for u in USERS:
        client.add_auth("digest", u + ":pw")


@pytest.fixture
def kz(kazoo_clients):
    def make(hosts, **kw):
        kw.setdefault("randomize_hosts", False)
        return kazoo_clients(hosts, timeout=10.0, **kw)

    return make


@ringkeeper_only
@pytest.mark.timeout(120)
def test_writes_refer_to_recorded_identities(ensemble, kz):
    ens = ensemble(3)
    leader = ens.leader()
    follower = next(m for m in ens.members if m is not leader)
    c = kz(follower.hosts)  # forwarded: the identities cross the peer link too
    authenticate(c)
    c.create("/ids", b"0")  # the connection's first write carries them
    # (the leader publishes its proposal sizes on its next tick)
    wait_until(lambda: proposal_size(leader, "max") > 31 * 1000, 10,
               what="a proposal carrying the identities")
    for i in range(50):
        c.set("/ids", b"%d" % i)
    # Before identities were recorded, every write carried all 31 KiB.
    wait_until(lambda: 0 <= proposal_size(leader, "last") < 2048, 10,
               what="a later write without the identities")

    # A second connection's first write records its own (none added): the first
    # session's record is untouched and its writes still refer to it.
    other = kz(follower.hosts)
    other.create("/ids-other", b"")
    c.set("/ids", b"again")
    wait_until(lambda: 0 <= proposal_size(leader, "last") < 2048, 10,
               what="a later write without the identities")
    assert c.get("/ids")[0] == b"again"


def proposal_size(member, which):
    return int(mntr(member).get("zk_%s_proposal_size" % which, -1))


@pytest.mark.timeout(180)
def test_rights_follow_the_connection_across_members(ensemble, kz):
    """ACLs are checked against the recorded identities; after the member a
    session is on dies, the session resumes elsewhere, kazoo authenticates
    again, and its first write there records the new connection's identities."""
    ens = ensemble(3)
    leader = ens.leader()
    follower = next(m for m in ens.members if m is not leader)
    others = ",".join(m.hosts for m in ens.members if m is not follower)
    owner = kz(follower.hosts + "," + others)
    authenticate(owner)
    acl = [make_digest_acl(USERS[-1], "pw", all=True)]
    owner.create("/owned", b"0", acl=acl)
    for i in range(5):
        owner.set("/owned", b"%d" % i)

    stranger = kz(leader.hosts)
    with pytest.raises(NoAuthError):
        stranger.set("/owned", b"stolen")
    stranger.add_auth("digest", USERS[0] + ":pw")  # a digest, but not the owner's
    with pytest.raises(NoAuthError):
        stranger.set("/owned", b"stolen")

    session = owner.client_id[0]
    follower.kill()
    wait_until(lambda: owner.connected and owner.client_id[0] == session, 30,
               what="the owner's session resumed on another member")
    wait_until(lambda: _set_or_none(owner, b"moved"), 30, what="the owner writes again")
    assert owner.get("/owned")[0] == b"moved"
    with pytest.raises(NoAuthError):
        stranger.set("/owned", b"stolen")
    follower.start()
    reader = kz(follower.hosts)
    reader.add_auth("digest", USERS[-1] + ":pw")
    reader.sync("/owned")
    assert reader.get("/owned")[0] == b"moved"


def _set_or_none(client, data):
    try:
        client.set("/owned", data)
        return True
    except Exception:
        return False
