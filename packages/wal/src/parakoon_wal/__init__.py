"""parakoon_wal: the segment write-ahead log and the collapser.

Public API (what the node driver uses)::

    wal = Wal.open(home_dir / "wal", fsync=True, segment_entries_max=100_000,
                   segment_bytes_max=64 << 20, compressor="zstd", faults=None)
    wal.recovery                       # RecoveryReport: torn tail cut? where? saved to?
    wal.append([(slot, payload), ...], sync=None)   # one write + one fdatasync
    wal.last_slot, wal.first_slot      # None when the log holds no record
    wal.next_slot                      # what the next append must start with
    wal.read(slot) -> bytes
    wal.iter_from(slot) -> Iterator[tuple[int, bytes]]  # newest copy of a rewritten slot only
    wal.read_batch(slot, entries_max=1024, bytes_max=4 << 20)  # bounded, for a worker thread
    with wal.pin(from_slot): ...        # catch-up streaming: the collapser keeps those segments
    wal.write_head_snapshot(slot, write) / wal.head_snapshot() / wal.open_head_snapshot()
    wal.install_snapshot(slot, write)   # rule R4, atomic; afterwards next_slot == slot + 1
    wal.reset_after_snapshot(slot)      # the same after write_head_snapshot(slot, ...)
    wal.save_meta({"promised_n": 7}) / wal.load_meta()
    wal.segments(), wal.statistics(), wal.close()
    Collapser(wal, threshold_entries=..., segments_to_keep=..., snapshot=callback).run_once()
    parakoon_wal.tool.dump / verify / truncate   # offline; python -m parakoon_wal

Threading: ``append`` may run in a worker thread (``anyio.to_thread.run_sync``) while the event
loop thread reads (``last_slot``, ``read``, ``iter_from``) and a collapse runs in a third thread.
Readers never see a record before its append's write (and fsync) completed.

Errors: :class:`WalUsageError` (the caller broke a rule, e.g. :class:`WalSlotError`) and
:class:`WalDiskError` (:class:`WalCorruptError`, :class:`WalMissingSegmentError`) with ``.path``
and ``.offset``. The framing (:mod:`parakoon_wal.framing`) is pure and importable on its own.
"""

from __future__ import annotations

from .collapser import Collapser, CollapseReport, SnapshotChoice
from .errors import (
    SimulatedCrash,
    WalClosedError,
    WalCorruptError,
    WalDiskError,
    WalError,
    WalLockedError,
    WalMissingSegmentError,
    WalSlotError,
    WalSlotPrunedError,
    WalUsageError,
)
from .faults import FaultPoint, FaultPoints
from .log import Compressor, RecoveryReport, SegmentInfo, TornTail, Wal, WalStatistics

__all__ = [
    "CollapseReport",
    "Collapser",
    "Compressor",
    "FaultPoint",
    "FaultPoints",
    "RecoveryReport",
    "SegmentInfo",
    "SimulatedCrash",
    "SnapshotChoice",
    "TornTail",
    "Wal",
    "WalClosedError",
    "WalCorruptError",
    "WalDiskError",
    "WalError",
    "WalLockedError",
    "WalMissingSegmentError",
    "WalSlotError",
    "WalSlotPrunedError",
    "WalStatistics",
    "WalUsageError",
]
