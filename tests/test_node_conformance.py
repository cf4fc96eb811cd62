# spec: docs/spec/arakoon-client-protocol.md
"""Every client command against a real 3-node cluster, with the protocol's semantics.

One cluster of real node processes serves the whole module (it takes a few seconds to elect).
Commands go through the blocking client library (`parakoon_client.Client`), which finds the
master itself; section numbers refer to `arakoon-client-protocol.md`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from parakoon_testing import wait_until

from parakoon_client import (
    NO_GUARANTEES,
    AssertionFailed,
    BadInput,
    Client,
    NotFound,
    NotMaster,
    codec,
)

from .conftest import CLUSTER_ID, ClusterProcs


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterProcs]:
    procs = ClusterProcs(tmp_path_factory.mktemp("conformance"), lease_period_secs=1.0)
    procs.start_all()
    try:
        procs.wait_master()
        yield procs
    finally:
        procs.shutdown()


@pytest.fixture
def client(cluster: ClusterProcs) -> Iterator[Client]:
    nodes = {name: ("127.0.0.1", port) for name, port in cluster.client_ports.items()}
    with Client(CLUSTER_ID, nodes, timeout_secs=5.0, retry_secs=15.0, seed=1) as c:
        yield c


@pytest.fixture
def prefix(request: pytest.FixtureRequest) -> bytes:
    """A key prefix of this test's own, so the tests of the module do not see each other."""
    name: str = request.node.name
    return name.encode()[:40] + b"/"


def test_set_get_delete_exists(client: Client, prefix: bytes) -> None:
    """§8.2, §8.4: a missing key is E_NOT_FOUND; DELETE of a missing key too (message = key)."""
    k = prefix + b"k"
    client.set(k, b"v")
    assert client.get(k) == b"v"
    assert client.exists(k)
    client.delete(k)
    assert not client.exists(k)
    with pytest.raises(NotFound):
        client.get(k)
    with pytest.raises(NotFound) as missing:
        client.delete(k)
    assert missing.value.message == k.decode()


def test_empty_key_and_value_are_valid(client: Client, prefix: bytes) -> None:
    client.set(prefix, b"")
    assert client.get(prefix) == b""


def test_ranges_in_natural_order(client: Client, prefix: bytes) -> None:
    """§2.1, §8.3: results come back in natural order whatever the wire order; max cuts."""
    keys = [prefix + b"%02d" % k for k in range(10)]
    for k in keys:
        client.set(k, k[-2:])
    assert client.range(keys[2], keys[5], last_inclusive=False) == keys[2:5]
    assert client.range(keys[2], keys[5], first_inclusive=False, last_inclusive=True) == keys[3:6]
    assert client.range(keys[0], keys[9], max_keys=3) == keys[:3]
    assert client.range_entries(keys[0], keys[2], last_inclusive=True) == [
        (k, k[-2:]) for k in keys[:3]
    ]
    rev = client.rev_range_entries(keys[9], keys[6], last_inclusive=True)
    assert rev == [(k, k[-2:]) for k in reversed(keys[6:])]
    assert client.prefix(prefix) == keys
    assert client.prefix(prefix, max_keys=2) == keys[:2]


def test_multi_get_and_option(client: Client, prefix: bytes) -> None:
    """§8.3: MULTI_GET fails on a missing key; MULTI_GET_OPTION answers None for it."""
    a, b, c = prefix + b"a", prefix + b"b", prefix + b"c"
    client.set(a, b"1")
    client.set(b, b"2")
    assert client.multi_get([b, a]) == [b"2", b"1"]
    assert client.multi_get_option([a, c, b]) == [b"1", None, b"2"]
    with pytest.raises(NotFound):
        client.multi_get([a, c])


def test_test_and_set_table(client: Client, prefix: bytes) -> None:
    """§11 rule 8: TEST_AND_SET answers the value *before* and writes only on a match."""
    k = prefix + b"k"
    assert client.test_and_set(k, None, b"w") is None
    assert client.get(k) == b"w"
    assert client.test_and_set(k, b"other", b"x") == b"w"
    assert client.get(k) == b"w"
    assert client.test_and_set(k, b"w", None) == b"w"
    assert not client.exists(k)


def test_replace_confirm_delete_prefix(client: Client, prefix: bytes) -> None:
    k = prefix + b"k"
    assert client.replace(k, b"1") is None
    assert client.replace(k, b"2") == b"1"
    client.confirm(k, b"2")
    client.confirm(k, b"3")
    assert client.get(k) == b"3"
    for n in range(5):
        client.set(prefix + b"p/%d" % n, b"x")
    assert client.delete_prefix(prefix + b"p/") == 5
    assert client.prefix(prefix + b"p/") == []


