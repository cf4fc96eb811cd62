# spec: docs/spec/arakoon-client-protocol.md
"""Primitive encodings of §2: int32, int64, bool, float, string, option, consistency.

Writers return ``bytes``. Readers take ``(buf, pos)`` and return ``(value, new_pos)``; when the
buffer ends before the value does they raise :class:`Short` carrying the buffer length they need,
so an incremental decoder can wait until that many bytes are there instead of re-parsing after
every chunk. Every declared length and count is checked against its limit *before* anything is
sliced or allocated, and a violation raises :class:`RemoteProtocolError` naming the field and the
offset.

Byte order is little-endian everywhere (§2, §13 item 1), always spelled out with ``<``.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

from ._errors import LocalProtocolError, RemoteProtocolError
from ._types import CONSISTENT, NO_GUARANTEES, AtLeast, Consistency, Consistent, NoGuarantees

I32 = struct.Struct("<i")
U32 = struct.Struct("<I")
I64 = struct.Struct("<q")
F64 = struct.Struct("<d")
I32_I32 = struct.Struct("<ii")

pack_i32 = I32.pack
pack_i64 = I64.pack
pack_f64 = F64.pack
unpack_i32 = I32.unpack_from
unpack_u32 = U32.unpack_from
unpack_i64 = I64.unpack_from
unpack_f64 = F64.unpack_from

INT32_MIN = -(2**31)
INT32_MAX = 2**31 - 1
INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1

TRUE = b"\x01"
FALSE = b"\x00"
NONE = b"\x00"


class Short(Exception):
    """The buffer ends inside a value; ``needed`` is the buffer length that would be enough."""

    __slots__ = ("needed",)

    def __init__(self, needed: int) -> None:
        super().__init__(needed)
        self.needed = needed


class Shape(enum.Enum):
    """What one element of a list is, for skipping over it without building it."""

    STRING = "string"
    PAIR = "pair of strings"
    OPTION = "option of string"


@dataclass(slots=True)
class ListScan:
    """Where a list that ended the buffer was left off: the next element starts at ``resume``
    and ``remaining`` elements of ``shape`` (strings of at most ``limit`` bytes) are missing.

    A decoder keeps this after ``NEED_DATA`` and, when more bytes arrive, first skips over the
    new elements from ``resume`` (:func:`scan_list`) instead of parsing the whole message again.
    Without it a list arriving in k chunks would be parsed k times from its start: quadratic.
    """

    resume: int
    remaining: int
    shape: Shape
    limit: int


class ShortInList(Short):
    """A :class:`Short` raised inside a list, with where to resume skipping."""

    __slots__ = ("scan",)

    def __init__(self, needed: int, scan: ListScan) -> None:
        super().__init__(needed)
        self.scan = scan


def _skip_string(buf: Buffer, pos: int, limit: int) -> int:
    """End of the string at ``pos``; -1 if its length is invalid (the full parse reports it)."""
    start = pos + 4
    if start > len(buf):
        raise Short(start)
    n: int = unpack_i32(buf, pos)[0]
    if n < 0 or n > limit:
        return -1
    end = start + n
    if end > len(buf):
        raise Short(end)
    return end


def scan_list(buf: Buffer, scan: ListScan) -> bool:
    """Skip the list's elements that are complete in ``buf``, updating ``scan`` in place.

    Returns True once the list is complete (or malformed: the full parse then says how), and
    raises :class:`Short` when the buffer ends inside an element. O(elements skipped).
    """
    pos = scan.resume
    remaining = scan.remaining
    shape = scan.shape
    limit = scan.limit
    while remaining:
        if shape is Shape.STRING:
            pos = _skip_string(buf, pos, limit)
        elif shape is Shape.PAIR:
            pos = _skip_string(buf, pos, limit)
            if pos >= 0:
                pos = _skip_string(buf, pos, limit)
        else:
            if pos >= len(buf):
                raise Short(pos + 1)
            tag = buf[pos]
            if tag == 1:
                pos = _skip_string(buf, pos + 1, limit)
            elif tag == 0:
                pos += 1
            else:
                pos = -1
        if pos < 0:
            return True
        remaining -= 1
        scan.resume = pos
        scan.remaining = remaining
    return True


# --- writers -----------------------------------------------------------------------------------


def check_i32(value: int, what: str) -> int:
    if not INT32_MIN <= value <= INT32_MAX:
        raise LocalProtocolError(f"{what} = {value} does not fit in an int32")
    return value


def check_i64(value: int, what: str) -> int:
    if not INT64_MIN <= value <= INT64_MAX:
        raise LocalProtocolError(f"{what} = {value} does not fit in an int64")
    return value


def enc_string(data: bytes) -> bytes:
    n = len(data)
    if n > INT32_MAX:
        raise LocalProtocolError(f"string of {n} bytes is longer than an int32 length allows")
    return pack_i32(n) + data


def enc_text(text: str) -> bytes:
    return enc_string(text.encode("utf-8", "surrogateescape"))


def enc_option(data: bytes | None) -> bytes:
    if data is None:
        return NONE
    return TRUE + enc_string(data)


def enc_bool(value: bool) -> bytes:
    return TRUE if value else FALSE


_CONSISTENT_BYTES = b"\x00"
_NO_GUARANTEES_BYTES = b"\x01"


def enc_consistency(consistency: Consistency) -> bytes:
    # The two tag-only values are the common case; test them by identity-free type checks.
    cls = type(consistency)
    if cls is Consistent:
        return _CONSISTENT_BYTES
    if cls is NoGuarantees:
        return _NO_GUARANTEES_BYTES
    if cls is AtLeast:
        stamp = consistency.stamp  # type: ignore[union-attr]
        return b"\x02" + pack_i64(check_i64(stamp, "AtLeast.stamp"))
    raise LocalProtocolError(f"not a consistency value: {consistency!r}")


def enc_string_list(items: list[bytes] | tuple[bytes, ...]) -> bytes:
    """count, then the items in the order given (callers reverse where §2.1 says so)."""
    parts = [pack_i32(len(items))]
    for item in items:
        parts.append(pack_i32(len(item)))
        parts.append(item)
    return b"".join(parts)


# --- readers -----------------------------------------------------------------------------------

Buffer = bytes | bytearray


def read_i32(buf: Buffer, pos: int) -> tuple[int, int]:
    end = pos + 4
    if end > len(buf):
        raise Short(end)
    return unpack_i32(buf, pos)[0], end


def read_i64(buf: Buffer, pos: int) -> tuple[int, int]:
    end = pos + 8
    if end > len(buf):
        raise Short(end)
    return unpack_i64(buf, pos)[0], end


def read_f64(buf: Buffer, pos: int) -> tuple[float, int]:
    end = pos + 8
    if end > len(buf):
        raise Short(end)
    return unpack_f64(buf, pos)[0], end


def read_bool(buf: Buffer, pos: int, what: str) -> tuple[bool, int]:
    if pos >= len(buf):
        raise Short(pos + 1)
    byte = buf[pos]
    if byte == 0:
        return False, pos + 1
    if byte == 1:
        return True, pos + 1
    raise RemoteProtocolError(f"{what}: byte 0x{byte:02x} at offset {pos} is not a bool")


def read_string(buf: Buffer, pos: int, limit: int, what: str) -> tuple[bytes, int]:
    start = pos + 4
    if start > len(buf):
        raise Short(start)
    n = unpack_i32(buf, pos)[0]
    if n < 0:
        raise RemoteProtocolError(f"{what}: negative string length {n} at offset {pos}")
    if n > limit:
        raise RemoteProtocolError(
            f"{what}: string length {n} at offset {pos} is over the limit of {limit} bytes"
        )
    end = start + n
    if end > len(buf):
        raise Short(end)
    return bytes(buf[start:end]), end


def read_text(buf: Buffer, pos: int, limit: int, what: str) -> tuple[str, int]:
    raw, end = read_string(buf, pos, limit, what)
    return raw.decode("utf-8", "surrogateescape"), end


def read_option(buf: Buffer, pos: int, limit: int, what: str) -> tuple[bytes | None, int]:
    if pos >= len(buf):
        raise Short(pos + 1)
    tag = buf[pos]
    if tag == 0:
        return None, pos + 1
    if tag == 1:
        return read_string(buf, pos + 1, limit, what)
    raise RemoteProtocolError(f"{what}: option tag 0x{tag:02x} at offset {pos} is not a bool")


def read_count(buf: Buffer, pos: int, limit: int, what: str) -> tuple[int, int]:
    end = pos + 4
    if end > len(buf):
        raise Short(end)
    n = unpack_i32(buf, pos)[0]
    if n < 0:
        raise RemoteProtocolError(f"{what}: negative count {n} at offset {pos}")
    if n > limit:
        raise RemoteProtocolError(f"{what}: count {n} at offset {pos} is over the limit of {limit}")
    return n, end


def read_string_list(
    buf: Buffer, pos: int, count_limit: int, string_limit: int, what: str
) -> tuple[list[bytes], int]:
    """The items in wire order."""
    n, pos = read_count(buf, pos, count_limit, what)
    items: list[bytes] = []
    append = items.append
    for i in range(n):
        try:
            item, pos = read_string(buf, pos, string_limit, what)
        except Short as short:
            scan = ListScan(resume=pos, remaining=n - i, shape=Shape.STRING, limit=string_limit)
            raise ShortInList(short.needed, scan) from None
        append(item)
    return items, pos


def read_consistency(buf: Buffer, pos: int) -> tuple[Consistency, int]:
    if pos >= len(buf):
        raise Short(pos + 1)
    tag = buf[pos]
    if tag == 0:
        return CONSISTENT, pos + 1
    if tag == 1:
        return NO_GUARANTEES, pos + 1
    if tag == 2:
        stamp, end = read_i64(buf, pos + 1)
        return AtLeast(stamp=stamp), end
    raise RemoteProtocolError(f"consistency tag 0x{tag:02x} at offset {pos} is not 0, 1 or 2")
