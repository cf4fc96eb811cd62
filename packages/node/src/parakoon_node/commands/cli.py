"""The ``parakoon`` command: ``node``, ``cluster``, ``client``, ``bench`` and ``wal``.

The forms below are a contract (docs/spec/architecture.md); scripts and tests outside the project
call them exactly like this::

    parakoon node    --config cluster.toml --node node_0 [--log-format pretty|json]
                     [--log-level info]
    parakoon cluster --config cluster.toml
    parakoon client  --config cluster.toml [--node NAME] [--consistency C] COMMAND [ARGS...]
    parakoon bench   --config cluster.toml [--clients N] [--ops N] [--value-size BYTES]
                     [--json PATH]
    parakoon wal     dump|verify|truncate HOME_DIR ...
    parakoon force-new-cluster --config cluster.toml --node NAME   # node stopped; see below

Exit codes, the same for every subcommand:

* ``0``: success (for ``node`` and ``cluster``: a clean stop after SIGINT or SIGTERM);
* ``1``: the operation failed (a client command got an error, ``wal verify`` found damage, a node
  stopped on an error);
* ``2``: the command line or the configuration is wrong (argparse's own code for usage errors);
  the message names the key and no traceback is printed;
* ``130``: interrupted by Ctrl-C where no clean stop is defined (e.g. a long client command).

The node driver (anyio, uvloop, Paxos, storage), the launcher and the benchmark are imported
inside the subcommand that runs them, so ``parakoon client`` and ``parakoon wal`` start without
them; the client and WAL subcommands' own modules are light (the whole parser is built in about
0.1 s).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from importlib import metadata
from typing import Final

from parakoon_node.commands.tls_options import add_tls_options
from parakoon_node.runtime.config import ConfigError, check_home_dir, load_config
from parakoon_node.runtime.logs import LOG_FORMATS, LOG_LEVELS, LogFormat

__all__ = ["EXIT_FAILURE", "EXIT_OK", "EXIT_USAGE", "build_parser", "main", "version_text"]

EXIT_OK: Final = 0
EXIT_FAILURE: Final = 1
EXIT_USAGE: Final = 2
EXIT_INTERRUPTED: Final = 130

DEFAULT_CONFIG: Final = "cluster.toml"


def version_text() -> str:
    try:
        version = metadata.version("parakoon-node")
    except metadata.PackageNotFoundError:  # running from a source tree that was never installed
        version = "unknown"
    return f"parakoon {version}"


def fail(message: str) -> None:
    """Print one ``error: ...`` line on stderr (the only form errors take on the command line)."""
    print(f"error: {message}", file=sys.stderr, flush=True)


def _add_config(parser: argparse.ArgumentParser, *, tls: bool = False) -> None:
    parser.add_argument(
        "--config",
        default=DEFAULT_CONFIG,
        metavar="FILE",
        help=f"the cluster's configuration file (default: {DEFAULT_CONFIG})",
    )
    if tls:
        add_tls_options(parser)


def _add_logging(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        default="pretty",
        help="pretty: readable, colored on a terminal; json: one object per line (default: pretty)",
    )
    parser.add_argument(
        "--log-level",
        choices=LOG_LEVELS,
        default="info",
        type=str.lower,
        help="lowest level written (default: info)",
    )


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The whole command line; each subcommand stores its handler in ``args.run``."""
    from parakoon_node.commands import (
        backup_cli,
        client_cli,
        member_cli,
        snapshot_cli,
        status_cli,
        wal_cli,
    )

    parser = argparse.ArgumentParser(
        prog="parakoon",
        description="parakoon: a replicated key/value store speaking the Arakoon protocol.",
    )
    parser.add_argument("--version", action="version", version=version_text())
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    node = commands.add_parser(
        "node",
        help="run one node of the cluster in the foreground",
        description="Run one node in the foreground until SIGINT or SIGTERM, then stop cleanly.",
    )
    _add_config(node)
    node.add_argument("--node", required=True, metavar="NAME", help="which node of the file")
    _add_logging(node)
    node.set_defaults(run=run_node)

    cluster = commands.add_parser(
        "cluster",
        help="run every node of the file as child processes (Ctrl-C stops all)",
        description=(
            "Start every node of the file as a child process, print their logs interleaved with"
            " each line prefixed by the node's name, and stop them all on Ctrl-C or SIGTERM."
            " A node that exits on its own is reported; the others keep running."
        ),
    )
    _add_config(cluster)
    _add_logging(cluster)
    cluster.add_argument(
        "--stop-timeout",
        type=_positive_float,
        default=10.0,
        metavar="SECS",
        help="how long to wait for the nodes after SIGTERM before killing them (default: 10)",
    )
    cluster.set_defaults(run=run_cluster)

    client_cli.add_parser(commands)

    bench = commands.add_parser(
        "bench",
        help="measure throughput and latency against a running cluster",
        description="Drive a running cluster with N concurrent clients and report the figures.",
    )
    _add_config(bench, tls=True)
    bench.add_argument(
        "--clients",
        type=_positive_int,
        default=16,
        metavar="N",
        help="concurrent clients (default: 16)",
    )
    bench.add_argument(
        "--ops",
        type=_positive_int,
        default=10_000,
        metavar="N",
        help="operations per phase, over all clients (default: 10000)",
    )
    bench.add_argument(
        "--duration",
        type=_positive_float,
        default=None,
        metavar="SECS",
        help="run each phase for this long instead of a fixed --ops",
    )
    bench.add_argument(
        "--value-size",
        type=_positive_int,
        default=100,
        metavar="BYTES",
        help="value size in bytes (default: 100)",
    )
    bench.add_argument(
        "--key-size",
        type=_positive_int,
        default=16,
        metavar="BYTES",
        help="key size in bytes (default: 16)",
    )
    bench.add_argument(
        "--phases",
        default=None,
        metavar="LIST",
        help="comma-separated phases (default: all: set,get,get-ng,seq10,mixed)",
    )
    bench.add_argument(
        "--json", default=None, metavar="PATH", help="also write the results as JSON to PATH"
    )
    bench.add_argument(
        "--procs",
        type=_positive_int,
        default=None,
        metavar="N",
        help="worker processes sharing the clients (default: min(4, CPUs))",
    )
    bench.add_argument(
        "--seed", type=int, default=1, metavar="N", help="seed of the key choices (default: 1)"
    )
    bench.add_argument(
        "--prefix",
        default=None,
        metavar="TEXT",
        help="put before every key (default: parakoon-bench/<random>/, so a run never touches"
        " other keys)",
    )
    bench.add_argument(
        "--cleanup",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="delete the keys written under the prefix at the end (default: yes)",
    )
    bench.set_defaults(run=run_bench)

    wal_cli.add_parser(commands)

    force = commands.add_parser(
        "force-new-cluster",
        help="make one stopped node the seed of a brand-new cluster history (disaster recovery)",
        description=(
            "For a cluster that lost more nodes' state than it tolerates: make NAME (stopped) the"
            " seed of a new cluster history, keeping its data. Then empty the home_dir of every"
            " other node and start them all: the new history forms once every voter is up, and"
            " the others copy the seed's data. Writes acknowledged by the old cluster that the"
            " seed never received are lost: choose the node with the highest applied slot"
            " ('parakoon wal dump HOME_DIR' shows it). See docs/operations.md."
        ),
    )
    _add_config(force)
    force.add_argument("--node", required=True, metavar="NAME", help="the node to keep")
    force.set_defaults(run=run_force_new_cluster)

    backup_cli.add_parser(commands)
    status_cli.add_parser(commands)
    member_cli.add_parser(commands)
    member_cli.add_join_parser(commands)
    snapshot_cli.add_parser(commands)
    # Each subcommand's own parser reports its usage errors (see main); nested subcommands
    # (client's) set their own, which wins because it is parsed later.
    for sub in commands.choices.values():
        sub.set_defaults(usage_parser=sub)
    return parser


