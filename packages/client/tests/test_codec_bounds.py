# spec: docs/spec/arakoon-client-protocol.md
"""Targeted tests of the decoders' bounds and of the errors each side raises.

The server-side decoder refuses declared lengths and counts above its limits as soon as their
four bytes arrive, before it waits for (or allocates) what they announce; its errors carry the
exact bytes the reference server writes before closing, or None for a silent close.
"""

from __future__ import annotations

from typing import Any

import pytest

from parakoon_client.codec import (
    NEED_DATA,
    UNKNOWN_FAILURE_RESPONSE,
    AtLeast,
    Collapse,
    DecoderState,
    ErrorCode,
    ErrorResponse,
    Get,
    Limits,
    LocalProtocolError,
    MultiGet,
    MultiGetOption,
    Prologue,
    Range,
    RangeEntries,
    RemoteProtocolError,
    Replace,
    Request,
    RequestDecoder,
    ResponseDecoder,
    Sequence,
    Set,
    TestAndSet,
    UMasterSet,
    Unsupported,
    USequence,
    USet,
    decode_response,
    decode_update,
    encode_prologue,
    encode_request,
    encode_response,
    encode_update,
    first_internal_update,
)


def _decoder(*, prologue: bool = False, limits: Limits | None = None) -> RequestDecoder:
    return RequestDecoder(limits or Limits(), expect_prologue=prologue)


def _fail(decoder: RequestDecoder, data: bytes) -> RemoteProtocolError:
    decoder.feed(data)
    with pytest.raises(RemoteProtocolError) as info:
        while decoder.next_event() is not NEED_DATA:
            pass
    assert decoder.state is DecoderState.DEAD
    return info.value


def test_huge_declared_length_is_refused_before_allocating() -> None:
    decoder = _decoder()
    # GET, consistency, key length 0x7fffffff: refused at once, nothing waited for.
    error = _fail(decoder, bytes.fromhex("0800ffb100ffffff7f"))
    assert "over the limit" in error.reason
    assert "Get.key" in error.reason
    assert error.response is None
    assert decoder.buffered_bytes < 16


def test_negative_length_closes_silently() -> None:
    error = _fail(_decoder(), bytes.fromhex("0a00ffb1feffffff"))
    assert "negative" in error.reason
    assert error.response is None


def test_bad_bool_and_bad_consistency_close_silently() -> None:
    bad_bool = bytes.fromhex("0b00ffb10000020001ffffffff")
    assert _fail(_decoder(), bad_bool).response is None
    bad_consistency = bytes.fromhex("0800ffb10303000000666f6f")
    error = _fail(_decoder(), bad_consistency)
    assert "consistency tag 0x03" in error.reason
    assert error.response is None
    bad_option = bytes.fromhex("3300ffb103000000666f6f07")
    assert _fail(_decoder(), bad_option).response is None


def test_list_count_over_limit() -> None:
    limits = Limits(max_list_items=3)
    request = encode_request(MultiGet(keys=(b"a", b"b", b"c", b"d")))
    error = _fail(_decoder(limits=limits), request)
    assert "count 4" in error.reason
    negative = bytes.fromhex("1100ffb100ffffffff")
    assert "negative count" in _fail(_decoder(), negative).reason


@pytest.mark.parametrize(
    "request_",
    [
        Set(key=b"k", value=b"x" * 100),
        TestAndSet(key=b"k", expected=None, wanted=b"x" * 100),
        Replace(key=b"k", wanted=b"x" * 100),
    ],
    ids=lambda r: type(r).__name__,
)
def test_value_at_the_size_limit_gets_unknown_failure(request_: Set) -> None:
    """§11 rule 20: length >= max value size is refused with rc 0xFF, before the value arrives."""
    limits = Limits(max_value_bytes=100)
    data = encode_request(request_)
    decoder = _decoder(limits=limits)
    error = _fail(decoder, data[: len(data) - 100])  # the value's bytes never come
    assert error.response == UNKNOWN_FAILURE_RESPONSE
    # One byte less is fine.
    smaller = Limits(max_value_bytes=101)
    decoder = _decoder(limits=smaller)
    decoder.feed(data)
    assert decoder.next_event() == request_


def test_value_limit_does_not_apply_inside_sequences() -> None:
    limits = Limits(max_value_bytes=10)
    request = Sequence(updates=(USet(key=b"k", value=b"x" * 50),))
    decoder = _decoder(limits=limits)
    decoder.feed(encode_request(request))
    assert decoder.next_event() == request


def test_request_size_bound() -> None:
    limits = Limits(max_request_bytes=1000, max_string_bytes=800)
    keys = tuple(b"k" * 700 for _ in range(3))
    decoder = _decoder(limits=limits)
    data = encode_request(MultiGet(keys=keys))
    decoder.feed(data[:1200])
    with pytest.raises(RemoteProtocolError, match="needs more than 1000 bytes"):
        decoder.next_event()


