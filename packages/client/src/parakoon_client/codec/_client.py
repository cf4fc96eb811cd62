# spec: docs/spec/arakoon-client-protocol.md
"""The client's side of the codec: encode requests, decode responses.

A client writes :func:`encode_prologue` once after connecting, then for each request the bytes of
:func:`encode_request`, and reads the answer with a :class:`ResponseDecoder` made for that
request (responses carry no type tag, so only the request says how to read one). The decoder
returns the result in natural order (§2.1 is undone here), or an :class:`ErrorResponse`.
Whether the connection is still usable after an error is :func:`keeps_connection_open`.
"""

from __future__ import annotations

import struct
from typing import Any, Generic, TypeVar, assert_never, cast

from ._errors import (
    NEED_DATA,
    CommandCode,
    ErrorCode,
    LocalProtocolError,
    NeedData,
    RemoteProtocolError,
)
from ._limits import DEFAULT_LIMITS, Limits
from ._results import CollapseFailed, decode_result
from ._types import (
    MEMBER_HOOK,
    AnyRequest,
    Assert,
    AssertExists,
    Collapse,
    Confirm,
    Consistent,
    CopyDbToHead,
    CurrentState,
    DefragDb,
    Delete,
    DeletePrefix,
    DropMaster,
    ErrorResponse,
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
    NoGuarantees,
    Nop,
    OptimizeDb,
    Ping,
    PrefixKeys,
    Range,
    RangeEntries,
    Replace,
    Request,
    RevRangeEntries,
    Sequence,
    Set,
    Statistics,
    TestAndSet,
    Unsupported,
    USequence,
    UserFunction,
    UserHook,
    Version,
    WhoMaster,
)
from ._updates import encode_update
from ._wire import (
    I32,
    ListScan,
    Short,
    ShortInList,
    check_i32,
    enc_bool,
    enc_consistency,
    enc_option,
    enc_string,
    enc_string_list,
    enc_text,
    pack_i32,
    read_string,
    scan_list,
    unpack_i32,
)

MAGIC = 0xB1FF0000
PROTOCOL_VERSION = 1

R = TypeVar("R")


def command_word(code: int) -> bytes:
    """The four bytes of a command word: ``0xB1FF0000 | code``, little-endian."""
    return (MAGIC | code).to_bytes(4, "little")


_W = {code: command_word(code) for code in CommandCode}
_W_PING = _W[CommandCode.PING]
_W_GET = _W[CommandCode.GET]
_W_SET = _W[CommandCode.SET]
_TAG_ONLY: dict[type, bytes] = {Consistent: b"\x00", NoGuarantees: b"\x01"}


def encode_prologue(cluster_id: str) -> bytes:
    """magic, version 1, cluster id (§3.1). The server never answers it."""
    return MAGIC.to_bytes(4, "little") + pack_i32(PROTOCOL_VERSION) + enc_text(cluster_id)


