# spec: docs/spec/arakoon-client-protocol.md
"""Both clients over real TCP against scripted peers: routing, retries and transport rules.

One behavioural suite for the blocking :class:`Client` and the :class:`AsyncClient` (whose code
is the same: ``blocking.py`` is generated from ``aio.py``). Every test of the first part runs
three times, by the ``flavour`` fixture: the blocking client, and the async client on asyncio
and on trio, driven from the test's thread through an anyio blocking portal
(:class:`PortalClient`), so that one test body serves both. The tests after those are about
what only one client has: interruption of a blocking call by a signal, and cancellation and
shared use by concurrent tasks of the async client.

Each test scripts what the peer answers to each request (see conftest.py); the clients under
test are the real ones, with small timeouts so that the whole file runs in a few seconds.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import anyio
import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal
from parakoon_testing import wait_until

from parakoon_client import (
    NO_GUARANTEES,
    ArakoonNotConnected,
    ArakoonProtocolError,
    ArakoonTimeout,
    AssertionFailed,
    AtLeast,
    Client,
    InconsistentRead,
    NoMasterFound,
    NotFound,
    NotMaster,
    OutcomeUnknown,
    UnknownErrorCode,
)
from parakoon_client.aio import AsyncClient, AsyncSequenceContext
from parakoon_client.codec import (
    AnyRequest,
    Delete,
    ErrorCode,
    Get,
    GetTxid,
    MultiGetOption,
    Replace,
    Sequence,
    Set,
    TestAndSet,
    UDelete,
    USet,
    WhoMaster,
    encode_error,
    encode_response,
)
from parakoon_client.policy import Backoff

FAST = Backoff(backoff_secs_min=0.01, backoff_secs_max=0.05)
WAIT_SECS = 5.0
FLAVOURS = ["blocking", "asyncio", "trio"]


def err(code: int, message: str = "") -> bytes:
    return encode_error(code, message.encode())


def ok(request: AnyRequest, result: Any = None) -> bytes:
    return encode_response(request, result)


class Store:
    """A dict behind a scripted peer: answers the requests these tests send."""

    def __init__(self, name: str, master: str | None = None) -> None:
        self.name = name
        self.master = master if master is not None else name
        self.data: dict[bytes, bytes] = {}

    def __call__(self, _conn: int, request: AnyRequest) -> bytes:
        match request:
            case WhoMaster():
                return ok(request, self.master)
            case Get(key=key):
                if key not in self.data:
                    return err(ErrorCode.NOT_FOUND, "Not_found")
                return ok(request, self.data[key])
            case Set(key=key, value=value):
                self.data[key] = value
                return ok(request)
            case Delete(key=key):
                if self.data.pop(key, None) is None:
                    return err(ErrorCode.NOT_FOUND, key.decode())
                return ok(request)
            case TestAndSet(key=key, expected=expected, wanted=wanted):
                before = self.data.get(key)
                if before == expected:
                    if wanted is None:
                        self.data.pop(key, None)
                    else:
                        self.data[key] = wanted
                return ok(request, before)
            case MultiGetOption(keys=keys):
                return ok(request, [self.data.get(k) for k in keys])
            case Sequence(updates=updates):
                for update in updates:
                    assert isinstance(update, USet | UDelete)
                    if isinstance(update, USet):
                        self.data[update.key] = update.value
                    else:
                        self.data.pop(update.key, None)
                return ok(request)
            case GetTxid():
                return ok(request, AtLeast(stamp=len(self.data)))
            case _:
                return err(ErrorCode.UNKNOWN_FAILURE, "unknown failure")


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


# Makes a client as ``Client(...)`` would, of the flavour under test.
MakeClient = Callable[..., Any]


@pytest.fixture(params=FLAVOURS)
def flavour(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture
def make_client(flavour: str) -> Iterator[MakeClient]:
    """``make_client(cluster_id, nodes, **kwargs)``; ``make_client.from_config`` likewise."""
    if flavour == "blocking":
        yield Client
        return
    with start_blocking_portal(flavour) as portal:

        class Make:
            def __call__(self, *args: Any, **kwargs: Any) -> PortalClient:
                return PortalClient(AsyncClient(*args, **kwargs), portal)

            def from_config(self, *args: Any, **kwargs: Any) -> PortalClient:
                return PortalClient(AsyncClient.from_config(*args, **kwargs), portal)

        yield Make()


@pytest.fixture
def client_for(make_client: MakeClient) -> Callable[..., Any]:
    """A client of cluster "test" for ``(name, scripted server)`` pairs, fast back-off."""

    def make(*servers: tuple[str, Any], **kwargs: Any) -> Any:
        nodes = {name: server.address for name, server in servers}
        kwargs.setdefault("backoff", FAST)
        kwargs.setdefault("seed", 1)
        return make_client("test", nodes, **kwargs)

    return make


# --------------------------------------------------------------------------- both clients


def test_single_node_round_trip_on_one_connection(scripted: Any, client_for: Any) -> None:
    store = Store("n0")
    server = scripted(store)
    with client_for(("n0", server), timeout_secs=2) as client:
        client.set(b"k", b"v")
        client.set("text", "ü")
        assert client.get(b"k") == b"v"
        assert client.get(b"text") == "ü".encode()
        with pytest.raises(NotFound) as info:
            client.get(b"absent")
        assert info.value.message == "Not_found"
        # NotFound keeps the connection (§4.2): still one connection, still usable.
        assert client.multi_get_option([b"k", b"absent"]) == [b"v", None]
        assert client.connected_nodes == ["n0"]
    assert server.connections == 1
    # A single-node cluster needs no who_master round.
    assert server.of_type(WhoMaster) == []


def test_discovery_asks_who_master_and_follows_not_master(scripted: Any, client_for: Any) -> None:
    # n0 believes it is master but refuses writes, naming n1; n1 knows no master when asked
    # (so discovery settles on n0 whatever order it asks in) but accepts writes.
    n1_store = Store("n1")
    n1_store.master = None  # type: ignore[assignment]

    def n0(_conn: int, request: AnyRequest) -> bytes:
        if isinstance(request, WhoMaster):
            return ok(request, "n0")
        return err(ErrorCode.NOT_MASTER, "n1")

    s0, s1 = scripted(n0), scripted(n1_store)
    with client_for(("n0", s0), ("n1", s1), timeout_secs=2, retry_secs=5) as client:
        started = time.monotonic()
        client.set(b"k", b"v")
        elapsed = time.monotonic() - started
        assert client.master == "n1"
        assert n1_store.data == {b"k": b"v"}
        # NotMaster closes the connection (§4.2): the client dropped n0's.
        assert client.connected_nodes == ["n1"]
        client.set(b"k2", b"v2")
    # The redirect is followed at once, without a back-off pause.
    assert elapsed < 1.0
    assert len(s0.of_type(Set)) == 1
    assert len(s1.of_type(Set)) == 2


def test_no_master_anywhere_raises_no_master_found_within_the_bound(
    scripted: Any, client_for: Any
) -> None:
    def nobody(_conn: int, request: AnyRequest) -> bytes:
        return ok(request, None)

    s0, s1 = scripted(nobody), scripted(nobody)
    with client_for(("n0", s0), ("n1", s1), timeout_secs=0.5, retry_secs=0.4) as client:
        started = time.monotonic()
        with pytest.raises(NoMasterFound, match="knows no master"):
            client.get(b"k")
        assert time.monotonic() - started < 2.0
    assert len(s0.of_type(WhoMaster)) >= 2  # retried with back-off, not given up at once


def test_relaxed_reads_go_to_the_preferred_node(scripted: Any, client_for: Any) -> None:
    s0, s1 = scripted(Store("n0")), scripted(Store("n1", master="n0"))
    with client_for(("n0", s0), ("n1", s1), preferred_node="n1") as client:
        with pytest.raises(NotFound):
            client.get(b"k", consistency=NO_GUARANTEES)
        assert client.connected_nodes == ["n1"]
        assert s0.requests == []
        (_, request) = s1.requests[0]
        assert request == Get(key=b"k", consistency=NO_GUARANTEES)


def test_connection_refused_ends_in_not_connected(closed_port: int, make_client: Any) -> None:
    client = make_client("test", {"n0": ("127.0.0.1", closed_port)}, retry_secs=0.3, backoff=FAST)
    started = time.monotonic()
    with client, pytest.raises(ArakoonNotConnected, match="cannot connect to n0") as info:
        client.get(b"k")
    assert not info.value.request_sent
    assert time.monotonic() - started < 2.0


def test_silent_node_times_out(scripted: Any, client_for: Any) -> None:
    server = scripted(lambda _c, _r: "silent")
    with client_for(("n0", server), timeout_secs=0.2, retry_secs=0) as client:
        started = time.monotonic()
        with pytest.raises(ArakoonTimeout, match="did not answer") as info:
            client.get(b"k")
        elapsed = time.monotonic() - started
        assert info.value.request_sent
        # The timed-out connection is closed: a late answer must not be read as the next one.
        assert client.connected_nodes == []
        with pytest.raises(OutcomeUnknown) as unknown:
            client.test_and_set(b"k", None, b"v")
        assert isinstance(unknown.value.cause, ArakoonTimeout)
        assert client.connected_nodes == []
    assert 0.15 < elapsed < 1.5


def test_reads_retry_timeouts_until_the_bound(scripted: Any, client_for: Any) -> None:
    server = scripted(lambda _c, _r: "silent")
    with client_for(("n0", server), timeout_secs=0.1, retry_secs=0.5) as client:
        started = time.monotonic()
        with pytest.raises(ArakoonTimeout):
            client.get(b"k")
        elapsed = time.monotonic() - started
    assert server.connections >= 2
    assert 0.4 < elapsed < 2.0


def test_non_idempotent_write_with_lost_answer_is_outcome_unknown(
    scripted: Any, client_for: Any
) -> None:
    server = scripted(lambda _c, _r: "close")
    with client_for(("n0", server), timeout_secs=1, retry_secs=2) as client:
        with pytest.raises(OutcomeUnknown, match="outcome unknown for test_and_set") as info:
            client.test_and_set(b"k", None, b"v")
        assert isinstance(info.value.cause, ArakoonNotConnected)
        assert info.value.cause.request_sent
    # Sent once, never repeated.
    assert len(server.of_type(TestAndSet)) == 1


def test_timeout_of_a_non_idempotent_write_is_outcome_unknown(
    scripted: Any, client_for: Any
) -> None:
    server = scripted(lambda _c, _r: "silent")
    with client_for(("n0", server), timeout_secs=0.2, retry_secs=2) as client:
        with pytest.raises(OutcomeUnknown) as info:
            client.replace(b"k", b"v")
        assert isinstance(info.value.cause, ArakoonTimeout)
    assert len(server.of_type(Replace)) == 1


def test_idempotent_write_is_retried_after_a_lost_answer(scripted: Any, client_for: Any) -> None:
    store = Store("n0")

    def first_connection_drops(conn: int, request: AnyRequest) -> bytes | str:
        return "close" if conn == 0 else store(conn, request)

    server = scripted(first_connection_drops)
    with client_for(("n0", server), timeout_secs=1, retry_secs=5) as client:
        client.set(b"k", b"v")
    assert store.data == {b"k": b"v"}
    assert len(server.of_type(Set)) == 2


def test_idempotent_write_that_keeps_failing_reports_outcome_unknown(
    scripted: Any, client_for: Any
) -> None:
    server = scripted(lambda _c, _r: "close")
    with client_for(("n0", server), timeout_secs=0.5, retry_secs=0.3) as client:
        with pytest.raises(OutcomeUnknown, match="set") as info:
            client.set(b"k", b"v")
        assert isinstance(info.value.cause, ArakoonNotConnected)
    assert len(server.of_type(Set)) >= 2


def test_delete_not_found_after_a_lost_answer_is_outcome_unknown(
    scripted: Any, client_for: Any
) -> None:
    def handler(conn: int, request: AnyRequest) -> bytes | str:
        if conn == 0:
            return "close"  # maybe deleted, answer lost
        return err(ErrorCode.NOT_FOUND, "k")

    server = scripted(handler)
    with client_for(("n0", server), timeout_secs=1, retry_secs=5) as client:
        with pytest.raises(OutcomeUnknown, match="delete") as info:
            client.delete(b"k")
        assert isinstance(info.value.cause, ArakoonNotConnected)
        assert isinstance(info.value.__cause__, NotFound)
        # Without an earlier doubt, NotFound is just NotFound.
        with pytest.raises(NotFound):
            client.delete(b"k")


@pytest.mark.parametrize(
    ("code", "non_idempotent_raises"),
    [(ErrorCode.NO_LONGER_MASTER, True), (ErrorCode.GOING_DOWN, False)],
)
def test_no_longer_master_and_going_down(
    scripted: Any, client_for: Any, code: ErrorCode, non_idempotent_raises: bool
) -> None:
    store = Store("n0")

    def handler(conn: int, request: AnyRequest) -> bytes:
        if not isinstance(request, WhoMaster) and len(server.requests) <= 1:
            return err(code, "x")
        return store(conn, request)

    server = scripted(handler)
    with client_for(("n0", server), timeout_secs=1, retry_secs=5) as client:
        client.set(b"k", b"v")  # idempotent: retried either way
        server.requests.clear()
        if non_idempotent_raises:
            with pytest.raises(OutcomeUnknown):
                client.test_and_set(b"k", b"v", b"w")
            assert store.data[b"k"] == b"v"
        else:
            assert client.test_and_set(b"k", b"v", b"w") == b"v"
            assert store.data[b"k"] == b"w"


def test_idle_connection_closed_by_the_node_is_replaced_before_a_write(
    scripted: Any, client_for: Any
) -> None:
    # Every connection answers one request, then the node closes it (as a restart would).
    store = Store("n0")
    server = scripted(lambda conn, request: ("then-close", store(conn, request)))
    with client_for(("n0", server), timeout_secs=1, retry_secs=0) as client:
        client.set(b"k", b"v")
        _wait_closed(client)
        # retry_secs=0: no second attempt, so this passes only if the dead connection was
        # noticed and replaced before the request was sent.
        assert client.test_and_set(b"k", b"v", b"w") == b"v"
    assert store.data == {b"k": b"w"}
    assert server.connections == 2


def _wait_closed(client: Any) -> None:
    """Wait until the server-side close of the client's connection to n0 is visible."""
    conn = client._connections["n0"]
    wait_until(conn.looks_closed, "the peer closed the idle connection", timeout=5, interval=0.01)


