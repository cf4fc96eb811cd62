"""Both clients against the node's real client-protocol server over 127.0.0.1.

One behavioural suite, written as blocking calls, for the blocking :class:`Client` and the
:class:`AsyncClient` (whose code is the same: ``blocking.py`` is generated from ``aio.py``):
every test runs three times, by the ``flavour`` fixture: the blocking client, and the async
client on asyncio and on trio, driven from the test's thread through the anyio blocking portal
that also runs the servers (:class:`PortalClient`). What only the async client has (many
clients on one event loop) is in ``test_client_aio.py``.

The servers here are ``parakoon_node.clientserver.serve`` (the node's server layer: codec,
close rules, connection limit) over ``LocalBackend`` and the ``parakoon_kv`` store, run in a
background event loop. Two-node set-ups use :class:`RoleBackend`, a ``LocalBackend`` that
plays master or follower by a shared :class:`Roles` record and replicates by replaying the
master's log: enough to make real servers answer ``NOT_MASTER`` with a master's name,
``INCONSISTENT_READ`` for a lagging follower, and stall or lose mastership on demand.

Covered: every operation against a real store (and a seeded randomized run against a dict
oracle), redirect on NOT_MASTER after a failover, read-your-writes with ``get_txid`` and
``AtLeast`` on a follower, reconnect after a server restart (including a write that is not
safe to repeat), a call that waits out a restarting node, timeouts of a stalled node, E_NO_LONGER
_MASTER, the connection limit and a wrong cluster id.
"""

from __future__ import annotations

import os
import random
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeAlias

import anyio
import anyio.abc
import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal
from parakoon_testing import wait_until

import parakoon_kv as kv
from parakoon_client import (
    NO_GUARANTEES,
    ArakoonNotConnected,
    ArakoonTimeout,
    AssertionFailed,
    AtLeast,
    BadInput,
    Client,
    InconsistentRead,
    MaxConnections,
    NotFound,
    NotMaster,
    OutcomeUnknown,
)
from parakoon_client.aio import AsyncClient, AsyncSequenceContext
from parakoon_client.codec import (
    Consistency,
    Consistent,
    Get,
    NamedList,
    StatisticsReport,
    Update,
    UReplace,
    USet,
)
from parakoon_client.policy import Backoff
from parakoon_node.clientserver import (
    ClientServer,
    LocalBackend,
    NoLongerMaster,
    serve,
    to_kv_update,
)
from parakoon_node.clientserver import (
    InconsistentRead as BackendInconsistentRead,
)
from parakoon_node.clientserver import (
    NotMaster as BackendNotMaster,
)

CLUSTER_ID = "client-tests"
FAST = Backoff(backoff_secs_min=0.01, backoff_secs_max=0.1)
WAIT_SECS = 10.0
FLAVOURS = ["blocking", "asyncio", "trio"]


# --------------------------------------------------------------------------- servers


@dataclass
class Roles:
    """The cluster as the backends see it: who is master, and the master's log of writes."""

    master: str = "node_0"
    log: list[tuple[int, kv.Update]] = field(default_factory=list)


