"""Connections that hold a slot without using it are closed (prologue, slow request, idle).

A ``LocalBackend`` behind the real ``serve`` on 127.0.0.1, on asyncio (the node's fast path)
and trio. The limits are tiny so that the tests are quick; the node's defaults are in
docs/configuration.md.
"""

from __future__ import annotations

from typing import Any

import anyio
import anyio.abc
import pytest

from parakoon_client.codec import encode_prologue
from parakoon_node.clientserver import ClientServer, LocalBackend, serve

CLUSTER = "parakoon"
PROLOGUE = encode_prologue(CLUSTER)
WHO_MASTER = bytes.fromhex("0200ffb1")


pytestmark = pytest.mark.anyio


async def _serve(
    kwargs: dict[str, Any], *, task_status: anyio.abc.TaskStatus[ClientServer]
) -> None:
    backend = LocalBackend(cluster_id=CLUSTER, node_name="node_0")
    await serve(backend, host="127.0.0.1", port=0, task_status=task_status, **kwargs)


async def closed_within(stream: anyio.abc.SocketStream, secs: float) -> bool:
    """Whether the server closes ``stream`` within ``secs`` (anything it sends is read)."""
    with anyio.move_on_after(secs):
        try:
            while True:
                await stream.receive()
        except (anyio.EndOfStream, anyio.BrokenResourceError):
            return True
    return False


async def who_master(port: int) -> bytes:
    async with await anyio.connect_tcp("127.0.0.1", port) as s:
        await s.send(PROLOGUE + WHO_MASTER)
        data = b""
        with anyio.fail_after(5):
            while len(data) < 15:
                data += await s.receive()
        return data


async def test_silent_and_trickling_connections_are_closed_and_free_their_slots() -> None:
    kwargs = {
        "max_connections": 20,
        "prologue_timeout_secs": 0.5,
        "request_timeout_secs": 0.5,
        "idle_timeout_secs": 0.0,
        "linger_secs": 0.1,
    }
    async with anyio.create_task_group() as tg:
        server: ClientServer = await tg.start(_serve, kwargs)
        assert server.port is not None
        port = server.port
        # Fill every slot: silent sockets, half prologues, and slowloris requests.
        silent = [await anyio.connect_tcp("127.0.0.1", port) for _ in range(10)]
        half = []
        for _ in range(5):
            s = await anyio.connect_tcp("127.0.0.1", port)
            await s.send(PROLOGUE[:7])
            half.append(s)
        slow = []
        for _ in range(5):
            s = await anyio.connect_tcp("127.0.0.1", port)
            await s.send(PROLOGUE + WHO_MASTER[:2])  # a request that never completes
            slow.append(s)
        await anyio.sleep(0.1)
        assert server.open_connections == 20
        # A real client is refused now (too many clients) ...
        async with await anyio.connect_tcp("127.0.0.1", port) as extra:
            assert await closed_within(extra, 2.0)
        # ... and gets in within a second once the timeouts reclaimed the slots.
        for s in silent + half + slow:
            assert await closed_within(s, 2.0), "a stalled connection was not closed"
        with anyio.fail_after(1.0):
            assert (await who_master(port)).endswith(b"node_0")
        assert server.counters.timed_out == 20
        for s in silent + half + slow:
            await s.aclose()
        tg.cancel_scope.cancel()


async def test_idle_connections_are_closed_after_the_idle_timeout_only() -> None:
    kwargs = {"idle_timeout_secs": 0.6, "prologue_timeout_secs": 5.0}
    async with anyio.create_task_group() as tg:
        server: ClientServer = await tg.start(_serve, kwargs)
        assert server.port is not None
        async with await anyio.connect_tcp("127.0.0.1", server.port) as s:
            await s.send(PROLOGUE)
            for _ in range(4):  # busy: requests every 0.3 s keep it open
                await anyio.sleep(0.3)
                await s.send(WHO_MASTER)
                with anyio.fail_after(5):
                    got = b""
                    while len(got) < 15:
                        got += await s.receive()
            assert await closed_within(s, 2.0), "an idle connection was kept"
        tg.cancel_scope.cancel()