def run_force_new_cluster(args: argparse.Namespace) -> int:
    """``parakoon force-new-cluster``: rewrite one stopped node's identity as a seed."""
    cluster = load_config(args.config)
    node = cluster.node(args.node)
    from parakoon_node.runtime.identity import IdentityStore
    from parakoon_node.runtime.members import differs_from_file
    from parakoon_node.runtime.storage import StorageError, membership_on_disk
    from parakoon_paxos import Membership
    from parakoon_wal import WalError
    from parakoon_wal.log import Wal

    wal_dir = node.home_dir / "wal"
    has_state = False
    members: Membership | None = None
    if wal_dir.is_dir():
        try:
            # Opening the log takes its lock: this fails while the node runs.
            wal = Wal.open(wal_dir, fsync=True)
        except WalError as exc:
            fail(f"cannot open the log of {node.name} (is the node still running?): {exc}")
            return EXIT_FAILURE
        try:
            head = wal.open_head_snapshot()
            if head is not None:
                head[1].close()
            has_state = wal.last_slot is not None or head is not None
            members = membership_on_disk(wal)
        except (StorageError, WalError) as exc:
            fail(f"cannot read the log of {node.name}: {exc}")
            return EXIT_FAILURE
        finally:
            wal.close()
    seed = IdentityStore(node.home_dir, cluster.cluster_id).force_new_cluster(has_state=has_state)
    print(
        f"{node.name} is now the seed of a new cluster history (incarnation "
        f"{seed.incarnation[:8]}, {'with' if has_state else 'without'} data). Empty the"
        " home_dir of every other node, then start them all; the history forms once every"
        " voter is reachable."
    )
    if members is not None and differs_from_file(cluster, members):
        # The seed keeps its whole log, and with it the membership changes it applied: they,
        # not the file, say who votes in the new history. Say so before anyone waits for a
        # history that needs nodes the file does not start.
        print(
            f"note: {node.name}'s replicated membership governs the new history, not "
            f"{args.config}: voters {', '.join(members.voters)}; learners "
            f"{', '.join(members.learners) or 'none'}. Start those nodes (the history forms "
            "once every voter is reachable). To start over on other nodes, seed the new "
            "history from a backup or head snapshot with 'parakoon restore --new-cluster', "
            "which takes its members from the file."
        )
    return EXIT_OK