class RoleBackend(LocalBackend):
    """A node of a pretend cluster: master or follower as ``roles.master`` says.

    A follower refuses writes and consistent reads with NOT_MASTER naming the master. It
    catches up with the master's log before every write it takes as master, and when an
    ``AtLeast`` read finds it behind it answers INCONSISTENT_READ and then catches up (the
    replication "arrives" just after the refusal, so a client's retry sees it).
    ``stall`` makes writes and consistent reads wait forever (a master without a quorum);
    ``lose_next_write`` answers the next write with NO_LONGER_MASTER after applying it.
    """

    def __init__(self, roles: Roles, name: str) -> None:
        super().__init__(cluster_id=CLUSTER_ID, node_name=name)
        self.roles = roles
        self.stall = False
        self.lose_next_write = False
        self.inconsistent_reads = 0

    def catch_up(self) -> None:
        for i, update in self.roles.log:
            if i > self.txid():
                self.store.apply_batch(i, [update])

    async def check_read(self, consistency: Consistency) -> None:
        if isinstance(consistency, Consistent):
            if self.roles.master != self.node_name:
                raise BackendNotMaster(self.roles.master)
            if self.stall:
                await anyio.sleep_forever()
        if isinstance(consistency, AtLeast) and consistency.stamp > self.txid():
            self.inconsistent_reads += 1
            self.catch_up()
            raise BackendInconsistentRead()
        await super().check_read(consistency)

    async def write(self, update: Update) -> kv.Result:
        if self.roles.master != self.node_name:
            raise BackendNotMaster(self.roles.master)
        if self.stall:
            await anyio.sleep_forever()
        self.catch_up()
        result = await super().write(update)
        self.roles.log.append((self.txid(), to_kv_update(update)))
        if self.lose_next_write:
            self.lose_next_write = False
            raise NoLongerMaster()
        return result

    def who_master(self) -> str | None:
        return self.roles.master


class RunningServer:
    """A client server in the background event loop, stoppable and restartable on its port."""

    def __init__(self, portal: BlockingPortal, backend: LocalBackend, **options: Any) -> None:
        self.portal = portal
        self.backend = backend
        self.options = options
        self.port = 0
        self.server: ClientServer | None = None
        self._scope: anyio.CancelScope | None = None
        self._stopped = threading.Event()

    async def _run(
        self, *, task_status: anyio.abc.TaskStatus[ClientServer] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        try:
            with anyio.CancelScope() as scope:
                self._scope = scope
                async with anyio.create_task_group() as tg:
                    run = partial(
                        serve, self.backend, host="127.0.0.1", port=self.port, **self.options
                    )
                    server = await tg.start(run)
                    task_status.started(server)
        finally:
            self._stopped.set()

    def start(self) -> RunningServer:
        self._stopped.clear()
        _, self.server = self.portal.start_task(self._run)
        assert self.server.port is not None
        self.port = self.server.port
        return self

    def stop(self) -> None:
        """Stop listening and drop every connection, as a crash of the node would."""
        scope = self._scope
        assert scope is not None
        self.portal.call(scope.cancel)
        assert self._stopped.wait(WAIT_SECS), "server did not stop"

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)


