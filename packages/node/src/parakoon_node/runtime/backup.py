"""The backup file: one node's store at one chosen slot, with where it came from, self-checking.

Why a format of its own. A head snapshot (``PKVSNAP``, ``parakoon_kv.snapshot``) holds the store
and its slot, but not which cluster history the slot belongs to; a restore must know that to
rejoin the right cluster (or to refuse to), and an operator must be able to tell two backups
apart without loading them. So a backup wraps the snapshot:

Layout (integers little-endian, checksums CRC-32C)::

    magic        8 bytes  b"PKBACKUP"
    version      u32      1
    header_len   u32      bytes of the JSON header that follows (at most HEADER_BYTES_MAX)
    header       JSON     {"cluster_id", "cluster_uuid", "slot", "node", "created", "keys"}
    header_crc   u32      crc(every byte above)
    snapshot     PKVSNAP  the store at ``slot`` (its own block checksums, see parakoon_kv)
    trailer      8 bytes  b"PKBKEND\\x00"
                 u64      bytes before the trailer
                 u32      crc(every byte before the trailer)

The trailer's checksum covers the whole file, so any flipped byte is caught even where the inner
checks are weaker; the inner checks say *where*: a reader reports the byte offset, from the
start of the file, of the first problem it meets.

What a backup is, semantically: the store after applying every chosen slot up to ``slot`` of the
history ``cluster_uuid``, read from a node's frozen store (a follower's applied prefix is chosen
too, so any node can be backed up). ``cluster_uuid`` is None for a backup of a store outside any
history (the in-process test server).
"""

from __future__ import annotations

import datetime
import json
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Final

from parakoon_kv import FrozenStore, SnapshotError, Store

from .storage import snapshot_crc

__all__ = [
    "MAGIC",
    "BackupError",
    "BackupInfo",
    "read_backup",
    "verify_backup",
    "write_backup",
]

MAGIC: Final = b"PKBACKUP"
END_MAGIC: Final = b"PKBKEND\x00"
VERSION: Final = 1
HEADER_BYTES_MAX: Final = 1 << 16
_PREFIX = struct.Struct("<8sII")
_U32 = struct.Struct("<I")
_TRAILER = struct.Struct("<8sQI")


class BackupError(Exception):
    """A backup file is damaged, truncated or not a backup; names the file and byte offset."""

    def __init__(self, path: Path | str, offset: int, message: str) -> None:
        super().__init__(f"{path}: {message} (at byte offset {offset})")
        self.path = Path(path)
        self.offset = offset


@dataclass(frozen=True, slots=True, kw_only=True)
class BackupInfo:
    """The header of a backup: what it holds and where it came from."""

    cluster_id: str  # the configured [cluster] id
    cluster_uuid: str | None  # the history (identity.json), None outside any history
    slot: int  # the store holds every chosen slot up to this one (-1: none)
    node: str  # the node it was read from
    created: str  # UTC, ISO 8601
    keys: int

    def to_json(self) -> bytes:
        obj = {
            "cluster_id": self.cluster_id,
            "cluster_uuid": self.cluster_uuid,
            "slot": self.slot,
            "node": self.node,
            "created": self.created,
            "keys": self.keys,
        }
        return json.dumps(obj, sort_keys=True).encode()

    @staticmethod
    def from_json(raw: bytes) -> BackupInfo:
        obj = json.loads(raw)
        uuid = obj["cluster_uuid"]
        if uuid is not None and not isinstance(uuid, str):
            raise ValueError(f"cluster_uuid {uuid!r}")
        for key, kind in (("cluster_id", str), ("node", str), ("created", str)):
            if not isinstance(obj[key], kind):
                raise ValueError(f"{key} {obj[key]!r}")
        for key in ("slot", "keys"):
            if type(obj[key]) is not int:
                raise ValueError(f"{key} {obj[key]!r}")
        return BackupInfo(
            cluster_id=obj["cluster_id"],
            cluster_uuid=uuid,
            slot=obj["slot"],
            node=obj["node"],
            created=obj["created"],
            keys=obj["keys"],
        )

    def describe(self) -> str:
        history = self.cluster_uuid or "none"
        return (
            f"cluster {self.cluster_id!r} history {history}, slot {self.slot}, "
            f"{self.keys} keys, from {self.node} at {self.created}"
        )


class _CrcWriter:
    """Counts and checksums what goes through to ``raw``."""

    def __init__(self, raw: BinaryIO, crc: Callable[[bytes, int], int]) -> None:
        self._raw = raw
        self._crc = crc
        self.value = 0
        self.offset = 0

    def write(self, data: bytes, /) -> int:
        self._raw.write(data)
        self.value = self._crc(data, self.value)
        self.offset += len(data)
        return len(data)


class _CrcReader:
    """Counts and checksums what is read from ``raw``."""

    def __init__(self, raw: BinaryIO, crc: Callable[[bytes, int], int]) -> None:
        self._raw = raw
        self._crc = crc
        self.value = 0
        self.offset = 0

    def read(self, size: int, /) -> bytes:
        data = self._raw.read(size)
        self.value = self._crc(data, self.value)
        self.offset += len(data)
        return data


