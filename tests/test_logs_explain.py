"""A node's log says what an operator must know, once, with the reason and the addresses:
quorum lost and regained, a master whose lease was not renewed, peers it cannot reach.
(Before, a master that lost its quorum logged only ``peer.disconnected``, and an unreachable
peer's address was never logged.)"""

from __future__ import annotations

import json
from typing import Any

from parakoon_testing import wait_until

from .conftest import ClusterProcs

LEASE = 1.0


def events(cluster: ClusterProcs, name: str, event: str) -> list[dict[str, Any]]:
    out = []
    for line in (cluster.log_dir / f"{name}.log").read_text(errors="replace").splitlines():
        if line.startswith("{"):
            record = json.loads(line)
            if record.get("event") == event:
                out.append(record)
    return out


def test_quorum_lost_and_regained_are_logged_with_addresses(cluster_factory: Any) -> None:
    cluster: ClusterProcs = cluster_factory(lease_period_secs=LEASE)
    cluster.start_all()
    master = cluster.wait_master(timeout=30)
    # The master has seen its quorum (a starting node's missing links are not a loss).
    wait_until(lambda: events(cluster, master, "quorum.reached"), "quorum.reached", timeout=10)
    others = [n for n in cluster.names if n != master]
    for name in others:
        cluster.kill(name)
    lost = wait_until(
        lambda: events(cluster, master, "quorum.lost"), "quorum.lost logged", timeout=10
    )
    assert len(lost) == 1, lost
    for name in others:
        assert lost[0]["unreachable"][name] == f"127.0.0.1:{cluster.peer_ports[name]}", lost
    wait_until(
        lambda: events(cluster, master, "lease.not_renewed"), "lease.not_renewed", timeout=10
    )
    unreachable = wait_until(
        lambda: events(cluster, master, "peer.unreachable"), "peer.unreachable", timeout=10
    )
    assert isinstance(unreachable, list)
    assert {u["addr"] for u in unreachable} <= {
        f"127.0.0.1:{cluster.peer_ports[n]}" for n in others
    }
    for name in others:
        cluster.start(name)
    wait_until(lambda: events(cluster, master, "quorum.regained"), "quorum.regained", timeout=20)
    # Once each, not once per check: the loop runs every L/10.
    assert len(events(cluster, master, "quorum.lost")) == 1
    per_peer = [u["peer"] for u in events(cluster, master, "peer.unreachable")]
    assert all(per_peer.count(p) <= 2 for p in set(per_peer)), per_peer  # rate-limited