def test_inconsistent_read_is_retried(scripted: Any, client_for: Any) -> None:
    answers = iter(
        [err(ErrorCode.INCONSISTENT_READ, "store not fresh enough")] * 2 + [ok(Get(key=b""), b"v")]
    )
    server = scripted(lambda _c, _r: next(answers))
    with client_for(("n0", server), timeout_secs=1, retry_secs=5) as client:
        assert client.get(b"k", consistency=AtLeast(stamp=3)) == b"v"
    assert server.connections == 1  # 0x80 keeps the connection (§4.2)


def test_inconsistent_read_raises_when_the_bound_runs_out(scripted: Any, client_for: Any) -> None:
    server = scripted(lambda _c, _r: err(ErrorCode.INCONSISTENT_READ, "store not fresh enough"))
    client = client_for(("n0", server), timeout_secs=0.3, retry_secs=0.2)
    with client, pytest.raises(InconsistentRead):
        client.get(b"k", consistency=AtLeast(stamp=3))


def test_wrong_cluster_id_says_so(scripted: Any, make_client: Any) -> None:
    server = scripted(Store("n0"))
    client = make_client("other", {"n0": server.address}, retry_secs=0, timeout_secs=1)
    with client, pytest.raises(ArakoonNotConnected, match="cluster id"):
        client.get(b"k")


