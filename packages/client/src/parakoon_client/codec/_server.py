# spec: docs/spec/arakoon-client-protocol.md
"""The server's side of the codec: decode requests from a byte stream, encode responses.

Theory of operation
-------------------

A connection is one byte stream: the prologue, then requests back to back, with no framing of
the request as a whole (§3.2). The server may not rely on write boundaries: a client may send
the prologue and its first request in one write, or every field in a write of its own. So
:class:`RequestDecoder` buffers what it is fed and, on :meth:`RequestDecoder.next_event`, parses
from the start of the current request:

* if the buffer ends inside the request, the parse stops at the first missing byte and the
  decoder remembers how long the buffer must become before a new attempt can get further; it
  returns ``NEED_DATA`` and parses nothing until then;
* if the request is complete, it returns the request object and drops its bytes;
* if the bytes break the protocol, it raises :class:`RemoteProtocolError`, whose ``response`` is
  what the reference server writes before it closes (or None for a silent close), and the
  decoder is dead: the connection must be closed.

States: ``PROLOGUE`` (expecting magic, version, cluster id) → ``REQUESTS`` → ``DEAD`` (after an
error, or after an :class:`Unsupported` command whose arguments were not read). There is no way
back, and every call in ``DEAD`` is a :class:`LocalProtocolError`.

Bounds: every length and count is checked against :class:`Limits` as soon as its four bytes are
there, before the bytes it announces are waited for; and a request may not make the decoder
buffer more than ``max_request_bytes``. The caller must feed only after ``NEED_DATA`` (one
request at a time, §11 rule 19), so the buffer never holds more than one request plus one chunk.

Replies are pure functions: :func:`encode_response` (rc 0 + the payload in wire order) and
:func:`encode_error` (rc + message). What to answer and whether to close afterwards is the
server layer's decision (:func:`keeps_connection_open`).
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Callable
from typing import Any

from ._errors import (
    NEED_DATA,
    CommandCode,
    ErrorCode,
    LocalProtocolError,
    NeedData,
    RemoteProtocolError,
)
from ._limits import DEFAULT_LIMITS, Limits
from ._results import RC_OK, encode_result
from ._types import (
    CONSISTENT,
    NO_GUARANTEES,
    UNSUPPORTED_CODES,
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
    MultiGet,
    MultiGetOption,
    Nop,
    OptimizeDb,
    Ping,
    PrefixKeys,
    Prologue,
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
    new_get,
    new_set,
)
from ._updates import decode_update_prefix
from ._wire import (
    Buffer,
    ListScan,
    Short,
    ShortInList,
    enc_string,
    read_bool,
    read_consistency,
    read_i32,
    read_option,
    read_string,
    read_string_list,
    read_text,
    scan_list,
    unpack_i32,
    unpack_u32,
)

MAGIC = 0xB1FF0000
PROTOCOL_VERSION = 1

UNKNOWN_FAILURE_MESSAGE = b"unknown failure"


def encode_error(code: int, message: bytes | str = b"") -> bytes:
    """rc and message string; for ``E_NO_MAGIC`` the rc alone, as §3.2 requires."""
    if not 0 < code <= 0x7FFFFFFF:
        raise LocalProtocolError(f"error code {code:#x} is not a positive int32")
    rc = code.to_bytes(4, "little")
    if code == ErrorCode.NO_MAGIC:
        return rc
    raw = message.encode("utf-8", "surrogateescape") if isinstance(message, str) else message
    return rc + enc_string(raw)


def encode_response(request: Request[Any], result: Any) -> bytes:
    """rc 0 and the success payload of ``request``, lists in the wire order of §2.1.

    ``result`` is in natural order and of the request's result type (``Request[R]``). Raises
    ``LocalProtocolError`` when it is not.
    """
    return RC_OK + encode_result(request, result)  # type: ignore[arg-type]


UNKNOWN_FAILURE_RESPONSE = encode_error(ErrorCode.UNKNOWN_FAILURE, UNKNOWN_FAILURE_MESSAGE)
NO_MAGIC_RESPONSE = encode_error(ErrorCode.NO_MAGIC)
TOO_MANY_CLIENTS_RESPONSE = encode_error(ErrorCode.MAX_CONNECTIONS, b"too many clients")
GOING_DOWN_RESPONSE = encode_error(ErrorCode.GOING_DOWN, b"closing socket")
RC_OK_RESPONSE = RC_OK


def unknown_command_response(code: int) -> bytes:
    """rc 5 and "<code in lower-case hex>: command not found" (§3.2)."""
    return encode_error(ErrorCode.NOT_FOUND, f"{code:x}: command not found")


# --- request argument parsers: (buf, pos, limits) -> (request, end) ----------------------------

_Parser = Callable[[Buffer, int, Limits], tuple[AnyRequest, int]]


def _value(buf: Buffer, pos: int, limits: Limits, what: str) -> tuple[bytes, int]:
    """A value subject to the protocol's value-size limit (§11 rule 20)."""
    if pos + 4 <= len(buf):
        n = unpack_i32(buf, pos)[0]
        if n >= limits.max_value_bytes:
            raise RemoteProtocolError(
                f"{what}: value of {n} bytes at offset {pos} is at or over the maximum value "
                f"size of {limits.max_value_bytes} bytes",
                response=UNKNOWN_FAILURE_RESPONSE,
            )
    return read_string(buf, pos, limits.max_string_bytes, what)


