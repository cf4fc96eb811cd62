"""Length-prefixed msgpack frames for the node-to-node (messaging) port.

Every frame on the peer port is ``length:uint32 little-endian`` followed by ``length`` bytes of
one msgpack object. The length is checked against a configured bound *before* anything is
buffered for it, so a peer that announces 0x7fffffff bytes is refused at once instead of making
us allocate 2 GiB. Decoding is incremental (``FrameDecoder.feed`` takes any chunking of the
stream) and never raises anything but :class:`PeerProtocolError`, whatever bytes arrive.

The first frame each way is a handshake (see :mod:`parakoon_node.runtime.peer`); after it, frames
carry Paxos messages or catch-up data, each a msgpack array whose first element names its kind.
"""

from __future__ import annotations

import struct
from typing import Any, Final

import msgpack

_LEN: Final = struct.Struct("<I")
HEADER_BYTES: Final = _LEN.size

# What a well-formed frame body may decode to: msgpack maps and arrays of primitives.
Frame = Any


class PeerProtocolError(Exception):
    """The peer sent bytes that are not a valid frame stream (the connection must be closed)."""


def encode_frame(obj: object) -> bytes:
    """Serialize one frame (header + msgpack body)."""
    body: bytes = msgpack.packb(obj, use_bin_type=True)
    return _LEN.pack(len(body)) + body


def encode_frame_body(body: bytes) -> bytes:
    """Frame an already msgpack-encoded body (used to encode a broadcast once for all peers)."""
    return _LEN.pack(len(body)) + body


class FrameDecoder:
    """Incremental decoder of length-prefixed msgpack frames with a size bound.

    ``feed`` appends bytes; ``frames()`` yields every complete frame decoded so far. A frame
    longer than ``max_frame_bytes``, or a body that is not exactly one msgpack object, raises
    :class:`PeerProtocolError` naming the problem; the caller closes the connection.
    """

    __slots__ = ("_buf", "_max", "_pos")

    def __init__(self, max_frame_bytes: int) -> None:
        if max_frame_bytes <= 0:
            raise ValueError("max_frame_bytes must be positive")
        self._buf = bytearray()
        self._pos = 0
        self._max = max_frame_bytes

    def feed(self, data: bytes) -> None:
        self._buf += data

    def buffered(self) -> int:
        return len(self._buf) - self._pos

    def frames(self) -> list[Frame]:
        out: list[Frame] = []
        buf = self._buf
        pos = self._pos
        end = len(buf)
        while end - pos >= HEADER_BYTES:
            (length,) = _LEN.unpack_from(buf, pos)
            if length > self._max:
                raise PeerProtocolError(
                    f"frame of {length} bytes exceeds the limit of {self._max} bytes"
                )
            if end - pos - HEADER_BYTES < length:
                break
            start = pos + HEADER_BYTES
            body = bytes(buf[start : start + length])
            pos = start + length
            try:
                obj = msgpack.unpackb(body, raw=False, strict_map_key=False, use_list=True)
            except Exception as exc:  # msgpack raises several types for garbage
                raise PeerProtocolError(
                    f"undecodable frame body ({exc.__class__.__name__})"
                ) from exc
            out.append(obj)
        # Compact rarely: only when the consumed prefix dominates the buffer.
        if pos and pos * 2 >= end:
            del buf[:pos]
            pos = 0
        self._pos = pos
        return out
