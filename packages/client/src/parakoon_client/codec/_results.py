# spec: docs/spec/arakoon-client-protocol.md
"""Success payloads of every command, both directions, with the list orders of §2.1.

A result in memory is in natural order; :func:`encode_result` writes it in wire order (the
server's side) and :func:`decode_result` turns wire order back into natural order (the client's
side). The table of §2.1, restated as what each side does:

=====================  ===================================  ================================
request                wire order of the answer             decoder
=====================  ===================================  ================================
Range, PrefixKeys      keys descending                      reverses
RangeEntries           pairs descending by key              reverses
RevRangeEntries        pairs ascending by key               reverses (result is descending)
MultiGet               reverse of the request's key order   reverses (value i is key i's)
MultiGetOption         the request's key order              keeps
=====================  ===================================  ================================
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

from ._errors import CommandCode, LocalProtocolError, RemoteProtocolError
from ._limits import Limits
from ._statistics import StatisticsReport, decode_named_value, encode_named_value
from ._types import (
    AnyRequest,
    Assert,
    AssertExists,
    Collapse,
    Confirm,
    CopyDbToHead,
    CurrentState,
    DefragDb,
    Delete,
    DeletePrefix,
    DropMaster,
    Exists,
    ExpectProgressPossible,
    FlushStore,
    Get,
    GetDb,
    GetKeyCount,
    GetTxid,
    MemberHook,
    MultiGet,
    MultiGetOption,
    NamedList,
    Nop,
    OptimizeDb,
    Ping,
    PrefixKeys,
    Range,
    RangeEntries,
    Replace,
    RevRangeEntries,
    Sequence,
    Set,
    Statistics,
    TestAndSet,
    Unsupported,
    UserFunction,
    UserHook,
    Version,
    VersionInfo,
    WhoMaster,
)
from ._wire import (
    FALSE,
    I32,
    NONE,
    TRUE,
    Buffer,
    ListScan,
    Shape,
    Short,
    ShortInList,
    check_i32,
    check_i64,
    enc_consistency,
    enc_string,
    enc_text,
    pack_i32,
    pack_i64,
    read_bool,
    read_consistency,
    read_count,
    read_i32,
    read_i64,
    read_option,
    read_string,
    read_text,
    unpack_i32,
)

RC_OK = b"\x00\x00\x00\x00"

# --- encoders (server side: natural order in, wire order out) ----------------------------------


def _enc_unit(_value: Any) -> bytes:
    return b""


def _enc_bool(value: Any) -> bytes:
    if value is True:
        return TRUE
    if value is False:
        return FALSE
    raise LocalProtocolError(f"expected a bool result, got {value!r}")


def _enc_bytes(value: Any) -> bytes:
    return I32.pack(len(value)) + bytes(value)


def _enc_text(value: Any) -> bytes:
    return enc_text(value)


def _enc_opt_bytes(value: Any) -> bytes:
    if value is None:
        return NONE
    return TRUE + I32.pack(len(value)) + bytes(value)


def _enc_opt_text(value: Any) -> bytes:
    if value is None:
        return NONE
    return TRUE + enc_text(value)


def _enc_keys_reversed(value: Any) -> bytes:
    pack = I32.pack
    parts = [pack(len(value))]
    for key in reversed(value):
        parts += (pack(len(key)), key)
    return b"".join(parts)


def _enc_pairs_reversed(value: Any) -> bytes:
    pack = I32.pack
    parts = [pack(len(value))]
    for key, val in reversed(value):
        parts += (pack(len(key)), key, pack(len(val)), val)
    return b"".join(parts)


def _enc_options_same(value: Any) -> bytes:
    pack = I32.pack
    parts = [pack(len(value))]
    for item in value:
        if item is None:
            parts.append(NONE)
        else:
            parts += (TRUE, pack(len(item)), item)
    return b"".join(parts)


def _enc_i32(value: Any) -> bytes:
    return pack_i32(check_i32(value, "result"))


def _enc_i64(value: Any) -> bytes:
    return pack_i64(check_i64(value, "result"))


def _enc_version(value: Any) -> bytes:
    if not isinstance(value, VersionInfo):
        raise LocalProtocolError(f"expected a VersionInfo, got {value!r}")
    return (
        pack_i32(check_i32(value.major, "major"))
        + pack_i32(check_i32(value.minor, "minor"))
        + pack_i32(check_i32(value.patch, "patch"))
        + enc_text(value.info)
    )


def _enc_statistics(value: Any) -> bytes:
    if isinstance(value, StatisticsReport):
        value = value.to_tree()
    if not isinstance(value, NamedList):
        raise LocalProtocolError(f"expected a NamedList or StatisticsReport, got {value!r}")
    return enc_string(encode_named_value(value))


def _enc_collapse(value: Any) -> bytes:
    parts = [pack_i32(len(value))]
    for progress in value:
        parts += (RC_OK, pack_i64(check_i64(progress, "collapse progress")))
    return b"".join(parts)


def _enc_db(value: Any) -> bytes:
    return pack_i64(len(value)) + bytes(value)


_ALL_NONE_INTERVAL = NONE * 4


def _enc_unsupported_for(request: Unsupported) -> bytes:
    # GET_INTERVAL is answered by a node without nursery with the all-None interval (§12).
    if request.code == CommandCode.GET_INTERVAL:
        return _ALL_NONE_INTERVAL
    return b""


_Encoder = Callable[[Any], bytes]

_ENCODERS: dict[type, _Encoder] = {
    Ping: _enc_text,
    WhoMaster: _enc_opt_text,
    Exists: _enc_bool,
    Get: _enc_bytes,
    Set: _enc_unit,
    Delete: _enc_unit,
    Range: _enc_keys_reversed,
    PrefixKeys: _enc_keys_reversed,
    TestAndSet: _enc_opt_bytes,
    RangeEntries: _enc_pairs_reversed,
    Sequence: _enc_unit,
    MultiGet: _enc_keys_reversed,
    ExpectProgressPossible: _enc_bool,
    Statistics: _enc_statistics,
    Collapse: _enc_collapse,
    UserFunction: _enc_opt_bytes,
    Assert: _enc_unit,
    GetKeyCount: _enc_i64,
    GetDb: _enc_db,
    Confirm: _enc_unit,
    RevRangeEntries: _enc_pairs_reversed,
    OptimizeDb: _enc_unit,
    DefragDb: _enc_unit,
    DeletePrefix: _enc_i32,
    Version: _enc_version,
    AssertExists: _enc_unit,
    DropMaster: _enc_unit,
    MultiGetOption: _enc_options_same,
    CurrentState: _enc_text,
    Replace: _enc_opt_bytes,
    Nop: _enc_unit,
    FlushStore: _enc_unit,
    GetTxid: enc_consistency,
    CopyDbToHead: _enc_unit,
    UserHook: _enc_unit,
}


def encode_result(request: AnyRequest, result: Any) -> bytes:
    """The success payload (without rc) for ``request``'s result in natural order."""
    if type(request) is Unsupported:
        return _enc_unsupported_for(request)
    encoder = _ENCODERS.get(type(request))
    if encoder is None:
        raise LocalProtocolError(f"not a request: {request!r}")
    try:
        return encoder(result)
    except (TypeError, AttributeError, ValueError, struct.error, OverflowError) as exc:
        raise LocalProtocolError(
            f"result {result!r} cannot be the answer to {type(request).__name__}: {exc}"
        ) from exc


