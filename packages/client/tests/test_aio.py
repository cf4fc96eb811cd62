"""The async client over real TCP against scripted peers, on asyncio and on trio."""

from __future__ import annotations

import time
from typing import Any

import anyio
import pytest

from parakoon_client import (
    ArakoonNotConnected,
    ArakoonTimeout,
    AtLeast,
    NotFound,
    OutcomeUnknown,
)
from parakoon_client.aio import AsyncClient
from parakoon_client.codec import (
    AnyRequest,
    ErrorCode,
    Get,
    GetTxid,
    Sequence,
    Set,
    TestAndSet,
    USet,
    WhoMaster,
    encode_error,
    encode_response,
)
from parakoon_client.policy import Backoff

pytestmark = pytest.mark.anyio
FAST = Backoff(backoff_secs_min=0.01, backoff_secs_max=0.05)
WAIT_SECS = 5.0


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    backend: str = request.param
    return backend


def ok(request: AnyRequest, result: Any = None) -> bytes:
    return encode_response(request, result)


def err(code: int, message: str = "") -> bytes:
    return encode_error(code, message.encode())


class Store:
    def __init__(self, name: str, master: str | None = "self") -> None:
        self.name = name
        self.master = name if master == "self" else master
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
            case TestAndSet(key=key, expected=expected, wanted=wanted):
                before = self.data.get(key)
                if before == expected and wanted is not None:
                    self.data[key] = wanted
                return ok(request, before)
            case Sequence(updates=updates):
                for update in updates:
                    assert isinstance(update, USet)
                    self.data[update.key] = update.value
                return ok(request)
            case GetTxid():
                return ok(request, AtLeast(stamp=len(self.data)))
            case _:
                return err(ErrorCode.UNKNOWN_FAILURE, "unknown failure")


def client_for(*servers: tuple[str, Any], **kwargs: Any) -> AsyncClient:
    kwargs.setdefault("backoff", FAST)
    kwargs.setdefault("seed", 1)
    kwargs.setdefault("timeout_secs", 2.0)
    return AsyncClient("test", {name: s.address for name, s in servers}, **kwargs)


async def test_round_trip_sequence_and_txid(scripted: Any) -> None:
    store = Store("n0")
    server = scripted(store)
    async with client_for(("n0", server)) as client:
        await client.set(b"k", b"v")
        assert await client.get("k") == b"v"
        with pytest.raises(NotFound):
            await client.get(b"absent")
        async with client.sequence() as seq:
            seq.set(b"a", b"1")
        await client.sequence([USet(key=b"b", value=b"2")])
        await client.synced_sequence([USet(key=b"c", value=b"3")])
        assert await client.get_txid() == AtLeast(stamp=4)
        assert client.connected_nodes == ["n0"]
    assert store.data == {b"k": b"v", b"a": b"1", b"b": b"2", b"c": b"3"}
    assert server.connections == 1
    assert [r.synced for _, r in server.of_type(Sequence)] == [False, False, True]


async def test_redirect_on_not_master(scripted: Any) -> None:
    target = Store("n1", master=None)

    def n0(_conn: int, request: AnyRequest) -> bytes:
        if isinstance(request, WhoMaster):
            return ok(request, "n0")
        return err(ErrorCode.NOT_MASTER, "n1")

    s0, s1 = scripted(n0), scripted(target)
    async with client_for(("n0", s0), ("n1", s1)) as client:
        await client.set(b"k", b"v")
        assert client.master == "n1"
        assert client.connected_nodes == ["n1"]
    assert target.data == {b"k": b"v"}


async def test_timeouts_and_outcome_unknown(scripted: Any) -> None:
    server = scripted(lambda _c, _r: "silent")
    async with client_for(("n0", server), timeout_secs=0.2, retry_secs=0) as client:
        started = time.monotonic()
        with pytest.raises(ArakoonTimeout):
            await client.get(b"k")
        assert time.monotonic() - started < 1.5
        with pytest.raises(OutcomeUnknown) as info:
            await client.test_and_set(b"k", None, b"v")
        assert isinstance(info.value.cause, ArakoonTimeout)
        assert client.connected_nodes == []


async def test_refused_connection(closed_port: int) -> None:
    client = AsyncClient("test", {"n0": ("127.0.0.1", closed_port)}, retry_secs=0.2, backoff=FAST)
    async with client:
        with pytest.raises(ArakoonNotConnected, match="cannot connect"):
            await client.get(b"k")


async def test_idle_connection_closed_by_the_node_is_replaced_before_a_write(
    scripted: Any,
) -> None:
    store = Store("n0")
    server = scripted(lambda conn, request: ("then-close", store(conn, request)))
    async with client_for(("n0", server), retry_secs=0) as client:
        await client.set(b"k", b"v")
        conn = client._connections["n0"]
        with anyio.fail_after(WAIT_SECS):
            while not conn.looks_closed():
                await anyio.sleep(0.01)
        assert await client.test_and_set(b"k", b"v", b"w") == b"v"
    assert store.data == {b"k": b"w"}


async def test_a_cancelled_call_does_not_leave_its_answer_behind(scripted: Any) -> None:
    store = Store("n0")

    def first_request_hangs(conn: int, request: AnyRequest) -> bytes | str:
        return "silent" if conn == 0 else store(conn, request)

    server = scripted(first_request_hangs)
    async with client_for(("n0", server)) as client:
        with anyio.move_on_after(0.1) as scope:
            await client.get(b"k")
        assert scope.cancelled_caught
        await client.set(b"k", b"v")
        assert await client.get(b"k") == b"v"
    assert server.connections == 2


async def test_concurrent_calls_on_one_instance_take_turns(scripted: Any) -> None:
    store = Store("n0")
    server = scripted(store)
    results: dict[int, bytes] = {}
    async with client_for(("n0", server)) as client:

        async def worker(i: int) -> None:
            key = f"k{i}".encode()
            await client.set(key, str(i).encode())
            results[i] = await client.get(key)

        async with anyio.create_task_group() as tg:
            for i in range(20):
                tg.start_soon(worker, i)
    assert results == {i: str(i).encode() for i in range(20)}
    assert server.connections == 1


async def test_from_config(tmp_path: Any, scripted: Any) -> None:
    server = scripted(Store("node_0"))
    path = tmp_path / "cluster.toml"
    path.write_text(
        '[cluster]\nid = "test"\n[[nodes]]\nname = "node_0"\n'
        f'addresses = ["127.0.0.1:1"]\nclient_port = {server.address[1]}\n'
    )
    async with AsyncClient.from_config(path, timeout_secs=2) as client:
        assert await client.who_master() == "node_0"
