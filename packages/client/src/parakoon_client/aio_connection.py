"""Internal: the async client's I/O, one anyio TCP stream to one node (hand-written).

Everything above the connection (routing, discovery, retries, the public methods) is written
once in ``aio.py`` and generated into ``blocking.py``; this module and ``blocking_connection.py``
are where the two clients differ, besides the clock, the pause and the async client's lock.
"""

from __future__ import annotations

import select
import ssl
from typing import Any, Final, TypeVar

import anyio
import anyio.abc
from anyio.abc import SocketAttribute
from anyio.streams.tls import TLSAttribute, TLSStream

from parakoon_client._core import RECV_CHUNK_BYTES, Address, AnswerReader, connect_failure
from parakoon_client.codec import NEED_DATA, RemoteProtocolError, Request
from parakoon_client.errors import ArakoonNotConnected, ArakoonProtocolError, ArakoonTimeout
from parakoon_client.tls import cert_problem, describe_handshake_error

R = TypeVar("R")


async def _tls_handshake(
    stream: anyio.abc.ByteStream,
    node: str,
    where: str,
    context: ssl.SSLContext,
    budget_secs: float,
) -> anyio.abc.ByteStream:
    try:
        with anyio.fail_after(budget_secs):
            tls = await TLSStream.wrap(
                stream, server_side=False, ssl_context=context, standard_compatible=False
            )
    except (OSError, anyio.BrokenResourceError, anyio.EndOfStream) as exc:
        with anyio.CancelScope(shield=True):
            await stream.aclose()
        reason = describe_handshake_error(exc)
        raise ArakoonNotConnected(
            f"TLS handshake with {where} failed: {reason}", node=node
        ) from None
    problem = None
    if context.verify_mode != ssl.CERT_NONE:
        problem = cert_problem(tls.extra(TLSAttribute.peer_certificate), node)
    if problem is not None:
        with anyio.CancelScope(shield=True):
            await tls.aclose()
        raise ArakoonNotConnected(f"{where} is not who it claims: {problem}", node=node)
    return tls


# Failures of an anyio stream that mean the connection is gone.
_STREAM_ERRORS: Final = (
    anyio.EndOfStream,
    anyio.BrokenResourceError,
    anyio.ClosedResourceError,
    OSError,
)


class AsyncConnection:
    """One anyio TCP (or TLS) stream to one node. Raises only ArakoonError subclasses naming the
    node."""

    __slots__ = ("_fresh", "_prologue", "busy", "node", "stream", "where")

    def __init__(self, node: str, where: str, stream: anyio.abc.ByteStream, prologue: bytes):
        self.node = node
        self.where = where
        self.stream = stream
        self._prologue = prologue
        self._fresh = True
        # True while a request is in flight; a connection left busy (its call was cancelled)
        # is out of step with the server and must not carry another request.
        self.busy = False

    @classmethod
    async def open(
        cls,
        node: str,
        address: Address,
        prologue: bytes,
        budget_secs: float,
        ssl_context: ssl.SSLContext | None = None,
    ) -> AsyncConnection:
        """Connect (and with ``ssl_context`` run the TLS handshake and check that the node's
        certificate names ``node``), all within ``budget_secs``."""
        host, port = address
        where = f"{node} at {host}:{port}"
        try:
            with anyio.fail_after(budget_secs):
                stream: anyio.abc.ByteStream = await anyio.connect_tcp(host, port)
        except OSError as exc:
            raise connect_failure(node, where, exc, budget_secs) from None
        if ssl_context is not None:
            stream = await _tls_handshake(stream, node, where, ssl_context, budget_secs)
        return cls(node, where, stream, prologue)

    async def aclose(self) -> None:
        # Shielded: closing must finish even when the caller is being cancelled.
        with anyio.CancelScope(shield=True):
            await self.stream.aclose()

    def looks_closed(self) -> bool:
        """Whether the idle connection was closed by the peer (see ``Connection.looks_closed``)."""
        raw = self.stream.extra(SocketAttribute.raw_socket)
        if raw.fileno() < 0:
            return True
        poller = select.poll()
        poller.register(raw.fileno(), select.POLLIN)
        return bool(poller.poll(0))

    async def exchange(self, request: Request[R], payload: bytes, budget_secs: float) -> Any:
        """Send ``payload`` (the bytes of ``request``); return the result or ErrorResponse."""
        if self._prologue:
            payload = self._prologue + payload
            self._prologue = b""
        fresh, self._fresh = self._fresh, False
        self.busy = True
        sent = False
        reader = AnswerReader(request, self.where, self.node)
        try:
            with anyio.fail_after(budget_secs):
                await self.stream.send(payload)
                sent = True
                while True:
                    event = reader.feed(await self.stream.receive(RECV_CHUNK_BYTES))
                    if event is not NEED_DATA:
                        self.busy = False
                        return event
        except TimeoutError:
            raise ArakoonTimeout(
                f"{self.where} did not answer within {budget_secs:.3g} s",
                node=self.node,
                # Unlike sendall, an anyio send may return before the bytes left the process
                # and fail after some did: once it was called, assume the request arrived.
                request_sent=True,
            ) from None
        except anyio.EndOfStream:
            raise reader.closed_error(fresh_connection=fresh) from None
        except _STREAM_ERRORS as exc:
            detail = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
            raise ArakoonNotConnected(
                f"connection to {self.where} failed: {detail}",
                node=self.node,
                request_sent=sent or not isinstance(exc, anyio.ClosedResourceError),
            ) from None
        except RemoteProtocolError as exc:
            raise ArakoonProtocolError(f"{self.where}: {exc}", node=self.node) from None