# --- decoders (client side: wire order in, natural order out) ----------------------------------

_Decoder = Callable[[Buffer, int, Limits], tuple[Any, int]]


def _dec_unit(_buf: Buffer, pos: int, _limits: Limits) -> tuple[None, int]:
    return None, pos


def _dec_bool(buf: Buffer, pos: int, _limits: Limits) -> tuple[bool, int]:
    return read_bool(buf, pos, "bool result")


def _dec_bytes(buf: Buffer, pos: int, limits: Limits) -> tuple[bytes, int]:
    return read_string(buf, pos, limits.max_string_bytes, "string result")


def _dec_text(buf: Buffer, pos: int, limits: Limits) -> tuple[str, int]:
    return read_text(buf, pos, limits.max_string_bytes, "text result")


def _dec_opt_bytes(buf: Buffer, pos: int, limits: Limits) -> tuple[bytes | None, int]:
    return read_option(buf, pos, limits.max_string_bytes, "option result")


def _dec_opt_text(buf: Buffer, pos: int, limits: Limits) -> tuple[str | None, int]:
    raw, pos = read_option(buf, pos, limits.max_string_bytes, "option result")
    return (None if raw is None else raw.decode("utf-8", "surrogateescape")), pos


def _dec_keys_reversed(buf: Buffer, pos: int, limits: Limits) -> tuple[list[bytes], int]:
    n, pos = read_count(buf, pos, limits.max_list_items, "list result")
    smax = limits.max_string_bytes
    keys: list[bytes] = []
    append = keys.append
    size = len(buf)
    for i in range(n):
        # Inlined read_string: this loop is the hot part of every range answer.
        start = pos + 4
        if start <= size:
            length = unpack_i32(buf, pos)[0]
            end = start + length
            if end <= size and 0 <= length <= smax:
                append(bytes(buf[start:end]))
                pos = end
                continue
        # Incomplete or invalid: the general reader raises the right error, or Short.
        try:
            read_string(buf, pos, smax, "list element")
        except Short as short:
            scan = ListScan(resume=pos, remaining=n - i, shape=Shape.STRING, limit=smax)
            raise ShortInList(short.needed, scan) from None
        raise AssertionError("unreachable: read_string accepted what the fast path refused")
    keys.reverse()
    return keys, pos