@pytest.fixture(params=FLAVOURS)
def flavour(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture
def portal(flavour: str) -> Iterator[BlockingPortal]:
    """The event loop of the servers, and of the async client (trio for the trio flavour)."""
    with start_blocking_portal("trio" if flavour == "trio" else "asyncio") as running:
        yield running


class PortalClient:
    """An :class:`AsyncClient` used like a :class:`Client`: each call runs on the portal's loop.

    Methods return what the awaited call returns (or raise what it raises); ``close`` is
    ``aclose``; a sequence context becomes a blocking ``with`` block; attributes and properties
    are the client's own.
    """

    def __init__(self, client: AsyncClient, portal: BlockingPortal) -> None:
        self._client = client
        self._portal = portal

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            result = self._portal.call(partial(attr, *args, **kwargs))
            if isinstance(result, AsyncSequenceContext):
                return self._portal.wrap_async_context_manager(result)
            return result

        return call

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._portal.call(self._client.aclose)


# ``make_client(cluster_id, nodes, **kwargs)``: a client of the flavour under test.
MakeClient: TypeAlias = Callable[..., Any]


@pytest.fixture
def make_client(flavour: str, portal: BlockingPortal) -> MakeClient:
    if flavour == "blocking":
        return Client
    return lambda *args, **kwargs: PortalClient(AsyncClient(*args, **kwargs), portal)


@pytest.fixture
def start(portal: BlockingPortal) -> Iterator[Callable[..., RunningServer]]:
    servers: list[RunningServer] = []

    def make(backend: LocalBackend, **options: Any) -> RunningServer:
        options.setdefault("linger_secs", 0.2)
        server = RunningServer(portal, backend, **options).start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        if not server._stopped.is_set():
            server.stop()


def single(
    start: Callable[..., RunningServer], make_client: MakeClient, **options: Any
) -> tuple[LocalBackend, Any]:
    backend = LocalBackend(cluster_id=CLUSTER_ID, node_name="node_0")
    server = start(backend)
    options.setdefault("backoff", FAST)
    options.setdefault("timeout_secs", 5.0)
    return backend, make_client(CLUSTER_ID, {"node_0": server.address}, seed=1, **options)


# --------------------------------------------------------------------------- operations


def test_every_operation_against_a_real_node(
    start: Callable[..., RunningServer], make_client: MakeClient
) -> None:
    backend, client = single(start, make_client)
    with client:
        client.set(b"a", b"1")
        client.set("b", "2")
        client.confirm(b"c", b"3")
        client.confirm(b"c", b"3")
        assert client.get(b"a") == b"1"
        assert client.exists(b"b")
        assert not client.exists(b"zz")
        assert client.range() == [b"a", b"b", b"c"]
        assert client.range(b"a", b"c", first_inclusive=False, last_inclusive=False) == [b"b"]
        assert client.range(max_keys=2) == [b"a", b"b"]
        assert client.range_entries(b"b") == [(b"b", b"2"), (b"c", b"3")]
        assert client.rev_range_entries(max_keys=2) == [(b"c", b"3"), (b"b", b"2")]
        assert client.prefix(b"") == [b"a", b"b", b"c"]
        assert client.multi_get([b"c", b"a"]) == [b"3", b"1"]
        with pytest.raises(NotFound) as missing:
            client.multi_get([b"a", b"zz"])
        assert missing.value.message == "zz"
        assert client.multi_get_option([b"zz", b"b"]) == [None, b"2"]
        assert client.test_and_set(b"a", b"1", b"one") == b"1"
        assert client.test_and_set(b"a", b"1", b"uno") == b"one"
        assert client.replace(b"a", None) == b"one"
        assert client.replace(b"a", b"1") is None
        client.assert_(b"a", b"1")
        client.assert_(b"zz", None)
        client.assert_exists(b"b")
        with pytest.raises(AssertionFailed):
            client.assert_(b"a", b"2")
        with pytest.raises(AssertionFailed):
            client.assert_exists(b"zz")
        client.delete(b"b")
        with pytest.raises(NotFound):
            client.delete(b"b")
        with client.sequence() as seq:
            seq.set(b"p1", b"x").set(b"p2", b"y").assert_exists(b"p1")
        client.synced_sequence([USet(key=b"p3", value=b"z"), UReplace(key=b"c", wanted=None)])
        # A failing assert rolls the whole sequence back.
        with pytest.raises(AssertionFailed), client.sequence() as seq:
            seq.set(b"p5", b"v").assert_(b"p5", b"other")
        assert not client.exists(b"p5")
        assert client.delete_prefix(b"p") == 3
        assert client.get_key_count() == 1
        client.nop()
        with pytest.raises(BadInput):
            client.user_function("no-such-function", b"arg")
        assert client.who_master() == "node_0"
        assert client.expect_progress_possible()
        assert client.current_state() == "Stable_master"
        assert client.ping().startswith("Arakoon ")
        assert client.version().major == 1
        stats = client.statistics()
        assert isinstance(stats, NamedList)
        assert stats.name == "arakoon_stats"
        assert StatisticsReport.from_tree(stats).node_is == (("node_0", backend.txid()),)
        stamp = client.get_txid()
        assert stamp == AtLeast(stamp=backend.txid())
        assert client.get(b"a", consistency=stamp) == b"1"
        assert client.get(b"a", consistency=NO_GUARANTEES) == b"1"
        assert client.connected_nodes == ["node_0"]


def test_randomized_operations_match_a_dict(
    start: Callable[..., RunningServer], make_client: MakeClient, seed: int
) -> None:
    rng = random.Random(seed)
    steps = 2000 if os.environ.get("PARAKOON_LONG") else 300
    _, client = single(start, make_client)
    oracle: dict[bytes, bytes] = {}
    keys = [f"k{i:02d}".encode() for i in range(20)]
    with client:
        for step in range(steps):
            key = rng.choice(keys)
            value = f"v{step}".encode()
            match rng.randrange(8):
                case 0 | 1:
                    client.set(key, value)
                    oracle[key] = value
                case 2:
                    if key in oracle:
                        client.delete(key)
                        del oracle[key]
                    else:
                        with pytest.raises(NotFound):
                            client.delete(key)
                case 3:
                    expected = oracle.get(key) if rng.random() < 0.5 else b"nope"
                    before = client.test_and_set(key, expected, value)
                    assert before == oracle.get(key)
                    if before == expected:
                        oracle[key] = value
                case 4:
                    wanted = value if rng.random() < 0.7 else None
                    assert client.replace(key, wanted) == oracle.get(key)
                    if wanted is None:
                        oracle.pop(key, None)
                    else:
                        oracle[key] = wanted
                case 5:
                    lo, hi = sorted(rng.sample(keys, 2))
                    expect = sorted(k for k in oracle if lo <= k < hi)
                    assert client.range(lo, hi, last_inclusive=False) == expect
                case 6:
                    chosen = rng.sample(keys, 3)
                    assert client.multi_get_option(chosen) == [oracle.get(k) for k in chosen]
                case _:
                    with client.sequence() as seq:
                        for k in rng.sample(keys, 3):
                            seq.set(k, value)
                            oracle[k] = value
        assert client.range_entries() == sorted(oracle.items())


# --------------------------------------------------------------------------- two nodes


def pair(
    start: Callable[..., RunningServer], make_client: MakeClient, **options: Any
) -> tuple[Roles, dict[str, RoleBackend], Any]:
    roles = Roles()
    backends = {name: RoleBackend(roles, name) for name in ("node_0", "node_1")}
    servers = {name: start(backend) for name, backend in backends.items()}
    options.setdefault("backoff", FAST)
    options.setdefault("timeout_secs", 5.0)
    nodes = {name: server.address for name, server in servers.items()}
    return roles, backends, make_client(CLUSTER_ID, nodes, seed=3, **options)


def test_redirect_on_not_master_after_a_failover(
    start: Callable[..., RunningServer], make_client: MakeClient
) -> None:
    roles, backends, client = pair(start, make_client)
    with client:
        client.set(b"k", b"before")
        assert client.master == "node_0"
        roles.master = "node_1"  # failover: node_0 now answers NOT_MASTER "node_1"
        started = time.monotonic()
        client.set(b"k", b"after")
        assert time.monotonic() - started < 2.0
        assert client.master == "node_1"
        assert backends["node_1"].store.get(b"k") == b"after"
        assert backends["node_0"].store.get(b"k") == b"before"
        # NOT_MASTER closed node_0's connection (protocol §4.2); consistent reads follow the master.
        assert client.connected_nodes == ["node_1"]
        assert client.get(b"k") == b"after"


def test_consistent_read_on_a_follower_is_redirected(
    start: Callable[..., RunningServer], make_client: MakeClient
) -> None:
    roles, backends, client = pair(start, make_client, preferred_node="node_1")
    with client:
        client.set(b"k", b"v")  # discovery: both name node_0
        roles.master = "node_1"
        backends["node_1"].catch_up()
        # The client still believes node_0 is master: its read is refused and redirected.
        assert client.get(b"k") == b"v"
        assert client.master == "node_1"


def test_read_your_writes_on_a_follower(
    start: Callable[..., RunningServer], make_client: MakeClient
) -> None:
    _, backends, client = pair(start, make_client, preferred_node="node_1")
    follower = backends["node_1"]
    with client:
        client.set(b"k", b"v1")
        stamp = client.get_txid()
        assert stamp == AtLeast(stamp=backends["node_0"].txid())
        # A dirty read on the lagging follower does not see the write...
        with pytest.raises(NotFound):
            client.get(b"k", consistency=NO_GUARANTEES)
        # ...an AtLeast read is refused until the follower caught up, and retried.
        assert client.get(b"k", consistency=stamp) == b"v1"
        assert follower.inconsistent_reads == 1
        assert client.connected_nodes == ["node_0", "node_1"]


def test_at_least_read_gives_up_when_the_follower_never_catches_up(
    start: Callable[..., RunningServer], make_client: MakeClient
) -> None:
    _, _, client = pair(start, make_client, preferred_node="node_1", retry_secs=0.3)
    with client, pytest.raises(InconsistentRead):
        client.get(b"k", consistency=AtLeast(stamp=99))


def test_pinned_node_reports_not_master(
    start: Callable[..., RunningServer], make_client: MakeClient
) -> None:
    _, backends, client = pair(start, make_client)
    with client:
        with pytest.raises(NotMaster) as info:
            client.call(Get(key=b"k"), node="node_1")
        assert info.value.master == "node_0"
        assert client.who_master(node="node_1") == "node_0"
        assert backends["node_0"].store.key_count() == 0


# --------------------------------------------------------------------------- failures


def test_reconnect_after_the_server_restarts(
    start: Callable[..., RunningServer], make_client: MakeClient
) -> None:
    backend = LocalBackend(cluster_id=CLUSTER_ID, node_name="node_0")
    server = start(backend)
    client = make_client(
        CLUSTER_ID, {"node_0": server.address}, timeout_secs=5, retry_secs=5, backoff=FAST
    )
    with client:
        client.set(b"k", b"v")
        server.stop()
        server.start()  # same port, same store: a node that restarted from its log
        assert client.get(b"k") == b"v"
        server.stop()
        server.start()
        _wait_until_closed(client, "node_0")
        # Not safe to repeat, but the dead connection is noticed before sending: no doubt.
        assert client.test_and_set(b"k", b"v", b"w") == b"v"
        assert backend.store.get(b"k") == b"w"


def _wait_until_closed(client: Any, node: str) -> None:
    conn = client._connections[node]
    wait_until(
        conn.looks_closed, "the restarted server's close arrived", timeout=WAIT_SECS, interval=0.01
    )


def test_a_call_waits_out_a_restarting_node(
    portal: BlockingPortal, make_client: MakeClient
) -> None:
    """While the node restarts its port accepts and drops connections; the call retries."""
    backend = LocalBackend(cluster_id=CLUSTER_ID, node_name="node_0")
    with socket.create_server(("127.0.0.1", 0)) as flapping:
        port = flapping.getsockname()[1]
        accepted = 0
        client = make_client(
            CLUSTER_ID, {"node_0": ("127.0.0.1", port)}, timeout_secs=5, retry_secs=10, backoff=FAST
        )
        outcome: list[object] = []

        def call() -> None:
            try:
                client.set(b"k", b"v")
                outcome.append(client.get(b"k"))
            except Exception as exc:
                outcome.append(exc)

        worker = threading.Thread(target=call)
        worker.start()
        flapping.settimeout(WAIT_SECS)
        while accepted < 3:  # three failed attempts seen: the client is retrying
            conn, _ = flapping.accept()
            conn.close()
            accepted += 1
    server = RunningServer(portal, backend, linger_secs=0.2)
    server.port = port
    server.start()
    try:
        worker.join(WAIT_SECS)
        assert not worker.is_alive()
        assert outcome == [b"v"]
    finally:
        client.close()
        server.stop()


def test_stalled_master_times_out(
    start: Callable[..., RunningServer], make_client: MakeClient
) -> None:
    backend = RoleBackend(Roles(), "node_0")
    server = start(backend)
    client = make_client(
        CLUSTER_ID, {"node_0": server.address}, timeout_secs=0.3, retry_secs=0.5, backoff=FAST
    )
    with client:
        client.set(b"k", b"v")
        backend.stall = True
        started = time.monotonic()
        with pytest.raises(ArakoonTimeout):
            client.get(b"k")
        assert time.monotonic() - started < 0.5 + 0.3 + 1.0
        started = time.monotonic()
        with pytest.raises(OutcomeUnknown) as info:
            client.test_and_set(b"k", b"v", b"w")
        assert time.monotonic() - started < 0.3 + 1.0
        assert isinstance(info.value.cause, ArakoonTimeout)
        with pytest.raises(OutcomeUnknown) as replaced:
            client.replace(b"k", b"w")
        assert isinstance(replaced.value.cause, ArakoonTimeout)
        with pytest.raises(OutcomeUnknown, match="outcome unknown for set"):
            client.set(b"k", b"x")
        # Dirty reads do not need the master's quorum and still work.
        assert client.get(b"k", consistency=NO_GUARANTEES) == b"v"
        backend.stall = False
        assert client.get(b"k") == b"v"


def test_no_longer_master(start: Callable[..., RunningServer], make_client: MakeClient) -> None:
    backend = RoleBackend(Roles(), "node_0")
    server = start(backend)
    client = make_client(CLUSTER_ID, {"node_0": server.address}, timeout_secs=5, backoff=FAST)
    with client:
        backend.lose_next_write = True
        client.set(b"k", b"v")  # idempotent: repeated after NO_LONGER_MASTER
        assert backend.store.get(b"k") == b"v"
        backend.lose_next_write = True
        with pytest.raises(OutcomeUnknown) as info:
            client.replace(b"k", b"w")
        assert info.value.cause.code == 0x21
        assert backend.store.get(b"k") == b"w"  # it was applied: hence "unknown", not "failed"


def test_connection_limit(start: Callable[..., RunningServer], make_client: MakeClient) -> None:
    backend = LocalBackend(cluster_id=CLUSTER_ID)
    server = start(backend, max_connections=1)
    nodes = {"node_0": server.address}
    with make_client(CLUSTER_ID, nodes, timeout_secs=5, backoff=FAST) as first:
        first.set(b"k", b"v")
        second = make_client(CLUSTER_ID, nodes, timeout_secs=5, retry_secs=0.2, backoff=FAST)
        with second, pytest.raises(MaxConnections, match="too many clients"):
            second.get(b"k")
    with second:
        assert second.get(b"k") == b"v"


def test_wrong_cluster_id(start: Callable[..., RunningServer], make_client: MakeClient) -> None:
    server = start(LocalBackend(cluster_id=CLUSTER_ID))
    client = make_client(
        "another-cluster", {"node_0": server.address}, retry_secs=0, timeout_secs=5
    )
    with client, pytest.raises(ArakoonNotConnected, match="cluster id"):
        client.get(b"k")


def test_node_down_for_good(start: Callable[..., RunningServer], make_client: MakeClient) -> None:
    server = start(LocalBackend(cluster_id=CLUSTER_ID))
    address = server.address
    server.stop()
    client = make_client(CLUSTER_ID, {"node_0": address}, retry_secs=0.3, backoff=FAST)
    started = time.monotonic()
    with client, pytest.raises(ArakoonNotConnected, match="cannot connect"):
        client.get(b"k")
    assert time.monotonic() - started < 0.3 + 1.0


def test_large_answers_arrive_in_many_pieces(
    start: Callable[..., RunningServer], make_client: MakeClient
) -> None:
    _, client = single(start, make_client)
    big = bytes(range(256)) * 16 * 1024  # 4 MiB: many receives, below the 8 MiB value limit
    with client:
        client.set(b"big", big)
        assert client.get(b"big") == big
        with client.sequence() as seq:
            for i in range(2000):
                seq.set(f"many{i:05d}".encode(), b"x" * 100)
        entries = client.range_entries(b"many")
        assert len(entries) == 2000
        assert entries[0] == (b"many00000", b"x" * 100)
        assert client.prefix(b"many", max_keys=3) == [b"many00000", b"many00001", b"many00002"]
