"""Small file-system helpers: atomic replace, directory fsync, reading segments."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import zstandard

from .errors import WalCorruptError
from .faults import FaultPoint, FaultPoints

__all__ = [
    "compress",
    "decompress",
    "fsync_dir",
    "read_segment_file",
    "read_segment_head",
    "unique_path",
    "write_atomic",
    "writer_of",
]

#: Upper bound on the decompressed size of an archived segment; a corrupt frame header cannot
#: make us allocate more than this.
ARCHIVE_BYTES_MAX = 4 * 1024 * 1024 * 1024


def fsync_dir(directory: Path) -> None:
    """Make renames, creations and removals in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(
    final: Path,
    write: Callable[[BinaryIO], None],
    *,
    faults: FaultPoints | None,
    before_rename: FaultPoint | None,
    after_rename: FaultPoint | None = None,
) -> None:
    """Write ``final`` through a temp file: write, fsync, rename, fsync the directory.

    A crash leaves either the old file (and possibly a ``.tmp`` file, which opening removes)
    or the complete new one, never a mix.
    """
    tmp = final.with_name(final.name + ".tmp")
    with open(tmp, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    if faults is not None and before_rename is not None:
        faults.hit(before_rename)
    os.replace(tmp, final)
    if faults is not None and after_rename is not None:
        faults.hit(after_rename)
    fsync_dir(final.parent)


def writer_of(data: bytes) -> Callable[[BinaryIO], None]:
    """A ``write`` callback for :func:`write_atomic` that writes ``data``."""

    def write(f: BinaryIO) -> None:
        f.write(data)

    return write


def unique_path(path: Path) -> Path:
    """``path`` itself if free, else ``path`` with the first free ``.N`` suffix."""
    if not path.exists():
        return path
    for n in range(1, 10_000):
        candidate = path.with_name(f"{path.name}.{n}")
        if not candidate.exists():
            return candidate
    raise FileExistsError(f"{path}: no free name to set bytes aside")


def compress(data: bytes, level: int) -> bytes:
    """zstd frame with content size and content checksum; checked by decompressing it again."""
    out: bytes = zstandard.ZstdCompressor(
        level=level, write_checksum=True, write_content_size=True
    ).compress(data)
    if zstandard.ZstdDecompressor().decompress(out, max_output_size=len(data)) != data:
        raise AssertionError("zstd round trip mismatch")
    return out


def decompress(data: bytes, path: Path) -> bytes:
    """Decompress an archived segment; any zstd error becomes a :class:`WalCorruptError`."""
    try:
        params = zstandard.get_frame_parameters(data)
        if params.content_size > ARCHIVE_BYTES_MAX:
            raise WalCorruptError(path, 0, f"archive claims {params.content_size} bytes")
        out: bytes = zstandard.ZstdDecompressor().decompress(data)
    except zstandard.ZstdError as exc:
        raise WalCorruptError(path, None, f"archived segment does not decompress: {exc}") from exc
    return out


def read_segment_head(path: Path, *, archived: bool, size: int) -> bytes:
    """The first ``size`` bytes of a segment (decompressing only as much as needed)."""
    with open(path, "rb") as f:
        if not archived:
            return f.read(size)
        try:
            with zstandard.ZstdDecompressor().stream_reader(f, closefd=False) as reader:
                out: bytes = reader.read(size)
        except zstandard.ZstdError as exc:
            raise WalCorruptError(
                path, None, f"archived segment does not decompress: {exc}"
            ) from exc
        return out


def read_segment_file(path: Path, *, archived: bool) -> bytes:
    """The uncompressed bytes of a segment file."""
    with open(path, "rb") as f:
        data = f.read()
    return decompress(data, path) if archived else data
