"""The async client against the node's real client-protocol server, on asyncio and on trio.

Server (``parakoon_node.clientserver.serve`` over ``LocalBackend`` and the ``parakoon_kv``
store) and clients share one event loop here. ``RoleBackend`` plays master or follower of a
pretend two-node cluster, as in ``test_client_blocking.py`` (see there for the details).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import anyio
import anyio.abc
import pytest

import parakoon_kv as kv
from parakoon_client import (
    ArakoonTimeout,
    AssertionFailed,
    AtLeast,
    NotFound,
    OutcomeUnknown,
)
from parakoon_client.aio import AsyncClient
from parakoon_client.codec import Consistency, Consistent, Update, USet
from parakoon_client.policy import Backoff
from parakoon_node.clientserver import (
    ClientServer,
    LocalBackend,
    serve,
    to_kv_update,
)
from parakoon_node.clientserver import (
    NotMaster as BackendNotMaster,
)

pytestmark = pytest.mark.anyio
CLUSTER_ID = "client-tests"
FAST = Backoff(backoff_secs_min=0.01, backoff_secs_max=0.1)
WAIT_SECS = 10.0


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    backend: str = request.param
    return backend


@dataclass
class Roles:
    master: str = "node_0"
    log: list[tuple[int, kv.Update]] = field(default_factory=list)


class RoleBackend(LocalBackend):
    """Master or follower as ``roles.master`` says; ``stall`` blocks writes and consistent
    reads forever (a master without a quorum)."""

    def __init__(self, roles: Roles, name: str) -> None:
        super().__init__(cluster_id=CLUSTER_ID, node_name=name)
        self.roles = roles
        self.stall = False

    async def check_read(self, consistency: Consistency) -> None:
        if isinstance(consistency, Consistent):
            if self.roles.master != self.node_name:
                raise BackendNotMaster(self.roles.master)
            if self.stall:
                await anyio.sleep_forever()
        await super().check_read(consistency)

    async def write(self, update: Update) -> kv.Result:
        if self.roles.master != self.node_name:
            raise BackendNotMaster(self.roles.master)
        if self.stall:
            await anyio.sleep_forever()
        for i, logged in self.roles.log:
            if i > self.txid():
                self.store.apply_batch(i, [logged])
        result = await super().write(update)
        self.roles.log.append((self.txid(), to_kv_update(update)))
        return result

    def who_master(self) -> str | None:
        return self.roles.master


class Servers:
    """Client servers in the test's task group; each can be stopped and restarted on its port."""

    def __init__(self, tg: anyio.abc.TaskGroup) -> None:
        self.tg = tg
        self.scopes: dict[int, anyio.CancelScope] = {}
        self.stopped: dict[int, anyio.Event] = {}

    async def start(self, backend: LocalBackend, port: int = 0) -> int:
        server: ClientServer = await self.tg.start(self._run, backend, port)
        assert server.port is not None
        return server.port

    async def _run(
        self,
        backend: LocalBackend,
        port: int,
        *,
        task_status: anyio.abc.TaskStatus[ClientServer] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        stopped = anyio.Event()
        try:
            with anyio.CancelScope() as scope:
                async with anyio.create_task_group() as inner:
                    run = partial(serve, backend, host="127.0.0.1", port=port, linger_secs=0.2)
                    server: ClientServer = await inner.start(run)
                    assert server.port is not None
                    self.scopes[server.port] = scope
                    self.stopped[server.port] = stopped
                    task_status.started(server)
        finally:
            stopped.set()

    async def stop(self, port: int) -> None:
        self.scopes[port].cancel()
        with anyio.fail_after(WAIT_SECS):
            await self.stopped[port].wait()


@asynccontextmanager
async def servers() -> AsyncIterator[Servers]:
    async with anyio.create_task_group() as tg:
        yield Servers(tg)
        tg.cancel_scope.cancel()


def client_for(ports: dict[str, int], **options: Any) -> AsyncClient:
    options.setdefault("backoff", FAST)
    options.setdefault("timeout_secs", 5.0)
    nodes = {name: ("127.0.0.1", port) for name, port in ports.items()}
    return AsyncClient(CLUSTER_ID, nodes, seed=5, **options)


async def test_operations_against_a_real_node() -> None:
    async with servers() as srv:
        backend = LocalBackend(cluster_id=CLUSTER_ID)
        port = await srv.start(backend)
        async with client_for({"node_0": port}) as client:
            await client.set(b"a", b"1")
            await client.confirm(b"b", b"2")
            assert await client.get(b"a") == b"1"
            assert await client.exists(b"b")
            assert await client.range_entries() == [(b"a", b"1"), (b"b", b"2")]
            assert await client.rev_range_entries() == [(b"b", b"2"), (b"a", b"1")]
            assert await client.prefix(b"a") == [b"a"]
            assert await client.multi_get([b"b", b"a"]) == [b"2", b"1"]
            assert await client.test_and_set(b"a", b"1", b"x") == b"1"
            assert await client.replace(b"a", b"y") == b"x"
            async with client.sequence() as seq:
                seq.set(b"c", b"3").assert_(b"a", b"y")
            with pytest.raises(AssertionFailed):
                async with client.sequence() as seq:
                    seq.set(b"d", b"4").assert_exists(b"nope")
            await client.synced_sequence([USet(key=b"e", value=b"5")])
            with pytest.raises(NotFound):
                await client.get(b"d")
            await client.delete(b"e")
            assert await client.delete_prefix(b"c") == 1
            assert await client.get_key_count() == 2
            await client.nop()
            assert await client.get_txid() == AtLeast(stamp=backend.txid())
            assert await client.who_master() == "node_0"
            assert await client.expect_progress_possible()
            assert (await client.version()).major == 1
            assert await client.current_state() == "Stable_master"
            assert (await client.statistics()).name == "arakoon_stats"


async def test_redirect_on_not_master_after_a_failover() -> None:
    async with servers() as srv:
        roles = Roles()
        backends = {name: RoleBackend(roles, name) for name in ("node_0", "node_1")}
        ports = {name: await srv.start(backend) for name, backend in backends.items()}
        async with client_for(ports) as client:
            await client.set(b"k", b"before")
            roles.master = "node_1"
            await client.set(b"k", b"after")
            assert client.master == "node_1"
            assert client.connected_nodes == ["node_1"]
            assert backends["node_1"].store.get(b"k") == b"after"
            assert backends["node_0"].store.get(b"k") == b"before"


async def test_reconnect_after_the_server_restarts() -> None:
    async with servers() as srv:
        backend = LocalBackend(cluster_id=CLUSTER_ID)
        port = await srv.start(backend)
        async with client_for({"node_0": port}, retry_secs=5) as client:
            await client.set(b"k", b"v")
            await srv.stop(port)
            await srv.start(backend, port)
            assert await client.get(b"k") == b"v"
            await srv.stop(port)
            await srv.start(backend, port)
            conn = client._connections["node_0"]
            with anyio.fail_after(WAIT_SECS):
                while not conn.looks_closed():
                    await anyio.sleep(0.01)
            assert await client.test_and_set(b"k", b"v", b"w") == b"v"


async def test_stalled_master_times_out() -> None:
    async with servers() as srv:
        backend = RoleBackend(Roles(), "node_0")
        port = await srv.start(backend)
        async with client_for({"node_0": port}, timeout_secs=0.3, retry_secs=0.3) as client:
            await client.set(b"k", b"v")
            backend.stall = True
            start = anyio.current_time()
            with pytest.raises(ArakoonTimeout):
                await client.get(b"k")
            assert anyio.current_time() - start < 0.3 + 0.3 + 1.0
            with pytest.raises(OutcomeUnknown) as info:
                await client.replace(b"k", b"w")
            assert isinstance(info.value.cause, ArakoonTimeout)
            backend.stall = False
            assert await client.get(b"k") == b"v"


async def test_many_clients_in_parallel() -> None:
    clients_n, ops_n = 20, 25
    async with servers() as srv:
        backend = LocalBackend(cluster_id=CLUSTER_ID)
        port = await srv.start(backend)

        async def worker(index: int, make: Callable[[], AsyncClient]) -> None:
            async with make() as client:
                for op in range(ops_n):
                    key = f"c{index}-{op}".encode()
                    await client.set(key, key)
                    assert await client.get(key) == key

        async with anyio.create_task_group() as tg:
            for index in range(clients_n):
                tg.start_soon(worker, index, partial(client_for, {"node_0": port}))
        assert backend.store.key_count() == clients_n * ops_n


async def test_large_answers_arrive_in_many_pieces() -> None:
    async with servers() as srv:
        port = await srv.start(LocalBackend(cluster_id=CLUSTER_ID))
        big = bytes(range(256)) * 16 * 1024
        async with client_for({"node_0": port}) as client:
            await client.set(b"big", big)
            assert await client.get(b"big") == big
