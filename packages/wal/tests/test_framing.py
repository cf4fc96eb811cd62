"""The pure framing: round trips, the chain, and the torn-tail rule on every byte."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from parakoon_wal import WalCorruptError, framing

PATH = "seg.wal"


def _segment(entries: list[tuple[int, bytes]], *, next_slot: int = 0, prev: int = 0) -> bytes:
    header = framing.encode_segment_header(
        framing.SegmentHeader(seq=1, next_slot=next_slot, prev_crc=prev)
    )
    body, _crc, _ends = framing.encode_records(entries, prev)
    return header + bytes(body)


def _scan(buf: bytes, *, torn_ok: bool = True, next_slot: int = 0) -> framing.ScanResult:
    return framing.scan(
        buf,
        start=framing.SEGMENT_HEADER_SIZE,
        prev_crc=0,
        next_slot=next_slot,
        rewrite_first_ok=next_slot > 0,
        path=PATH,
        torn_ok=torn_ok,
    )


@given(
    st.integers(0, 2**64 - 1 - 50),
    st.lists(st.binary(max_size=300), min_size=1, max_size=20),
    st.integers(0, 2**32 - 1),
)
def test_records_round_trip(first: int, payloads: list[bytes], prev: int) -> None:
    entries = [(first + k, p) for k, p in enumerate(payloads)]
    buf, crc, ends = framing.encode_records(entries, prev)
    assert len(ends) == len(entries) and ends[-1] == len(buf)
    out, final = framing.decode_records(
        bytes(buf), start=0, stop=len(buf), prev_crc=prev, from_slot=0, path=PATH
    )
    assert out == entries
    assert final == crc
    offset, seed = 0, prev
    for slot, p in entries:
        got_slot, got, offset, seed = framing.decode_record(buf, offset, seed, PATH)  # type: ignore[arg-type]  # a bytearray works like bytes here
        assert (got_slot, got) == (slot, p)


def test_segment_header_round_trip_and_tamper() -> None:
    header = framing.SegmentHeader(seq=7, next_slot=123, prev_crc=0xDEADBEEF, reset=True)
    raw = framing.encode_segment_header(header)
    assert len(raw) == framing.SEGMENT_HEADER_SIZE
    assert framing.decode_segment_header(raw, PATH) == header
    for i in range(len(raw)):
        bad = bytearray(raw)
        bad[i] ^= 0x01
        with pytest.raises(WalCorruptError) as err:
            framing.decode_segment_header(bytes(bad), PATH)
        assert err.value.offset is not None and PATH in str(err.value)
    with pytest.raises(WalCorruptError, match="truncated"):
        framing.decode_segment_header(raw[:10], PATH)


def test_chain_rejects_reordered_records() -> None:
    entries = [(0, b"a"), (1, b"b"), (2, b"c")]
    buf, _crc, ends = framing.encode_records(entries, 0)
    # Swap record 1 with a record 1 framed under a different chain seed: structurally
    # perfect, but the chain does not continue, so it must be rejected.
    alien, _ = framing.encode_record(1, b"b", 12345)
    spliced = bytes(buf[: ends[0]]) + alien + bytes(buf[ends[1] :])
    with pytest.raises(WalCorruptError, match="checksum"):
        framing.decode_records(
            spliced, start=0, stop=len(spliced), prev_crc=0, from_slot=0, path=PATH
        )


def test_decode_keeps_newest_copy_of_rewritten_slot() -> None:
    entries = [(0, b"a"), (1, b"old"), (1, b"new"), (2, b"c")]
    buf, _crc, _ends = framing.encode_records(entries[:2], 0)
    more, _crc2, _ = framing.encode_records(entries[2:], _crc)
    data = bytes(buf + more)
    out, _ = framing.decode_records(
        data, start=0, stop=len(data), prev_crc=0, from_slot=1, path=PATH
    )
    assert out == [(1, b"new"), (2, b"c")]


def test_scan_enforces_slot_rule() -> None:
    with pytest.raises(WalCorruptError, match="slot rule"):
        _scan(_segment([(0, b"a"), (2, b"b")]))
    with pytest.raises(WalCorruptError, match="slot rule"):
        _scan(_segment([(1, b"a")]))
    # a rewrite of the previous segment's last slot may open a segment
    result = _scan(_segment([(4, b"x"), (5, b"y")], next_slot=5), next_slot=5)
    assert (result.first_slot, result.last_slot, result.count) == (4, 5, 2)


def test_every_truncation_is_a_torn_tail_at_a_record_boundary() -> None:
    entries = [(k, bytes([k]) * (k * 7 % 40)) for k in range(12)]
    data = _segment(entries)
    _body, _crc, ends = framing.encode_records(entries, 0)
    boundaries = [framing.SEGMENT_HEADER_SIZE] + [framing.SEGMENT_HEADER_SIZE + e for e in ends]
    for cut in range(framing.SEGMENT_HEADER_SIZE, len(data) + 1):
        result = _scan(data[:cut])
        expected_end = max(b for b in boundaries if b <= cut)
        assert result.end == expected_end, cut
        assert (result.torn is None) == (cut == expected_end), cut
        assert result.count == boundaries.index(expected_end)
        if cut != expected_end:
            with pytest.raises(WalCorruptError, match="completed segment"):
                _scan(data[:cut], torn_ok=False)


def test_every_byte_flip_in_records_is_corruption_never_torn() -> None:
    entries = [(k, bytes([k + 1]) * (k * 5 % 33 + 1)) for k in range(10)]
    data = _segment(entries)
    for i in range(framing.SEGMENT_HEADER_SIZE, len(data)):
        for mask in (0x01, 0x80, 0xFF):
            bad = bytearray(data)
            bad[i] ^= mask
            with pytest.raises(WalCorruptError) as err:
                _scan(bytes(bad))
            assert err.value.offset is not None
            assert framing.SEGMENT_HEADER_SIZE <= err.value.offset <= i


def test_zero_filled_tail_is_torn() -> None:
    entries = [(k, b"p" * 100) for k in range(30)]
    data = _segment(entries)
    _body, _crc, ends = framing.encode_records(entries, 0)
    # The file grew but its last sectors never reached the disk (sector aligned, as a disk
    # writes whole sectors).
    zero_from = ((len(data) - 700) // 512) * 512
    damaged = data[:zero_from] + bytes(len(data) - zero_from)
    result = _scan(damaged)
    assert result.torn is not None
    assert result.end <= zero_from
    assert result.end in [framing.SEGMENT_HEADER_SIZE + e for e in ends]
    # A zeroed sector in the middle of the unsynced tail, valid records after it.
    hole = bytearray(data)
    start = ((len(data) - 1100) // 512) * 512
    hole[start : start + 512] = bytes(512)
    result = _scan(bytes(hole))
    assert result.torn is not None and result.end <= start


def test_encoder_rejects_out_of_range() -> None:
    with pytest.raises(ValueError, match="out of range"):
        framing.encode_records([(-1, b"")], 0)
    with pytest.raises(ValueError, match="out of range"):
        framing.encode_segment_header(framing.SegmentHeader(seq=0, next_slot=0, prev_crc=0))
