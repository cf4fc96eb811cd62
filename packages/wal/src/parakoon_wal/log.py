"""The segment write-ahead log: :class:`Wal`.

Theory of operation
===================

A WAL directory holds:

* segment files ``{seq:010d}-{next_slot:020d}.wal`` (framing in :mod:`parakoon_wal.framing`);
  the one with the highest ``seq`` is the *live* segment, all others are *completed*. Completed
  segments may be *archived* as ``….wal.zst`` (one zstd frame holding the whole segment file);
* head snapshots ``head-{slot:020d}.snap``: opaque bytes written by the caller, standing for
  every slot up to and including ``slot``;
* ``meta``: a tiny durable record (the Paxos core's promised ballot);
* ``LOCK`` (held with ``flock`` while a :class:`Wal` is open) and ``torn/`` (bytes cut off a torn
  tail or removed by ``truncate``, kept for inspection, never read back).

Rules the code keeps (``docs/wal-format.md`` states them for readers of the files):

1. **Slots.** Records carry slots that never decrease and never skip. Only the highest slot may be
   written again (invariant S3); the newest copy wins on read and replay.
2. **Durability.** :meth:`Wal.append` writes its whole batch with one ``write`` and, when
   syncing, one ``fdatasync``, then publishes the records to readers. Readers never see bytes
   beyond the published end, so they never see a half-written record, and with ``fsync=True``
   they only see durable records.
3. **Segments.** A segment is synced completely before the next one is created, and a new
   segment appears atomically (temp file, fsync, rename, directory fsync). Hence only the live
   segment can end in a torn write; damage anywhere else is corruption.
4. **Recovery** (rule R1). Opening removes leftover temp files, finishes an interrupted
   archive or snapshot install, checks that segment numbers are contiguous and that a head
   snapshot covers any slots before the first segment, verifies every record of every segment,
   and cuts a torn tail off the live segment (setting the bytes aside under ``torn/`` and
   reporting it in :attr:`Wal.recovery`). It never skips damaged data: anything else raises.
5. **Snapshots and pruning** (rule R8). A segment may be deleted only when a durable head
   snapshot covers all of its slots, it is not among the newest ``segments_to_keep`` completed
   segments, no :meth:`Wal.pin` needs it and it is not the live segment. Segments go oldest
   first, so a crash part way leaves a contiguous log.
6. **Snapshot install** (rule R4). The commit point is the creation of a *RESET* segment whose
   ``next_slot`` is ``slot + 1``; the snapshot is first written as ``head-….snap.install``. On
   open, a RESET segment supersedes every older segment, and its ``.install`` snapshot is renamed
   into place; a ``.install`` without its RESET segment is an install that never committed and is
   removed. A crash therefore leaves the old state or the new one, never a mix.

Threading
=========

One thread may append while others read, archive or prune:

* ``_write_lock`` serialises everything that writes the live segment or replaces the set of
  segments wholesale (append, roll-over, install, reset, close);
* ``_collapse_lock`` allows one collapse (snapshot, archive, prune) or install at a time;
* ``_lock`` guards the shared state (segment list, published end, last slot, pins) and is held
  only briefly, never across an ``fdatasync``. Files are opened for reading under ``_lock`` so
  that archiving or pruning cannot unlink a file between lookup and open.

Lock order: ``_collapse_lock`` before ``_write_lock`` before ``_lock``.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import logging
import os
import re
import struct
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal, NamedTuple

import msgpack

from . import framing
from ._fs import (
    compress,
    decompress,
    fsync_dir,
    read_segment_file,
    read_segment_head,
    unique_path,
    write_atomic,
    writer_of,
)
from .errors import (
    SimulatedCrash,
    WalClosedError,
    WalCorruptError,
    WalLockedError,
    WalMissingSegmentError,
    WalSlotError,
    WalSlotPrunedError,
    WalUsageError,
)
from .faults import FaultPoint, FaultPoints

__all__ = [
    "Compressor",
    "RecoveryReport",
    "SegmentInfo",
    "TornTail",
    "Wal",
    "WalStatistics",
    "head_snapshot_name",
    "segment_name",
]

_log = logging.getLogger("parakoon_wal")

Compressor = Literal["zstd", "none"]
COMPRESSORS: tuple[Compressor, ...] = ("zstd", "none")

#: Default roll-over bounds (Arakoon's tlogs hold 100,000 entries).
SEGMENT_ENTRIES_MAX = 100_000
SEGMENT_BYTES_MAX = 64 * 1024 * 1024
#: Largest batch one append call may carry.
APPEND_ENTRIES_MAX = 65_536
#: Largest metadata record, in bytes of msgpack.
META_BYTES_MAX = 64 * 1024
ZSTD_LEVEL = 3
#: How many decoded segments readers keep in memory (see ``Wal._records_of``).
DECODED_SEGMENTS_MAX = 2
#: Default bounds of one :meth:`Wal.read_batch`.
READ_BATCH_ENTRIES_MAX = 1024
READ_BATCH_BYTES_MAX = 4 * 1024 * 1024

SEGMENT_RE = re.compile(r"^(\d{10})-(\d{20})\.wal(\.zst)?$")
HEAD_RE = re.compile(r"^head-(\d{20})\.snap$")
INSTALL_RE = re.compile(r"^head-(\d{20})\.snap\.install$")
LOCK_NAME = "LOCK"
META_NAME = "meta"
TORN_DIR = "torn"
META_MAGIC = b"PKWMETA1"
_META_HEADER = struct.Struct("<8sII")


def segment_name(seq: int, next_slot: int, *, archived: bool = False) -> str:
    """File name of segment ``seq`` whose first record appends ``next_slot``."""
    return f"{seq:010d}-{next_slot:020d}.wal" + (".zst" if archived else "")


@dataclass(frozen=True, slots=True)
class WalFile:
    """One file of a WAL directory, classified by its name (see :func:`list_wal_dir`).

    ``number`` is the sequence number of a segment and the slot of a head snapshot or of a
    snapshot install; ``next_slot`` and ``archived`` are a segment's (``-1``/False otherwise).
    """

    path: Path
    kind: Literal["tmp", "segment", "head", "install"]
    number: int = -1
    next_slot: int = -1
    archived: bool = False


def list_wal_dir(directory: Path) -> list[WalFile]:
    """The files of a WAL directory that the naming rules know, in name order.

    The one place where file names are read: opening the log (R1) and the offline tool
    (``tool.py``) both list a directory through here. Unknown names are left out.
    """
    found: list[WalFile] = []
    for name in sorted(os.listdir(directory)):
        path = directory / name
        if name.endswith(".tmp"):
            found.append(WalFile(path, "tmp"))
        elif m := SEGMENT_RE.match(name):
            found.append(
                WalFile(path, "segment", int(m.group(1)), int(m.group(2)), bool(m.group(3)))
            )
        elif m := HEAD_RE.match(name):
            found.append(WalFile(path, "head", int(m.group(1))))
        elif m := INSTALL_RE.match(name):
            found.append(WalFile(path, "install", int(m.group(1))))
    return found


def head_snapshot_name(slot: int) -> str:
    return f"head-{slot:020d}.snap"


@dataclass(frozen=True, slots=True, kw_only=True)
class TornTail:
    """A torn tail cut off the live segment while opening."""

    path: Path
    offset: int
    bytes_removed: int
    reason: str
    saved_to: Path


@dataclass(frozen=True, slots=True, kw_only=True)
class RecoveryReport:
    """What opening the log found and repaired; the node logs :meth:`messages`."""

    directory: Path
    torn_tail: TornTail | None
    removed_temp_files: tuple[Path, ...]
    #: Interrupted operations that opening finished (archive, snapshot install).
    finished: tuple[str, ...]
    segments: int
    first_slot: int | None
    last_slot: int | None
    head_snapshot_slot: int | None

    def messages(self) -> list[str]:
        out = [
            f"WAL {self.directory}: {self.segments} segment(s), slots "
            f"{self.first_slot}..{self.last_slot}, head snapshot {self.head_snapshot_slot}"
        ]
        if self.torn_tail is not None:
            t = self.torn_tail
            out.append(
                f"torn tail in {t.path} at offset {t.offset}: {t.reason}; cut "
                f"{t.bytes_removed} bytes, saved to {t.saved_to}"
            )
        out.extend(f"removed temp file {p}" for p in self.removed_temp_files)
        out.extend(self.finished)
        return out


@dataclass(frozen=True, slots=True, kw_only=True)
class SegmentInfo:
    """Public, immutable description of one segment."""

    seq: int
    path: Path
    archived: bool
    live: bool
    next_slot: int
    first_slot: int | None
    last_slot: int | None
    records: int
    size_bytes: int


class WalStatistics(NamedTuple):
    segments: int
    archived_segments: int
    first_slot: int | None
    last_slot: int | None
    appends: int
    records_appended: int
    bytes_appended: int
    fsyncs: int
    pins: int


@dataclass(frozen=True, slots=True, kw_only=True)
class _Decoded:
    """A segment's records decoded up to byte ``end`` (chain crc ``crc`` there)."""

    end: int
    crc: int
    records: list[tuple[int, bytes]]


