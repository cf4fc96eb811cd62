"""The snapshot format: the whole store and its ``applied_i`` as one self-checking byte stream.

The WAL's collapser writes head snapshots with it and catch-up ships it to a lagging node, so a
reader must be able to tell a complete, intact snapshot from a truncated or damaged one. Every
integer is little-endian; every checksum is CRC-32C (Castagnoli), computed by the ``crc`` callable
(the pure-Python ``parakoon_kv.crc.crc32c`` by default, ``crc32c.crc32c`` when the caller has it;
the bytes are the same either way).

Layout::

    header (36 bytes)
      magic        8 bytes   b"PKVSNAP\\x00"
      version      u32       1
      flags        u32       0, or 1 (``FLAG_META``: a metadata section follows the header);
                             a reader rejects any other value
      applied_i    i64       the store's applied_i, -1 for None
      key_count    u64       number of entries in the whole snapshot
      header_crc   u32       crc(the 32 bytes above, 0)
    metadata section (only with FLAG_META)
      meta_len     u32       bytes of metadata, at most META_BYTES_MAX
      meta_crc     u32       crc(metadata, header_crc): the chain goes on from here
      metadata     meta_len opaque bytes (the node keeps its replicated membership there)
    block (repeated; the last one is the end block)
      payload_len  u32       bytes of payload that follow this 16-byte block header
      entry_count  u32       entries in the payload, n
      payload_crc  u32       crc(payload, previous chain value); see below
      block_crc    u32       crc(the 12 bytes above, 0): the header is checked before its
                             length is trusted
      payload      payload_len bytes, laid out by column:
                     key_len   n x u32   the length of each key
                     value_len n x u32   the length of each value
                     keys      the n keys, back to back, in order
                     values    the n values, back to back, in the same order
    end block: a block header with payload_len = 0 and entry_count = 0 and no payload; its
               payload_crc is the final chain value.

The checksums form a chain, as in etcd's WAL: the chain starts at ``header_crc``; each block's
``payload_crc`` is ``crc(payload, chain)`` and becomes the new chain value. A block that is
dropped, repeated or moved therefore fails its checksum even though its own bytes are intact.
Entries are in strictly ascending key order across the whole snapshot, and the entry counts of the
blocks add up to ``key_count``; ``payload_len`` is exactly 8n plus the sum of the lengths.

The writer closes a block once its payload reaches ``block_bytes`` (1 MiB by default), so the
checksum is called rarely, or once it holds ``BLOCK_ENTRIES_MAX`` (65,536) entries, which bounds
the writer's working lists. No payload may exceed ``BLOCK_PAYLOAD_BYTES_MAX`` (1 GiB), so a
reader never allocates more than that for one block. One entry never spans two blocks: an entry
larger than ``block_bytes`` gets a block of its own.

The column layout is what makes the format fast in pure Python: lengths are read and written as
whole ``array`` objects, keys and values are joined and sliced by list comprehensions, and no
Python-level loop runs per entry.

The reader stops right after the end block and never reads beyond it, so a snapshot can be
embedded in a longer stream; a caller that holds a whole file checks for trailing bytes itself.
"""

from __future__ import annotations

import struct
import sys
from array import array
from bisect import bisect_left
from collections.abc import Iterable, Mapping
from itertools import accumulate, islice, pairwise
from operator import add, lt
from typing import Final, Protocol

from parakoon_kv.crc import CrcFunction, crc32c
from parakoon_kv.errors import SnapshotError

__all__ = [
    "BLOCK_BYTES_DEFAULT",
    "BLOCK_ENTRIES_MAX",
    "BLOCK_PAYLOAD_BYTES_MAX",
    "MAGIC",
    "VERSION",
    "SnapshotReader",
    "SnapshotWriter",
    "read_snapshot",
    "read_snapshot_with_meta",
    "write_snapshot",
]