def test_malformed_sequence_blobs_get_unknown_failure() -> None:
    def sequence_with_blob(blob: bytes) -> bytes:
        return bytes.fromhex("1000ffb1") + len(blob).to_bytes(4, "little") + blob

    not_a_sequence = encode_update(USet(key=b"k", value=b"v"))
    synced_top = encode_update(USequence(updates=(), synced=True))
    unknown_tag = bytes.fromhex("050000000100000063000000")
    truncated = encode_update(USequence(updates=(USet(key=b"k", value=b"v"),)))[:-1]
    for blob in (not_a_sequence, synced_top, unknown_tag, truncated, b""):
        error = _fail(_decoder(), sequence_with_blob(blob))
        assert error.response == UNKNOWN_FAILURE_RESPONSE, blob.hex()
    # Trailing bytes inside the blob are ignored (§8.4).
    decoder = _decoder()
    decoder.feed(sequence_with_blob(encode_update(USequence(updates=())) + b"junk"))
    assert decoder.next_event() == Sequence(updates=())


def test_nesting_depth_is_bounded() -> None:
    update: USequence = USequence(updates=())
    for _ in range(40):
        update = USequence(updates=(update,))
    data = encode_update(update)
    with pytest.raises(RemoteProtocolError, match="nested deeper"):
        decode_update(data, limits=Limits(max_update_depth=32))
    assert decode_update(data, limits=Limits(max_update_depth=64)) == update


def test_internal_updates_decode_and_are_flagged() -> None:
    inner = UMasterSet(master="node_0", lease=0)
    request = Sequence(updates=(USet(key=b"a", value=b"b"), USequence(updates=(inner,))))
    decoder = _decoder()
    decoder.feed(encode_request(request))
    event = decoder.next_event()
    assert event == request
    assert isinstance(event, Sequence)
    assert first_internal_update(USequence(updates=event.updates)) == inner
    assert first_internal_update(USequence(updates=(USet(key=b"a", value=b"b"),))) is None


def test_bad_prologues_close_silently() -> None:
    assert _fail(_decoder(prologue=True), bytes.fromhex("0100ffb1")).response is None
    wrong_version = bytes.fromhex("0000ffb102000000")
    assert "version 2" in _fail(_decoder(prologue=True), wrong_version).reason
    decoder = _decoder(prologue=True)
    decoder.feed(encode_prologue("x"))
    assert decoder.next_event() == Prologue(cluster_id="x")


def test_magic_check_is_an_and_mask() -> None:
    """§3.2: the word is ANDed with 0xB1FF0000; extra high bits pass, the code is the low 16."""
    decoder = _decoder()
    decoder.feed(bytes.fromhex("0800fff10003000000666f6f"))
    assert decoder.next_event() == Get(key=b"foo")


def test_misuse_raises_local_protocol_error() -> None:
    with pytest.raises(LocalProtocolError, match="int32"):
        encode_request(Range(max_keys=2**31))
    with pytest.raises(LocalProtocolError, match="int64"):
        encode_request(Get(key=b"k", consistency=AtLeast(stamp=2**63)))
    with pytest.raises(LocalProtocolError, match="cannot encode Set"):
        encode_request(Set(key="text", value=b"v"))  # type: ignore[arg-type]
    with pytest.raises(LocalProtocolError, match="cannot encode USet"):
        encode_update(USet(key=b"k", value=None))  # type: ignore[arg-type]
    with pytest.raises(LocalProtocolError, match="cannot be the answer"):
        encode_response(Get(key=b"k"), 42)
    decoder = _decoder()
    _fail(decoder, b"\x00\x00\x00\x00")
    with pytest.raises(LocalProtocolError):
        decoder.next_event()
    with pytest.raises(LocalProtocolError):
        decoder.feed(b"more")
    response: ResponseDecoder[bytes] = ResponseDecoder(Get(key=b"k"))
    response.feed(bytes.fromhex("0000000001000000" + "76" + "ff"))
    assert response.next_event() == b"v"
    assert response.trailing_data == b"\xff"
    with pytest.raises(LocalProtocolError):
        response.next_event()
    with pytest.raises(LocalProtocolError):
        response.feed(b"x")


def test_response_decoder_bounds() -> None:
    limits = Limits(max_string_bytes=10)
    response: ResponseDecoder[bytes] = ResponseDecoder(Get(key=b"k"), limits=limits)
    response.feed(bytes.fromhex("000000000b000000"))
    with pytest.raises(RemoteProtocolError, match="over the limit"):
        response.next_event()


