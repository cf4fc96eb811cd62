"""Benchmark of parakoon_conn: connection-machine steps per second, on one core.

Three workloads, each counting calls of ``step`` (event construction included, as a driver
builds one event per step):

* steady: a connected link fed SendRequested and Tick alternately, the common case;
* churn: full reconnect cycles (connect, connected, a few sends and ticks, connection lost,
  backoff expired, ...), where most steps change the state and emit effects;
* dead peer: every dial fails, so the link alternates between backing off and connecting.

The jitter comes from a seeded ``random.Random`` in this script, as the driver would draw it.
Each figure is the best of several repetitions, by wall clock and by process CPU time (see
queue_bench.py for why both). Writes its section of docs/performance.md.

    uv run --all-packages python benchmarks/conn_bench.py [--steps N] [--repeats R] [--no-write]
"""

from __future__ import annotations

import argparse
import os
import random
import sys
from collections.abc import Callable
from pathlib import Path

from parakoon_conn import (
    Connected,
    ConnectFailed,
    ConnectionLost,
    ConnectRequested,
    ConnPhase,
    ConnSettings,
    SendRequested,
    Tick,
    initial_state,
    step,
)

sys.path.insert(0, str(Path(__file__).parent))
from _report import markdown_table, write_section
from queue_bench import best_rate, machine_note

SETTINGS = ConnSettings()
ADDRESSES = ("127.0.0.1:4010", "127.0.0.2:4010")


def steady(n: int) -> Callable[[], int]:
    state = initial_state(ADDRESSES)
    state, _ = step(SETTINGS, state, ConnectRequested(now=0.0))
    state, _ = step(SETTINGS, state, Connected(now=0.001, dial_id=1))

    def work() -> int:
        s = state
        now = 1.0
        for _ in range(n // 2):
            now += 0.0001
            s, _effects = step(SETTINGS, s, SendRequested(now=now))
            s, _effects = step(SETTINGS, s, Tick(now=now, jitter=0.5))
        assert s.phase is ConnPhase.CONNECTED
        return (n // 2) * 2

    return work


def churn(n: int, seed: int) -> Callable[[], int]:
    """Each cycle: Connected, 4 x (SendRequested, Tick), ConnectionLost, Tick (backoff not yet
    over), Tick (backoff over: dials again). 12 steps per cycle."""

    def work() -> int:
        rng = random.Random(seed)
        jitter = rng.random
        state = initial_state(ADDRESSES)
        state, _ = step(SETTINGS, state, ConnectRequested(now=0.0))
        now = 0.0
        steps = 1
        for _ in range(n // 12):
            now += 0.01
            state, _e = step(SETTINGS, state, Connected(now=now, dial_id=state.dial_id))
            for _ in range(4):
                now += 0.01
                state, _e = step(SETTINGS, state, SendRequested(now=now))
                state, _e = step(SETTINGS, state, Tick(now=now, jitter=jitter()))
            state, _e = step(
                SETTINGS,
                state,
                ConnectionLost(now=now, dial_id=state.dial_id, jitter=jitter(), reason="reset"),
            )
            state, _e = step(SETTINGS, state, Tick(now=now, jitter=jitter()))
            now = state.deadline
            state, _e = step(SETTINGS, state, Tick(now=now, jitter=jitter()))
            steps += 12
        assert state.phase is ConnPhase.CONNECTING
        return steps

    return work


def dead_peer(n: int, seed: int) -> Callable[[], int]:
    """Each cycle: ConnectFailed, Tick (backoff over: dials again). 2 steps per cycle."""

    def work() -> int:
        rng = random.Random(seed)
        jitter = rng.random
        state = initial_state(ADDRESSES)
        state, _ = step(SETTINGS, state, ConnectRequested(now=0.0))
        now = 0.0
        for _ in range(n // 2):
            state, _e = step(
                SETTINGS,
                state,
                ConnectFailed(now=now, dial_id=state.dial_id, jitter=jitter(), reason="refused"),
            )
            now = state.deadline
            state, _e = step(SETTINGS, state, Tick(now=now, jitter=jitter()))
        return (n // 2) * 2 + 1

    return work


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=400_000, help="steps per repetition")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=20261121)
    parser.add_argument("--no-write", action="store_true", help="do not touch docs/performance.md")
    args = parser.parse_args()
    n: int = args.steps
    repeats: int = args.repeats
    print(f"seed={args.seed}")
    load_before = os.getloadavg()[0]
    rows: list[tuple[str, str, str]] = []

    def report(what: str, rates: tuple[float, float]) -> None:
        wall, cpu = rates
        print(f"{what:<58} {wall:>14,.0f} {cpu:>14,.0f}")
        rows.append((what, f"{wall:,.0f}", f"{cpu:,.0f}"))

    print(f"{'measure':<58} {'per s (wall)':>14} {'per s (CPU)':>14}")
    report("steps/s, steady: connected, SendRequested + Tick", best_rate(steady(n), repeats))
    report("steps/s, churn: reconnect cycles of 12 steps", best_rate(churn(n, args.seed), repeats))
    report(
        "steps/s, dead peer: ConnectFailed + Tick (dial again)",
        best_rate(dead_peer(n, args.seed), repeats),
    )
    shared = machine_note(load_before, os.getloadavg()[0])
    print(shared)
    if args.no_write:
        return
    body = (
        f"Best of {repeats} repetitions of about {n:,} `step` calls each, event construction "
        f"included, default `ConnSettings`, seed {args.seed}. Acceptance aim: at least 500,000 "
        f"steps/s on one core.\n\n"
        + markdown_table(["workload", "steps per second (wall)", "steps per second (CPU)"], rows)
        + f"\n\n{shared}\n"
    )
    write_section("conn", "parakoon_conn: connection state machine", body)


if __name__ == "__main__":
    main()
