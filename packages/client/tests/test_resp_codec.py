"""The RESP codec of the Redis port (parakoon_client.resp): properties and bounds.

* Commands encoded by ``encode_command`` decode to the same arguments, whatever the chunks the
  stream arrives in, one byte at a time included.
* Oversize bulk lengths, too many arguments, over-long header or inline lines and garbage are
  a ``RemoteProtocolError`` carrying Redis's ``-ERR Protocol error: ...`` reply, and the
  decoder never raises anything else nor buffers past its bounds.
* Replies encode as RESP2 and RESP3 write them; the glob patterns match as Redis's do.
"""

from __future__ import annotations

import re
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from parakoon_client.codec import NEED_DATA, Limits, LocalProtocolError, RemoteProtocolError
from parakoon_client.resp import (
    GLOB_PATTERN_BYTES_MAX,
    INLINE_BYTES_MAX,
    NULL,
    Array,
    Bulk,
    Command,
    CommandDecoder,
    Error,
    Integer,
    Map,
    NullArray,
    Reply,
    SimpleString,
    compile_glob,
    encode_command,
    encode_reply,
    literal_prefix,
    reply_bytes,
    split_inline,
)

SMALL = Limits(max_string_bytes=64, max_list_items=8, max_request_bytes=256)
commands = st.lists(st.binary(max_size=40), min_size=1, max_size=6).map(tuple)


def decode_all(decoder: CommandDecoder, chunks: list[bytes]) -> list[Command]:
    out: list[Command] = []
    for chunk in chunks:
        decoder.feed(chunk)
        while (event := decoder.next_event()) is not NEED_DATA:
            assert isinstance(event, Command)
            out.append(event)
    return out


@given(st.lists(commands, min_size=1, max_size=5), st.data())
def test_commands_survive_any_split(batch: list[tuple[bytes, ...]], data: st.DataObject) -> None:
    stream = b"".join(encode_command(*c) for c in batch)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=8)))
    chunks = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
    decoded = decode_all(CommandDecoder(SMALL), chunks)
    assert [c.args for c in decoded] == batch
    assert not any(c.inline for c in decoded)


def test_every_single_byte_split() -> None:
    stream = encode_command(b"SET", b"k\r\n", b"") + b"PING\r\n" + encode_command(b"GET", b"k")
    decoded = decode_all(CommandDecoder(), [stream[i : i + 1] for i in range(len(stream))])
    assert [c.args for c in decoded] == [(b"SET", b"k\r\n", b""), (b"PING",), (b"GET", b"k")]


@pytest.mark.parametrize(
    ("stream", "reply"),
    [
        (b"*9\r\n", b"invalid multibulk length"),  # over max_list_items = 8
        (b"*x\r\n", b"invalid multibulk length"),
        (b"*1\r\n$65\r\n", b"invalid bulk length"),  # over max_string_bytes = 64
        (b"*1\r\n$-1\r\n", b"invalid bulk length"),
        (b"*1\r\n$99999999999999999999\r\n", b"invalid bulk length"),
        (b"*1\r\n:1\r\n", b"expected '$', got ':'"),
        (b"*1\r\n$1\r\nab\r\n", b"expected CRLF after bulk string"),
        (b'SET "a\r\n', b"unbalanced quotes in request"),
        (b'\x00\xff garbage "x"y\r\n', b"unbalanced quotes in request"),
    ],
)
def test_malformed_input_is_a_protocol_error_with_redis_reply(stream: bytes, reply: bytes) -> None:
    decoder = CommandDecoder(SMALL)
    decoder.feed(stream)
    with pytest.raises(RemoteProtocolError) as caught:
        decoder.next_event()
    assert caught.value.response == b"-ERR Protocol error: " + reply + b"\r\n"
    assert re.search(r"offset \d+", caught.value.reason)
    with pytest.raises(LocalProtocolError):
        decoder.next_event()


