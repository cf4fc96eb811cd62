# spec: docs/spec/arakoon-client-protocol.md
"""The update encoding of §9: what a SEQUENCE carries, and the node's replication payload.

An update is an int32 tag and its fields. Sub-lists of updates are an int32 count and the updates
in natural order, at every nesting level. The one list that is reversed on the wire is the key
list of ``Assert_range`` (descending, §2.1); :class:`UAssertRange` holds it ascending and the
codec reverses it both ways.

Decoding is bounded: string lengths, counts and the nesting depth of sequences are checked
against :class:`Limits` before anything is built, so neither memory nor the Python stack can be
exhausted by a hostile blob.
"""

from __future__ import annotations

import struct
from typing import assert_never

from ._errors import LocalProtocolError, RemoteProtocolError
from ._limits import DEFAULT_LIMITS, Limits
from ._types import (
    UAdminSet,
    UAssert,
    UAssertExists,
    UAssertRange,
    UDelete,
    UDeletePrefix,
    UMasterSet,
    UNop,
    Update,
    UpdateTag,
    UReplace,
    USequence,
    USet,
    USetInterval,
    USetRouting,
    USetRoutingDelta,
    UTestAndSet,
    UUserFunction,
    new_udelete,
    new_uset,
)
from ._wire import (
    I32,
    Buffer,
    Short,
    check_i64,
    enc_option,
    enc_string,
    enc_text,
    pack_i32,
    pack_i64,
    read_count,
    read_i32,
    read_i64,
    read_option,
    read_string,
    read_text,
)

# Tags that only the server itself creates; a client sequence containing one is refused (§9).
INTERNAL_TAGS = frozenset({4, 9, 10, 11, 12, 13})

_ASSERT_CONTAINS_EXACTLY = 1

_TAG_SET = pack_i32(UpdateTag.SET)
_TAG_DELETE = pack_i32(UpdateTag.DELETE)
_TAG_TEST_AND_SET = pack_i32(UpdateTag.TEST_AND_SET)
_TAG_MASTER_SET = pack_i32(UpdateTag.MASTER_SET)
_TAG_SEQUENCE = pack_i32(UpdateTag.SEQUENCE)
_TAG_NOP = pack_i32(UpdateTag.NOP)
_TAG_USER_FUNCTION = pack_i32(UpdateTag.USER_FUNCTION)
_TAG_ASSERT = pack_i32(UpdateTag.ASSERT)
_TAG_ADMIN_SET = pack_i32(UpdateTag.ADMIN_SET)
_TAG_SET_INTERVAL = pack_i32(UpdateTag.SET_INTERVAL)
_TAG_SET_ROUTING = pack_i32(UpdateTag.SET_ROUTING)
_TAG_SET_ROUTING_DELTA = pack_i32(UpdateTag.SET_ROUTING_DELTA)
_TAG_SYNCED_SEQUENCE = pack_i32(UpdateTag.SYNCED_SEQUENCE)
_TAG_DELETE_PREFIX = pack_i32(UpdateTag.DELETE_PREFIX)
_TAG_ASSERT_EXISTS = pack_i32(UpdateTag.ASSERT_EXISTS)
_TAG_REPLACE = pack_i32(UpdateTag.REPLACE)
_TAG_ASSERT_RANGE = pack_i32(UpdateTag.ASSERT_RANGE)


def encode_update(update: Update) -> bytes:
    """The §9 bytes of one update (nested sequences included). O(total size).

    Raises ``LocalProtocolError`` for a value that cannot be encoded.
    """
    parts: list[bytes] = []
    try:
        _encode_into(update, parts)
        return b"".join(parts)
    except (TypeError, AttributeError, struct.error, OverflowError) as exc:
        raise LocalProtocolError(f"cannot encode {type(update).__name__}: {exc}") from exc


