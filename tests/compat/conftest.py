"""Fixtures for the compatibility suite: one real server per test module.

See harness.py for how servers are started (RK_TARGET=ringkeeper|zookeeper).
"""

import re
import uuid

import pytest

import harness
import zkwire
from harness import Ensemble, Server, TcpProxy, make_kazoo


# ----------------------------------------------------------------------------
# fixtures


@pytest.fixture(scope="session")
def target():
    return harness.TARGET


@pytest.fixture(scope="module")
def server(request):
    """A fresh server (TTL nodes enabled) shared by the tests of one module."""
    s = Server(request.module.__name__.split(".")[-1])
    try:
        s.start()
        yield s
    finally:
        s.destroy()


@pytest.fixture
def fresh_server(request):
    """A fresh server for one test, for tests whose checks depend on global state."""
    s = Server(request.node.name)
    try:
        s.start()
        yield s
    finally:
        s.destroy()


@pytest.fixture
def server_factory(request):
    """Makes extra servers (e.g. with TTL disabled); all destroyed after the test."""
    made = []

    def make(ttl_enabled=True, start=True, **kw):
        s = Server("%s-%d" % (request.node.name, len(made)), ttl_enabled=ttl_enabled, **kw)
        made.append(s)
        return s.start() if start else s

    yield make
    for s in made:
        s.destroy()


@pytest.fixture
def ensemble(request):
    """Makes replicated ensembles (see harness.Ensemble), started unless
    `start=False`; all destroyed after the test."""
    made = []

    def make(size=3, start=True, **kw):
        e = Ensemble("%s-%d" % (request.node.name, len(made)), size=size, **kw)
        made.append(e)
        return e.start() if start else e

    yield make
    for e in made:
        e.destroy()


@pytest.fixture
def kazoo_clients():
    """Makes started kazoo clients on `hosts`; every one is stopped and closed
    after the test."""
    made = []

    def make(hosts, **kw):
        c = make_kazoo(hosts, **kw)
        made.append(c)
        return c

    yield make
    for c in made:
        try:
            c.stop()
            c.close()
        except Exception:
            pass


@pytest.fixture
def kazoo_factory(server, kazoo_clients):
    """Makes started kazoo clients on the module's server (or `hosts=`)."""
    return lambda hosts=None, **kw: kazoo_clients(hosts or server.hosts, **kw)


@pytest.fixture
def zk(kazoo_factory):
    return kazoo_factory()


@pytest.fixture
def base(zk, request):
    """A fresh, unique persistent node for this test to work under."""
    name = re.sub(r"[^A-Za-z0-9_-]+", "_", request.node.name)[:60]
    path = "/%s-%s" % (name, uuid.uuid4().hex[:8])
    zk.create(path, b"")
    return path


@pytest.fixture
def raw(server):
    """A zkwire.RawConn with a new session on the module's server."""
    c = zkwire.connect(server.addr)
    yield c
    c.close()


@pytest.fixture
def proxy(server):
    p = TcpProxy(server.addr)
    yield p
    p.close()


# ----------------------------------------------------------------------------
# reporting


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.failed:
        for s in list(harness.LIVE_SERVERS):
            rep.sections.append(
                ("%s log tail (%s)" % (s.target, s.log_path), s.log_tail())
            )


def pytest_sessionstart(session):
    # logs of earlier runs of this target would only confuse; each file is per server
    if harness.LOG_DIR.is_dir():
        for old in harness.LOG_DIR.glob("*.log"):
            old.unlink()


def pytest_report_header(config):
    if harness.TARGET == "ringkeeper":
        return "compat target: ringkeeper (%s)" % harness.ringkeeper_binary()
    return "compat target: zookeeper (classpath %s)" % harness.zookeeper_classpath()


def pytest_collection_modifyitems(config, items):
    for item in items:
        if harness.TARGET != "ringkeeper" and item.get_closest_marker("ringkeeper_only"):
            item.add_marker(pytest.mark.skip(reason="ringkeeper-only test"))
        if harness.TARGET != "zookeeper" and item.get_closest_marker("zookeeper_only"):
            item.add_marker(pytest.mark.skip(reason="zookeeper-only test"))