def test_a_command_is_bounded_by_max_request_bytes() -> None:
    decoder = CommandDecoder(SMALL)  # 256 bytes of arguments at most
    argument = b"$60\r\n" + b"a" * 60 + b"\r\n"
    decoder.feed(b"*5\r\n" + argument * 4)
    assert decoder.next_event() is NEED_DATA
    decoder.feed(b"$60\r\n")  # the fifth would make 300 bytes: refused before its payload
    with pytest.raises(RemoteProtocolError) as caught:
        decoder.next_event()
    assert caught.value.response == b"-ERR Protocol error: invalid bulk length\r\n"
    assert "max_request_bytes" in caught.value.reason


def test_lines_without_an_end_are_bounded() -> None:
    for start, what in ((b"*", b"too big mbulk count string"), (b"x", b"too big inline request")):
        decoder = CommandDecoder()
        decoder.feed(start + b"1" * (INLINE_BYTES_MAX + 10))
        with pytest.raises(RemoteProtocolError) as caught:
            decoder.next_event()
        assert caught.value.response == b"-ERR Protocol error: " + what + b"\r\n"


@settings(max_examples=300)
@given(st.binary(max_size=300), st.integers(1, 50))
def test_garbage_raises_only_remote_protocol_error(garbage: bytes, step: int) -> None:
    decoder = CommandDecoder(SMALL)
    try:
        for i in range(0, len(garbage), step):
            decoder.feed(garbage[i : i + step])
            while decoder.next_event() is not NEED_DATA:
                pass
            # Never more than one partial command plus one chunk is held.
            assert decoder.buffered_bytes <= max(INLINE_BYTES_MAX + 2, 256 + 64) + step
    except RemoteProtocolError as exc:
        assert exc.response is not None
        assert exc.response.startswith(b"-ERR Protocol error: ")


def test_empty_arrays_and_blank_lines_are_skipped() -> None:
    decoder = CommandDecoder()
    decoder.feed(b"*0\r\n*-1\r\n\r\n  \r\n" + encode_command(b"PING"))
    event = decoder.next_event()
    assert isinstance(event, Command)
    assert event.args == (b"PING",)
    assert event.name == "ping"


def test_inline_quoting_follows_redis_cli() -> None:
    assert split_inline(b'set "a b" \'c d\' "\\x41\\n"') == [b"set", b"a b", b"c d", b"A\n"]
    assert split_inline(b"  ") == []
    assert split_inline(b'"open') is None
    assert split_inline(b'"a"b') is None


def test_replies_in_resp2_and_resp3() -> None:
    nested = Array(items=(Bulk(value=b"x"), NULL, Integer(value=-3), SimpleString(text="OK")))
    assert encode_reply(nested) == b"*4\r\n$1\r\nx\r\n$-1\r\n:-3\r\n+OK\r\n"
    assert encode_reply(nested, 3) == b"*4\r\n$1\r\nx\r\n_\r\n:-3\r\n+OK\r\n"
    pairs = Map(pairs=((Bulk(value=b"k"), Integer(value=1)),))
    assert encode_reply(pairs) == b"*2\r\n$1\r\nk\r\n:1\r\n"
    assert encode_reply(pairs, 3) == b"%1\r\n$1\r\nk\r\n:1\r\n"
    assert encode_reply(NullArray()) == b"*-1\r\n"
    assert encode_reply(Error(message="ERR a\r\nb")) == b"-ERR a  b\r\n"
    for reply in (nested, pairs, NullArray(), Error(message="ERR a\r\nb\u00e9")):
        for protocol in (2, 3):
            assert reply_bytes(reply, protocol) == len(encode_reply(reply, protocol))