def _encode_into(update: Update, out: list[bytes]) -> None:
    pack = I32.pack
    match update:
        case USet(key=key, value=value):
            out += (_TAG_SET, pack(len(key)), key, pack(len(value)), value)
        case UDelete(key=key):
            out += (_TAG_DELETE, pack(len(key)), key)
        case USequence(updates=updates, synced=synced):
            out.append(_TAG_SYNCED_SEQUENCE if synced else _TAG_SEQUENCE)
            out.append(pack(len(updates)))
            for sub in updates:
                _encode_into(sub, out)
        case UTestAndSet(key=key, expected=expected, wanted=wanted):
            out += (_TAG_TEST_AND_SET, enc_string(key), enc_option(expected), enc_option(wanted))
        case UMasterSet(master=master, lease=lease):
            out += (_TAG_MASTER_SET, enc_text(master), pack_i64(check_i64(lease, "lease")))
        case UNop():
            out.append(_TAG_NOP)
        case UUserFunction(name=name, argument=argument):
            out += (_TAG_USER_FUNCTION, enc_text(name), enc_option(argument))
        case UAssert(key=key, expected=expected):
            out += (_TAG_ASSERT, enc_string(key), enc_option(expected))
        case UAdminSet(key=key, value=value):
            out += (_TAG_ADMIN_SET, enc_string(key), enc_option(value))
        case USetInterval(bounds=bounds):
            if len(bounds) != 4:
                raise LocalProtocolError(f"an interval has 4 bounds, not {len(bounds)}")
            out.append(_TAG_SET_INTERVAL)
            out += (enc_option(b) for b in bounds)
        case USetRouting(routing=routing):
            out += (_TAG_SET_ROUTING, enc_string(routing))
        case USetRoutingDelta(left=left, separator=separator, right=right):
            out += (_TAG_SET_ROUTING_DELTA, enc_string(left), enc_string(separator))
            out.append(enc_string(right))
        case UDeletePrefix(prefix=prefix):
            out += (_TAG_DELETE_PREFIX, enc_string(prefix))
        case UAssertExists(key=key):
            out += (_TAG_ASSERT_EXISTS, enc_string(key))
        case UReplace(key=key, wanted=wanted):
            out += (_TAG_REPLACE, enc_string(key), enc_option(wanted))
        case UAssertRange(prefix=prefix, keys=keys):
            out += (_TAG_ASSERT_RANGE, enc_string(prefix), pack(_ASSERT_CONTAINS_EXACTLY))
            out.append(pack(len(keys)))
            # Descending on the wire: the reference server reverses what it reads (§2.1, §9).
            for key in reversed(keys):
                out += (pack(len(key)), key)
        case _:
            assert_never(update)


def decode_update(data: bytes, *, limits: Limits = DEFAULT_LIMITS) -> Update:
    """Decode one complete update; the whole of ``data`` must be that update.

    Raises ``RemoteProtocolError`` for an unknown tag, a truncated or over-long blob, a length
    or count over ``limits``, or sequences nested deeper than ``limits.max_update_depth``.
    """
    update, end = decode_update_prefix(data, 0, limits=limits)
    if end != len(data):
        raise RemoteProtocolError(
            f"update ends at offset {end} but the buffer holds {len(data)} bytes"
        )
    return update


def decode_update_prefix(
    buf: Buffer, pos: int = 0, *, limits: Limits = DEFAULT_LIMITS
) -> tuple[Update, int]:
    """Decode the update starting at ``pos`` of a complete buffer; return it and where it ends.

    Bytes after the update are left alone (the server ignores them inside a sequence blob, §8.4).
    """
    try:
        return _decode(buf, pos, limits, 0)
    except Short as short:
        raise RemoteProtocolError(
            f"update truncated: needs {short.needed - pos} bytes from offset {pos}, "
            f"the buffer holds {len(buf) - pos}"
        ) from None