MAGIC: Final = b"PKVSNAP\x00"
VERSION: Final = 1
#: Payload bytes after which the writer closes a block.
BLOCK_BYTES_DEFAULT: Final = 1 << 20
#: Entries after which the writer closes a block whatever its size.
BLOCK_ENTRIES_MAX: Final = 1 << 16
#: Largest block payload a reader accepts (and a writer produces): a damaged or hostile length
#: must not make the reader allocate without limit. Real blocks are about ``block_bytes`` plus
#: at most one large entry, and replicated values are far below this (protocol §11 rule 23: 32 MiB).
BLOCK_PAYLOAD_BYTES_MAX: Final = 1 << 30
#: The flag bit of a snapshot that carries a metadata section, and its largest size.
FLAG_META: Final = 1
META_BYTES_MAX: Final = 1 << 20

_HEADER_BODY = struct.Struct("<8sIIqQ")
_U32 = struct.Struct("<I")
_HEADER_SIZE: Final = _HEADER_BODY.size + 4
_BLOCK_BODY = struct.Struct("<III")
_BLOCK_HEADER_SIZE: Final = _BLOCK_BODY.size + 4
_LENGTHS_PER_ENTRY: Final = 8  # a u32 key length and a u32 value length
_LITTLE_ENDIAN: Final = sys.byteorder == "little"


assert array("I").itemsize == 4, "the snapshot code needs a 4-byte unsigned array type"


def _u32_array(values: Iterable[int]) -> array[int]:
    return array("I", values)


class SnapshotWriter(Protocol):
    """Where a snapshot goes: anything with ``write(bytes)`` (a file, BytesIO, a socket file)."""

    def write(self, data: bytes, /) -> object: ...


class SnapshotReader(Protocol):
    """Where a snapshot comes from: anything with ``read(n)`` returning at most n bytes."""

    def read(self, size: int, /) -> bytes: ...


def _lengths_bytes(values: Iterable[int]) -> bytes:
    lengths = _u32_array(values)
    if not _LITTLE_ENDIAN:
        lengths.byteswap()
    return lengths.tobytes()


def _lengths_from(data: bytes) -> array[int]:
    lengths = _u32_array(())
    lengths.frombytes(data)
    if not _LITTLE_ENDIAN:
        lengths.byteswap()
    return lengths