def new_info(
    *, cluster_id: str, cluster_uuid: str | None, node: str, frozen: FrozenStore
) -> BackupInfo:
    applied = frozen.applied_i
    return BackupInfo(
        cluster_id=cluster_id,
        cluster_uuid=cluster_uuid,
        slot=-1 if applied is None else applied,
        node=node,
        created=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        keys=frozen.key_count(),
    )


def write_backup(out: BinaryIO, frozen: FrozenStore, info: BackupInfo) -> int:
    """Write a backup of ``frozen`` to ``out`` (blocking: run it in a worker thread); returns
    its size in bytes. The caller makes the file durable and names it."""
    header = info.to_json()
    if len(header) > HEADER_BYTES_MAX:
        raise ValueError(f"backup header of {len(header)} bytes exceeds {HEADER_BYTES_MAX}")
    w = _CrcWriter(out, snapshot_crc)
    prefix = _PREFIX.pack(MAGIC, VERSION, len(header)) + header
    w.write(prefix)
    w.write(_U32.pack(snapshot_crc(prefix, 0)))
    frozen.dump(w, crc=snapshot_crc)
    size = w.offset
    out.write(_TRAILER.pack(END_MAGIC, size, w.value))
    return size + _TRAILER.size


def write_backup_file(path: Path, frozen: FrozenStore, info: BackupInfo) -> int:
    """``write_backup`` into ``path`` atomically and durably (temp file, fsync, rename)."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            size = write_backup(f, frozen, info)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return size


def read_backup(path: Path | str) -> tuple[BackupInfo, Store]:
    """Read and verify every checksum of the backup at ``path``; return its header and store.

    Raises :class:`BackupError` with the file and the byte offset of the first problem.
    """
    path = Path(path)
    try:
        f = open(path, "rb")  # noqa: SIM115 (closed below; the reader wraps it)
    except OSError as exc:
        raise BackupError(path, 0, f"cannot open: {exc.strerror}") from exc
    with f:
        r = _CrcReader(f, snapshot_crc)
        raw = r.read(_PREFIX.size)
        if len(raw) < _PREFIX.size:
            raise BackupError(path, len(raw), "truncated before the end of the header")
        magic, version, header_len = _PREFIX.unpack(raw)
        if magic != MAGIC:
            raise BackupError(path, 0, f"not a parakoon backup (magic {magic!r})")
        if version != VERSION:
            raise BackupError(path, 8, f"unsupported backup version {version}")
        if header_len > HEADER_BYTES_MAX:
            raise BackupError(path, 12, f"header length {header_len} exceeds {HEADER_BYTES_MAX}")
        header = r.read(header_len)
        if len(header) < header_len:
            raise BackupError(path, r.offset, "truncated inside the header")
        expected = r.value
        crc_at = r.offset
        (stored,) = _U32.unpack(_read_exact(r, _U32.size, path))
        if stored != expected:
            raise BackupError(path, crc_at, "header checksum mismatch")
        try:
            info = BackupInfo.from_json(header)
        except (ValueError, KeyError, TypeError) as exc:
            raise BackupError(path, _PREFIX.size, f"bad header: {exc}") from exc
        snapshot_at = r.offset
        try:
            store = Store.load(r, crc=snapshot_crc)
        except SnapshotError as exc:
            raise BackupError(
                path, snapshot_at + exc.offset, f"store snapshot: {exc.args[0]}"
            ) from exc
        applied = -1 if store.applied_i is None else store.applied_i
        if applied != info.slot or store.key_count() != info.keys:
            raise BackupError(
                path,
                snapshot_at,
                f"the snapshot holds slot {applied} and {store.key_count()} keys, the header "
                f"says slot {info.slot} and {info.keys} keys",
            )
        before, expected = r.offset, r.value
        trailer = f.read(_TRAILER.size)
        if len(trailer) < _TRAILER.size:
            raise BackupError(path, before, "truncated: the trailer is missing")
        end_magic, length, whole_crc = _TRAILER.unpack(trailer)
        if end_magic != END_MAGIC:
            raise BackupError(path, before, f"bad trailer magic {end_magic!r}")
        if length != before:
            raise BackupError(path, before + 8, f"trailer says {length} bytes, found {before}")
        if whole_crc != expected:
            raise BackupError(path, before + 16, "whole-file checksum mismatch")
        extra = f.read(1)
        if extra:
            raise BackupError(path, before + _TRAILER.size, "bytes after the trailer")
    return info, store


def _read_exact(r: _CrcReader, size: int, path: Path) -> bytes:
    at = r.offset
    data = r.read(size)
    if len(data) < size:
        raise BackupError(path, at, "truncated")
    return data


def verify_backup(path: Path | str) -> str:
    """Check every checksum; return a one-line summary. Raises :class:`BackupError`."""
    info, _store = read_backup(path)
    size = Path(path).stat().st_size
    return f"{path}: OK, backup of {info.describe()}, {size} bytes"


def backup_summary(info: BackupInfo) -> dict[str, Any]:
    """The header as a JSON-ready dict (for ``--json`` outputs)."""
    out: dict[str, Any] = json.loads(info.to_json())
    return out
