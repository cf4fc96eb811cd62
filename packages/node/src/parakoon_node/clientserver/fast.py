"""A lean stream for the client port on asyncio: an ``asyncio.Protocol`` behind anyio's surface.

Why. Every client request is one small read and one small write. anyio's asyncio socket
stream pays, per ``receive``, a ``resume_reading``/``pause_reading`` pair (two epoll changes,
i.e. system calls) and, per ``send``, a shielded cancel scope plus an extra trip through the
event loop. Measured on the node, that machinery was about a quarter of the master's CPU per
request. This stream keeps the transport reading all the time, buffers what arrives (bounded:
reading pauses above ``READ_BUFFER_MAX`` bytes), returns buffered data without suspending, and
writes without suspending unless the transport asked us to slow down.

It offers exactly what :class:`~parakoon_node.clientserver.server.ClientServer` uses
(``receive``, ``send``, ``send_eof``, ``aclose``, ``extra(remote_address)``) and raises anyio's
exceptions (``EndOfStream``, ``BrokenResourceError``, ``ClosedResourceError``), so the
server's logic is the same on this stream and on anyio's (the trio tests use the latter).
Connection tasks still run in the server's anyio task group.

With ``tls_service`` the TLS layer (anyio's ``TLSStream``, see ``tls_accept.py``) runs on top of
this stream, so TLS connections keep the lean transport underneath.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any, Final, cast

import anyio
import anyio.abc
from anyio.abc import SocketAttribute

READ_BUFFER_MAX: Final = 4 << 20  # stop reading from a client that sends faster than we answer
READ_BUFFER_RESUME: Final = 1 << 20
WRITE_BUFFER_HIGH: Final = 1 << 20  # the transport pauses us above this many unsent bytes


class ProtocolStream:
    """One client connection, as the client server sees it."""

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self._loop = asyncio.get_running_loop()
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._reader: asyncio.Future[None] | None = None
        self._writer: asyncio.Future[None] | None = None
        self._at_eof = False
        self._lost = False
        self._error: BaseException | None = None
        self._closed = False
        self._reading_paused = False
        self._writing_paused = False

    # ---------------------------------------------------------------- protocol side

    def _wake_reader(self) -> None:
        reader = self._reader
        if reader is not None and not reader.done():
            reader.set_result(None)

    def _wake_writer(self) -> None:
        writer = self._writer
        if writer is not None and not writer.done():
            writer.set_result(None)

    def feed(self, data: bytes) -> None:
        self._chunks.append(bytes(data))
        self._buffered += len(data)
        if self._buffered > READ_BUFFER_MAX and not self._reading_paused:
            self._reading_paused = True
            self._transport.pause_reading()
        self._wake_reader()

    def eof(self) -> None:
        self._at_eof = True
        self._wake_reader()

    def lost(self, exc: BaseException | None) -> None:
        self._lost = True
        self._error = exc
        self._wake_reader()
        self._wake_writer()

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False
        self._wake_writer()

    # ---------------------------------------------------------------- stream side

    async def receive(self, max_bytes: int = 65536) -> bytes:
        while not self._chunks:
            if self._closed:
                raise anyio.ClosedResourceError
            if self._error is not None:
                raise anyio.BrokenResourceError from self._error
            if self._at_eof or self._lost:
                raise anyio.EndOfStream
            self._reader = self._loop.create_future()
            try:
                await self._reader
            finally:
                self._reader = None
        chunk = self._chunks.popleft()
        if len(chunk) > max_bytes:
            chunk, rest = chunk[:max_bytes], chunk[max_bytes:]
            self._chunks.appendleft(rest)
        self._buffered -= len(chunk)
        if self._reading_paused and self._buffered <= READ_BUFFER_RESUME:
            self._reading_paused = False
            self._transport.resume_reading()
        return chunk

    async def send(self, item: bytes) -> None:
        if self._closed:
            raise anyio.ClosedResourceError
        if self._lost or self._transport.is_closing():
            raise anyio.BrokenResourceError from self._error
        self._transport.write(item)
        while self._writing_paused and not self._lost:
            self._writer = self._loop.create_future()
            try:
                await self._writer
            finally:
                self._writer = None
        if self._error is not None:  # the connection broke while we waited to write
            raise anyio.BrokenResourceError from self._error

    async def send_eof(self) -> None:
        if not self._transport.is_closing() and self._transport.can_write_eof():
            try:
                self._transport.write_eof()
            except OSError as exc:
                raise anyio.BrokenResourceError from exc

    async def aclose(self) -> None:
        # close() sends what is still buffered, then closes: answers written just before a
        # close (E_NOT_MASTER and friends, protocol §4.2) reach the client.
        self._closed = True
        self._transport.close()
        self._wake_reader()

    def abort(self) -> None:
        """Close at once, dropping whatever the client has not taken yet."""
        self._closed = True
        self._transport.abort()
        self._wake_reader()
        self._wake_writer()

    @property
    def extra_attributes(self) -> Mapping[Any, Callable[[], Any]]:
        """What a wrapping ``TLSStream`` passes on from its transport: the peer's address."""
        return {SocketAttribute.remote_address: lambda: self._transport.get_extra_info("peername")}

    def extra(self, attribute: Any, default: Any = None) -> Any:
        if attribute is SocketAttribute.remote_address:
            peer = self._transport.get_extra_info("peername")
            if peer is not None:
                return peer
        if default is not None:
            return default
        raise anyio.TypedAttributeLookupError("no such attribute on this stream")


class _ClientProtocol(asyncio.Protocol):
    def __init__(self, on_connect: Callable[[ProtocolStream], None]) -> None:
        self._on_connect = on_connect
        self._stream: ProtocolStream | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TCP transport has asyncio.Transport's methods without subclassing it.
        stream_transport = cast(asyncio.Transport, transport)
        stream_transport.set_write_buffer_limits(high=WRITE_BUFFER_HIGH)
        self._stream = ProtocolStream(stream_transport)
        self._on_connect(self._stream)

    def data_received(self, data: bytes) -> None:
        assert self._stream is not None
        self._stream.feed(data)

    def eof_received(self) -> bool:
        assert self._stream is not None
        self._stream.eof()
        return True  # keep the write side open: the answer to the last request may follow

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._stream is not None:
            self._stream.lost(exc)

    def pause_writing(self) -> None:
        if self._stream is not None:
            self._stream.pause_writing()

    def resume_writing(self) -> None:
        if self._stream is not None:
            self._stream.resume_writing()


async def listen(
    host: str,
    port: int,
    on_connect: Callable[[ProtocolStream], None],
    *,
    backlog: int = 1024,
) -> asyncio.base_events.Server:
    """Listen with plain asyncio; ``on_connect`` gets each new connection's stream."""
    loop = asyncio.get_running_loop()
    return await loop.create_server(
        lambda: _ClientProtocol(on_connect), host, port, backlog=backlog, reuse_address=True
    )


def running_on_asyncio() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True
