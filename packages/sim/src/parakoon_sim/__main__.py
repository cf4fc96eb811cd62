"""Command line: replay one seed with its trace, or run a range of seeds.

uv run --all-packages python -m parakoon_sim --seed 42 --trace
uv run --all-packages python -m parakoon_sim --seeds 0..1000
uv run --all-packages python -m parakoon_sim --seeds 0..200 --variant ack_before_persist
uv run --all-packages python -m parakoon_sim --seeds 0..1000 --disk-loss
uv run --all-packages python -m parakoon_sim --seeds 0..1000 --membership
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from typing import Any

from .broken import VARIANTS
from .sim import Violation, run_seed


def _range(text: str) -> range:
    a, sep, b = text.partition("..")
    if not sep:
        raise argparse.ArgumentTypeError(f"--seeds: expected A..B, got {text!r}")
    return range(int(a), int(b))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m parakoon_sim", description=__doc__)
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--seed", type=int, help="run one seed")
    group.add_argument("--seeds", type=_range, help="run seeds A..B (B excluded)")
    parser.add_argument("--trace", action="store_true", help="print the trace of --seed")
    parser.add_argument(
        "--variant", choices=sorted(VARIANTS), help="run a deliberately broken core (test only)"
    )
    parser.add_argument(
        "--progress", type=int, default=0, metavar="K", help="print a progress line every K seeds"
    )
    parser.add_argument(
        "--harsh", action="store_true", help="use the harsh fault profile (partitions, pauses)"
    )
    parser.add_argument(
        "--disk-loss",
        action="store_true",
        help="use the disk-loss fault profile (nodes restart with empty disks, R9)",
    )
    parser.add_argument(
        "--membership",
        action="store_true",
        help="use the membership profile (add, promote, remove nodes under every fault)",
    )
    parser.add_argument(
        "--linger",
        type=float,
        default=0.0,
        metavar="SECS",
        help="the leaders' batch linger in simulated seconds (default 0: none)",
    )
    args = parser.parse_args(argv)
    kw: dict[str, Any] = {
        "harsh": args.harsh,
        "disk_loss": args.disk_loss,
        "membership": args.membership,
        "batch_linger": args.linger,
    }
    if args.variant:
        kw["step_fn"] = VARIANTS[args.variant]
    if args.seed is not None:
        try:
            result = run_seed(args.seed, trace=args.trace, **kw)
        except Violation as v:
            if args.trace:
                # Re-run to collect the trace up to the failure.
                from .sim import Sim

                sim = Sim(args.seed, trace=True, **kw)
                with contextlib.suppress(Violation):
                    sim.run()
                print("\n".join(sim.trace))
            print(f"FAIL {v}", file=sys.stderr)
            return 1
        if args.trace:
            print("\n".join(result.trace))
        print(
            f"seed={result.seed} ok: {result.voters} voters, {result.learners} learners, "
            f"mode {result.mode}, "
            f"{result.chosen} slots chosen, {result.acked}/{result.submitted} client updates "
            f"acknowledged, {result.events} events, {result.crashes} crashes, "
            f"{result.elections} elections"
        )
        return 0
    failures = 0
    start = time.perf_counter()
    for k, seed in enumerate(args.seeds, 1):
        try:
            run_seed(seed, **kw)
        except Violation as v:
            failures += 1
            print(f"FAIL {v}", file=sys.stderr)
        if args.progress and k % args.progress == 0:
            took = time.perf_counter() - start
            line = f"... {k} seeds (up to seed {seed}), {failures} failures, {took:.0f} s"
            print(line, flush=True)
    took = time.perf_counter() - start
    print(f"{len(args.seeds)} seeds, {failures} failures, {took:.1f} s")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