def _dec_pairs_reversed(
    buf: Buffer, pos: int, limits: Limits
) -> tuple[list[tuple[bytes, bytes]], int]:
    n, pos = read_count(buf, pos, limits.max_list_items, "pair list result")
    smax = limits.max_string_bytes
    pairs: list[tuple[bytes, bytes]] = []
    for i in range(n):
        try:
            key, after_key = read_string(buf, pos, smax, "pair key")
            value, after_value = read_string(buf, after_key, smax, "pair value")
        except Short as short:
            scan = ListScan(resume=pos, remaining=n - i, shape=Shape.PAIR, limit=smax)
            raise ShortInList(short.needed, scan) from None
        pairs.append((key, value))
        pos = after_value
    pairs.reverse()
    return pairs, pos


def _dec_options_same(buf: Buffer, pos: int, limits: Limits) -> tuple[list[bytes | None], int]:
    n, pos = read_count(buf, pos, limits.max_list_items, "option list result")
    smax = limits.max_string_bytes
    values: list[bytes | None] = []
    for i in range(n):
        try:
            value, after = read_option(buf, pos, smax, "option list element")
        except Short as short:
            scan = ListScan(resume=pos, remaining=n - i, shape=Shape.OPTION, limit=smax)
            raise ShortInList(short.needed, scan) from None
        values.append(value)
        pos = after
    return values, pos


def _dec_i32(buf: Buffer, pos: int, _limits: Limits) -> tuple[int, int]:
    return read_i32(buf, pos)


def _dec_i64(buf: Buffer, pos: int, _limits: Limits) -> tuple[int, int]:
    return read_i64(buf, pos)


def _dec_version(buf: Buffer, pos: int, limits: Limits) -> tuple[VersionInfo, int]:
    major, pos = read_i32(buf, pos)
    minor, pos = read_i32(buf, pos)
    patch, pos = read_i32(buf, pos)
    info, pos = read_text(buf, pos, limits.max_string_bytes, "version info")
    return VersionInfo(major=major, minor=minor, patch=patch, info=info), pos


def _dec_consistency(buf: Buffer, pos: int, _limits: Limits) -> tuple[object, int]:
    return read_consistency(buf, pos)


def _dec_statistics(buf: Buffer, pos: int, limits: Limits) -> tuple[NamedList, int]:
    blob, pos = read_string(buf, pos, limits.max_string_bytes, "statistics blob")
    tree = decode_named_value(blob, limits=limits)
    if not isinstance(tree, NamedList):
        raise RemoteProtocolError("the statistics tree's root is not a list")
    return tree, pos


