"""Benchmark of parakoon_queue: put_nowait + get_nowait pairs per second, and friends.

Measures, on one core:

* put_nowait + get_nowait pairs/s on a queue that never fills (the acceptance figure), for both
  drop policies;
* put_nowait/s into a full queue (every offer drops and counts);
* items/s through put_nowait + get_nowait_batch(64);
* items/s from a producer task to a consumer task awaiting get_batch(64), on asyncio and trio.

Each figure is the best of several repetitions, both by wall clock and by the process's own CPU
time: the machine may be shared, and CPU time is what other processes disturb least. Writes its
section of docs/performance.md.

    uv run --all-packages python benchmarks/queue_bench.py [--pairs N] [--repeats R] [--no-write]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import anyio

from parakoon_queue import DropPolicy, EndOfStream, LeakyQueue

sys.path.insert(0, str(Path(__file__).parent))
from _report import markdown_table, write_section

#: The bound of the queues measured; the node's per-peer default is of this order.
QUEUE_MAX_ITEMS = 1024
#: Items per get_nowait_batch/get_batch call.
BATCH_ITEMS = 64
#: A typical small Paxos frame.
FRAME = b"\x00" * 64


def machine_note(load_before: float, load_after: float) -> str:
    """Say whether other work shared the machine, judged by the 1-minute load average (this
    benchmark itself accounts for about 1.0 of the figure afterwards)."""
    loads = f"1-minute load average {load_before:.1f} before, {load_after:.1f} after"
    if load_before < 0.5 and load_after < 1.5:
        return f"The machine was otherwise idle ({loads}, {os.cpu_count()} cores)."
    return (
        f"The machine was shared with other work while this ran ({loads}, on "
        f"{os.cpu_count()} cores), so the wall-clock figures are pessimistic; the CPU-time "
        f"column counts only this process's own CPU seconds."
    )


def best_rate(work: Callable[[], int], repeats: int) -> tuple[float, float]:
    """Run ``work`` (which returns how many operations it did) ``repeats`` times; return the
    best operations/s by wall clock and by process CPU time."""
    best_wall = best_cpu = 0.0
    for _ in range(repeats):
        wall0, cpu0 = time.perf_counter(), time.process_time()
        count = work()
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        best_wall = max(best_wall, count / wall)
        best_cpu = max(best_cpu, count / max(cpu, 1e-9))
    return best_wall, best_cpu


def pairs(policy: DropPolicy, n: int) -> Callable[[], int]:
    queue: LeakyQueue[bytes] = LeakyQueue(QUEUE_MAX_ITEMS, policy=policy, name="bench")
    put, get = queue.put_nowait, queue.get_nowait

    def work() -> int:
        for _ in range(n):
            put(FRAME)
            get()
        return n

    return work


def full_offers(policy: DropPolicy, n: int) -> Callable[[], int]:
    queue: LeakyQueue[bytes] = LeakyQueue(QUEUE_MAX_ITEMS, policy=policy, name="bench")
    put = queue.put_nowait
    for _ in range(QUEUE_MAX_ITEMS):
        put(FRAME)

    def work() -> int:
        for _ in range(n):
            put(FRAME)
        return n

    return work


def batches(n: int) -> Callable[[], int]:
    queue: LeakyQueue[bytes] = LeakyQueue(QUEUE_MAX_ITEMS, policy=DropPolicy.EVICT_OLDEST)
    put, get_batch = queue.put_nowait, queue.get_nowait_batch
    rounds = n // BATCH_ITEMS

    def work() -> int:
        for _ in range(rounds):
            for _ in range(BATCH_ITEMS):
                put(FRAME)
            get_batch(BATCH_ITEMS)
        return rounds * BATCH_ITEMS

    return work


def tasks(backend: str, n: int) -> Callable[[], int]:
    """A producer offers in bursts of BATCH_ITEMS with a checkpoint between bursts; a consumer
    drains with get_batch. Counts the items the consumer received (none are dropped: a burst
    fits in the queue)."""

    async def run() -> int:
        queue: LeakyQueue[bytes] = LeakyQueue(QUEUE_MAX_ITEMS, policy=DropPolicy.EVICT_OLDEST)
        received = 0

        async def consume() -> None:
            nonlocal received
            try:
                while True:
                    received += len(await queue.get_batch(BATCH_ITEMS))
            except EndOfStream:
                return

        async with anyio.create_task_group() as tg:
            tg.start_soon(consume)
            put = queue.put_nowait
            for _ in range(n // BATCH_ITEMS):
                for _ in range(BATCH_ITEMS):
                    put(FRAME)
                await anyio.lowlevel.checkpoint()
            queue.close()
        assert queue.statistics().dropped == 0
        return received

    return lambda: anyio.run(run, backend=backend)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=1_000_000, help="operations per repetition")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-write", action="store_true", help="do not touch docs/performance.md")
    args = parser.parse_args()
    n: int = args.pairs
    repeats: int = args.repeats
    load_before = os.getloadavg()[0]
    rows: list[tuple[str, str, str]] = []

    def report(what: str, rates: tuple[float, float]) -> None:
        wall, cpu = rates
        print(f"{what:<62} {wall:>14,.0f} {cpu:>14,.0f}")
        rows.append((what, f"{wall:,.0f}", f"{cpu:,.0f}"))

    print(f"{'measure':<62} {'per s (wall)':>14} {'per s (CPU)':>14}")
    for policy in DropPolicy:
        report(
            f"put_nowait + get_nowait pairs/s, {policy.name}",
            best_rate(pairs(policy, n), repeats),
        )
    for policy in DropPolicy:
        report(
            f"put_nowait/s into a full queue (every offer drops), {policy.name}",
            best_rate(full_offers(policy, n), repeats),
        )
    report(
        f"items/s, put_nowait x {BATCH_ITEMS} + get_nowait_batch({BATCH_ITEMS})",
        best_rate(batches(n), repeats),
    )
    for backend in ("asyncio", "trio"):
        report(
            f"items/s, producer task -> consumer task get_batch({BATCH_ITEMS}), {backend}",
            best_rate(tasks(backend, n // 4), max(1, repeats // 2)),
        )
    load_after = os.getloadavg()[0]
    shared = machine_note(load_before, load_after)
    print(shared)
    if args.no_write:
        return
    body = (
        f"Best of {repeats} repetitions of {n:,} operations each (the task-to-task rows: "
        f"{max(1, repeats // 2)} runs of {n // 4:,} items), a {QUEUE_MAX_ITEMS}-item queue, "
        f"{len(FRAME)}-byte frames. Acceptance aim: at least 1,000,000 put_nowait + get_nowait "
        f"pairs/s on one core.\n\n"
        + markdown_table(["measure", "per second (wall)", "per second (CPU time)"], rows)
        + f"\n\n{shared}\n"
    )
    write_section("queue", "parakoon_queue: LeakyQueue", body)


if __name__ == "__main__":
    main()