def _opt_value(buf: Buffer, pos: int, limits: Limits, what: str) -> tuple[bytes | None, int]:
    if pos < len(buf) and buf[pos] == 1:
        value, end = _value(buf, pos + 1, limits, what)
        return value, end
    return read_option(buf, pos, limits.max_string_bytes, what)


_unpack_tag_length = struct.Struct("<Bi").unpack_from


def _p_get(buf: Buffer, pos: int, limits: Limits) -> tuple[AnyRequest, int]:
    # Fast path for the most common request: tag-only consistency, key within limits and
    # complete. Anything else takes the general path, which also produces the errors.
    start = pos + 5
    if start <= len(buf):
        tag, n = _unpack_tag_length(buf, pos)
        end = start + n
        if tag < 2 and 0 <= n <= limits.max_string_bytes and end <= len(buf):
            return new_get(bytes(buf[start:end]), NO_GUARANTEES if tag else CONSISTENT), end
    consistency, pos = read_consistency(buf, pos)
    key, pos = read_string(buf, pos, limits.max_string_bytes, "Get.key")
    return Get(key=key, consistency=consistency), pos


def _p_set(buf: Buffer, pos: int, limits: Limits) -> tuple[AnyRequest, int]:
    size = len(buf)
    key_start = pos + 4
    if key_start <= size:
        n = unpack_i32(buf, pos)[0]
        key_end = key_start + n
        value_start = key_end + 4
        if 0 <= n <= limits.max_string_bytes and value_start <= size:
            m = unpack_i32(buf, key_end)[0]
            value_end = value_start + m
            if 0 <= m < limits.max_value_bytes and value_end <= size:
                key = bytes(buf[key_start:key_end])
                return new_set(key, bytes(buf[value_start:value_end])), value_end
    key, pos = read_string(buf, pos, limits.max_string_bytes, "Set.key")
    value, pos = _value(buf, pos, limits, "Set.value")
    return Set(key=key, value=value), pos


def _p_exists(buf: Buffer, pos: int, limits: Limits) -> tuple[AnyRequest, int]:
    consistency, pos = read_consistency(buf, pos)
    key, pos = read_string(buf, pos, limits.max_string_bytes, "Exists.key")
    return Exists(key=key, consistency=consistency), pos


def _p_delete(buf: Buffer, pos: int, limits: Limits) -> tuple[AnyRequest, int]:
    key, pos = read_string(buf, pos, limits.max_string_bytes, "Delete.key")
    return Delete(key=key), pos