def test_garbage_answer_is_a_protocol_error_and_not_retried(scripted: Any, client_for: Any) -> None:
    server = scripted(lambda _c, _r: b"\x00\x00\x00\x00\x01\x02")  # unit answer + 2 stray bytes
    with client_for(("n0", server)) as client:
        with pytest.raises(ArakoonProtocolError, match="after the end"):
            client.set(b"k", b"v")
        assert client.connected_nodes == []
    assert len(server.requests) == 1


def test_server_errors_map_to_their_classes(scripted: Any, client_for: Any) -> None:
    answers = iter([err(ErrorCode.ASSERTION_FAILED, "k"), err(0x42, "new code")])
    server = scripted(lambda _c, _r: next(answers))
    with client_for(("n0", server)) as client:
        with pytest.raises(AssertionFailed) as info:
            client.assert_(b"k", b"v")
        assert (info.value.code, info.value.message) == (0x07, "k")
        with pytest.raises(UnknownErrorCode) as unknown:
            client.get(b"k")
        assert unknown.value.code == 0x42


def test_pinned_node_never_follows_a_redirect(scripted: Any, client_for: Any) -> None:
    server = scripted(lambda _c, _r: err(ErrorCode.NOT_MASTER, "n1"))
    other = scripted(Store("n1"))
    with client_for(("n0", server), ("n1", other)) as client:
        with pytest.raises(NotMaster) as info:
            client.call(Set(key=b"k", value=b"v"), node="n0")
        assert info.value.master == "n1"
        with pytest.raises(ValueError, match="unknown node"):
            client.who_master(node="n9")
    assert other.requests == []


