# spec: docs/spec/arakoon-client-protocol.md
"""The server's error mapping and close rules for role-dependent errors (§4.2, §5, §6), and the
codec <-> store conversions.

The node that raises NOT_MASTER and NO_LONGER_MASTER for real does not run inside this package's
tests, so ``FollowerBackend`` below plays a follower of a cluster whose master is ``node_0``:
a ``LocalBackend`` whose consistent reads and writes are refused the way the Backend protocol
says a non-master refuses them. Everything else (server, codec, store, TCP) is the real thing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
import anyio.abc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import parakoon_kv as kv
from parakoon_client.codec import (
    AtLeast,
    Confirm,
    Consistency,
    Consistent,
    Get,
    Set,
    UAdminSet,
    UAssert,
    UAssertExists,
    UAssertRange,
    UDelete,
    UDeletePrefix,
    UNop,
    Update,
    UReplace,
    USequence,
    USet,
    UTestAndSet,
    UUserFunction,
    encode_prologue,
    encode_request,
)
from parakoon_node.clientserver import (
    ClientServer,
    LocalBackend,
    NoLongerMaster,
    NotAStoreUpdate,
    NotMaster,
    serve,
    to_codec_update,
    to_kv_update,
)

pytestmark = pytest.mark.anyio
WAIT_SECS = 10.0


@pytest.fixture
def anyio_backend() -> str:
    # These check what the server answers, not how it schedules: one backend is enough
    # (test_clientserver.py runs the server on both).
    return "asyncio"


class FollowerBackend(LocalBackend):
    """A follower: dirty and at-least reads are local; consistent reads and writes are refused
    with NotMaster("node_0"), or NoLongerMaster when ``lose_mastership`` is set."""

    lose_mastership = False

    async def check_read(self, consistency: Consistency) -> None:
        if isinstance(consistency, Consistent):
            raise NotMaster("node_0")
        await super().check_read(consistency)

    async def write(self, update: Update) -> kv.Result:
        if self.lose_mastership:
            raise NoLongerMaster()
        raise NotMaster("node_0")

    def who_master(self) -> str | None:
        return "node_0"


async def _serve_backend(
    backend: LocalBackend,
    *,
    task_status: anyio.abc.TaskStatus[ClientServer] = anyio.TASK_STATUS_IGNORED,
) -> None:
    await serve(backend, host="127.0.0.1", port=0, linger_secs=0.5, task_status=task_status)


@pytest.fixture
async def follower() -> AsyncIterator[tuple[FollowerBackend, int]]:
    backend = FollowerBackend(cluster_id="arakoon", node_name="node_1")
    with backend.store.transaction(1) as txn:
        txn.set(b"foo", b"bar")
    async with anyio.create_task_group() as tg:
        server = await tg.start(_serve_backend, backend)
        assert server.port is not None
        yield backend, server.port
        tg.cancel_scope.cancel()


async def _connect(port: int) -> anyio.abc.SocketStream:
    stream = await anyio.connect_tcp("127.0.0.1", port)
    await stream.send(encode_prologue("arakoon"))
    return stream


async def _read_to_eof(stream: anyio.abc.SocketStream) -> bytes:
    data = b""
    with anyio.fail_after(WAIT_SECS):
        while True:
            try:
                data += await stream.receive()
            except (anyio.EndOfStream, anyio.BrokenResourceError):
                return data


async def _read(stream: anyio.abc.SocketStream, size: int) -> bytes:
    data = b""
    with anyio.fail_after(WAIT_SECS):
        while len(data) < size:
            data += await stream.receive(size - len(data))
    return data


async def test_write_on_a_follower_is_not_master_and_closes(
    follower: tuple[FollowerBackend, int],
) -> None:
    _, port = follower
    async with await _connect(port) as s:
        await s.send(bytes.fromhex("0900ffb103000000666f6f03000000626172"))
        assert (await _read_to_eof(s)).hex() == "04000000060000006e6f64655f30"


async def test_reads_on_a_follower(follower: tuple[FollowerBackend, int]) -> None:
    _, port = follower
    async with await _connect(port) as s:
        # Dirty read: served locally, connection stays open.
        await s.send(bytes.fromhex("0800ffb10103000000666f6f"))
        assert (await _read(s, 11)).hex() == "0000000003000000626172"
        # At_least 1: applied, served.
        await s.send(encode_request(Get(key=b"foo", consistency=AtLeast(stamp=1))))
        assert (await _read(s, 11)).hex() == "0000000003000000626172"
        # GET_KEY_COUNT is class M: master only.
        await s.send(bytes.fromhex("1a00ffb1"))
        assert (await _read_to_eof(s)).hex() == "04000000060000006e6f64655f30"
    async with await _connect(port) as s:
        # Consistent read on a follower: NOT_MASTER, then close (§5).
        await s.send(bytes.fromhex("0800ffb10003000000666f6f"))
        assert (await _read_to_eof(s)).hex() == "04000000060000006e6f64655f30"
    async with await _connect(port) as s:
        # CONFIRM starts with a consistent read, so it needs the master even when unchanged.
        await s.send(encode_request(Confirm(key=b"foo", value=b"bar")))
        assert (await _read_to_eof(s)).hex() == "04000000060000006e6f64655f30"


async def test_no_longer_master_keeps_the_connection(
    follower: tuple[FollowerBackend, int],
) -> None:
    backend, port = follower
    backend.lose_mastership = True
    async with await _connect(port) as s:
        await s.send(encode_request(Set(key=b"k", value=b"v")))
        head = await _read(s, 8)
        assert head[:4].hex() == "21000000"
        assert await _read(s, int.from_bytes(head[4:], "little")) == b"no longer master"
        await s.send(bytes.fromhex("0200ffb1"))
        assert (await _read(s, 15)).hex() == "0000000001060000006e6f64655f30"


async def test_read_only_node() -> None:
    backend = LocalBackend(cluster_id="arakoon", node_name="node_2", read_only=True)
    async with anyio.create_task_group() as tg:
        server = await tg.start(_serve_backend, backend)
        assert server.port is not None
        async with await _connect(server.port) as s:
            # Every read is allowed on a read-only node (§5).
            await s.send(bytes.fromhex("0700ffb10003000000666f6f"))
            assert (await _read(s, 5)).hex() == "0000000000"
            # A write: E_READ_ONLY with the node's name, then close.
            await s.send(encode_request(Set(key=b"k", value=b"v")))
            assert (await _read_to_eof(s)).hex() == "08000000060000006e6f64655f32"
        tg.cancel_scope.cancel()


async def test_confirm_takes_no_round_when_unchanged() -> None:
    backend = LocalBackend(cluster_id="arakoon")
    async with anyio.create_task_group() as tg:
        server = await tg.start(_serve_backend, backend)
        assert server.port is not None
        async with await _connect(server.port) as s:
            for _ in range(3):
                await s.send(encode_request(Confirm(key=b"k", value=b"v")))
                assert await _read(s, 4) == bytes(4)
            assert backend.txid() == 1  # only the first one wrote
            await s.send(encode_request(Confirm(key=b"k", value=b"w")))
            assert await _read(s, 4) == bytes(4)
            assert backend.txid() == 2
        tg.cancel_scope.cancel()


# ---------------------------------------------------------------------------------------------
# Conversions

KEYS = st.binary(max_size=8)
OPT = st.none() | KEYS
STORE_UPDATES: st.SearchStrategy[Update] = st.recursive(
    st.one_of(
        st.builds(USet, key=KEYS, value=KEYS),
        st.builds(UDelete, key=KEYS),
        st.builds(UTestAndSet, key=KEYS, expected=OPT, wanted=OPT),
        st.builds(UNop),
        st.builds(UUserFunction, name=st.text(max_size=5), argument=OPT),
        st.builds(UAssert, key=KEYS, expected=OPT),
        st.builds(UDeletePrefix, prefix=KEYS),
        st.builds(UAssertExists, key=KEYS),
        st.builds(UReplace, key=KEYS, wanted=OPT),
        st.builds(UAssertRange, prefix=KEYS, keys=st.lists(KEYS, max_size=3).map(tuple)),
    ),
    lambda inner: st.builds(
        USequence, updates=st.lists(inner, max_size=3).map(tuple), synced=st.booleans()
    ),
    max_leaves=8,
)


@settings(deadline=None)  # shared CI machines: no per-example deadline
@given(STORE_UPDATES)
def test_codec_and_store_updates_convert_both_ways(update: Update) -> None:
    assert to_codec_update(to_kv_update(update)) == update


def test_internal_updates_have_no_store_form() -> None:
    with pytest.raises(NotAStoreUpdate, match="UAdminSet"):
        to_kv_update(USequence(updates=(UAdminSet(key=b"k", value=None),)))
