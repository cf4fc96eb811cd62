"""The client port with TLS (``tls_service``), in process: a ``LocalBackend`` behind the real
``serve`` on 127.0.0.1, on asyncio (the node's lean stream) and trio (anyio's socket streams),
with real certificates. A client that only wraps its socket in TLS, as an Arakoon client does,
gets the Arakoon answers unchanged; plain TCP is closed; without a certificate where one is
required, the client is told so by the TLS alert."""

from __future__ import annotations

import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import pytest
from parakoon_certs import CA

from parakoon_client.codec import encode_prologue
from parakoon_client.tls import client_context, server_context
from parakoon_node.clientserver import ClientServer, LocalBackend, serve

CLUSTER = "parakoon"
PROLOGUE = encode_prologue(CLUSTER)
WHO_MASTER = bytes.fromhex("0200ffb1")

pytestmark = pytest.mark.anyio


async def _serve(
    tls: Callable[[], ssl.SSLContext],
    max_connections: int | None = None,
    handshake_timeout_secs: float = 1.0,
    *,
    task_status: anyio.abc.TaskStatus[ClientServer],
) -> None:
    backend = LocalBackend(cluster_id=CLUSTER, node_name="node_0")
    await serve(
        backend,
        host="127.0.0.1",
        port=0,
        tls=tls,
        max_connections=max_connections,
        prologue_timeout_secs=handshake_timeout_secs,
        task_status=task_status,
    )


async def _ask(port: int, context: ssl.SSLContext | None) -> bytes:
    """PROLOGUE + WHO_MASTER, then everything until the server closes or 15 bytes came."""
    kwargs: dict[str, Any] = {}
    if context is not None:
        kwargs = {"tls": True, "ssl_context": context, "tls_standard_compatible": False}
    async with await anyio.connect_tcp("127.0.0.1", port, **kwargs) as stream:
        await stream.send(PROLOGUE + WHO_MASTER)
        data = b""
        with anyio.fail_after(5):
            try:
                while len(data) < 15:
                    data += await stream.receive()
            except (anyio.EndOfStream, anyio.BrokenResourceError):
                pass
        return data


async def test_tls_client_port(tmp_path: Path) -> None:
    ca = CA("ca", tmp_path)
    node = ca.issue("node_0")
    client = ca.issue("operator")
    require = [False]

    def current() -> ssl.SSLContext:
        return server_context(ca.cert_path, node.cert, node.key, require_client_cert=require[0])

    async with anyio.create_task_group() as tg:
        server: ClientServer = await tg.start(_serve, current)
        assert server.port is not None
        port = server.port
        # An Arakoon client that wraps its socket in TLS, without a certificate.
        assert (await _ask(port, client_context(ca.cert_path))).endswith(b"node_0")
        # Plain TCP: closed, no answer.
        assert await _ask(port, None) == b""
        # The context is asked for on every connection: now client certificates are required.
        require[0] = True
        with pytest.raises(ssl.SSLError, match="CERTIFICATE_REQUIRED"):
            await _ask(port, client_context(ca.cert_path))
        with_cert = client_context(ca.cert_path, client.cert, client.key)
        assert (await _ask(port, with_cert)).endswith(b"node_0")
        tg.cancel_scope.cancel()


async def test_handshakes_in_progress_are_bounded(tmp_path: Path) -> None:
    """Sockets that never finish their handshake count against the connection limit: with a
    limit of 2, a third silent socket is closed at once, and once the first two time out a
    real client is served again."""
    ca = CA("ca", tmp_path)
    node = ca.issue("node_0")

    def current() -> ssl.SSLContext:
        return server_context(ca.cert_path, node.cert, node.key, require_client_cert=False)

    async with anyio.create_task_group() as tg:
        server: ClientServer = await tg.start(_serve, current, 2, 30.0)
        assert server.port is not None
        silent = [await anyio.connect_tcp("127.0.0.1", server.port) for _ in range(2)]
        await anyio.sleep(0.2)
        async with await anyio.connect_tcp("127.0.0.1", server.port) as third:
            with anyio.fail_after(10):  # far before the 30 s handshake timeout
                with pytest.raises((anyio.EndOfStream, anyio.BrokenResourceError)):
                    await third.receive()
        for s in silent:
            await s.aclose()  # their handshakes fail at once and free the gate
        with anyio.fail_after(10):
            while True:
                try:
                    if (await _ask(server.port, client_context(ca.cert_path))).endswith(b"node_0"):
                        break
                except (OSError, anyio.EndOfStream, anyio.BrokenResourceError):
                    pass
                await anyio.sleep(0.1)
        tg.cancel_scope.cancel()
