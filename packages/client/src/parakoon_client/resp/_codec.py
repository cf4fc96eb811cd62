"""RESP, the Redis serialization protocol, as a sans-I/O codec: bytes in, commands out; replies
in, bytes out. The caller owns the socket.

Theory of operation
-------------------

A Redis client sends each command as an *array of bulk strings*::

    *<count>\\r\\n  then <count> times  $<length>\\r\\n<length bytes>\\r\\n

or, typed by hand (``telnet``, ``nc``), as one *inline* line of words separated by blanks, with
double quotes (backslash escapes inside) and single quotes for words that hold blanks. The server
answers each command with one reply, in order; a client may send many commands before reading
(pipelining), so :class:`CommandDecoder` yields one :class:`Command` per ``next_event`` call
and ``NEED_DATA`` when the bytes fed so far end inside a command. An empty array (``*0``, ``*-1``)
and an empty inline line are skipped, as Redis skips them.

Rules of this file:

* Bounds before allocation (style habit 8). The limits are the Arakoon port's ``Limits``, so
  both ports of a node accept the same sizes: a bulk string may be at most
  ``max_string_bytes`` long, an array hold at most ``max_list_items`` arguments, and the bulk
  strings of one command add up to at most ``max_request_bytes``. A count or header line or an
  inline command longer than 64 KiB without its line end is refused too (Redis's own bound), so
  garbage without line ends cannot grow the buffer. Each bound is checked as soon as the header
  that declares it is complete, before its payload is awaited.
* Malformed input is a :class:`~parakoon_client.codec.RemoteProtocolError` whose ``response`` is
  the RESP error the server writes before closing that one connection (Redis's own wording,
  ``-ERR Protocol error: ...``) and whose ``reason`` says what was wrong at which offset of the
  stream. After it the decoder is dead: a further ``next_event`` is a ``LocalProtocolError``.
* Replies are frozen dataclasses (:data:`Reply`). :func:`encode_reply` writes them for the
  protocol version the connection chose with HELLO: RESP2 has no null or map type of its own,
  so ``Null`` becomes the null bulk string ``$-1`` and ``Map`` a flat array of key, value, ...;
  RESP3 writes ``_`` and ``%``. A simple string or error never holds CR or LF: the encoder
  replaces them with blanks, as Redis does, so a message cannot break the framing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final, assert_never

from parakoon_client.codec._errors import (
    NEED_DATA,
    LocalProtocolError,
    NeedData,
    RemoteProtocolError,
)
from parakoon_client.codec._limits import DEFAULT_LIMITS, Limits

__all__ = [
    "INLINE_BYTES_MAX",
    "Array",
    "Bulk",
    "Command",
    "CommandDecoder",
    "Error",
    "Integer",
    "Map",
    "Null",
    "NullArray",
    "Reply",
    "SimpleString",
    "encode_command",
    "encode_reply",
]

INLINE_BYTES_MAX: Final = 64 * 1024
"""Longest inline command, and longest ``*``/``$`` header line, without its line end."""
_CRLF: Final = b"\r\n"
_DIGITS: Final = re.compile(rb"-?[0-9]{1,19}")


@dataclass(frozen=True, slots=True, kw_only=True)
class Command:
    """One command as the client sent it: ``args[0]`` is the command's name (any case)."""

    args: tuple[bytes, ...]
    inline: bool = False

    @property
    def name(self) -> str:
        """The command's name, lower case (unknown bytes survive as surrogates)."""
        return self.args[0].decode("utf-8", "surrogateescape").lower()


def _protocol_error(what: str, reason: str) -> RemoteProtocolError:
    return RemoteProtocolError(reason, response=b"-ERR Protocol error: " + what.encode() + _CRLF)


