"""``parakoon wal dump|verify|truncate HOME_DIR ...``: offline inspection and repair of a WAL.

Run these on a **stopped** node. They take a node's home folder: the log is in ``HOME_DIR/wal``
when that folder exists, else in ``HOME_DIR`` itself (``parakoon_wal.tool.resolve_wal_dir``).
Instead of ``HOME_DIR`` one may give ``--config FILE --node NAME`` and the node's ``home_dir`` is
taken from the configuration.

``dump HOME_DIR [--from-slot N]``
    One line per stored record, ``slot<TAB>length<TAB>hex of the first payload bytes``, with a
    ``#`` line per segment and per head snapshot. Exit 0.
``verify HOME_DIR``
    Checks every segment, record, chain and the meta record without changing anything; prints a
    summary line then one line per problem (with file and offset). Exit 0 if no errors (warnings
    such as a torn tail, which the node cuts when it opens the log, are fine), 1 if damaged.
``truncate HOME_DIR --after SLOT``
    Removes every record above ``SLOT``; what is removed is moved aside under ``torn/``, never
    deleted. Takes the log's lock, so it refuses to run while the node runs. Exit 0.

Errors (a missing folder, a locked log, damage below the cut) print ``error: ...`` on stderr and
exit 1; a bad command line or configuration exits 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, TextIO

from parakoon_node.runtime.config import load_config
from parakoon_wal.errors import WalError
from parakoon_wal.tool import dump, truncate, verify

__all__ = ["add_parser", "run"]

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2


def _slot(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a slot number >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a slot number >= 0, got {text!r}")
    return value


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
    actions = wal.add_subparsers(dest="wal_command", metavar="ACTION", required=True)
    dump_parser = actions.add_parser("dump", help="print every record, one per line")
    _add_home(dump_parser)
    dump_parser.add_argument(
        "--from-slot", type=_slot, default=None, metavar="N", help="start at slot N"
    )
    verify_parser = actions.add_parser("verify", help="check everything, change nothing")
    _add_home(verify_parser)
    truncate_parser = actions.add_parser(
        "truncate", help="remove every record above a slot (moved aside under torn/)"
    )
    _add_home(truncate_parser)
    truncate_parser.add_argument(
        "--after", type=_slot, required=True, metavar="SLOT", help="the last slot to keep"
    )
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
    try:
        match args.wal_command:
            case "dump":
                dump(home, stream, from_slot=args.from_slot)
                code = EXIT_OK
            case "verify":
                report = verify(home)
                for line in report.lines():
                    stream.write(line + "\n")
                code = EXIT_OK if report.ok else EXIT_FAILURE
            case "truncate":
                result = truncate(home, args.after)
                for line in result.lines():
                    stream.write(line + "\n")
                code = EXIT_OK
            case other:  # argparse allows only the three above
                raise AssertionError(f"unknown wal action {other!r}")
    except (WalError, OSError) as exc:
        stream.flush()
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    stream.flush()
    return code
