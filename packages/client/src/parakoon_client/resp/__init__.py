"""The Redis serialization protocol (RESP2, and RESP3 after ``HELLO 3``) as a pure, sans-I/O
codec, plus Redis's glob patterns. The node's Redis port (``parakoon_node.clientserver.redis``)
owns the sockets and the command semantics; see ``docs/redis.md``.

Like ``parakoon_client.codec`` this package is pure: no socket, clock, thread or logger (the
architecture test holds it to that).
"""

from ._codec import (
    INLINE_BYTES_MAX,
    NULL,
    OK,
    Array,
    Bulk,
    Command,
    CommandDecoder,
    Error,
    Integer,
    Map,
    Null,
    NullArray,
    Reply,
    SimpleString,
    encode_command,
    encode_reply,
    reply_bytes,
    split_inline,
)
from ._glob import GLOB_PATTERN_BYTES_MAX, compile_glob, literal_prefix

__all__ = [
    "INLINE_BYTES_MAX",
    "NULL",
    "OK",
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
    "GLOB_PATTERN_BYTES_MAX",
    "compile_glob",
    "encode_command",
    "encode_reply",
    "literal_prefix",
    "reply_bytes",
    "split_inline",
]
