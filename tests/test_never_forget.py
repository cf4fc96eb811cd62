"""Never forget a chosen value (R9): lost disks, bootstrap and cluster identity, on real processes.

Each test starts its own 3-node cluster (``conftest.ClusterProcs``) on 127.0.0.1 with a short
lease, loses a node's state for real (the process is killed with SIGKILL and its ``home_dir``
deleted), and checks from outside, with the Arakoon protocol, that nothing acknowledged is lost
and that no two histories mix.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from typing import Any

from parakoon_testing import holds_for, wait_until

from parakoon_client import codec

from .conftest import ClusterProcs

LEASE = 1.0


def acked_writes(cluster: ClusterProcs, master: str, count: int, prefix: str) -> dict[bytes, bytes]:
    """``count`` writes through ``master``, one at a time; return the acknowledged ones."""
    acked: dict[bytes, bytes] = {}
    with cluster.connect(master) as conn:
        for k in range(count):
            key, value = f"{prefix}{k:04d}".encode(), f"v{k}".encode()
            if conn.call(codec.Set(key=key, value=value)) is None:
                acked[key] = value
    return acked


def store_of(cluster: ClusterProcs, name: str) -> dict[bytes, bytes]:
    entries = cluster.call(
        name,
        codec.RangeEntries(first=None, max_keys=-1, consistency=codec.NO_GUARANTEES),
        timeout=10.0,
    )
    assert isinstance(entries, list), f"{name}: {entries!r}"
    return dict(entries)


def digest(store: dict[bytes, bytes]) -> str:
    h = hashlib.sha256()
    for key in sorted(store):
        h.update(len(key).to_bytes(4, "little") + key + store[key])
    return h.hexdigest()


def consistent_master(cluster: ClusterProcs, names: list[str]) -> str | None:
    """A node among ``names`` that answers a consistent read right now, if any."""
    for name in names:
        try:
            result = cluster.call(name, codec.Exists(key=b"?"), timeout=1.0)
        except OSError:
            continue
        if result is False or result is True:
            return name
    return None


def wipe(cluster: ClusterProcs, name: str) -> None:
    """The node's disk is replaced: every byte of its ``home_dir`` is gone."""
    if cluster.running(name):
        cluster.kill(name)
    shutil.rmtree(cluster.home(name))


def log_events(cluster: ClusterProcs, name: str) -> list[dict[str, Any]]:
    path = cluster.log_dir / f"{name}.log"
    out = []
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            out.append(json.loads(line))
    return out


def _lose_m_and_c(
    cluster: ClusterProcs, env: dict[str, str] | None
) -> tuple[dict[bytes, bytes], str, str, str]:
    """M and C acknowledge 200 writes while A is down; M crashes, C's disk is replaced (C starts
    with ``env``), A returns. Returns the acknowledged writes and the names M, A, C."""
    cluster.start_all()
    m = cluster.wait_master()
    a, c = [n for n in cluster.names if n != m]
    cluster.kill(a)
    acked = acked_writes(cluster, m, 200, "w")
    assert len(acked) == 200
    cluster.kill(m)
    wipe(cluster, c)
    cluster.start(c, env=env)
    cluster.start(a)
    return acked, m, a, c


def test_the_amnesia_fault_forgets_acknowledged_writes(cluster_factory: Any) -> None:
    """The broken variant on real processes: with ``PARAKOON_TEST_FAULT=amnesia`` the wiped C
    votes at once (the old behaviour), and A and C serve a store without the 200 writes. This
    is what the next test shows cannot happen with rule R9."""
    cluster = cluster_factory(lease_period_secs=LEASE)
    acked, _m, a, c = _lose_m_and_c(cluster, {"PARAKOON_TEST_FAULT": "amnesia"})
    master = cluster.wait_master(timeout=30.0, among=[a, c])
    store = store_of(cluster, master)
    missing = [k for k in acked if store.get(k) != acked[k]]
    print(f"amnesia: master {master} serves a store missing {len(missing)} of 200 writes")
    assert missing, "the amnesia fault did not lose anything: the scenario does not bite"


