"""Benchmark of parakoon_kv: 1,000,000 keys of 16 bytes with 100-byte values.

Measures sets/s, gets/s, range(100)/s, apply_batch throughput with batches of 1,000 sets, the cost
of freeze(), digest(), and dump/load seconds with the C ``crc32c`` and with the pure-Python
CRC-32C that the package uses by default. Writes its section of docs/performance.md.

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
RANGE_MAX = 100
RANGE_QUERIES = 50_000


def timed(action: Callable[[], object]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def bench_apply_batch(
    store: Store,
    keys: list[bytes],
    value: bytes,
    rng: random.Random,
    report: Callable[[str, str], None],
) -> None:
    n = len(keys)
    # apply_batch: batches of 1,000 Set updates, as the node applies chosen values.
    updates = [Set(key=key, value=value) for key in keys]
    batches = [updates[at : at + BATCH_SETS] for at in range(0, n, BATCH_SETS)]

    def apply_new() -> None:
        fresh = Store()
        for i, batch in enumerate(batches):
            fresh.apply_batch(i, batch)
        fresh.range(None, True, None, True, 1)  # pay for the index too

    seconds = timed(apply_new)
    report(
        f"apply_batch updates/s, batches of {BATCH_SETS:,} new keys, incl. index",
        f"{n / seconds:,.0f}",
    )

    def apply_overwrite() -> None:
        for i, batch in enumerate(batches):
            store.apply_batch(i + 1, batch)

    seconds = timed(apply_overwrite)
    report(f"apply_batch updates/s, batches of {BATCH_SETS:,} overwrites", f"{n / seconds:,.0f}")

    # New keys into a full store with a range query after every batch, so the index never
    # defers more than one batch: the steady state of a node that serves range reads.
    extra = [Set(key=rng.randbytes(KEY_BYTES), value=value) for _ in range(100 * BATCH_SETS)]
    extra_batches = [extra[at : at + BATCH_SETS] for at in range(0, len(extra), BATCH_SETS)]
    base_i = store.applied_i or 0

    def apply_steady() -> None:
        for i, batch in enumerate(extra_batches):
            store.apply_batch(base_i + 1 + i, batch)
            store.range(None, True, None, True, 1)

    seconds = timed(apply_steady)
    report(
        f"apply_batch updates/s, new keys into {n:,}, range after each batch",
        f"{len(extra) / seconds:,.0f}",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
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
    rows: list[tuple[str, str, str]] = []

    def report(what: str, figure: str, note: str = "") -> None:
        print(f"{what:<58} {figure:>16}  {note}")
        rows.append((what, figure, note))

    # Sets through a transaction: the store's raw write path (dict + deferred index + undo log).
    store = Store()

    def fill() -> None:
        with store.transaction(0) as txn:
            put = txn.set
            for key in keys:
                put(key, value)

    seconds = timed(fill)
    report("sets/s, fresh store, 1 transaction (index deferred)", f"{n / seconds:,.0f}")
    seconds_index = timed(lambda: store.range(None, True, None, True, 1))
    report(
        "sets/s including the index merge afterwards",
        f"{n / (seconds + seconds_index):,.0f}",
        f"merge took {seconds_index:.2f} s",
    )
    store._check()

    # The update objects of the apply_batch runs are freed before the read measurements: a
    # million live dataclasses would make every garbage collection slower, which a node does
    # not suffer (the store itself holds only bytes, which the collector does not track).
    bench_apply_batch(store, keys, value, rng, report)
    gc.collect()

    shuffled = keys[:]
    rng.shuffle(shuffled)
    get = store.get

    def gets() -> None:
        for key in shuffled:
            get(key)

    seconds = timed(gets)
    report("gets/s (random existing keys)", f"{n / seconds:,.0f}")

    starts = shuffled[:RANGE_QUERIES]

    def ranges() -> None:
        for key in starts:
            store.range(key, True, None, True, RANGE_MAX)

    seconds = timed(ranges)
    report(f"range(max={RANGE_MAX})/s", f"{len(starts) / seconds:,.0f}")

    def ranges_entries() -> None:
        for key in starts:
            store.range_entries(key, True, None, True, RANGE_MAX)

    seconds = timed(ranges_entries)
    report(f"range_entries(max={RANGE_MAX})/s", f"{len(starts) / seconds:,.0f}")

    frozen = None

    def freeze() -> None:
        nonlocal frozen
        frozen = store.freeze()

    report(f"freeze() of {store.key_count():,} keys, seconds", f"{timed(freeze):.3f}")
    del frozen
    report("digest() seconds", f"{timed(store.digest):.2f}")

    stream = io.BytesIO()
    seconds = timed(lambda: store.dump(stream, crc=c_crc32c.crc32c))
    size = len(stream.getvalue())
    report("dump seconds, C crc32c", f"{seconds:.2f}", f"{size / 1e6:.0f} MB")
    loaded: list[Store] = []

    def load_c() -> None:
        loaded.append(Store.load(io.BytesIO(stream.getvalue()), crc=c_crc32c.crc32c))

    report("load seconds, C crc32c (verifies order, counts, CRCs)", f"{timed(load_c):.2f}")
    assert loaded[0].digest() == store.digest()
    loaded.clear()
    if not args.no_pure_crc:
        again = io.BytesIO()
        report(
            "dump seconds, pure-Python crc32c (the default)",
            f"{timed(lambda: store.dump(again, crc=crc32c)):.2f}",
        )
        assert again.getvalue() == stream.getvalue()

        def load_pure() -> None:
            loaded.append(Store.load(io.BytesIO(again.getvalue())))

        report("load seconds, pure-Python crc32c", f"{timed(load_pure):.2f}")
    gc.collect()

    load_after = os.getloadavg()
    shared = max(load_before[0], load_after[0]) > 1.5
    note = (
        f"Load average {load_before[0]:.1f} before and {load_after[0]:.1f} after the run on "
        f"{os.cpu_count()} cores: "
        + (
            "**the machine was shared with other work**, so the figures are noisy and low."
            if shared
            else "the machine was mostly idle."
        )
    )
    print(note)
    body = (
        f"{n:,} keys of {KEY_BYTES} bytes, values of {VALUE_BYTES} bytes, keys in random order, "
        f"seed {args.seed}. Python's garbage collector left on. {note}\n\n"
        + markdown_table(("measure", "figure", "note"), rows)
    )
    if not args.no_write:
        write_section("kv", "parakoon_kv: the ordered store", body)


if __name__ == "__main__":
    main()
