"""The Redis port's server (resp_server) in process: a ``LocalBackend`` behind the real
``serve_redis`` on 127.0.0.1, on asyncio (the node's fast path) and trio.

The real-cluster tests with real Redis clients are ``tests/test_redis_port.py``; these check
what is easier to see here: the connection bounds and timeouts, RESP3 after HELLO 3, inline
commands, SCAN's cursor over the ordered keyspace, and the server commands.
"""

from __future__ import annotations

from contextlib import AsyncExitStack
from typing import Any

import anyio
import anyio.abc
import pytest

from parakoon_client.codec import Consistency, Consistent, Limits, Update, encode_update
from parakoon_client.resp import encode_command
from parakoon_kv import Result
from parakoon_node.clientserver import LocalBackend
from parakoon_node.clientserver.backend import NotMaster, TooLarge
from parakoon_node.clientserver.resp_server import RespServer, serve_redis

pytestmark = pytest.mark.anyio


async def _serve(kwargs: dict[str, Any], *, task_status: anyio.abc.TaskStatus[RespServer]) -> None:
    backend = LocalBackend(cluster_id="parakoon", node_name="node_0")
    await serve_redis(backend, host="127.0.0.1", port=0, task_status=task_status, **kwargs)


class Conn:
    """A raw client: send commands, read whole replies as raw bytes."""

    def __init__(self, stream: anyio.abc.SocketStream) -> None:
        self.stream = stream
        self.buf = b""

    async def _line(self) -> bytes:
        while b"\r\n" not in self.buf:
            self.buf += await self.stream.receive()
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line + b"\r\n"

    async def reply(self) -> bytes:
        with anyio.fail_after(5):
            line = await self._line()
            kind, count = line[:1], line[1:-2]
            if kind == b"$" and int(count) >= 0:
                while len(self.buf) < int(count) + 2:
                    self.buf += await self.stream.receive()
                body, self.buf = self.buf[: int(count) + 2], self.buf[int(count) + 2 :]
                return line + body
            if kind in (b"*", b"%") and int(count) > 0:
                items = int(count) * (2 if kind == b"%" else 1)
                return line + b"".join([await self.reply() for _ in range(items)])
            return line

    async def call(self, *args: bytes) -> bytes:
        await self.stream.send(encode_command(*args))
        return await self.reply()


async def connect(stack: AsyncExitStack, port: int) -> Conn:
    stream = await anyio.connect_tcp("127.0.0.1", port)
    stack.push_async_callback(stream.aclose)
    return Conn(stream)


async def closed_within(conn: Conn, secs: float) -> bool:
    with anyio.move_on_after(secs):
        try:
            while True:
                await conn.stream.receive()
        except (anyio.EndOfStream, anyio.BrokenResourceError):
            return True
    return False


async def test_connection_limit_refuses_with_redis_error() -> None:
    async with AsyncExitStack() as stack, anyio.create_task_group() as tg:
        server: RespServer = await tg.start(_serve, {"max_connections": 2})
        assert server.port is not None
        first, second = await connect(stack, server.port), await connect(stack, server.port)
        assert await first.call(b"PING") == b"+PONG\r\n"
        assert await second.call(b"PING") == b"+PONG\r\n"
        third = await connect(stack, server.port)
        assert await third.reply() == b"-ERR max number of clients reached\r\n"
        assert await closed_within(third, 3)
        assert await first.call(b"ECHO", b"still") == b"$5\r\nstill\r\n"
        tg.cancel_scope.cancel()


async def test_trickling_and_idle_connections_are_closed() -> None:
    kwargs = {"request_timeout_secs": 0.3, "idle_timeout_secs": 0.6}
    async with AsyncExitStack() as stack, anyio.create_task_group() as tg:
        server: RespServer = await tg.start(_serve, kwargs)
        assert server.port is not None
        slow = await connect(stack, server.port)
        await slow.stream.send(b"*2\r\n$3\r\nGET\r\n")  # never completed
        idle = await connect(stack, server.port)
        assert await idle.call(b"PING") == b"+PONG\r\n"
        assert await closed_within(slow, 3)
        assert await closed_within(idle, 3)
        assert server.open_connections == 0
        tg.cancel_scope.cancel()