def _range_parser(cls: type[Range] | type[RangeEntries] | type[RevRangeEntries]) -> _Parser:
    name = cls.__name__

    def parse(buf: Buffer, pos: int, limits: Limits) -> tuple[AnyRequest, int]:
        smax = limits.max_string_bytes
        consistency, pos = read_consistency(buf, pos)
        first, pos = read_option(buf, pos, smax, f"{name}.first")
        first_inclusive, pos = read_bool(buf, pos, f"{name}.finc")
        last, pos = read_option(buf, pos, smax, f"{name}.last")
        last_inclusive, pos = read_bool(buf, pos, f"{name}.linc")
        max_keys, pos = read_i32(buf, pos)
        request = cls(
            first=first,
            first_inclusive=first_inclusive,
            last=last,
            last_inclusive=last_inclusive,
            max_keys=max_keys,
            consistency=consistency,
        )
        return request, pos

    return parse


def _p_prefix_keys(buf: Buffer, pos: int, limits: Limits) -> tuple[AnyRequest, int]:
    consistency, pos = read_consistency(buf, pos)
    prefix, pos = read_string(buf, pos, limits.max_string_bytes, "PrefixKeys.prefix")
    max_keys, pos = read_i32(buf, pos)
    return PrefixKeys(prefix=prefix, max_keys=max_keys, consistency=consistency), pos


def _p_test_and_set(buf: Buffer, pos: int, limits: Limits) -> tuple[AnyRequest, int]:
    smax = limits.max_string_bytes
    key, pos = read_string(buf, pos, smax, "TestAndSet.key")
    expected, pos = read_option(buf, pos, smax, "TestAndSet.expected")
    wanted, pos = _opt_value(buf, pos, limits, "TestAndSet.wanted")
    return TestAndSet(key=key, expected=expected, wanted=wanted), pos


def _sequence_parser(synced: bool) -> _Parser:
    name = "SyncedSequence" if synced else "Sequence"

    def parse(buf: Buffer, pos: int, limits: Limits) -> tuple[AnyRequest, int]:
        blob_pos = pos
        blob, pos = read_string(buf, pos, limits.max_string_bytes, f"{name} blob")
        # The blob is complete here, so anything wrong inside it is malformed, not short. The
        # reference answers rc 0xFF "unknown failure" and closes (§8.4).
        try:
            update, _end = decode_update_prefix(blob, 0, limits=limits)
        except RemoteProtocolError as exc:
            raise RemoteProtocolError(
                f"{name} blob at offset {blob_pos}: {exc.reason}",
                response=UNKNOWN_FAILURE_RESPONSE,
            ) from None
        # Bytes after the sequence inside the blob are ignored (§8.4).
        if type(update) is not USequence or update.synced:
            raise RemoteProtocolError(
                f"{name} blob at offset {blob_pos} holds a {type(update).__name__}, "
                "not a tag-5 Sequence",
                response=UNKNOWN_FAILURE_RESPONSE,
            )
        return Sequence(updates=update.updates, synced=synced), pos

    return parse


def _multi_get_parser(cls: type[MultiGet] | type[MultiGetOption]) -> _Parser:
    what = f"{cls.__name__}.keys"

    def parse(buf: Buffer, pos: int, limits: Limits) -> tuple[AnyRequest, int]:
        consistency, pos = read_consistency(buf, pos)
        keys, pos = read_string_list(buf, pos, limits.max_list_items, limits.max_string_bytes, what)
        return cls(keys=tuple(keys), consistency=consistency), pos

    return parse


def _p_ping(buf: Buffer, pos: int, limits: Limits) -> tuple[AnyRequest, int]:
    client_id, pos = read_text(buf, pos, limits.max_string_bytes, "Ping.client_id")
    cluster_id, pos = read_text(buf, pos, limits.max_string_bytes, "Ping.cluster_id")
    return Ping(client_id=client_id, cluster_id=cluster_id), pos


