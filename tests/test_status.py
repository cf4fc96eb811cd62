"""``parakoon status`` against real clusters: the right master, roles and lag, a node down,
and no quorum (exit 1, no master)."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

from parakoon_client import codec

from .conftest import ClusterProcs, wait_until

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
