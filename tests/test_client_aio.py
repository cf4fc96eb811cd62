"""The async client against the node's real client-protocol server, on asyncio and on trio.

What only the async client has: many clients on one event loop, the server in the same loop.
Everything both clients do (every operation, redirects, reconnects, timeouts, large answers) is
tested once for both, in ``test_client_blocking.py``.
"""

from __future__ import annotations

from functools import partial

import anyio
import pytest

from parakoon_client.aio import AsyncClient
from parakoon_client.policy import Backoff
from parakoon_node.clientserver import ClientServer, LocalBackend, serve

pytestmark = pytest.mark.anyio
CLUSTER_ID = "client-tests"
FAST = Backoff(backoff_secs_min=0.01, backoff_secs_max=0.1)


async def test_many_clients_in_parallel() -> None:
    clients_n, ops_n = 20, 25
    backend = LocalBackend(cluster_id=CLUSTER_ID)
    async with anyio.create_task_group() as servers:
        run = partial(serve, backend, host="127.0.0.1", port=0, linger_secs=0.2)
        server: ClientServer = await servers.start(run)
        assert server.port is not None
        nodes = {"node_0": ("127.0.0.1", server.port)}

        async def worker(index: int) -> None:
            async with AsyncClient(CLUSTER_ID, nodes, timeout_secs=5.0, backoff=FAST) as client:
                for op in range(ops_n):
                    key = f"c{index}-{op}".encode()
                    await client.set(key, key)
                    assert await client.get(key) == key

        async with anyio.create_task_group() as tg:
            for index in range(clients_n):
                tg.start_soon(worker, index)
        assert backend.store.key_count() == clients_n * ops_n
        servers.cancel_scope.cancel()
