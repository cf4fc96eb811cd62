"""The snapshot format and the pure-Python CRC-32C: round trips, and rejection of every
truncation and every corrupted byte with an error naming the offset."""

from __future__ import annotations

import io
import random
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from parakoon_kv import (
    BLOCK_BYTES_DEFAULT,
    Set,
    SnapshotError,
    Store,
    crc32c,
    load,
)
from parakoon_kv.snapshot import MAGIC, read_snapshot, write_snapshot


def dumped(store: Store, **kwargs: object) -> bytes:
    stream = io.BytesIO()
    size = store.dump(stream, **kwargs)  # type: ignore[arg-type]
    data = stream.getvalue()
    assert size == len(data)
    return data


def filled(pairs: dict[bytes, bytes], i: int = 5) -> Store:
    store = Store()
    store.apply_batch(i, [Set(key=k, value=v) for k, v in pairs.items()])
    return store


SMALL = {b"": b"", b"a": b"1", b"b" * 40: b"\x00" * 30, b"\xff\x00": b"z" * 5}


# ------------------------------------------------------------------------------------------------
# CRC-32C


def test_crc32c_check_vector() -> None:
    """The CRC-32C check value (Castagnoli, reflected polynomial 0x82F63B78)."""
    assert crc32c(b"123456789") == 0xE3069283
    assert crc32c(b"") == 0


def test_crc32c_rfc3720_vectors() -> None:
    """The iSCSI test vectors of RFC 3720, appendix B.4."""
    assert crc32c(bytes(32)) == 0x8A9136AA
    assert crc32c(b"\xff" * 32) == 0x62A8AB43
    assert crc32c(bytes(range(32))) == 0x46DD794E
    assert crc32c(bytes(range(31, -1, -1))) == 0x113FDB5C


def bytewise_crc32c(data: bytes, value: int = 0) -> int:
    """The textbook bit-at-a-time definition, to check the table-driven one against."""
    crc = value ^ 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
    return crc ^ 0xFFFFFFFF


# No deadline: CI machines are shared, and a slow example is not a wrong one.
@settings(deadline=None)
@given(st.binary(max_size=100), st.binary(max_size=100))
def test_crc32c_matches_the_definition_and_continues(a: bytes, b: bytes) -> None:
    """Slicing-by-8 agrees with the bitwise definition for every length, and ``value`` continues
    a CRC over a second piece, as ``crc32c.crc32c(data, value)`` does."""
    assert crc32c(a) == bytewise_crc32c(a)
    assert crc32c(b, crc32c(a)) == crc32c(a + b) == bytewise_crc32c(b, bytewise_crc32c(a))


# ------------------------------------------------------------------------------------------------
# Round trips


def test_round_trip_keeps_content_and_applied_i() -> None:
    """dump then load gives the same content, order and applied_i."""
    store = filled(SMALL, i=42)
    again = load(io.BytesIO(dumped(store)))
    assert again.applied_i == 42
    assert again.range_entries(None, True, None, True, -1) == sorted(SMALL.items())
    assert again.digest() == store.digest()
    again._check()


def test_metadata_travels_with_the_snapshot_and_is_checked() -> None:
    """The metadata section (the node's membership) round-trips, also through a frozen copy,
    stays out of the content hash, and a flipped byte in it is named with its offset."""
    store = filled(SMALL, i=7)
    plain = dumped(store)
    store.meta = b"membership-v1"
    data = dumped(store)
    assert len(data) == len(plain) + 8 + len(b"membership-v1")
    again = load(io.BytesIO(data))
    assert again.meta == b"membership-v1"
    assert again.content_hash() == store.content_hash()
    assert load(io.BytesIO(plain)).meta == b""
    frozen = io.BytesIO()
    store.freeze().dump(frozen)
    assert frozen.getvalue() == data
    bad = bytearray(data)
    bad[36 + 8 + 3] ^= 0xFF
    with pytest.raises(SnapshotError, match="metadata checksum") as info:
        load(io.BytesIO(bytes(bad)))
    assert info.value.offset == 36


def test_round_trip_of_an_empty_store_without_applied_i() -> None:
    """A fresh store (applied_i None, no keys) survives a round trip."""
    data = dumped(Store())
    assert data.startswith(MAGIC)
    again = Store.load(io.BytesIO(data))
    assert again.applied_i is None
    assert again.key_count() == 0


def test_round_trip_with_many_blocks_and_an_oversized_entry() -> None:
    """Entries never span blocks; an entry larger than a block gets a block of its own."""
    rng = random.Random(1)
    pairs = {
        rng.randbytes(rng.randrange(0, 20)): rng.randbytes(rng.randrange(0, 50)) for _ in range(500)
    }
    pairs[b"big"] = b"B" * 5000
    store = filled(pairs)
    data = dumped(store, block_bytes=256)
    again = load(io.BytesIO(data))
    assert again.range_entries(None, True, None, True, -1) == sorted(pairs.items())
    assert again.digest() == store.digest()


