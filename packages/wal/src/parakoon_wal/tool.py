"""Offline inspection and repair of a WAL directory: ``dump``, ``verify``, ``truncate``.

The node's CLI (``parakoon wal dump|verify|truncate HOME_DIR``) and ``python -m parakoon_wal``
call these. Each takes a node's home directory: the log lives in ``HOME_DIR/wal`` when that
folder exists, otherwise ``HOME_DIR`` itself is taken to be the WAL directory.

* :func:`dump` and :func:`verify` only read. They take no lock, so run them on a stopped node
  (on a running one they may report a tail that is being written).
* :func:`truncate` takes the directory lock, removes every record above a slot and moves what it
  removes under ``torn/`` instead of deleting it. Unlike opening the log, it works on a log with a
  damaged record: cutting below the damage is how an operator repairs one. Afterwards it opens
  the log normally to prove the result is valid.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TextIO

from . import framing
from ._fs import fsync_dir, read_segment_file, unique_path, write_atomic, writer_of
from .errors import WalCorruptError, WalDiskError, WalLockedError, WalUsageError
from .log import (
    LOCK_NAME,
    META_NAME,
    TORN_DIR,
    Wal,
    list_wal_dir,
    load_meta_file,
    segment_name,
)

__all__ = [
    "Problem",
    "TruncateReport",
    "VerifyReport",
    "dump",
    "resolve_wal_dir",
    "truncate",
    "verify",
]

#: How many payload bytes ``dump`` shows per record (as hex).
DUMP_PAYLOAD_BYTES_MAX = 48
#: How far ``verify`` searches past damage for the next intact record.
VERIFY_RESYNC_BYTES_MAX = 1024 * 1024
#: How many damaged spots ``verify`` reports per segment before it gives up on the segment.
VERIFY_DAMAGE_MAX = 100


def resolve_wal_dir(home_dir: str | os.PathLike[str]) -> Path:
    """``HOME_DIR/wal`` if it is a directory, else ``HOME_DIR``."""
    home = Path(home_dir)
    return home / "wal" if (home / "wal").is_dir() else home


@dataclass(frozen=True, slots=True, kw_only=True)
class Problem:
    severity: Literal["error", "warning"]
    path: Path
    offset: int | None
    message: str

    def __str__(self) -> str:
        where = str(self.path) if self.offset is None else f"{self.path} at offset {self.offset}"
        return f"{self.severity}: {where}: {self.message}"


@dataclass(frozen=True, slots=True, kw_only=True)
class VerifyReport:
    """Everything :func:`verify` found; ``ok`` means no errors (warnings are allowed)."""

    directory: Path
    problems: tuple[Problem, ...]
    segments: int
    records: int
    first_slot: int | None
    last_slot: int | None
    head_snapshot_slot: int | None
    meta: dict[str, int | str] | None

    @property
    def ok(self) -> bool:
        return not any(p.severity == "error" for p in self.problems)

    def lines(self) -> list[str]:
        out = [
            f"{self.directory}: {'OK' if self.ok else 'DAMAGED'}: {self.segments} segment(s), "
            f"{self.records} record(s), slots {self.first_slot}..{self.last_slot}, "
            f"head snapshot {self.head_snapshot_slot}, meta {self.meta}"
        ]
        out.extend(str(p) for p in self.problems)
        return out


@dataclass(frozen=True, slots=True)
class _SegFile:
    seq: int
    next_slot: int
    path: Path
    archived: bool


def _list(directory: Path, problems: list[Problem]) -> tuple[list[_SegFile], dict[int, Path]]:
    by_seq: dict[int, _SegFile] = {}
    heads: dict[int, Path] = {}
    for file in list_wal_dir(directory):
        path = file.path
        if file.kind == "tmp":
            problems.append(
                Problem(
                    severity="warning",
                    path=path,
                    offset=None,
                    message="leftover temp file (opening removes it)",
                )
            )
        elif file.kind == "segment":
            seg = _SegFile(file.number, file.next_slot, path, file.archived)
            other = by_seq.get(seg.seq)
            if other is not None:
                problems.append(
                    Problem(
                        severity="warning",
                        path=path,
                        offset=None,
                        message="plain and archived copies (interrupted archive)",
                    )
                )
                if other.archived:
                    by_seq[seg.seq] = seg
            else:
                by_seq[seg.seq] = seg
        elif file.kind == "head":
            heads[file.number] = path
        else:
            problems.append(
                Problem(
                    severity="warning",
                    path=path,
                    offset=None,
                    message="snapshot install in progress (opening settles it)",
                )
            )
    return [by_seq[k] for k in sorted(by_seq)], heads


#: Checks one head snapshot's content (the log only knows its file name): given the file and
#: the slot in its name, returns ``(byte offset, message)`` of the first problem, or None. The
#: node passes one that reads the store format, which this package does not know.
SnapshotCheck = Callable[[Path, int], tuple[int, str] | None]


def verify(
    home_dir: str | os.PathLike[str], *, snapshot_check: SnapshotCheck | None = None
) -> VerifyReport:
    """Check a WAL directory without changing it; never raises for damage, reports it.

    Reports, with file and offset: unreadable or inconsistent segment headers, holes in the
    segment sequence, slots before the first segment that no head snapshot covers, broken
    chains between segments, every damaged record (after damage it resumes at the next intact
    record, searching up to ``VERIFY_RESYNC_BYTES_MAX`` bytes), a torn tail of the live segment
    (a warning: opening cuts it), and an unreadable ``meta`` record.
    """
    directory = resolve_wal_dir(home_dir)
    problems: list[Problem] = []
    if not directory.is_dir():
        problems.append(
            Problem(severity="error", path=directory, offset=None, message="not a directory")
        )
        return VerifyReport(
            directory=directory,
            problems=tuple(problems),
            segments=0,
            records=0,
            first_slot=None,
            last_slot=None,
            head_snapshot_slot=None,
            meta=None,
        )
    segs, heads = _list(directory, problems)
    head_slot = max(heads) if heads else None

    def error(path: Path, offset: int | None, message: str) -> None:
        problems.append(Problem(severity="error", path=path, offset=offset, message=message))

    for a, b in itertools.pairwise(segs):
        if b.seq != a.seq + 1:
            error(
                directory,
                None,
                f"segment {a.seq + 1} missing between {a.path.name} and {b.path.name}",
            )
    records = 0
    first: int | None = None
    last: int | None = None
    prev_end: tuple[int, int] | None = None  # (end slot, final crc) of the previous segment
    for k, seg in enumerate(segs):
        live = k == len(segs) - 1
        try:
            data = read_segment_file(seg.path, archived=seg.archived)
            header = framing.decode_segment_header(data, str(seg.path))
        except (WalDiskError, OSError) as exc:
            error(seg.path, getattr(exc, "offset", None), str(exc))
            prev_end = None
            continue
        if header.seq != seg.seq or header.next_slot != seg.next_slot:
            error(seg.path, 0, "header disagrees with the file name")
        if (
            k == 0
            and header.next_slot > 0
            and (head_slot is None or head_slot < header.next_slot - 1)
        ):
            error(
                seg.path,
                None,
                f"slots before {header.next_slot} are not covered by a head "
                f"snapshot (newest: {head_slot})",
            )
        if prev_end is not None and not header.reset:
            if header.next_slot != prev_end[0] + 1:
                error(
                    seg.path,
                    0,
                    f"next_slot {header.next_slot} does not continue slot {prev_end[0]}",
                )
            if header.prev_crc != prev_end[1]:
                error(seg.path, 0, "chain seed does not match the previous segment")
        if live and seg.archived:
            error(seg.path, None, "the newest segment must not be archived")
        offset = framing.SEGMENT_HEADER_SIZE
        seed, next_slot = header.prev_crc, header.next_slot
        rewrite_ok = not header.reset and header.next_slot > 0
        chain_intact = True
        seg_last: int | None = None
        # Each pass checks from ``offset`` to the end or the next damage; after damage, checking
        # resumes at the next intact-looking record, so every damaged spot gets reported.
        for _pass in range(VERIFY_DAMAGE_MAX + 1):
            try:
                result = framing.scan(
                    data,
                    start=offset,
                    prev_crc=seed,
                    next_slot=next_slot,
                    rewrite_first_ok=rewrite_ok,
                    path=str(seg.path),
                    torn_ok=live,
                )
            except WalCorruptError as exc:
                error(seg.path, exc.offset, exc.detail)
                chain_intact = False
                damaged_at = exc.offset if exc.offset is not None else offset
                # count the good records before the damage: they scan cleanly on their own
                before = framing.scan(
                    data[:damaged_at],
                    start=offset,
                    prev_crc=seed,
                    next_slot=next_slot,
                    rewrite_first_ok=rewrite_ok,
                    path=str(seg.path),
                    torn_ok=True,
                )
                if before.torn is None:
                    records += before.count
                    if first is None:
                        first = before.first_slot
                    if before.last_slot is not None:
                        last = seg_last = before.last_slot
                found = framing.find_intact_record(
                    data, damaged_at + 1, window=VERIFY_RESYNC_BYTES_MAX
                )
                if found is None:
                    error(
                        seg.path,
                        damaged_at,
                        "no intact record found after the damage "
                        f"(searched {VERIFY_RESYNC_BYTES_MAX} bytes); the rest is unchecked",
                    )
                    break
                resume, end, seed, slot = found
                problems.append(
                    Problem(
                        severity="warning",
                        path=seg.path,
                        offset=resume,
                        message=f"checking resumes here at slot {slot}, "
                        f"{resume - damaged_at} bytes after the damage",
                    )
                )
                records += 1
                first = slot if first is None else first
                last = seg_last = slot
                offset, next_slot, rewrite_ok = end, slot + 1, True
                continue
            if result.torn is not None:
                problems.append(
                    Problem(
                        severity="warning",
                        path=seg.path,
                        offset=result.end,
                        message=f"torn tail ({result.torn}): opening cuts "
                        f"{len(data) - result.end} bytes",
                    )
                )
            records += result.count
            if first is None:
                first = result.first_slot
            if result.last_slot is not None:
                last = seg_last = result.last_slot
            seed = result.crc
            break
        else:
            error(seg.path, offset, f"more than {VERIFY_DAMAGE_MAX} damaged spots; stopped here")
            chain_intact = False
        end_slot = seg_last if seg_last is not None else header.next_slot - 1
        prev_end = (end_slot, seed) if chain_intact else None
    if snapshot_check is not None:
        for slot, path in sorted(heads.items()):
            try:
                damage = snapshot_check(path, slot)
            except OSError as exc:
                damage = (0, f"unreadable: {exc}")
            if damage is not None:
                error(path, damage[0], f"head snapshot: {damage[1]}")
    meta: dict[str, int | str] | None = None
    try:
        meta = load_meta_file(directory / META_NAME)
    except (WalDiskError, OSError, ValueError) as exc:
        error(directory / META_NAME, None, f"meta record unreadable: {exc}")
    return VerifyReport(
        directory=directory,
        problems=tuple(problems),
        segments=len(segs),
        records=records,
        first_slot=first,
        last_slot=last,
        head_snapshot_slot=head_slot,
        meta=meta,
    )


@dataclass(frozen=True, slots=True)
class DumpReport:
    """What :func:`dump` wrote: the number of records and the damage it met (as written)."""

    records: int
    errors: tuple[str, ...]


def dump(home_dir: str | os.PathLike[str], out: TextIO, from_slot: int | None = None) -> DumpReport:
    """Write every record (every stored copy, rewrites marked) to ``out``.

    One line per record: ``slot<TAB>length<TAB>hex of the first payload bytes``, preceded by a
    ``#`` line per segment. Damage is written as a ``# ERROR`` line, ends that segment and is
    reported in the result, so that a caller can exit non-zero (``| tail`` would hide it).
    """
    directory = resolve_wal_dir(home_dir)
    problems: list[Problem] = []
    segs, heads = _list(directory, problems)
    errors: list[str] = []
    for problem in problems:
        out.write(f"# {problem}\n")
        if problem.severity == "error":
            errors.append(str(problem))
    for slot, path in sorted(heads.items()):
        out.write(f"# head snapshot slot={slot} file={path.name} bytes={path.stat().st_size}\n")
    count = 0
    previous: int | None = None
    for seg in segs:
        try:
            data = read_segment_file(seg.path, archived=seg.archived)
            header = framing.decode_segment_header(data, str(seg.path))
        except (WalDiskError, OSError) as exc:
            out.write(f"# ERROR {exc}\n")
            errors.append(str(exc))
            continue
        out.write(
            f"# segment {seg.path.name} seq={header.seq} next_slot={header.next_slot} "
            f"reset={header.reset} archived={seg.archived} bytes={len(data)}\n"
        )
        offset = framing.SEGMENT_HEADER_SIZE
        crc = header.prev_crc
        while offset < len(data):
            try:
                slot, payload, end, crc = framing.decode_record(data, offset, crc, str(seg.path))
            except WalCorruptError as exc:
                out.write(f"# ERROR {exc} ({len(data) - offset} bytes not shown)\n")
                errors.append(str(exc))
                break
            if from_slot is None or slot >= from_slot:
                shown = payload[:DUMP_PAYLOAD_BYTES_MAX].hex()
                more = "..." if len(payload) > DUMP_PAYLOAD_BYTES_MAX else ""
                mark = "\trewrite" if slot == previous else ""
                out.write(f"{slot}\t{len(payload)}\t{shown}{more}{mark}\n")
                count += 1
            previous = slot
            offset = end
    return DumpReport(records=count, errors=tuple(errors))


@dataclass(frozen=True, slots=True, kw_only=True)
class TruncateReport:
    after_slot: int
    removed_files: tuple[Path, ...]
    saved_to: tuple[Path, ...]
    #: Bytes cut off the segment that now ends the log.
    bytes_cut: int
    #: Set when the cut went below ``after_slot`` because a record was damaged.
    damage: str | None
    last_slot: int | None

    def lines(self) -> list[str]:
        out = [f"truncated after slot {self.after_slot}: last slot is now {self.last_slot}"]
        out += [f"moved {p} aside" for p in self.removed_files]
        if self.bytes_cut:
            out.append(f"cut {self.bytes_cut} bytes")
        out += [f"saved to {p}" for p in self.saved_to]
        if self.damage:
            out.append(f"cut below the requested slot because of damage: {self.damage}")
        return out


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    fd = os.open(directory / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise WalLockedError(directory) from None
        yield
    finally:
        os.close(fd)


def truncate(home_dir: str | os.PathLike[str], after_slot: int) -> TruncateReport:
    """Remove every record with a slot above ``after_slot`` (and any damage below the cut).

    Segments wholly above the cut are moved to ``torn/``; the segment holding the cut is cut
    after the newest copy of ``after_slot`` (or at its first damaged record) and the bytes are
    saved under ``torn/``. Newest segments go first, so a crash part way leaves a valid, shorter
    log. Finally the log is opened to check the result, which raises if damage remains below
    the cut. Refuses (:class:`WalUsageError`) to remove every segment.
    """
    directory = resolve_wal_dir(home_dir)
    if after_slot < 0:
        raise WalUsageError(f"after_slot must be >= 0, not {after_slot}")
    problems: list[Problem] = []
    removed: list[Path] = []
    saved: list[Path] = []
    bytes_cut = 0
    damage: str | None = None
    with _locked(directory):
        segs, _heads = _list(directory, problems)
        if not segs or segs[0].next_slot > after_slot + 1:
            raise WalUsageError(
                f"{directory}: truncating after slot {after_slot} would remove every segment"
            )
        torn_dir = directory / TORN_DIR
        torn_dir.mkdir(exist_ok=True)
        for seg in reversed(segs):
            if seg.next_slot > after_slot + 1:
                target = unique_path(torn_dir / seg.path.name)
                os.replace(seg.path, target)
                fsync_dir(directory)
                removed.append(seg.path)
                saved.append(target)
                continue
            data = read_segment_file(seg.path, archived=seg.archived)
            header = framing.decode_segment_header(data, str(seg.path))
            offset = cut = framing.SEGMENT_HEADER_SIZE
            crc = header.prev_crc
            while offset < len(data):
                try:
                    slot, _payload, end, crc = framing.decode_record(
                        data, offset, crc, str(seg.path)
                    )
                except WalCorruptError as exc:
                    damage = str(exc)
                    break
                if slot > after_slot:
                    break
                offset = cut = end
            if cut < len(data):
                target = unique_path(torn_dir / f"{seg.path.name}.{cut:012d}.truncated")
                with open(target, "wb") as f:
                    f.write(data[cut:])
                    f.flush()
                    os.fsync(f.fileno())
                fsync_dir(torn_dir)
                saved.append(target)
                bytes_cut = len(data) - cut
                plain = directory / segment_name(seg.seq, seg.next_slot)
                if seg.archived:
                    # The cut segment becomes the live one, which is never archived.
                    kept = data[:cut]
                    write_atomic(plain, writer_of(kept), faults=None, before_rename=None)
                    seg.path.unlink()
                    fsync_dir(directory)
                else:
                    fd = os.open(plain, os.O_WRONLY)
                    try:
                        os.ftruncate(fd, cut)
                        os.fsync(fd)
                    finally:
                        os.close(fd)
            break
    with Wal.open(directory) as wal:
        last = wal.last_slot
    return TruncateReport(
        after_slot=after_slot,
        removed_files=tuple(removed),
        saved_to=tuple(saved),
        bytes_cut=bytes_cut,
        damage=damage,
        last_slot=last,
    )