def encode_request(request: AnyRequest | MemberHook) -> bytes:
    """The bytes of one request (command word and arguments), lists in natural order.

    Key lists (MULTI_GET, MULTI_GET_OPTION) go on the wire in the order of ``request.keys``, as
    the Python client sends them; the decoder of the answer knows the matching order. Raises
    ``LocalProtocolError`` for values that cannot be encoded (an int that overflows its field,
    a string longer than an int32 length, a field of the wrong type).
    """
    # One function, so the hot requests pay no extra call; a try costs nothing until it raises.
    try:
        pack = I32.pack
        match request:
            # The two hot requests first: match tests its cases in order.
            case Get(key=key, consistency=consistency):
                tag = _TAG_ONLY.get(type(consistency))
                if tag is None:
                    tag = enc_consistency(consistency)
                return b"".join((_W_GET, tag, pack(len(key)), key))
            case Set(key=key, value=value):
                return b"".join((_W_SET, pack(len(key)), key, pack(len(value)), value))
            case Exists(key=key, consistency=consistency):
                return _W[CommandCode.EXISTS] + enc_consistency(consistency) + enc_string(key)
            case Delete(key=key):
                return _W[CommandCode.DELETE] + enc_string(key)
            case Range() | RangeEntries() | RevRangeEntries():
                code = _RANGE_CODES[type(request)]
                return b"".join(
                    (
                        _W[code],
                        enc_consistency(request.consistency),
                        enc_option(request.first),
                        enc_bool(request.first_inclusive),
                        enc_option(request.last),
                        enc_bool(request.last_inclusive),
                        pack_i32(check_i32(request.max_keys, "max_keys")),
                    )
                )
            case PrefixKeys(prefix=prefix, max_keys=max_keys, consistency=consistency):
                return b"".join(
                    (
                        _W[CommandCode.PREFIX_KEYS],
                        enc_consistency(consistency),
                        enc_string(prefix),
                        pack_i32(check_i32(max_keys, "max_keys")),
                    )
                )
            case TestAndSet(key=key, expected=expected, wanted=wanted):
                return b"".join(
                    (_W[CommandCode.TEST_AND_SET], enc_string(key), enc_option(expected))
                ) + enc_option(wanted)
            case Sequence(updates=updates, synced=synced):
                code = CommandCode.SYNCED_SEQUENCE if synced else CommandCode.SEQUENCE
                # The outer tag is 5 for both commands (§8.4); tag 13 is the server's own.
                blob = encode_update(USequence(updates=updates))
                return _W[code] + enc_string(blob)
            case MultiGet(keys=keys, consistency=consistency):
                return (
                    _W[CommandCode.MULTI_GET] + enc_consistency(consistency) + enc_string_list(keys)
                )
            case MultiGetOption(keys=keys, consistency=consistency):
                return (
                    _W[CommandCode.MULTI_GET_OPTION]
                    + enc_consistency(consistency)
                    + enc_string_list(keys)
                )
            case Ping(client_id=client_id, cluster_id=cluster_id):
                return _W_PING + enc_text(client_id) + enc_text(cluster_id)
            case WhoMaster():
                return _W[CommandCode.WHO_MASTER]
            case ExpectProgressPossible():
                return _W[CommandCode.EXPECT_PROGRESS_POSSIBLE]
            case Statistics():
                return _W[CommandCode.STATISTICS]
            case Collapse(tlogs_to_keep=n):
                return _W[CommandCode.COLLAPSE_TLOGS] + pack_i32(check_i32(n, "tlogs_to_keep"))
            case UserFunction(name=name, argument=argument):
                return _W[CommandCode.USER_FUNCTION] + enc_text(name) + enc_option(argument)
            case Assert(key=key, expected=expected, consistency=consistency):
                return b"".join(
                    (_W[CommandCode.ASSERT], enc_consistency(consistency), enc_string(key))
                ) + enc_option(expected)
            case GetKeyCount():
                return _W[CommandCode.GET_KEY_COUNT]
            case GetDb():
                return _W[CommandCode.GET_DB]
            case Confirm(key=key, value=value):
                return _W[CommandCode.CONFIRM] + enc_string(key) + enc_string(value)
            case OptimizeDb():
                return _W[CommandCode.OPT_DB]
            case DefragDb():
                return _W[CommandCode.DEFRAG_DB]
            case DeletePrefix(prefix=prefix):
                return _W[CommandCode.DELETE_PREFIX] + enc_string(prefix)
            case Version():
                return _W[CommandCode.VERSION]
            case AssertExists(key=key, consistency=consistency):
                return (
                    _W[CommandCode.ASSERT_EXISTS] + enc_consistency(consistency) + enc_string(key)
                )
            case DropMaster():
                return _W[CommandCode.DROP_MASTER]
            case CurrentState():
                return _W[CommandCode.CURRENT_STATE]
            case Replace(key=key, wanted=wanted):
                return _W[CommandCode.REPLACE] + enc_string(key) + enc_option(wanted)
            case Nop():
                return _W[CommandCode.NOP]
            case FlushStore():
                return _W[CommandCode.FLUSH_STORE]
            case GetTxid():
                return _W[CommandCode.GET_TXID]
            case CopyDbToHead(tlogs_to_keep=n):
                return _W[CommandCode.COPY_DB_TO_HEAD] + pack_i32(check_i32(n, "tlogs_to_keep"))
            case UserHook(name=name, consistency=consistency):
                return _W[CommandCode.USER_HOOK] + enc_consistency(consistency) + enc_text(name)
            case MemberHook(request=text, consistency=consistency):
                name = MEMBER_HOOK + text
                return _W[CommandCode.USER_HOOK] + enc_consistency(consistency) + enc_text(name)
            case Unsupported(code=code):
                # Only the command word: this codec does not know the arguments of these commands.
                return _W[code]
            case _:
                assert_never(request)
    except (TypeError, AttributeError, struct.error, OverflowError) as exc:
        raise LocalProtocolError(f"cannot encode {type(request).__name__}: {exc}") from exc


_RANGE_CODES: dict[type, CommandCode] = {
    Range: CommandCode.RANGE,
    RangeEntries: CommandCode.RANGE_ENTRIES,
    RevRangeEntries: CommandCode.REV_RANGE_ENTRIES,
}


