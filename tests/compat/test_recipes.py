"""kazoo's recipes, each driven by several concurrent clients, with their
promises checked: mutual exclusion, exact counts, exactly-once delivery, order."""

import threading
import time

import pytest

WORKERS = 4


def run_threads(fn, n):
    errors = []

    def wrap(i):
        try:
            fn(i)
        except BaseException as e:  # surfaced below, with the worker's index
            errors.append((i, e))

    ts = [threading.Thread(target=wrap, args=(i,), daemon=True) for i in range(n)]
    [t.start() for t in ts]
    [t.join(timeout=120) for t in ts]
    assert not any(t.is_alive() for t in ts), "worker stuck"
    assert not errors, errors


@pytest.mark.timeout(120)
def test_lock_mutual_exclusion(kazoo_factory, base):
    clients = [kazoo_factory() for _ in range(WORKERS)]
    clients[0].create(base + "/value", b"0")
    holders = []
    max_inside = [0]
    guard = threading.Lock()
    rounds = 8

    def worker(i):
        c = clients[i]
        lock = c.Lock(base + "/lock", identifier="w%d" % i)
        for _ in range(rounds):
            with lock:
                with guard:
                    holders.append(i)
                    max_inside[0] = max(max_inside[0], len(holders))
                # an unguarded read-modify-write: only the lock keeps it exact
                v = int(c.get(base + "/value")[0])
                time.sleep(0.002)
                c.set(base + "/value", b"%d" % (v + 1))
                with guard:
                    holders.remove(i)

    run_threads(worker, WORKERS)
    assert max_inside[0] == 1
    assert int(clients[0].get(base + "/value")[0]) == WORKERS * rounds
    # all lock nodes are gone
    assert clients[0].get_children(base + "/lock") == []


@pytest.mark.timeout(60)
def test_lock_released_when_holder_session_ends(kazoo_factory, base):
    a = kazoo_factory()
    b = kazoo_factory()
    la = a.Lock(base + "/lock", "a")
    lb = b.Lock(base + "/lock", "b")
    assert la.acquire(timeout=10)
    assert not lb.acquire(blocking=False)
    assert lb.contenders() == ["a"]
    got = threading.Event()

    def wait_b():
        if lb.acquire(timeout=30):
            got.set()

    t = threading.Thread(target=wait_b, daemon=True)
    t.start()
    a.stop()  # closing the session deletes its lock node
    assert got.wait(30)
    t.join(5)
    lb.release()


@pytest.mark.timeout(60)
def test_semaphore_bound(kazoo_factory, base):
    clients = [kazoo_factory() for _ in range(WORKERS)]
    inside = []
    peak = [0]
    guard = threading.Lock()

    def worker(i):
        sem = clients[i].Semaphore(base + "/sem", identifier="s%d" % i, max_leases=2)
        for _ in range(4):
            with sem:
                with guard:
                    inside.append(i)
                    peak[0] = max(peak[0], len(inside))
                time.sleep(0.005)
                with guard:
                    inside.remove(i)

    run_threads(worker, WORKERS)
    assert 1 <= peak[0] <= 2


@pytest.mark.timeout(120)
def test_read_write_lock(kazoo_factory, base):
    clients = [kazoo_factory() for _ in range(WORKERS)]
    state = {"readers": 0, "writers": 0, "bad": 0}
    guard = threading.Lock()

    def worker(i):
        c = clients[i]
        for j in range(6):
            if (i + j) % 3 == 0:
                with c.WriteLock(base + "/rw", "w%d" % i):
                    with guard:
                        state["writers"] += 1
                        if state["writers"] > 1 or state["readers"] > 0:
                            state["bad"] += 1
                    time.sleep(0.002)
                    with guard:
                        state["writers"] -= 1
            else:
                with c.ReadLock(base + "/rw", "r%d" % i):
                    with guard:
                        state["readers"] += 1
                        if state["writers"] > 0:
                            state["bad"] += 1
                    time.sleep(0.002)
                    with guard:
                        state["readers"] -= 1

    run_threads(worker, WORKERS)
    assert state == {"readers": 0, "writers": 0, "bad": 0}


@pytest.mark.timeout(60)
def test_counter_exact(kazoo_factory, base):
    clients = [kazoo_factory() for _ in range(WORKERS)]
    per_worker = 25

    def worker(i):
        counter = clients[i].Counter(base + "/count")
        for _ in range(per_worker):
            counter += 1

    run_threads(worker, WORKERS)
    assert clients[0].Counter(base + "/count").value == WORKERS * per_worker
    # float counters and decrements
    f = clients[0].Counter(base + "/f", default=0.0)
    f += 2.5
    f -= 1.0
    assert clients[1].Counter(base + "/f", default=0.0).value == 1.5


@pytest.mark.timeout(60)
def test_queue_order_and_priority(kazoo_factory, base):
    zk = kazoo_factory()
    q = zk.Queue(base + "/q")
    for i in range(10):
        q.put(b"item-%d" % i)
    q.put(b"urgent", priority=1)
    assert len(q) == 11
    got = [q.get() for _ in range(11)]
    assert got[0] == b"urgent"
    assert got[1:] == [b"item-%d" % i for i in range(10)]
    assert q.get() is None


