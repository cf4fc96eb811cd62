"""Property tests: both sides of the codec agree, and no input breaks the decoders.

* Every request survives client encode → server decode; every result survives server encode →
  client decode (natural order in, natural order out).
* The server-side decoder gives the same events however the stream is split into chunks.
* Random garbage, and valid streams with random corruption, make the decoders raise
  ``RemoteProtocolError`` and nothing else, and never make them buffer more than the limits.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from parakoon_client.codec import (
    NEED_DATA,
    AnyRequest,
    Assert,
    AssertExists,
    AtLeast,
    Collapse,
    CommandCode,
    Confirm,
    Consistency,
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
    Limits,
    MultiGet,
    MultiGetOption,
    NamedFloat,
    NamedInt,
    NamedInt64,
    NamedList,
    NamedString,
    NamedValue,
    NoGuarantees,
    Nop,
    OptimizeDb,
    Ping,
    PrefixKeys,
    Prologue,
    Range,
    RangeEntries,
    RemoteProtocolError,
    Replace,
    Request,
    RequestDecoder,
    ResponseDecoder,
    RevRangeEntries,
    Sequence,
    Set,
    Statistics,
    TestAndSet,
    UAdminSet,
    UAssert,
    UAssertExists,
    UAssertRange,
    UDelete,
    UDeletePrefix,
    UMasterSet,
    UNop,
    Unsupported,
    Update,
    UReplace,
    USequence,
    UserFunction,
    UserHook,
    USet,
    USetInterval,
    USetRouting,
    USetRoutingDelta,
    UTestAndSet,
    UUserFunction,
    Version,
    VersionInfo,
    WhoMaster,
    decode_response,
    decode_update,
    encode_error,
    encode_prologue,
    encode_request,
    encode_response,
    encode_update,
)

I32 = st.integers(-(2**31), 2**31 - 1)
I64 = st.integers(-(2**63), 2**63 - 1)
KEYS = st.binary(max_size=12)
VALUES = st.binary(max_size=40)
OPT = st.none() | VALUES
TEXT = st.text(max_size=12)
CONSISTENCY: st.SearchStrategy[Consistency] = st.one_of(
    st.just(Consistent()), st.just(NoGuarantees()), st.builds(AtLeast, stamp=I64)
)

LEAF_UPDATES: st.SearchStrategy[Update] = st.one_of(
    st.builds(USet, key=KEYS, value=VALUES),
    st.builds(UDelete, key=KEYS),
    st.builds(UTestAndSet, key=KEYS, expected=OPT, wanted=OPT),
    st.builds(UMasterSet, master=TEXT, lease=I64),
    st.builds(UNop),
    st.builds(UUserFunction, name=TEXT, argument=OPT),
    st.builds(UAssert, key=KEYS, expected=OPT),
    st.builds(UAdminSet, key=KEYS, value=OPT),
    st.builds(USetInterval, bounds=st.tuples(OPT, OPT, OPT, OPT)),
    st.builds(USetRouting, routing=VALUES),
    st.builds(USetRoutingDelta, left=KEYS, separator=KEYS, right=KEYS),
    st.builds(UDeletePrefix, prefix=KEYS),
    st.builds(UAssertExists, key=KEYS),
    st.builds(UReplace, key=KEYS, wanted=OPT),
    st.builds(UAssertRange, prefix=KEYS, keys=st.lists(KEYS, max_size=4).map(tuple)),
)
UPDATES: st.SearchStrategy[Update] = st.recursive(
    LEAF_UPDATES,
    lambda inner: st.builds(
        USequence, updates=st.lists(inner, max_size=4).map(tuple), synced=st.booleans()
    ),
    max_leaves=12,
)
# What a client may put in a SEQUENCE request: nested sequences are plain (tag 5) ones, since
# the top level must be tag 5 and tag 13 is refused by the server layer, not the decoder.
SEQUENCE_REQUEST_UPDATES = st.lists(UPDATES, max_size=5).map(tuple)

RANGE_ARGS = {
    "first": OPT,
    "first_inclusive": st.booleans(),
    "last": OPT,
    "last_inclusive": st.booleans(),
    "max_keys": I32,
    "consistency": CONSISTENCY,
}

REQUESTS: st.SearchStrategy[AnyRequest] = st.one_of(
    st.builds(Ping, client_id=TEXT, cluster_id=TEXT),
    st.builds(WhoMaster),
    st.builds(Exists, key=KEYS, consistency=CONSISTENCY),
    st.builds(Get, key=KEYS, consistency=CONSISTENCY),
    st.builds(Set, key=KEYS, value=VALUES),
    st.builds(Delete, key=KEYS),
    st.builds(Range, **RANGE_ARGS),
    st.builds(PrefixKeys, prefix=KEYS, max_keys=I32, consistency=CONSISTENCY),
    st.builds(TestAndSet, key=KEYS, expected=OPT, wanted=OPT),
    st.builds(RangeEntries, **RANGE_ARGS),
    st.builds(Sequence, updates=SEQUENCE_REQUEST_UPDATES, synced=st.booleans()),
    st.builds(MultiGet, keys=st.lists(KEYS, max_size=5).map(tuple), consistency=CONSISTENCY),
    st.builds(ExpectProgressPossible),
    st.builds(Statistics),
    st.builds(Collapse, tlogs_to_keep=I32),
    st.builds(UserFunction, name=TEXT, argument=OPT),
    st.builds(Assert, key=KEYS, expected=OPT, consistency=CONSISTENCY),
    st.builds(GetKeyCount),
    st.builds(GetDb),
    st.builds(Confirm, key=KEYS, value=VALUES),
    st.builds(RevRangeEntries, **RANGE_ARGS),
    st.builds(OptimizeDb),
    st.builds(DefragDb),
    st.builds(DeletePrefix, prefix=KEYS),
    st.builds(Version),
    st.builds(AssertExists, key=KEYS, consistency=CONSISTENCY),
    st.builds(DropMaster),
    st.builds(MultiGetOption, keys=st.lists(KEYS, max_size=5).map(tuple), consistency=CONSISTENCY),
    st.builds(CurrentState),
    st.builds(Replace, key=KEYS, wanted=OPT),
    st.builds(Nop),
    st.builds(FlushStore),
    st.builds(GetTxid),
    st.builds(CopyDbToHead, tlogs_to_keep=I32),
    st.builds(UserHook, name=TEXT, consistency=CONSISTENCY),
    st.builds(
        Unsupported,
        code=st.sampled_from(
            [CommandCode.GET_INTERVAL, CommandCode.GET_ROUTING, CommandCode.GET_NURSERY_CFG]
        ),
    ),
)

NAMED: st.SearchStrategy[NamedValue] = st.recursive(
    st.one_of(
        st.builds(NamedInt, name=TEXT, value=I32),
        st.builds(NamedInt64, name=TEXT, value=I64),
        st.builds(NamedFloat, name=TEXT, value=st.floats(allow_nan=False)),
        st.builds(NamedString, name=TEXT, value=TEXT),
    ),
    lambda inner: st.builds(NamedList, name=TEXT, items=st.lists(inner, max_size=4).map(tuple)),
    max_leaves=10,
)


def result_strategy(request: AnyRequest) -> st.SearchStrategy[Any]:
    """A random natural-order result of the right type for ``request``."""
    match request:
        case Ping() | CurrentState():
            return TEXT
        case WhoMaster():
            return st.none() | TEXT
        case Exists() | ExpectProgressPossible():
            return st.booleans()
        case Get() | GetDb():
            return VALUES
        case (
            Set()
            | Delete()
            | Sequence()
            | Assert()
            | Confirm()
            | OptimizeDb()
            | DefragDb()
            | AssertExists()
            | DropMaster()
            | Nop()
            | FlushStore()
            | CopyDbToHead()
            | UserHook()
            | Unsupported()
        ):
            return st.none()
        case Range() | PrefixKeys():
            return st.lists(KEYS, max_size=6)
        case MultiGet(keys=keys):
            return st.lists(VALUES, min_size=len(keys), max_size=len(keys))
        case MultiGetOption(keys=keys):
            return st.lists(OPT, min_size=len(keys), max_size=len(keys))
        case RangeEntries() | RevRangeEntries():
            return st.lists(st.tuples(KEYS, VALUES), max_size=6)
        case TestAndSet() | UserFunction() | Replace():
            return OPT
        case Statistics():
            return st.builds(NamedList, name=TEXT, items=st.lists(NAMED, max_size=4).map(tuple))
        case Collapse():
            return st.lists(I64, max_size=4).map(tuple)
        case GetKeyCount():
            return I64
        case DeletePrefix():
            return I32
        case Version():
            return st.builds(VersionInfo, major=I32, minor=I32, patch=I32, info=TEXT)
        case GetTxid():
            return CONSISTENCY
    raise AssertionError(f"no result strategy for {request!r}")


@st.composite
def request_and_result(draw: st.DrawFn) -> tuple[AnyRequest, Any]:
    request = draw(REQUESTS)
    if draw(st.integers(0, 4)) == 0:
        code = draw(st.integers(1, 0x7FFFFFFF))
        message = b"" if code == 1 else draw(VALUES)
        return request, ErrorResponse(code=code, message=message)
    return request, draw(result_strategy(request))


SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _feed_all(decoder: RequestDecoder, chunks: list[bytes]) -> list[object]:
    events: list[object] = []
    for chunk in chunks:
        decoder.feed(chunk)
        while (event := decoder.next_event()) is not NEED_DATA:
            events.append(event)
    return events


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


@SETTINGS
@given(st.lists(REQUESTS, min_size=1, max_size=6), st.lists(st.integers(0, 10**6), max_size=12))
def test_requests_round_trip_under_any_split(requests: list[AnyRequest], cuts: list[int]) -> None:
    stream = encode_prologue("cluster") + b"".join(encode_request(r) for r in requests)
    expected: list[object] = [Prologue(cluster_id="cluster"), *requests]
    assert _feed_all(RequestDecoder(), [stream]) == expected
    decoder = RequestDecoder()
    assert _feed_all(decoder, _split(stream, cuts)) == expected
    assert decoder.buffered_bytes == 0
    assert decoder.stream_offset == len(stream)


def _same(a: object, b: object) -> bool:
    return encode_float_safe(a) == encode_float_safe(b)


def encode_float_safe(value: object) -> object:
    """NaN-proof comparison key (statistics floats may be NaN)."""
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    return value


@SETTINGS
@given(request_and_result(), st.lists(st.integers(0, 10**6), max_size=8))
def test_responses_round_trip(case: tuple[AnyRequest, Any], cuts: list[int]) -> None:
    request, result = case
    if isinstance(result, ErrorResponse):
        data = encode_error(result.code, result.message)
    else:
        data = encode_response(request, result)
    any_request: Request[Any] = request
    assert decode_response(any_request, data) == (result, len(data))
    decoder: ResponseDecoder[Any] = ResponseDecoder(request)
    event: object = NEED_DATA
    for chunk in _split(data, cuts):
        assert event is NEED_DATA
        decoder.feed(chunk)
        event = decoder.next_event()
    assert event == result
    assert decoder.trailing_data == b""


@SETTINGS
@given(UPDATES)
def test_updates_round_trip(update: Update) -> None:
    data = encode_update(update)
    assert decode_update(data) == update


SMALL = Limits(
    max_string_bytes=64,
    max_list_items=8,
    max_value_bytes=48,
    max_request_bytes=512,
    max_update_depth=4,
)


def _drive_garbage(decoder: RequestDecoder, chunks: list[bytes], limits: Limits) -> None:
    """Feed until the decoder fails; it may only raise RemoteProtocolError, and stays bounded."""
    try:
        for chunk in chunks:
            decoder.feed(chunk)
            while (event := decoder.next_event()) is not NEED_DATA:
                if isinstance(event, Unsupported) and event.has_arguments:
                    # The server answers E_NOT_SUPPORTED and closes: the stream ends here.
                    return
            # Feeding only after NEED_DATA keeps the buffer within one request plus one chunk.
            assert decoder.buffered_bytes <= limits.max_request_bytes + len(chunk)
    except RemoteProtocolError as exc:
        assert exc.reason
        assert exc.response is None or exc.response[:4] != b"\x00\x00\x00\x00"


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=600), st.lists(st.integers(0, 10**6), max_size=8), st.booleans())
def test_garbage_only_raises_remote_protocol_error(
    data: bytes, cuts: list[int], prologue: bool
) -> None:
    for limits in (SMALL, Limits()):
        decoder = RequestDecoder(limits, expect_prologue=prologue)
        _drive_garbage(decoder, _split(data, cuts), limits)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(REQUESTS, min_size=1, max_size=4),
    st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=4),
    st.lists(st.integers(0, 10**6), max_size=6),
)
def test_corrupted_streams_only_raise_remote_protocol_error(
    requests: list[AnyRequest], flips: list[tuple[int, int]], cuts: list[int]
) -> None:
    stream = bytearray(b"".join(encode_request(r) for r in requests))
    for where, byte in flips:
        stream[where % len(stream)] = byte
    for limits in (SMALL, Limits()):
        decoder = RequestDecoder(limits, expect_prologue=False)
        _drive_garbage(decoder, _split(bytes(stream), cuts), limits)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(REQUESTS, st.binary(max_size=300))
def test_garbage_responses_only_raise_remote_protocol_error(
    request: AnyRequest, data: bytes
) -> None:
    for limits in (SMALL, Limits()):
        decoder: ResponseDecoder[Any] = ResponseDecoder(request, limits=limits)
        try:
            decoder.feed(data)
            decoder.next_event()
        except RemoteProtocolError as exc:
            assert exc.reason


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_garbage_updates_only_raise_remote_protocol_error(data: bytes) -> None:
    for limits in (SMALL, Limits()):
        try:
            decode_update(data, limits=limits)
        except RemoteProtocolError as exc:
            assert exc.reason


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(sorted(CommandCode)),
    st.binary(max_size=200),
    st.lists(st.integers(0, 10**6), max_size=6),
)
def test_known_command_with_garbage_arguments(
    code: CommandCode, arguments: bytes, cuts: list[int]
) -> None:
    """Get past the magic and command checks so that every argument parser sees garbage."""
    stream = (0xB1FF0000 | code).to_bytes(4, "little") + arguments
    for limits in (SMALL, Limits()):
        decoder = RequestDecoder(limits, expect_prologue=False)
        _drive_garbage(decoder, _split(stream, cuts), limits)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=200))
def test_sequence_blob_garbage_gets_unknown_failure(blob: bytes) -> None:
    """A garbage SEQUENCE blob is a valid sequence or rc 0xFF "unknown failure" (protocol §8.4)."""
    stream = (0xB1FF0010).to_bytes(4, "little") + len(blob).to_bytes(4, "little") + blob
    decoder = RequestDecoder(expect_prologue=False)
    decoder.feed(stream)
    try:
        event = decoder.next_event()
    except RemoteProtocolError as exc:
        assert exc.response == encode_error(0xFF, b"unknown failure")
    else:
        assert isinstance(event, Sequence)