async def test_hello_3_switches_to_resp3_and_inline_commands_work() -> None:
    async with AsyncExitStack() as stack, anyio.create_task_group() as tg:
        server: RespServer = await tg.start(_serve, {})
        assert server.port is not None
        c = await connect(stack, server.port)
        assert await c.call(b"GET", b"nothing") == b"$-1\r\n"
        hello = await c.call(b"HELLO", b"3")
        assert hello.startswith(b"%7\r\n$6\r\nserver\r\n$5\r\nredis\r\n")
        assert b"$5\r\nproto\r\n:3\r\n" in hello
        assert await c.call(b"GET", b"nothing") == b"_\r\n"
        assert await c.call(b"HELLO", b"4") == b"-NOPROTO unsupported protocol version\r\n"
        await c.stream.send(b'SET "a key" "x\\ny"\r\nGET "a key"\r\n')
        assert await c.reply() == b"+OK\r\n"
        assert await c.reply() == b"$3\r\nx\ny\r\n"
        tg.cancel_scope.cancel()


async def test_scan_walks_the_ordered_keyspace_with_match_and_count() -> None:
    async with AsyncExitStack() as stack, anyio.create_task_group() as tg:
        server: RespServer = await tg.start(_serve, {})
        assert server.port is not None
        c = await connect(stack, server.port)
        keys = [b"a:%02d" % i for i in range(20)] + [b"b:%02d" % i for i in range(5)]
        for key in keys:
            await c.call(b"SET", key, b"v")
        seen: list[bytes] = []
        cursor = b"0"
        for _ in range(30):
            reply = await c.call(b"SCAN", cursor, b"MATCH", b"a:*1", b"COUNT", b"3")
            head, _, rest = reply.partition(b"\r\n*")
            cursor = head.split(b"\r\n")[-1]
            seen += [line for line in rest.split(b"\r\n") if line.startswith(b"a:")]
            if cursor == b"0":
                break
        assert seen == [b"a:01", b"a:11"]
        unknown = await c.call(b"SCAN", b"12345")
        assert unknown.startswith(b"-ERR invalid cursor")
        assert await c.call(b"DBSIZE") == b":25\r\n"
        assert await c.call(b"KEYS", b"b:0[3-4]") == b"*2\r\n$4\r\nb:03\r\n$4\r\nb:04\r\n"
        tg.cancel_scope.cancel()


async def test_server_commands() -> None:
    async with AsyncExitStack() as stack, anyio.create_task_group() as tg:
        server: RespServer = await tg.start(_serve, {})
        assert server.port is not None
        c = await connect(stack, server.port)
        info = await c.call(b"INFO", b"replication")
        assert b"role:master" in info
        assert b"# Server" not in info
        count = await c.call(b"COMMAND", b"COUNT")
        assert int(count[1:-2]) >= 30
        get_info = await c.call(b"COMMAND", b"INFO", b"get")
        assert get_info.startswith(b"*1\r\n*10\r\n$3\r\nget\r\n:2\r\n")
        assert await c.call(b"COMMAND", b"GETKEYS", b"MSET", b"a", b"1", b"b", b"2") == (
            b"*2\r\n$1\r\na\r\n$1\r\nb\r\n"
        )
        client_id = await c.call(b"CLIENT", b"ID")
        assert client_id.startswith(b":")
        assert await c.call(b"SELECT", b"1") == b"-ERR DB index is out of range\r\n"
        assert (await c.call(b"HSET", b"h", b"f", b"v")).startswith(
            b"-ERR unknown command 'HSET': not supported by parakoon (parakoon stores only"
        )
        config = await c.call(b"CONFIG", b"GET", b"databases")
        assert config == b"*2\r\n$9\r\ndatabases\r\n$1\r\n1\r\n"
        assert await c.call(b"QUIT") == b"+OK\r\n"
        assert await closed_within(c, 3)
        tg.cancel_scope.cancel()


async def test_values_and_transactions_are_bounded() -> None:
    limits = Limits(max_value_bytes=100, max_request_bytes=1000, max_string_bytes=1000)
    async with AsyncExitStack() as stack, anyio.create_task_group() as tg:
        server: RespServer = await tg.start(_serve, {"limits": limits})
        assert server.port is not None
        c = await connect(stack, server.port)
        too_large = await c.call(b"SET", b"k", b"x" * 100)
        assert too_large.startswith(b"-ERR value of 100 bytes for key b'k' is too large")
        assert await c.call(b"SET", b"k", b"x" * 99) == b"+OK\r\n"
        assert (await c.call(b"APPEND", b"k", b"y")).startswith(b"-ERR value of 100 bytes")
        assert await c.call(b"STRLEN", b"k") == b":99\r\n"
        assert await c.call(b"MULTI") == b"+OK\r\n"
        assert await c.call(b"SET", b"a", b"x" * 90) == b"+QUEUED\r\n"
        for _ in range(9):
            await c.call(b"SET", b"a", b"x" * 90)
        refused = await c.call(b"SET", b"a", b"x" * 90)
        assert refused.startswith(b"-ERR transaction too large")
        assert (await c.call(b"EXEC")).startswith(b"-EXECABORT")
        tg.cancel_scope.cancel()


