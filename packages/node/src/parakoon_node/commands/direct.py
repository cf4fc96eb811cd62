"""One blocking client-protocol connection to one named node, for the operator commands
(``status``, ``backup``) that must talk to a particular node rather than to "the cluster" the
client library finds a master in. Only the codec; every step bounded by ``timeout``."""

from __future__ import annotations

import socket
from typing import Any

from parakoon_client import codec
from parakoon_client.tls import cert_problem
from parakoon_node.commands.tls_options import client_ssl_context
from parakoon_node.runtime.config import ClusterConfig, NodeConfig

__all__ = ["DirectConnection"]


class DirectConnection:
    """Connects and sends the prologue at once; ``OSError`` if the node cannot be reached."""

    def __init__(
        self, cluster: ClusterConfig, node: NodeConfig, *, timeout: float, check_name: bool = True
    ) -> None:
        """``check_name=False`` accepts any certificate of the CA (``parakoon join`` asks a
        member it knows only by address)."""
        self.node = node
        self.where = f"{node.name} ({node.client_host}:{node.client_port})"
        self.sock = socket.create_connection((node.client_host, node.client_port), timeout=timeout)
        context = client_ssl_context(cluster)
        if context is not None:
            # With tls_service: TLS within the same timeout, and the node's certificate must
            # name it. An ssl.SSLError is an OSError, like any other failure to connect.
            try:
                self.sock = context.wrap_socket(self.sock)
            except OSError:
                self.sock.close()
                raise
            problem = cert_problem(self.sock.getpeercert(), node.name) if check_name else None
            if problem is not None:
                self.sock.close()
                raise ConnectionError(f"{self.where} is not who it claims: {problem}")
        self.sock.settimeout(timeout)
        self.sock.sendall(codec.encode_prologue(cluster.cluster_id))

    def call(self, request: Any) -> Any:
        """Send one request; the decoded result, or a ``codec.ErrorResponse``."""
        self.sock.sendall(codec.encode_request(request))
        decoder = codec.ResponseDecoder(request)
        while True:
            event = decoder.next_event()
            if event is not codec.NEED_DATA:
                return event
            data = self.sock.recv(1 << 16)
            if not data:
                raise ConnectionError(f"{self.where} closed the connection")
            decoder.feed(data)

    def send(self, request: Any) -> None:
        self.sock.sendall(codec.encode_request(request))

    def recv_exact(self, n: int) -> bytes:
        parts: list[bytes] = []
        while n > 0:
            chunk = self.sock.recv(min(n, 1 << 20))
            if not chunk:
                raise ConnectionError(f"{self.where} closed the connection")
            parts.append(chunk)
            n -= len(chunk)
        return b"".join(parts)

    def recv_some(self, n: int) -> bytes:
        chunk = self.sock.recv(n)
        if not chunk:
            raise ConnectionError(f"{self.where} closed the connection")
        return chunk

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> DirectConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
