"""sync, reconfig, server_version, four-letter words and the small
server-wide reads (shared/docs/zookeeper-protocol.md sections 7.7-7.10, 17)."""

import re

import pytest
from kazoo.exceptions import ReconfigDisabledError

import zkwire
from harness import parse_kv


@pytest.mark.timeout(30)
def test_sync(zk, base):
    assert zk.sync(base) == base
    # no existence check
    assert zk.sync(base + "/missing") == base + "/missing"


@pytest.mark.timeout(30)
def test_sync_then_read_sees_other_clients_write(kazoo_factory, base):
    a = kazoo_factory()
    b = kazoo_factory()
    for i in range(20):
        a.set(base, b"%d" % i)
        b.sync(base)
        assert b.get(base)[0] == b"%d" % i


@pytest.mark.timeout(30)
def test_reconfig_disabled(zk):
    with pytest.raises(ReconfigDisabledError):
        zk.reconfig(joining="server.2=127.0.0.1:2888:3888;2181", leaving=None, new_members=None)


@pytest.mark.timeout(30)
def test_server_version(zk):
    v = zk.server_version()
    assert v[:2] == (3, 8)


@pytest.mark.timeout(30)
def test_ruok_and_isro(zk):
    assert zk.command(b"ruok") == "imok"
    assert zk.command(b"isro") == "rw"


@pytest.mark.timeout(30)
def test_srvr(zk, raw, base):
    _, path, _ = raw.create(base + "/z", b"")
    last = raw.last_zxid
    out = zk.command(b"srvr")
    assert out.startswith("Zookeeper version: 3.8")
    kv = parse_kv(out, ": ")
    for key in ("Latency min/avg/max", "Received", "Sent", "Connections", "Outstanding", "Zxid", "Mode", "Node count"):
        assert key in kv, out
    assert re.fullmatch(r"\d+/[\d.]+/\d+", kv["Latency min/avg/max"])
    assert re.fullmatch(r"0x[0-9a-f]+", kv["Zxid"])
    assert int(kv["Zxid"], 16) >= last
    assert kv["Mode"] in ("standalone", "leader", "follower", "observer")
    assert int(kv["Connections"]) >= 2
    assert int(kv["Node count"]) >= 5


@pytest.mark.timeout(30)
def test_counts_on_fresh_server(fresh_server):
    srvr = zkwire.four_letter(fresh_server.addr, "srvr")
    kv = parse_kv(srvr, ": ")
    # the root counts twice (section 17)
    assert kv["Node count"] == "5"
    assert kv["Mode"] == "standalone"
    with zkwire.connect(fresh_server.addr) as c:
        for i in range(3):
            assert c.create("/n%d" % i, b"abc")[0].err == 0
        assert c.create("/e", b"", flags=zkwire.EPHEMERAL)[0].err == 0
        mntr = parse_kv(zkwire.four_letter(fresh_server.addr, "mntr"), "\t")
        assert mntr["zk_znode_count"] == "9"
        assert mntr["zk_ephemerals_count"] == "1"
        assert mntr["zk_server_state"] == "standalone"
        srvr = parse_kv(zkwire.four_letter(fresh_server.addr, "srvr"), ": ")
        assert int(srvr["Zxid"], 16) == c.last_zxid
        c.close_session()


@pytest.mark.timeout(30)
def test_stat(zk, server):
    out = zk.command(b"stat")
    assert out.startswith("Zookeeper version: 3.8")
    lines = out.splitlines()
    i = lines.index("Clients:")
    clients = []
    for line in lines[i + 1 :]:
        if not line.strip():
            break
        clients.append(line)
    assert clients, out
    for c in clients:
        assert re.match(r" /127\.0\.0\.1:\d+\[\d+\]\(queued=\d+,recved=\d+,sent=\d+", c), c
    kv = parse_kv(out, ": ")
    assert "Zxid" in kv and "Mode" in kv and "Node count" in kv


@pytest.mark.timeout(30)
def test_mntr(server, zk):
    out = zkwire.four_letter(server.addr, "mntr")
    kv = parse_kv(out, "\t")
    for key in (
        "zk_version",
        "zk_server_state",
        "zk_znode_count",
        "zk_watch_count",
        "zk_ephemerals_count",
        "zk_num_alive_connections",
        "zk_avg_latency",
        "zk_outstanding_requests",
        "zk_approximate_data_size",
        "zk_open_file_descriptor_count",
    ):
        assert key in kv, key
    assert kv["zk_version"].startswith("3.8")
    for key in ("zk_znode_count", "zk_watch_count", "zk_ephemerals_count", "zk_num_alive_connections"):
        assert int(kv[key]) >= 0
    assert int(kv["zk_num_alive_connections"]) >= 1