def write_snapshot(
    stream: SnapshotWriter,
    *,
    applied_i: int | None,
    keys: Iterable[bytes],
    data: Mapping[bytes, bytes],
    crc: CrcFunction = crc32c,
    block_bytes: int = BLOCK_BYTES_DEFAULT,
    block_entries_max: int = BLOCK_ENTRIES_MAX,
    meta: bytes = b"",
) -> int:
    """Write a snapshot of ``data`` (entries in the order of ``keys``, which must be ascending)
    and ``meta`` (a metadata section when not empty).

    Returns the number of bytes written.
    """
    if len(meta) > META_BYTES_MAX:
        raise ValueError(f"snapshot metadata of {len(meta)} bytes exceeds {META_BYTES_MAX}")
    if block_bytes <= 0 or block_entries_max <= 0:
        raise ValueError(
            f"block_bytes ({block_bytes}) and block_entries_max ({block_entries_max}) "
            "must be positive"
        )
    key_count = len(data)
    header_body = _HEADER_BODY.pack(
        MAGIC, VERSION, FLAG_META if meta else 0, -1 if applied_i is None else applied_i, key_count
    )
    chain = crc(header_body, 0)
    stream.write(header_body + _U32.pack(chain))
    written = _HEADER_SIZE
    if meta:
        chain = crc(meta, chain)
        stream.write(_U32.pack(len(meta)) + _U32.pack(chain) + meta)
        written += 8 + len(meta)
    total = 0
    previous: list[bytes] = []
    iterator = iter(keys)
    while chunk := list(islice(iterator, block_entries_max)):
        # The order check runs in C (map over operator.lt); it costs little and makes a writer
        # bug fail here rather than in some later reader.
        checked = previous + chunk
        assert all(map(lt, checked, islice(checked, 1, None))), "keys not ascending"
        previous = chunk[-1:]
        values = list(map(data.__getitem__, chunk))
        key_lengths = list(map(len, chunk))
        value_lengths = list(map(len, values))
        # Payload bytes up to and including each entry; a block ends at the first entry that
        # takes its payload to block_bytes or beyond.
        ends = list(
            map(
                add,
                accumulate(map(add, key_lengths, value_lengths), initial=0),
                range(0, _LENGTHS_PER_ENTRY * (len(chunk) + 1), _LENGTHS_PER_ENTRY),
            )
        )
        start = 0
        while start < len(chunk):
            stop = min(bisect_left(ends, ends[start] + block_bytes, start + 1), len(chunk))
            if ends[stop] - ends[start] > BLOCK_PAYLOAD_BYTES_MAX:
                raise ValueError(
                    f"entry {chunk[start][:32]!r}... needs a block of "
                    f"{ends[stop] - ends[start]} bytes, more than the format allows "
                    f"({BLOCK_PAYLOAD_BYTES_MAX})"
                )
            payload = b"".join(
                (
                    _lengths_bytes(key_lengths[start:stop]),
                    _lengths_bytes(value_lengths[start:stop]),
                    *chunk[start:stop],
                    *values[start:stop],
                )
            )
            size = len(payload)
            assert size == ends[stop] - ends[start], f"payload {size} bytes, counted otherwise"
            chain = crc(payload, chain)
            body = _BLOCK_BODY.pack(size, stop - start, chain)
            stream.write(body + _U32.pack(crc(body, 0)))
            stream.write(payload)
            written += _BLOCK_HEADER_SIZE + size
            total += stop - start
            start = stop
    if total != key_count:
        raise AssertionError(f"wrote {total} entries but the header promised {key_count}")
    end = _BLOCK_BODY.pack(0, 0, chain)
    stream.write(end + _U32.pack(crc(end, 0)))
    return written + _BLOCK_HEADER_SIZE


