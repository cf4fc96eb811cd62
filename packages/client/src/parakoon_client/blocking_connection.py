"""Internal: the blocking client's I/O, one TCP socket to one node (hand-written).

Everything above the connection (routing, discovery, retries, the public methods) is generated
into ``blocking.py`` from ``aio.py``; this module and ``aio_connection.py`` are the only places
where the two clients differ, besides the clock and the pause.
"""

from __future__ import annotations

import select
import socket
import ssl
import time
from typing import Any, TypeVar

from parakoon_client._core import RECV_CHUNK_BYTES, Address, AnswerReader, connect_failure
from parakoon_client.codec import NEED_DATA, RemoteProtocolError, Request
from parakoon_client.errors import (
    ArakoonError,
    ArakoonNotConnected,
    ArakoonProtocolError,
    ArakoonTimeout,
)
from parakoon_client.tls import cert_problem, describe_handshake_error

R = TypeVar("R")


def _tls_handshake(
    sock: socket.socket, node: str, where: str, context: ssl.SSLContext, deadline: float
) -> ssl.SSLSocket:
    try:
        sock.settimeout(max(0.001, deadline - time.monotonic()))
        tls = context.wrap_socket(sock)
    except OSError as exc:
        sock.close()
        reason = describe_handshake_error(exc)
        raise ArakoonNotConnected(
            f"TLS handshake with {where} failed: {reason}", node=node
        ) from None
    problem = None
    if context.verify_mode != ssl.CERT_NONE:
        problem = cert_problem(tls.getpeercert(), node)
    if problem is not None:
        tls.close()
        raise ArakoonNotConnected(f"{where} is not who it claims: {problem}", node=node)
    return tls


class Connection:
    """One TCP connection to one node. Raises only ArakoonError subclasses naming the node."""

    __slots__ = ("_fresh", "_prologue", "_timeout", "busy", "node", "sock", "where")

    def __init__(
        self, node: str, where: str, sock: socket.socket, prologue: bytes, timeout_secs: float
    ) -> None:
        self.node = node
        self.where = where
        self.sock = sock
        # Requests are small and each is one sendall: waiting to coalesce only adds latency.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._timeout = timeout_secs
        # The server never answers the prologue; it travels with the first request.
        self._prologue = prologue
        self._fresh = True
        # True while a request is in flight. A connection left busy (its call was interrupted,
        # by KeyboardInterrupt say) is out of step with the server: it must not be used again.
        self.busy = False

    @classmethod
    def open(
        cls,
        node: str,
        address: Address,
        prologue: bytes,
        budget_secs: float,
        ssl_context: ssl.SSLContext | None = None,
    ) -> Connection:
        """Connect (and with ``ssl_context`` run the TLS handshake and check that the node's
        certificate names ``node``), all within ``budget_secs``."""
        host, port = address
        where = f"{node} at {host}:{port}"
        deadline = time.monotonic() + budget_secs
        try:
            sock = socket.create_connection(address, timeout=budget_secs)
        except OSError as exc:
            raise connect_failure(node, where, exc, budget_secs) from None
        if ssl_context is not None:
            sock = _tls_handshake(sock, node, where, ssl_context, deadline)
        return cls(node, where, sock, prologue, budget_secs)

    def close(self) -> None:
        self.sock.close()

    def looks_closed(self) -> bool:
        """Whether the idle connection was closed (or got unsolicited bytes) by the peer.

        An idle connection has nothing to read; if it is readable, the peer closed or reset it
        (or broke the protocol), so a request sent now would be lost. Checked without waiting.
        """
        poller = select.poll()
        poller.register(self.sock, select.POLLIN)
        return bool(poller.poll(0))

    def exchange(self, request: Request[R], payload: bytes, budget_secs: float) -> Any:
        """Send ``payload`` (the bytes of ``request``) and return the decoded answer.

        Returns the result or an ``ErrorResponse``. Within ``budget_secs`` in total.
        """
        sock = self.sock
        deadline = time.monotonic() + budget_secs
        if budget_secs != self._timeout:
            sock.settimeout(budget_secs)
            self._timeout = budget_secs
        if self._prologue:
            payload = self._prologue + payload
            self._prologue = b""
        self.busy = True
        try:
            sock.sendall(payload)
        except OSError as exc:
            # sendall returns only once the kernel took every byte; when it fails, the end of
            # the request never left, so the server cannot have executed it.
            raise self._failure(exc, budget_secs, request_sent=False) from None
        fresh, self._fresh = self._fresh, False
        reader = AnswerReader(request, self.where, self.node)
        try:
            while True:
                chunk = sock.recv(RECV_CHUNK_BYTES)
                if not chunk:
                    raise reader.closed_error(fresh_connection=fresh)
                event = reader.feed(chunk)
                if event is not NEED_DATA:
                    self.busy = False
                    return event
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError
                sock.settimeout(remaining)
                self._timeout = remaining
        except OSError as exc:
            raise self._failure(exc, budget_secs, request_sent=True) from None
        except RemoteProtocolError as exc:
            raise ArakoonProtocolError(f"{self.where}: {exc}", node=self.node) from None

    def _failure(self, exc: OSError, budget_secs: float, *, request_sent: bool) -> ArakoonError:
        if isinstance(exc, TimeoutError):
            return ArakoonTimeout(
                f"{self.where} did not answer within {budget_secs:.3g} s",
                node=self.node,
                request_sent=request_sent,
            )
        return ArakoonNotConnected(
            f"connection to {self.where} failed: {exc.strerror or exc}",
            node=self.node,
            request_sent=request_sent,
        )
