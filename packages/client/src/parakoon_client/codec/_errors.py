# spec: docs/spec/arakoon-client-protocol.md
"""Error codes, command codes and the two protocol exceptions of the codec.

The split between the exceptions follows h11: a :class:`LocalProtocolError` means *our caller*
used the codec wrongly (asked to encode a value that cannot go on the wire, called the decoder
after it failed); a :class:`RemoteProtocolError` means *the peer* sent bytes the protocol does
not allow. Only the second one may ever be caused by network input, and the decoders never raise
anything else for any byte string (the fuzz tests hold them to that).
"""

from __future__ import annotations

import enum


class ErrorCode(enum.IntEnum):
    """The return codes of §4.1. Codes a peer sends that are not listed stay plain ints."""

    OK = 0x00
    NO_MAGIC = 0x01
    NO_HELLO = 0x03
    NOT_MASTER = 0x04
    NOT_FOUND = 0x05
    WRONG_CLUSTER = 0x06
    ASSERTION_FAILED = 0x07
    READ_ONLY = 0x08
    OUTSIDE_INTERVAL = 0x09
    GOING_DOWN = 0x10
    NOT_SUPPORTED = 0x20
    NO_LONGER_MASTER = 0x21
    BAD_INPUT = 0x26
    INCONSISTENT_READ = 0x80
    USERFUNCTION_FAILURE = 0x81
    USERHOOK_NOT_FOUND = 0x82
    MAX_CONNECTIONS = 0xFE
    UNKNOWN_FAILURE = 0xFF


# §4.2: the server keeps the connection open after exactly these error codes; every other error
# response is flushed and followed by a close.
_KEEPS_CONNECTION_OPEN = frozenset(
    {
        ErrorCode.NOT_FOUND,
        ErrorCode.ASSERTION_FAILED,
        ErrorCode.NO_LONGER_MASTER,
        ErrorCode.BAD_INPUT,
        ErrorCode.INCONSISTENT_READ,
    }
)


def keeps_connection_open(code: int) -> bool:
    """Whether a server keeps the connection open after answering with ``code`` (§4.2).

    ``OK`` keeps it open; of the error codes only 0x05, 0x07, 0x21, 0x26 and 0x80 do. An unknown
    code closes it, as every code the reference error handler does not single out does.
    """
    return code == ErrorCode.OK or code in _KEEPS_CONNECTION_OPEN


class CommandCode(enum.IntEnum):
    """The command codes of §7 (the low 16 bits of the command word)."""

    PING = 0x01
    WHO_MASTER = 0x02
    EXISTS = 0x07
    GET = 0x08
    SET = 0x09
    DELETE = 0x0A
    RANGE = 0x0B
    PREFIX_KEYS = 0x0C
    TEST_AND_SET = 0x0D
    LAST_ENTRIES = 0x0E
    RANGE_ENTRIES = 0x0F
    SEQUENCE = 0x10
    MULTI_GET = 0x11
    EXPECT_PROGRESS_POSSIBLE = 0x12
    STATISTICS = 0x13
    COLLAPSE_TLOGS = 0x14
    USER_FUNCTION = 0x15
    ASSERT = 0x16
    SET_INTERVAL = 0x17
    GET_ROUTING = 0x18
    SET_ROUTING = 0x19
    GET_KEY_COUNT = 0x1A
    GET_DB = 0x1B
    CONFIRM = 0x1C
    GET_FRINGE = 0x1D
    GET_INTERVAL = 0x1E
    SET_NURSERY_CFG = 0x1F
    GET_NURSERY_CFG = 0x20
    SET_ROUTING_DELTA = 0x21
    MIGRATE_RANGE = 0x22
    REV_RANGE_ENTRIES = 0x23
    SYNCED_SEQUENCE = 0x24
    OPT_DB = 0x25
    DEFRAG_DB = 0x26
    DELETE_PREFIX = 0x27
    VERSION = 0x28
    ASSERT_EXISTS = 0x29
    DROP_MASTER = 0x30
    MULTI_GET_OPTION = 0x31
    CURRENT_STATE = 0x32
    REPLACE = 0x33
    LAST_ENTRIES2 = 0x40
    NOP = 0x41
    FLUSH_STORE = 0x42
    GET_TXID = 0x43
    COPY_DB_TO_HEAD = 0x44
    USER_HOOK = 0x45


class NeedData(enum.Enum):
    """Returned by the incremental decoders when the bytes fed so far end mid-message."""

    NEED_DATA = "NEED_DATA"


NEED_DATA = NeedData.NEED_DATA


class ProtocolError(Exception):
    """Base class of the codec's two exceptions."""


class LocalProtocolError(ProtocolError):
    """The caller misused the codec: a value it cannot encode, a decoder used after failing."""


class RemoteProtocolError(ProtocolError):
    """The peer sent bytes that break the protocol.

    ``reason`` says what was wrong and at which offset of the stream. ``response`` is the exact
    byte string a server must write before closing the connection (§3.2: no magic gives int32 1
    without a message, an unknown command gives rc 5 and "<hex>: command not found", a malformed
    sequence or a too large value gives rc 0xFF "unknown failure"), or None when the reference
    server closes silently (bad prologue, bad bool or consistency byte, negative or over-limit
    length). On the client side ``response`` is always None.
    """

    def __init__(self, reason: str, *, response: bytes | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.response = response
