"""Benchmark of the pure Paxos core and the simulator.

1. ``step`` events per second on one core: three real cores wired by an in-memory FIFO (every
   Persist and Apply answered at once, every message delivered in order), clients keeping the
   leader busy. Counts every ``step`` call (messages, Persisted, Applied, client batches, ticks).
2. The same loop, reported as committed client updates per wall-clock second, for several batch
   sizes (batching: every request waiting when the leader becomes free goes in the next slot).
3. The simulator with no faults: committed client updates per *simulated* second for 3 nodes
   with batching, under simulated network (1-5 ms) and fsync (0.5-2 ms) latencies, and the
   simulator's own speed.

Run: ``uv run --all-packages python benchmarks/paxos_bench.py [--quick]``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import deque
from pathlib import Path

from parakoon_paxos import (
    Applied,
    Apply,
    Batch,
    Broadcast,
    ClientBatch,
    ClientRequest,
    Config,
    Event,
    Leader,
    Persist,
    Persisted,
    Receive,
    Recovered,
    Reply,
    Send,
    State,
    Tick,
    initial_state,
    step,
)
from parakoon_sim import Faults, Sim

sys.path.insert(0, str(Path(__file__).parent))
from _report import markdown_table, write_section

MAX_RECORDED = 300_000


def run_cluster(seconds: float, per_batch: int, payload: bytes) -> dict[str, float]:
    """Drive three cores flat out for ``seconds`` of wall time; count steps and commits."""
    names = ("n0", "n1", "n2")
    configs = {
        n: Config(me=n, voters=names, lease_period=2.0, max_batch_count=max(per_batch, 1))
        for n in names
    }
    states: dict[str, State] = {
        n: initial_state(configs[n], Recovered(), 0.0, seed=k) for k, n in enumerate(names)
    }
    inbox: deque[tuple[str, Event]] = deque()
    steps = 0
    replies = 0
    rid = 0
    now = 0.0

    recorded: list[tuple[Config, State, Event, float]] = []

    def run(name: str, event: Event) -> None:
        nonlocal steps, replies
        if len(recorded) < MAX_RECORDED:
            recorded.append((configs[name], states[name], event, now))
        state, effects = step(configs[name], states[name], event, now)
        states[name] = state
        steps += 1
        for eff in effects:
            if isinstance(eff, Send):
                inbox.append((eff.to, Receive(src=name, msg=eff.msg)))
            elif isinstance(eff, Broadcast):
                for to in configs[name].other_voters:
                    inbox.append((to, Receive(src=name, msg=eff.msg)))
            elif isinstance(eff, Persist):
                inbox.append((name, Persisted(i=eff.entry.i, n=eff.entry.n)))
            elif isinstance(eff, Apply):
                v = eff.value
                results = (None,) * len(v.payloads) if isinstance(v, Batch) else ()
                inbox.append((name, Applied(i=eff.i, results=results)))
            elif isinstance(eff, Reply):
                replies += 1

    # Elect n0 first (not timed); its first lease check is due within 0.05 L of start.
    now = 1.0
    run("n0", Tick())
    while inbox:
        run(*inbox.popleft())
    recorded.clear()
    leader = next(n for n in names if isinstance(states[n], Leader))
    steps = replies = 0
    start = time.perf_counter()
    cpu_start = time.process_time()
    deadline = start + seconds
    while True:
        elapsed = time.perf_counter() - start
        if start + elapsed > deadline:
            break
        now = 1.0 + elapsed  # the clock the cores see advances in real time
        reqs = []
        for _ in range(per_batch):
            reqs.append(ClientRequest(rid=rid, payload=payload))
            rid += 1
        run(leader, ClientBatch(requests=tuple(reqs)))
        # Let the cluster work until the batch is answered (every message, persist and apply).
        for _ in range(200):
            if not inbox:
                break
            run(*inbox.popleft())
        if steps % 64 == 0:
            for n in names:
                run(n, Tick())
    # CPU seconds of this process: on a shared machine this is what "one core" delivers.
    took = time.process_time() - cpu_start
    assert isinstance(states[leader], Leader)
    # Replay the recorded (config, state, event, now) inputs through step alone: the cost of the
    # core without the harness (the same inputs give the same outputs: step is pure).
    best = float("inf")
    for _ in range(3):
        t0 = time.process_time()
        for args in recorded:
            step(*args)
        best = min(best, time.process_time() - t0)
    return {
        "steps_per_s": len(recorded) / best,
        "loop_steps_per_s": steps / took,
        "updates_per_s": replies / took,
        "steps": steps,
    }


def run_sim(seconds_sim: float, rate: float) -> dict[str, float]:
    faults = Faults(
        drop=0.0,
        duplicate=0.0,
        delay_min=0.001,
        delay_max=0.005,
        fsync_min=0.0005,
        fsync_max=0.002,
        crash_rate=0.0,
        crash_mid_effects=0.0,
        partition_rate=0.0,
        client_rate=rate,
    )
    sim = Sim(
        7,
        voters=3,
        learners=0,
        duration=seconds_sim,
        faults=faults,
        mode="elected",
        max_batch_count=1000,
    )
    start = time.perf_counter()
    result = sim.run()
    took = time.perf_counter() - start
    # The load runs for ``duration``; the calm phase after it has almost none.
    return {
        "offered_per_sim_s": result.submitted / sim.duration,
        "acked_per_sim_s": result.acked / sim.duration,
        "chosen_slots": result.chosen,
        "avg_batch": result.acked / max(1, result.chosen),
        "sim_events_per_s": result.events / took,
        "wall_s": took,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="short runs (smoke test)")
    args = parser.parse_args()
    secs = 0.5 if args.quick else 3.0
    rows = []
    headline = run_cluster(secs, per_batch=1, payload=b"x" * 64)
    for per_batch, r in [(1, headline)] + [
        (k, run_cluster(secs, per_batch=k, payload=b"x" * 64)) for k in (10, 100, 1000)
    ]:
        rows.append(
            (
                f"{per_batch} per ClientBatch",
                f"{r['steps_per_s']:,.0f}",
                f"{r['loop_steps_per_s']:,.0f}",
                f"{r['updates_per_s']:,.0f}",
            )
        )
    sim_rows = []
    for rate in (100.0, 2000.0, 10000.0):
        s = run_sim(3.0 if args.quick else 8.0, rate)
        sim_rows.append(
            (
                f"{s['offered_per_sim_s']:,.0f}/s",
                f"{s['acked_per_sim_s']:,.0f}",
                f"{s['avg_batch']:.1f}",
                f"{s['sim_events_per_s']:,.0f}",
            )
        )
    shared = os.cpu_count() or 1
    body = (
        "Three cores in one process on one CPU core, an in-memory FIFO network, every Persist and "
        "Apply answered at once, 64-byte payloads. `step` events/s counts every call of `step` "
        "(messages, Persisted, Applied, client batches, ticks) per CPU second of the process. "
        "'Core alone' replays the recorded inputs of the run through `step` with nothing else "
        "in the loop; 'with harness' is the whole in-memory cluster loop.\n\n"
        + markdown_table(
            [
                "client requests",
                "`step` events/s (core alone)",
                "events/s (with harness)",
                "committed updates/s",
            ],
            rows,
        )
        + "\n\nSimulator, 3 voters, no faults, network 1-5 ms, fsync 0.5-2 ms, batches of up to "
        "1000: committed client updates per *simulated* second (latency-bound: one slot in "
        "flight), average updates per slot, and the simulator's own speed.\n\n"
        + markdown_table(
            [
                "offered requests / simulated s",
                "committed updates / simulated s",
                "updates per slot",
                "sim events / wall s",
            ],
            sim_rows,
        )
        + f"\n\nThe machine ({shared} cores) was shared with other jobs while this ran, so the "
        "figures are noisy lower bounds."
    )
    print(body)
    write_section("paxos", "Paxos core (`parakoon_paxos.step`) and simulator", body)


if __name__ == "__main__":
    main()
