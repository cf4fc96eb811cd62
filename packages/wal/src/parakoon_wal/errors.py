"""The exceptions of parakoon_wal.

Two families, in the spirit of h11's local/remote split:

* :class:`WalUsageError` (and its subclasses) means *the caller* misused the log: a slot gap, a
  rewrite below the last slot, a read of a slot that is not there. The log on disk is intact.
* :class:`WalDiskError` (and its subclasses) means *the disk* holds something the log cannot
  accept: a corrupt record, a missing segment, an unreadable archive. Every such error names the
  file and, where one exists, the byte offset, in its message and as attributes.

:class:`SimulatedCrash` is raised only by an armed fault point (see :mod:`parakoon_wal.faults`);
it is a ``BaseException`` so that ``except Exception`` blocks in callers do not swallow it.
"""

from __future__ import annotations

from pathlib import Path

__all__ = [
    "SimulatedCrash",
    "WalClosedError",
    "WalCorruptError",
    "WalDiskError",
    "WalError",
    "WalLockedError",
    "WalMissingSegmentError",
    "WalSlotError",
    "WalSlotPrunedError",
    "WalUsageError",
]


class WalError(Exception):
    """Base class of every error this package raises on purpose."""


class WalUsageError(WalError):
    """The caller asked for something the log does not allow; nothing on disk changed."""


class WalSlotError(WalUsageError):
    """An append broke the slot rule (contiguous slots; only the last slot may be rewritten),
    or a read asked for a slot the log does not hold."""


class WalSlotPrunedError(WalSlotError):
    """The slot was once in the log but the collapser (or a snapshot install) removed it.

    A catch-up source that gets this error must send a snapshot instead (rule R4).
    """

    def __init__(self, slot: int, first_slot: int | None) -> None:
        self.slot = slot
        self.first_slot = first_slot
        super().__init__(
            f"slot {slot} is no longer in the log (oldest slot held: {first_slot}); "
            "send a snapshot instead"
        )


class WalClosedError(WalUsageError):
    """The log was closed, or it hit an I/O error or a simulated crash and refuses further use."""


class WalLockedError(WalUsageError):
    """Another process (or another open ``Wal`` in this process) holds the directory's lock."""

    def __init__(self, path: Path) -> None:
        self.path = path
        super().__init__(f"{path}: the WAL directory is locked by another open log")


class WalDiskError(WalError):
    """The files on disk are not a log this package can open; names the file and offset."""

    def __init__(self, path: Path | str, offset: int | None, detail: str) -> None:
        self.path = Path(path)
        self.offset = offset
        self.detail = detail
        where = f"{self.path}" if offset is None else f"{self.path} at offset {offset}"
        super().__init__(f"{where}: {detail}")


class WalCorruptError(WalDiskError):
    """A record or header failed its checksum or structure check before the torn tail.

    Opening stops here rather than skip data: run ``parakoon wal verify`` to see every problem and
    ``parakoon wal truncate`` if the operator decides to drop everything after a slot.
    """


class WalMissingSegmentError(WalDiskError):
    """A segment in the middle of the log (or one a head snapshot does not cover) is missing."""


class SimulatedCrash(BaseException):
    """Raised by an armed fault point; the ``Wal`` that raised it is dead afterwards.

    The log closes its files (releasing the directory lock) before the exception leaves, so a test
    can reopen the directory in the same process, as a restarted node would.
    """

    def __init__(self, point: str) -> None:
        self.point = point
        super().__init__(f"simulated crash at fault point {point!r}")
