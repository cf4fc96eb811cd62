"""The protocol-backed client stream (clientserver/fast.py) under pressure, over real TCP.

A client that pipelines far more than the server's read bound and reads its answers slowly
exercises both flow-control paths: the server stops reading from it, and the server's own writes
wait for the client. Every answer must still arrive, in order, and other clients must be served
meanwhile.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import AsyncIterator

import anyio
import pytest

from parakoon_client import codec
from parakoon_node.clientserver import ClientServer, LocalBackend, serve
from parakoon_node.clientserver.fast import READ_BUFFER_MAX

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # the fast stream is the asyncio path


@pytest.fixture
async def server() -> AsyncIterator[ClientServer]:
    backend = LocalBackend(cluster_id="fast", node_name="node_0")
    async with anyio.create_task_group() as tg:
        srv: ClientServer = await tg.start(serve, backend)
        yield srv
        tg.cancel_scope.cancel()


def _blocking_pipeline(port: int, requests: int, value: bytes) -> int:
    """Send ``requests`` SETs in one go, then read every answer slowly; return the count."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        one = codec.encode_request(codec.Set(key=b"k", value=value))
        s.sendall(codec.encode_prologue("fast"))
        payload = one * requests
        sender_error: list[BaseException] = []

        def send_all() -> None:
            try:
                s.sendall(payload)
            except OSError as exc:  # pragma: no cover - reported below
                sender_error.append(exc)

        t = threading.Thread(target=send_all)
        t.start()
        answers = 0
        pending = b""
        ok = b"\x00\x00\x00\x00"
        while answers < requests:
            data = s.recv(4096)  # deliberately small reads: the server must wait for us
            if not data:
                break
            pending += data
            while len(pending) >= 4 and pending[:4] == ok:
                pending = pending[4:]
                answers += 1
        t.join(timeout=30)
        assert not sender_error
        return answers


def _get(port: int, key: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(codec.encode_prologue("fast") + codec.encode_request(codec.Get(key=key)))
        return s.recv(4096)


def _burst_and_vanish(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(codec.encode_prologue("fast"))
        s.sendall(codec.encode_request(codec.Set(key=b"a", value=b"1")) * 5000)
    # closed without reading a single answer


async def test_pipelined_burst_beyond_the_read_bound_is_answered_in_full(
    server: ClientServer,
) -> None:
    value = b"v" * 1000
    requests = (2 * READ_BUFFER_MAX) // (len(value) + 20)
    answered = await anyio.to_thread.run_sync(_blocking_pipeline, server.port, requests, value)  # type: ignore[arg-type]  # port is set once serving
    assert answered == requests
    # The server is still serving others.
    data = await anyio.to_thread.run_sync(_get, server.port, b"k")  # type: ignore[arg-type]  # port is set once serving
    assert data[:4] == b"\x00\x00\x00\x00"


async def test_client_that_vanishes_mid_burst_does_not_hurt_the_server(
    server: ClientServer,
) -> None:
    await anyio.to_thread.run_sync(_burst_and_vanish, server.port)  # type: ignore[arg-type]  # port is set once serving
    data = await anyio.to_thread.run_sync(_get, server.port, b"a")  # type: ignore[arg-type]  # port is set once serving
    assert data[:4] == b"\x00\x00\x00\x00"
    assert server.open_connections <= 2