class CommandDecoder:
    """Incremental decoder of the commands a client sends (see the module docstring).

    ``feed`` appends bytes; ``next_event`` returns the next whole :class:`Command` or
    ``NEED_DATA``. Raises :class:`RemoteProtocolError` on malformed input (then it is dead) and
    :class:`LocalProtocolError` when used after that. Each call does work in proportion to the
    bytes it consumes: a partly received command keeps its parsed arguments between calls.
    """

    __slots__ = (
        "_args",
        "_buf",
        "_bulk_len",
        "_consumed",
        "_expected",
        "_failed",
        "_limits",
        "_pos",
        "_request_bytes",
    )

    def __init__(self, limits: Limits = DEFAULT_LIMITS) -> None:
        self._limits = limits
        self._buf = bytearray()
        self._pos = 0  # parse position in _buf
        self._consumed = 0  # bytes dropped from the front of _buf so far (for offsets)
        self._expected = 0  # arguments the array being parsed declared; 0: none in progress
        self._args: list[bytes] = []
        self._bulk_len = -1  # length of the bulk string whose header was read; -1: none
        self._request_bytes = 0
        self._failed = False

    @property
    def buffered_bytes(self) -> int:
        """Bytes fed and not yet returned as part of a command."""
        return len(self._buf) - self._pos

    @property
    def stream_offset(self) -> int:
        """Offset in the whole stream of the next byte to parse."""
        return self._consumed + self._pos

    @property
    def in_command(self) -> bool:
        """True while a command has begun and not yet ended."""
        return self._expected > 0 or self.buffered_bytes > 0

    def feed(self, data: bytes) -> None:
        """Append received bytes (``b""`` is allowed and does nothing)."""
        if self._failed:
            raise LocalProtocolError("feed after a protocol error")
        self._buf += data

    def next_event(self) -> Command | NeedData:
        """The next whole command, or ``NEED_DATA``."""
        if self._failed:
            raise LocalProtocolError("the decoder failed before: close the connection")
        try:
            event = self._parse()
        except RemoteProtocolError:
            self._failed = True
            raise
        if event is NEED_DATA or self._pos > 65536:
            # Drop what was parsed, so the buffer holds at most one partial command.
            del self._buf[: self._pos]
            self._consumed += self._pos
            self._pos = 0
        return event

    # ------------------------------------------------------------------------ parsing

    def _line(self, what: str) -> bytes | None:
        """The line at the parse position without its CRLF (consumed), or None if incomplete."""
        buf = self._buf
        end = buf.find(_CRLF, self._pos, self._pos + INLINE_BYTES_MAX + 2)
        if end < 0:
            if len(buf) - self._pos > INLINE_BYTES_MAX + 1:
                raise _protocol_error(
                    f"too big {what} string",
                    f"a {what} line longer than {INLINE_BYTES_MAX} bytes at offset "
                    f"{self.stream_offset}",
                )
            return None
        line = bytes(buf[self._pos : end])
        self._pos = end + 2
        return line

    def _parse(self) -> Command | NeedData:
        while True:
            if self._expected == 0:
                if self._pos >= len(self._buf):
                    return NEED_DATA
                if self._buf[self._pos] != ord("*"):
                    inline = self._inline()
                    if inline is NEED_DATA or inline.args:
                        return inline
                    continue  # an empty line: skipped
                offset = self.stream_offset
                line = self._line("mbulk count")
                if line is None:
                    return NEED_DATA
                count = _integer(line[1:])
                if count is None or count > self._limits.max_list_items:
                    raise _protocol_error(
                        "invalid multibulk length",
                        f"array header {line[:40]!r} at offset {offset}: not a count in "
                        f"..{self._limits.max_list_items} (max_list_items)",
                    )
                if count <= 0:
                    continue  # Redis ignores empty and null arrays
                self._expected = count
                self._args = []
                self._request_bytes = 0
            while len(self._args) < self._expected:
                if self._bulk_len < 0:
                    if self._pos >= len(self._buf):
                        return NEED_DATA
                    offset = self.stream_offset
                    first = self._buf[self._pos]
                    if first != ord("$"):
                        raise _protocol_error(
                            f"expected '$', got '{chr(first)}'",
                            f"argument {len(self._args)} at offset {offset} starts with byte "
                            f"0x{first:02x}, not '$'",
                        )
                    line = self._line("bulk count")
                    if line is None:
                        return NEED_DATA
                    length = _integer(line[1:])
                    if (
                        length is None
                        or length < 0
                        or length > self._limits.max_string_bytes
                        or self._request_bytes + length > self._limits.max_request_bytes
                    ):
                        raise _protocol_error(
                            "invalid bulk length",
                            f"bulk header {line[:40]!r} at offset {offset}: not a length in "
                            f"0..{self._limits.max_string_bytes} (max_string_bytes) or the "
                            f"command exceeds {self._limits.max_request_bytes} bytes "
                            "(max_request_bytes)",
                        )
                    self._bulk_len = length
                    self._request_bytes += length
                end = self._pos + self._bulk_len
                if len(self._buf) < end + 2:
                    return NEED_DATA
                if self._buf[end : end + 2] != _CRLF:
                    raise _protocol_error(
                        "expected CRLF after bulk string",
                        f"bulk string of {self._bulk_len} bytes ending at offset "
                        f"{self._consumed + end} is not followed by CRLF",
                    )
                self._args.append(bytes(self._buf[self._pos : end]))
                self._pos = end + 2
                self._bulk_len = -1
            command = Command(args=tuple(self._args))
            self._expected = 0
            self._args = []
            return command

    def _inline(self) -> Command | NeedData:
        """One inline command; Command(args=()) for a blank line."""
        buf = self._buf
        end = buf.find(b"\n", self._pos, self._pos + INLINE_BYTES_MAX + 1)
        if end < 0:
            if len(buf) - self._pos > INLINE_BYTES_MAX:
                raise _protocol_error(
                    "too big inline request",
                    f"an inline command longer than {INLINE_BYTES_MAX} bytes at offset "
                    f"{self.stream_offset}",
                )
            return NEED_DATA
        offset = self.stream_offset
        line = bytes(buf[self._pos : end]).removesuffix(b"\r")
        self._pos = end + 1
        words = split_inline(line)
        if words is None:
            raise _protocol_error(
                "unbalanced quotes in request",
                f"inline command at offset {offset} has unbalanced quotes",
            )
        if len(words) > self._limits.max_list_items:
            raise _protocol_error(
                "invalid multibulk length",
                f"inline command at offset {offset} has more than "
                f"{self._limits.max_list_items} words (max_list_items)",
            )
        return Command(args=tuple(words), inline=True)