@pytest.mark.timeout(120)
def test_queue_concurrent_exactly_once(kazoo_factory, base):
    producers = [kazoo_factory() for _ in range(2)]
    consumers = [kazoo_factory() for _ in range(3)]
    n_each = 30
    consumed = []
    guard = threading.Lock()
    done_producing = threading.Event()

    def produce(i):
        q = producers[i].Queue(base + "/q")
        for k in range(n_each):
            q.put(b"p%d-%03d" % (i, k))

    def consume(i):
        q = consumers[i].Queue(base + "/q")
        mine = []
        while True:
            item = q.get()
            if item is None:
                if done_producing.is_set() and len(q) == 0:
                    break
                time.sleep(0.01)
                continue
            mine.append(item)
        with guard:
            consumed.append(mine)

    cthreads = [threading.Thread(target=consume, args=(i,), daemon=True) for i in range(3)]
    [t.start() for t in cthreads]
    run_threads(produce, 2)
    done_producing.set()
    [t.join(timeout=60) for t in cthreads]
    assert not any(t.is_alive() for t in cthreads), "consumer stuck"
    assert len(consumed) == 3
    everything = [x for mine in consumed for x in mine]
    assert len(everything) == 2 * n_each
    assert len(set(everything)) == 2 * n_each
    # each consumer saw every producer's items in that producer's order
    for mine in consumed:
        for p in (b"p0", b"p1"):
            seq = [x for x in mine if x.startswith(p)]
            assert seq == sorted(seq)


@pytest.mark.timeout(120)
def test_locking_queue(kazoo_factory, base):
    producer = kazoo_factory()
    consumers = [kazoo_factory() for _ in range(3)]
    lq = producer.LockingQueue(base + "/lq")
    items = [b"job-%02d" % i for i in range(24)]
    for it in items:
        lq.put(it)
    assert len(lq) == 24
    done = []
    guard = threading.Lock()

    def consume(i):
        q = consumers[i].LockingQueue(base + "/lq")
        while True:
            item = q.get(timeout=1)
            if item is None:
                return
            with guard:
                done.append(item)
            assert q.consume()

    run_threads(consume, 3)
    assert sorted(done) == items
    assert len(lq) == 0


@pytest.mark.timeout(60)
def test_locking_queue_release_returns_item(kazoo_factory, base):
    a = kazoo_factory()
    b = kazoo_factory()
    qa = a.LockingQueue(base + "/lq")
    qa.put(b"only")
    assert qa.get(timeout=5) == b"only"
    qb = b.LockingQueue(base + "/lq")
    assert qb.get(timeout=0.5) is None  # taken by a
    assert qa.release()
    assert qb.get(timeout=5) == b"only"
    assert qb.consume()
    assert len(qb) == 0


@pytest.mark.timeout(120)
def test_election_one_leader_at_a_time(kazoo_factory, base):
    clients = [kazoo_factory() for _ in range(WORKERS)]
    leaders = []
    active = []
    guard = threading.Condition()
    release = {i: threading.Event() for i in range(WORKERS)}

    def lead(i):
        with guard:
            active.append(i)
            leaders.append(i)
            guard.notify_all()
        release[i].wait(60)
        with guard:
            active.remove(i)

    def contend(i):
        clients[i].Election(base + "/election", "c%d" % i).run(lead, i)

    threads = [threading.Thread(target=contend, args=(i,), daemon=True) for i in range(WORKERS)]
    [t.start() for t in threads]
    for turn in range(WORKERS):
        with guard:
            assert guard.wait_for(lambda: len(leaders) == turn + 1, timeout=30), leaders
            assert len(active) == 1
            current = active[0]
        # contenders() lists the leader first
        contenders = clients[0].Election(base + "/election").contenders()
        assert contenders[0] == "c%d" % current
        release[current].set()
    [t.join(timeout=30) for t in threads]
    assert sorted(leaders) == list(range(WORKERS))


@pytest.mark.timeout(60)
def test_barrier(kazoo_factory, base):
    owner = kazoo_factory()
    waiters = [kazoo_factory() for _ in range(3)]
    barrier = owner.Barrier(base + "/barrier")
    barrier.create()
    passed = []
    started = threading.Barrier(4)

    def wait(i):
        b = waiters[i].Barrier(base + "/barrier")
        started.wait(10)
        assert b.wait(timeout=30)
        passed.append(i)

    ts = [threading.Thread(target=wait, args=(i,), daemon=True) for i in range(3)]
    [t.start() for t in ts]
    started.wait(10)
    # nobody passes while the barrier stands
    assert not waiters[0].Barrier(base + "/barrier").wait(timeout=0.3)
    assert passed == []
    barrier.remove()
    [t.join(timeout=30) for t in ts]
    assert sorted(passed) == [0, 1, 2]


@pytest.mark.timeout(120)
def test_double_barrier(kazoo_factory, base):
    n = 3
    clients = [kazoo_factory() for _ in range(n)]
    entered_calls = []
    returned_from_enter = []
    left = []
    guard = threading.Lock()

    def member(i):
        db = clients[i].DoubleBarrier(base + "/db", n, identifier="m%d" % i)
        with guard:
            entered_calls.append(i)
        db.enter()
        with guard:
            # nobody gets in before everyone has arrived
            assert len(entered_calls) == n
            returned_from_enter.append(i)
        db.leave()
        with guard:
            left.append(i)

    run_threads(member, n)
    assert sorted(returned_from_enter) == list(range(n))
    assert sorted(left) == list(range(n))


@pytest.mark.timeout(60)
def test_party(kazoo_factory, base):
    clients = [kazoo_factory() for _ in range(3)]
    parties = [c.Party(base + "/party", "member-%d" % i) for i, c in enumerate(clients)]
    for p in parties:
        p.join()
    assert sorted(parties[0]) == ["member-0", "member-1", "member-2"]
    assert len(parties[1]) == 3
    parties[1].leave()
    assert sorted(parties[2]) == ["member-0", "member-2"]
    clients[2].stop()  # ephemeral membership ends with the session
    assert sorted(parties[0]) == ["member-0"]
