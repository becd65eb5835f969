"""Settings that decide how the log applies (TTL nodes on or off, the session
limit: src/machine.rs MachineConfig) must be the same on every member, or the
members' trees diverge. A member started with others is refused at the peer
handshake with the setting named, and joins once it runs with the ensemble's."""

import pytest

from harness import TARGET, counter, wait_until

pytestmark = pytest.mark.skipif(
    TARGET != "ringkeeper", reason="ringkeeper's peer handshake (ZooKeeper does not compare them)"
)


@pytest.mark.timeout(120)
def test_a_member_with_other_shared_settings_is_kept_out(ensemble, kazoo_clients):
    ens = ensemble(3, start=False)
    odd = ens.members[2]
    odd.ttl_enabled = False  # the others run with TTL nodes on
    odd.start(wait=False)
    for m in ens.members[:2]:
        m.start(wait=False)
    for m in ens.members[:2]:
        m.wait_ready()
    hosts = ",".join(m.hosts for m in ens.members[:2])
    c = kazoo_clients(hosts, timeout=10.0)
    c.create("/without-3", b"x")
    wait_until(lambda: all(counter(m, "rk_peer_auth_failures") > 0 for m in ens.members[:2]), 20,
               what="the others to refuse member 3")
    assert ens.srvr(odd) is None, "member 3 serves with settings the ensemble does not share"
    refused = "ttl_enabled is false on member 3, true here"
    wait_until(lambda: any(refused in m.log_tail(400) for m in ens.members[:2]), 10,
               what="a refusal naming the setting")
    odd.stop()
    odd.ttl_enabled = True
    odd.start()
    r = kazoo_clients(odd.hosts, timeout=10.0)
    r.sync("/")
    assert r.get("/without-3")[0] == b"x"
