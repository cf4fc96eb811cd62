"""``parakoon wal dump|verify|truncate HOME_DIR ...`` (being written)."""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["add_parser"]


def add_parser(commands: Any) -> None:
    wal = commands.add_parser("wal", help="inspect or repair a node's log offline")
    wal.add_argument("words", nargs=argparse.REMAINDER)
    wal.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    print("error: parakoon wal is not implemented yet")
    return 1