def test_a_wiped_voter_never_helps_forget_acknowledged_writes(cluster_factory: Any) -> None:
    """The scenario of the issue: M and C acknowledge 200 writes while A is down; M crashes,
    C's disk is replaced, A returns. A and the empty C must not elect a master that lacks the
    writes; once M is back every write is readable and the three stores are equal."""
    cluster = cluster_factory(lease_period_secs=LEASE)
    acked, m, a, c = _lose_m_and_c(cluster, None)
    cluster.wait_ready(a)
    cluster.wait_ready(c)

    # For several lease periods: nobody may serve as master without M (C must not vote).
    def nobody_serves() -> bool:
        serving = consistent_master(cluster, [a, c])
        if serving is not None:
            store = store_of(cluster, serving)
            missing = [k for k in acked if store.get(k) != acked[k]]
            raise AssertionError(f"{serving} serves as master without {len(missing)} writes")
        return True

    holds_for(6 * LEASE, nobody_serves, "no master without M")
    status = cluster.call(c, codec.CurrentState(), timeout=2.0)
    assert isinstance(status, str) and status.startswith("Rebuilding"), status
    assert any(e.get("event") == "rebuild.waiting" for e in log_events(cluster, c))
    # M returns: a master forms, and nothing acknowledged is missing anywhere.
    cluster.start(m)
    master = cluster.wait_master(timeout=30.0)
    with cluster.connect(master) as conn:
        for key, value in acked.items():
            assert conn.call(codec.Get(key=key)) == value, f"{key!r} lost"
    marker = (b"marker", b"after")
    assert cluster.call(master, codec.Set(key=marker[0], value=marker[1])) is None

    def equal_stores() -> dict[str, dict[bytes, bytes]] | None:
        stores = {n: store_of(cluster, n) for n in cluster.names}
        same = len({digest(s) for s in stores.values()}) == 1
        marked = all(s.get(marker[0]) == marker[1] for s in stores.values())
        return stores if same and marked else None

    stores = wait_until(equal_stores, "every store equal, with the marker", timeout=30.0,
                        interval=0.2)  # fmt: skip
    assert isinstance(stores, dict)
    assert all(stores[c].get(k) == v for k, v in acked.items())
    # C finishes rebuilding and votes again.
    wait_until(
        lambda: any(e.get("event") == "rebuild.done" for e in log_events(cluster, c)),
        f"{c} finished rebuilding",
        timeout=20 * LEASE,
        interval=0.2,
    )
    identity = json.loads((cluster.home(c) / "identity.json").read_text())
    assert identity["status"] == "voter"


def test_two_empty_nodes_next_to_a_history_never_elect_a_master(cluster_factory: Any) -> None:
    cluster = cluster_factory(lease_period_secs=LEASE)
    cluster.start_all()
    m = cluster.wait_master()
    acked = acked_writes(cluster, m, 20, "h")
    others = [n for n in cluster.names if n != m]
    keeper = others[0]
    for name in cluster.names:
        cluster.kill(name)
    # Two nodes lose their state; the one with the history stays down for a while.
    for name in cluster.names:
        if name != keeper:
            shutil.rmtree(cluster.home(name))
    empty = [n for n in cluster.names if n != keeper]
    for name in empty:
        cluster.start(name)
    for name in empty:
        cluster.wait_ready(name)

    def nothing_formed() -> bool:
        assert consistent_master(cluster, empty) is None, "two empty nodes formed a cluster"
        for name in empty:
            result = cluster.call(name, codec.Set(key=b"x", value=b"y"), timeout=2.0)
            assert isinstance(result, codec.ErrorResponse), f"{name} accepted a write"
        return True

    holds_for(5 * LEASE, nothing_formed, "no master and no write among the empty nodes",
              interval=0.2)  # fmt: skip
    for name in empty:
        identity = json.loads((cluster.home(name) / "identity.json").read_text())
        assert identity["status"] == "founding" and identity["cluster_uuid"] is None, identity
        state = cluster.call(name, codec.CurrentState(), timeout=2.0)
        assert isinstance(state, str) and state.startswith("Founding"), state
    # The node with the history comes back. Two of three voters lost their state, more than a
    # 3-node cluster tolerates: the empty ones join its history as rebuilding nodes, and the
    # cluster stays unavailable rather than forgetful (recovery is an operator's decision,
    # see test_force_new_cluster_reseeds_from_the_best_survivor).
    cluster.start(keeper)
    cluster.wait_ready(keeper)
    states: dict[str, Any] = {}

    def no_master() -> bool:
        assert consistent_master(cluster, cluster.names) is None, "a master without a quorum"
        states.update({n: cluster.call(n, codec.CurrentState(), timeout=2.0) for n in empty})
        return True

    holds_for(8 * LEASE, no_master, "no master without a quorum", interval=0.2)
    assert all(str(s).startswith("Rebuilding") for s in states.values()), states
    for name in empty:
        identity = json.loads((cluster.home(name) / "identity.json").read_text())
        assert identity["status"] == "rebuilding", identity
    store = store_of(cluster, keeper)
    assert all(store.get(k) == v for k, v in acked.items() if k in store)