@pytest.mark.timeout(30)
def test_conf(zk, server):
    kv = parse_kv(zk.command(b"conf"), "=")
    assert kv["clientPort"] == str(server.port)
    assert kv["tickTime"] == "200"
    assert kv["minSessionTimeout"] == "400"
    assert kv["maxSessionTimeout"] == "4000"
    assert "dataDir" in kv


@pytest.mark.timeout(30)
def test_cons(zk, server):
    sid = zk.client_id[0]
    out = zkwire.four_letter(server.addr, "cons")
    assert "sid=0x%x," % sid in out, out
    line = [l for l in out.splitlines() if "sid=0x%x," % sid in l][0]
    assert re.match(r" /127\.0\.0\.1:\d+\[\d+\]\(queued=\d+,recved=\d+,sent=\d+,sid=0x[0-9a-f]+,", line)
    assert "to=4000" in line


@pytest.mark.timeout(30)
def test_envi(zk):
    out = zk.command(b"envi")
    assert out.startswith("Environment:")
    kv = parse_kv(out, "=")
    assert kv["zookeeper.version"].startswith("3.8")
    assert "host.name" in kv


@pytest.mark.timeout(30)
def test_watch_words(fresh_server):
    with zkwire.connect(fresh_server.addr) as c:
        c.create("/w1", b"")
        c.create("/w2", b"")
        c.get_data("/w1", watch=True)
        c.exists("/w2", watch=True)
        c.exists("/w3", watch=True)
        c.get_children("/w1", watch=True)  # child watches are not listed by wch*
        out = zkwire.four_letter(fresh_server.addr, "wchs")
        assert out == "1 connections watching 3 paths\nTotal watches:3\n", out
        wchc = zkwire.four_letter(fresh_server.addr, "wchc")
        assert wchc.splitlines()[0] == "0x%x" % c.session_id
        assert set(wchc.split()) == {"0x%x" % c.session_id, "/w1", "/w2", "/w3"}
        wchp = zkwire.four_letter(fresh_server.addr, "wchp")
        assert set(wchp.split()) == {"0x%x" % c.session_id, "/w1", "/w2", "/w3"}
        mntr = parse_kv(zkwire.four_letter(fresh_server.addr, "mntr"), "\t")
        assert mntr["zk_watch_count"] == "4"
        c.close_session()


@pytest.mark.timeout(30)
def test_dump_lists_ephemerals(server, raw, base):
    raw.create(base + "/eph", b"", flags=zkwire.EPHEMERAL)
    out = zkwire.four_letter(server.addr, "dump")
    assert "SessionTracker dump:" in out
    assert "ephemeral nodes dump:" in out
    assert "0x%x" % raw.session_id in out
    assert base + "/eph" in out


@pytest.mark.timeout(30)
def test_get_ephemerals(raw, zk, base):
    zk.create(base + "/other", b"", ephemeral=True)  # another session's
    raw.create(base + "/e1", b"", flags=zkwire.EPHEMERAL)
    raw.create(base + "/eseq-", b"", flags=zkwire.EPHEMERAL_SEQUENTIAL)
    raw.create(base + "/p", b"")

    def ephemerals(prefix):
        rep = raw.call(zkwire.OP_GET_EPHEMERALS, zkwire.Writer().ustring(prefix).bytes())
        assert rep.err == 0
        return set(zkwire.Reader(rep.body).string_vector())

    mine = {base + "/e1", base + "/eseq-0000000002"}
    assert ephemerals("/") == mine
    assert ephemerals(None) == mine
    assert ephemerals(base + "/es") == {base + "/eseq-0000000002"}
    assert ephemerals("/nothing-here") == set()


@pytest.mark.timeout(30)
def test_get_all_children_number(raw, zk, base):
    zk.ensure_path(base + "/a/b/c")
    zk.create(base + "/d", b"")
    rep = raw.call(zkwire.OP_GET_ALL_CHILDREN_NUMBER, zkwire.Writer().ustring(base).bytes())
    assert rep.err == 0 and zkwire.Reader(rep.body).int() == 4
    rep = raw.call(zkwire.OP_GET_ALL_CHILDREN_NUMBER, zkwire.Writer().ustring(base + "/x").bytes())
    assert rep.err == zkwire.NO_NODE
