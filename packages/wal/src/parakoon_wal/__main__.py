"""``python -m parakoon_wal dump|verify|truncate DIR``: the offline tool from a shell."""

from __future__ import annotations

import argparse
import sys

from .errors import WalError
from .tool import dump, truncate, verify


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m parakoon_wal", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    p_dump = commands.add_parser("dump", help="print every record")
    p_dump.add_argument("dir")
    p_dump.add_argument("--from-slot", type=int, default=None)
    p_verify = commands.add_parser("verify", help="check everything, change nothing")
    p_verify.add_argument("dir")
    p_trunc = commands.add_parser("truncate", help="remove every record above a slot")
    p_trunc.add_argument("dir")
    p_trunc.add_argument("--after", type=int, required=True, metavar="SLOT")
    args = parser.parse_args(argv)
    try:
        if args.command == "dump":
            dump(args.dir, sys.stdout, from_slot=args.from_slot)
            return 0
        if args.command == "verify":
            report = verify(args.dir)
            for line in report.lines():
                print(line)
            return 0 if report.ok else 1
        result = truncate(args.dir, args.after)
        for line in result.lines():
            print(line)
        return 0
    except (WalError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