def test_need_data_waits_for_the_announced_length() -> None:
    """After an incomplete attempt, the decoder does not re-parse until enough bytes are in."""
    data = encode_request(Set(key=b"k", value=b"v" * 1000))
    decoder = _decoder()
    decoder.feed(data[:20])
    assert decoder.next_event() is NEED_DATA
    for i in range(20, len(data) - 1):
        decoder.feed(data[i : i + 1])
        assert decoder.next_event() is NEED_DATA
    decoder.feed(data[-1:])
    assert decoder.next_event() == Set(key=b"k", value=b"v" * 1000)
    assert decoder.buffered_bytes == 0


# ---------------------------------------------------------------------------------------------
# The server decoder's states (PROLOGUE -> REQUESTS -> DEAD) against each kind of input.

GET_FOO = bytes.fromhex("0800ffb10003000000666f6f")
NURSERY_WITH_ARGS = bytes.fromhex("1700ffb100000000")


@pytest.mark.parametrize(
    ("state", "data", "outcome", "after"),
    [
        (DecoderState.PROLOGUE, b"", "need", DecoderState.PROLOGUE),
        (DecoderState.PROLOGUE, encode_prologue("c")[:5], "need", DecoderState.PROLOGUE),
        (DecoderState.PROLOGUE, encode_prologue("c"), Prologue(cluster_id="c"), "REQUESTS"),
        (DecoderState.PROLOGUE, GET_FOO, "remote", DecoderState.DEAD),
        (DecoderState.REQUESTS, b"", "need", DecoderState.REQUESTS),
        (DecoderState.REQUESTS, GET_FOO[:7], "need", DecoderState.REQUESTS),
        (DecoderState.REQUESTS, GET_FOO, Get(key=b"foo"), DecoderState.REQUESTS),
        (DecoderState.REQUESTS, b"\x01\x02\x03\x04", "remote", DecoderState.DEAD),
        (DecoderState.REQUESTS, NURSERY_WITH_ARGS, "unsupported", DecoderState.DEAD),
        (DecoderState.DEAD, GET_FOO, "local", DecoderState.DEAD),
    ],
)
def test_decoder_state_table(
    state: DecoderState, data: bytes, outcome: object, after: DecoderState | str
) -> None:
    decoder = RequestDecoder(expect_prologue=state is DecoderState.PROLOGUE)
    if state is DecoderState.DEAD:
        _fail(decoder, b"\x00\x00\x00\x00")
        with pytest.raises(LocalProtocolError):
            decoder.feed(data)
        with pytest.raises(LocalProtocolError):
            decoder.next_event()
        return
    decoder.feed(data)
    if outcome == "need":
        assert decoder.next_event() is NEED_DATA
    elif outcome == "remote":
        with pytest.raises(RemoteProtocolError):
            decoder.next_event()
    elif outcome == "unsupported":
        event = decoder.next_event()
        assert isinstance(event, Unsupported)
        assert event.has_arguments
    else:
        assert decoder.next_event() == outcome
    expected = DecoderState.REQUESTS if after == "REQUESTS" else after
    assert decoder.state is expected


def test_collapse_stream_with_an_error_record() -> None:
    """§8.7: an error record ends the COLLAPSE_TLOGS stream; the client sees that error."""
    data = bytes.fromhex("000000000200000000000000d204000000000000ff00000003000000626164")
    assert decode_response(Collapse(tlogs_to_keep=1), data) == (
        ErrorResponse(code=ErrorCode.UNKNOWN_FAILURE, message=b"bad"),
        len(data),
    )
    assert decode_response(Collapse(tlogs_to_keep=1), data[:-1]) is NEED_DATA


@pytest.mark.parametrize("chunk", [1, 7, 100, 4096])
def test_long_lists_in_small_chunks(chunk: int) -> None:
    """A long list arriving in many chunks decodes to the same value on both sides (the
    decoders skip over what arrived instead of re-parsing from the start, see ListScan)."""
    keys = tuple(b"key-%05d" % i for i in range(2000 if chunk > 1 else 300))
    request = MultiGet(keys=keys)
    data = encode_request(request)
    decoder = _decoder()
    events = []
    for i in range(0, len(data), chunk):
        decoder.feed(data[i : i + chunk])
        while (event := decoder.next_event()) is not NEED_DATA:
            events.append(event)
    assert events == [request]
    cases: list[tuple[Request[Any], object]] = [
        (Range(), list(keys)),
        (RangeEntries(), [(k, k + b"!") for k in keys]),
        (MultiGetOption(keys=keys), [None if i % 3 else k for i, k in enumerate(keys)]),
    ]
    for kind, result in cases:
        response = encode_response(kind, result)
        client: ResponseDecoder[Any] = ResponseDecoder(kind)
        got: object = NEED_DATA
        for i in range(0, len(response), chunk):
            assert got is NEED_DATA
            client.feed(response[i : i + chunk])
            got = client.next_event()
        assert got == result