def test_sequence_is_all_or_nothing(client: Client, prefix: bytes) -> None:
    """§9, §11 rule 13: a failing assert rolls back the whole sequence."""
    a, b = prefix + b"a", prefix + b"b"
    with client.sequence() as seq:
        seq.set(a, b"1")
        seq.set(b, b"2")
    assert client.multi_get([a, b]) == [b"1", b"2"]
    with pytest.raises(AssertionFailed), client.sequence() as seq:
        seq.set(a, b"changed")
        seq.assert_(b, b"not-2")
    assert client.get(a) == b"1"
    with client.synced_sequence() as seq:
        seq.delete(a)
    assert not client.exists(a)


def test_asserts(client: Client, prefix: bytes) -> None:
    k = prefix + b"k"
    client.assert_(k, None)
    client.set(k, b"v")
    client.assert_(k, b"v")
    client.assert_exists(k)
    with pytest.raises(AssertionFailed):
        client.assert_(k, b"w")
    with pytest.raises(AssertionFailed):
        client.assert_exists(prefix + b"missing")


def test_key_count_nop_and_unknown_user_function(client: Client, prefix: bytes) -> None:
    before = client.get_key_count()
    client.set(prefix + b"new", b"1")
    assert client.get_key_count() == before + 1
    client.nop()
    with pytest.raises(BadInput):
        client.user_function("no-such-function", b"arg")


def test_read_your_writes_on_a_follower_with_at_least(
    client: Client, cluster: ClusterProcs, prefix: bytes
) -> None:
    """§5: the master's GET_TXID stamp, used with AT_LEAST on a follower, sees the write."""
    k = prefix + b"k"
    client.set(k, b"fresh")
    master = client.who_master()
    assert master is not None
    stamp = client.get_txid(node=master)
    follower = next(n for n in cluster.names if n != master)
    assert client.call(codec.Get(key=k, consistency=stamp), node=follower) == b"fresh"
    assert stamp.stamp > 0


def test_information_commands(client: Client, cluster: ClusterProcs) -> None:
    master = client.who_master()
    assert master in cluster.names
    for name in cluster.names:
        assert client.who_master(node=name) == master
        assert client.ping(node=name).startswith("Arakoon ")
        assert client.version(node=name).major == 1
        # every voter is up and linked, and a master is known: progress is possible everywhere
        assert client.expect_progress_possible(node=name) is True
    assert client.current_state(node=master) == "Stable_master"
    follower = next(n for n in cluster.names if n != master)
    assert client.current_state(node=follower) == "Slave_steady_state"
    stats = client.statistics(node=master)
    assert stats.name == "arakoon_stats"


def test_consistent_read_on_a_follower_is_not_master(cluster: ClusterProcs) -> None:
    """§6: a non-master answers consistent reads with E_NOT_MASTER naming the master."""
    master = cluster.wait_master()
    follower = next(n for n in cluster.names if n != master)
    answer = cluster.call(follower, codec.Get(key=b"x"))
    assert isinstance(answer, codec.ErrorResponse)
    assert answer.code == codec.ErrorCode.NOT_MASTER
    assert answer.message == master.encode()
    # The same read with no guarantees is served by the follower from its own store, once the
    # value has reached it (followers learn a slot when the next one arrives: lease renewals).
    assert cluster.call(master, codec.Set(key=b"x", value=b"relaxed")) is None
    wait_until(
        lambda: (
            cluster.call(follower, codec.Get(key=b"x", consistency=NO_GUARANTEES)) == b"relaxed"
        ),
        f"{follower} serves the value without guarantees",
        timeout=10,
        interval=0.05,
    )


def test_drop_master_moves_mastership(client: Client, cluster: ClusterProcs, prefix: bytes) -> None:
    """§8.7 DROP_MASTER: the master steps down and another node takes over."""
    old = cluster.wait_master()
    client.call(codec.DropMaster(), node=old)

    def moved() -> str | None:
        new = cluster.who_master(old)
        return new if new is not None and new != old else None

    new = wait_until(moved, f"mastership moved away from {old}", timeout=20)
    assert new in cluster.names
    client.set(prefix + b"after-drop", b"ok")
    assert client.get(prefix + b"after-drop") == b"ok"
    with pytest.raises(NotMaster):
        client.call(codec.Set(key=prefix + b"x", value=b"y"), node=old)


def test_client_library_from_cluster_toml(cluster: ClusterProcs, prefix: bytes) -> None:
    with Client.from_config(Path(cluster.config), retry_secs=15.0) as c:
        c.set(prefix + b"cfg", b"1")
        assert c.get(prefix + b"cfg") == b"1"