class CollapseFailed(Exception):
    """Internal: an error record inside a COLLAPSE_TLOGS stream (becomes an ErrorResponse)."""

    def __init__(self, code: int, message: bytes, end: int) -> None:
        super().__init__(code)
        self.code = code
        self.message = message
        self.end = end


def _dec_collapse(buf: Buffer, pos: int, limits: Limits) -> tuple[tuple[int, ...], int]:
    n, pos = read_count(buf, pos, limits.max_list_items, "collapse record count")
    progress: list[int] = []
    for _ in range(n):
        rc, pos = read_i32(buf, pos)
        if rc != 0:
            message, pos = read_string(buf, pos, limits.max_string_bytes, "collapse error")
            raise CollapseFailed(rc, message, pos)
        value, pos = read_i64(buf, pos)
        progress.append(value)
    return tuple(progress), pos


def _dec_db(buf: Buffer, pos: int, limits: Limits) -> tuple[bytes, int]:
    length_pos = pos
    length, pos = read_i64(buf, pos)
    if length < 0 or length > limits.max_request_bytes:
        raise RemoteProtocolError(
            f"database length {length} at offset {length_pos} is negative or over "
            f"the limit of {limits.max_request_bytes} bytes"
        )
    end = pos + length
    if end > len(buf):
        raise Short(end)
    return bytes(buf[pos:end]), end


def _dec_unsupported(request: Unsupported, buf: Buffer, pos: int, limits: Limits) -> int:
    if request.code == CommandCode.GET_INTERVAL:
        for _ in range(4):
            _, pos = read_option(buf, pos, limits.max_string_bytes, "interval bound")
    return pos


_DECODERS: dict[type, _Decoder] = {
    Ping: _dec_text,
    WhoMaster: _dec_opt_text,
    Exists: _dec_bool,
    Get: _dec_bytes,
    Set: _dec_unit,
    Delete: _dec_unit,
    Range: _dec_keys_reversed,
    PrefixKeys: _dec_keys_reversed,
    TestAndSet: _dec_opt_bytes,
    RangeEntries: _dec_pairs_reversed,
    Sequence: _dec_unit,
    MultiGet: _dec_keys_reversed,
    ExpectProgressPossible: _dec_bool,
    Statistics: _dec_statistics,
    Collapse: _dec_collapse,
    UserFunction: _dec_opt_bytes,
    Assert: _dec_unit,
    GetKeyCount: _dec_i64,
    GetDb: _dec_db,
    Confirm: _dec_unit,
    RevRangeEntries: _dec_pairs_reversed,
    OptimizeDb: _dec_unit,
    DefragDb: _dec_unit,
    DeletePrefix: _dec_i32,
    Version: _dec_version,
    AssertExists: _dec_unit,
    DropMaster: _dec_unit,
    MultiGetOption: _dec_options_same,
    CurrentState: _dec_text,
    Replace: _dec_opt_bytes,
    Nop: _dec_unit,
    FlushStore: _dec_unit,
    GetTxid: _dec_consistency,
    CopyDbToHead: _dec_unit,
    UserHook: _dec_unit,
    MemberHook: _dec_text,
}


def decode_result(request: AnyRequest, buf: Buffer, pos: int, limits: Limits) -> tuple[Any, int]:
    """Decode the success payload of ``request`` at ``pos``; raises ``Short`` if incomplete."""
    if type(request) is Unsupported:
        return None, _dec_unsupported(request, buf, pos, limits)
    decoder = _DECODERS.get(type(request))
    if decoder is None:
        raise LocalProtocolError(f"not a request: {request!r}")
    return decoder(buf, pos, limits)


def _check_tables() -> None:
    """Both tables cover every request type except Unsupported (checked at import)."""
    import typing

    kinds = set(typing.get_args(AnyRequest)) - {Unsupported}
    missing = (kinds - set(_ENCODERS)) | (kinds - set(_DECODERS))
    assert not missing, f"result codec tables miss {missing}"


_check_tables()
