"""Both clients against a real three-node cluster: ``parakoon node`` processes on 127.0.0.1.

The clusters come from the ``cluster_factory`` fixture of ``tests/conftest.py`` (real
processes, real WAL, Multi-Paxos with a one-second lease); the clients are built from the
generated ``cluster.toml`` with ``from_config`` and find the master on their own. What is shown:
discovery while the cluster is still electing, read-your-writes on every follower, a write that
survives the master being killed (the client retries through the election), a master that
stops answering (timeouts, ``OutcomeUnknown`` for a write that is not safe to repeat, then
failover), a killed node catching up, and the async client on the same cluster.
"""

from __future__ import annotations

import time
from typing import Any

import anyio
import pytest

from parakoon_client import (
    ArakoonTimeout,
    AtLeast,
    Client,
    OutcomeUnknown,
)
from parakoon_client.aio import AsyncClient
from parakoon_client.codec import Get
from parakoon_client.policy import Backoff

LEASE = 1.0
FAST = Backoff(backoff_secs_min=0.02, backoff_secs_max=0.25)
# Generous bounds: the machine running the tests is shared; the promise checked is "the call
# succeeds without the caller retrying", not a failover time (tests/test_node_cluster.py).
FAILOVER_BOUND_SECS = 20.0


def test_discovery_failover_and_read_your_writes(cluster_factory: Any) -> None:
    cluster = cluster_factory(lease_period_secs=LEASE)
    cluster.start_all()
    with Client.from_config(cluster.config, timeout_secs=2, retry_secs=30, backoff=FAST) as client:
        # No waiting for the election here: the client discovers the master and retries.
        client.set(b"first", b"1")
        master = client.master
        assert master in cluster.names
        acked = {f"k{i:03d}".encode(): f"v{i}".encode() for i in range(30)}
        with client.sequence() as seq:
            for key, value in acked.items():
                seq.set(key, value)
        stamp = client.get_txid()
        assert isinstance(stamp, AtLeast)
        for follower in (n for n in cluster.names if n != master):
            # AtLeast on a follower: answered once it has applied our writes.
            got = client.call(Get(key=b"k029", consistency=stamp), node=follower)
            assert got == b"v29"

        cluster.kill(master)
        started = time.monotonic()
        client.set(b"after", b"failover")  # rides through the election on its own
        assert time.monotonic() - started < FAILOVER_BOUND_SECS
        assert client.master not in (None, master)
        assert client.multi_get(list(acked)) == list(acked.values())
        assert client.test_and_set(b"after", b"failover", b"cas") == b"failover"

        cluster.start(master)
        stamp = client.get_txid()
        assert client.call(Get(key=b"after", consistency=stamp), node=master) == b"cas"


def test_silent_master_times_out_then_fails_over(cluster_factory: Any) -> None:
    cluster = cluster_factory(lease_period_secs=LEASE)
    cluster.start_all()
    client = Client.from_config(cluster.config, timeout_secs=0.5, retry_secs=30, backoff=FAST)
    with client:
        client.set(b"k", b"v")
        master = client.master
        assert master is not None
        cluster.pause(master)  # alive for TCP, answers nothing
        try:
            started = time.monotonic()
            with pytest.raises(OutcomeUnknown) as info:
                client.test_and_set(b"k", b"v", b"w")
            assert isinstance(info.value.cause, ArakoonTimeout)
            assert time.monotonic() - started < 0.5 + 1.0
            # A read is retried: timeouts, rediscovery, and the new master answers.
            assert client.get(b"k") == b"v"
            assert client.master not in (None, master)
        finally:
            cluster.resume(master)


def test_async_clients_against_the_cluster(cluster_factory: Any) -> None:
    cluster = cluster_factory(lease_period_secs=LEASE)
    cluster.start_all()

    async def main() -> None:
        async def worker(index: int) -> None:
            async with AsyncClient.from_config(
                cluster.config, timeout_secs=2, retry_secs=30, backoff=FAST, seed=index
            ) as client:
                for op in range(10):
                    key = f"w{index}-{op}".encode()
                    await client.set(key, key)
                    assert await client.get(key) == key
                async with client.sequence() as seq:
                    seq.set(f"seq{index}".encode(), b"done")

        async with anyio.create_task_group() as tg:
            for index in range(8):
                tg.start_soon(worker, index)
        async with AsyncClient.from_config(cluster.config, timeout_secs=2) as client:
            assert len(await client.prefix(b"w")) == 80
            assert await client.multi_get([f"seq{i}".encode() for i in range(8)]) == [b"done"] * 8

    anyio.run(main)
