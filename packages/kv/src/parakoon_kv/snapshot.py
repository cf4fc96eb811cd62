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
      flags        u32       0 (no flags are defined; a reader rejects any other value)
      applied_i    i64       the store's applied_i, -1 for None
      key_count    u64       number of entries in the whole snapshot
      header_crc   u32       crc(the 32 bytes above, 0)
    block (repeated; the last one is the end block)
      payload_len  u32       bytes of payload that follow this 16-byte block header
      entry_count  u32       entries in the payload
      payload_crc  u32       crc(payload, previous chain value); see below
      block_crc    u32       crc(the 12 bytes above, 0): the header is checked before its
                             length is trusted
      payload      payload_len bytes: entry_count entries, each
                     key_len u32, value_len u32, key (key_len bytes), value (value_len bytes)
    end block: a block header with payload_len = 0 and entry_count = 0 and no payload; its
               payload_crc is the final chain value.

The checksums form a chain, as in etcd's WAL: the chain starts at ``header_crc``; each block's
``payload_crc`` is ``crc(payload, chain)`` and becomes the new chain value. A block that is
dropped, repeated or moved therefore fails its checksum even though its own bytes are intact.
Entries are in strictly ascending key order across the whole snapshot, and the entry counts of the
blocks add up to ``key_count``. The writer fills a block until its payload reaches
``block_bytes`` (1 MiB by default), so the checksum is called rarely; one entry never spans two
blocks, so an entry larger than ``block_bytes`` gets a block of its own.

The reader stops right after the end block and never reads beyond it, so a snapshot can be
embedded in a longer stream; a caller that holds a whole file checks for trailing bytes itself.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping
from itertools import pairwise
from typing import Final, Protocol

from parakoon_kv.crc import CrcFunction, crc32c
from parakoon_kv.errors import SnapshotError

__all__ = [
    "BLOCK_BYTES_DEFAULT",
    "MAGIC",
    "VERSION",
    "SnapshotReader",
    "SnapshotWriter",
    "read_snapshot",
    "write_snapshot",
]

MAGIC: Final = b"PKVSNAP\x00"
VERSION: Final = 1
#: Payload bytes after which the writer closes a block.
BLOCK_BYTES_DEFAULT: Final = 1 << 20

_HEADER_BODY = struct.Struct("<8sIIqQ")
_U32 = struct.Struct("<I")
_HEADER_SIZE: Final = _HEADER_BODY.size + 4
_BLOCK_BODY = struct.Struct("<III")
_BLOCK_HEADER_SIZE: Final = _BLOCK_BODY.size + 4
_ENTRY = struct.Struct("<II")
_ENTRY_SIZE: Final = _ENTRY.size


class SnapshotWriter(Protocol):
    """Where a snapshot goes: anything with ``write(bytes)`` (a file, BytesIO, a socket file)."""

    def write(self, data: bytes, /) -> object: ...


class SnapshotReader(Protocol):
    """Where a snapshot comes from: anything with ``read(n)`` returning at most n bytes."""

    def read(self, size: int, /) -> bytes: ...


