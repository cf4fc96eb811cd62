"""``python -m parakoon_wal dump|verify|truncate DIR``: the offline tool from a shell."""

from __future__ import annotations

import argparse
import sys

from .cli import add_actions, run_action


def _add_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dir", help="a node's home folder or its WAL folder")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m parakoon_wal", description=__doc__)
    add_actions(parser, dest="command", add_location=_add_dir)
    args = parser.parse_args(argv)
    return run_action(args.command, args.dir, args, sys.stdout)


if __name__ == "__main__":
    sys.exit(main())