def test_sequence_builder_sends_on_exit_only(scripted: Any, client_for: Any) -> None:
    store = Store("n0")
    server = scripted(store)
    with client_for(("n0", server)) as client:
        with client.sequence() as seq:
            seq.set(b"a", b"1").set(b"b", b"2")
            seq.delete(b"a")
        assert store.data == {b"b": b"2"}
        with pytest.raises(RuntimeError), client.sequence() as seq:
            seq.set(b"c", b"3")
            raise RuntimeError("changed my mind")
        client.sequence([USet(key=b"d", value=b"4")])
        client.synced_sequence([USet(key=b"e", value=b"5")])
    assert store.data == {b"b": b"2", b"d": b"4", b"e": b"5"}
    sent = [r for _, r in server.of_type(Sequence)]
    assert [r.synced for r in sent] == [False, False, True]
    assert sent[0].updates == (
        USet(key=b"a", value=b"1"),
        USet(key=b"b", value=b"2"),
        UDelete(key=b"a"),
    )


def test_get_txid_gives_a_stamp_for_read_your_writes(scripted: Any, client_for: Any) -> None:
    store = Store("n0")
    server = scripted(store)
    with client_for(("n0", server)) as client:
        client.set(b"k", b"v")
        stamp = client.get_txid()
        assert stamp == AtLeast(stamp=1)
        assert client.get(b"k", consistency=stamp) == b"v"
    assert server.requests[-1][1] == Get(key=b"k", consistency=AtLeast(stamp=1))


