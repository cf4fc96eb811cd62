"""The offline tool's command line, shared by ``python -m parakoon_wal`` and ``parakoon wal``.

Both build their ``dump|verify|truncate`` actions with :func:`add_actions` and run the chosen
one with :func:`run_action`; only how the log's folder is named on the command line differs (a
plain ``dir`` here, ``HOME_DIR`` or ``--config FILE --node NAME`` for ``parakoon wal``), so each
passes its own ``add_location``. Output, errors and exit codes are the same for both:

* ``dump``: one line per record; exit 0, or 1 (each error also on stderr) if it met damage;
* ``verify``: a summary line, then one line per problem; exit 0 if no errors, 1 if damaged;
* ``truncate``: what was removed and where it was saved; exit 0;
* a WAL or OS error (a locked log, damage below the cut...): ``error: ...`` on stderr, exit 1.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import TextIO

from .errors import WalError
from .tool import SnapshotCheck, dump, truncate, verify

__all__ = ["EXIT_FAILURE", "EXIT_OK", "add_actions", "run_action", "slot_number"]

EXIT_OK = 0
EXIT_FAILURE = 1


def slot_number(text: str) -> int:
    """argparse type of ``--from-slot`` and ``--after``: a slot number >= 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a slot number >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a slot number >= 0, got {text!r}")
    return value


def add_actions(
    parser: argparse.ArgumentParser,
    *,
    dest: str,
    add_location: Callable[[argparse.ArgumentParser], None],
) -> None:
    """Add the ``dump``, ``verify`` and ``truncate`` actions; the chosen one lands in ``dest``.

    ``add_location`` adds, to each action, the arguments that name the log's folder.
    """
    actions = parser.add_subparsers(dest=dest, metavar="ACTION", required=True)
    dump_parser = actions.add_parser("dump", help="print every record, one per line")
    add_location(dump_parser)
    dump_parser.add_argument(
        "--from-slot", type=slot_number, default=None, metavar="N", help="start at slot N"
    )
    verify_parser = actions.add_parser("verify", help="check everything, change nothing")
    add_location(verify_parser)
    truncate_parser = actions.add_parser(
        "truncate", help="remove every record above a slot (moved aside under torn/)"
    )
    add_location(truncate_parser)
    truncate_parser.add_argument(
        "--after", type=slot_number, required=True, metavar="SLOT", help="the last slot to keep"
    )


def run_action(
    action: str,
    home: str | os.PathLike[str],
    args: argparse.Namespace,
    out: TextIO,
    *,
    snapshot_check: SnapshotCheck | None = None,
) -> int:
    """Run ``action`` on the log in ``home`` (a home folder or the WAL folder itself);
    ``verify`` also checks each head snapshot's content with ``snapshot_check`` if given."""
    try:
        match action:
            case "dump":
                dumped = dump(home, out, from_slot=args.from_slot)
                code = EXIT_OK
                if dumped.errors:
                    out.flush()
                    for line in dumped.errors:
                        print(f"error: {line}", file=sys.stderr)
                    code = EXIT_FAILURE
            case "verify":
                report = verify(home, snapshot_check=snapshot_check)
                for line in report.lines():
                    out.write(line + "\n")
                code = EXIT_OK if report.ok else EXIT_FAILURE
            case "truncate":
                result = truncate(home, args.after)
                for line in result.lines():
                    out.write(line + "\n")
                code = EXIT_OK
            case other:  # argparse allows only the three above
                raise AssertionError(f"unknown wal action {other!r}")
    except (WalError, OSError) as exc:
        out.flush()
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    out.flush()
    return code
