"""Peer-port framing: any chunking decodes the same frames; garbage gives PeerProtocolError."""

from __future__ import annotations

import contextlib
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from parakoon_node.runtime.framing import FrameDecoder, PeerProtocolError, encode_frame

primitives = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.binary(max_size=64)
    | st.text(max_size=16),
    lambda children: st.lists(children, max_size=5),
    max_leaves=20,
)


@given(st.lists(primitives, max_size=8), st.lists(st.integers(1, 50), max_size=30))
@settings(max_examples=200, deadline=None)
def test_any_split_of_a_valid_stream_gives_the_same_frames(
    frames: list[object], cuts: list[int]
) -> None:
    stream = b"".join(encode_frame(f) for f in frames)
    decoder = FrameDecoder(1 << 20)
    got: list[object] = []
    pos = 0
    for cut in cuts:
        decoder.feed(stream[pos : pos + cut])
        pos += cut
        got.extend(decoder.frames())
    decoder.feed(stream[pos:])
    got.extend(decoder.frames())
    assert got == frames
    assert decoder.buffered() == 0


@given(st.binary(max_size=512))
@settings(max_examples=300, deadline=None)
def test_garbage_raises_only_peer_protocol_error(blob: bytes) -> None:
    decoder = FrameDecoder(256)
    decoder.feed(blob)
    with contextlib.suppress(PeerProtocolError):
        decoder.frames()
    # Whatever happened, nothing larger than the bound was buffered for a frame body.
    assert decoder.buffered() <= len(blob)


def test_oversize_length_is_refused_before_buffering() -> None:
    decoder = FrameDecoder(1024)
    decoder.feed(struct.pack("<I", 0x7FFFFFFF) + b"x")
    with pytest.raises(PeerProtocolError, match="exceeds the limit"):
        decoder.frames()


def test_body_that_is_not_msgpack_is_refused() -> None:
    decoder = FrameDecoder(1024)
    decoder.feed(struct.pack("<I", 2) + b"\xc1\xc1")  # 0xc1 is never used by msgpack
    with pytest.raises(PeerProtocolError, match="undecodable"):
        decoder.frames()


def test_bound_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        FrameDecoder(0)
