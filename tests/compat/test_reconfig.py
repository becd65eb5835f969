"""Membership changes at run time: ZooKeeper's reconfig (through kazoo) and
`ringkeeper reconfig`, on ensembles of real processes.

A member joins (started with --join, knowing only the first members and
itself), an observer is promoted, a voter swap goes through raft's joint
configuration, the leader removes itself, and a whole ensemble restarted
afterwards keeps the configuration it agreed on rather than the one on its
command lines. Bad requests get ZooKeeper's error codes.

ringkeeper only: a ZooKeeper ensemble needs dynamic configuration files the
harness does not make (and its reconfig is checked by ZooKeeper's own tests)."""

import base64
import hashlib
import subprocess

import pytest
from kazoo.exceptions import (
    BadArgumentsError,
    BadVersionError,
    NewConfigNoQuorumError,
    NoAuthError,
)

import harness
import zkwire
from harness import wait_until
from test_ensemble import RECOVER_S, kz, member_trees  # noqa: F401 (kz is a fixture)

pytestmark = pytest.mark.skipif(harness.TARGET != "ringkeeper", reason="ringkeeper's --join and reconfig set-up")

SUPER = "super:reconfig-test"


def super_digest():
    user = SUPER.split(":")[0]
    return "%s:%s" % (user, base64.b64encode(hashlib.sha1(SUPER.encode()).digest()).decode())


RECONFIG_ARGS = ["--reconfig-enabled", "--super-digest", super_digest()]


def admin(kz, ens, **kw):  # noqa: F811 (the fixture)
    """A kazoo client authenticated as the super user (who alone may write
    /zookeeper/config, as in ZooKeeper)."""
    return kz(ens.hosts, auth_data=[("digest", SUPER)], **kw)


def members_of(config):
    """{id: 'participant'|'observer'} of a configuration's text."""
    out = {}
    for line in config.decode().splitlines():
        if line.startswith("server."):
            key, rest = line.split("=", 1)
            out[int(key[len("server."):])] = "observer" if ":observer" in rest else "participant"
    return out


def wait_mode(ens, member, want, timeout=RECOVER_S):
    wait_until(lambda: ens.mode(member) == want, timeout, what="member %d in mode %s (now %s)" % (member.id, want, ens.mode(member)))


def write_ok(zk, path):
    """Creates `path`, retrying through an election; the created path."""
    def attempt():
        try:
            return zk.create(path, b"x") or True
        except Exception:
            return None

    return wait_until(attempt, RECOVER_S, interval=0.2, what="a write to %s" % path)


def test_a_member_joins_and_the_leader_removes_itself(ensemble, kz):  # noqa: F811
    ens = ensemble(3, spares=1, extra_args=RECONFIG_ARGS)
    zk = admin(kz, ens)
    zk.create("/before", b"b")
    for i in range(50):
        zk.create("/before/n%d" % i, b"x" * 100)
    spare = ens.spares[0]
    spare.start(wait=False)
    # Not a member yet: it serves nobody.
    assert ens.mode(spare) is None

    data, stat = zk.reconfig(joining=ens.line(spare.id), leaving=None, new_members=None)
    assert members_of(data) == {1: "participant", 2: "participant", 3: "participant", 4: "participant"}
    assert data.decode().endswith("version=%x" % stat.mzxid)
    ens.joined(spare)
    wait_mode(ens, spare, "follower")
    zk.create("/after-join", b"j")
    ens.wait_converged()
    trees = member_trees(ens, kz)
    assert "/before/n49" in trees[spare.id] and "/after-join" in trees[spare.id]
    # Every member reads the same configuration, and `conf` lists it as ZooKeeper does.
    for m in ens.members:
        got, _ = kz(m.hosts).get("/zookeeper/config")
        assert got == data
        assert "membership: \n" + data.decode() in zkwire.four_letter(m.addr, "conf")

    leader = ens.leader()
    data, _ = zk.reconfig(joining=None, leaving=str(leader.id), new_members=None)
    assert leader.id not in members_of(data)
    ens.left(leader)
    new_leader = ens.leader()
    assert new_leader is not leader
    wait_until(lambda: ens.mode(leader) is None, RECOVER_S, what="the removed member to stop serving")
    write_ok(zk, "/after-leave")
    ens.wait_converged()
    member_trees(ens, kz)


