"""What a running node tells the world about itself: plain values, produced by the node.

:class:`NodeStatus` is a frozen snapshot (role, master, lease, applied slot, ballot, counters,
peer links) built by :meth:`parakoon_node.runtime.node.Node.status`. The metrics endpoint reads
nothing else; the client-facing service reads it for the rare questions (is progress possible,
STATISTICS). Neither reaches through the node into its driver, storage or peers, so those can
change without touching them.

The values are read on the event loop's objects without a lock; the metrics scrape calls
``status()`` from its own thread and sees some recent value, which is all a metric promises.
``status()`` makes no system call (the client service calls it on the event loop): what the WAL
takes on disk is measured by :func:`wal_disk_usage`, which the metrics thread calls with
``NodeStatus.wal_dir``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from parakoon_paxos import Role
from parakoon_wal.log import list_wal_dir


@dataclass(frozen=True, slots=True, kw_only=True)
class PeerStatus:
    """One outgoing peer link."""

    name: str
    #: Where the link dials (``host:port``).
    address: str
    connected: bool
    #: Seconds since the last message that arrived from this peer (on any connection), or
    #: None if none arrived since this node started. A peer that is connected but silent for
    #: more than a lease period is stuck (paused, or its loop is blocked).
    last_heard_secs: float | None
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
    #: Seconds left of ``master``'s lease as this node sees it (its own, shorter, leader
    #: lease while it is master), or None without a master.
    lease_remaining_secs: float | None
    ballot: int
    applied_i: int
    wal_last_slot: int | None
    #: The slot of the newest head snapshot (written by a collapse or installed by a catch-up),
    #: or None if the node has none.
    snapshot_slot: int | None
    #: The folder of the node's write-ahead log and head snapshots (see :func:`wal_disk_usage`).
    wal_dir: Path
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
    #: Set (to the reason) while a log write hangs, or while free disk space is below the
    #: reserve: the node refuses writes and gives up mastership meanwhile.
    disk_stalled: str | None = None
    disk_low: str | None = None
    #: The membership in force: voters, learners, and whether it is a replicated one (False:
    #: cluster.toml's, no change applied yet).
    voters: tuple[str, ...] = ()
    learners: tuple[str, ...] = ()
    membership_replicated: bool = False
    #: Where writes spent their time since the node started: stage -> (seconds, count), see
    #: :mod:`parakoon_node.runtime.stages`.
    write_stages: tuple[tuple[str, float, int], ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class WalDiskUsage:
    """What a WAL folder takes on disk, measured by :func:`wal_disk_usage`."""

    #: Bytes of the log segments as stored (archived segments compressed), and their number.
    segment_bytes: int
    segments: int
    archived_segments: int
    #: Bytes of the head snapshot files (normally one).
    snapshot_bytes: int


def wal_disk_usage(directory: Path) -> WalDiskUsage:
    """Sum the files of a WAL folder by kind. Reads the folder (a system call per file): call it
    off the event loop. A file removed between the listing and its ``stat`` (a collapse
    pruning) is left out; a folder that cannot be read raises ``OSError``."""
    segment_bytes = segments = archived = snapshot_bytes = 0
    for entry in list_wal_dir(directory):
        with contextlib.suppress(FileNotFoundError):
            size = os.stat(entry.path).st_size
            if entry.kind == "segment":
                segment_bytes += size
                segments += 1
                archived += entry.archived
            elif entry.kind == "head":
                snapshot_bytes += size
    return WalDiskUsage(
        segment_bytes=segment_bytes,
        segments=segments,
        archived_segments=archived,
        snapshot_bytes=snapshot_bytes,
    )


class StatusSource(Protocol):
    """Anything that can say how the node is doing (the node itself; a stub in tests)."""

    def status(self) -> NodeStatus: ...


class Observable(StatusSource, Protocol):
    """A status source whose hot paths can also report to histograms (the metrics endpoint)."""

    def set_observers(
        self, *, fsync: Callable[[float], None], batch: Callable[[float], None]
    ) -> None:
        """``fsync`` gets the seconds of each group commit, ``batch`` each batch's size."""
