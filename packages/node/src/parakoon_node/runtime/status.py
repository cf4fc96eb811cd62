"""What a running node tells the world about itself: plain values, produced by the node.

:class:`NodeStatus` is a frozen snapshot (role, master, lease, applied slot, ballot, counters,
peer links) built by :meth:`parakoon_node.runtime.node.Node.status`. The metrics endpoint reads
nothing else; the client-facing service reads it for the rare questions (is progress possible,
STATISTICS). Neither reaches through the node into its driver, storage or peers, so those can
change without touching them.

The values are read on the event loop's objects without a lock; the metrics scrape calls
``status()`` from its own thread and sees some recent value, which is all a metric promises.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from parakoon_paxos import Role


@dataclass(frozen=True, slots=True, kw_only=True)
class PeerStatus:
    """One outgoing peer link."""

    name: str
    connected: bool
    #: Frames waiting in the link's leaky queue, and frames it dropped so far.
    queued: int
    dropped: int


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeCounters:
    """Monotonic counters since the node started."""

    applied_slots: int
    applied_updates: int
    requests_submitted: int
    role_changes: int
    fsyncs: int
    collapses: int
    catchups: int
    peer_connections_accepted: int
    peer_connections_refused: int


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeStatus:
    """A snapshot of one node, taken at one moment on its event loop."""

    name: str
    role: Role
    #: The master this node believes in (itself while it holds a valid lease), or None.
    master: str | None
    #: True while this node is master with a valid lease.
    lease_valid: bool
    ballot: int
    applied_i: int
    wal_last_slot: int | None
    keys: int
    going_down: bool
    peers: tuple[PeerStatus, ...]
    #: The newest slot number each peer mentioned in a message (STATISTICS reports node_is).
    peer_slots: tuple[tuple[str, int], ...]
    #: Open client connections, or None before the client server runs.
    client_connections: int | None
    counters: NodeCounters
    #: The node's standing in its cluster history (R9): "founding", "rebuilding" or "voter".
    identity: str = "voter"
    #: While rebuilding: the voters whose answer it still needs.
    rebuild_waiting_for: tuple[str, ...] = ()
    #: Set when a quorum of voters holds another store than this node's (it serves nothing).
    diverged: str | None = None
    #: Peers whose store was found to differ from this node's at the same slot.
    divergent_peers: tuple[str, ...] = ()


class StatusSource(Protocol):
    """Anything that can say how the node is doing (the node itself; a stub in tests)."""

    def status(self) -> NodeStatus: ...


class Observable(StatusSource, Protocol):
    """A status source whose hot paths can also report to histograms (the metrics endpoint)."""

    def set_observers(
        self, *, fsync: Callable[[float], None], batch: Callable[[float], None]
    ) -> None:
        """``fsync`` gets the seconds of each group commit, ``batch`` each batch's size."""