def test_observer_promoted_then_a_joint_swap(ensemble, kz):  # noqa: F811
    ens = ensemble(3, spares=2, extra_args=RECONFIG_ARGS)
    zk = admin(kz, ens)
    four, five = ens.spares
    four.start(wait=False)
    five.start(wait=False)

    data, _ = zk.reconfig(joining=ens.line(four.id, observer=True), leaving=None, new_members=None)
    assert members_of(data)[four.id] == "observer"
    ens.joined(four)
    wait_mode(ens, four, "observer")

    data, _ = zk.reconfig(joining=ens.line(four.id), leaving=None, new_members=None)
    assert members_of(data)[four.id] == "participant"
    wait_mode(ens, four, "follower")

    # Two voters change at once (5 in, a follower out): raft's joint consensus.
    gone = next(m for m in ens.members if m.id in (1, 2, 3) and ens.mode(m) == "follower")
    data, _ = zk.reconfig(joining=ens.line(five.id), leaving=str(gone.id), new_members=None)
    assert sorted(members_of(data)) == sorted({1, 2, 3, 4, 5} - {gone.id})
    ens.joined(five)
    ens.left(gone)
    wait_mode(ens, five, "follower")
    wait_until(lambda: ens.mode(gone) is None, RECOVER_S, what="the removed member to stop serving")
    write_ok(zk, "/after-swap")
    ens.wait_converged()
    member_trees(ens, kz)

    # The whole ensemble restarts from its disks: the configuration it agreed on
    # holds, though the command lines still name the first three members.
    gone.stop()
    for m in ens.members:
        m.kill()
    for m in ens.members:
        m.start(wait=False)
    for m in ens.members:
        m.wait_ready()
    ens.leader()
    write_ok(kz(ens.hosts), "/after-restart")
    ens.wait_converged()
    member_trees(ens, kz)
    got, _ = kz(five.hosts).get("/zookeeper/config")
    assert sorted(members_of(got)) == sorted({1, 2, 3, 4, 5} - {gone.id})


def test_bad_reconfigs_get_zookeeper_errors(ensemble, kz):  # noqa: F811
    ens = ensemble(3, extra_args=RECONFIG_ARGS)
    plain = kz(ens.hosts)
    line = "server.9=127.0.0.1:1:2;127.0.0.1:3"
    with pytest.raises(NoAuthError):
        plain.reconfig(joining=line, leaving=None, new_members=None)
    zk = admin(kz, ens)
    with pytest.raises(BadVersionError):
        zk.reconfig(joining=line, leaving=None, new_members=None, from_config=12345)
    with pytest.raises(BadArgumentsError):
        zk.reconfig(joining="server.x=nonsense", leaving=None, new_members=None)
    with pytest.raises(BadArgumentsError):
        zk.reconfig(joining=None, leaving="1,2,3", new_members=None)
    # Four voters that do not exist would outvote the three that do.
    many = ",".join("server.%d=127.0.0.1:%d:%d;%d" % (i, i, i, i) for i in range(4, 8))
    with pytest.raises(NewConfigNoQuorumError):
        zk.reconfig(joining=many, leaving=None, new_members=None)
    # Nothing changed.
    data, stat = plain.get("/zookeeper/config")
    assert (data, stat.version) == (b"", 0)
    write_ok(plain, "/still-writable")


def test_the_reconfig_command(ensemble, kz):  # noqa: F811
    ens = ensemble(3, spares=1, extra_args=RECONFIG_ARGS)
    spare = ens.spares[0]
    spare.start(wait=False)
    binary = str(harness.ringkeeper_binary())
    server = ens.members[0].addr
    addr = "%s:%d" % server

    def run(*args):
        return subprocess.run([binary, "reconfig", "--server", addr, *args], capture_output=True, text=True, timeout=60)

    refused = run("--add", ens.line(spare.id))
    assert refused.returncode == 1 and "NoAuth" in refused.stderr, refused
    added = run("--auth", SUPER, "--add", ens.line(spare.id))
    assert added.returncode == 0, added
    assert "server.%d=" % spare.id in added.stdout and "version=" in added.stdout
    ens.joined(spare)
    wait_mode(ens, spare, "follower")
    version = added.stdout.strip().splitlines()[-1].split("=")[1]
    stale = run("--auth", SUPER, "--remove", "1", "--from-config", "1")
    assert stale.returncode == 1 and "BadVersion" in stale.stderr, stale
    removed = run("--auth", SUPER, "--remove", str(spare.id), "--from-config", version)
    assert removed.returncode == 0, removed
    assert "server.%d=" % spare.id not in removed.stdout
    ens.left(spare)
    wait_until(lambda: ens.mode(spare) is None, RECOVER_S, what="the removed member to stop serving")
    write_ok(kz(ens.hosts), "/after-command")