def _p_collapse(buf: Buffer, pos: int, _limits: Limits) -> tuple[AnyRequest, int]:
    n, pos = read_i32(buf, pos)
    return Collapse(tlogs_to_keep=n), pos


def _p_user_function(buf: Buffer, pos: int, limits: Limits) -> tuple[AnyRequest, int]:
    name, pos = read_text(buf, pos, limits.max_string_bytes, "UserFunction.name")
    argument, pos = read_option(buf, pos, limits.max_string_bytes, "UserFunction.argument")
    return UserFunction(name=name, argument=argument), pos


def _p_assert(buf: Buffer, pos: int, limits: Limits) -> tuple[AnyRequest, int]:
    consistency, pos = read_consistency(buf, pos)
    key, pos = read_string(buf, pos, limits.max_string_bytes, "Assert.key")
    expected, pos = read_option(buf, pos, limits.max_string_bytes, "Assert.expected")
    return Assert(key=key, expected=expected, consistency=consistency), pos


def _p_confirm(buf: Buffer, pos: int, limits: Limits) -> tuple[AnyRequest, int]:
    key, pos = read_string(buf, pos, limits.max_string_bytes, "Confirm.key")
    value, pos = _value(buf, pos, limits, "Confirm.value")
    return Confirm(key=key, value=value), pos


def _p_delete_prefix(buf: Buffer, pos: int, limits: Limits) -> tuple[AnyRequest, int]:
    prefix, pos = read_string(buf, pos, limits.max_string_bytes, "DeletePrefix.prefix")
    return DeletePrefix(prefix=prefix), pos


def _p_assert_exists(buf: Buffer, pos: int, limits: Limits) -> tuple[AnyRequest, int]:
    consistency, pos = read_consistency(buf, pos)
    key, pos = read_string(buf, pos, limits.max_string_bytes, "AssertExists.key")
    return AssertExists(key=key, consistency=consistency), pos


def _p_replace(buf: Buffer, pos: int, limits: Limits) -> tuple[AnyRequest, int]:
    key, pos = read_string(buf, pos, limits.max_string_bytes, "Replace.key")
    wanted, pos = _opt_value(buf, pos, limits, "Replace.wanted")
    return Replace(key=key, wanted=wanted), pos


def _p_copy_db_to_head(buf: Buffer, pos: int, _limits: Limits) -> tuple[AnyRequest, int]:
    n, pos = read_i32(buf, pos)
    return CopyDbToHead(tlogs_to_keep=n), pos


def _p_user_hook(buf: Buffer, pos: int, limits: Limits) -> tuple[AnyRequest, int]:
    consistency, pos = read_consistency(buf, pos)
    name, pos = read_text(buf, pos, limits.max_string_bytes, "UserHook.name")
    return UserHook(name=name, consistency=consistency), pos


def _no_arguments(request: AnyRequest) -> _Parser:
    def parse(_buf: Buffer, pos: int, _limits: Limits) -> tuple[AnyRequest, int]:
        return request, pos

    return parse