def test_crc_callable_is_used_and_called_rarely() -> None:
    """dump/load take the checksum as an argument (so the node can pass the C crc32c); with the
    default 1 MiB blocks it is called a handful of times, and the bytes do not depend on it."""
    calls: list[int] = []

    def counting(data: bytes, value: int = 0) -> int:
        calls.append(len(data))
        return crc32c(data, value)

    store = filled({bytes([n]) * 3: b"v" * 100 for n in range(256)})
    data = dumped(store, crc=counting)
    assert data == dumped(store)
    assert len(calls) == 4  # header, one block (payload + header), end block
    calls.clear()
    Store.load(io.BytesIO(data), crc=counting)
    assert len(calls) == 4
    assert BLOCK_BYTES_DEFAULT == 1 << 20


def test_freeze_is_a_consistent_copy_while_writes_continue() -> None:
    """freeze() keeps the content of the moment; later batches do not show in it."""
    store = filled(SMALL, i=1)
    frozen = store.freeze()
    digest = store.digest()
    store.apply_batch(2, [Set(key=b"later", value=b"x"), Set(key=b"a", value=b"changed")])
    assert frozen.applied_i == 1
    assert frozen.key_count() == len(SMALL)
    assert frozen.get_option(b"a") == b"1"
    assert frozen.digest() == digest != store.digest()
    assert list(frozen.items()) == sorted(SMALL.items())
    stream = io.BytesIO()
    frozen.dump(stream)
    assert stream.getvalue() == dumped(filled(SMALL, i=1))


def test_digest_depends_on_content_only() -> None:
    """digest() hashes the content and nothing else: not applied_i, not history."""
    a = filled({b"k": b"v", b"x": b"y"}, i=1)
    b = Store()
    b.apply_batch(
        9, [Set(key=b"x", value=b"y"), Set(key=b"gone", value=b""), Set(key=b"k", value=b"v")]
    )
    b.apply_batch(10, [Set(key=b"gone", value=b"")])
    assert a.digest() != b.digest()
    from parakoon_kv import Delete

    b.apply_batch(11, [Delete(key=b"gone")])
    assert a.digest() == b.digest()
    # Moving a byte from key to value changes the digest (lengths are part of it).
    assert filled({b"ab": b"c"}).digest() != filled({b"a": b"bc"}).digest()


def test_reader_stops_at_the_end_block() -> None:
    """A snapshot can be followed by other bytes in the same stream; the reader leaves them."""
    data = dumped(filled(SMALL))
    stream = io.BytesIO(data + b"TRAILER")
    load(stream)
    assert stream.read() == b"TRAILER"


class Dribble:
    """A stream that returns at most 3 bytes per read, like a slow socket."""

    def __init__(self, data: bytes) -> None:
        self._stream = io.BytesIO(data)

    def read(self, size: int) -> bytes:
        return self._stream.read(min(size, 3))


def test_reader_copes_with_short_reads() -> None:
    """read(n) may return fewer than n bytes; the reader keeps reading."""
    data = dumped(filled(SMALL))
    assert load(Dribble(data)).digest() == filled(SMALL).digest()


@settings(max_examples=50, deadline=None)
@given(
    st.dictionaries(st.binary(max_size=8), st.binary(max_size=20), max_size=30),
    st.integers(min_value=1, max_value=64),
    st.one_of(st.none(), st.integers(min_value=0, max_value=2**62)),
)
def test_round_trip_property(pairs: dict[bytes, bytes], block_bytes: int, i: int | None) -> None:
    """Any content, any block size, any applied_i: load(dump(s)) has the same content."""
    store = Store() if i is None else filled(pairs, i=i)
    stream = io.BytesIO()
    store.dump(stream, block_bytes=block_bytes)
    stream.seek(0)
    again = load(stream)
    assert again.applied_i == store.applied_i
    assert again.range_entries(None, True, None, True, -1) == store.range_entries(
        None, True, None, True, -1
    )


# ------------------------------------------------------------------------------------------------
# Rejection


def test_every_truncation_is_rejected_with_its_offset() -> None:
    """A snapshot cut at any byte is refused, and the error names an offset at or before the
    cut."""
    data = dumped(filled(SMALL), block_bytes=16)
    for cut in range(len(data)):
        with pytest.raises(SnapshotError) as info:
            load(io.BytesIO(data[:cut]))
        assert "truncated" in str(info.value)
        assert info.value.offset <= cut, (cut, str(info.value))
        assert f"offset {info.value.offset}" in str(info.value)