def test_from_config(tmp_path: Any, scripted: Any, make_client: Any) -> None:
    server = scripted(Store("node_0"))
    path = tmp_path / "cluster.toml"
    path.write_text(
        '[cluster]\nid = "test"\n[[nodes]]\nname = "node_0"\n'
        f'addresses = ["127.0.0.1:1"]\nclient_port = {server.address[1]}\n'
    )
    with make_client.from_config(path, node="node_0", timeout_secs=2) as client:
        assert client.cluster_id == "test"
        assert dict(client.nodes) == {"node_0": server.address}
        client.set(b"k", b"v")
        assert client.get(b"k") == b"v"
        assert client.who_master() == "node_0"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"timeout_secs": 0},
        {"retry_secs": -1},
        {"preferred_node": "nope"},
    ],
)
def test_bad_settings_are_refused(kwargs: dict[str, Any], make_client: Any) -> None:
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        make_client("test", {"n0": ("127.0.0.1", 1)}, **kwargs)
    with pytest.raises(ValueError, match="at least one node"):
        make_client("test", {})


# --------------------------------------------------------------------------- one client only


def test_an_interrupted_blocking_call_does_not_leave_its_answer_behind(scripted: Any) -> None:
    store = Store("n0")

    def first_request_hangs(conn: int, request: AnyRequest) -> bytes | str:
        return "silent" if conn == 0 else store(conn, request)

    def interrupt(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    server = scripted(first_request_hangs)
    previous = signal.signal(signal.SIGALRM, interrupt)
    try:
        with Client("test", {"n0": server.address}, timeout_secs=5, backoff=FAST) as client:
            signal.setitimer(signal.ITIMER_REAL, 0.1)
            with pytest.raises(KeyboardInterrupt):
                client.get(b"k")
            client.set(b"k", b"v")
            assert client.get(b"k") == b"v"
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert server.connections == 2


def async_client(*servers: tuple[str, Any], **kwargs: Any) -> AsyncClient:
    kwargs.setdefault("backoff", FAST)
    kwargs.setdefault("seed", 1)
    kwargs.setdefault("timeout_secs", 2.0)
    return AsyncClient("test", {name: s.address for name, s in servers}, **kwargs)


@pytest.mark.anyio
async def test_a_cancelled_call_does_not_leave_its_answer_behind(scripted: Any) -> None:
    store = Store("n0")

    def first_request_hangs(conn: int, request: AnyRequest) -> bytes | str:
        return "silent" if conn == 0 else store(conn, request)

    server = scripted(first_request_hangs)
    async with async_client(("n0", server)) as client:
        with anyio.move_on_after(0.1) as scope:
            await client.get(b"k")
        assert scope.cancelled_caught
        await client.set(b"k", b"v")
        assert await client.get(b"k") == b"v"
    assert server.connections == 2


@pytest.mark.anyio
async def test_concurrent_calls_on_one_instance_take_turns(scripted: Any) -> None:
    store = Store("n0")
    server = scripted(store)
    results: dict[int, bytes] = {}
    async with async_client(("n0", server)) as client:

        async def worker(i: int) -> None:
            key = f"k{i}".encode()
            await client.set(key, str(i).encode())
            results[i] = await client.get(key)

        async with anyio.create_task_group() as tg:
            for i in range(20):
                tg.start_soon(worker, i)
    assert results == {i: str(i).encode() for i in range(20)}
    assert server.connections == 1
