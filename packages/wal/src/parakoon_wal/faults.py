"""Named fault points, so that crash tests hit exact places without killing processes.

A :class:`FaultPoints` object is passed to :meth:`parakoon_wal.Wal.open`. Tests arm one point;
when the log reaches it, the log closes its files and raises :class:`SimulatedCrash`. What is on
disk at that moment is what a real crash at that place could leave behind, except that the page
cache survives: to model lost unsynced writes, a test additionally truncates the live segment at
some offset past the last durable byte (see ``tests/test_crash.py``).

Points (the value is the name tests use):

============================  ================================================================
``partial_write``             an append wrote only the first ``nbytes`` bytes of its batch
``after_write_before_fsync``  an append's bytes are written, ``fdatasync`` has not run
``after_fsync``               the batch is durable, readers have not been told yet
``segment_before_rename``     a new segment's temp file is written and synced, not renamed
``segment_before_dir_fsync``  the new segment is renamed into place, directory not synced
``archive_before_rename``     the compressed copy is written as a temp file
``archive_before_unlink``     the compressed copy is in place, the plain segment still exists
``snapshot_before_rename``    a head snapshot's temp file is written and synced
``snapshot_after_rename``     the head snapshot is in place, older snapshots not yet removed
``prune_after_first_unlink``  the collapser removed its first segment of several
``install_after_snapshot``    an installed snapshot is written under its ``.install`` name
``install_after_commit``      the reset segment (the commit point) is in place
``install_after_rename``      the snapshot is renamed, older segments not yet removed
``meta_before_rename``        the metadata temp file is written and synced
============================  ================================================================
"""

from __future__ import annotations

import enum
import threading
from dataclasses import dataclass

from .errors import SimulatedCrash

__all__ = ["FaultPoint", "FaultPoints"]


class FaultPoint(enum.StrEnum):
    PARTIAL_WRITE = "partial_write"
    AFTER_WRITE_BEFORE_FSYNC = "after_write_before_fsync"
    AFTER_FSYNC = "after_fsync"
    SEGMENT_BEFORE_RENAME = "segment_before_rename"
    SEGMENT_BEFORE_DIR_FSYNC = "segment_before_dir_fsync"
    ARCHIVE_BEFORE_RENAME = "archive_before_rename"
    ARCHIVE_BEFORE_UNLINK = "archive_before_unlink"
    SNAPSHOT_BEFORE_RENAME = "snapshot_before_rename"
    SNAPSHOT_AFTER_RENAME = "snapshot_after_rename"
    PRUNE_AFTER_FIRST_UNLINK = "prune_after_first_unlink"
    INSTALL_AFTER_SNAPSHOT = "install_after_snapshot"
    INSTALL_AFTER_COMMIT = "install_after_commit"
    INSTALL_AFTER_RENAME = "install_after_rename"
    META_BEFORE_RENAME = "meta_before_rename"


@dataclass(slots=True)
class _Armed:
    skip: int
    nbytes: int


class FaultPoints:
    """A set of armed fault points; thread-safe, each point fires at most once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._armed: dict[FaultPoint, _Armed] = {}
        self.fired: list[FaultPoint] = []

    def arm(self, point: FaultPoint | str, *, skip: int = 0, nbytes: int = 0) -> None:
        """Fire ``point`` after it has been passed ``skip`` times.

        ``nbytes`` is the number of bytes ``partial_write`` lets through before crashing.
        """
        if skip < 0 or nbytes < 0:
            raise ValueError("skip and nbytes must be >= 0")
        with self._lock:
            self._armed[FaultPoint(point)] = _Armed(skip=skip, nbytes=nbytes)

    def disarm(self) -> None:
        with self._lock:
            self._armed.clear()

    def should_fire(self, point: FaultPoint) -> _Armed | None:
        """Return the arming if ``point`` fires now (and forget it), else ``None``."""
        with self._lock:
            armed = self._armed.get(point)
            if armed is None:
                return None
            if armed.skip > 0:
                armed.skip -= 1
                return None
            del self._armed[point]
            self.fired.append(point)
            return armed

    def hit(self, point: FaultPoint) -> None:
        """Raise :class:`SimulatedCrash` if ``point`` fires now."""
        if self.should_fire(point) is not None:
            raise SimulatedCrash(point.value)
