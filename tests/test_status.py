"""``parakoon status`` against real clusters: the right master, roles and lag, a node down,
a node lagging, and no quorum (exit 1, no master)."""

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


def status(cluster: ClusterProcs) -> tuple[int, dict[str, Any]]:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "parakoon_node",
            "status",
            "--config",
            str(cluster.config),
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode in (0, 1), done.stderr
    return done.returncode, json.loads(done.stdout)


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
    tests' proxies): that follower still answers, and status shows how far behind it is."""
    cluster = LinkedCluster(tmp_path / "cluster", lease_period_secs=LEASE)
    try:
        cluster.start_all()
        master = cluster.wait_master()
        behind = next(n for n in cluster.names if n != master)
        cluster.cut(master, behind)
        for k in range(30):
            assert cluster.call(master, codec.Set(key=b"lag%02d" % k, value=b"v")) is None

        def lagging() -> dict[str, Any] | None:
            code, got = status(cluster)
            rows = {n["name"]: n for n in got["nodes"]}
            return got if code == 0 and rows[behind]["lag"] >= 30 else None

        got = wait_until(lagging, f"status shows {behind} behind", timeout=10)
        assert isinstance(got, dict)
        rows = {n["name"]: n for n in got["nodes"]}
        print(json.dumps(rows[behind], indent=1))
        assert rows[behind]["reachable"] and rows[behind]["role"] == "follower"
        assert got["master"] == master and rows[master]["lag"] == 0
        cluster.heal_links()
        wait_until(
            lambda: all(n["lag"] == 0 for n in status(cluster)[1]["nodes"]),
            "the follower caught up",
            timeout=20,
        )
    finally:
        cluster.shutdown()
