"""Prometheus metrics of one node, served over HTTP on ``metrics_port`` when configured, with
two probes for load balancers and orchestrators beside them:

* ``GET /health``: 200 while the process is live and its event loop turns (a heartbeat the
  loop writes every 0.5 s is younger than ``HEARTBEAT_STALE_SECS``), 503 otherwise; a small
  JSON body either way.
* ``GET /ready``: 200 when this node can serve consistent traffic: it is master with a live
  lease, or it follows a master whose lease it sees live and has applied every slot it heard of
  but at most ``READY_LAG_SLOTS``; and it is a voter (not rebuilding), not diverged, not going
  down. 503 otherwise, with the reasons in the JSON body. A node without a quorum loses its
  master view within about two lease periods, so ``/ready`` turns 503 by then.

* ``GET /status``: 200 with the node's own view as one JSON object (:func:`status_document`):
  role, master and the seconds left of its lease, applied and last logged slot, the newest
  head snapshot's slot, what the WAL takes on disk, each peer's link (address, connected,
  seconds since its last message, the newest slot it mentioned), identity, rebuild, divergence
  and disk state. ``parakoon status`` reads it from every node that has a metrics port. Only
  this node's view: whether there is a master cluster-wide is the question ``parakoon status``
  answers by asking every node.

Every other path answers the metrics page, as before.

Formatting and the HTTP endpoint are ``prometheus_client``'s (its WSGI server runs in a daemon
thread). Gauges are computed at scrape time by a collector that asks the node for its
:class:`~parakoon_node.runtime.status.NodeStatus`: its counters are plain ints and floats updated
on the event loop, and reading them from the scrape thread sees some recent value, which is all a
metric promises. Histograms (fsync latency, batch sizes)
are observed as things happen.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

import anyio
import anyio.abc
import structlog
from prometheus_client import CollectorRegistry, Histogram, make_wsgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, SummaryMetricFamily
from prometheus_client.exposition import ThreadingWSGIServer
from prometheus_client.registry import Collector

from .status import NodeStatus, Observable, StatusSource, wal_disk_usage

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
        members = GaugeMetricFamily(
            "parakoon_members",
            "Members of the membership in force, by role (voter, learner)",
            labels=["role"],
        )
        members.add_metric(["voter"], float(len(status.voters)))
        members.add_metric(["learner"], float(len(status.learners)))
        yield members
        standing = (
            "voter"
            if status.name in status.voters
            else ("learner" if status.name in status.learners else "removed")
        )
        member_role = GaugeMetricFamily(
            "parakoon_member_role",
            "1 for this node's place in the membership in force: voter, learner or removed",
            labels=["role"],
        )
        for name in ("voter", "learner", "removed"):
            member_role.add_metric([name], 1.0 if name == standing else 0.0)
        yield member_role
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
        stages = SummaryMetricFamily(
            "parakoon_write_stage_seconds",
            "Time client writes spent in each stage of the write path (sum and count per stage; "
            "the stages are described in docs/performance.md, 'Where a write's time goes')",
            labels=["stage"],
        )
        for stage, seconds, count in status.write_stages:
            stages.add_metric([stage], count_value=count, sum_value=seconds)
        yield stages
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


#: A heartbeat older than this says the event loop is stuck (``/health`` answers 503).
HEARTBEAT_STALE_SECS = 5.0
HEARTBEAT_EVERY_SECS = 0.5
#: A follower this many slots behind what it heard of is not ready (still catching up).
READY_LAG_SLOTS = 1000


def readiness(status: NodeStatus) -> tuple[bool, dict[str, object]]:
    """Whether ``status`` is ready for traffic (see the module docstring), and why not."""
    reasons: list[str] = []
    newest = max([status.applied_i, *(slot for _, slot in status.peer_slots)])
    lag = max(0, newest - status.applied_i)
    if status.going_down:
        reasons.append("going down")
    if status.identity != "voter":
        reasons.append(f"identity is {status.identity}")
    if status.diverged is not None:
        reasons.append(f"diverged: {status.diverged}")
    leading = status.role.value == "leader" and status.lease_valid
    if status.master is None:
        reasons.append("no master with a live lease (no quorum, or an election under way)")
    elif not leading and status.master == status.name:
        reasons.append("its own lease is not live")
    if not leading and lag > READY_LAG_SLOTS:
        reasons.append(f"{lag} slots behind")
    body: dict[str, object] = {
        "node": status.name,
        "ready": not reasons,
        "role": status.role.value,
        "master": status.master,
        "applied": status.applied_i,
        "lag": lag,
    }
    if reasons:
        body["why_not"] = reasons
    return not reasons, body


#: Bumped when a field of the ``/status`` document changes meaning or goes away.
STATUS_DOCUMENT_VERSION = 1


def status_document(status: NodeStatus) -> dict[str, object]:
    """The ``/status`` body. Measures the WAL folder (a ``stat`` per file): not on the event
    loop. A folder that cannot be read gives null sizes and the error in ``wal.error``."""
    wal: dict[str, object] = {
        "dir": str(status.wal_dir),
        "last_slot": status.wal_last_slot,
        "segment_bytes": None,
        "segments": None,
        "archived_segments": None,
        "snapshot_bytes": None,
        "error": None,
    }
    try:
        usage = wal_disk_usage(status.wal_dir)
    except OSError as exc:
        wal["error"] = f"{exc.__class__.__name__}: {exc}"
    else:
        wal.update(
            segment_bytes=usage.segment_bytes,
            segments=usage.segments,
            archived_segments=usage.archived_segments,
            snapshot_bytes=usage.snapshot_bytes,
        )
    slots = dict(status.peer_slots)
    remaining = status.lease_remaining_secs
    return {
        "version": STATUS_DOCUMENT_VERSION,
        "node": status.name,
        "role": status.role.value,
        "master": status.master,
        "lease_valid": status.lease_valid,
        "lease_remaining_secs": None if remaining is None else round(remaining, 3),
        "ballot": status.ballot,
        "applied": status.applied_i,
        "snapshot_slot": status.snapshot_slot,
        "wal": wal,
        "keys": status.keys,
        "peers": {
            p.name: {
                "address": p.address,
                "connected": p.connected,
                "last_heard_secs": (
                    None if p.last_heard_secs is None else round(p.last_heard_secs, 3)
                ),
                "slot": slots.get(p.name),
                "queued": p.queued,
                "dropped": p.dropped,
            }
            for p in sorted(status.peers, key=lambda p: p.name)
        },
        "identity": status.identity,
        "rebuild_waiting_for": list(status.rebuild_waiting_for),
        "diverged": status.diverged,
        "divergent_peers": list(status.divergent_peers),
        "disk_stalled": status.disk_stalled,
        "disk_low": status.disk_low,
        "going_down": status.going_down,
        "client_connections": status.client_connections,
    }


class _Probes:
    """The WSGI app: the two probes, the status document, and the metrics page for every
    other path."""

    def __init__(self, source: StatusSource, metrics_app: Any) -> None:
        self._source = source
        self._metrics = metrics_app
        self.heartbeat = time.monotonic()

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        path = environ.get("PATH_INFO", "/")
        if path == "/health":
            age = time.monotonic() - self.heartbeat
            live = age < HEARTBEAT_STALE_SECS
            body: dict[str, object] = {"live": live, "loop_heartbeat_age_secs": round(age, 3)}
            return self._json(start_response, live, body)
        if path == "/ready":
            ready, body = readiness(self._source.status())
            return self._json(start_response, ready, body)
        if path == "/status":
            return self._json(start_response, True, status_document(self._source.status()))
        return self._metrics(environ, start_response)

    @staticmethod
    def _json(start_response: Any, ok: bool, body: dict[str, object]) -> list[bytes]:
        data = json.dumps(body).encode()
        status = "200 OK" if ok else "503 Service Unavailable"
        headers = [("Content-Type", "application/json"), ("Content-Length", str(len(data)))]
        start_response(status, headers)
        return [data]


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """No access log on stderr (a scraper every few seconds would drown the node's log)."""


async def serve_metrics(
    source: Observable,
    *,
    host: str,
    port: int,
    task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    registry = install(source)
    app = _Probes(source, make_wsgi_app(registry))
    server = make_server(host, port, app, ThreadingWSGIServer, handler_class=_QuietHandler)
    thread = threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True)
    thread.start()
    log.info("metrics.serving", port=port, probes=["/health", "/ready"], status="/status")
    task_status.started()
    try:
        while True:  # the heartbeat /health reads: proof that this loop still turns
            app.heartbeat = time.monotonic()
            await anyio.sleep(HEARTBEAT_EVERY_SECS)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=2)