def _integer(text: bytes) -> int | None:
    """A decimal count as Redis writes it (optional minus, digits only), or None."""
    if _DIGITS.fullmatch(text) is None:
        return None
    return int(text)


_ESCAPES: Final = {
    ord("n"): b"\n",
    ord("r"): b"\r",
    ord("t"): b"\t",
    ord("b"): b"\b",
    ord("a"): b"\a",
}
_HEX: Final = frozenset(b"0123456789abcdefABCDEF")
_BLANKS: Final = frozenset(b" \t\r\n\v\f")


def split_inline(line: bytes) -> list[bytes] | None:
    """Split an inline command into words the way ``redis-cli`` quotes them (Redis's
    ``sdssplitargs``): blanks separate words; ``"..."`` holds blanks and backslash escapes
    (``\\n``, ``\\xHH``, ...); ``'...'`` holds blanks and ``\\'``. A closing quote must be
    followed by a blank or the end. Returns None for unbalanced quotes."""
    words: list[bytes] = []
    i, n = 0, len(line)
    while True:
        while i < n and line[i] in _BLANKS:
            i += 1
        if i >= n:
            return words
        word = bytearray()
        quote = 0
        while True:
            if i >= n:
                if quote:
                    return None
                break
            c = line[i]
            if quote == ord('"'):
                if (
                    c == ord("\\")
                    and i + 3 < n
                    and line[i + 1] == ord("x")
                    and line[i + 2] in _HEX
                    and line[i + 3] in _HEX
                ):
                    word.append(int(line[i + 2 : i + 4], 16))
                    i += 4
                    continue
                if c == ord("\\") and i + 1 < n:
                    nxt = line[i + 1]
                    word += _ESCAPES.get(nxt, bytes([nxt]))
                    i += 2
                    continue
                if c == ord('"'):
                    if i + 1 < n and line[i + 1] not in _BLANKS:
                        return None
                    i += 1
                    break
                word.append(c)
            elif quote == ord("'"):
                if c == ord("\\") and i + 1 < n and line[i + 1] == ord("'"):
                    word.append(ord("'"))
                    i += 2
                    continue
                if c == ord("'"):
                    if i + 1 < n and line[i + 1] not in _BLANKS:
                        return None
                    i += 1
                    break
                word.append(c)
            elif c in _BLANKS:
                break
            elif c in (ord('"'), ord("'")) and not word:
                quote = c
            else:
                word.append(c)
            i += 1
        words.append(bytes(word))


