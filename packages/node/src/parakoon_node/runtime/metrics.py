"""Prometheus metrics of one node, served over HTTP on ``metrics_port`` when configured.

Formatting and the HTTP endpoint are ``prometheus_client``'s (its WSGI server runs in a daemon
thread). Gauges are computed at scrape time by a collector that asks the node for its
:class:`~parakoon_node.runtime.status.NodeStatus`: its counters are plain ints and floats updated
on the event loop, and reading them from the scrape thread sees some recent value, which is all a
metric promises. Histograms (fsync latency, batch sizes)
are observed as things happen.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anyio
import anyio.abc
import structlog
from prometheus_client import CollectorRegistry, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from .status import Observable, StatusSource

log = structlog.get_logger("parakoon.metrics")

ROLES = ("candidate", "leader", "follower", "catching_up")


class NodeCollector(Collector):
    def __init__(self, source: StatusSource) -> None:
        self._source = source

    def collect(self) -> Iterator[Any]:
        status = self._source.status()
        role = GaugeMetricFamily(
            "parakoon_role", "Current Paxos role (1 for the role held)", labels=["role"]
        )
        current = status.role.value
        for name in ROLES:
            role.add_metric([name], 1.0 if name == current else 0.0)
        yield role
        identity = GaugeMetricFamily(
            "parakoon_identity_state",
            "1 for the node's standing in its cluster history: founding (no history yet), "
            "rebuilding (lost state, not voting) or voter",
            labels=["state"],
        )
        now = status.identity
        for name in ("founding", "rebuilding", "voter"):
            identity.add_metric([name], 1.0 if name == now else 0.0)
        yield identity
        yield GaugeMetricFamily(
            "parakoon_diverged",
            "1 once a quorum of voters was found to hold another store than this node's",
            value=1.0 if status.diverged is not None else 0.0,
        )
        yield GaugeMetricFamily(
            "parakoon_divergent_peers",
            "Peers whose store was found to differ from this node's at the same slot",
            value=float(len(status.divergent_peers)),
        )
        yield GaugeMetricFamily(
            "parakoon_is_master",
            "1 while master with a valid lease",
            value=1.0 if status.lease_valid else 0.0,
        )
        yield GaugeMetricFamily(
            "parakoon_applied_slot",
            "Last slot applied to the store",
            value=float(status.applied_i),
        )
        last = status.wal_last_slot
        yield GaugeMetricFamily(
            "parakoon_wal_last_slot",
            "Last slot in the write-ahead log",
            value=float(-1 if last is None else last),
        )
        yield GaugeMetricFamily("parakoon_keys", "Keys in the store", value=float(status.keys))
        c = status.counters
        yield CounterMetricFamily(
            "parakoon_commits", "Slots applied (chosen values)", value=float(c.applied_slots)
        )
        yield CounterMetricFamily(
            "parakoon_applied_updates", "Client updates applied", value=float(c.applied_updates)
        )
        yield CounterMetricFamily(
            "parakoon_client_requests", "Client writes submitted", value=float(c.requests_submitted)
        )
        yield CounterMetricFamily(
            "parakoon_role_changes", "Role changes", value=float(c.role_changes)
        )
        yield CounterMetricFamily(
            "parakoon_fsyncs", "WAL group commits (fsyncs)", value=float(c.fsyncs)
        )
        yield CounterMetricFamily(
            "parakoon_collapses", "Head snapshots written", value=float(c.collapses)
        )
        yield CounterMetricFamily("parakoon_catchups", "Catch-ups started", value=float(c.catchups))
        connected = GaugeMetricFamily(
            "parakoon_peer_connected",
            "1 while the outgoing link to the peer is up",
            labels=["peer"],
        )
        dropped = CounterMetricFamily(
            "parakoon_peer_queue_dropped",
            "Outgoing peer frames dropped by the leaky queue",
            labels=["peer"],
        )
        queued = GaugeMetricFamily(
            "parakoon_peer_queue_items", "Frames waiting for the peer", labels=["peer"]
        )
        for peer in sorted(status.peers, key=lambda p: p.name):
            connected.add_metric([peer.name], 1.0 if peer.connected else 0.0)
            dropped.add_metric([peer.name], float(peer.dropped))
            queued.add_metric([peer.name], float(peer.queued))
        yield connected
        yield dropped
        yield queued
        yield CounterMetricFamily(
            "parakoon_peer_connections_accepted",
            "Incoming peer connections accepted by the messaging port",
            value=float(c.peer_connections_accepted),
        )
        yield CounterMetricFamily(
            "parakoon_peer_connections_refused",
            "Incoming peer connections closed for a bad handshake, a wrong cluster id or "
            "unknown node, a timeout or malformed frames",
            value=float(c.peer_connections_refused),
        )
        clients = status.client_connections
        if clients is not None:
            yield GaugeMetricFamily(
                "parakoon_client_connections", "Open client connections", value=float(clients)
            )


def install(source: Observable) -> CollectorRegistry:
    """Build the node's registry and hook the histograms into the node's hot paths."""
    registry = CollectorRegistry(auto_describe=True)
    registry.register(NodeCollector(source))
    fsync = Histogram(
        "parakoon_fsync_seconds",
        "WAL write + fdatasync latency per group commit",
        buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0),
        registry=registry,
    )
    batch = Histogram(
        "parakoon_batch_requests",
        "Client requests per proposed batch",
        buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048),
        registry=registry,
    )
    source.set_observers(fsync=fsync.observe, batch=batch.observe)
    return registry


async def serve_metrics(
    source: Observable,
    *,
    host: str,
    port: int,
    task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    registry = install(source)
    server, thread = start_http_server(port, addr=host, registry=registry)
    log.info("metrics.serving", port=port)
    task_status.started()
    try:
        await anyio.sleep_forever()
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=2)
