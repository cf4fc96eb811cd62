"""The dialling side of a TLS peer link checks that the node it dialled answers: a listener whose
certificate (signed by the cluster's CA) names another node is refused before any hello is
sent. Real certificates, real TCP on 127.0.0.1, in process."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, cast

import anyio
import anyio.abc
import pytest
from parakoon_certs import CA

from parakoon_client.tls import server_context
from parakoon_node.clientserver.tls_accept import accept_tls
from parakoon_node.runtime.config import load_config
from parakoon_node.runtime.peer import PeerAddress, PeerRefused, dial_peer
from parakoon_node.runtime.tls import TlsContexts

pytestmark = pytest.mark.anyio


def _cluster_file(tmp_path: Path) -> Path:
    lines = ["[cluster]", 'id = "c"', 'tls_ca_cert = "certs/ca.pem"']
    for i in range(3):
        lines += [
            "[[nodes]]",
            f'name = "node_{i}"',
            f'addresses = ["127.0.0.1:{4010 + i}"]',
            f"client_port = {4000 + i}",
            f'home_dir = "data/node_{i}"',
            f'tls_cert = "certs/node_{i}.pem"',
            f'tls_key = "certs/node_{i}.key"',
        ]
    path = tmp_path / "cluster.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


async def test_the_dialler_refuses_a_listener_that_is_another_node(tmp_path: Path) -> None:
    ca = CA("ca", tmp_path / "certs")
    certs = {f"node_{i}": ca.issue(f"node_{i}") for i in range(3)}
    cluster = load_config(_cluster_file(tmp_path))
    contexts = TlsContexts(cluster, cluster.node("node_0"))
    # node_1's certificate, listening where node_2 is expected.
    impostor = server_context(
        ca.cert_path, certs["node_1"].cert, certs["node_1"].key, require_client_cert=True
    )
    received: list[bytes] = []

    async def handle(stream: anyio.abc.SocketStream) -> None:
        async with stream:
            tls = await accept_tls(stream, impostor)
            # The dialler closes after the handshake without a word.
            with (
                anyio.move_on_after(2),
                contextlib.suppress(anyio.EndOfStream, anyio.BrokenResourceError, OSError),
            ):
                received.append(await tls.receive())

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, handle)
        with pytest.raises(PeerRefused, match="names 'node_1', not node 'node_2'"):
            await dial_peer(
                PeerAddress(name="node_2", host="127.0.0.1", port=port),
                cluster_id="c",
                me="node_0",
                purpose="msg",
                max_frame_bytes=1 << 20,
                identities=cast(Any, None),  # never reached: refused before the hello
                tls=contexts,
            )
        tg.cancel_scope.cancel()
    assert received == [], "no hello may reach an impostor"
