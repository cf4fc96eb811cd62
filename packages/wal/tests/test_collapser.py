"""The collapser (rule R8): threshold, snapshot, archive, prune, keep, one at a time."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import pytest

from parakoon_wal import Collapser, SnapshotChoice, Wal


def fill(wal: Wal, upto: int, *, batch: int = 5) -> None:
    start = wal.next_slot
    for k in range(start, upto, batch):
        wal.append([(j, f"v{j}".encode()) for j in range(k, min(k + batch, upto))])


def snapshot_at(
    get_slot: Callable[[], int], calls: list[int] | None = None
) -> Callable[[], SnapshotChoice | None]:
    """A snapshot callback standing for a store applied up to ``get_slot()``."""

    def choose() -> SnapshotChoice:
        slot = get_slot()
        if calls is not None:
            calls.append(slot)

        def write(f: BinaryIO) -> None:
            f.write(f"store applied up to {slot}".encode())

        return slot, write

    return choose


def test_collapser_triggers_on_threshold(tmp_path: Path) -> None:
    with Wal.open(tmp_path, segment_entries_max=5, fsync=False) as wal:
        calls: list[int] = []
        collapser = Collapser(
            wal,
            threshold_entries=20,
            segments_to_keep=1,
            snapshot=snapshot_at(lambda: wal.last_slot - 1, calls),  # type: ignore[operator]
        )
        fill(wal, 22)  # slots 0..21: 22 entries > 20
        report = collapser.run_once()
        assert report is not None
        assert calls == [20]
        assert report.snapshot_slot == 20 and report.entries_since_snapshot == 22
        assert report.snapshot_path.read_bytes() == b"store applied up to 20"
        assert wal.head_snapshot() == (20, report.snapshot_path)
        wal._check()


def test_collapser_no_op_below_threshold(tmp_path: Path) -> None:
    with Wal.open(tmp_path, segment_entries_max=5, fsync=False) as wal:
        calls: list[int] = []
        collapser = Collapser(
            wal,
            threshold_entries=20,
            segments_to_keep=1,
            snapshot=snapshot_at(lambda: 0, calls),
        )
        assert collapser.run_once() is None  # empty log
        fill(wal, 21)  # 21 entries: not more than a threshold of 21
        before = sorted(p.name for p in tmp_path.iterdir())
        collapser.threshold_entries = 21
        assert collapser.run_once() is None
        assert calls == []
        assert sorted(p.name for p in tmp_path.iterdir()) == before
        # a callback that declines is also a no-op
        declining = Collapser(wal, threshold_entries=1, segments_to_keep=1, snapshot=lambda: None)
        assert declining.run_once() is None
        assert wal.head_snapshot() is None


def test_collapser_archives_old_segments(tmp_path: Path) -> None:
    with Wal.open(tmp_path, segment_entries_max=5, fsync=False) as wal:
        collapser = Collapser(
            wal,
            threshold_entries=10,
            segments_to_keep=3,
            snapshot=snapshot_at(lambda: 12),
        )
        fill(wal, 30)  # six full segments of five, plus the empty live one
        report = collapser.run_once()
        assert report is not None
        infos = wal.segments()
        assert infos[-1].live and not infos[-1].archived
        assert all(i.archived for i in infos[:-1])
        assert {i.path for i in infos[:-1]} == set(report.archived)
        assert not any(p.name.endswith(".wal") for p in report.archived)
        # archived data stays readable, from every kept slot
        first = wal.first_slot
        assert first is not None
        assert list(wal.iter_from(first)) == [(k, f"v{k}".encode()) for k in range(first, 30)]
    with Wal.open(tmp_path) as wal:
        assert wal.last_slot == 29


def test_collapser_respects_segments_to_keep(tmp_path: Path) -> None:
    with Wal.open(tmp_path, segment_entries_max=5, fsync=False) as wal:
        fill(wal, 50)  # ten completed segments [0..4] ... [45..49], live empty
        collapser = Collapser(
            wal,
            threshold_entries=5,
            segments_to_keep=4,
            snapshot=snapshot_at(lambda: 44),
        )
        report = collapser.run_once()
        assert report is not None
        # covered by the snapshot: segments ending at 4..44 (nine); keep the newest four
        # completed segments: [30..34] [35..39] [40..44] [45..49]
        assert len(report.pruned) == 6
        infos = wal.segments()
        assert len(infos) == 5 and infos[-1].live
        assert wal.first_slot == 30
        # a pin stops pruning at the pinned segment
        fill(wal, 80)
        with wal.pin(52):
            collapser.segments_to_keep = 1
            collapser._snapshot = snapshot_at(lambda: 75)
            report = collapser.run_once()
            assert report is not None
            assert wal.first_slot == 50
            assert list(wal.iter_from(52))[:1] == [(52, b"v52")]
        wal._check()


def test_collapser_idempotent(tmp_path: Path) -> None:
    with Wal.open(tmp_path, segment_entries_max=5, fsync=False) as wal:
        fill(wal, 40)
        collapser = Collapser(
            wal,
            threshold_entries=10,
            segments_to_keep=2,
            snapshot=snapshot_at(lambda: 30),
        )
        first = collapser.run_once()
        assert first is not None
        state = sorted(p.name for p in tmp_path.iterdir())
        segments = wal.segments()
        # the same request again: the snapshot slot is not new, nothing changes
        collapser.threshold_entries = 0
        assert collapser.run_once() is None
        assert collapser.run_once() is None
        assert sorted(p.name for p in tmp_path.iterdir()) == state
        assert wal.segments() == segments
    with Wal.open(tmp_path) as wal:
        assert wal.head_snapshot() is not None
        assert (
            Collapser(
                wal, threshold_entries=0, segments_to_keep=2, snapshot=snapshot_at(lambda: 30)
            ).run_once()
            is None
        )


def test_collapser_one_at_a_time_and_concurrent_appends(tmp_path: Path) -> None:
    with Wal.open(tmp_path, segment_entries_max=10, fsync=False) as wal:
        fill(wal, 100)
        inside = threading.Event()
        release = threading.Event()

        def slow_snapshot() -> SnapshotChoice:
            slot = wal.last_slot
            assert slot is not None

            def write(f: BinaryIO) -> None:
                inside.set()
                assert release.wait(30)
                f.write(b"slow")

            return slot - 5, write

        collapser = Collapser(wal, threshold_entries=10, segments_to_keep=1, snapshot=slow_snapshot)
        results: list[object] = []
        thread = threading.Thread(target=lambda: results.append(collapser.run_once()))
        thread.start()
        assert inside.wait(30)
        # a second collapse while the first runs does nothing
        assert collapser.run_once() is None
        # appends continue during the collapse, across roll-overs
        fill(wal, 150)
        release.set()
        thread.join(30)
        assert results and results[0] is not None
        assert wal.last_slot == 149
        first = wal.first_slot
        assert first is not None
        assert list(wal.iter_from(first)) == [(k, f"v{k}".encode()) for k in range(first, 150)]
        wal._check()


def test_collapser_rejects_bad_settings(tmp_path: Path) -> None:
    with Wal.open(tmp_path) as wal:
        with pytest.raises(ValueError, match="segments_to_keep"):
            Collapser(wal, threshold_entries=1, segments_to_keep=0, snapshot=lambda: None)
        with pytest.raises(ValueError, match="threshold"):
            Collapser(wal, threshold_entries=-1, segments_to_keep=1, snapshot=lambda: None)


def test_running_iterator_pins_what_it_still_reads(tmp_path: Path) -> None:
    with Wal.open(tmp_path, segment_entries_max=5, fsync=False) as wal:
        fill(wal, 50)
        it = wal.iter_from(3)
        assert next(it) == (3, b"v3")  # the iterator runs: slot 3 onwards is pinned
        assert wal.statistics().pins == 1
        collapser = Collapser(
            wal, threshold_entries=0, segments_to_keep=1, snapshot=snapshot_at(lambda: 40)
        )
        report = collapser.run_once()
        assert report is not None and report.pruned == ()
        assert [s for s, _ in it] == list(range(4, 50))
        assert wal.statistics().pins == 0
        collapser._snapshot = snapshot_at(lambda: 45)
        report = collapser.run_once()
        assert report is not None and len(report.pruned) == 9  # all but [45..49]
        assert wal.first_slot == 45