_PARSERS: dict[int, _Parser] = {
    CommandCode.PING: _p_ping,
    CommandCode.WHO_MASTER: _no_arguments(WhoMaster()),
    CommandCode.EXISTS: _p_exists,
    CommandCode.GET: _p_get,
    CommandCode.SET: _p_set,
    CommandCode.DELETE: _p_delete,
    CommandCode.RANGE: _range_parser(Range),
    CommandCode.PREFIX_KEYS: _p_prefix_keys,
    CommandCode.TEST_AND_SET: _p_test_and_set,
    CommandCode.RANGE_ENTRIES: _range_parser(RangeEntries),
    CommandCode.SEQUENCE: _sequence_parser(synced=False),
    CommandCode.MULTI_GET: _multi_get_parser(MultiGet),
    CommandCode.EXPECT_PROGRESS_POSSIBLE: _no_arguments(ExpectProgressPossible()),
    CommandCode.STATISTICS: _no_arguments(Statistics()),
    CommandCode.COLLAPSE_TLOGS: _p_collapse,
    CommandCode.USER_FUNCTION: _p_user_function,
    CommandCode.ASSERT: _p_assert,
    CommandCode.GET_KEY_COUNT: _no_arguments(GetKeyCount()),
    CommandCode.GET_DB: _no_arguments(GetDb()),
    CommandCode.CONFIRM: _p_confirm,
    CommandCode.REV_RANGE_ENTRIES: _range_parser(RevRangeEntries),
    CommandCode.SYNCED_SEQUENCE: _sequence_parser(synced=True),
    CommandCode.OPT_DB: _no_arguments(OptimizeDb()),
    CommandCode.DEFRAG_DB: _no_arguments(DefragDb()),
    CommandCode.DELETE_PREFIX: _p_delete_prefix,
    CommandCode.VERSION: _no_arguments(Version()),
    CommandCode.ASSERT_EXISTS: _p_assert_exists,
    CommandCode.DROP_MASTER: _no_arguments(DropMaster()),
    CommandCode.MULTI_GET_OPTION: _multi_get_parser(MultiGetOption),
    CommandCode.CURRENT_STATE: _no_arguments(CurrentState()),
    CommandCode.REPLACE: _p_replace,
    CommandCode.NOP: _no_arguments(Nop()),
    CommandCode.FLUSH_STORE: _no_arguments(FlushStore()),
    CommandCode.GET_TXID: _no_arguments(GetTxid()),
    CommandCode.COPY_DB_TO_HEAD: _p_copy_db_to_head,
    CommandCode.USER_HOOK: _p_user_hook,
}
for _code in UNSUPPORTED_CODES:
    _PARSERS[_code] = _no_arguments(Unsupported(code=_code))
assert set(_PARSERS) == set(CommandCode), "every command code of §7 has a parser"


class DecoderState(enum.Enum):
    PROLOGUE = "PROLOGUE"
    REQUESTS = "REQUESTS"
    DEAD = "DEAD"


# Module-level aliases: reading an enum member through its class costs a descriptor call, which
# matters on the per-request path.
_PROLOGUE = DecoderState.PROLOGUE
_REQUESTS = DecoderState.REQUESTS
_DEAD = DecoderState.DEAD