def encode_command(*args: bytes) -> bytes:
    """A command as a client sends it: an array of bulk strings."""
    if not args:
        raise LocalProtocolError("a command needs at least its name")
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        parts.append(b"$%d\r\n%s\r\n" % (len(arg), arg))
    return b"".join(parts)


# ---------------------------------------------------------------------------- replies


@dataclass(frozen=True, slots=True, kw_only=True)
class SimpleString:
    """``+text``: a short status such as OK, QUEUED or PONG."""

    text: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Error:
    """``-PREFIX message``: ``message`` starts with the error's upper-case prefix (ERR, ...)."""

    message: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Integer:
    """``:n`` (a signed 64-bit integer)."""

    value: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Bulk:
    """``$len`` and bytes: any binary string."""

    value: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class Null:
    """The null value: ``$-1`` in RESP2 (a missing key), ``_`` in RESP3."""


@dataclass(frozen=True, slots=True, kw_only=True)
class NullArray:
    """The null array: ``*-1`` in RESP2 (EXEC of a transaction a WATCH aborted), ``_`` in RESP3."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Array:
    """``*n`` and n replies."""

    items: tuple[Reply, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class Map:
    """``%n`` and n key/value pairs in RESP3; a flat array of 2n replies in RESP2."""

    pairs: tuple[tuple[Reply, Reply], ...]


Reply = SimpleString | Error | Integer | Bulk | Null | NullArray | Array | Map
"""Every reply the server writes."""

_LINE_BREAKS: Final = str.maketrans("\r\n", "  ")
NULL: Final = Null()
OK: Final = SimpleString(text="OK")


def encode_reply(reply: Reply, protocol: int = 2) -> bytes:
    """The bytes of ``reply`` for a connection speaking RESP ``protocol`` (2 or 3)."""
    out: list[bytes] = []
    _encode(reply, protocol, out)
    return b"".join(out)


def reply_bytes(reply: Reply, protocol: int = 2) -> int:
    """``len(encode_reply(reply, protocol))``, without building the bytes: a server checks a
    reply against its size bound before it spends the memory. O(number of items)."""
    match reply:
        case Bulk(value=data):
            return len(data) + _digits(len(data)) + 5
        case SimpleString(text=text):
            return len(text.translate(_LINE_BREAKS).encode("utf-8", "replace")) + 3
        case Error(message=message):
            return len(message.translate(_LINE_BREAKS).encode("utf-8", "replace")) + 3
        case Integer(value=number):
            return _digits(number) + 3
        case Null() | NullArray():
            return 3 if protocol >= 3 else 5
        case Array(items=items):
            return _digits(len(items)) + 3 + sum(reply_bytes(i, protocol) for i in items)
        case Map(pairs=pairs):
            count = len(pairs) if protocol >= 3 else 2 * len(pairs)
            inner = sum(reply_bytes(k, protocol) + reply_bytes(v, protocol) for k, v in pairs)
            return _digits(count) + 3 + inner
        case _:
            assert_never(reply)


def _digits(number: int) -> int:
    return len(b"%d" % number)


def _encode(reply: Reply, protocol: int, out: list[bytes]) -> None:
    match reply:
        case Bulk(value=data):
            out.append(b"$%d\r\n%s\r\n" % (len(data), data))
        case SimpleString(text=text):
            out.append(b"+" + text.translate(_LINE_BREAKS).encode("utf-8", "replace") + _CRLF)
        case Error(message=message):
            out.append(b"-" + message.translate(_LINE_BREAKS).encode("utf-8", "replace") + _CRLF)
        case Integer(value=number):
            out.append(b":%d\r\n" % number)
        case Null():
            out.append(b"_\r\n" if protocol >= 3 else b"$-1\r\n")
        case NullArray():
            out.append(b"_\r\n" if protocol >= 3 else b"*-1\r\n")
        case Array(items=items):
            out.append(b"*%d\r\n" % len(items))
            for item in items:
                _encode(item, protocol, out)
        case Map(pairs=pairs):
            if protocol >= 3:
                out.append(b"%%%d\r\n" % len(pairs))
            else:
                out.append(b"*%d\r\n" % (2 * len(pairs)))
            for key, item in pairs:
                _encode(key, protocol, out)
                _encode(item, protocol, out)
        case _:
            assert_never(reply)