def _index_of(records: list[tuple[int, bytes]], slot: int) -> int:
    """Index of ``slot`` in deduplicated records (slots go up by one), clamped to the list."""
    if not records:
        return 0
    return min(max(slot - records[0][0], 0), len(records))


@dataclass(slots=True)
class _Segment:
    """Mutable bookkeeping of one segment (guarded by ``Wal._lock``)."""

    seq: int
    next_slot: int
    prev_crc: int
    reset: bool
    path: Path
    archived: bool
    #: Published length in bytes of the (uncompressed) segment: header plus whole records.
    end: int
    count: int = 0
    first_slot: int | None = None
    last_slot: int | None = None
    final_crc: int = 0
    #: Whether everything up to ``end`` has been fdatasync'ed.
    synced: bool = True

    @property
    def end_slot(self) -> int:
        """The highest slot this segment accounts for (``next_slot - 1`` when empty)."""
        return self.last_slot if self.last_slot is not None else self.next_slot - 1

    def info(self, *, live: bool) -> SegmentInfo:
        return SegmentInfo(
            seq=self.seq,
            path=self.path,
            archived=self.archived,
            live=live,
            next_slot=self.next_slot,
            first_slot=self.first_slot,
            last_slot=self.last_slot,
            records=self.count,
            size_bytes=self.end,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class _Options:
    fsync: bool
    segment_entries_max: int
    segment_bytes_max: int
    compressor: Compressor
    zstd_level: int
    append_entries_max: int
    decoded_segments_max: int


def _check_slot(slot: object, what: str) -> None:
    if not isinstance(slot, int) or not 0 <= slot <= framing.SLOT_MAX:
        raise WalUsageError(f"{what}: slot {slot!r} is not an integer in 0..2**64-1")


class Wal:
    """A segment write-ahead log of ``(slot, payload)`` records in one directory.

    Open with :meth:`Wal.open`; the constructor is private. All public methods are thread-safe
    (see the module docstring for the locking rules). Methods raise :class:`WalClosedError`
    after :meth:`close`, after an I/O error while writing and after a simulated crash.
    """

    def __init__(
        self, directory: Path, options: _Options, lock_fd: int, faults: FaultPoints | None
    ) -> None:
        self._dir = directory
        self._opts = options
        self._lock_fd: int | None = lock_fd
        self._faults = faults
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._collapse_lock = threading.Lock()
        self._meta_lock = threading.Lock()
        self._segments: list[_Segment] = []
        self._fd: int | None = None
        self._closed_reason: str | None = None
        self._last_slot: int | None = None
        self._first_slot: int | None = None
        self._last_payload: bytes | None = None
        self._heads: dict[int, Path] = {}
        self._pins: dict[int, int] = {}
        self._pin_ids = itertools.count(1)
        self._decoded: OrderedDict[int, _Decoded] = OrderedDict()
        self._appends = 0
        self._records_appended = 0
        self._bytes_appended = 0
        self._fsyncs = 0
        self.recovery: RecoveryReport = RecoveryReport(
            directory=directory,
            torn_tail=None,
            removed_temp_files=(),
            finished=(),
            segments=0,
            first_slot=None,
            last_slot=None,
            head_snapshot_slot=None,
        )

    # ------------------------------------------------------------------ opening and closing

    @classmethod
    def open(
        cls,
        directory: str | os.PathLike[str],
        *,
        fsync: bool = True,
        segment_entries_max: int = SEGMENT_ENTRIES_MAX,
        segment_bytes_max: int = SEGMENT_BYTES_MAX,
        compressor: Compressor = "zstd",
        zstd_level: int = ZSTD_LEVEL,
        append_entries_max: int = APPEND_ENTRIES_MAX,
        decoded_segments_max: int = DECODED_SEGMENTS_MAX,
        faults: FaultPoints | None = None,
    ) -> Wal:
        """Open (creating if needed) the log in ``directory`` and recover it (rule R1).

        ``fsync`` is the default durability of :meth:`append`. A segment rolls over once it
        holds ``segment_entries_max`` records or ``segment_bytes_max`` bytes (a batch is never
        split, so a segment may exceed the bound by one batch). ``compressor`` chooses how
        :meth:`archive_completed` stores completed segments. Readers cache the decoded records
        of up to ``decoded_segments_max`` segments (memory: about two segments' worth of
        payloads; 0 turns the cache off). ``faults`` arms test fault points.

        The result's :attr:`recovery` says what was repaired. Raises :class:`WalCorruptError`
        (damaged record or header, with file and offset), :class:`WalMissingSegmentError` (a hole
        in the segment sequence, or slots before the first segment that no head snapshot
        covers), :class:`WalLockedError` (the directory is open elsewhere), :class:`OSError`.
        """
        if compressor not in COMPRESSORS:
            raise ValueError(f"compressor must be one of {COMPRESSORS}, not {compressor!r}")
        if decoded_segments_max < 0:
            raise ValueError(f"decoded_segments_max must be >= 0, not {decoded_segments_max!r}")
        bounds: list[tuple[str, object]] = [
            ("segment_entries_max", segment_entries_max),
            ("segment_bytes_max", segment_bytes_max),
            ("append_entries_max", append_entries_max),
        ]
        for name, value in bounds:
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, not {value!r}")
        options = _Options(
            fsync=fsync,
            segment_entries_max=segment_entries_max,
            segment_bytes_max=segment_bytes_max,
            compressor=compressor,
            zstd_level=zstd_level,
            append_entries_max=append_entries_max,
            decoded_segments_max=decoded_segments_max,
        )
        path = Path(directory)
        if not path.is_dir():
            path.mkdir(parents=True, exist_ok=True)
            # the new directory's own entry must survive a crash too
            fsync_dir(path.resolve().parent)
        lock_fd = os.open(path / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(lock_fd)
            raise WalLockedError(path) from None
        wal = cls(path, options, lock_fd, faults)
        try:
            with wal._write_lock:
                wal._recover()
        except BaseException:
            wal._abandon("failed to open")
            raise
        return wal

    def close(self) -> None:
        """Close the files and release the directory lock. Idempotent.

        Waits for a running append and a running collapse to finish first.
        """
        with self._collapse_lock, self._write_lock:
            self._abandon("closed")

    def __enter__(self) -> Wal:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _abandon(self, reason: str) -> None:
        """Close every file descriptor; the object refuses further use."""
        with self._lock:
            if self._closed_reason is None:
                self._closed_reason = reason
            fd, self._fd = self._fd, None
            lock_fd, self._lock_fd = self._lock_fd, None
        for descriptor in (fd, lock_fd):
            if descriptor is not None:
                with contextlib.suppress(OSError):
                    os.close(descriptor)

    def _ensure_usable(self) -> None:
        if self._closed_reason is not None:
            raise WalClosedError(f"{self._dir}: the log is {self._closed_reason}")

    def _hit(self, point: FaultPoint) -> None:
        if self._faults is not None:
            self._faults.hit(point)

    @contextlib.contextmanager
    def _crash_guard(self) -> Iterator[None]:
        """A simulated crash or a failed write leaves the object dead, as a real crash would."""
        try:
            yield
        except SimulatedCrash:
            self._abandon("dead after a simulated crash")
            raise
        except OSError:
            self._abandon("dead after an I/O error while writing")
            raise

    def _recover(self) -> None:
        """Rule R1, see the module docstring. Holds ``_write_lock``; no other user yet."""
        directory = self._dir
        removed_tmp: list[Path] = []
        finished: list[str] = []
        dirty = False
        plain: dict[int, Path] = {}
        archived: dict[int, Path] = {}
        heads: dict[int, Path] = {}
        installs: dict[int, Path] = {}
        for file in list_wal_dir(directory):
            path = file.path
            if file.kind == "tmp":
                path.unlink()
                removed_tmp.append(path)
                dirty = True
            elif file.kind == "segment":
                (archived if file.archived else plain)[file.number] = path
            elif file.kind == "head":
                heads[file.number] = path
            else:
                installs[file.number] = path
        # An archive interrupted after its rename: the plain file is complete, drop the copy.
        for seq in sorted(plain.keys() & archived.keys()):
            archived.pop(seq).unlink()
            finished.append(f"removed duplicate archive of segment {seq} (interrupted archive)")
            dirty = True

        segments: list[_Segment] = []
        for seq in sorted(plain.keys() | archived.keys()):
            is_archived = seq in archived
            path = archived[seq] if is_archived else plain[seq]
            m = SEGMENT_RE.match(path.name)
            assert m is not None
            head = read_segment_head(path, archived=is_archived, size=framing.SEGMENT_HEADER_SIZE)
            header = framing.decode_segment_header(head, str(path))
            if header.seq != seq or header.next_slot != int(m.group(2)):
                raise WalCorruptError(
                    path,
                    0,
                    f"header (seq {header.seq}, next_slot {header.next_slot}) "
                    "disagrees with the file name",
                )
            segments.append(
                _Segment(
                    seq=seq,
                    next_slot=header.next_slot,
                    prev_crc=header.prev_crc,
                    reset=header.reset,
                    path=path,
                    archived=is_archived,
                    end=len(head),
                    final_crc=header.prev_crc,
                )
            )
        # A RESET segment (snapshot install) supersedes all older segments.
        resets = [k for k, seg in enumerate(segments) if seg.reset]
        if resets and resets[-1] > 0:
            for seg in segments[: resets[-1]]:
                seg.path.unlink()
                finished.append(f"removed segment {seg.path.name} superseded by a snapshot install")
            segments = segments[resets[-1] :]
            dirty = True
        for slot, path in sorted(installs.items()):
            if segments and segments[0].reset and segments[0].next_slot == slot + 1:
                final = directory / head_snapshot_name(slot)
                os.replace(path, final)
                heads[slot] = final
                finished.append(f"finished the install of the snapshot at slot {slot}")
            else:
                path.unlink()
                finished.append(f"removed {path.name}: its snapshot install never committed")
            dirty = True
        if dirty:
            fsync_dir(directory)

        for a, b in itertools.pairwise(segments):
            if b.seq != a.seq + 1:
                raise WalMissingSegmentError(
                    directory,
                    None,
                    f"segment {a.seq + 1} is missing between {a.path.name} and {b.path.name}",
                )
        head_slot = max(heads) if heads else None
        if segments:
            first = segments[0]
            if first.next_slot > 0 and (head_slot is None or head_slot < first.next_slot - 1):
                raise WalMissingSegmentError(
                    first.path,
                    None,
                    f"the log starts at slot {first.next_slot} but no head snapshot covers the "
                    f"slots before it (newest head snapshot: {head_slot}); segments are missing",
                )
        elif heads:
            raise WalMissingSegmentError(
                directory, None, f"head snapshot at slot {head_slot} but no segment at all"
            )

        torn: TornTail | None = None
        prev: _Segment | None = None
        newest_data: bytes | None = None  # of the newest segment holding records
        for k, seg in enumerate(segments):
            live = k == len(segments) - 1
            if live and seg.archived:
                raise WalCorruptError(seg.path, None, "the newest segment must not be archived")
            if prev is not None and not seg.reset:
                if seg.next_slot != prev.end_slot + 1:
                    raise WalCorruptError(
                        seg.path,
                        0,
                        f"next_slot {seg.next_slot} does not continue "
                        f"{prev.path.name} (last slot {prev.end_slot})",
                    )
                if seg.prev_crc != prev.final_crc:
                    raise WalCorruptError(
                        seg.path,
                        0,
                        f"chain seed does not match the last record of {prev.path.name}",
                    )
            data = read_segment_file(seg.path, archived=seg.archived)
            result = framing.scan(
                data,
                start=framing.SEGMENT_HEADER_SIZE,
                prev_crc=seg.prev_crc,
                next_slot=seg.next_slot,
                rewrite_first_ok=not seg.reset and seg.next_slot > 0,
                path=str(seg.path),
                torn_ok=live,
            )
            if result.torn is not None:
                torn = self._cut_torn_tail(seg.path, data, result.end, result.torn)
            seg.end = result.end
            seg.count = result.count
            seg.first_slot = result.first_slot
            seg.last_slot = result.last_slot
            seg.final_crc = result.crc
            if result.count:
                newest_data = data
            prev = seg

        if not segments:
            segments.append(
                self._create_segment(framing.SegmentHeader(seq=1, next_slot=0, prev_crc=0))
            )
        live_seg = segments[-1]
        self._segments = segments
        self._heads = heads
        self._fd = os.open(live_seg.path, os.O_WRONLY | os.O_APPEND)
        self._refresh_slots()
        newest = next((s for s in reversed(segments) if s.last_slot is not None), None)
        if newest is not None:
            assert newest.last_slot is not None and newest_data is not None
            records, _crc = framing.decode_records(
                newest_data,
                start=framing.SEGMENT_HEADER_SIZE,
                stop=newest.end,
                prev_crc=newest.prev_crc,
                from_slot=newest.last_slot,
                path=str(newest.path),
            )
            self._last_payload = records[-1][1]
        self.recovery = RecoveryReport(
            directory=directory,
            torn_tail=torn,
            removed_temp_files=tuple(removed_tmp),
            finished=tuple(finished),
            segments=len(segments),
            first_slot=self._first_slot,
            last_slot=self._last_slot,
            head_snapshot_slot=head_slot,
        )
        for line in self.recovery.messages()[1:]:
            _log.warning("%s", line)

    def _cut_torn_tail(self, path: Path, data: bytes, offset: int, reason: str) -> TornTail:
        torn_dir = self._dir / TORN_DIR
        if not torn_dir.is_dir():
            torn_dir.mkdir()
            fsync_dir(self._dir)
        saved = unique_path(torn_dir / f"{path.name}.{offset:012d}.torn")
        with open(saved, "wb") as f:
            f.write(data[offset:])
            f.flush()
            os.fsync(f.fileno())
        fsync_dir(torn_dir)
        fd = os.open(path, os.O_WRONLY)
        try:
            os.ftruncate(fd, offset)
            os.fsync(fd)
        finally:
            os.close(fd)
        return TornTail(
            path=path,
            offset=offset,
            bytes_removed=len(data) - offset,
            reason=reason,
            saved_to=saved,
        )

    def _create_segment(self, header: framing.SegmentHeader) -> _Segment:
        """Create a segment atomically (temp file, fsync, rename, directory fsync)."""
        path = self._dir / segment_name(header.seq, header.next_slot)
        raw = framing.encode_segment_header(header)
        write_atomic(
            path,
            writer_of(raw),
            faults=self._faults,
            before_rename=FaultPoint.SEGMENT_BEFORE_RENAME,
            after_rename=FaultPoint.SEGMENT_BEFORE_DIR_FSYNC,
        )
        return _Segment(
            seq=header.seq,
            next_slot=header.next_slot,
            prev_crc=header.prev_crc,
            reset=header.reset,
            path=path,
            archived=False,
            end=len(raw),
            final_crc=header.prev_crc,
        )

    def _refresh_slots(self) -> None:
        """Recompute first/last slot from the segment list (caller holds ``_lock`` or is alone)."""
        self._first_slot = next(
            (s.first_slot for s in self._segments if s.first_slot is not None), None
        )
        self._last_slot = next(
            (s.last_slot for s in reversed(self._segments) if s.last_slot is not None), None
        )
        if self._last_slot is None:
            self._last_payload = None

    # ------------------------------------------------------------------ queries

    @property
    def directory(self) -> Path:
        return self._dir

    @property
    def fsync(self) -> bool:
        return self._opts.fsync

    @property
    def compressor(self) -> Compressor:
        return self._opts.compressor

    @property
    def last_slot(self) -> int | None:
        """The highest slot in the log, ``None`` if it holds no record. O(1)."""
        return self._last_slot

    @property
    def first_slot(self) -> int | None:
        """The oldest slot still in the log, ``None`` if it holds no record. O(1)."""
        return self._first_slot

    @property
    def next_slot(self) -> int:
        """The slot the next append must start with (``last_slot`` may be rewritten). O(1)."""
        with self._lock:
            last = self._last_slot
            return last + 1 if last is not None else self._segments[-1].next_slot

    def segments(self) -> list[SegmentInfo]:
        """The segments, oldest first."""
        with self._lock:
            n = len(self._segments)
            return [s.info(live=k == n - 1) for k, s in enumerate(self._segments)]

    def statistics(self) -> WalStatistics:
        with self._lock:
            return WalStatistics(
                segments=len(self._segments),
                archived_segments=sum(s.archived for s in self._segments),
                first_slot=self._first_slot,
                last_slot=self._last_slot,
                appends=self._appends,
                records_appended=self._records_appended,
                bytes_appended=self._bytes_appended,
                fsyncs=self._fsyncs,
                pins=len(self._pins),
            )

    # ------------------------------------------------------------------ appending

    def append(self, entries: Sequence[tuple[int, bytes]], *, sync: bool | None = None) -> None:
        """Append ``entries`` (``(slot, payload)`` pairs) with one write and at most one fsync.

        The first slot must be ``last_slot`` (a rewrite: the newest copy wins) or ``last_slot
        + 1`` (:attr:`next_slot` when the log is empty); the following slots must go up by one.
        ``sync=None`` follows the log's ``fsync`` setting; ``True``/``False`` override it. When
        this returns with syncing on, the records are durable; readers see them from then on.
        O(total bytes).

        Raises :class:`WalSlotError` on a slot rule violation (nothing written),
        :class:`WalUsageError` for an oversized batch or payload, :class:`WalClosedError`, and
        :class:`OSError` if the write or fsync fails (the log is then dead: an fsync failure
        cannot be retried safely).
        """
        n = len(entries)
        if n == 0:
            return
        if n > self._opts.append_entries_max:
            raise WalUsageError(f"batch of {n} entries exceeds {self._opts.append_entries_max}")
        do_sync = self._opts.fsync if sync is None else sync
        with self._write_lock:
            self._ensure_usable()
            live = self._segments[-1]
            last = self._last_slot
            first = entries[0][0]
            if last is None:
                if first != live.next_slot:
                    raise WalSlotError(
                        f"{self._dir}: first append must be slot {live.next_slot}, not {first}"
                    )
            elif first != last and first != last + 1:
                raise WalSlotError(
                    f"{self._dir}: append of slot {first} after last slot {last}: only "
                    f"{last} (rewrite) or {last + 1} are allowed"
                )
            expected = first
            for slot, payload in entries:
                if slot != expected:
                    raise WalSlotError(
                        f"{self._dir}: batch slots must be contiguous: got {slot}, "
                        f"expected {expected}"
                    )
                if len(payload) > framing.RECORD_BYTES_MAX:
                    raise WalUsageError(f"slot {slot}: payload exceeds {framing.RECORD_BYTES_MAX}")
                expected += 1
            try:
                buf, crc, _ends = framing.encode_records(entries, live.final_crc)
            except ValueError as exc:
                raise WalUsageError(str(exc)) from exc
            fd = self._fd
            assert fd is not None
            # The hot path: a plain try instead of _crash_guard() saves a generator per call.
            try:
                self._write_all(fd, buf)
                if self._faults is not None:
                    self._faults.hit(FaultPoint.AFTER_WRITE_BEFORE_FSYNC)
                if do_sync:
                    os.fdatasync(fd)
                if self._faults is not None:
                    self._faults.hit(FaultPoint.AFTER_FSYNC)
            except SimulatedCrash:
                self._abandon("dead after a simulated crash")
                raise
            except OSError:
                # After a failed write or fsync the file's state is unknown (and an fsync
                # error cannot be retried safely): stop, the next open repairs the tail.
                self._abandon("dead after an I/O error while writing")
                raise
            last_slot = entries[-1][0]
            with self._lock:
                live.end += len(buf)
                live.count += n
                if live.first_slot is None:
                    live.first_slot = first
                live.last_slot = last_slot
                live.final_crc = crc
                live.synced = do_sync
                self._last_slot = last_slot
                if self._first_slot is None:
                    self._first_slot = first
                self._last_payload = bytes(entries[-1][1])
                self._appends += 1
                self._records_appended += n
                self._bytes_appended += len(buf)
                self._fsyncs += do_sync
            if (
                live.count >= self._opts.segment_entries_max
                or live.end >= self._opts.segment_bytes_max
            ):
                with self._crash_guard():
                    self._roll()

    def _write_all(self, fd: int, buf: bytearray) -> None:
        faults = self._faults
        if faults is not None:
            armed = faults.should_fire(FaultPoint.PARTIAL_WRITE)
            if armed is not None:
                part = min(armed.nbytes, len(buf) - 1)
                if part > 0:
                    os.write(fd, buf[:part])
                raise SimulatedCrash(FaultPoint.PARTIAL_WRITE.value)
        view = memoryview(buf)
        written = 0
        # os.write may write less than asked (signals, quotas); the bound is the batch size.
        while written < len(buf):
            written += os.write(fd, view[written:])

    def _roll(self) -> None:
        """Start a new live segment (holds ``_write_lock``). The old one is synced first."""
        live = self._segments[-1]
        assert live.last_slot is not None, "roll-over only follows an append"
        old_fd = self._fd
        assert old_fd is not None
        if not live.synced:
            os.fdatasync(old_fd)
            live.synced = True
        new = self._create_segment(
            framing.SegmentHeader(
                seq=live.seq + 1, next_slot=live.last_slot + 1, prev_crc=live.final_crc
            )
        )
        fd = os.open(new.path, os.O_WRONLY | os.O_APPEND)
        with self._lock:
            self._segments.append(new)
            self._fd = fd
        os.close(old_fd)

    # ------------------------------------------------------------------ reading

    def _find(self, seq: int) -> _Segment | None:
        for seg in self._segments:
            if seg.seq == seq:
                return seg
        return None

    def _records_of(self, seq: int, from_slot: int) -> tuple[list[tuple[int, bytes]], int]:
        """All records of segment ``seq`` (newest copies, so slots go up by one) and the index of
        ``from_slot`` in them (``len`` if beyond). The list must not be modified.

        Decoded segments are cached (``decoded_segments_max``): a catch-up stream reading a
        segment in batches decodes it once, and a reader tailing the live segment decodes only
        what was appended since its last read.
        """
        with self._lock:
            self._ensure_usable()
            seg = self._find(seq)
            if seg is None:
                raise WalSlotPrunedError(from_slot, self._first_slot)
            path, is_archived, end, prev_crc = seg.path, seg.archived, seg.end, seg.prev_crc
            cached = self._decoded.get(seq)
            if cached is not None and cached.end == end:
                self._decoded.move_to_end(seq)
                return cached.records, _index_of(cached.records, from_slot)
            # Opened under the lock so archive/prune cannot unlink the file first; an open
            # descriptor keeps the data readable after an unlink.
            f = open(path, "rb")  # noqa: SIM115 - closed right below
        prefix: list[tuple[int, bytes]] = []
        start, seed = framing.SEGMENT_HEADER_SIZE, prev_crc
        with f:
            if is_archived:
                data = decompress(f.read(), path)
                if len(data) != end:
                    raise WalCorruptError(path, len(data), f"segment is not {end} bytes")
                base = 0
            else:
                if cached is not None and cached.end < end:
                    prefix, start, seed = cached.records, cached.end, cached.crc
                f.seek(start)
                data = f.read(end - start)
                if len(data) != end - start:
                    raise WalCorruptError(path, start + len(data), f"segment is not {end} bytes")
                base, start = start, 0
        records, crc = framing.decode_records(
            data,
            start=start,
            stop=len(data),
            prev_crc=seed,
            from_slot=0,
            path=str(path),
            base=base,
        )
        if prefix and records and records[0][0] == prefix[-1][0]:
            records = prefix[:-1] + records
        elif prefix:
            records = prefix + records
        if self._opts.decoded_segments_max > 0:
            with self._lock:
                current = self._decoded.get(seq)
                if self._find(seq) is not None and (current is None or current.end < end):
                    self._decoded[seq] = _Decoded(end=end, crc=crc, records=records)
                    self._decoded.move_to_end(seq)
                    while len(self._decoded) > self._opts.decoded_segments_max:
                        self._decoded.popitem(last=False)
        return records, _index_of(records, from_slot)

    def read(self, slot: int) -> bytes:
        """The newest payload at ``slot``.

        O(1) for the last slot; otherwise reads and verifies the segment holding it. Raises
        :class:`WalSlotPrunedError` if the slot is below the oldest slot held and
        :class:`WalSlotError` if it is above the last one.
        """
        with self._lock:
            self._ensure_usable()
            if slot == self._last_slot and self._last_payload is not None:
                return self._last_payload
            if self._last_slot is None or slot > self._last_slot:
                raise WalSlotError(f"{self._dir}: slot {slot} is beyond the last slot")
            if self._first_slot is None or slot < self._first_slot:
                raise WalSlotPrunedError(slot, self._first_slot)
            seq = next(
                s.seq
                for s in reversed(self._segments)
                if s.first_slot is not None and s.first_slot <= slot <= s.end_slot
            )
        records, index = self._records_of(seq, slot)
        if index >= len(records) or records[index][0] != slot:
            raise WalCorruptError(self._dir, None, f"slot {slot} not found where indexed")
        return records[index][1]

    def iter_from(self, slot: int) -> Iterator[tuple[int, bytes]]:
        """Iterate ``(slot, payload)`` from ``slot`` to the end, newest copies only.

        Reads archived and live segments, one whole segment at a time, verifying the crc chain
        (the first step into a segment that is not cached decodes all of it, about 0.1 s for a
        full segment of 100,000 records: on an event loop prefer :meth:`read_batch` in a worker
        thread).
        While the iterator runs it pins ``slot`` (see :meth:`pin`), so the collapser will not
        prune what it still has to read. It yields a contiguous run of slots from ``slot`` up
        to at least the last slot published when it started; records appended later may or may
        not appear (continue with ``iter_from(last + 1)``). Raises (on the first ``next``)
        :class:`WalSlotPrunedError` if ``slot`` is below the oldest slot held.
        """
        token = self._pin_acquire(slot)
        try:
            # One pass over the segments that exist now. Following later roll-overs could skip
            # records appended to a segment after this iterator read it, leaving a gap; a
            # caller that wants more continues with iter_from(last + 1).
            with self._lock:
                self._ensure_usable()
                todo = [
                    s.seq for s in self._segments if s.last_slot is not None and s.last_slot >= slot
                ]
            pending: tuple[int, bytes] | None = None
            for seq in todo:
                records, index = self._records_of(seq, slot)
                n = len(records)
                if index >= n:
                    continue
                if pending is not None and records[index][0] != pending[0]:
                    yield pending
                for k in range(index, n - 1):
                    yield records[k]
                pending = records[n - 1]
            if pending is not None:
                yield pending
        finally:
            self._pin_release(token)

    def read_batch(
        self,
        from_slot: int,
        *,
        entries_max: int = READ_BATCH_ENTRIES_MAX,
        bytes_max: int = READ_BATCH_BYTES_MAX,
    ) -> list[tuple[int, bytes]]:
        """Up to ``entries_max`` records (and about ``bytes_max`` payload bytes, at least one
        record) from ``from_slot`` on, newest copies only; ``[]`` past the end.

        Meant for catch-up streaming from a worker thread (``anyio.to_thread.run_sync``): each
        call does bounded work, and consecutive calls reuse the decoded segment. Raises
        :class:`WalSlotPrunedError` if ``from_slot`` is gone.
        """
        out: list[tuple[int, bytes]] = []
        size = 0
        for record in self.iter_from(from_slot):
            out.append(record)
            size += len(record[1])
            if len(out) >= entries_max or size >= bytes_max:
                break
        return out

    # ------------------------------------------------------------------ pins

    def _pin_acquire(self, from_slot: int) -> int:
        with self._lock:
            self._ensure_usable()
            oldest = (
                self._first_slot if self._first_slot is not None else self._segments[-1].next_slot
            )
            if from_slot < oldest:
                raise WalSlotPrunedError(from_slot, self._first_slot)
            token = next(self._pin_ids)
            self._pins[token] = from_slot
            return token

    def _pin_release(self, token: int) -> None:
        with self._lock:
            self._pins.pop(token, None)

    @contextlib.contextmanager
    def pin(self, from_slot: int) -> Iterator[None]:
        """Keep every segment holding slots >= ``from_slot`` while the block runs.

        For catch-up streaming (rule R4): pin, then read with :meth:`iter_from`. Raises
        :class:`WalSlotPrunedError` at once if ``from_slot`` is already gone (send a snapshot).
        :meth:`install_snapshot` and offline truncation ignore pins.
        """
        token = self._pin_acquire(from_slot)
        try:
            yield
        finally:
            self._pin_release(token)

    # ------------------------------------------------------------------ head snapshots

    def head_snapshot(self) -> tuple[int, Path] | None:
        """``(slot, path)`` of the newest head snapshot, or ``None``."""
        with self._lock:
            if not self._heads:
                return None
            slot = max(self._heads)
            return slot, self._heads[slot]

    def open_head_snapshot(self) -> tuple[int, BinaryIO] | None:
        """``(slot, binary file)`` of the newest head snapshot, or ``None``; caller closes it."""
        with self._lock:
            if not self._heads:
                return None
            slot = max(self._heads)
            return slot, open(self._heads[slot], "rb")

    def write_head_snapshot(self, slot: int, write: Callable[[BinaryIO], None]) -> Path:
        """Write a head snapshot standing for slots ``<= slot``; returns its path.

        ``write`` receives a binary file and writes the snapshot's bytes (opaque to the log).
        The file appears atomically (temp file, fsync, rename, directory fsync); older head
        snapshots are then removed. ``slot`` must be held by the log (``first_slot - 1 <= slot
        <= last_slot``) and not below the current head snapshot. Waits for a running collapse.
        """
        with self._collapse_lock:
            return self._write_head_snapshot(slot, write)

    @contextlib.contextmanager
    def collapse_session(self) -> Iterator[CollapseSession | None]:
        """Hold the collapse lock for several steps, or yield None if a collapse or an install
        already holds it (no waiting). The :class:`~parakoon_wal.collapser.Collapser` writes a
        snapshot, prunes and archives within one session, so nothing interleaves."""
        if not self._collapse_lock.acquire(blocking=False):
            yield None
            return
        try:
            yield CollapseSession(self)
        finally:
            self._collapse_lock.release()

    def _write_head_snapshot(self, slot: int, write: Callable[[BinaryIO], None]) -> Path:
        _check_slot(slot, "write_head_snapshot")
        with self._lock:
            self._ensure_usable()
            last = self._last_slot
            head = max(self._heads) if self._heads else None
        if last is None or slot > last:
            raise WalUsageError(f"{self._dir}: snapshot slot {slot} is beyond the last slot {last}")
        if head is not None and slot < head:
            raise WalUsageError(f"{self._dir}: snapshot slot {slot} is below head snapshot {head}")
        final = self._dir / head_snapshot_name(slot)
        existed = final.exists()
        try:
            write_atomic(
                final,
                write,
                faults=self._faults,
                before_rename=FaultPoint.SNAPSHOT_BEFORE_RENAME,
                after_rename=FaultPoint.SNAPSHOT_AFTER_RENAME,
            )
        except SimulatedCrash:
            self._abandon("dead after a simulated crash")
            raise
        except OSError:
            if existed or final.exists():
                self._abandon("dead after an I/O error while writing")
                raise
            # Nothing of the log changed (a full disk while writing the snapshot, typically):
            # keep the log open, drop the partial file, and let the caller retry later.
            final.with_name(final.name + ".tmp").unlink(missing_ok=True)
            raise
        with self._crash_guard():
            with self._lock:
                self._heads[slot] = final
                older = [(s, p) for s, p in self._heads.items() if s < slot]
                for s, _p in older:
                    del self._heads[s]
            for _s, p in older:
                p.unlink(missing_ok=True)
            if older:
                fsync_dir(self._dir)
        return final

    def install_snapshot(self, slot: int, write: Callable[[BinaryIO], None]) -> Path:
        """Install a snapshot received from a peer (rule R4) and drop the whole local log.

        Afterwards the log is empty, :attr:`last_slot` is ``None`` and the next append must be
        ``slot + 1``. Atomic across crashes: the new RESET segment is the commit point (module
        docstring, rule 6). Ignores pins: open iterators fail with
        :class:`WalSlotPrunedError`. Returns the snapshot's path.
        """
        _check_slot(slot, "install_snapshot")
        with self._collapse_lock, self._write_lock:
            self._ensure_usable()
            with self._lock:
                head = max(self._heads) if self._heads else None
            if head is not None and slot < head:
                raise WalUsageError(
                    f"{self._dir}: installing snapshot {slot} below head snapshot {head}"
                )
            pending = self._dir / (head_snapshot_name(slot) + ".install")
            final = self._dir / head_snapshot_name(slot)
            with self._crash_guard():
                with open(pending, "wb") as f:
                    write(f)
                    f.flush()
                    os.fsync(f.fileno())
                fsync_dir(self._dir)
                self._hit(FaultPoint.INSTALL_AFTER_SNAPSHOT)
                new = self._create_segment(
                    framing.SegmentHeader(
                        seq=self._segments[-1].seq + 1, next_slot=slot + 1, prev_crc=0, reset=True
                    )
                )
                self._hit(FaultPoint.INSTALL_AFTER_COMMIT)
                os.replace(pending, final)
                fsync_dir(self._dir)
                self._hit(FaultPoint.INSTALL_AFTER_RENAME)
                self._switch_to(new, slot, final)
            return final

    def reset_after_snapshot(self, slot: int) -> None:
        """Drop the whole log after the caller wrote head snapshot ``slot`` itself.

        Like :meth:`install_snapshot` without writing the snapshot: the head snapshot must be
        exactly ``slot``. The next append must be ``slot + 1``.
        """
        _check_slot(slot, "reset_after_snapshot")
        with self._collapse_lock, self._write_lock:
            self._ensure_usable()
            with self._lock:
                head = max(self._heads) if self._heads else None
            if head != slot:
                raise WalUsageError(f"{self._dir}: reset at {slot} needs head snapshot {slot}")
            with self._crash_guard():
                new = self._create_segment(
                    framing.SegmentHeader(
                        seq=self._segments[-1].seq + 1, next_slot=slot + 1, prev_crc=0, reset=True
                    )
                )
                self._hit(FaultPoint.INSTALL_AFTER_COMMIT)
                self._switch_to(new, slot, self._dir / head_snapshot_name(slot))

    def _switch_to(self, new: _Segment, slot: int, head_path: Path) -> None:
        """After a committed reset: make ``new`` the only segment, drop the old files."""
        fd = os.open(new.path, os.O_WRONLY | os.O_APPEND)
        with self._lock:
            old_segments = self._segments
            old_fd = self._fd
            self._segments = [new]
            self._decoded.clear()
            self._fd = fd
            self._heads[slot] = head_path
            old_heads = [p for s, p in self._heads.items() if s < slot]
            self._heads = {slot: head_path}
            self._refresh_slots()
        if old_fd is not None:
            os.close(old_fd)
        for seg in old_segments:
            seg.path.unlink(missing_ok=True)
        for p in old_heads:
            p.unlink(missing_ok=True)
        fsync_dir(self._dir)

    # ------------------------------------------------------------------ archiving and pruning

    def archive_completed(self) -> list[Path]:
        """Compress every completed, not yet archived segment (no-op with ``"none"``).

        Each archive is written atomically and verified by decompressing it before the plain
        file is removed. Returns the new archive paths. Waits for a running collapse.
        """
        with self._collapse_lock:
            return self._archive_completed()

    def _archive_completed(self) -> list[Path]:
        if self._opts.compressor == "none":
            return []
        with self._lock:
            self._ensure_usable()
            todo = [s.seq for s in self._segments[:-1] if not s.archived]
        done: list[Path] = []
        for seq in todo:
            with self._lock:
                seg = self._find(seq)
                if seg is None or seg.archived or seg is self._segments[-1]:
                    continue
                path, end = seg.path, seg.end
            data = read_segment_file(path, archived=False)
            if len(data) != end:
                raise WalCorruptError(path, len(data), f"completed segment is not {end} bytes")
            packed = compress(data, self._opts.zstd_level)
            target = path.with_name(path.name + ".zst")
            with self._crash_guard():
                write_atomic(
                    target,
                    writer_of(packed),
                    faults=self._faults,
                    before_rename=FaultPoint.ARCHIVE_BEFORE_RENAME,
                    after_rename=FaultPoint.ARCHIVE_BEFORE_UNLINK,
                )
                with self._lock:
                    seg.path = target
                    seg.archived = True
                path.unlink()
                fsync_dir(self._dir)
            done.append(target)
        return done

    def prune(self, upto_slot: int, *, segments_to_keep: int) -> list[Path]:
        """Delete the oldest completed segments whose slots are all ``<= upto_slot``.

        ``upto_slot`` must be covered by a head snapshot. Never deletes the live segment, the
        newest ``segments_to_keep`` (>= 1) completed segments or a pinned segment; stops at the
        first segment it must keep, so the log stays contiguous. Returns the removed paths.
        """
        with self._collapse_lock:
            return self._prune(upto_slot, segments_to_keep=segments_to_keep)

    def _prune(self, upto_slot: int, *, segments_to_keep: int) -> list[Path]:
        if segments_to_keep < 1:
            raise ValueError("segments_to_keep must be >= 1")
        with self._lock:
            self._ensure_usable()
            head = max(self._heads) if self._heads else None
            if head is None or upto_slot > head:
                raise WalUsageError(
                    f"{self._dir}: prune up to {upto_slot} is not covered by a head snapshot "
                    f"(newest: {head})"
                )
            completed = self._segments[:-1]
            keep_from = len(completed) - segments_to_keep
            pin_min = min(self._pins.values(), default=None)
            victims: list[_Segment] = []
            for k, seg in enumerate(completed):
                if k >= keep_from or seg.end_slot > upto_slot:
                    break
                if pin_min is not None and seg.end_slot >= pin_min:
                    break
                victims.append(seg)
            if not victims:
                return []
            self._segments = self._segments[len(victims) :]
            for seg in victims:
                self._decoded.pop(seg.seq, None)
            self._refresh_slots()
        removed: list[Path] = []
        with self._crash_guard():
            for k, seg in enumerate(victims):
                seg.path.unlink()
                removed.append(seg.path)
                if k == 0:
                    self._hit(FaultPoint.PRUNE_AFTER_FIRST_UNLINK)
            fsync_dir(self._dir)
        return removed

    # ------------------------------------------------------------------ metadata

    def save_meta(self, meta: Mapping[str, int | str]) -> None:
        """Durably replace the metadata record (temp file, fsync, rename, directory fsync)."""
        items: list[tuple[object, object]] = list(meta.items())
        for key, value in items:
            if not isinstance(key, str) or not isinstance(value, int | str):
                raise WalUsageError(f"meta {key!r}: keys are str, values int or str")
        body: bytes = msgpack.packb(dict(meta), use_bin_type=True)
        if len(body) > META_BYTES_MAX:
            raise WalUsageError(f"meta of {len(body)} bytes exceeds {META_BYTES_MAX}")
        raw = _META_HEADER.pack(META_MAGIC, len(body), framing.crc32c(body)) + body
        with self._meta_lock:
            self._ensure_usable()
            with self._crash_guard():
                write_atomic(
                    self._dir / META_NAME,
                    writer_of(raw),
                    faults=self._faults,
                    before_rename=FaultPoint.META_BEFORE_RENAME,
                )

    def load_meta(self) -> dict[str, int | str]:
        """The last saved metadata record, ``{}`` if none was ever saved."""
        return load_meta_file(self._dir / META_NAME)

    # ------------------------------------------------------------------ invariants

    def _check(self) -> None:
        """Assert every invariant of the in-memory state (stress tests call this)."""
        with self._lock:
            segs = self._segments
            assert segs, "there is always a live segment"
            assert not segs[-1].archived, "the live segment is never archived"
            for a, b in itertools.pairwise(segs):
                assert b.seq == a.seq + 1, "segment numbers are contiguous"
                assert not b.reset, "a RESET segment is always the oldest"
                assert b.next_slot == a.end_slot + 1, "segments continue each other"
                assert b.prev_crc == a.final_crc, "the crc chain continues"
                assert a.count > 0 or a.first_slot is None
            for s in segs:
                assert (s.count == 0) == (s.first_slot is None) == (s.last_slot is None)
                if s.first_slot is not None and s.last_slot is not None:
                    assert s.first_slot in (s.next_slot, s.next_slot - 1)
                    assert s.last_slot >= s.first_slot
                    assert s.count >= s.last_slot - s.first_slot + 1
            firsts = [s.first_slot for s in segs if s.first_slot is not None]
            lasts = [s.last_slot for s in segs if s.last_slot is not None]
            assert self._first_slot == (firsts[0] if firsts else None)
            assert self._last_slot == (lasts[-1] if lasts else None)
            assert (self._last_payload is None) == (self._last_slot is None)
            if self._heads and self._first_slot is not None and segs[0].next_slot > 0:
                assert max(self._heads) >= segs[0].next_slot - 1, "a snapshot covers the start"


class CollapseSession:
    """The steps of one collapse, valid only inside :meth:`Wal.collapse_session`."""

    def __init__(self, wal: Wal) -> None:
        self._wal = wal

    def write_head_snapshot(self, slot: int, write: Callable[[BinaryIO], None]) -> Path:
        return self._wal._write_head_snapshot(slot, write)  # noqa: SLF001 (the WAL's own collapse session)

    def prune(self, upto_slot: int, *, segments_to_keep: int) -> list[Path]:
        return self._wal._prune(upto_slot, segments_to_keep=segments_to_keep)  # noqa: SLF001 (the WAL's own collapse session)

    def archive_completed(self) -> list[Path]:
        return self._wal._archive_completed()  # noqa: SLF001 (the WAL's own collapse session)


def load_meta_file(path: Path) -> dict[str, int | str]:
    """Read and verify a ``meta`` file; ``{}`` if it does not exist."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return {}
    if len(raw) < _META_HEADER.size:
        raise WalCorruptError(path, 0, "meta record truncated")
    magic, length, crc = _META_HEADER.unpack_from(raw, 0)
    body = raw[_META_HEADER.size :]
    if magic != META_MAGIC:
        raise WalCorruptError(path, 0, f"not a parakoon WAL meta record (magic {magic!r})")
    if length != len(body) or framing.crc32c(body) != crc:
        raise WalCorruptError(path, _META_HEADER.size, "meta record checksum mismatch")
    value = msgpack.unpackb(body, raw=False)
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, int | str) for k, v in value.items()
    ):
        raise WalCorruptError(path, _META_HEADER.size, "meta record is not a str->int|str map")
    return dict(value)