def run_node(args: argparse.Namespace) -> int:
    """``parakoon node``: validate everything we can, then hand over to the node driver."""
    cluster = load_config(args.config)
    node = cluster.node(args.node)
    check_home_dir(node)
    from parakoon_node.runtime.node import run

    log_format: LogFormat = args.log_format
    return run(cluster, node.name, log_format=log_format, log_level=args.log_level)


def run_cluster(args: argparse.Namespace) -> int:
    """``parakoon cluster``: every node of the file as a child process."""
    from parakoon_node.commands.launcher import launch

    cluster = load_config(args.config)
    return launch(
        cluster,
        config_path=args.config,
        log_format=args.log_format,
        log_level=args.log_level,
        stop_timeout_secs=args.stop_timeout,
    )


def run_bench(args: argparse.Namespace) -> int:
    load_config(args.config)  # fail early and cleanly on a bad file, before any client starts
    from parakoon_node.commands.bench import main as bench_main

    return bench_main(args)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``parakoon`` console script and of ``python -m parakoon_node``."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        # Say it with the usage of the subcommand that was given too much (`client range a z`
        # shows `client range`'s usage, not the top level's); exits 2.
        getattr(args, "usage_parser", parser).error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        code: int = args.run(args)
    except ConfigError as exc:
        fail(str(exc))
        return EXIT_USAGE
    except KeyboardInterrupt:
        # The node and the launcher handle SIGINT themselves; this is for everything else.
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # `parakoon client range ... | head`: the reader left; that is not an error of ours.
        # Point stdout at nothing so the interpreter's final flush does not complain again.
        import os

        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_FAILURE
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
