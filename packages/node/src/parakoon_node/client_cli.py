"""``parakoon client``: one client command against the cluster (being written)."""

from __future__ import annotations

import argparse
from typing import Any

from parakoon_node.config import load_config

__all__ = ["add_parser"]


def add_parser(commands: Any) -> None:
    client = commands.add_parser("client", help="run one client command against the cluster")
    client.add_argument("--config", default="cluster.toml", metavar="FILE")
    client.add_argument("words", nargs=argparse.REMAINDER)
    client.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    load_config(args.config)
    print("error: parakoon client is not implemented yet")
    return 1
