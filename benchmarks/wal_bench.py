"""WAL benchmark: fsync rates, group commit, replay speed and zstd ratio, on one disk in one run.

Measures, in one temporary directory (``--dir`` picks the disk; default: the system temp dir):

1. the raw rate of ``write(128 bytes) + fdatasync`` on a plain file: the disk's ceiling;
2. ``Wal.append`` with one 108-byte entry per call (a 128-byte record) and fsync on;
3. entries/s with group commit: batches of 100 and of 1,000 entries of 100 bytes;
4. replay entries/s with ``iter_from`` over live (plain) segments and over archived ones;
5. the zstd compression ratio of the archived segments.

Raw and WAL single-entry calls alternate one by one, so that noise from other processes (and
the disk's drifting speed) hits both alike.

Run: ``uv run --all-packages python benchmarks/wal_bench.py`` (about 30 s). Results go to the
``wal`` section of docs/performance.md.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _report import markdown_table, write_section

from parakoon_wal import Wal


def realistic_payload(rng: random.Random, size: int) -> bytes:
    """Bytes shaped like a client batch: an opcode, a structured key, a text value."""
    head = b"\x01set\x00" + f"user:{rng.randrange(10**8):08d}:profile\x00".encode()
    words = b"".join(rng.choice(WORDS) + b" " for _ in range(size // 4))
    return (head + words)[:size].ljust(size, b".")


WORDS = [b"alpha", b"beta", b"gamma", b"delta", b"name", b"email", b"city", b"2026", b"true"]


def raw_and_single_rates(directory: Path, secs: float) -> tuple[float, float]:
    """Rates of raw ``write(128 B) + fdatasync`` and of one-entry WAL appends, interleaved.

    The two alternate call by call (raw, WAL, raw, WAL, ...) for ``secs`` seconds, each on its
    own file, and each rate is the number of calls over the time spent in them. Interleaving
    makes the ratio fair on a shared machine, where the disk's speed drifts by the second.
    """
    raw_path = directory / "raw.bin"
    fd = os.open(raw_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)
    os.write(fd, b"h" * 40)  # the WAL's records also start after a 40-byte header
    os.fdatasync(fd)
    raw_buf = b"r" * 128
    payload = b"w" * 108  # 20-byte header + 108 = a 128-byte record, like the raw writes
    raw_time = wal_time = 0.0
    n = 0
    clock = time.perf_counter
    try:
        with Wal.open(directory / "single", fsync=True) as wal:
            start = clock()
            while clock() - start < secs:
                t0 = clock()
                os.write(fd, raw_buf)
                os.fdatasync(fd)
                t1 = clock()
                wal.append([(n, payload)])
                t2 = clock()
                raw_time += t1 - t0
                wal_time += t2 - t1
                n += 1
    finally:
        os.close(fd)
        raw_path.unlink()
    return n / raw_time, n / wal_time


def append_overhead_usecs(directory: Path, calls: int = 20_000) -> tuple[float, float]:
    """CPU cost of one-entry appends without fsync, and of the bare ``os.write`` it contains,
    in microseconds per call: the WAL's own overhead, free of the disk's noise."""
    payload = b"w" * 108
    with Wal.open(directory / "overhead", fsync=False) as wal:
        start = time.perf_counter()
        for slot in range(calls):
            wal.append([(slot, payload)])
        wal_usecs = (time.perf_counter() - start) / calls * 1e6
    fd = os.open(directory / "overhead.raw", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        buf = b"r" * 128
        start = time.perf_counter()
        for _ in range(calls):
            os.write(fd, buf)
        raw_usecs = (time.perf_counter() - start) / calls * 1e6
    finally:
        os.close(fd)
    return wal_usecs, raw_usecs


def wal_group_rate(directory: Path, group: int, secs: float) -> float:
    shutil.rmtree(directory, ignore_errors=True)
    rng = random.Random(1)
    payloads = [realistic_payload(rng, 100) for _ in range(group)]
    with Wal.open(directory, fsync=True) as wal:
        slot = 0
        start = time.perf_counter()
        while time.perf_counter() - start < secs:
            wal.append([(slot + k, payloads[k]) for k in range(group)])
            slot += group
        return slot / (time.perf_counter() - start)


@dataclass(frozen=True, slots=True, kw_only=True)
class Replay:
    live_iter: float  # entries/s of iter_from over plain segments, cold cache
    live_open: float  # entries/s of Wal.open (verifies every record) over plain segments
    archived_iter: float
    archived_open: float
    ratio: float
    segments: int


def replay(directory: Path, entries: int) -> Replay:
    """Replay rates over plain and over archived segments, the zstd ratio, the segment count.

    Each pass opens the log afresh (so nothing is cached) and times the open (which verifies
    every record) and one full ``iter_from`` separately; the best of three passes counts.
    """
    shutil.rmtree(directory, ignore_errors=True)
    rng = random.Random(2)
    payloads = [realistic_payload(rng, 100) for _ in range(1000)]
    with Wal.open(directory, fsync=False, segment_entries_max=100_000) as wal:
        for slot in range(0, entries, 1000):
            wal.append([(slot + k, payloads[k]) for k in range(1000)])
        # one more entry so that every full segment is completed (and can be archived)
        wal.append([(entries, payloads[0])])
        segments = len(wal.segments())
        plain_bytes = sum(s.size_bytes for s in wal.segments()[:-1])

    def timed() -> tuple[float, float]:
        best_open = best_iter = 0.0
        for _ in range(3):
            t0 = time.perf_counter()
            with Wal.open(directory) as log:
                t1 = time.perf_counter()
                n = 0
                for _slot, _data in log.iter_from(0):
                    n += 1
                t2 = time.perf_counter()
            best_open = max(best_open, n / (t1 - t0))
            best_iter = max(best_iter, n / (t2 - t1))
        return best_iter, best_open

    live_iter, live_open = timed()
    with Wal.open(directory) as wal:
        archived = wal.archive_completed()
    packed_bytes = sum(p.stat().st_size for p in archived)
    archived_iter, archived_open = timed()
    return Replay(
        live_iter=live_iter,
        live_open=live_open,
        archived_iter=archived_iter,
        archived_open=archived_open,
        ratio=plain_bytes / packed_bytes,
        segments=segments,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dir", default=None, help="where to put the files (picks the disk)")
    parser.add_argument("--single-secs", type=float, default=8.0)
    parser.add_argument("--replay-entries", type=int, default=500_000)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="wal_bench_", dir=args.dir))
    load_before = os.getloadavg()[0]
    try:
        raw_rate, single_rate = raw_and_single_rates(work, args.single_secs)
        wal_usecs, write_usecs = append_overhead_usecs(work)
        group100 = wal_group_rate(work / "g100", 100, 3.0)
        group1000 = wal_group_rate(work / "g1000", 1000, 3.0)
        rep = replay(work / "replay", args.replay_entries)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    load_after = os.getloadavg()[0]
    share = single_rate / raw_rate
    rows = [
        ["raw write(128 B) + fdatasync", f"{raw_rate:,.0f} /s", "ceiling", ""],
        [
            "WAL append, 1 entry per fsync",
            f"{single_rate:,.0f} /s",
            ">= 90% of raw",
            f"{share:.0%} of raw",
        ],
        [
            "CPU per one-entry append without fsync (bare os.write)",
            f"{wal_usecs:.1f} us ({write_usecs:.1f} us)",
            "",
            f"{wal_usecs - write_usecs:.1f} us of WAL overhead per append",
        ],
        [
            "WAL group commit, 100 x 100 B",
            f"{group100:,.0f} entries/s",
            "",
            f"{group100 / 100:,.0f} fsyncs/s",
        ],
        [
            "WAL group commit, 1,000 x 100 B",
            f"{group1000:,.0f} entries/s",
            ">= 200,000",
            ("met" if group1000 >= 200_000 else "missed") + f" ({group1000 / 1000:,.0f} fsyncs/s)",
        ],
        [
            "replay (iter_from), live (plain) segments",
            f"{rep.live_iter:,.0f} entries/s",
            ">= 500,000",
            "met" if rep.live_iter >= 500_000 else "missed",
        ],
        [
            "replay (iter_from), archived (zstd) segments",
            f"{rep.archived_iter:,.0f} entries/s",
            ">= 500,000",
            "met" if rep.archived_iter >= 500_000 else "missed",
        ],
        ["open (verifies every record), plain", f"{rep.live_open:,.0f} entries/s", "", ""],
        ["open (verifies every record), archived", f"{rep.archived_open:,.0f} entries/s", "", ""],
        ["zstd ratio (plain / compressed)", f"{rep.ratio:.2f}", "", ""],
    ]
    body = (
        markdown_table(["measure", "result", "aim", "verdict"], rows)
        + "\n\n"
        + f"- raw and single-entry appends: interleaved call by call for {args.single_secs:g} s "
        "(raw, WAL, raw, WAL, ...), each rate = calls / time spent in those calls\n"
        f"- group commit runs: 3 s each; replay: {args.replay_entries:,} entries of 100 bytes "
        f"in {rep.segments} segments of up to 100,000 entries, best of 3 passes, each on a "
        "freshly opened log (nothing cached); payloads "
        "look like client batches (opcode, structured key, text value)\n"
        f"- files in {work.parent} (same disk for every measure), fsync on except while "
        "building the replay log\n"
        f"- the machine was shared with other work: load average {load_before:.1f} before, "
        f"{load_after:.1f} after; figures are noisy\n"
    )
    print(body)
    write_section("wal", "WAL (parakoon_wal)", body)


if __name__ == "__main__":
    main()