async def test_watch_aborts_exec_when_another_connection_changes_the_key() -> None:
    async with AsyncExitStack() as stack, anyio.create_task_group() as tg:
        server: RespServer = await tg.start(_serve, {})
        assert server.port is not None
        c, other = await connect(stack, server.port), await connect(stack, server.port)
        assert await c.call(b"WATCH", b"w") == b"+OK\r\n"
        assert await other.call(b"SET", b"w", b"1") == b"+OK\r\n"
        await c.call(b"MULTI")
        await c.call(b"SET", b"w", b"2")
        assert await c.call(b"EXEC") == b"*-1\r\n"
        assert await c.call(b"GET", b"w") == b"$1\r\n1\r\n"
        # Unchanged since WATCH: EXEC applies.
        assert await c.call(b"WATCH", b"w") == b"+OK\r\n"
        await c.call(b"MULTI")
        await c.call(b"INCR", b"w")
        assert await c.call(b"EXEC") == b"*1\r\n:2\r\n"
        tg.cancel_scope.cancel()


async def test_glob_patterns_are_bounded_in_length() -> None:
    long = b"*a" * 3000  # over GLOB_PATTERN_BYTES_MAX
    async with AsyncExitStack() as stack, anyio.create_task_group() as tg:
        server: RespServer = await tg.start(_serve, {})
        assert server.port is not None
        c = await connect(stack, server.port)
        assert await c.call(b"SET", b"aa", b"v") == b"+OK\r\n"
        for call in ((b"KEYS", long), (b"SCAN", b"0", b"MATCH", long), (b"CONFIG", b"GET", long)):
            refused = await c.call(*call)
            assert refused.startswith(b"-ERR ") and b"pattern of 6000 bytes is too long" in refused
        assert await c.call(b"KEYS", b"*a*a") == b"*1\r\n$2\r\naa\r\n"
        tg.cancel_scope.cancel()


async def test_replies_and_keys_are_bounded() -> None:
    limits = Limits(
        max_value_bytes=300, max_request_bytes=1000, max_string_bytes=1000, max_list_items=8
    )
    async with AsyncExitStack() as stack, anyio.create_task_group() as tg:
        server: RespServer = await tg.start(_serve, {"limits": limits})
        assert server.port is not None
        c = await connect(stack, server.port)
        assert await c.call(b"SET", b"big", b"x" * 250) == b"+OK\r\n"
        assert (await c.call(b"MGET", b"big", b"big", b"big")).startswith(b"*3\r\n")
        refused = await c.call(b"MGET", *[b"big"] * 5)
        assert refused.startswith(b"-ERR reply of 1") and b"(max_request_bytes)" in refused
        # A transaction whose replies are too large is refused before it writes anything.
        assert await c.call(b"MULTI") == b"+OK\r\n"
        assert await c.call(b"SET", b"w", b"1") == b"+QUEUED\r\n"
        for _ in range(5):
            assert await c.call(b"GET", b"big") == b"+QUEUED\r\n"
        assert (await c.call(b"EXEC")).startswith(b"-ERR reply of 1")
        assert await c.call(b"EXISTS", b"w") == b":0\r\n"
        # KEYS lists at most max_list_items keys; SCAN walks any number.
        for i in range(7):
            await c.call(b"SET", b"k%d" % i, b"v")
        assert (await c.call(b"KEYS", b"*")).startswith(b"*8\r\n")
        await c.call(b"SET", b"k7", b"v")
        refused = await c.call(b"KEYS", b"*")
        assert refused.startswith(b"-ERR KEYS would read more than 8 keys (max_list_items)")
        assert b"SCAN" in refused
        assert await c.call(b"KEYS", b"k[0-1]") == b"*2\r\n$2\r\nk0\r\n$2\r\nk1\r\n"
        tg.cancel_scope.cancel()


async def test_queued_and_watched_arguments_count_their_overhead() -> None:
    # 64 bytes per argument on top of its length (ARG_OVERHEAD_BYTES), against 1000 bytes.
    limits = Limits(max_value_bytes=100, max_request_bytes=1000, max_string_bytes=1000)
    async with AsyncExitStack() as stack, anyio.create_task_group() as tg:
        server: RespServer = await tg.start(_serve, {"limits": limits})
        assert server.port is not None
        c = await connect(stack, server.port)
        assert await c.call(b"MULTI") == b"+OK\r\n"
        assert await c.call(b"EXISTS", *[b""] * 10) == b"+QUEUED\r\n"  # 6 + 11 * 64 bytes
        refused = await c.call(b"EXISTS", *[b""] * 10)  # 1408 bytes in all
        assert refused.startswith(b"-ERR transaction too large")
        assert (await c.call(b"EXEC")).startswith(b"-EXECABORT")
        keys = [b"%02d" % i for i in range(15)]  # 15 * 66 = 990 bytes
        assert await c.call(b"WATCH", *keys) == b"+OK\r\n"
        assert await c.call(b"WATCH", *keys[:3]) == b"+OK\r\n"  # already watched: no cost
        refused = await c.call(b"WATCH", b"15")
        assert refused.startswith(b"-ERR watched keys too large: at most 1000 bytes")
        assert await c.call(b"UNWATCH") == b"+OK\r\n"
        assert await c.call(b"WATCH", b"15") == b"+OK\r\n"
        tg.cancel_scope.cancel()


