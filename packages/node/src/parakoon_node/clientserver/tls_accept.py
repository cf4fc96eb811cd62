"""The accepting side of a TLS handshake, for the client port and the peer port.

Why not ``anyio.streams.tls.TLSStream.wrap``: when the handshake fails there, the TLS alert that
says why (``certificate required``, ``unknown CA``, ``certificate expired``) is left unsent, so
the other side only sees the connection close. With TLS 1.3 the client's handshake has already
finished by then, and a client without a certificate would read the close as "the node closed
the connection after my first request", which the client library explains as a wrong cluster
id. Here the alert is sent and the caller gets the ``ssl.SSLError`` to log; it then calls
:func:`drain_and_close`, which half-closes and reads briefly (bounded in time and bytes) so that
the alert is not lost to a TCP reset, outside the handshake's time bound (a slow drain must not
turn the real reason into a timeout).

The handshake itself is anyio's: the same ``ssl.SSLObject`` over memory BIOs, and the result is
an ordinary :class:`~anyio.streams.tls.TLSStream`.
"""

from __future__ import annotations

import contextlib
import ssl
from typing import Final

import anyio
import anyio.abc
from anyio.streams.tls import TLSStream

__all__ = ["accept_tls", "drain_and_close"]

#: After a failed handshake: how long, and how many bytes, to read before closing.
DRAIN_SECS: Final = 1.0
DRAIN_BYTES_MAX: Final = 64 * 1024

_GONE: Final = (
    OSError,
    anyio.BrokenResourceError,
    anyio.ClosedResourceError,
    anyio.EndOfStream,
)


async def accept_tls(stream: anyio.abc.ByteStream, context: ssl.SSLContext) -> TLSStream:
    """Run the server side of the handshake on ``stream``; raise ``ssl.SSLError`` (after the
    alert went out) or a stream error. The caller bounds it in time and, on failure, logs and
    calls :func:`drain_and_close`."""
    incoming = ssl.MemoryBIO()
    outgoing = ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_side=True)
    while True:
        try:
            tls.do_handshake()
            break
        except ssl.SSLWantReadError:
            if outgoing.pending:
                await stream.send(outgoing.read())
            try:
                incoming.write(await stream.receive())
            except anyio.EndOfStream:
                incoming.write_eof()  # the next do_handshake raises SSLEOFError
        except ssl.SSLError:
            if outgoing.pending:
                with contextlib.suppress(*_GONE):
                    await stream.send(outgoing.read())
            raise
    if outgoing.pending:
        await stream.send(outgoing.read())
    return TLSStream(
        transport_stream=stream,
        standard_compatible=False,
        _ssl_object=tls,
        _read_bio=incoming,
        _write_bio=outgoing,
    )


async def drain_and_close(stream: anyio.abc.ByteStream) -> None:
    """After a failed handshake: half-close, read what the peer still sends (its first
    request, typically) for at most ``DRAIN_SECS`` and ``DRAIN_BYTES_MAX``, then close. Closing
    with unread bytes would reset the connection, and the peer might lose the alert."""
    with anyio.CancelScope(shield=True):
        with contextlib.suppress(*_GONE, NotImplementedError):
            await stream.send_eof()
            drained = 0
            with anyio.move_on_after(DRAIN_SECS):
                while drained < DRAIN_BYTES_MAX:
                    drained += len(await stream.receive())
        with contextlib.suppress(*_GONE):
            await stream.aclose()
