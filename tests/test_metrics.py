"""The Prometheus endpoint of a real node: scraped over HTTP, and the figures move with writes;
its ``/health`` and ``/ready`` probes follow the node's liveness and its quorum."""

from __future__ import annotations

import functools
import json
import time
import urllib.error
import urllib.request
from typing import Any

from parakoon_testing import wait_until
from prometheus_client.parser import text_string_to_metric_families

from parakoon_client import codec

from .conftest import ClusterProcs


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def test_metrics_endpoint_reports_role_and_moves_with_writes(cluster_factory: Any) -> None:
    cluster: ClusterProcs = cluster_factory(lease_period_secs=1.0, metrics=True)
    cluster.start_all()
    master = cluster.wait_master()
    port = cluster.metrics_ports[master]
    before = scrape(port)
    assert value(before, "parakoon_is_master") == 1.0
    assert value(before, "parakoon_role", role="leader") == 1.0
    follower = next(n for n in cluster.names if n != master)
    assert value(scrape(cluster.metrics_ports[follower]), "parakoon_role", role="follower") == 1.0
    for k in range(20):
        assert cluster.call(master, codec.Set(key=b"m%d" % k, value=b"v")) is None

    def applied() -> dict[tuple[str, tuple[tuple[str, str], ...]], float] | None:
        samples = scrape(port)
        return samples if value(samples, "parakoon_applied_updates_total") >= 20 else None

    after = wait_until(applied, "the master reports 20 applied updates", timeout=10)
    assert value(after, "parakoon_commits_total") > value(before, "parakoon_commits_total")
    assert value(after, "parakoon_applied_updates_total") >= 20
    assert value(after, "parakoon_applied_slot") > value(before, "parakoon_applied_slot")
    assert value(after, "parakoon_keys") >= 20
    assert value(after, "parakoon_fsync_seconds_count") > value(
        before, "parakoon_fsync_seconds_count"
    )
    assert value(after, "parakoon_batch_requests_count") >= 1

    # Where the 20 writes spent their time: the master's stages count them one by one (per
    # request), and each mean over them is positive and below the write timeout (a stamp taken
    # from the wrong clock or never reset would show as zero, negative or huge). Differences
    # from before the writes: the election and the lease renewals wrote to the log too.
    def moved(stage: str) -> tuple[float, float]:
        def diff(part: str) -> float:
            name = f"parakoon_write_stage_seconds_{part}"
            return value(after, name, stage=stage) - value(before, name, stage=stage)

        return diff("count"), diff("sum")

    for stage in ("batching", "slot_wait", "replicate", "commit", "apply", "respond"):
        count, total = moved(stage)
        assert count == 20, (stage, count)
        assert 0 <= total / count < 10, (stage, total, count)
    for stage in ("persist_queue", "fsync", "persist_return"):
        count, total = moved(stage)
        assert count >= 20, (stage, count)  # every write job: ours, and renewals
        assert 0 < total / count < 10, (stage, total, count)

    # Each peer dials the master on its own schedule: one whose first dial came before the
    # master listened redials after a back-off, which may come after our 20 writes (the master
    # replicates over its own outgoing links and needs none of these). So wait for both.
    def dialled_in() -> dict[tuple[str, tuple[tuple[str, str], ...]], float] | None:
        samples = scrape(port)
        return samples if value(samples, "parakoon_peer_connections_accepted_total") >= 2 else None

    after = wait_until(dialled_in, "both peers have dialled the master", timeout=10)
    assert value(after, "parakoon_peer_connections_refused_total") == 0
    for peer in cluster.names:
        if peer != master:
            assert value(after, "parakoon_peer_connected", peer=peer) == 1.0
            assert ("parakoon_peer_queue_dropped_total", (("peer", peer),)) in after


def probe(port: int, path: str) -> tuple[int, dict[str, Any]]:
    """HTTP status and JSON body of ``/health`` or ``/ready``."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_ready_turns_503_without_quorum_and_200_after(cluster_factory: Any) -> None:
    lease = 1.0
    cluster: ClusterProcs = cluster_factory(lease_period_secs=lease, metrics=True)
    cluster.start_all()
    master = cluster.wait_master(timeout=30)

    def ready(name: str) -> bool:
        return probe(cluster.metrics_ports[name], "/ready")[0] == 200

    for name in cluster.names:
        wait_until(functools.partial(ready, name), f"{name} ready", timeout=10)
        status, body = probe(cluster.metrics_ports[name], "/health")
        assert status == 200 and body["live"] is True, body
    survivor = master
    for name in cluster.names:
        if name != survivor:
            cluster.kill(name)
    lost = time.monotonic()
    wait_until(
        lambda: probe(cluster.metrics_ports[survivor], "/ready")[0] == 503,
        "the survivor's /ready turned 503",
        timeout=10,
        interval=0.05,
    )
    took = time.monotonic() - lost
    status, body = probe(cluster.metrics_ports[survivor], "/ready")
    print(f"/ready 503 after {took:.2f} s ({took / lease:.2f} L): {body}")
    assert took < 2 * lease + 0.5, f"{took:.2f} s"  # half a second for a loaded machine
    assert body["ready"] is False and body["why_not"], body
    assert probe(cluster.metrics_ports[survivor], "/health")[0] == 200  # live, just not ready
    for name in cluster.names:
        if name != survivor:
            cluster.start(name)
    wait_until(
        lambda: all(probe(cluster.metrics_ports[n], "/ready")[0] == 200 for n in cluster.names),
        "every node ready again",
        timeout=30,
    )