def _read_exact(stream: SnapshotReader, size: int, offset: int, what: str) -> bytes:
    chunks: list[bytes] = []
    got = 0
    while got < size:
        chunk = stream.read(size - got)
        if not chunk:
            raise SnapshotError(
                f"truncated: {what} needs {size} bytes, only {got} present", offset=offset + got
            )
        chunks.append(chunk)
        got += len(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def read_snapshot(
    stream: SnapshotReader, *, crc: CrcFunction = crc32c
) -> tuple[int | None, list[bytes], list[bytes]]:
    """Read and verify a snapshot; return ``(applied_i, keys, values)`` with keys ascending
    (its metadata, if any, is checked and dropped: see ``read_snapshot_with_meta``)."""
    applied_i, keys, values, _ = read_snapshot_with_meta(stream, crc=crc)
    return applied_i, keys, values


def read_snapshot_with_meta(
    stream: SnapshotReader, *, crc: CrcFunction = crc32c
) -> tuple[int | None, list[bytes], list[bytes], bytes]:
    """Read and verify a snapshot; return ``(applied_i, keys, values, meta)``.

    Raises SnapshotError naming the byte offset (from the start of the snapshot) of the first
    problem: bad magic or version, a checksum mismatch, truncation, lengths that do not fill
    their block, keys out of order, or entry counts that disagree with the header.
    """
    raw = _read_exact(stream, _HEADER_SIZE, 0, "header")
    magic, version, flags, applied_raw, key_count = _HEADER_BODY.unpack_from(raw)
    (header_crc,) = _U32.unpack_from(raw, _HEADER_BODY.size)
    if magic != MAGIC:
        raise SnapshotError(f"bad magic {magic!r}, expected {MAGIC!r}", offset=0)
    if crc(raw[: _HEADER_BODY.size], 0) != header_crc:
        raise SnapshotError("header checksum mismatch", offset=_HEADER_BODY.size)
    if version != VERSION:
        raise SnapshotError(f"unsupported version {version}, expected {VERSION}", offset=8)
    if flags & ~FLAG_META:
        raise SnapshotError(f"unknown flags 0x{flags:x}", offset=12)
    if applied_raw < -1:
        raise SnapshotError(f"bad applied_i {applied_raw}", offset=16)
    applied_i = None if applied_raw == -1 else applied_raw
    chain = header_crc
    offset = _HEADER_SIZE
    meta = b""
    if flags & FLAG_META:
        raw = _read_exact(stream, 8, offset, "metadata header")
        (meta_len,) = _U32.unpack_from(raw)
        (meta_crc,) = _U32.unpack_from(raw, 4)
        if meta_len > META_BYTES_MAX:
            raise SnapshotError(
                f"metadata of {meta_len} bytes exceeds {META_BYTES_MAX}", offset=offset
            )
        meta = _read_exact(stream, meta_len, offset + 8, "metadata")
        if crc(meta, chain) != meta_crc:
            raise SnapshotError("metadata checksum mismatch", offset=offset)
        chain = meta_crc
        offset += 8 + meta_len
    keys: list[bytes] = []
    values: list[bytes] = []
    while True:
        block_offset = offset
        raw = _read_exact(stream, _BLOCK_HEADER_SIZE, offset, "block header")
        payload_len, count, payload_crc = _BLOCK_BODY.unpack_from(raw)
        (block_crc,) = _U32.unpack_from(raw, _BLOCK_BODY.size)
        if crc(raw[: _BLOCK_BODY.size], 0) != block_crc:
            raise SnapshotError("block header checksum mismatch", offset=block_offset)
        offset += _BLOCK_HEADER_SIZE
        if payload_len == 0 and count == 0:
            if payload_crc != chain:
                raise SnapshotError("end block does not close the checksum chain", offset=offset)
            break
        lengths_size = count * _LENGTHS_PER_ENTRY
        if payload_len > BLOCK_PAYLOAD_BYTES_MAX:
            raise SnapshotError(
                f"block payload of {payload_len} bytes exceeds {BLOCK_PAYLOAD_BYTES_MAX}",
                offset=block_offset,
            )
        if count == 0 or payload_len < lengths_size:
            raise SnapshotError(
                f"block claims {count} entries in {payload_len} bytes", offset=block_offset
            )
        if len(keys) + count > key_count:
            raise SnapshotError(
                f"blocks hold more than the {key_count} entries the header announces",
                offset=block_offset,
            )
        payload = _read_exact(stream, payload_len, offset, "block payload")
        if crc(payload, chain) != payload_crc:
            raise SnapshotError("block payload checksum mismatch", offset=block_offset)
        chain = payload_crc
        key_lengths = _lengths_from(payload[: count * 4])
        value_lengths = _lengths_from(payload[count * 4 : lengths_size])
        key_ends = list(accumulate(key_lengths, initial=lengths_size))
        value_ends = list(accumulate(value_lengths, initial=key_ends[-1]))
        if value_ends[-1] != payload_len:
            raise SnapshotError(
                f"entry lengths add up to {value_ends[-1]} bytes, the block has {payload_len}",
                offset=block_offset,
            )
        block_keys = [payload[a:b] for a, b in pairwise(key_ends)]
        # Strictly ascending order, checked from the last key of the previous block on.
        checked = keys[-1:] + block_keys
        if not all(map(lt, checked, islice(checked, 1, None))):
            bad = next(n for n, (a, b) in enumerate(pairwise(checked)) if not a < b)
            first = len(keys) - len(checked) + len(block_keys)
            raise SnapshotError(
                f"keys not in ascending order at entry {first + bad + 1} "
                f"({checked[bad + 1]!r} after {checked[bad]!r})",
                offset=block_offset,
            )
        keys += block_keys
        values += [payload[a:b] for a, b in pairwise(value_ends)]
        offset += payload_len
    if len(keys) != key_count:
        raise SnapshotError(
            f"snapshot holds {len(keys)} entries, the header announces {key_count}", offset=offset
        )
    return applied_i, keys, values, meta
