"""``parakoon status`` against real clusters: the right master, roles and lag, a node down,
a node lagging, and no quorum (exit 1, no master); with metrics ports, what each node's
``/status`` adds: the master's lease, WAL size, the head snapshot's slot and which nodes reach
which."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from parakoon_testing import wait_until

from parakoon_client import codec

from .conftest import ClusterProcs
from .faults.links import LinkedCluster

LEASE = 1.0


def run_status(cluster: ClusterProcs, *extra: str) -> tuple[int, str]:
    done = subprocess.run(
        [sys.executable, "-m", "parakoon_node", "status", "--config", str(cluster.config), *extra],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode in (0, 1), done.stderr
    return done.returncode, done.stdout


def status(cluster: ClusterProcs) -> tuple[int, dict[str, Any]]:
    code, out = run_status(cluster, "--json")
    return code, json.loads(out)


def test_status_follows_the_cluster(cluster_factory: Any) -> None:
    cluster: ClusterProcs = cluster_factory(lease_period_secs=LEASE)
    cluster.start_all()
    master = cluster.wait_master()
    for k in range(20):
        assert cluster.call(master, codec.Set(key=b"s%02d" % k, value=b"v")) is None

    def healthy() -> dict[str, Any] | None:
        code, got = status(cluster)
        lags = [n["lag"] for n in got["nodes"]]
        return got if code == 0 and got["master"] == master and lags == [0, 0, 0] else None

    got = wait_until(healthy, "status shows the master and no lag", timeout=10)
    assert isinstance(got, dict)
    print(json.dumps(got, indent=1))
    roles = {n["name"]: n["role"] for n in got["nodes"]}
    assert roles[master] == "master"
    assert all(r == "follower" for n, r in roles.items() if n != master)
    assert got["quorum"] is True
    applied = {n["applied"] for n in got["nodes"]}
    assert len(applied) == 1 and applied.pop() >= 20
    # No metrics port in this file: what only /status knows is null, and the reason is given.
    for n in got["nodes"]:
        assert n["metrics"] is None and "metrics_port" in n["status_error"]
        assert n["lease_remaining_secs"] is None and n["wal_bytes"] is None and n["links"] is None
    assert got["lease_remaining_secs"] is None
    code, text = run_status(cluster)
    print(text)
    assert code == 0 and f"master {master}," in text
    assert text.count("no metrics_port: lease, WAL, snapshot and links unknown") == 3

    follower = next(n for n in cluster.names if n != master)
    cluster.kill(follower)
    code, got = status(cluster)
    assert code == 0 and got["master"] == master and got["quorum"] is True
    down = next(n for n in got["nodes"] if n["name"] == follower)
    assert down["role"] == "unreachable" and not down["reachable"]
    assert down["client"].endswith(str(cluster.client_ports[follower]))

    other = next(n for n in cluster.names if n not in (master, follower))
    cluster.kill(other)

    def lost() -> dict[str, Any] | None:
        code, got = status(cluster)
        return got if code == 1 and got["master"] is None else None

    got = wait_until(lost, "status reports no master once the quorum is gone", timeout=4 * LEASE)
    assert isinstance(got, dict)
    assert got["quorum"] is False


def test_status_shows_a_lagging_follower(tmp_path: Path) -> None:
    """The master's messages to one follower vanish (its peer link is cut, through the fault
    tests' proxies): that follower still answers, status shows how far behind it is, and its
    running for election does not hide the master (a quorum of voters names it)."""
    cluster = LinkedCluster(tmp_path / "cluster", lease_period_secs=LEASE)
    try:
        cluster.start_all()
        master = cluster.wait_master()
        behind = next(n for n in cluster.names if n != master)
        cluster.cut(master, behind)
        for k in range(30):
            assert cluster.call(master, codec.Set(key=b"lag%02d" % k, value=b"v")) is None

        seen: list[tuple[int, dict[str, Any]]] = []

        def lagging() -> dict[str, Any] | None:
            code, got = status(cluster)
            seen[:] = [(code, got)]
            rows = {n["name"]: n for n in got["nodes"]}
            return got if code == 0 and rows[behind]["lag"] >= 30 else None

        got = wait_until(
            lagging,
            lambda: f"status shows {behind} behind; last seen (exit code, output): {seen}",
            timeout=20,
        )
        assert isinstance(got, dict)
        rows = {n["name"]: n for n in got["nodes"]}
        print(json.dumps(rows[behind], indent=1))
        # Cut off from the master, the follower runs for election once its lease check runs
        # out (prevote keeps it from deposing the master): a candidate, or a follower before.
        assert rows[behind]["reachable"] and rows[behind]["role"] in ("follower", "candidate")
        assert got["master"] == master and rows[master]["lag"] == 0
        cluster.heal_links()
        wait_until(
            lambda: all(n["lag"] == 0 for n in status(cluster)[1]["nodes"]),
            "the follower caught up",
            timeout=20,
        )
    finally:
        cluster.shutdown()


def test_status_shows_lease_wal_snapshot_and_links(cluster_factory: Any) -> None:
    """Every node has a metrics port: the master's lease is running, every WAL takes bytes, a
    collapse shows up as the snapshot slot, every node reaches every other; once a follower is
    killed, the two others show their link to it down."""
    cluster: ClusterProcs = cluster_factory(lease_period_secs=LEASE, metrics=True)
    cluster.start_all()
    master = cluster.wait_master()
    for k in range(30):
        assert cluster.call(master, codec.Set(key=b"w%02d" % k, value=b"v" * 100)) is None
    collapsed = cluster.call(master, codec.Collapse(tlogs_to_keep=1), timeout=30.0)
    assert not isinstance(collapsed, codec.ErrorResponse), collapsed
    everyone = set(cluster.names)

    def healthy() -> dict[str, Any] | None:
        code, got = status(cluster)
        rows = {n["name"]: n for n in got["nodes"]}
        links_up = all(
            rows[n]["links"] is not None
            and set(rows[n]["links"]) == everyone - {n}
            and all(link["connected"] for link in rows[n]["links"].values())
            for n in everyone
        )
        lease = rows[master]["lease_remaining_secs"]
        ok = code == 0 and got["master"] == master and links_up and lease is not None
        return got if ok and lease > 0 else None

    got = wait_until(healthy, "status shows the master's lease and every link up", timeout=10)
    assert isinstance(got, dict)
    print(json.dumps(got, indent=1))
    rows = {n["name"]: n for n in got["nodes"]}
    assert 0 < got["lease_remaining_secs"] <= LEASE
    assert got["lease_remaining_secs"] == rows[master]["lease_remaining_secs"]
    for name, row in rows.items():
        assert row["status_error"] is None
        assert row["metrics"] == f"127.0.0.1:{cluster.metrics_ports[name]}"
        assert row["wal_bytes"] > 0 and row["wal_segments"] >= 1
        assert row["identity"] == "voter" and row["diverged"] is None
        assert row["divergent_peers"] == [] and row["rebuild_waiting_for"] == []
        assert row["disk_stalled"] is None and row["disk_low"] is None
        for peer, link in row["links"].items():
            assert link["address"] == cluster.peer_address(peer)
            # The master and its followers hear from each other at least once a lease period
            # (renewals and their answers); followers do not talk to each other.
            if master in (name, peer):
                assert link["last_heard_secs"] is not None and link["last_heard_secs"] < LEASE
        # A follower sees the master's lease too (its own view of it, for the full period).
        assert row["lease_remaining_secs"] is not None and 0 <= row["lease_remaining_secs"] <= LEASE
    snapshot = rows[master]["snapshot_slot"]
    assert snapshot is not None and 30 <= snapshot <= rows[master]["applied"]

    follower = next(n for n in cluster.names if n != master)
    cluster.kill(follower)
    alive = sorted(everyone - {follower})

    def link_down() -> dict[str, Any] | None:
        code, got = status(cluster)
        rows = {n["name"]: n for n in got["nodes"]}
        down = all(rows[n]["links"][follower]["connected"] is False for n in alive)
        up = (
            rows[alive[0]]["links"][alive[1]]["connected"]
            and rows[alive[1]]["links"][alive[0]]["connected"]
        )
        return got if code == 0 and down and up else None

    got = wait_until(link_down, f"the others see their link to {follower} down", timeout=10)
    assert isinstance(got, dict)
    rows = {n["name"]: n for n in got["nodes"]}
    gone = rows[follower]
    assert not gone["reachable"] and gone["links"] is None
    assert gone["status_error"] is not None and gone["lease_remaining_secs"] is None
    code, text = run_status(cluster)
    print(text)
    assert code == 0
    assert f"{follower} DOWN" in text and "lease" in text and "snapshot slot" in text
