"""The collapser: head snapshots, archiving and pruning (rule R8).

:meth:`Collapser.run_once` is meant to be called periodically (or on a client ``collapse``
request) from a worker thread while appends continue in another. It

1. returns ``None`` at once if another collapse (or a snapshot install) is running: one
   collapse at a time;
2. measures how far the log has grown past the newest head snapshot (``last_slot - head_slot``;
   without a snapshot, the number of slots held) and returns ``None`` unless that exceeds
   ``threshold_entries``;
3. asks the ``snapshot`` callback for a slot and a writer; the callback returns ``None`` to
   decline (for example while the store is being restored). The slot must not exceed what the
   node has applied; the collapser only checks that the log holds it. A slot not above the
   current head snapshot means there is nothing new, and the result is ``None``;
4. writes the head snapshot atomically, prunes the oldest completed segments it covers (keeping
   ``segments_to_keep`` completed segments, the live one and every pinned one), then archives
   the remaining completed segments.

Each step is crash safe on its own (see :mod:`parakoon_wal.log`); the order matters only in
that pruning needs the durable snapshot first.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from .log import Wal

__all__ = ["CollapseReport", "Collapser", "SnapshotChoice"]

#: What the snapshot callback returns: the slot and a function writing the snapshot's bytes.
SnapshotChoice = tuple[int, Callable[[BinaryIO], None]]


@dataclass(frozen=True, slots=True, kw_only=True)
class CollapseReport:
    snapshot_slot: int
    snapshot_path: Path
    #: Slots the log had grown past the previous head snapshot when the collapse started.
    entries_since_snapshot: int
    archived: tuple[Path, ...]
    pruned: tuple[Path, ...]


class Collapser:
    """Periodic compaction of a :class:`Wal`; see the module docstring."""

    def __init__(
        self,
        wal: Wal,
        *,
        threshold_entries: int,
        segments_to_keep: int,
        snapshot: Callable[[], SnapshotChoice | None],
    ) -> None:
        if threshold_entries < 0:
            raise ValueError("threshold_entries must be >= 0")
        if segments_to_keep < 1:
            raise ValueError("segments_to_keep must be >= 1 (rule R8)")
        self.wal = wal
        self.threshold_entries = threshold_entries
        self.segments_to_keep = segments_to_keep
        self._snapshot = snapshot

    def entries_since_snapshot(self) -> int:
        """How many slots the log holds past the newest head snapshot."""
        wal = self.wal
        last = wal.last_slot
        if last is None:
            return 0
        head = wal.head_snapshot()
        if head is not None:
            return max(0, last - head[0])
        first = wal.first_slot
        assert first is not None
        return last - first + 1

    def run_once(self) -> CollapseReport | None:
        """One collapse if the log has grown past the threshold; ``None`` if nothing was done.

        Raises what :meth:`Wal.write_head_snapshot` raises (the callback's exceptions too).
        """
        wal = self.wal
        with wal.collapse_session() as session:
            if session is None:
                return None
            grown = self.entries_since_snapshot()
            if grown <= self.threshold_entries:
                return None
            choice = self._snapshot()
            if choice is None:
                return None
            slot, write = choice
            head = wal.head_snapshot()
            if head is not None and slot <= head[0]:
                return None
            path = session.write_head_snapshot(slot, write)
            pruned = session.prune(slot, segments_to_keep=self.segments_to_keep)
            archived = session.archive_completed()
            return CollapseReport(
                snapshot_slot=slot,
                snapshot_path=path,
                entries_since_snapshot=grown,
                archived=tuple(archived),
                pruned=tuple(pruned),
            )