def test_every_corrupted_byte_is_rejected() -> None:
    """Flipping any single bit anywhere is detected (by a checksum, the magic or a count)."""
    data = dumped(filled(SMALL), block_bytes=16)
    rng = random.Random(7)
    for position in range(len(data)):
        damaged = bytearray(data)
        damaged[position] ^= 1 << rng.randrange(8)
        with pytest.raises(SnapshotError) as info:
            load(io.BytesIO(bytes(damaged)))
        assert info.value.offset <= len(data)


def test_dropped_or_repeated_block_breaks_the_chain() -> None:
    """Blocks are chained: removing or repeating a whole, intact block is detected."""
    store = filled({bytes([n]): b"v" for n in range(10)})
    data = dumped(store, block_bytes=1)  # one entry per block: 36 + 10 x (16 + 10) + 16 bytes
    header, blocks, end = data[:36], data[36:-16], data[-16:]
    size = 16 + 8 + 1 + 1
    assert len(blocks) == 10 * size
    without_one = header + blocks[:size] + blocks[2 * size :] + end
    with pytest.raises(SnapshotError, match="checksum"):
        load(io.BytesIO(without_one))
    repeated = header + blocks[:size] + blocks + end
    with pytest.raises(SnapshotError):
        load(io.BytesIO(repeated))


def test_writer_output_with_keys_out_of_order_is_rejected() -> None:
    """A (buggy) writer that puts keys out of order produces a snapshot the reader refuses even
    though every checksum holds; the writer asserts the order itself."""
    stream = io.BytesIO()
    with pytest.raises(AssertionError, match="ascending"):
        write_snapshot(stream, applied_i=1, keys=[b"b", b"a"], data={b"a": b"", b"b": b""})
    # Build the bad snapshot by hand, with valid checksums.
    header = struct.pack("<8sIIqQ", MAGIC, 1, 0, 1, 2)
    chain = crc32c(header)
    out = header + struct.pack("<I", chain)
    # Column layout: two key lengths, two value lengths, the keys, the (empty) values.
    payload = struct.pack("<IIII", 1, 1, 0, 0) + b"b" + b"a"
    chain = crc32c(payload, chain)
    body = struct.pack("<III", len(payload), 2, chain)
    out += body + struct.pack("<I", crc32c(body)) + payload
    end = struct.pack("<III", 0, 0, chain)
    out += end + struct.pack("<I", crc32c(end))
    with pytest.raises(SnapshotError, match="ascending order at entry 1") as info:
        read_snapshot(io.BytesIO(out))
    assert info.value.offset == 36


def test_unknown_version_is_rejected() -> None:
    """The header's version is checked (after its checksum)."""
    header = struct.pack("<8sIIqQ", MAGIC, 2, 0, 1, 0)
    data = header + struct.pack("<I", crc32c(header))
    with pytest.raises(SnapshotError, match="unsupported version 2"):
        load(io.BytesIO(data))
    with pytest.raises(SnapshotError, match="bad magic"):
        load(io.BytesIO(b"X" * 100))


def test_blocks_are_bounded_by_entry_count() -> None:
    """The writer closes a block after ``block_entries_max`` entries whatever its size, and checks
    the key order across those blocks too."""
    pairs = {bytes([n]): b"v" for n in range(10)}
    stream = io.BytesIO()
    size = write_snapshot(stream, applied_i=1, keys=sorted(pairs), data=pairs, block_entries_max=3)
    # Header 36, four blocks (3+3+3+1 entries) of 16-byte headers, 10 x (8 + 1 + 1) bytes of
    # payload, end block 16.
    assert size == len(stream.getvalue()) == 36 + 4 * 16 + 100 + 16
    stream.seek(0)
    applied_i, keys, values = read_snapshot(stream)
    assert (applied_i, keys, values) == (1, sorted(pairs), [b"v"] * 10)
    with pytest.raises(AssertionError, match="ascending"):
        write_snapshot(
            io.BytesIO(),
            applied_i=1,
            keys=[b"a", b"c", b"b"],
            data=dict.fromkeys([b"a", b"b", b"c"], b""),
            block_entries_max=2,
        )


def test_oversized_block_length_is_refused_before_reading() -> None:
    """A block header announcing more than BLOCK_PAYLOAD_BYTES_MAX is refused (even with a valid
    header checksum), so a hostile snapshot cannot make the reader allocate without bound."""
    from parakoon_kv.snapshot import BLOCK_PAYLOAD_BYTES_MAX

    header = struct.pack("<8sIIqQ", MAGIC, 1, 0, 1, 1)
    out = header + struct.pack("<I", crc32c(header))
    body = struct.pack("<III", BLOCK_PAYLOAD_BYTES_MAX + 1, 1, 0)
    out += body + struct.pack("<I", crc32c(body))
    with pytest.raises(SnapshotError, match="exceeds") as info:
        load(io.BytesIO(out))
    assert info.value.offset == 36
