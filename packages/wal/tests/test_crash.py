"""Crash tests: every fault point, random truncations, zero-filled tails and byte flips.

The rule checked after every crash (acceptance of the WAL issue): reopening either recovers
every record that was durable before the fault, or refuses with a clear error; it never returns
wrong data. "Durable" means: written by an operation that returned. The operation in flight at
the crash may or may not have taken effect, but only as a whole prefix of its records (an
append) or all or nothing (a snapshot install).

A simulated crash keeps the page cache. To model what a real crash loses, the tests then damage
the unsynced part of the live segment the way a disk can: cut it at a random offset, or leave
the file grown but zero-filled from some point, or leave a zero-filled sector hole in it.
Every test prints its seed; ``PARAKOON_SEED=<n>`` replays one, ``PARAKOON_LONG=1`` runs more.
"""

from __future__ import annotations

import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import pytest

from parakoon_wal import (
    Collapser,
    FaultPoint,
    FaultPoints,
    SimulatedCrash,
    Wal,
    WalDiskError,
)

SEGMENT_ENTRIES = 5
#: Operation mixes that reach the rarer fault points often enough.
MIX: dict[FaultPoint, dict[str, float]] = {
    FaultPoint.INSTALL_AFTER_SNAPSHOT: {"install_share": 0.2},
    FaultPoint.INSTALL_AFTER_COMMIT: {"install_share": 0.2},
    FaultPoint.INSTALL_AFTER_RENAME: {"install_share": 0.2},
    FaultPoint.META_BEFORE_RENAME: {"meta_share": 0.2},
    FaultPoint.PRUNE_AFTER_FIRST_UNLINK: {"collapse_share": 0.3},
}
#: Points at which the live segment holds bytes that were written but not synced.
UNSYNCED_POINTS = frozenset({FaultPoint.PARTIAL_WRITE, FaultPoint.AFTER_WRITE_BEFORE_FSYNC})


def value(slot: int, version: int) -> bytes:
    rng = random.Random(slot * 7919 + version)
    return f"{slot}/{version}/".encode() + rng.randbytes(rng.randrange(0, 120))


def snapshot_bytes(slot: int) -> bytes:
    return f"snapshot of the store at {slot}".encode()


def snapshot_writer(slot: int) -> object:
    def write(f: BinaryIO) -> None:
        f.write(snapshot_bytes(slot))

    return write


@dataclass
class Model:
    """What the log must hold: the newest durable copy of every slot it has acknowledged."""

    values: dict[int, bytes] = field(default_factory=dict)
    last: int | None = None
    next_slot: int = 0
    head: int | None = None
    meta: dict[str, int | str] = field(default_factory=dict)
    version: int = 0


@dataclass
class InFlight:
    kind: str
    entries: list[tuple[int, bytes]] = field(default_factory=list)
    slot: int = 0
    meta: dict[str, int | str] = field(default_factory=dict)
    live_path: Path | None = None
    live_size: int = 0


def run_workload(
    wal: Wal,
    model: Model,
    rng: random.Random,
    ops: int,
    *,
    collapse_share: float = 0.13,
    meta_share: float = 0.07,
    install_share: float = 0.05,
) -> InFlight | None:
    """Random operations on ``wal``, updating ``model`` as each returns.

    Returns the operation in flight when a :class:`SimulatedCrash` fired, or ``None``.
    """
    collapser = Collapser(
        wal, threshold_entries=0, segments_to_keep=rng.randint(1, 2), snapshot=lambda: None
    )
    for _ in range(ops):
        live = wal.segments()[-1]
        roll = rng.random()
        inflight: InFlight
        append_share = 1.0 - collapse_share - meta_share - install_share
        if roll < append_share or model.last is None:
            model.version += 1
            start = model.next_slot
            if model.last is not None and rng.random() < 0.25:
                start = model.last  # a rewrite of the last slot (S3)
            n = rng.randint(1, 7)
            entries = [(s, value(s, model.version)) for s in range(start, start + n)]
            inflight = InFlight(
                kind="append", entries=entries, live_path=live.path, live_size=live.size_bytes
            )
            try:
                wal.append(entries)
            except SimulatedCrash:
                return inflight
            model.values.update(entries)
            model.last = entries[-1][0]
            model.next_slot = model.last + 1
        elif roll < append_share + collapse_share:
            slot = max(model.last - rng.randint(0, 3), model.head or 0)
            if model.head is not None and slot <= model.head:
                continue
            collapser._snapshot = lambda slot=slot: (slot, snapshot_writer(slot))  # type: ignore[assignment,misc]
            inflight = InFlight(kind="collapse", slot=slot)
            try:
                report = collapser.run_once()
            except SimulatedCrash:
                return inflight
            assert report is not None
            model.head = slot
        elif roll < append_share + collapse_share + meta_share:
            meta: dict[str, int | str] = {"promised_n": rng.randrange(1000), "who": "node_0"}
            inflight = InFlight(kind="meta", meta=meta)
            try:
                wal.save_meta(meta)
            except SimulatedCrash:
                return inflight
            model.meta = meta
        else:
            slot = model.next_slot + rng.randint(0, 20)
            inflight = InFlight(kind="install", slot=slot)
            try:
                wal.install_snapshot(slot, snapshot_writer(slot))  # type: ignore[arg-type]
            except SimulatedCrash:
                return inflight
            model.values.clear()
            model.last = None
            model.next_slot = slot + 1
            model.head = slot
    return None