_leaves = st.one_of(
    st.binary(max_size=20).map(lambda b: Bulk(value=b)),
    st.integers(-(2**63), 2**63 - 1).map(lambda n: Integer(value=n)),
    st.text(max_size=10).map(lambda t: SimpleString(text=t)),
    st.text(max_size=10).map(lambda t: Error(message=t)),
    st.just(NULL),
    st.just(NullArray()),
)
_replies = st.recursive(
    _leaves,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4).map(lambda xs: Array(items=tuple(xs))),
        st.lists(st.tuples(inner, inner), max_size=3).map(lambda ps: Map(pairs=tuple(ps))),
    ),
    max_leaves=12,
)


@given(_replies, st.sampled_from([2, 3]))
def test_reply_bytes_is_the_encoded_length(reply: Reply, protocol: int) -> None:
    assert reply_bytes(reply, protocol) == len(encode_reply(reply, protocol))


@pytest.mark.parametrize(
    ("pattern", "key", "matches"),
    [
        (b"*", b"", True),
        (b"h?llo", b"hallo", True),
        (b"h?llo", b"hllo", False),
        (b"h*llo", b"heeeello", True),
        (b"h[ae]llo", b"hello", True),
        (b"h[ae]llo", b"hillo", False),
        (b"h[^e]llo", b"hallo", True),
        (b"h[^e]llo", b"hello", False),
        (b"h[a-b]llo", b"hbllo", True),
        (b"h[a-b]llo", b"hcllo", False),
        (b"a\\*b", b"a*b", True),
        (b"a\\*b", b"axb", False),
        (b"x\xff*", b"x\xff\x00\n", True),
        (b"[", b"[", True),
        (b"*a*b", b"xaxxb", True),
        (b"*a*b", b"xaxxbc", False),
        (b"a*a", b"a", False),
        (b"a*a", b"aa", True),
        (b"*?*", b"", False),
        (b"**x**", b"x", True),
        (b"[a-c]*[^a-c]", b"cab", False),
        (b"[a-c]*[^a-c]", b"cabd", True),
    ],
)
def test_glob_patterns(pattern: bytes, key: bytes, matches: bool) -> None:
    assert compile_glob(pattern)(key) is matches


def test_literal_prefix() -> None:
    assert literal_prefix(b"user:*:name") == b"user:"
    assert literal_prefix(b"plain") == b"plain"
    assert literal_prefix(b"a\\*") == b"a"


# The reference: the same items joined with ".*" into one backtracking regex (exact, and fast
# enough on the short inputs drawn here).
_GLOB_BYTES = st.binary(max_size=6).map(lambda b: bytes(b"ab*?[]^-\\"[c % 9] for c in b))


@settings(max_examples=500)
@given(_GLOB_BYTES, st.binary(max_size=8).map(lambda b: bytes(b"ab[]-*"[c % 6] for c in b)))
def test_glob_agrees_with_a_backtracking_regex(pattern: bytes, key: bytes) -> None:
    from parakoon_client.resp._glob import _tokens

    regex = "".join(".*" if t is None else t for t in _tokens(pattern))
    expected = re.fullmatch(regex, key.decode("latin-1"), re.DOTALL) is not None
    assert compile_glob(pattern)(key) is expected


def test_pathological_glob_takes_polynomial_time() -> None:
    # A backtracking regex takes hours on this (one more star multiplies the work by ~80).
    pattern, key = b"*a" * 30 + b"*b", b"a" * 2000
    started = time.perf_counter()
    for _ in range(20):
        assert compile_glob(pattern)(key) is False
    assert compile_glob(b"*a*a*a*a*a*a*a*b")(b"a" * 80) is False
    # Generous: about 10 ms here; the backtracking version never finished.
    assert time.perf_counter() - started < 5.0


def test_glob_patterns_are_bounded() -> None:
    assert compile_glob(b"?" * GLOB_PATTERN_BYTES_MAX)(b"x" * GLOB_PATTERN_BYTES_MAX)
    with pytest.raises(ValueError, match="longer than"):
        compile_glob(b"*" * (GLOB_PATTERN_BYTES_MAX + 1))