class FollowerBackend(LocalBackend):
    """A follower of node_1: reads with no guarantees are served, the rest is NotMaster."""

    async def check_read(self, consistency: Consistency) -> None:
        if isinstance(consistency, Consistent):
            raise NotMaster("node_1")

    async def write(self, update: Update) -> Result:
        raise NotMaster("node_1")


async def _serve_follower(*, task_status: anyio.abc.TaskStatus[RespServer]) -> None:
    backend = FollowerBackend(cluster_id="parakoon", node_name="node_0")
    with backend.store.transaction(1) as tx:
        tx.set(b"k", b"old")
        tx.set(b"s", b"text")
    await serve_redis(backend, host="127.0.0.1", port=0, task_status=task_status)


async def test_readonly_connections_still_send_writes_to_the_master() -> None:
    async with AsyncExitStack() as stack, anyio.create_task_group() as tg:
        server: RespServer = await tg.start(_serve_follower)
        assert server.port is not None
        c = await connect(stack, server.port)
        readonly = b"-READONLY You can't write against a read only replica."
        assert (await c.call(b"GET", b"k")).startswith(readonly)
        assert await c.call(b"READONLY") == b"+OK\r\n"
        assert await c.call(b"GET", b"k") == b"$3\r\nold\r\n"  # no guarantees: served
        assert await c.call(b"MGET", b"k", b"s") == b"*2\r\n$3\r\nold\r\n$4\r\ntext\r\n"
        # Write commands that would write nothing (or fail) are not answered from the
        # follower's state either: they read consistently, so the master is named.
        for command in ((b"SETNX", b"k", b"x"), (b"INCR", b"s"), (b"SET", b"k", b"v", b"NX")):
            reply = await c.call(*command)
            assert reply.startswith(readonly) and b"node_1" in reply, (command, reply)
        assert await c.call(b"MULTI") == b"+OK\r\n"
        await c.call(b"GET", b"k")
        await c.call(b"INCR", b"s")
        assert (await c.call(b"EXEC")).startswith(readonly)
        tg.cancel_scope.cancel()


class GatedBackend(LocalBackend):
    """Holds its first write until ``gate`` is set; an update with a value over 100 bytes is
    TooLarge (as a node refuses one it could not replicate)."""

    def __init__(self) -> None:
        super().__init__(cluster_id="parakoon", node_name="node_0")
        self.gate = anyio.Event()
        self.writes = 0

    async def write(self, update: Update) -> Result:
        self.writes += 1
        if self.writes == 1:
            await self.gate.wait()
        if len(encode_update(update)) > 150:
            raise TooLarge("update too large to replicate")
        return await super().write(update)


async def test_one_command_too_large_fails_alone_in_a_combined_batch() -> None:
    backend = GatedBackend()

    async def serve(*, task_status: anyio.abc.TaskStatus[RespServer]) -> None:
        await serve_redis(backend, host="127.0.0.1", port=0, task_status=task_status)

    async with AsyncExitStack() as stack, anyio.create_task_group() as tg:
        server: RespServer = await tg.start(serve)
        assert server.port is not None
        first, small, large = [await connect(stack, server.port) for _ in range(3)]
        await first.stream.send(encode_command(b"APPEND", b"k", b"z"))  # leads; held
        with anyio.fail_after(5):
            while backend.writes == 0:
                await anyio.sleep(0.01)
        await small.stream.send(encode_command(b"APPEND", b"k", b"a" * 10))
        await large.stream.send(encode_command(b"APPEND", b"k", b"b" * 200))
        with anyio.fail_after(5):  # both queued behind the first: they form the next batch
            while len(server._combining.get(b"k", ())) < 2:
                await anyio.sleep(0.01)
        backend.gate.set()
        assert await first.reply() == b":1\r\n"
        assert await small.reply() == b":11\r\n"
        assert (await large.reply()).startswith(b"-ERR update too large to replicate")
        assert await first.call(b"GET", b"k") == b"$11\r\nz" + b"a" * 10 + b"\r\n"
        tg.cancel_scope.cancel()