class RequestDecoder:
    """Incremental decoder of the client → server stream (prologue, then requests).

    ``feed(data)`` appends bytes; ``next_event()`` returns a :class:`Prologue` first, then one
    request object per call, or ``NEED_DATA``. Raises ``RemoteProtocolError`` (see the module
    docstring for ``response``); afterwards every call raises ``LocalProtocolError``.

    Costs: ``feed`` is amortised O(len(data)); ``next_event`` is O(size of the request) when it
    returns one, and O(1) when the buffer is still shorter than the last attempt needed.
    """

    __slots__ = ("_buf", "_consumed", "_limits", "_need", "_pos", "_scan", "_state")

    def __init__(self, limits: Limits = DEFAULT_LIMITS, *, expect_prologue: bool = True) -> None:
        self._limits = limits
        # bytes while no partial request is pending (the common case: one recv, one request),
        # a bytearray while one is being assembled from several chunks.
        self._buf: bytes | bytearray = b""
        self._pos = 0
        self._need = 0
        self._scan: ListScan | None = None  # where a long key list was left off (see ListScan)
        self._consumed = 0  # stream offset of self._buf[0], for error messages
        self._state = _PROLOGUE if expect_prologue else _REQUESTS

    @property
    def state(self) -> DecoderState:
        return self._state

    @property
    def buffered_bytes(self) -> int:
        """Bytes fed but not yet returned as part of an event."""
        return len(self._buf) - self._pos

    @property
    def stream_offset(self) -> int:
        """Offset in the whole stream of the first byte not yet consumed."""
        return self._consumed + self._pos

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Append bytes read from the connection. O(len(data)) amortised."""
        if self._state is _DEAD:
            raise LocalProtocolError("feed() after the decoder failed: close the connection")
        buf = self._buf
        pos = self._pos
        if pos == len(buf):
            # Nothing pending: keep the chunk itself (bytes() of a bytes object is no copy).
            self._buf = data if type(data) is bytes else bytes(data)
            if pos:
                self._shift(pos)
            return
        if type(buf) is bytes:
            buf = bytearray(memoryview(buf)[pos:])
            self._shift(pos)
        elif isinstance(buf, bytearray) and pos > 65536 and pos * 2 > len(buf):
            # Drop consumed bytes once they are the larger part, keeping appends amortised O(1).
            del buf[:pos]
            self._shift(pos)
        buf += data
        self._buf = buf

    def _shift(self, dropped: int) -> None:
        """The first ``dropped`` bytes of the buffer are gone: move every offset kept."""
        if dropped:
            self._consumed += dropped
            self._pos -= dropped
            self._need = max(0, self._need - dropped)
            if self._scan is not None:
                self._scan.resume -= dropped

    def next_event(self) -> Prologue | AnyRequest | NeedData:
        """The next prologue or request, or NEED_DATA."""
        buf = self._buf
        if len(buf) < self._need:
            return NEED_DATA
        pos = self._pos
        state = self._state
        event: Prologue | AnyRequest
        try:
            if self._scan is not None:
                # Skip the list elements that arrived since the last attempt (see ListScan).
                scan_list(buf, self._scan)
                self._scan = None
            if state is _REQUESTS:
                start = pos + 4
                if start > len(buf):
                    raise Short(start)
                word = unpack_u32(buf, pos)[0]
                if word & MAGIC != MAGIC:
                    raise RemoteProtocolError(
                        f"command word 0x{word:08x} has no magic",
                        response=NO_MAGIC_RESPONSE,
                    )
                code = word & 0xFFFF
                parser = _PARSERS.get(code)
                if parser is None:
                    raise RemoteProtocolError(
                        f"unknown command 0x{code:x}",
                        response=unknown_command_response(code),
                    )
                event, end = parser(buf, start, self._limits)
                if type(event) is Unsupported and event.has_arguments:
                    # Its arguments were not read, so the stream cannot be followed any further.
                    self._state = _DEAD
            elif state is _PROLOGUE:
                event, end = self._parse_prologue(buf, pos)
                self._state = _REQUESTS
            else:
                raise LocalProtocolError("next_event() after the decoder failed")
        except Short as short:
            if short.needed - pos > self._limits.max_request_bytes:
                self._state = _DEAD
                raise RemoteProtocolError(
                    f"request at stream offset {self._at(pos)} needs more than "
                    f"{self._limits.max_request_bytes} bytes"
                ) from None
            if isinstance(short, ShortInList):
                self._scan = short.scan
            self._need = short.needed
            return NEED_DATA
        except RemoteProtocolError as exc:
            self._state = _DEAD
            # The readers name buffer offsets; say where the buffer sits in the stream.
            raise RemoteProtocolError(
                f"{exc.reason} (the message starts at buffer offset {pos}, "
                f"stream offset {self._at(pos)})",
                response=exc.response,
            ) from None
        self._pos = end
        self._need = 0
        return event

    def _at(self, pos: int) -> int:
        return self._consumed + pos

    def _parse_prologue(self, buf: Buffer, pos: int) -> tuple[Prologue, int]:
        magic_end = pos + 4
        if magic_end > len(buf):
            raise Short(magic_end)
        magic = unpack_u32(buf, pos)[0]
        if magic != MAGIC:
            raise RemoteProtocolError(f"prologue magic 0x{magic:08x} is not 0xb1ff0000")
        version, pos = read_i32(buf, magic_end)
        if version != PROTOCOL_VERSION:
            raise RemoteProtocolError(f"prologue protocol version {version} is not 1")
        cluster_id, pos = read_text(buf, pos, self._limits.max_string_bytes, "prologue cluster id")
        return Prologue(cluster_id=cluster_id), pos
