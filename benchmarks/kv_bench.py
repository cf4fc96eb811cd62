"""Benchmark of parakoon_kv: 1,000,000 keys of 16 bytes with 100-byte values.

Measures sets/s, gets/s, range(100)/s, apply_batch throughput with batches of 1,000 sets, the cost
of freeze(), digest(), and dump/load seconds with the C ``crc32c`` and with the pure-Python
CRC-32C that the package uses by default. Writes its section of docs/performance.md.

Every figure is given twice: by wall-clock time, and by the CPU time this process got. On a
shared machine the second is the steadier one (it still suffers from caches shared with others).

    uv run --all-packages python benchmarks/kv_bench.py [--keys N] [--no-pure-crc] [--no-write]
"""

from __future__ import annotations

import argparse
import gc
import io
import os
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path

import crc32c as c_crc32c

from parakoon_kv import Set, Store, crc32c

sys.path.insert(0, str(Path(__file__).parent))
from _report import markdown_table, write_section

KEY_BYTES = 16
VALUE_BYTES = 100
BATCH_SETS = 1_000
STEADY_BATCHES = 100
RANGE_MAX = 100
RANGE_QUERIES = 50_000


class Bench:
    """Runs measurements and collects the rows of the report."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, str, str, str]] = []

    def _run(self, action: Callable[[], object]) -> tuple[float, float]:
        wall, cpu = time.perf_counter(), time.process_time()
        action()
        return time.perf_counter() - wall, time.process_time() - cpu

    def _add(self, what: str, wall: str, cpu: str, note: str) -> None:
        print(f"{what:<62} {wall:>12} {cpu:>12}  {note}")
        self.rows.append((what, wall, cpu, note))

    def rate(self, what: str, count: int, action: Callable[[], object], note: str = "") -> None:
        """Report ``count`` operations done by ``action`` as operations per second."""
        wall, cpu = self._run(action)
        self._add(what, f"{count / wall:,.0f}", f"{count / max(cpu, 1e-9):,.0f}", note)

    def seconds(self, what: str, action: Callable[[], object], note: str = "") -> None:
        """Report how long ``action`` took."""
        wall, cpu = self._run(action)
        self._add(what, f"{wall:.3f} s", f"{cpu:.3f} s", note)


def bench_writes(bench: Bench, keys: list[bytes], value: bytes, rng: random.Random) -> Store:
    """The write figures. The update objects are freed when this returns: a million live
    dataclasses would slow down every later garbage collection, which a node does not suffer
    (the store holds only bytes, which the collector does not track)."""
    n = len(keys)
    store = Store()

    def fill() -> None:
        with store.transaction(0) as txn:
            put = txn.set
            for key in keys:
                put(key, value)
        store.range(None, True, None, True, 1)  # pay for the ordered index too

    bench.rate("sets/s: fresh store, one transaction", n, fill, "incl. building the index")
    store._check()

    updates = [Set(key=key, value=value) for key in keys]
    batches = [updates[at : at + BATCH_SETS] for at in range(0, n, BATCH_SETS)]

    def apply_new() -> None:
        fresh = Store()
        for i, batch in enumerate(batches):
            fresh.apply_batch(i, batch)
        fresh.range(None, True, None, True, 1)

    bench.rate(
        f"apply_batch updates/s: batches of {BATCH_SETS:,} sets, new keys",
        n,
        apply_new,
        "incl. building the index",
    )

    def apply_overwrite() -> None:
        for i, batch in enumerate(batches):
            store.apply_batch(i + 1, batch)

    bench.rate(
        f"apply_batch updates/s: batches of {BATCH_SETS:,} sets, existing keys", n, apply_overwrite
    )

    # New keys into the full store with a range query after every batch, so the index never
    # defers more than one batch: the steady state of a node that also serves range reads.
    extra = [Set(key=rng.randbytes(KEY_BYTES), value=value) for _ in range(STEADY_BATCHES * 1000)]
    extra_batches = [extra[at : at + BATCH_SETS] for at in range(0, len(extra), BATCH_SETS)]
    base_i = (store.applied_i or 0) + 1

    def apply_steady() -> None:
        for i, batch in enumerate(extra_batches):
            store.apply_batch(base_i + i, batch)
            store.range(None, True, None, True, 1)

    bench.rate(
        f"apply_batch updates/s: new keys into {n:,}, range after each batch",
        len(extra),
        apply_steady,
    )
    return store


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=20261121)
    parser.add_argument("--no-pure-crc", action="store_true", help="skip the slow pure-Python CRC")
    parser.add_argument("--no-write", action="store_true", help="do not touch docs/performance.md")
    args = parser.parse_args()
    n: int = args.keys
    rng = random.Random(args.seed)
    print(f"seed={args.seed} keys={n}")
    load_before = os.getloadavg()
    keys = [rng.randbytes(KEY_BYTES) for _ in range(n)]
    value = rng.randbytes(VALUE_BYTES)
    bench = Bench()
    print(f"{'measure':<62} {'wall':>12} {'CPU':>12}")

    store = bench_writes(bench, keys, value, rng)
    gc.collect()

    shuffled = keys[:]
    rng.shuffle(shuffled)
    get = store.get

    def gets() -> None:
        for key in shuffled:
            get(key)

    bench.rate("gets/s: random existing keys", n, gets)

    starts = shuffled[:RANGE_QUERIES]

    def ranges() -> None:
        for key in starts:
            store.range(key, True, None, True, RANGE_MAX)

    def ranges_entries() -> None:
        for key in starts:
            store.range_entries(key, True, None, True, RANGE_MAX)

    bench.rate(f"range(max={RANGE_MAX})/s", len(starts), ranges)
    bench.rate(f"range_entries(max={RANGE_MAX})/s", len(starts), ranges_entries)
    count = store.key_count()
    bench.seconds(f"freeze() of {count:,} keys", store.freeze, "blocks the event loop")
    bench.seconds(f"digest() of {count:,} keys", store.digest)

    stream = io.BytesIO()
    bench.seconds(
        f"dump of {count:,} keys, C crc32c", lambda: store.dump(stream, crc=c_crc32c.crc32c)
    )
    snapshot = stream.getvalue()
    print(f"snapshot: {len(snapshot):,} bytes")
    loaded: list[Store] = []
    bench.seconds(
        f"load of {count:,} keys, C crc32c",
        lambda: loaded.append(Store.load(io.BytesIO(snapshot), crc=c_crc32c.crc32c)),
        "verifies CRCs, counts, key order",
    )
    assert loaded.pop().digest() == store.digest()
    if not args.no_pure_crc:
        again = io.BytesIO()
        bench.seconds(
            f"dump of {count:,} keys, pure-Python crc32c", lambda: store.dump(again, crc=crc32c)
        )
        assert again.getvalue() == snapshot
        bench.seconds(
            f"load of {count:,} keys, pure-Python crc32c",
            lambda: loaded.append(Store.load(io.BytesIO(snapshot))),
        )

    load_after = os.getloadavg()
    shared = max(load_before[0], load_after[0]) > 1.5
    note = (
        f"1-minute load average {load_before[0]:.1f} before and {load_after[0]:.1f} after the run "
        f"on {os.cpu_count()} cores: "
        + (
            "**the machine was shared with other work**, so the wall-clock figures are noisy and "
            "low; the CPU-time column is steadier."
            if shared
            else "the machine was mostly idle."
        )
    )
    print(note)
    body = (
        f"{n:,} keys of {KEY_BYTES} bytes, values of {VALUE_BYTES} bytes, keys in random order, "
        f"seed {args.seed}; snapshot of {len(snapshot) / 1e6:.0f} MB. Python's garbage collector "
        f"on. {note}\n\n"
        + markdown_table(("measure", "by wall clock", "by CPU time", "note"), bench.rows)
    )
    if not args.no_write:
        write_section("kv", "parakoon_kv: the ordered store", body)


if __name__ == "__main__":
    main()
