# spec: docs/spec/arakoon-client-protocol.md
"""Every byte vector of the protocol spec, checked in both directions.

Each "hex:" line of ``arakoon-client-protocol.md`` (copied into ``testdata/spec_hex_lines.txt``)
is listed below with the value that must produce it: requests are encoded by the client side and
decoded by the server side, responses encoded by the server side and decoded by the client side.
``test_every_spec_hex_line_is_covered`` fails if a hex line of the spec has no case here.
The §2 primitive examples, the §9 update examples and Appendix A are checked too.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from parakoon_client.codec import (
    CONSISTENT,
    NEED_DATA,
    NO_GUARANTEES,
    NO_MAGIC_RESPONSE,
    TOO_MANY_CLIENTS_RESPONSE,
    AnyRequest,
    Assert,
    AssertExists,
    AtLeast,
    Collapse,
    CommandCode,
    Confirm,
    CopyDbToHead,
    CurrentState,
    DefragDb,
    Delete,
    DeletePrefix,
    DropMaster,
    ErrorCode,
    ErrorResponse,
    Exists,
    ExpectProgressPossible,
    FlushStore,
    Get,
    GetDb,
    GetKeyCount,
    GetTxid,
    MultiGet,
    MultiGetOption,
    NamedFloat,
    NamedInt,
    NamedInt64,
    NamedList,
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
    RevRangeEntries,
    Sequence,
    Set,
    Statistics,
    StatisticsReport,
    TestAndSet,
    Timing,
    UAssert,
    UAssertExists,
    UAssertRange,
    UDelete,
    UDeletePrefix,
    UNop,
    Unsupported,
    UReplace,
    USequence,
    UserFunction,
    UserHook,
    USet,
    UTestAndSet,
    UUserFunction,
    Version,
    VersionInfo,
    WhoMaster,
    decode_named_value,
    decode_response,
    decode_update,
    encode_error,
    encode_named_value,
    encode_prologue,
    encode_request,
    encode_response,
    encode_update,
    keeps_connection_open,
)
from parakoon_client.codec._wire import (
    enc_bool,
    enc_consistency,
    enc_option,
    enc_string,
    pack_f64,
    pack_i32,
    pack_i64,
    read_consistency,
)

TESTDATA = Path(__file__).parent / "testdata"

# ---------------------------------------------------------------------------------------------
# The cases. Requests: (request, hex). Responses: (request, result, hex), where ``result`` is
# the natural-order value or an ErrorResponse.

REQUESTS: list[tuple[AnyRequest, str]] = [
    (
        Ping(client_id="pyclient", cluster_id="arakoon"),
        "0100ffb1080000007079636c69656e74070000006172616b6f6f6e",
    ),
    (WhoMaster(), "0200ffb1"),
    (Version(), "2800ffb1"),
    (CurrentState(), "3200ffb1"),
    (ExpectProgressPossible(), "1200ffb1"),
    (Statistics(), "1300ffb1"),
    (GetTxid(), "4300ffb1"),
    (Nop(), "4100ffb1"),
    (FlushStore(), "4200ffb1"),
    (Exists(key=b"foo", consistency=CONSISTENT), "0700ffb10003000000666f6f"),
    (Get(key=b"foo", consistency=CONSISTENT), "0800ffb10003000000666f6f"),
    (Get(key=b"foo", consistency=NO_GUARANTEES), "0800ffb10103000000666f6f"),
    (Get(key=b"foo", consistency=AtLeast(stamp=5)), "0800ffb102050000000000000003000000666f6f"),
    (
        Assert(key=b"foo", expected=b"bar", consistency=CONSISTENT),
        "1600ffb10003000000666f6f0103000000626172",
    ),
    (AssertExists(key=b"foo", consistency=CONSISTENT), "2900ffb10003000000666f6f"),
    (MultiGet(keys=(b"a", b"b")), "1100ffb1000200000001000000610100000062"),
    (MultiGetOption(keys=(b"a", b"zz")), "3100ffb100020000000100000061020000007a7a"),
    (
        Range(first=b"a", first_inclusive=True, last=b"z", last_inclusive=False, max_keys=-1),
        "0b00ffb1000101000000610101010000007a00ffffffff",
    ),
    (
        RangeEntries(first=None, first_inclusive=True, last=None, last_inclusive=True),
        "0f00ffb10000010001ffffffff",
    ),
    (
        RevRangeEntries(
            first=None, first_inclusive=True, last=None, last_inclusive=True, max_keys=2
        ),
        "2300ffb1000001000102000000",
    ),
    (PrefixKeys(prefix=b"ke", max_keys=-1), "0c00ffb100020000006b65ffffffff"),
    (GetKeyCount(), "1a00ffb1"),
    (Set(key=b"foo", value=b"bar"), "0900ffb103000000666f6f03000000626172"),
    (Confirm(key=b"foo", value=b"bar"), "1c00ffb103000000666f6f03000000626172"),
    (Delete(key=b"foo"), "0a00ffb103000000666f6f"),
    (DeletePrefix(prefix=b"ke"), "2700ffb1020000006b65"),
    (
        TestAndSet(key=b"foo", expected=None, wanted=b"bar"),
        "0d00ffb103000000666f6f000103000000626172",
    ),
    (Replace(key=b"foo", wanted=b"baz"), "3300ffb103000000666f6f010300000062617a"),
    (
        UserFunction(name="reverse", argument=b"echo"),
        "1500ffb1070000007265766572736501040000006563686f",
    ),
    (
        Sequence(updates=(USet(key=b"k", value=b"v"), UDelete(key=b"old"))),
        "1000ffb121000000050000000200000001000000010000006b010000007602000000030000006f6c64",
    ),
    (
        Sequence(updates=(USet(key=b"k", value=b"v"), UDelete(key=b"old")), synced=True),
        "2400ffb121000000050000000200000001000000010000006b010000007602000000030000006f6c64",
    ),
    (UserHook(name="t3k", consistency=CONSISTENT), "4500ffb1000300000074336b"),
    (Unsupported(code=CommandCode.GET_NURSERY_CFG), "2000ffb1"),
    (DropMaster(), "3000ffb1"),
    (OptimizeDb(), "2500ffb1"),
    (DefragDb(), "2600ffb1"),
    (CopyDbToHead(tlogs_to_keep=2), "4400ffb102000000"),
    (Collapse(tlogs_to_keep=1), "1400ffb101000000"),
    (GetDb(), "1b00ffb1"),
]

VERSION_INFO = (
    'revision: "tags/1.8.6-0-g0000000"\ncompiled: "06/07/2015 13:08:39 UTC"\nmachine: "x86_64"\n'
)


def _err(code: int, message: bytes) -> ErrorResponse:
    return ErrorResponse(code=code, message=message)


RESPONSES: list[tuple[AnyRequest, Any, str]] = [
    (
        Ping(client_id="pyclient", cluster_id="arakoon"),
        "Arakoon 1.8.6",
        "000000000d0000004172616b6f6f6e20312e382e36",
    ),
    (WhoMaster(), "node_0", "0000000001060000006e6f64655f30"),
    (WhoMaster(), None, "0000000000"),
    (
        Version(),
        VersionInfo(major=1, minor=8, patch=6, info=VERSION_INFO),
        "00000000010000000800000006000000580000007265766973696f6e3a2022746167732f312e382e362d302d"
        "6730303030303030220a636f6d70696c65643a202230362f30372f323031352031333a30383a33392055544322"
        "0a6d616368696e653a20227838365f3634220a",
    ),
    (CurrentState(), "Stable_master", "000000000d000000537461626c655f6d6173746572"),
    (ExpectProgressPossible(), True, "0000000001"),
    (GetTxid(), AtLeast(stamp=42), "00000000022a00000000000000"),
    (Nop(), None, "00000000"),
    (FlushStore(), None, "00000000"),
    (Exists(key=b"foo"), True, "0000000001"),
    (Get(key=b"foo"), b"bar", "0000000003000000626172"),
    (
        Get(key=b"foo"),
        _err(ErrorCode.NOT_FOUND, b"Not_found"),
        "05000000090000004e6f745f666f756e64",
    ),
    (
        Get(key=b"foo", consistency=AtLeast(stamp=5)),
        _err(ErrorCode.INCONSISTENT_READ, b"store not fresh enough"),
        "800000001600000073746f7265206e6f7420667265736820656e6f756768",
    ),
    (Assert(key=b"foo", expected=b"bar"), None, "00000000"),
    (
        Assert(key=b"foo", expected=b"bar"),
        _err(ErrorCode.ASSERTION_FAILED, b"foo"),
        "0700000003000000666f6f",
    ),
    (AssertExists(key=b"foo"), None, "00000000"),
    (
        AssertExists(key=b"foo"),
        _err(ErrorCode.ASSERTION_FAILED, b"foo"),
        "0700000003000000666f6f",
    ),
    # MULTI_GET: values come back in the reverse of the wire order of the keys (§2.1).
    (MultiGet(keys=(b"a", b"b")), [b"1", b"2"], "000000000200000001000000320100000031"),
    (MultiGet(keys=(b"a", b"b")), _err(ErrorCode.NOT_FOUND, b"b"), "050000000100000062"),
    (MultiGetOption(keys=(b"a", b"zz")), [b"1", None], "000000000200000001010000003100"),
    (
        Range(first=b"a", last=b"z", last_inclusive=False),
        [b"a", b"b", b"c"],
        "0000000003000000010000006301000000620100000061",
    ),
    (
        RangeEntries(),
        [(b"a", b"1"), (b"b", b"2")],
        "00000000020000000100000062010000003201000000610100000031",
    ),
    (
        RevRangeEntries(max_keys=2),
        [(b"c", b"3"), (b"b", b"2")],
        "00000000020000000100000062010000003201000000630100000033",
    ),
    (
        PrefixKeys(prefix=b"ke"),
        [b"key1", b"key2"],
        "0000000002000000040000006b657932040000006b657931",
    ),
    (GetKeyCount(), 3, "000000000300000000000000"),
    (
        Set(key=b"foo", value=b"bar"),
        _err(ErrorCode.NOT_MASTER, b"node_0"),
        "04000000060000006e6f64655f30",
    ),
    (
        Set(key=b"foo", value=b"bar"),
        _err(ErrorCode.NOT_MASTER, b"None"),
        "04000000040000004e6f6e65",
    ),
    (Set(key=b"foo", value=b"bar"), None, "00000000"),
    (Confirm(key=b"foo", value=b"bar"), None, "00000000"),
    (Delete(key=b"foo"), None, "00000000"),
    (Delete(key=b"foo"), _err(ErrorCode.NOT_FOUND, b"foo"), "0500000003000000666f6f"),
    (DeletePrefix(prefix=b"ke"), 2, "0000000002000000"),
    (TestAndSet(key=b"foo", expected=None, wanted=b"bar"), None, "0000000000"),
    (
        TestAndSet(key=b"foo", expected=None, wanted=b"bar"),
        b"old",
        "0000000001030000006f6c64",
    ),
    (Replace(key=b"foo", wanted=b"baz"), b"bar", "000000000103000000626172"),
    (UserFunction(name="reverse", argument=b"echo"), b"ohce", "0000000001040000006f686365"),
    (
        UserFunction(name="nosuch", argument=None),
        _err(ErrorCode.BAD_INPUT, b'User function "nosuch" could not be found'),
        "2600000029000000557365722066756e6374696f6e20226e6f737563682220636f756c64206e6f7420626520"
        "666f756e64",
    ),
    (Sequence(updates=()), None, "00000000"),
    (Sequence(updates=()), _err(ErrorCode.NOT_FOUND, b"old"), "05000000030000006f6c64"),
    (Sequence(updates=(), synced=True), None, "00000000"),
    (
        UserHook(name="t3k"),
        _err(ErrorCode.USERHOOK_NOT_FOUND, b"t3k"),
        "820000000300000074336b",
    ),
    (DropMaster(), None, "00000000"),
    (
        DropMaster(),
        _err(ErrorCode.NOT_SUPPORTED, b"drop master not supported for singletons"),
        "200000002800000064726f70206d6173746572206e6f7420737570706f7274656420666f722073696e676c65"
        "746f6e73",
    ),
    (OptimizeDb(), None, "00000000"),
    (
        OptimizeDb(),
        _err(ErrorCode.NOT_SUPPORTED, b"Operation cannot be performed on master node"),
        "200000002c0000004f7065726174696f6e2063616e6e6f7420626520706572666f726d6564206f6e206d6173"
        "746572206e6f6465",
    ),
    (DefragDb(), None, "00000000"),
    (CopyDbToHead(tlogs_to_keep=2), None, "00000000"),
    (
        Collapse(tlogs_to_keep=1),
        (1234, 5678),
        "000000000200000000000000d204000000000000000000002e16000000000000",
    ),
    (GetDb(), b"ABCDE", "0000000005000000000000004142434445"),
]

# The vectors whose bytes are not a request/response pair of the tables above.
SERVER_SPEAKS_FIRST = "fe00000010000000746f6f206d616e7920636c69656e7473"
NO_MAGIC_REQUEST = "09000000"
NO_MAGIC_ANSWER = "01000000"
UNKNOWN_COMMAND_REQUEST = "9900ffb1"
UNKNOWN_COMMAND_ANSWER = "050000001500000039393a20636f6d6d616e64206e6f7420666f756e64"
PROLOGUE = "0000ffb101000000070000006172616b6f6f6e"
CONSISTENCY_VECTORS = [
    (CONSISTENT, "00"),
    (NO_GUARANTEES, "01"),
    (AtLeast(stamp=5), "020500000000000000"),
]
SET_INFO_ENTRY = (
    "05000000080000007365745f696e666f0600000001000000010000006e0000000003000000030000006d696eff"
    "ffffffffffef7f03000000030000006d6178000000000000000003000000020000006d3200000000000000000300"
    "000003000000617667000000000000000003000000030000007661720000000000000000"
)
NODE_IS_ENTRY = "05000000070000006e6f64655f69730100000002000000060000006e6f64655f302900000000000000"


def _covered_hex() -> set[str]:
    covered = {h for _, h in REQUESTS} | {h for _, _, h in RESPONSES}
    covered |= {h for _, h in CONSISTENCY_VECTORS}
    covered |= {
        SERVER_SPEAKS_FIRST,
        NO_MAGIC_REQUEST,
        NO_MAGIC_ANSWER,
        UNKNOWN_COMMAND_REQUEST,
        UNKNOWN_COMMAND_ANSWER,
        PROLOGUE,
        SET_INFO_ENTRY,
        NODE_IS_ENTRY,
    }
    return covered


def _spec_hex_lines() -> list[tuple[int, str]]:
    lines = []
    for raw in (TESTDATA / "spec_hex_lines.txt").read_text().splitlines():
        if raw.startswith("#") or not raw.strip():
            continue
        number, hex_bytes = raw.split()
        lines.append((int(number), hex_bytes))
    return lines


def test_every_spec_hex_line_is_covered() -> None:
    spec = _spec_hex_lines()
    assert len(spec) == 100
    covered = _covered_hex()
    missing = [f"spec line {n}: {h}" for n, h in spec if h not in covered]
    assert not missing, "\n".join(missing)


# ---------------------------------------------------------------------------------------------
# Requests: client encodes, server decodes (whole, and one byte at a time).


def _decode_requests(data: bytes, *, byte_by_byte: bool) -> list[object]:
    decoder = RequestDecoder(expect_prologue=False)
    events: list[object] = []
    chunks = [data[i : i + 1] for i in range(len(data))] if byte_by_byte else [data]
    for chunk in chunks:
        decoder.feed(chunk)
        while (event := decoder.next_event()) is not NEED_DATA:
            events.append(event)
    assert decoder.buffered_bytes == 0
    return events


@pytest.mark.parametrize(("request_", "hex_bytes"), REQUESTS, ids=lambda v: type(v).__name__)
def test_request_vector(request_: AnyRequest, hex_bytes: str) -> None:
    data = bytes.fromhex(hex_bytes)
    assert encode_request(request_) == data
    assert _decode_requests(data, byte_by_byte=False) == [request_]
    assert _decode_requests(data, byte_by_byte=True) == [request_]


def _same(a: object, b: object) -> bool:
    """Equality that treats NaN as equal to itself (statistics may hold NaN)."""
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    return a == b


@pytest.mark.parametrize(
    ("request_", "result", "hex_bytes"), RESPONSES, ids=lambda v: type(v).__name__
)
def test_response_vector(request_: AnyRequest, result: Any, hex_bytes: str) -> None:
    data = bytes.fromhex(hex_bytes)
    if isinstance(result, ErrorResponse):
        assert encode_error(result.code, result.message) == data
    else:
        assert encode_response(request_, result) == data
    any_request: Request[Any] = request_
    assert decode_response(any_request, data) == (result, len(data))
    # A response cut anywhere before its end is incomplete, never an error.
    for cut in range(len(data)):
        assert decode_response(any_request, data[:cut]) is NEED_DATA


def test_prologue_vector() -> None:
    data = bytes.fromhex(PROLOGUE)
    assert encode_prologue("arakoon") == data
    decoder = RequestDecoder()
    decoder.feed(data + bytes.fromhex("0200ffb1"))
    assert decoder.next_event() == Prologue(cluster_id="arakoon")
    assert decoder.next_event() == WhoMaster()
    assert decoder.next_event() is NEED_DATA


def test_too_many_clients_vector() -> None:
    assert bytes.fromhex(SERVER_SPEAKS_FIRST) == TOO_MANY_CLIENTS_RESPONSE
    assert encode_error(ErrorCode.MAX_CONNECTIONS, "too many clients") == TOO_MANY_CLIENTS_RESPONSE
    assert decode_response(WhoMaster(), TOO_MANY_CLIENTS_RESPONSE) == (
        ErrorResponse(code=ErrorCode.MAX_CONNECTIONS, message=b"too many clients"),
        len(TOO_MANY_CLIENTS_RESPONSE),
    )
    assert not keeps_connection_open(ErrorCode.MAX_CONNECTIONS)


def test_no_magic_vector() -> None:
    decoder = RequestDecoder(expect_prologue=False)
    decoder.feed(bytes.fromhex(NO_MAGIC_REQUEST))
    with pytest.raises(RemoteProtocolError) as info:
        decoder.next_event()
    assert info.value.response == bytes.fromhex(NO_MAGIC_ANSWER) == NO_MAGIC_RESPONSE
    assert encode_error(ErrorCode.NO_MAGIC) == NO_MAGIC_RESPONSE
    # The client side reads rc 1 without a message string.
    assert decode_response(Get(key=b"k"), NO_MAGIC_RESPONSE) == (
        ErrorResponse(code=ErrorCode.NO_MAGIC, message=b""),
        4,
    )


def test_unknown_command_vector() -> None:
    decoder = RequestDecoder(expect_prologue=False)
    decoder.feed(bytes.fromhex(UNKNOWN_COMMAND_REQUEST))
    with pytest.raises(RemoteProtocolError) as info:
        decoder.next_event()
    assert info.value.response == bytes.fromhex(UNKNOWN_COMMAND_ANSWER)


@pytest.mark.parametrize(("consistency", "hex_bytes"), CONSISTENCY_VECTORS)
def test_consistency_vector(consistency: Any, hex_bytes: str) -> None:
    data = bytes.fromhex(hex_bytes)
    assert enc_consistency(consistency) == data
    assert read_consistency(data, 0) == (consistency, len(data))


# ---------------------------------------------------------------------------------------------
# §2 primitive examples


def test_primitive_examples() -> None:
    assert pack_i32(1).hex(" ") == "01 00 00 00"
    assert pack_i32(-1).hex(" ") == "ff ff ff ff"
    assert pack_i32(0x12345678).hex(" ") == "78 56 34 12"
    assert pack_i64(42).hex(" ") == "2a 00 00 00 00 00 00 00"
    assert pack_i64(-1).hex(" ") == "ff ff ff ff ff ff ff ff"
    assert enc_bool(True).hex() == "01"
    assert enc_bool(False).hex() == "00"
    assert pack_f64(1.5).hex(" ") == "00 00 00 00 00 00 f8 3f"
    assert enc_string(b"foo").hex(" ") == "03 00 00 00 66 6f 6f"
    assert enc_string(b"").hex(" ") == "00 00 00 00"
    assert enc_option(None).hex(" ") == "00"
    assert enc_option(b"foo").hex(" ") == "01 03 00 00 00 66 6f 6f"
    assert enc_option(b"").hex(" ") == "01 00 00 00 00"


# ---------------------------------------------------------------------------------------------
# §9 update examples

UPDATE_EXAMPLES = [
    (USet(key=b"k", value=b"v"), "01 00 00 00 01 00 00 00 6b 01 00 00 00 76"),
    (UDelete(key=b"k"), "02 00 00 00 01 00 00 00 6b"),
    (
        UTestAndSet(key=b"k", expected=None, wanted=b"v"),
        "03 00 00 00 01 00 00 00 6b 00 01 01 00 00 00 76",
    ),
    (USequence(updates=()), "05 00 00 00 00 00 00 00"),
    (UNop(), "06 00 00 00"),
    (UUserFunction(name="f", argument=b"x"), "07 00 00 00 01 00 00 00 66 01 01 00 00 00 78"),
    (UAssert(key=b"k", expected=b"v"), "08 00 00 00 01 00 00 00 6b 01 01 00 00 00 76"),
    (UAssert(key=b"k", expected=None), "08 00 00 00 01 00 00 00 6b 00"),
    (UDeletePrefix(prefix=b"p"), "0e 00 00 00 01 00 00 00 70"),
    (UAssertExists(key=b"k"), "0f 00 00 00 01 00 00 00 6b"),
    (UReplace(key=b"k", wanted=b"v"), "10 00 00 00 01 00 00 00 6b 01 01 00 00 00 76"),
    (UReplace(key=b"k", wanted=None), "10 00 00 00 01 00 00 00 6b 00"),
    (
        UAssertRange(prefix=b"p", keys=(b"p1", b"p2")),
        "11 00 00 00 01 00 00 00 70 01 00 00 00 02 00 00 00 02 00 00 00 70 32 02 00 00 00 70 31",
    ),
]


@pytest.mark.parametrize(("update", "spaced_hex"), UPDATE_EXAMPLES, ids=lambda v: type(v).__name__)
def test_update_example(update: Any, spaced_hex: str) -> None:
    data = bytes.fromhex(spaced_hex.replace(" ", ""))
    assert encode_update(update) == data
    assert decode_update(data) == update


# ---------------------------------------------------------------------------------------------
# §10 statistics and Appendix A

APPENDIX_REPORT = StatisticsReport(
    start=1436190519.0,
    last=1436190519.0,
    mem_allocated=1024.5,
    mem_maxrss=20480,
    mem_minor_collections=10,
    mem_major_collections=2,
    mem_compactions=0,
    node_is=(("node_0", 41),),
)


def test_statistics_entries() -> None:
    assert encode_named_value(Timing().to_tree("set_info")).hex() == SET_INFO_ENTRY
    node_is = NamedList(name="node_is", items=(NamedInt64(name="node_0", value=41),))
    assert encode_named_value(node_is).hex() == NODE_IS_ENTRY
    assert decode_named_value(bytes.fromhex(NODE_IS_ENTRY)) == node_is


def test_statistics_appendix_a() -> None:
    data = bytes.fromhex((TESTDATA / "statistics_appendix_a.hex").read_text().replace("\n", ""))
    assert len(data) == 2452
    assert encode_response(Statistics(), APPENDIX_REPORT) == data
    tree = APPENDIX_REPORT.to_tree()
    assert encode_response(Statistics(), tree) == data
    decoded = decode_response(Statistics(), data)
    assert decoded == (tree, len(data))
    assert StatisticsReport.from_tree(tree) == APPENDIX_REPORT
    assert [item.name for item in tree.items][:3] == ["start", "last", "avg_set_size"]
    assert len(tree.items) == 30
    assert tree.get("mem_maxrss") == NamedInt(name="mem_maxrss", value=20480)
    assert tree.get("mem_allocated") == NamedFloat(name="mem_allocated", value=1024.5)


def test_timing_running_variance() -> None:
    t = Timing().with_sample(2.0)
    assert (t.n, t.min, t.max, t.avg) == (1, 2.0, 2.0, 2.0)
    assert math.isnan(t.var)
    t = t.with_sample(4.0).with_sample(6.0)
    assert (t.n, t.min, t.max, t.avg, t.m2, t.var) == (3, 2.0, 6.0, 4.0, 8.0, 4.0)


# ---------------------------------------------------------------------------------------------
# §12: requests of out-of-scope commands are recognised (not "command not found").

OUT_OF_SCOPE = [
    ("0e00ffb16400000000000000", CommandCode.LAST_ENTRIES),
    ("4000ffb16400000000000000", CommandCode.LAST_ENTRIES2),
    ("1700ffb100000000", CommandCode.SET_INTERVAL),
    ("1e00ffb1", CommandCode.GET_INTERVAL),
    ("1800ffb1", CommandCode.GET_ROUTING),
    ("1d00ffb10000000000", CommandCode.GET_FRINGE),
    ("2100ffb1010000006c010000006d0100000072", CommandCode.SET_ROUTING_DELTA),
]


@pytest.mark.parametrize(("hex_bytes", "code"), OUT_OF_SCOPE)
def test_out_of_scope_command_is_recognised(hex_bytes: str, code: CommandCode) -> None:
    decoder = RequestDecoder(expect_prologue=False)
    decoder.feed(bytes.fromhex(hex_bytes))
    event = decoder.next_event()
    assert event == Unsupported(code=code)
    assert isinstance(event, Unsupported)
    assert event.has_arguments == (len(hex_bytes) > 8)


def test_get_interval_answer_is_the_all_none_interval() -> None:
    request = Unsupported(code=CommandCode.GET_INTERVAL)
    data = encode_response(request, None)
    assert data == bytes(8)
    assert decode_response(request, data) == (None, 8)


def test_connection_rules_of_section_4_2() -> None:
    open_after = {code for code in ErrorCode if keeps_connection_open(code)}
    assert open_after == {
        ErrorCode.OK,
        ErrorCode.NOT_FOUND,
        ErrorCode.ASSERTION_FAILED,
        ErrorCode.NO_LONGER_MASTER,
        ErrorCode.BAD_INPUT,
        ErrorCode.INCONSISTENT_READ,
    }
    assert not keeps_connection_open(0x42)  # unknown codes close
