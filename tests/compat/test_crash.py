"""Crash safety: writers keep writing while the server is SIGKILLed at
seeded-random moments and restarted on the same data dir. Every write the
server acknowledged must survive with the right content, and nothing may
appear twice or out of nowhere.

Runs against both targets (on ZooKeeper it checks the test itself).
RK_CRASH_KILLS and RK_CRASH_SEED change the schedule."""

import collections
import os
import random
import threading
import time

import pytest
from kazoo.exceptions import KazooException, NodeExistsError
from kazoo.handlers.threading import KazooTimeoutError

from harness import Server, WriterThread, make_kazoo, wait_for_acks

KILLS = int(os.environ.get("RK_CRASH_KILLS", "8"))
SEED = int(os.environ.get("RK_CRASH_SEED", "1234"))
WRITERS = 3
CALL_TIMEOUT = 15.0


class Writer(WriterThread):
    """Cycles through three kinds of write and records each outcome:
    acknowledged (the server said OK) or uncertain (no answer: it may or may
    not have been applied)."""

    def __init__(self, idx, hosts, base, stop):
        super().__init__(idx, make_kazoo(hosts, timeout=4.0), stop)
        self.base = base
        self.seq_acked = {}  # payload -> path
        self.seq_uncertain = set()  # payloads
        self.kv_acked = {}  # path -> payload
        self.kv_uncertain = {}  # path -> payload
        self.ctr_path = "%s/ctr/w%d" % (base, idx)
        self.ctr_acked = 0
        self.ctr_attempted = 0

    def _do(self, async_result):
        return async_result.get(timeout=CALL_TIMEOUT)

    def work(self):
        k = 0
        while not self.stop.is_set():
            k += 1
            kind = k % 3
            try:
                if kind == 0:
                    payload = b"w%d-seq-%06d" % (self.idx, k)
                    self.seq_uncertain.add(payload)
                    path = self._do(self.zk.create_async(self.base + "/seq/n-", payload, sequence=True))
                    self.seq_uncertain.discard(payload)
                    self.seq_acked[payload] = path
                elif kind == 1:
                    path = "%s/kv/w%d-%06d" % (self.base, self.idx, k)
                    payload = b"kv-%d-%d" % (self.idx, k)
                    self.kv_uncertain[path] = payload
                    self._do(self.zk.create_async(path, payload))
                    del self.kv_uncertain[path]
                    self.kv_acked[path] = payload
                else:
                    self.ctr_attempted += 1
                    n = self.ctr_attempted
                    self._do(self.zk.set_async(self.ctr_path, b"%d" % n))
                    self.ctr_acked = n
                self.acks += 1
            except NodeExistsError:
                # only possible if an earlier attempt at this very name was
                # applied without an answer, and names are never reused
                raise AssertionError("NodeExists for a fresh name (k=%d)" % k)
            except (KazooException, KazooTimeoutError) as e:
                self.failures[type(e).__name__] += 1
                self.wait_connected(30)  # back off until the client has a connection again


@pytest.mark.timeout(300)
def test_acknowledged_writes_survive_sigkill(request):
    srv = Server("crash-" + request.node.name)
    rnd = random.Random(SEED)
    writers = []
    stop = threading.Event()
    try:
        srv.start()
        base = "/crash"
        setup = make_kazoo(srv.hosts)
        for p in ("/seq", "/kv", "/ctr"):
            setup.create(base + p, b"", makepath=True)
        for i in range(WRITERS):
            setup.create("%s/ctr/w%d" % (base, i), b"0")
        setup.stop()
        setup.close()

        writers = [Writer(i, srv.hosts, base, stop) for i in range(WRITERS)]
        for w in writers:
            w.start()
        wait_for_acks(writers, 5, 60, "writers made no progress after a restart")
        for kill in range(KILLS):
            time.sleep(rnd.uniform(1.0, 4.0))
            srv.kill()
            srv.start()
            # every restart must let writers make progress again
            wait_for_acks(writers, 3, 60, "writers made no progress after a restart")
        stop.set()
        for w in writers:
            w.join(timeout=60)
            assert not w.is_alive(), "writer %d stuck" % w.idx
            assert w.error is None, "writer %d: %r" % (w.idx, w.error)

        # one last crash with no writers running, then check the recovered state
        srv.kill()
        srv.start()
        check = make_kazoo(srv.hosts)
        try:
            verify(check, base, writers)
        finally:
            check.stop()
            check.close()
    finally:
        stop.set()
        for w in writers:
            w.join(timeout=10)
        srv.destroy()


def verify(zk, base, writers):
    seq_acked = {}
    seq_uncertain = set()
    kv_acked = {}
    kv_uncertain = {}
    for w in writers:
        seq_acked.update(w.seq_acked)
        seq_uncertain |= w.seq_uncertain
        kv_acked.update(w.kv_acked)
        kv_uncertain.update(w.kv_uncertain)
    assert seq_acked and kv_acked, "no write was ever acknowledged"
    print(
        "crash test: %d acknowledged writes, %d uncertain, failures %s"
        % (
            sum(w.acks for w in writers),
            len(seq_uncertain) + len(kv_uncertain) + sum(w.ctr_attempted - w.ctr_acked for w in writers),
            dict(sum((w.failures for w in writers), collections.Counter())),
        )
    )

    # sequential nodes: every acknowledged payload at its path, no payload
    # twice, nothing that was never attempted
    names = zk.get_children(base + "/seq")
    found = collections.Counter()
    at = {}
    for n in names:
        data, _ = zk.get("%s/seq/%s" % (base, n))
        found[data] += 1
        at[data] = "%s/seq/%s" % (base, n)
    dupes = {p: c for p, c in found.items() if c > 1}
    assert not dupes, "payloads stored more than once: %s" % dupes
    missing = {p: path for p, path in seq_acked.items() if at.get(p) != path}
    assert not missing, "acknowledged sequential creates lost or moved: %s" % missing
    phantom = set(found) - set(seq_acked) - seq_uncertain
    assert not phantom, "sequential nodes nobody wrote: %s" % phantom
    # sequence numbers are unique and increasing with acknowledgement order per writer
    for w in writers:
        paths = [w.seq_acked[p] for p in sorted(w.seq_acked)]
        assert paths == sorted(paths)

    # plain creates
    kids = set(zk.get_children(base + "/kv"))
    for path, payload in kv_acked.items():
        assert path.rsplit("/", 1)[1] in kids, "acknowledged create lost: %s" % path
        assert zk.get(path)[0] == payload
    for name in kids:
        path = "%s/kv/%s" % (base, name)
        assert path in kv_acked or path in kv_uncertain, "node nobody wrote: %s" % path
        if path in kv_uncertain:
            assert zk.get(path)[0] == kv_uncertain[path]

    # counters: the last acknowledged value, or a later attempted one
    for w in writers:
        v = int(zk.get(w.ctr_path)[0])
        assert w.ctr_acked <= v <= w.ctr_attempted, (w.idx, w.ctr_acked, v, w.ctr_attempted)