def _decode(buf: Buffer, pos: int, limits: Limits, depth: int) -> tuple[Update, int]:
    tag_pos = pos
    tag, pos = read_i32(buf, pos)
    smax = limits.max_string_bytes
    if tag == 1:
        key, pos = read_string(buf, pos, smax, "Set.key")
        value, pos = read_string(buf, pos, smax, "Set.value")
        return new_uset(key, value), pos
    if tag == 2:
        key, pos = read_string(buf, pos, smax, "Delete.key")
        return new_udelete(key), pos
    if tag in (5, 13):
        if depth >= limits.max_update_depth:
            raise RemoteProtocolError(
                f"sequence at offset {tag_pos} is nested deeper than {limits.max_update_depth}"
            )
        n, pos = read_count(buf, pos, limits.max_list_items, "Sequence count")
        updates: list[Update] = []
        append = updates.append
        for _ in range(n):
            sub, pos = _decode(buf, pos, limits, depth + 1)
            append(sub)
        return USequence(updates=tuple(updates), synced=tag == 13), pos
    if tag == 3:
        key, pos = read_string(buf, pos, smax, "TestAndSet.key")
        expected, pos = read_option(buf, pos, smax, "TestAndSet.expected")
        wanted, pos = read_option(buf, pos, smax, "TestAndSet.wanted")
        return UTestAndSet(key=key, expected=expected, wanted=wanted), pos
    if tag == 4:
        master, pos = read_text(buf, pos, smax, "MasterSet.master")
        lease, pos = read_i64(buf, pos)
        return UMasterSet(master=master, lease=lease), pos
    if tag == 6:
        return UNop(), pos
    if tag == 7:
        name, pos = read_text(buf, pos, smax, "UserFunction.name")
        argument, pos = read_option(buf, pos, smax, "UserFunction.argument")
        return UUserFunction(name=name, argument=argument), pos
    if tag == 8:
        key, pos = read_string(buf, pos, smax, "Assert.key")
        expected, pos = read_option(buf, pos, smax, "Assert.expected")
        return UAssert(key=key, expected=expected), pos
    if tag == 9:
        key, pos = read_string(buf, pos, smax, "AdminSet.key")
        admin_value, pos = read_option(buf, pos, smax, "AdminSet.value")
        return UAdminSet(key=key, value=admin_value), pos
    if tag == 10:
        b0, pos = read_option(buf, pos, smax, "SetInterval")
        b1, pos = read_option(buf, pos, smax, "SetInterval")
        b2, pos = read_option(buf, pos, smax, "SetInterval")
        b3, pos = read_option(buf, pos, smax, "SetInterval")
        return USetInterval(bounds=(b0, b1, b2, b3)), pos
    if tag == 11:
        routing, pos = read_string(buf, pos, smax, "SetRouting.routing")
        return USetRouting(routing=routing), pos
    if tag == 12:
        left, pos = read_string(buf, pos, smax, "SetRoutingDelta.left")
        separator, pos = read_string(buf, pos, smax, "SetRoutingDelta.separator")
        right, pos = read_string(buf, pos, smax, "SetRoutingDelta.right")
        return USetRoutingDelta(left=left, separator=separator, right=right), pos
    if tag == 14:
        prefix, pos = read_string(buf, pos, smax, "DeletePrefix.prefix")
        return UDeletePrefix(prefix=prefix), pos
    if tag == 15:
        key, pos = read_string(buf, pos, smax, "AssertExists.key")
        return UAssertExists(key=key), pos
    if tag == 16:
        key, pos = read_string(buf, pos, smax, "Replace.key")
        wanted, pos = read_option(buf, pos, smax, "Replace.wanted")
        return UReplace(key=key, wanted=wanted), pos
    if tag == 17:
        prefix, pos = read_string(buf, pos, smax, "AssertRange.prefix")
        kind_pos = pos
        kind, pos = read_i32(buf, pos)
        if kind != _ASSERT_CONTAINS_EXACTLY:
            raise RemoteProtocolError(f"unknown Assert_range kind {kind} at offset {kind_pos}")
        n, pos = read_count(buf, pos, limits.max_list_items, "AssertRange keys")
        keys: list[bytes] = []
        for _ in range(n):
            key, pos = read_string(buf, pos, smax, "AssertRange key")
            keys.append(key)
        keys.reverse()
        return UAssertRange(prefix=prefix, keys=tuple(keys)), pos
    raise RemoteProtocolError(f"unknown update tag {tag} at offset {tag_pos}")


def first_internal_update(update: Update) -> Update | None:
    """The first update (depth first) that clients may not send (tags 4, 9-13), or None."""
    match update:
        case USequence(updates=updates, synced=synced):
            if synced:
                return update
            for sub in updates:
                found = first_internal_update(sub)
                if found is not None:
                    return found
            return None
        case UMasterSet() | UAdminSet() | USetInterval() | USetRouting() | USetRoutingDelta():
            return update
        case _:
            return None
