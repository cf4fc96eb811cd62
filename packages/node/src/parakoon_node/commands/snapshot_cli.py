"""``parakoon snapshot verify FILE``: check a backup file or a head snapshot, offline.

Which format is read from the file's first 8 bytes: ``PKBACKUP`` (a backup written by
``parakoon backup`` or GET_DB, ``parakoon_node.runtime.backup``) or ``PKVSNAP`` (a node's
``wal/head-<slot>.snap``, ``parakoon_kv.snapshot``). Every checksum is checked. Prints one
summary line and exits 0, or ``error: FILE: ... (at byte offset N)`` on stderr and exits 1.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any

__all__ = ["add_parser"]

EXIT_OK = 0
EXIT_FAILURE = 1
_HEAD_NAME = re.compile(r"^head-(\d{20})\.snap$")


def add_parser(commands: Any) -> None:
    snapshot: argparse.ArgumentParser = commands.add_parser(
        "snapshot",
        help="check a backup file or a head snapshot offline",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    actions = snapshot.add_subparsers(dest="snapshot_command", metavar="ACTION", required=True)
    verify = actions.add_parser(
        "verify", help="check every checksum of a backup file or head snapshot"
    )
    verify.add_argument("file", metavar="FILE")
    verify.set_defaults(run=run)


def verify_file(path: Path) -> str:
    """One summary line for an intact file; raises ``ValueError`` naming file and offset."""
    from parakoon_kv.snapshot import MAGIC as SNAPSHOT_MAGIC
    from parakoon_node.runtime.backup import MAGIC as BACKUP_MAGIC
    from parakoon_node.runtime.backup import BackupError, verify_backup
    from parakoon_node.runtime.storage import check_snapshot_file

    try:
        with open(path, "rb") as f:
            magic = f.read(8)
    except OSError as exc:
        raise ValueError(f"{path}: cannot read: {exc.strerror}") from exc
    if magic == BACKUP_MAGIC:
        try:
            return verify_backup(path)
        except BackupError as exc:
            raise ValueError(str(exc)) from exc
    if magic == SNAPSHOT_MAGIC:
        named = _HEAD_NAME.match(path.name)
        slot = int(named.group(1)) if named else None
        try:
            damage = check_snapshot_file(path, slot)
        except OSError as exc:
            raise ValueError(f"{path}: cannot read: {exc.strerror}") from exc
        if damage is not None:
            offset, problem = damage
            raise ValueError(f"{path}: head snapshot: {problem} (at byte offset {offset})")
        size = path.stat().st_size
        where = f"slot {slot}" if slot is not None else "its slot (not in the file name)"
        return f"{path}: OK, head snapshot of {where}, {size} bytes"
    raise ValueError(
        f"{path}: neither a parakoon backup nor a head snapshot (first bytes {magic!r})"
        " (at byte offset 0)"
    )


def run(args: argparse.Namespace) -> int:
    try:
        print(verify_file(Path(args.file)), flush=True)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_OK