def damage_unsynced_tail(inflight: InFlight, rng: random.Random) -> str:
    """Model lost page cache: damage bytes past the live segment's durable size."""
    path = inflight.live_path
    if inflight.kind != "append" or path is None or not path.exists():
        return "none"
    size = path.stat().st_size
    durable = inflight.live_size
    if size <= durable:
        return "none"
    how = rng.choice(["keep", "cut", "zero-tail", "zero-hole"])
    data = bytearray(path.read_bytes())
    if how == "cut":
        del data[rng.randint(durable, size) :]
    elif how == "zero-tail":
        start = max(durable, rng.randrange(durable, size) // 512 * 512)
        data[start:] = bytes(size - start)
    elif how == "zero-hole":
        q = rng.randrange(durable, size) // 512 * 512
        lo = max(q, durable)
        data[lo : q + 512] = bytes(len(data[lo : q + 512]))
    path.write_bytes(bytes(data))
    return how


def check_recovered(wal: Wal, model: Model, inflight: InFlight | None) -> None:
    """The crash rule; then make ``model`` describe what was recovered."""
    head = wal.head_snapshot()
    if head is not None:
        with open(head[1], "rb") as f:
            assert f.read() == snapshot_bytes(head[0]), "head snapshot bytes"
    if inflight is not None and inflight.kind == "meta":
        assert wal.load_meta() in (model.meta, inflight.meta)
    else:
        assert wal.load_meta() == model.meta
    if (
        inflight is not None
        and inflight.kind == "install"
        and head is not None
        and head[0] == inflight.slot
    ):
        # the install committed: the new state, completely
        assert wal.last_slot is None and wal.first_slot is None
        assert wal.next_slot == inflight.slot + 1
        model.values.clear()
        model.last = None
        model.next_slot = inflight.slot + 1
        model.head = inflight.slot
        wal._check()
        return
    if inflight is not None and inflight.kind == "collapse" and head is not None:
        assert head[0] in (model.head, inflight.slot)
        model.head = head[0]
    else:
        assert (head[0] if head else None) == model.head
    first, last = wal.first_slot, wal.last_slot
    if model.last is not None:
        assert last is not None and last >= model.last, "a durable record was lost"
    got = list(wal.iter_from(first)) if first is not None else []
    assert [s for s, _ in got] == list(range(first, last + 1)) if first is not None else got == []  # type: ignore[operator]  # first is not None on this branch
    if first is not None and first > 0 and model.head is not None:
        assert model.head >= first - 1
    pending = dict(inflight.entries) if inflight is not None else {}
    for slot, data in got:
        if model.last is not None and slot < model.last:
            assert data == model.values[slot], f"slot {slot}: wrong data"
        elif model.last is not None and slot == model.last:
            assert data in (model.values[slot], pending.get(slot)), f"slot {slot}: wrong data"
        else:
            assert data == pending.get(slot), f"slot {slot}: not durable, not in flight"
    assert wal.next_slot == (last + 1 if last is not None else model.next_slot)
    model.values.update(got)
    model.last = last
    model.next_slot = wal.next_slot
    wal._check()


def crash_and_recover(directory: Path, point: FaultPoint, rng: random.Random) -> bool:
    """One run: workload until the armed point fires, damage, reopen, check, go on."""
    model = Model()
    faults = FaultPoints()
    fired = False
    for _round in range(3):
        faults.arm(point, skip=rng.randint(0, 6), nbytes=rng.randint(1, 400))
        inflight: InFlight | None
        try:
            wal = Wal.open(directory, segment_entries_max=SEGMENT_ENTRIES, faults=faults)
        except SimulatedCrash:  # creating the first segment of a new directory
            inflight = InFlight(kind="open")
        else:
            inflight = run_workload(wal, model, rng, ops=rng.randint(5, 40), **MIX.get(point, {}))
            if inflight is None:
                wal.close()
        if inflight is not None:
            fired = True
            how = "none"
            if point in UNSYNCED_POINTS:
                how = damage_unsynced_tail(inflight, rng)
            print(f"crash at {point.value} during {inflight.kind}, tail damage: {how}")
        faults.disarm()
        with Wal.open(directory, segment_entries_max=SEGMENT_ENTRIES) as again:
            check_recovered(again, model, inflight)
    return fired


@pytest.mark.parametrize("point", list(FaultPoint), ids=lambda p: p.value)
def test_every_fault_point_recovers_durable_records(
    tmp_path: Path, point: FaultPoint, seed: int, long_mode: bool
) -> None:
    rng = random.Random(f"{seed}:{point.value}")
    runs = 40 if long_mode else 4
    fired = 0
    k = 0
    # At least `runs` runs, and more (bounded) until the point has fired at least once: the
    # workload is random, and some seeds need a few extra runs to reach the rarer points.
    while k < runs or (fired == 0 and k < 40):
        fired += crash_and_recover(tmp_path / f"run{k}", point, rng)
        k += 1
    assert fired > 0, f"the workload never reached {point.value} in {k} runs"


def test_random_truncations_of_unsynced_tail(tmp_path: Path, seed: int, long_mode: bool) -> None:
    """Appends without fsync, then a cut anywhere past the last durable byte."""
    rng = random.Random(seed)
    for trial in range(60 if long_mode else 12):
        directory = tmp_path / f"t{trial}"
        model = Model()
        with Wal.open(directory, segment_entries_max=SEGMENT_ENTRIES) as wal:
            run_workload(wal, model, rng, ops=rng.randint(3, 30))
            live = wal.segments()[-1]
            if live.records >= SEGMENT_ENTRIES - 1:
                # make room first: the unsynced append below must not roll the segment over
                # (a roll-over syncs it, and a cut would then model no real crash)
                pad = (model.next_slot, value(model.next_slot, 20_000 + trial))
                wal.append([pad])
                model.values[pad[0]] = pad[1]
                model.last, model.next_slot = pad[0], pad[0] + 1
                live = wal.segments()[-1]
            start = model.next_slot
            n = rng.randint(1, SEGMENT_ENTRIES - 1 - live.records)
            entries = [(s, value(s, 10_000 + trial)) for s in range(start, start + n)]
            inflight = InFlight(
                kind="append", entries=entries, live_path=live.path, live_size=live.size_bytes
            )
            wal.append(entries, sync=False)
            assert wal.segments()[-1].path == live.path
        size = live.path.stat().st_size
        cut = rng.randint(inflight.live_size, size)
        with open(live.path, "r+b") as f:
            f.truncate(cut)
        print(f"trial {trial}: cut {live.path.name} at {cut} of {size}")
        with Wal.open(directory, segment_entries_max=SEGMENT_ENTRIES) as wal:
            if cut < size:
                torn = wal.recovery.torn_tail
                assert torn is None or (torn.path == live.path and torn.offset <= cut)
            check_recovered(wal, model, inflight)


def test_byte_flips_are_refused_or_harmless(tmp_path: Path, seed: int, long_mode: bool) -> None:
    """A flipped byte or a shortened completed segment anywhere in a durable log: the open
    refuses with the file named, or (only for a harmless flip in a zstd frame header) returns
    exactly the right data."""
    rng = random.Random(seed)
    base = tmp_path / "base"
    model = Model()
    with Wal.open(base, segment_entries_max=SEGMENT_ENTRIES) as wal:
        while model.last is None or model.last < 40:
            run_workload(wal, model, rng, ops=20)
    files = sorted(p for p in base.iterdir() if ".wal" in p.name)
    refused = 0
    trials = 400 if long_mode else 60
    for trial in range(trials):
        work = tmp_path / f"w{trial}"
        shutil.copytree(base, work)
        target = work / rng.choice(files).name
        data = bytearray(target.read_bytes())
        completed = target.name != files[-1].name
        if completed and rng.random() < 0.2:
            cut = rng.randrange(len(data))
            del data[cut:]
            what = f"cut {target.name} at {cut}"
        else:
            i = rng.randrange(len(data))
            data[i] ^= 1 << rng.randrange(8)
            what = f"flip {target.name} byte {i}"
        target.write_bytes(bytes(data))
        print(f"trial {trial}: {what}")
        try:
            wal = Wal.open(work, segment_entries_max=SEGMENT_ENTRIES)
        except WalDiskError as exc:
            # The error names the damaged file; a completed segment cut exactly at a record
            # boundary is only detectable from the next segment, whose error names both.
            assert target.name in str(exc) or exc.path == work, (what, exc)
            refused += 1
            shutil.rmtree(work)
            continue
        print(f"trial {trial}: accepted; checking the data is exactly right")
        # Only a zstd frame has bytes whose change can leave the content intact (for example
        # the window size descriptor); everything of ours is covered by a checksum.
        assert target.name.endswith(".zst"), what
        with wal:
            check_recovered(
                wal,
                Model(
                    values=dict(model.values),
                    last=model.last,
                    next_slot=model.next_slot,
                    head=model.head,
                    meta=dict(model.meta),
                ),
                None,
            )
        shutil.rmtree(work)
    assert refused > trials * 0.9, f"only {refused} of {trials} damaged logs were refused"


@pytest.mark.parametrize("point", list(FaultPoint), ids=lambda p: p.value)
def test_regression_seed_4291427688_reaches_every_fault_point(
    tmp_path: Path, point: FaultPoint
) -> None:
    """Seed 4291427688 once needed more than 4 runs to reach a rare fault point (the test then
    failed for want of a crash, not for a bug): it must recover from every point it reaches."""
    rng = random.Random(f"4291427688:{point.value}")
    fired = 0
    k = 0
    while k < 4 or (fired == 0 and k < 40):
        fired += crash_and_recover(tmp_path / f"run{k}", point, rng)
        k += 1
    assert fired > 0, f"seed 4291427688 never reached {point.value} in {k} runs"
