"""The on-disk framing of a parakoon WAL segment: pure functions, no I/O.

Theory of operation
===================

A segment file is a 40-byte *segment header* followed by *records*, back to back, no padding.
``docs/wal-format.md`` is the normative description; this module is its executable form and the
simulator imports it.

Segment header (little endian)::

    0   8s  magic      b"PKWALSEG"
    8   u16 version    1
    10  u16 flags      bit 0 = RESET: this segment starts a fresh log after an installed
                       snapshot; every segment with a lower sequence number is superseded
    12  u64 seq        sequence number of the segment, +1 per new segment
    20  u64 next_slot  the slot the first record appends (last slot before this segment + 1)
    28  u32 prev_crc   chain seed: the CRC of the last record before this segment (0 at the
                       start of a log or after RESET)
    32  u32 reserved   0
    36  u32 hdr_crc    CRC-32C of bytes 0..36

Record (little endian)::

    0   u32 crc        CRC-32C of bytes 4..20+length, seeded with the previous record's crc
                       (the segment header's prev_crc for the first record): the chain
    4   u32 length     payload length in bytes
    8   u64 slot
    16  u32 head_crc   CRC-32C of bytes 4..16 (length and slot), unchained
    20  ...            payload

Why two checksums. The chained ``crc`` protects the whole record and binds it to its predecessor,
so a record cannot be silently dropped, duplicated or reordered, and stale bytes left behind by an
older incarnation of the file can never pass for the continuation of the chain. ``head_crc``
protects the length on its own: without it a flipped bit in a length field would make a record
appear to run past the end of the file, which is indistinguishable from a torn write, and the
open would wrongly truncate durable records instead of refusing.

Slot rule. Slots along the log never decrease and never skip: every record's slot equals the
previous record's slot (a rewrite of the highest slot, invariant S3: the newest copy wins) or
that slot plus one. The first record of a segment continues from ``next_slot``: it is either
``next_slot`` or, when the segment is not a RESET segment, ``next_slot - 1`` (a rewrite of the
last slot of the previous segment).

Torn tail rule. Only the live (last) segment may end in a torn write, because the log syncs a
segment completely before it creates the next one. Scanning the live segment, the first damaged
record at offset ``p`` is a *torn tail*, and the file is cut at ``p``, when

* fewer than 20 bytes remain, or the header is intact and the payload runs past the end of the
  file (the write stopped part way), or
* a checksum fails and a 512-byte-aligned sector ``[q, q+512)`` overlapping the damaged bytes
  is all zero from ``max(q, p)`` to ``min(q+512, end of file)`` (the file grew but that sector's
  data never reached the disk).

Any other damage, and any damage at all in an earlier segment, is corruption: opening stops with
:class:`~parakoon_wal.errors.WalCorruptError` naming the file and offset. A flipped byte can
never produce a zero-filled sector, so bit flips in durable data are always refused.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

import crc32c as _crc32c

from .errors import WalCorruptError

__all__ = [
    "FLAG_RESET",
    "RECORD_BYTES_MAX",
    "RECORD_HEADER_SIZE",
    "SECTOR_SIZE",
    "SEGMENT_HEADER_SIZE",
    "SEGMENT_MAGIC",
    "ScanResult",
    "SegmentHeader",
    "decode_record",
    "decode_records",
    "decode_segment_header",
    "encode_record",
    "encode_records",
    "encode_segment_header",
    "find_intact_record",
    "scan",
]

crc32c = _crc32c.crc32c

SEGMENT_MAGIC = b"PKWALSEG"
SEGMENT_VERSION = 1
FLAG_RESET = 0x1
_KNOWN_FLAGS = FLAG_RESET
_SEGMENT_HEADER = struct.Struct("<8sHHQQIII")
SEGMENT_HEADER_SIZE = _SEGMENT_HEADER.size  # 40
_RECORD_HEADER = struct.Struct("<IIQI")
RECORD_HEADER_SIZE = _RECORD_HEADER.size  # 20
_LEN_SLOT = struct.Struct("<IQ")
_U32 = struct.Struct("<I")
#: Largest payload one record may carry (a bound, so a corrupt length can't ask for gigabytes).
RECORD_BYTES_MAX = 64 * 1024 * 1024
SLOT_MAX = 2**64 - 1
#: Granularity of the zero-fill test of the torn tail rule (a disk sector).
SECTOR_SIZE = 512

assert SEGMENT_HEADER_SIZE == 40
assert RECORD_HEADER_SIZE == 20


@dataclass(frozen=True, slots=True, kw_only=True)
class SegmentHeader:
    seq: int
    next_slot: int
    prev_crc: int
    reset: bool = False


def encode_segment_header(header: SegmentHeader) -> bytes:
    """The 40 header bytes of a segment; asserts the result decodes back to ``header``."""
    if not (0 < header.seq < 2**64 and 0 <= header.next_slot <= SLOT_MAX):
        raise ValueError(f"segment header out of range: {header}")
    flags = FLAG_RESET if header.reset else 0
    body = _SEGMENT_HEADER.pack(
        SEGMENT_MAGIC, SEGMENT_VERSION, flags, header.seq, header.next_slot, header.prev_crc, 0, 0
    )[:36]
    out = body + struct.pack("<I", crc32c(body))
    assert decode_segment_header(out, "<encoder>") == header
    return out


def decode_segment_header(buf: bytes | memoryview, path: str) -> SegmentHeader:
    """Decode and verify the segment header at the start of ``buf``."""
    if len(buf) < SEGMENT_HEADER_SIZE:
        raise WalCorruptError(
            path, 0, f"segment header truncated: {len(buf)} of {SEGMENT_HEADER_SIZE} bytes"
        )
    magic, version, flags, seq, next_slot, prev_crc, _reserved, hdr_crc = (
        _SEGMENT_HEADER.unpack_from(buf, 0)
    )
    if magic != SEGMENT_MAGIC:
        raise WalCorruptError(path, 0, f"not a parakoon WAL segment (magic {bytes(magic)!r})")
    if crc32c(bytes(buf[:36])) != hdr_crc:
        raise WalCorruptError(path, 0, "segment header checksum mismatch")
    if version != SEGMENT_VERSION:
        raise WalCorruptError(path, 8, f"unsupported segment version {version}")
    if flags & ~_KNOWN_FLAGS:
        raise WalCorruptError(path, 10, f"unknown segment flags {flags:#x}")
    return SegmentHeader(
        seq=seq, next_slot=next_slot, prev_crc=prev_crc, reset=bool(flags & FLAG_RESET)
    )


def encode_record(slot: int, payload: bytes, prev_crc: int) -> tuple[bytes, int]:
    """One framed record and its chained crc (the seed of the next record)."""
    buf, crc, _ends = encode_records(((slot, payload),), prev_crc)
    return bytes(buf), crc


def encode_records(
    entries: Sequence[tuple[int, bytes]], prev_crc: int
) -> tuple[bytearray, int, list[int]]:
    """Frame ``entries`` back to back, chaining the crc from ``prev_crc``.

    Returns the bytes, the crc of the last record and the end offset of every record in the
    buffer. The caller checks the slot rule; this function checks ranges, and afterwards walks
    the headers it produced (lengths, slots, the chain's end), so a framing bug fails here
    rather than on the next open. It writes into one preallocated buffer: group commit of a
    thousand entries is on the append path, so no per-record temporary bytes are made.
    """
    total = 0
    for slot, payload in entries:
        n = len(payload)
        if n > RECORD_BYTES_MAX:
            raise ValueError(f"slot {slot}: payload of {n} bytes exceeds {RECORD_BYTES_MAX}")
        if not 0 <= slot <= SLOT_MAX:
            raise ValueError(f"slot {slot} out of range")
        total += RECORD_HEADER_SIZE + n
    out = bytearray(total)
    mv = memoryview(out)
    ends: list[int] = []
    crc = prev_crc
    pack_len_slot = _LEN_SLOT.pack_into
    pack_u32 = _U32.pack_into
    offset = 0
    for slot, payload in entries:
        body = offset + RECORD_HEADER_SIZE
        end = body + len(payload)
        pack_len_slot(out, offset + 4, len(payload), slot)
        pack_u32(out, offset + 16, crc32c(mv[offset + 4 : offset + 16]))
        out[body:end] = payload
        crc = crc32c(mv[offset + 4 : end], crc)
        pack_u32(out, offset, crc)
        ends.append(end)
        offset = end
    mv.release()
    _check_encoded(out, entries, ends, crc)
    return out, crc, ends


def _check_encoded(
    buf: bytearray, entries: Sequence[tuple[int, bytes]], ends: list[int], crc: int
) -> None:
    """The encoder's side of "check a record on both sides of the disk": every header carries
    the slot and length it should, the records tile the buffer, the last crc is the chain's."""
    unpack = _LEN_SLOT.unpack_from
    offset = 0
    for (slot, payload), end in zip(entries, ends, strict=True):
        if unpack(buf, offset + 4) != (len(payload), slot) or (
            end != offset + RECORD_HEADER_SIZE + len(payload)
        ):
            raise AssertionError(f"encoder produced a bad record for slot {slot} at {offset}")
        offset = end
    if offset != len(buf):
        raise AssertionError("encoder produced trailing bytes")
    if entries:
        last_start = ends[-2] if len(ends) > 1 else 0
        if _U32.unpack_from(buf, last_start)[0] != crc:
            raise AssertionError("encoder's last record does not carry the chain's crc")


@dataclass(frozen=True, slots=True, kw_only=True)
class ScanResult:
    """What :func:`scan` found in ``buf[start:]``."""

    #: Offset just past the last good record (where the file must be cut if ``torn``).
    end: int
    count: int
    first_slot: int | None
    last_slot: int | None
    #: The chained crc after the last good record.
    crc: int
    #: Why the bytes from ``end`` on are a torn tail, or ``None`` if the scan reached the end.
    torn: str | None


def _has_zero_sector(buf: bytes | memoryview, start: int, stop: int, eof: int) -> bool:
    """True if a 512-byte-aligned sector touching ``[start, stop)`` is zero from ``start`` (or
    its own start) to its end or to the end of the file."""
    q = (start // SECTOR_SIZE) * SECTOR_SIZE
    while q < stop:
        lo = max(q, start)
        hi = min(q + SECTOR_SIZE, eof)
        if hi > lo and not any(buf[lo:hi]):
            return True
        q += SECTOR_SIZE
    return False


def scan(
    buf: bytes | memoryview,
    *,
    start: int,
    prev_crc: int,
    next_slot: int,
    rewrite_first_ok: bool,
    path: str,
    torn_ok: bool,
) -> ScanResult:
    """Verify every record of ``buf[start:]`` (checksums, chain, slot rule).

    ``next_slot`` / ``rewrite_first_ok`` state which slot the first record may carry (see the
    slot rule above). With ``torn_ok`` the torn tail rule applies and the result says where the
    good records end; without it (a completed segment) any damage raises
    :class:`WalCorruptError`.
    """
    eof = len(buf)
    offset = start
    crc = prev_crc
    count = 0
    first: int | None = None
    last: int | None = None
    unpack = _RECORD_HEADER.unpack_from
    mv = memoryview(buf)
    while offset < eof:
        torn: str | None = None
        if eof - offset < RECORD_HEADER_SIZE:
            torn = f"record header truncated ({eof - offset} bytes left)"
        else:
            rec_crc, length, slot, head_crc = unpack(buf, offset)
            if crc32c(mv[offset + 4 : offset + 16]) != head_crc:
                if torn_ok and _has_zero_sector(buf, offset, offset + RECORD_HEADER_SIZE, eof):
                    torn = "zero-filled record header"
                else:
                    raise WalCorruptError(path, offset, "record header checksum mismatch")
            elif length > RECORD_BYTES_MAX:
                raise WalCorruptError(path, offset, f"record length {length} exceeds the bound")
            else:
                end = offset + RECORD_HEADER_SIZE + length
                if end > eof:
                    torn = f"record of {length} bytes runs {end - eof} bytes past the end of file"
                elif crc32c(mv[offset + 4 : end], crc) != rec_crc:
                    if torn_ok and _has_zero_sector(buf, offset, end, eof):
                        torn = "record checksum mismatch with a zero-filled sector"
                    else:
                        raise WalCorruptError(
                            path, offset, f"record checksum mismatch (slot field {slot})"
                        )
                else:
                    if last is None:
                        ok = slot == next_slot or (rewrite_first_ok and slot == next_slot - 1)
                    else:
                        ok = slot in (last, last + 1)
                    if not ok:
                        expected = next_slot if last is None else last + 1
                        raise WalCorruptError(
                            path, offset, f"slot {slot} breaks the slot rule (expected {expected})"
                        )
                    if first is None:
                        first = slot
                    last = slot
                    crc = rec_crc
                    count += 1
                    offset = end
                    continue
        if not torn_ok:
            raise WalCorruptError(path, offset, f"damaged record in a completed segment: {torn}")
        return ScanResult(
            end=offset, count=count, first_slot=first, last_slot=last, crc=crc, torn=torn
        )
    return ScanResult(end=offset, count=count, first_slot=first, last_slot=last, crc=crc, torn=None)


def find_intact_record(
    buf: bytes | memoryview, start: int, *, window: int
) -> tuple[int, int, int, int] | None:
    """After damage, the first offset in ``[start, start + window]`` where an intact record
    seems to begin: ``(offset, end, crc, slot)`` or ``None``.

    Used by the offline ``verify`` to go on checking past a damaged record. A candidate needs a
    valid ``head_crc`` and must either end exactly at the end of ``buf`` or chain into a next
    record that verifies; its own ``crc`` cannot be checked (its seed is in the damage).
    """
    unpack = _RECORD_HEADER.unpack_from
    eof = len(buf)
    mv = memoryview(buf)
    for q in range(start, min(eof - RECORD_HEADER_SIZE, start + window) + 1):
        rec_crc, length, slot, head_crc = unpack(buf, q)
        if length > RECORD_BYTES_MAX or crc32c(mv[q + 4 : q + 16]) != head_crc:
            continue
        end = q + RECORD_HEADER_SIZE + length
        if end == eof:
            return q, end, rec_crc, slot
        if end > eof - RECORD_HEADER_SIZE:
            continue
        next_crc, next_length, _slot, _head = unpack(buf, end)
        next_end = end + RECORD_HEADER_SIZE + next_length
        if next_end <= eof and crc32c(mv[end + 4 : next_end], rec_crc) == next_crc:
            return q, end, rec_crc, slot
    return None


def decode_record(
    buf: bytes | memoryview, offset: int, prev_crc: int, path: str
) -> tuple[int, bytes, int, int]:
    """Decode and verify the record at ``offset``: ``(slot, payload, end_offset, crc)``."""
    if len(buf) - offset < RECORD_HEADER_SIZE:
        raise WalCorruptError(path, offset, "record header truncated")
    rec_crc, length, slot, head_crc = _RECORD_HEADER.unpack_from(buf, offset)
    mv = memoryview(buf)
    if crc32c(mv[offset + 4 : offset + 16]) != head_crc:
        raise WalCorruptError(path, offset, "record header checksum mismatch")
    end = offset + RECORD_HEADER_SIZE + length
    if end > len(buf):
        raise WalCorruptError(path, offset, "record runs past the end of the data")
    if crc32c(mv[offset + 4 : end], prev_crc) != rec_crc:
        raise WalCorruptError(path, offset, "record checksum mismatch")
    return slot, bytes(mv[offset + RECORD_HEADER_SIZE : end]), end, rec_crc


def decode_records(
    buf: bytes,
    *,
    start: int,
    stop: int,
    prev_crc: int,
    from_slot: int,
    path: str,
    base: int = 0,
) -> tuple[list[tuple[int, bytes]], int]:
    """The hot replay loop: every record of ``buf[start:stop]`` with slot >= ``from_slot``.

    Verifies the crc chain (bit rot since the log was opened is still caught) and keeps only the
    newest copy of a rewritten slot. Returns the records and the final crc. The slot rule was
    checked when the log was opened or appended, so here only the chain is verified. ``base``
    is the file offset of ``buf[0]`` (for error messages when ``buf`` is a piece of a file).
    """
    out: list[tuple[int, bytes]] = []
    append = out.append
    unpack = _RECORD_HEADER.unpack_from
    mv = memoryview(buf)
    crc = prev_crc
    offset = start
    last_slot = -1
    while offset < stop:
        if stop - offset < RECORD_HEADER_SIZE:
            raise WalCorruptError(path, base + offset, "record header truncated")
        rec_crc, length, slot, _head = unpack(buf, offset)
        body = offset + RECORD_HEADER_SIZE
        end = body + length
        if end > stop or crc32c(mv[offset + 4 : end], crc) != rec_crc:
            raise WalCorruptError(path, base + offset, "record checksum mismatch")
        crc = rec_crc
        if slot >= from_slot:
            if slot == last_slot:
                out[-1] = (slot, buf[body:end])
            else:
                append((slot, buf[body:end]))
                last_slot = slot
        offset = end
    return out, crc
