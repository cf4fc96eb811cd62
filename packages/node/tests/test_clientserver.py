# spec: docs/spec/arakoon-client-protocol.md
"""Conformance of the client server over real TCP on 127.0.0.1, with raw bytes.

A ``LocalBackend`` (one node, in memory) sits behind the real ``serve``; the tests speak the
protocol with the spec's byte vectors (``arakoon-client-protocol.md``; § numbers refer to it)
through plain TCP streams, and check what comes back and whether the server closed.
"""

from __future__ import annotations

import os
import random
from collections.abc import AsyncIterator
from typing import Any

import anyio
import anyio.abc
import pytest

from parakoon_client.codec import (
    Limits,
    NamedFloat,
    NamedInt,
    NamedInt64,
    NamedList,
    Set,
    Statistics,
    StatisticsReport,
    USequence,
    USet,
    decode_response,
    encode_prologue,
    encode_request,
    encode_update,
)
from parakoon_node.clientserver import Backend, ClientServer, LocalBackend, serve

pytestmark = pytest.mark.anyio

CLUSTER = "arakoon"
PROLOGUE = encode_prologue(CLUSTER)
WAIT_SECS = 10.0


class Harness:
    """A running server and helpers to talk raw bytes to it."""

    def __init__(self, server: ClientServer, backend: LocalBackend) -> None:
        self.server = server
        self.backend = backend
        assert server.port is not None
        self.port = server.port

    async def connect(self, *, prologue: bool = True) -> anyio.abc.SocketStream:
        stream = await anyio.connect_tcp("127.0.0.1", self.port)
        if prologue:
            await stream.send(PROLOGUE)
        return stream

    async def exchange(self, stream: anyio.abc.SocketStream, request_hex: str, size: int) -> str:
        await stream.send(bytes.fromhex(request_hex))
        return (await read_exactly(stream, size)).hex()

    async def call(self, request_hex: str, response_hex: str) -> None:
        """One request on a fresh connection; the answer must be exactly ``response_hex``."""
        async with await self.connect() as stream:
            got = await self.exchange(stream, request_hex, len(response_hex) // 2)
            assert got == response_hex


async def read_exactly(stream: anyio.abc.SocketStream, size: int) -> bytes:
    data = b""
    with anyio.fail_after(WAIT_SECS):
        while len(data) < size:
            data += await stream.receive(size - len(data))
    return data


async def read_to_eof(stream: anyio.abc.SocketStream) -> bytes:
    """Everything the server sends until it closes (fails if it does not close in time)."""
    data = b""
    with anyio.fail_after(WAIT_SECS):
        while True:
            try:
                data += await stream.receive()
            except (anyio.EndOfStream, anyio.BrokenResourceError):
                return data


async def is_open(stream: anyio.abc.SocketStream) -> bool:
    """Whether the connection still answers: a WHO_MASTER gets its whole answer (node_0)."""
    try:
        await stream.send(bytes.fromhex("0200ffb1"))
        answer = await read_exactly(stream, 15)
    except (anyio.EndOfStream, anyio.BrokenResourceError):
        return False
    return answer.hex() == "0000000001060000006e6f64655f30"


async def start(
    tg: anyio.abc.TaskGroup, *, limits: Limits | None = None, max_connections: int = 64
) -> Harness:
    backend = LocalBackend(cluster_id=CLUSTER, node_name="node_0")
    kwargs: dict[str, Any] = {"max_connections": max_connections, "linger_secs": 0.5}
    if limits is not None:
        kwargs["limits"] = limits
    server = await tg.start(_serve, backend, kwargs)
    return Harness(server, backend)


async def _serve(
    backend: Backend,
    kwargs: dict[str, Any],
    *,
    task_status: anyio.abc.TaskStatus[ClientServer] = anyio.TASK_STATUS_IGNORED,
) -> None:
    await serve(backend, host="127.0.0.1", port=0, task_status=task_status, **kwargs)


@pytest.fixture
async def harness() -> AsyncIterator[Harness]:
    async with anyio.create_task_group() as tg:
        yield await start(tg)
        tg.cancel_scope.cancel()


# ---------------------------------------------------------------------------------------------
# The spec's worked examples, end to end


async def test_single_key_examples(harness: Harness) -> None:
    # §8.4 SET, then §8.2 GET / EXISTS / ASSERT / ASSERTEXISTS on the same connection.
    async with await harness.connect() as s:
        assert await harness.exchange(s, "0900ffb103000000666f6f03000000626172", 4) == "00000000"
        assert await harness.exchange(s, "0800ffb10003000000666f6f", 11) == "0000000003000000626172"
        assert await harness.exchange(s, "0800ffb10103000000666f6f", 11) == "0000000003000000626172"
        assert await harness.exchange(s, "0700ffb10003000000666f6f", 5) == "0000000001"
        assert (
            await harness.exchange(s, "1600ffb10003000000666f6f0103000000626172", 4) == "00000000"
        )
        assert await harness.exchange(s, "2900ffb10003000000666f6f", 4) == "00000000"
        assert await harness.exchange(s, "1c00ffb103000000666f6f03000000626172", 4) == "00000000"
        assert await harness.exchange(s, "0a00ffb103000000666f6f", 4) == "00000000"
        # Missing key now: these errors keep the connection open (§4.2).
        not_found = "05000000090000004e6f745f666f756e64"
        assert await harness.exchange(s, "0800ffb10003000000666f6f", 17) == not_found
        assert await harness.exchange(s, "0a00ffb103000000666f6f", 11) == "0500000003000000666f6f"
        assert await harness.exchange(s, "2900ffb10003000000666f6f", 11) == "0700000003000000666f6f"
        assert (
            await harness.exchange(s, "1600ffb10003000000666f6f0103000000626172", 11)
            == "0700000003000000666f6f"
        )
        assert await harness.exchange(s, "0700ffb10003000000666f6f", 5) == "0000000000"
        assert await is_open(s)


async def test_at_least_read_not_yet_applied(harness: Harness) -> None:
    async with await harness.connect() as s:
        answer = await harness.exchange(s, "0800ffb102050000000000000003000000666f6f", 30)
        assert answer == "800000001600000073746f7265206e6f7420667265736820656e6f756768"
        assert await is_open(s)


async def _fill(harness: Harness, pairs: dict[bytes, bytes]) -> None:
    async with await harness.connect() as s:
        for key, value in pairs.items():
            await s.send(encode_request(Set(key=key, value=value)))
            assert await read_exactly(s, 4) == b"\x00\x00\x00\x00"


async def test_list_orders_on_the_wire(harness: Harness) -> None:
    """§2.1: each list goes out in its own wire order."""
    await _fill(harness, {b"a": b"1", b"b": b"2", b"c": b"3"})
    # RANGE a..z (z excluded): descending on the wire.
    await harness.call(
        "0b00ffb1000101000000610101010000007a00ffffffff",
        "0000000003000000010000006301000000620100000061",
    )
    # REV_RANGE_ENTRIES max 2: result c,b; ascending on the wire.
    await harness.call(
        "2300ffb1000001000102000000",
        "00000000020000000100000062010000003201000000630100000033",
    )
    # MULTI_GET a,b: values in reverse wire order.
    await harness.call(
        "1100ffb1000200000001000000610100000062", "000000000200000001000000320100000031"
    )
    # MULTI_GET_OPTION a,zz: same order, None for the absent key.
    await harness.call("3100ffb100020000000100000061020000007a7a", "000000000200000001010000003100")
    # MULTI_GET with b missing... here "zz" is missing: its name comes back (§8.3).
    await harness.call("1100ffb10002000000010000006102000000" + "7a7a", "05000000020000007a7a")


async def test_range_entries_and_prefix_examples(harness: Harness) -> None:
    await _fill(harness, {b"a": b"1", b"b": b"2"})
    await harness.call(
        "0f00ffb10000010001ffffffff", "00000000020000000100000062010000003201000000610100000031"
    )
    await _fill(harness, {b"key1": b"x", b"key2": b"y"})
    await harness.call(
        "0c00ffb100020000006b65ffffffff",
        "0000000002000000040000006b657932040000006b657931",
    )
    await harness.call("1a00ffb1", "000000000400000000000000")  # GET_KEY_COUNT: 4 keys
    await harness.call("2700ffb1020000006b65", "0000000002000000")  # DELETE_PREFIX "ke": 2
    await harness.call("2700ffb1020000006b65", "0000000000000000")  # nothing left: 0


async def test_test_and_set_replace_and_sequences(harness: Harness) -> None:
    await harness.call("0d00ffb103000000666f6f000103000000626172", "0000000000")
    await harness.call("3300ffb103000000666f6f010300000062617a", "000000000103000000626172")
    await _fill(harness, {b"foo": b"old"})
    await harness.call("0d00ffb103000000666f6f000103000000626172", "0000000001030000006f6c64")
    # SEQUENCE [Set k v, Delete old]: "old" is absent, so the whole sequence rolls back.
    sequence = "21000000050000000200000001000000010000006b010000007602000000030000006f6c64"
    await harness.call("1000ffb1" + sequence, "05000000030000006f6c64")
    await harness.call("0800ffb100010000006b", "05000000090000004e6f745f666f756e64")
    await _fill(harness, {b"old": b"x"})
    await harness.call("2400ffb1" + sequence, "00000000")
    await harness.call("0800ffb100010000006b", "000000000100000076")
    await harness.call("4100ffb1", "00000000")  # NOP


async def test_information_commands(harness: Harness) -> None:
    await harness.call("0200ffb1", "0000000001060000006e6f64655f30")  # WHO_MASTER: node_0
    await harness.call(
        "0100ffb1080000007079636c69656e74070000006172616b6f6f6e",
        "000000000d0000004172616b6f6f6e20312e382e36",
    )  # PING: "Arakoon 1.8.6"
    await harness.call("3200ffb1", "000000000d000000537461626c655f6d6173746572")
    await harness.call("1200ffb1", "0000000001")
    await harness.call("4300ffb1", "00000000020000000000000000")  # GET_TXID: nothing applied
    await _fill(harness, {b"k": b"v"})
    await harness.call("4300ffb1", "00000000020100000000000000")
    await harness.call("4200ffb1", "00000000")  # FLUSH_STORE
    async with await harness.connect() as s:
        await s.send(bytes.fromhex("2800ffb1"))
        head = await read_exactly(s, 20)
        assert head[:16].hex() == "00000000010000000800000006000000"
        info = await read_exactly(s, int.from_bytes(head[16:20], "little"))
        assert info.startswith(b'revision: "parakoon')


async def test_unknown_user_function_keeps_the_connection(harness: Harness) -> None:
    async with await harness.connect() as s:
        request = "1500ffb1060000006e6f7375636800"
        answer = (
            "2600000029000000557365722066756e6374696f6e20226e6f737563682220636f756c64206e6f742062"
            "6520666f756e64"
        )
        assert await harness.exchange(s, request, len(answer) // 2) == answer
        assert await is_open(s)


async def test_statistics_tree(harness: Harness) -> None:
    await _fill(harness, {b"a": b"12345", b"b": b"123"})
    async with await harness.connect() as s:
        await s.send(bytes.fromhex("0800ffb10001000000" + "61"))
        await read_exactly(s, 13)
        await s.send(bytes.fromhex("1300ffb1"))
        head = await read_exactly(s, 8)
        body = await read_exactly(s, int.from_bytes(head[4:], "little"))
    decoded = decode_response(Statistics(), head + body)
    assert isinstance(decoded, tuple)
    tree, _ = decoded
    assert isinstance(tree, NamedList)
    assert tree.name == "arakoon_stats"
    names = [item.name for item in tree.items]
    assert names == [f.name for f in StatisticsReport.__dataclass_fields__.values()]
    assert [type(item) for item in tree.items[:9]] == [NamedFloat] * 9
    set_info = tree.get("set_info")
    assert isinstance(set_info, NamedList)
    assert set_info.items[0] == NamedInt(name="n", value=2)
    get_info = tree.get("get_info")
    assert isinstance(get_info, NamedList)
    assert get_info.items[0] == NamedInt(name="n", value=1)
    assert tree.get("avg_set_size") == NamedFloat(name="avg_set_size", value=4.0)
    node_is = tree.get("node_is")
    assert node_is == NamedList(name="node_is", items=(NamedInt64(name="node_0", value=2),))
    report = StatisticsReport.from_tree(tree)
    assert report.set_info.n == 2


# ---------------------------------------------------------------------------------------------
# Protocol errors (§3, §4.2, §11 rules 15-18)


@pytest.mark.parametrize(
    "prologue_hex",
    [
        "0100ffb101000000070000006172616b6f6f6e",  # wrong magic
        "0000ffb102000000070000006172616b6f6f6e",  # wrong version
        "0000ffb1010000000500000077726f6e67",  # wrong cluster id "wrong"
    ],
)
async def test_bad_prologue_closes_without_a_word(harness: Harness, prologue_hex: str) -> None:
    async with await harness.connect(prologue=False) as s:
        await s.send(bytes.fromhex(prologue_hex) + bytes.fromhex("0200ffb1"))
        assert await read_to_eof(s) == b""


async def test_prologue_and_request_in_any_pieces(harness: Harness) -> None:
    """§3.1: the server never relies on write boundaries."""
    stream_bytes = PROLOGUE + bytes.fromhex("0900ffb103000000666f6f03000000626172")
    async with await harness.connect(prologue=False) as s:
        for i in range(len(stream_bytes)):
            await s.send(stream_bytes[i : i + 1])
        assert await read_exactly(s, 4) == b"\x00\x00\x00\x00"
    # And pipelined: three requests in one write get three answers in order.
    async with await harness.connect(prologue=False) as s:
        get = "0800ffb10003000000666f6f"
        await s.send(PROLOGUE + bytes.fromhex(get + "0200ffb1" + get))
        answer = await read_exactly(s, 11 + 15 + 11)
        assert answer.hex() == (
            "0000000003000000626172" + "0000000001060000006e6f64655f30" + "0000000003000000626172"
        )


async def test_no_magic_and_unknown_command(harness: Harness) -> None:
    async with await harness.connect() as s:
        await s.send(bytes.fromhex("09000000"))
        assert (await read_to_eof(s)).hex() == "01000000"
    async with await harness.connect() as s:
        await s.send(bytes.fromhex("9900ffb1"))
        assert (
            await read_to_eof(s)
        ).hex() == "050000001500000039393a20636f6d6d616e64206e6f7420666f756e64"


async def test_errors_that_close_the_connection(harness: Harness) -> None:
    # USER_HOOK: no hooks here → 0x82 with the name, then close (§8.5).
    async with await harness.connect() as s:
        await s.send(bytes.fromhex("4500ffb1000300000074336b"))
        assert (await read_to_eof(s)).hex() == "820000000300000074336b"
    # DROP_MASTER on a single node → E_NOT_SUPPORTED, then close (§8.7).
    async with await harness.connect() as s:
        await s.send(bytes.fromhex("3000ffb1"))
        assert (await read_to_eof(s)).hex() == (
            "200000002800000064726f70206d6173746572206e6f7420737570706f7274656420666f722073696e"
            "676c65746f6e73"
        )
    # PING with another cluster id → rc 0xFF "unknown failure", then close (§8.1).
    async with await harness.connect() as s:
        await s.send(bytes.fromhex("0100ffb1080000007079636c69656e74050000006f74686572"))
        assert (await read_to_eof(s)).hex() == "ff0000000f000000756e6b6e6f776e206661696c757265"
    # A nursery command with arguments → E_NOT_SUPPORTED and close; GET_ROUTING → Not_found.
    async with await harness.connect() as s:
        assert await harness.exchange(s, "1800ffb1", 17) == "05000000090000004e6f745f666f756e64"
        assert await harness.exchange(s, "1e00ffb1", 8) == "0000000000000000"  # GET_INTERVAL
        await s.send(bytes.fromhex("1700ffb100000000"))
        assert (await read_to_eof(s))[:4].hex() == "20000000"


async def test_malformed_arguments_close(harness: Harness) -> None:
    # A bad bool byte (finc = 2) closes without an answer.
    async with await harness.connect() as s:
        await s.send(bytes.fromhex("0b00ffb10000020001ffffffff"))
        assert await read_to_eof(s) == b""
    # A sequence blob that is not a tag-5 sequence: rc 0xFF "unknown failure", then close.
    async with await harness.connect() as s:
        blob = encode_update(USet(key=b"k", value=b"v"))
        await s.send(bytes.fromhex("1000ffb1") + len(blob).to_bytes(4, "little") + blob)
        assert (await read_to_eof(s)).hex() == "ff0000000f000000756e6b6e6f776e206661696c757265"
    # An internal update inside a sequence: E_BAD_INPUT, connection stays open (§9).
    async with await harness.connect() as s:
        blob = bytes.fromhex("05000000010000000400000001000000780000000000000000")
        assert encode_update(USequence(updates=())) != blob
        await s.send(bytes.fromhex("1000ffb1") + len(blob).to_bytes(4, "little") + blob)
        head = await read_exactly(s, 8)
        assert head[:4].hex() == "26000000"
        await read_exactly(s, int.from_bytes(head[4:], "little"))
        assert await is_open(s)


async def test_garbage_and_oversize_lengths_hurt_only_that_connection() -> None:
    limits = Limits(max_value_bytes=1024, max_string_bytes=4096)
    async with anyio.create_task_group() as tg:
        harness = await start(tg, limits=limits)
        async with await harness.connect() as bystander:
            assert await is_open(bystander)
            # A 0x7fffffff key length: refused at once, silent close, nothing allocated.
            async with await harness.connect() as s:
                await s.send(bytes.fromhex("0800ffb100ffffff7f"))
                assert await read_to_eof(s) == b""
            # A value at the size limit: rc 0xFF "unknown failure" and close (§11 rule 20).
            async with await harness.connect() as s:
                await s.send(encode_request(Set(key=b"big", value=b"x" * 1024)))
                answer = await read_to_eof(s)
                assert answer.hex() == "ff0000000f000000756e6b6e6f776e206661696c757265"
            # A truncated request followed by EOF from the client.
            async with await harness.connect() as s:
                await s.send(bytes.fromhex("0900ffb1030000"))
                await s.send_eof()
                assert await read_to_eof(s) == b""
            assert await is_open(bystander)
            assert harness.server.counters.protocol_errors == 2
        tg.cancel_scope.cancel()


async def test_random_garbage_connections(seed: int) -> None:
    """Seeded: random bytes after a valid prologue never disturb another connection."""
    rng = random.Random(seed)
    rounds = 200 if os.environ.get("PARAKOON_LONG") else 20
    async with anyio.create_task_group() as tg:
        harness = await start(tg, limits=Limits(max_string_bytes=1 << 16))
        async with await harness.connect() as bystander:
            for _ in range(rounds):
                garbage = rng.randbytes(rng.randrange(1, 64))
                if rng.random() < 0.5:  # give the garbage a valid command word
                    garbage = (0xB1FF0000 | rng.randrange(0x50)).to_bytes(4, "little") + garbage
                async with await harness.connect() as s:
                    await s.send(garbage)
                    await s.send_eof()
                    answer = await read_to_eof(s)
                    # Whatever came back starts with a return code.
                    assert len(answer) == 0 or len(answer) >= 4
                assert await is_open(bystander)
        tg.cancel_scope.cancel()


# ---------------------------------------------------------------------------------------------
# Connection limit and shutdown


async def test_max_connections() -> None:
    async with anyio.create_task_group() as tg:
        harness = await start(tg, max_connections=2)
        first = await harness.connect()
        second = await harness.connect()
        assert await is_open(first)
        assert await is_open(second)
        async with await harness.connect(prologue=False) as third:
            answer = await read_to_eof(third)
            assert answer.hex() == "fe00000010000000746f6f206d616e7920636c69656e7473"
        await first.aclose()
        # The server notices the close when its read returns; wait for it, bounded.
        with anyio.fail_after(WAIT_SECS):
            while harness.server.open_connections > 1:
                await anyio.wait_all_tasks_blocked()
        async with await harness.connect() as fourth:
            assert await is_open(fourth)
        assert await is_open(second)
        await second.aclose()
        assert harness.server.counters.refused_max_connections == 1
        tg.cancel_scope.cancel()


async def test_going_down(harness: Harness) -> None:
    async with await harness.connect() as open_before:
        assert await is_open(open_before)
        harness.server.begin_shutdown()
        async with await harness.connect(prologue=False) as late:
            assert (await read_to_eof(late)).hex() == "10000000" + "0e000000" + (
                b"closing socket".hex()
            )
        # The open connection's next request closes it, unanswered, as soon as its command
        # word is in (§3.1): here the rest of the SET never comes.
        await open_before.send(bytes.fromhex("0900ffb10300"))
        assert await read_to_eof(open_before) == b""


async def test_going_down_from_the_backend(harness: Harness) -> None:
    async with await harness.connect() as s:
        harness.backend.begin_shutdown()
        await s.send(bytes.fromhex("0200ffb1"))
        assert await read_to_eof(s) == b""
    async with await harness.connect(prologue=False) as late:
        assert (await read_to_eof(late))[:4].hex() == "10000000"


async def test_concurrent_connections_each_one_request_at_a_time(harness: Harness) -> None:
    """Many connections at once; each sends its requests pipelined and gets them in order."""
    connections, per_connection = 16, 40

    async def client(n: int) -> None:
        async with await harness.connect() as s:
            requests = [
                encode_request(Set(key=b"c%02d-%03d" % (n, i), value=b"%d" % i))
                for i in range(per_connection)
            ]
            await s.send(b"".join(requests))
            assert await read_exactly(s, 4 * per_connection) == bytes(4 * per_connection)
            await s.send(bytes.fromhex("0c00ffb100") + _string(b"c%02d-" % n) + _i32(-1))
            head = await read_exactly(s, 8)
            assert int.from_bytes(head[4:], "little") == per_connection

    async with anyio.create_task_group() as tg:
        for n in range(connections):
            tg.start_soon(client, n)
    assert harness.backend.store.key_count() == connections * per_connection
    assert harness.backend.txid() == connections * per_connection


def _string(data: bytes) -> bytes:
    return len(data).to_bytes(4, "little") + data


def _i32(value: int) -> bytes:
    return value.to_bytes(4, "little", signed=True)


async def test_default_value_limit_of_8_mib(harness: Harness) -> None:
    """§11 rule 20 at its default: a value of exactly 8 MiB is refused with rc 0xFF, and the
    client still gets that answer although it sends the whole value after it was refused."""
    async with await harness.connect() as s:
        await s.send(encode_request(Set(key=b"big", value=b"x" * (8 * 1024 * 1024))))
        answer = await read_to_eof(s)
        assert answer.hex() == "ff0000000f000000756e6b6e6f776e206661696c757265"
    async with await harness.connect() as s:
        value = b"y" * (8 * 1024 * 1024 - 1)
        await s.send(encode_request(Set(key=b"big", value=value)))
        assert await read_exactly(s, 4) == bytes(4)
    assert harness.backend.store.get(b"big") == value