def test_a_node_from_another_history_is_refused_naming_both(cluster_factory: Any) -> None:
    first = cluster_factory(lease_period_secs=LEASE)
    first.start_all()
    first.wait_master()
    victim = first.names[2]
    first.kill(victim)
    # A second cluster of the same name forms elsewhere; its node_2's home_dir is then put in
    # place of the first cluster's node_2 (an operator restoring the wrong disk).
    second = cluster_factory(lease_period_secs=LEASE)
    second.start_all()
    second.wait_master()
    second.kill(second.names[2])
    shutil.rmtree(first.home(victim))
    shutil.copytree(second.home(second.names[2]), first.home(victim))
    theirs = json.loads((first.home(victim) / "identity.json").read_text())["cluster_uuid"]
    ours = json.loads((first.home(first.names[0]) / "identity.json").read_text())["cluster_uuid"]
    assert theirs != ours
    first.start(victim)

    def refusals() -> list[dict[str, Any]]:
        return [
            e
            for name in first.names
            for e in log_events(first, name)
            if e.get("event") in ("peer.refused_incoming", "peer.refused")
            and "different cluster history" in str(e.get("reason"))
        ]

    refused = wait_until(refusals, "a refusal naming both histories", timeout=10.0, interval=0.2)
    assert isinstance(refused, list)
    reason = str(refused[0]["reason"])
    assert ours in reason and theirs in reason, reason
    # Both sides refuse: the stranger's own log says so too.
    assert any(
        "different cluster history" in str(e.get("reason")) for e in log_events(first, victim)
    ), first.tail_logs()
    # The first cluster keeps working with its two nodes; the stranger never joins it.
    master = first.wait_master(among=first.names[:2])
    assert first.call(master, codec.Set(key=b"k", value=b"v")) is None
    assert first.call(victim, codec.Get(key=b"k", consistency=codec.NO_GUARANTEES)) != b"v"


def test_force_new_cluster_reseeds_from_the_best_survivor(cluster_factory: Any) -> None:
    """More lost disks than tolerated: an operator recovers deliberately from one node."""
    cluster = cluster_factory(lease_period_secs=LEASE)
    cluster.start_all()
    m = cluster.wait_master()
    acked = acked_writes(cluster, m, 30, "f")
    for name in cluster.names:
        cluster.kill(name)
    survivor = m
    old = json.loads((cluster.home(survivor) / "identity.json").read_text())["cluster_uuid"]
    for name in cluster.names:
        if name != survivor:
            shutil.rmtree(cluster.home(name))
    cmd = [sys.executable, "-m", "parakoon_node", "force-new-cluster"]
    out = subprocess.run(
        [*cmd, "--config", str(cluster.config), "--node", survivor],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert "seed of a new cluster history" in out.stdout
    cluster.start_all()
    master = cluster.wait_master(timeout=30.0)
    with cluster.connect(master) as conn:
        for key, value in acked.items():
            assert conn.call(codec.Get(key=key)) == value
    new = json.loads((cluster.home(survivor) / "identity.json").read_text())["cluster_uuid"]
    assert new != old


def test_a_forked_replica_is_detected_and_stops_serving(cluster_factory: Any) -> None:
    """Replicas compare their store hashes at equal slots: a node whose store forked (here by
    the test-only fault ``fork-store``, which drops an update at apply) is out-voted, says so,
    and serves nothing; the others name it and keep serving."""
    cluster = cluster_factory(lease_period_secs=LEASE)
    forked = cluster.names[2]
    for name in cluster.names:
        cluster.start(name, env={"PARAKOON_TEST_FAULT": "fork-store"} if name == forked else None)
    master = cluster.wait_master()
    if master == forked:
        assert cluster.call(master, codec.DropMaster()) is None
        master = cluster.wait_master(timeout=30.0, among=[n for n in cluster.names if n != forked])
    acked_writes(cluster, master, 5, "d")

    def noticed() -> bool:
        state = cluster.call(forked, codec.CurrentState(), timeout=2.0)
        return isinstance(state, str) and state.startswith("Diverged")

    wait_until(noticed, f"{forked} reports Diverged", timeout=20 * LEASE)
    got = cluster.call(forked, codec.Get(key=b"d0000", consistency=codec.NO_GUARANTEES))
    assert isinstance(got, codec.ErrorResponse) and b"serves nothing" in got.message, got
    events = [e for e in log_events(cluster, forked) if e.get("event") == "divergence.detected"]
    assert events and "slot" in events[0], events
    # The majority keeps serving and names the fork.
    healthy = [n for n in cluster.names if n != forked]
    assert cluster.call(master, codec.Set(key=b"after", value=b"1")) is None

    def named_the_fork(name: str) -> bool:
        return any(
            e.get("event") == "divergence.detected" and e.get("peer") == forked
            for e in log_events(cluster, name)
        )

    # Each healthy node compares the forked node's claims on its own schedule (every L).
    wait_until(
        lambda: all(named_the_fork(n) for n in healthy),
        f"every healthy node named {forked}",
        timeout=20 * LEASE,
        interval=0.2,
    )