def write_snapshot(
    stream: SnapshotWriter,
    *,
    applied_i: int | None,
    keys: Iterable[bytes],
    data: Mapping[bytes, bytes],
    crc: CrcFunction = crc32c,
    block_bytes: int = BLOCK_BYTES_DEFAULT,
) -> int:
    """Write a snapshot of ``data`` (entries in the order of ``keys``, which must be ascending).

    Returns the number of bytes written.
    """
    if block_bytes <= 0:
        raise ValueError(f"block_bytes must be positive, got {block_bytes}")
    key_count = len(data)
    header_body = _HEADER_BODY.pack(
        MAGIC, VERSION, 0, -1 if applied_i is None else applied_i, key_count
    )
    chain = crc(header_body, 0)
    stream.write(header_body + _U32.pack(chain))
    written = _HEADER_SIZE
    pack_entry = _ENTRY.pack
    parts: list[bytes] = []
    size = 0
    count = 0
    total = 0
    previous: bytes | None = None

    def flush_block() -> None:
        nonlocal chain, written, parts, size, count, total
        payload = b"".join(parts)
        assert len(payload) == size, f"payload {len(payload)} bytes, counted {size}"
        chain = crc(payload, chain)
        body = _BLOCK_BODY.pack(size, count, chain)
        stream.write(body + _U32.pack(crc(body, 0)))
        stream.write(payload)
        written += _BLOCK_HEADER_SIZE + size
        total += count
        parts = []
        size = 0
        count = 0

    for key in keys:
        value = data[key]
        # The order check costs one comparison per entry; a reader would reject the snapshot
        # anyway, but failing here names the writer as the culprit.
        assert previous is None or previous < key, f"keys not ascending at {key!r}"
        previous = key
        parts += (pack_entry(len(key), len(value)), key, value)
        size += _ENTRY_SIZE + len(key) + len(value)
        count += 1
        if size >= block_bytes:
            flush_block()
    if count:
        flush_block()
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
    """Read and verify a snapshot; return ``(applied_i, keys, values)`` with keys ascending.

    Raises SnapshotError naming the byte offset (from the start of the snapshot) of the first
    problem: bad magic or version, a checksum mismatch, truncation, entries that overrun their
    block, keys out of order, or entry counts that disagree with the header.
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
    if flags != 0:
        raise SnapshotError(f"unknown flags 0x{flags:x}", offset=12)
    if applied_raw < -1:
        raise SnapshotError(f"bad applied_i {applied_raw}", offset=16)
    applied_i = None if applied_raw == -1 else applied_raw
    chain = header_crc
    offset = _HEADER_SIZE
    keys: list[bytes] = []
    values: list[bytes] = []
    keys_append = keys.append
    values_append = values.append
    unpack_entry = _ENTRY.unpack_from
    while True:
        block_offset = offset
        raw = _read_exact(stream, _BLOCK_HEADER_SIZE, offset, "block header")
        payload_len, entry_count, payload_crc = _BLOCK_BODY.unpack_from(raw)
        (block_crc,) = _U32.unpack_from(raw, _BLOCK_BODY.size)
        if crc(raw[: _BLOCK_BODY.size], 0) != block_crc:
            raise SnapshotError("block header checksum mismatch", offset=block_offset)
        offset += _BLOCK_HEADER_SIZE
        if payload_len == 0 and entry_count == 0:
            if payload_crc != chain:
                raise SnapshotError("end block does not close the checksum chain", offset=offset)
            break
        if entry_count == 0 or payload_len < entry_count * _ENTRY_SIZE:
            raise SnapshotError(
                f"block claims {entry_count} entries in {payload_len} bytes", offset=block_offset
            )
        if len(keys) + entry_count > key_count:
            raise SnapshotError(
                f"blocks hold more than the {key_count} entries the header announces",
                offset=block_offset,
            )
        payload = _read_exact(stream, payload_len, offset, "block payload")
        if crc(payload, chain) != payload_crc:
            raise SnapshotError("block payload checksum mismatch", offset=block_offset)
        chain = payload_crc
        first_index = len(keys)
        pos = 0
        try:
            for _ in range(entry_count):
                key_len, value_len = unpack_entry(payload, pos)
                pos += _ENTRY_SIZE
                key_end = pos + key_len
                pos = key_end + value_len
                keys_append(payload[key_end - key_len : key_end])
                values_append(payload[key_end:pos])
        except struct.error:
            pos = payload_len + 1
        if pos != payload_len:
            raise SnapshotError(
                f"entries do not fill their block exactly ({pos} of {payload_len} bytes)",
                offset=block_offset,
            )
        # Strictly ascending order, checked from the last key of the previous block on.
        start = first_index - 1 if first_index else 0
        block_keys = keys[start:]
        if not all(a < b for a, b in pairwise(block_keys)):
            bad = next(n for n, (a, b) in enumerate(pairwise(block_keys)) if not a < b)
            raise SnapshotError(
                f"keys not in ascending order at entry {start + bad + 1} "
                f"({block_keys[bad + 1]!r} after {block_keys[bad]!r})",
                offset=block_offset,
            )
        offset += payload_len
    if len(keys) != key_count:
        raise SnapshotError(
            f"snapshot holds {len(keys)} entries, the header announces {key_count}", offset=offset
        )
    return applied_i, keys, values