def _decode_response_at(
    request: AnyRequest, buf: bytes | bytearray, pos: int, limits: Limits
) -> tuple[Any, int]:
    """(result or ErrorResponse, end). Raises Short when incomplete."""
    start = pos + 4
    if start > len(buf):
        raise Short(start)
    rc = unpack_i32(buf, pos)[0]
    if rc == 0:
        # Fast paths for the two hot answers: a SET's unit and a GET's value.
        kind = type(request)
        if kind is Set:
            return None, start
        if kind is Get and start + 4 <= len(buf):
            n = unpack_i32(buf, start)[0]
            end = start + 4 + n
            if 0 <= n <= limits.max_string_bytes and end <= len(buf):
                return bytes(buf[start + 4 : end]), end
        try:
            return decode_result(request, buf, start, limits)
        except CollapseFailed as failed:
            return ErrorResponse(code=_known(failed.code), message=failed.message), failed.end
    if rc == ErrorCode.NO_MAGIC:
        # §3.2: the no-magic answer is the only error without a message string.
        return ErrorResponse(code=ErrorCode.NO_MAGIC, message=b""), start
    message, end = read_string(buf, start, limits.max_string_bytes, f"message of rc {rc:#x}")
    return ErrorResponse(code=_known(rc), message=message), end


def _known(code: int) -> int:
    try:
        return ErrorCode(code)
    except ValueError:
        return code


def decode_response(
    request: Request[R], data: bytes | bytearray, *, limits: Limits = DEFAULT_LIMITS
) -> tuple[R | ErrorResponse, int] | NeedData:
    """Decode the response to ``request`` at the start of ``data``.

    Returns ``(result or ErrorResponse, bytes consumed)``, or ``NEED_DATA`` when ``data`` ends
    before the response does. Raises ``RemoteProtocolError`` for bytes no server may send.
    """
    try:
        value, end = _decode_response_at(cast(AnyRequest, request), data, 0, limits)
    except Short:
        return NEED_DATA
    return cast("R | ErrorResponse", value), end


class ResponseDecoder(Generic[R]):
    """Incremental decoder of the response to one request.

    Feed it the bytes read from the socket as they come; :meth:`next_event` returns
    ``NEED_DATA`` until the whole response is there, then the result (natural order) or an
    :class:`ErrorResponse`. Bytes after the response are kept in :attr:`trailing_data` (a
    server never sends any, so a client may treat them as a protocol error).

    Re-parsing is bounded: after an incomplete attempt the decoder waits until the buffer holds
    at least the length the attempt stopped at, and a long list is skipped over from where the
    last attempt left it (``ListScan``), so a response is parsed in full once, however many
    chunks it arrives in.
    """

    __slots__ = ("_buf", "_done", "_limits", "_need", "_request", "_scan", "_trailing")

    def __init__(self, request: Request[R], *, limits: Limits = DEFAULT_LIMITS) -> None:
        self._request = cast(AnyRequest, request)
        self._limits = limits
        self._buf = bytearray()
        self._need = 4
        self._scan: ListScan | None = None
        self._done = False
        self._trailing = b""

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Append bytes read from the connection. Raises LocalProtocolError after the end."""
        if self._done:
            raise LocalProtocolError("response already complete: no more data expected")
        self._buf += data
        if len(self._buf) > self._limits.max_request_bytes + len(data):
            raise RemoteProtocolError(
                f"response larger than {self._limits.max_request_bytes} bytes"
            )

    def next_event(self) -> R | ErrorResponse | NeedData:
        """The decoded response, or NEED_DATA. Call it again only after feeding more data."""
        if self._done:
            raise LocalProtocolError("response already returned")
        buf = self._buf
        if len(buf) < self._need:
            return NEED_DATA
        try:
            if self._scan is not None:
                # Skip the list elements that arrived since the last attempt (see ListScan).
                scan_list(buf, self._scan)
                self._scan = None
            value, end = _decode_response_at(self._request, buf, 0, self._limits)
        except Short as short:
            if short.needed > self._limits.max_request_bytes:
                raise RemoteProtocolError(
                    f"response needs {short.needed} bytes, over the limit of "
                    f"{self._limits.max_request_bytes}"
                ) from None
            if isinstance(short, ShortInList):
                self._scan = short.scan
            self._need = short.needed
            return NEED_DATA
        self._done = True
        self._trailing = bytes(buf[end:])
        self._buf = bytearray()
        return cast("R | ErrorResponse", value)

    @property
    def trailing_data(self) -> bytes:
        """Bytes fed after the end of the response (empty unless the server misbehaved)."""
        return self._trailing
