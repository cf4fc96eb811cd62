"""``parakoon wal dump|verify|truncate HOME_DIR ...``: offline inspection and repair of a WAL.

Run these on a **stopped** node. They take a node's home folder: the log is in ``HOME_DIR/wal``
when that folder exists, else in ``HOME_DIR`` itself (``parakoon_wal.tool.resolve_wal_dir``).
Instead of ``HOME_DIR`` one may give ``--config FILE --node NAME`` and the node's ``home_dir`` is
taken from the configuration.

``dump HOME_DIR [--from-slot N]``
    One line per stored record, ``slot<TAB>length<TAB>hex of the first payload bytes``, with a
    ``#`` line per segment and per head snapshot. Exit 0, or 1 when it met damage (each problem
    is also printed on stderr, so ``| tail`` cannot hide it).
``verify HOME_DIR``
    Checks every segment, record, chain, the meta record and every head snapshot's content
    (each block checksum, its slot, nothing after its end) without changing anything; prints a
    summary line then one line per problem (with file and offset). Exit 0 if no errors (warnings
    such as a torn tail, which the node cuts when it opens the log, are fine), 1 if damaged.
``truncate HOME_DIR --after SLOT``
    Removes every record above ``SLOT``; what is removed is moved aside under ``torn/``, never
    deleted. Takes the log's lock, so it refuses to run while the node runs. Exit 0.

Errors (a missing folder, a locked log, damage below the cut) print ``error: ...`` on stderr and
exit 1; a bad command line or configuration exits 2.

The actions, their options and how they run are ``parakoon_wal.cli``'s (the same code serves
``python -m parakoon_wal``); this module adds only the node's ways of naming the folder.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, TextIO

from parakoon_node.runtime.config import load_config
from parakoon_wal.cli import EXIT_FAILURE, add_actions, run_action

__all__ = ["add_parser", "run"]

EXIT_USAGE = 2


def _add_home(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "home_dir", metavar="HOME_DIR", nargs="?", help="the node's home folder (or use --node)"
    )
    parser.add_argument(
        "--config",
        default="cluster.toml",
        metavar="FILE",
        help="with --node (default: %(default)s)",
    )
    parser.add_argument("--node", metavar="NAME", help="take HOME_DIR from this node's config")


def add_parser(commands: Any) -> None:
    """Add ``wal`` and its three subcommands to the ``parakoon`` parser's subparsers."""
    wal: argparse.ArgumentParser = commands.add_parser(
        "wal",
        help="inspect or repair a node's log offline (stop the node first)",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    add_actions(wal, dest="wal_command", add_location=_add_home)
    wal.set_defaults(run=run)


def _home_dir(args: argparse.Namespace) -> Path | None:
    if args.node is not None:
        if args.home_dir is not None:
            print("error: give HOME_DIR or --node, not both", file=sys.stderr)
            return None
        return load_config(args.config).node(args.node).home_dir
    if args.home_dir is None:
        print("error: HOME_DIR (or --node NAME) is required", file=sys.stderr)
        return None
    return Path(args.home_dir)


def run(args: argparse.Namespace, *, out: TextIO | None = None) -> int:
    """``parakoon wal ...``; returns the exit code. ConfigError propagates (exit 2)."""
    stream = out if out is not None else sys.stdout
    home = _home_dir(args)
    if home is None:
        return EXIT_USAGE
    if not home.is_dir():
        print(f"error: {home}: no such folder", file=sys.stderr)
        return EXIT_FAILURE
    from parakoon_node.runtime.storage import check_snapshot_file

    # The log treats head snapshots as opaque files; their content is the store's format.
    return run_action(args.wal_command, home, args, stream, snapshot_check=check_snapshot_file)
