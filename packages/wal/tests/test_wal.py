"""The log against real files with real fsync: appends, reads, segments, recovery, snapshots."""

from __future__ import annotations

import os
import random
import threading
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import pytest

from parakoon_wal import (
    Collapser,
    Wal,
    WalClosedError,
    WalCorruptError,
    WalLockedError,
    WalMissingSegmentError,
    WalSlotError,
    WalSlotPrunedError,
    WalUsageError,
    framing,
)

Payload = Callable[[int, int], bytes]


def writes(data: bytes) -> Callable[[BinaryIO], None]:
    def write(f: BinaryIO) -> None:
        f.write(data)

    return write


def seg_files(d: Path) -> list[Path]:
    return sorted(p for p in d.iterdir() if ".wal" in p.name)


def test_append_read_iterate_reopen(tmp_path: Path, payload: Payload) -> None:
    with Wal.open(tmp_path, segment_entries_max=7) as wal:
        assert (wal.first_slot, wal.last_slot, wal.next_slot) == (None, None, 0)
        wal.append([(0, payload(0, 0))])
        for k in range(1, 30, 3):
            wal.append([(j, payload(j, 0)) for j in range(k, k + 3)])
        wal._check()
        assert (wal.first_slot, wal.last_slot, wal.next_slot) == (0, 30, 31)
        assert len(wal.segments()) > 3
        assert list(wal.iter_from(0)) == [(k, payload(k, 0)) for k in range(31)]
        assert list(wal.iter_from(17)) == [(k, payload(k, 0)) for k in range(17, 31)]
        assert list(wal.iter_from(31)) == []
        for k in (0, 6, 7, 13, 29, 30):
            assert wal.read(k) == payload(k, 0)
        stats = wal.statistics()
        assert stats.records_appended == 31 and stats.fsyncs == 11
    with Wal.open(tmp_path, segment_entries_max=7) as wal:
        assert wal.recovery.torn_tail is None
        assert (wal.first_slot, wal.last_slot) == (0, 30)
        assert list(wal.iter_from(3)) == [(k, payload(k, 0)) for k in range(3, 31)]
        assert wal.read(30) == payload(30, 0)
        wal._check()


def test_rewrite_of_last_slot_newest_copy_wins(tmp_path: Path, payload: Payload) -> None:
    with Wal.open(tmp_path, segment_entries_max=3, fsync=False) as wal:
        wal.append([(0, payload(0, 0)), (1, payload(1, 0)), (2, payload(2, 0))])
        # the segment rolled after slot 2: the rewrite opens the next segment
        assert len(wal.segments()) == 2
        wal.append([(2, payload(2, 1))])
        wal.append([(2, payload(2, 2)), (3, payload(3, 0))])
        wal.append([(3, payload(3, 1))])
        expected = [(0, payload(0, 0)), (1, payload(1, 0)), (2, payload(2, 2)), (3, payload(3, 1))]
        assert list(wal.iter_from(0)) == expected
        assert wal.read(2) == payload(2, 2)
        assert wal.read(3) == payload(3, 1)
        wal._check()
    with Wal.open(tmp_path, segment_entries_max=3) as wal:
        assert list(wal.iter_from(0)) == expected
        assert list(wal.iter_from(2)) == expected[2:]
        assert wal.read(2) == payload(2, 2)
        assert wal.read(3) == payload(3, 1)


def test_slot_rule_violations_change_nothing(tmp_path: Path) -> None:
    with Wal.open(tmp_path, fsync=False) as wal:
        with pytest.raises(WalSlotError, match="first append must be slot 0"):
            wal.append([(1, b"x")])
        wal.append([(0, b"a"), (1, b"b"), (2, b"c")])
        for bad in (
            [(4, b"gap")],
            [(1, b"below last")],
            [(3, b"x"), (5, b"y")],
            [(3, b"x"), (3, b"y")],
        ):
            with pytest.raises(WalSlotError):
                wal.append(bad)
        with pytest.raises(WalUsageError):
            wal.append([(3, b"x")] * 70_000)
        assert wal.last_slot == 2
        assert list(wal.iter_from(0)) == [(0, b"a"), (1, b"b"), (2, b"c")]
        with pytest.raises(WalSlotError):
            wal.read(3)
    with Wal.open(tmp_path) as wal:
        assert wal.last_slot == 2


def test_rollover_by_bytes_and_segment_naming(tmp_path: Path) -> None:
    with Wal.open(tmp_path, segment_bytes_max=500, fsync=False) as wal:
        for k in range(20):
            wal.append([(k, b"x" * 100)])
        names = [p.name for p in seg_files(tmp_path)]
        infos = wal.segments()
        assert [i.path.name for i in infos] == names
        for info in infos[:-1]:
            assert info.size_bytes >= 500
            assert info.path.name == f"{info.seq:010d}-{info.next_slot:020d}.wal"
        assert infos[-1].live and not any(i.live for i in infos[:-1])


def test_lock_excludes_second_open(tmp_path: Path) -> None:
    wal = Wal.open(tmp_path)
    with pytest.raises(WalLockedError):
        Wal.open(tmp_path)
    wal.close()
    wal.close()
    with pytest.raises(WalClosedError):
        wal.append([(0, b"x")])
    Wal.open(tmp_path).close()


def test_torn_tail_is_cut_reported_and_kept_aside(tmp_path: Path, payload: Payload) -> None:
    with Wal.open(tmp_path) as wal:
        wal.append([(k, payload(k, 0)) for k in range(10)])
        live = wal.segments()[-1].path
    size = live.stat().st_size
    with open(live, "r+b") as f:
        f.truncate(size - 7)
    with Wal.open(tmp_path) as wal:
        torn = wal.recovery.torn_tail
        assert torn is not None
        assert torn.path == live and torn.offset < size - 7
        assert torn.saved_to.read_bytes() == Path(torn.saved_to).read_bytes()
        assert torn.saved_to.stat().st_size == size - 7 - torn.offset
        assert any(
            str(torn.offset) in line and str(live) in line for line in wal.recovery.messages()
        )
        assert wal.last_slot == 8
        assert list(wal.iter_from(0)) == [(k, payload(k, 0)) for k in range(9)]
        wal.append([(9, b"again")])
    with Wal.open(tmp_path) as wal:
        assert wal.recovery.torn_tail is None
        assert wal.read(9) == b"again"


def test_corruption_before_tail_refuses_with_file_and_offset(tmp_path: Path) -> None:
    with Wal.open(tmp_path, segment_entries_max=5) as wal:
        wal.append([(k, b"v" * 50) for k in range(5)])
        wal.append([(k, b"w" * 50) for k in range(5, 8)])
    first = seg_files(tmp_path)[0]
    raw = bytearray(first.read_bytes())
    offset = framing.SEGMENT_HEADER_SIZE + 2 * (20 + 50) + 30
    raw[offset] ^= 0x10
    first.write_bytes(bytes(raw))
    with pytest.raises(WalCorruptError) as err:
        Wal.open(tmp_path)
    assert err.value.path == first
    assert err.value.offset == framing.SEGMENT_HEADER_SIZE + 2 * (20 + 50)
    assert str(first) in str(err.value) and str(err.value.offset) in str(err.value)
    # and in the live segment, a flipped byte in a complete record is refused, not cut
    raw[offset] ^= 0x10
    first.write_bytes(bytes(raw))
    live = seg_files(tmp_path)[-1]
    raw = bytearray(live.read_bytes())
    raw[-3] ^= 0x01
    live.write_bytes(bytes(raw))
    with pytest.raises(WalCorruptError, match="checksum"):
        Wal.open(tmp_path)


def test_missing_segment_in_the_middle_is_an_error(tmp_path: Path) -> None:
    with Wal.open(tmp_path, segment_entries_max=2, fsync=False) as wal:
        wal.append([(k, b"x") for k in range(2)])
        wal.append([(k, b"x") for k in range(2, 4)])
        wal.append([(k, b"x") for k in range(4, 6)])
    files = seg_files(tmp_path)
    files[1].unlink()
    with pytest.raises(WalMissingSegmentError, match="segment 2 is missing"):
        Wal.open(tmp_path)


def test_missing_first_segment_without_snapshot_is_an_error(tmp_path: Path) -> None:
    with Wal.open(tmp_path, segment_entries_max=2, fsync=False) as wal:
        wal.append([(k, b"x") for k in range(2)])
        wal.append([(k, b"x") for k in range(2, 4)])
    seg_files(tmp_path)[0].unlink()
    with pytest.raises(WalMissingSegmentError, match="no head snapshot covers"):
        Wal.open(tmp_path)


def test_swapped_segment_breaks_the_chain(tmp_path: Path) -> None:
    for name in ("a", "b"):
        with Wal.open(tmp_path / name, segment_entries_max=2, fsync=False) as wal:
            wal.append([(0, b"x"), (1, name.encode())])
            wal.append([(2, b"y"), (3, b"z")])
            wal.append([(4, b"q")])
    a_files, b_files = seg_files(tmp_path / "a"), seg_files(tmp_path / "b")
    a_files[0].write_bytes(b_files[0].read_bytes())
    with pytest.raises(WalCorruptError, match="chain seed"):
        Wal.open(tmp_path / "a")


def test_head_snapshot_and_meta(tmp_path: Path) -> None:
    with Wal.open(tmp_path, fsync=False) as wal:
        assert wal.head_snapshot() is None and wal.open_head_snapshot() is None
        assert wal.load_meta() == {}
        with pytest.raises(WalUsageError):
            wal.write_head_snapshot(0, writes(b"nothing to cover"))
        wal.append([(k, b"x") for k in range(10)])
        p1 = wal.write_head_snapshot(4, writes(b"four"))
        p2 = wal.write_head_snapshot(8, writes(b"eight"))
        assert not p1.exists() and p2.read_bytes() == b"eight"
        assert wal.head_snapshot() == (8, p2)
        opened = wal.open_head_snapshot()
        assert opened is not None
        with opened[1] as f:
            assert (opened[0], f.read()) == (8, b"eight")
        with pytest.raises(WalUsageError, match="below head snapshot"):
            wal.write_head_snapshot(3, writes(b"old"))
        wal.save_meta({"promised_n": 12, "name": "node_0"})
        wal.save_meta({"promised_n": 15, "name": "node_0"})
        with pytest.raises(WalUsageError):
            wal.save_meta({"x": 1.5})  # type: ignore[dict-item]
    with Wal.open(tmp_path) as wal:
        assert wal.load_meta() == {"promised_n": 15, "name": "node_0"}
        assert wal.head_snapshot() == (8, p2)
    raw = bytearray((tmp_path / "meta").read_bytes())
    raw[-1] ^= 1
    (tmp_path / "meta").write_bytes(bytes(raw))
    with Wal.open(tmp_path) as wal, pytest.raises(WalCorruptError, match="meta"):
        wal.load_meta()


def test_install_snapshot_replaces_the_log(tmp_path: Path, payload: Payload) -> None:
    with Wal.open(tmp_path, segment_entries_max=3, fsync=False) as wal:
        wal.append([(k, payload(k, 0)) for k in range(3)])
        wal.append([(k, payload(k, 0)) for k in range(3, 5)])
        path = wal.install_snapshot(100, writes(b"store at 100"))
        assert path.read_bytes() == b"store at 100"
        assert (wal.first_slot, wal.last_slot, wal.next_slot) == (None, None, 101)
        assert [i.next_slot for i in wal.segments()] == [101]
        with pytest.raises(WalSlotPrunedError):
            wal.pin(50).__enter__()
        with pytest.raises(WalSlotError):
            wal.append([(100, b"x")])
        wal.append([(101, b"a"), (102, b"b")])
        wal._check()
    assert len(seg_files(tmp_path)) == 1
    with Wal.open(tmp_path) as wal:
        assert list(wal.iter_from(101)) == [(101, b"a"), (102, b"b")]
        assert wal.head_snapshot() == (100, path)
        with pytest.raises(WalSlotPrunedError):
            list(wal.iter_from(99))
        with pytest.raises(WalSlotPrunedError):
            wal.read(100)


def test_reset_after_snapshot(tmp_path: Path) -> None:
    with Wal.open(tmp_path, fsync=False) as wal:
        wal.append([(k, b"x") for k in range(5)])
        with pytest.raises(WalUsageError):
            wal.reset_after_snapshot(4)
        wal.write_head_snapshot(4, writes(b"s4"))
        wal.reset_after_snapshot(4)
        assert wal.next_slot == 5 and wal.last_slot is None
        wal.append([(5, b"y")])
    with Wal.open(tmp_path) as wal:
        assert list(wal.iter_from(5)) == [(5, b"y")]


def test_prune_respects_pins_keep_and_snapshot(tmp_path: Path) -> None:
    with Wal.open(tmp_path, segment_entries_max=2, fsync=False) as wal:
        for k in range(0, 12, 2):
            wal.append([(k, b"x"), (k + 1, b"y")])
        # segments: [0,1] [2,3] [4,5] [6,7] [8,9] [10,11] + empty live
        with pytest.raises(WalUsageError, match="head snapshot"):
            wal.prune(5, segments_to_keep=1)
        wal.write_head_snapshot(9, writes(b"s9"))
        with wal.pin(4):
            removed = wal.prune(9, segments_to_keep=1)
            assert [p.name[:10] for p in removed] == ["0000000001", "0000000002"]
            assert list(wal.iter_from(4))[:1] == [(4, b"x")]
        removed = wal.prune(9, segments_to_keep=2)
        assert [p.name[:10] for p in removed] == ["0000000003", "0000000004"]
        assert wal.first_slot == 8
        removed = wal.prune(9, segments_to_keep=1)
        assert [p.name[:10] for p in removed] == ["0000000005"]
        assert wal.prune(9, segments_to_keep=1) == []  # [10,11] is above the snapshot
        with pytest.raises(WalSlotPrunedError):
            wal.read(9)
        wal._check()
    with Wal.open(tmp_path) as wal:
        assert wal.first_slot == 10 and wal.last_slot == 11


def test_archive_is_transparent(tmp_path: Path, payload: Payload) -> None:
    with Wal.open(tmp_path, segment_entries_max=4, fsync=False) as wal:
        for k in range(0, 20, 4):
            wal.append([(j, payload(j, 0)) for j in range(k, k + 4)])
        archived = wal.archive_completed()
        assert len(archived) == 5 and all(p.name.endswith(".wal.zst") for p in archived)
        assert wal.archive_completed() == []
        assert list(wal.iter_from(0)) == [(k, payload(k, 0)) for k in range(20)]
        assert wal.read(5) == payload(5, 0)
        wal.append([(20, b"after")])
    with Wal.open(tmp_path) as wal:
        assert list(wal.iter_from(0)) == [(k, payload(k, 0)) for k in range(20)] + [(20, b"after")]
    with Wal.open(tmp_path / "plain", compressor="none", segment_entries_max=2) as wal:
        wal.append([(0, b"a"), (1, b"b")])
        assert wal.archive_completed() == []
    with pytest.raises(ValueError, match="compressor"):
        Wal.open(tmp_path / "bad", compressor="lz4")  # type: ignore[arg-type]


def test_corrupt_archive_is_refused(tmp_path: Path) -> None:
    with Wal.open(tmp_path, segment_entries_max=4, fsync=False) as wal:
        wal.append([(k, b"x" * 40) for k in range(4)])
        wal.append([(4, b"y")])
        (archive,) = wal.archive_completed()
    raw = bytearray(archive.read_bytes())
    raw[len(raw) // 2] ^= 0x40
    archive.write_bytes(bytes(raw))
    with pytest.raises(WalCorruptError) as err:
        Wal.open(tmp_path)
    assert err.value.path == archive


def test_concurrent_appends_and_reads(tmp_path: Path, seed: int) -> None:
    """A writer thread appends (with rewrites) while readers iterate and a collapse runs:
    readers only ever see complete, correct, contiguous prefixes."""
    rng = random.Random(seed)
    total = 1500
    values: dict[tuple[int, int], bytes] = {}
    errors: list[BaseException] = []
    done = threading.Event()
    wal = Wal.open(tmp_path, segment_entries_max=64, fsync=False)

    def value(slot: int, version: int) -> bytes:
        return values.setdefault((slot, version), f"{slot}.{version}.".encode() * (slot % 7 + 1))

    def writer() -> None:
        try:
            wrng = random.Random(seed + 1)
            slot = 0
            while slot < total:
                n = wrng.randint(1, 20)
                wal.append([(s, value(s, 0)) for s in range(slot, slot + n)])
                slot += n
                if wrng.random() < 0.2:
                    wal.append([(slot - 1, value(slot - 1, 1))])
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            done.set()

    def collapser() -> None:
        def choose() -> tuple[int, Callable[[BinaryIO], None]] | None:
            last = wal.last_slot
            return None if last is None or last < 10 else (last - 5, writes(b"snap"))

        try:
            compactor = Collapser(wal, threshold_entries=100, segments_to_keep=2, snapshot=choose)
            for _ in range(100_000):  # bounded; stops when the writer is done
                compactor.run_once()
                if done.is_set():
                    # One last pass once the log is complete: a fast writer may finish before
                    # this thread got a second turn, and the log is now far past the threshold.
                    compactor.run_once()
                    break
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer), threading.Thread(target=collapser)]
    for thread in threads:
        thread.start()
    reads = pruned = 0
    try:
        for _ in range(10_000):  # bounded; the writer finishes well before
            first, last = wal.first_slot, wal.last_slot
            start = rng.randint(first, last) if first is not None and last is not None else 0
            try:
                seen = list(wal.iter_from(start))
                if seen:
                    assert wal.read(seen[0][0]) in (seen[0][1], values.get((seen[0][0], 1)))
            except WalSlotPrunedError:
                pruned += 1  # the collapser got there between first_slot and the pin
                continue
            for k, (slot, data) in enumerate(seen):
                assert slot == start + k
                assert data in (value(slot, 0), values.get((slot, 1)))
            reads += 1
            if done.is_set():
                break
    finally:
        for thread in threads:
            thread.join()
    assert not errors, errors
    assert reads > 0
    print(f"reads={reads} pruned_races={pruned} segments={len(wal.segments())}")
    first = wal.first_slot
    assert first is not None
    final = list(wal.iter_from(first))
    assert [s for s, _ in final] == list(range(first, final[-1][0] + 1))
    assert wal.head_snapshot() is not None
    wal._check()
    wal.close()


def test_write_failure_poisons_the_log(tmp_path: Path) -> None:
    wal = Wal.open(tmp_path, fsync=False)
    wal.append([(0, b"a")])
    assert wal._fd is not None
    os.close(wal._fd)  # the next write fails with EBADF, as a dying disk would fail it
    with pytest.raises(OSError):
        wal.append([(1, b"b")])
    with pytest.raises(WalClosedError, match="I/O error"):
        wal.append([(1, b"b")])
    wal.close()
    with Wal.open(tmp_path) as again:
        assert list(again.iter_from(0)) == [(0, b"a")]


@pytest.mark.parametrize("cache", [0, 2])
def test_read_batch_streams_and_tails(tmp_path: Path, payload: Payload, cache: int) -> None:
    with Wal.open(tmp_path, segment_entries_max=50, fsync=False, decoded_segments_max=cache) as wal:
        for k in range(0, 120, 10):
            wal.append([(j, payload(j, 0)) for j in range(k, k + 10)])
        expected = [(k, payload(k, 0)) for k in range(120)]
        got: list[tuple[int, bytes]] = []
        slot = 0
        for _ in range(100):  # bounded: 120 records in batches of 7
            batch = wal.read_batch(slot, entries_max=7, bytes_max=100_000)
            if not batch:
                break
            assert len(batch) <= 7
            got += batch
            slot = batch[-1][0] + 1
        assert got == expected
        assert len(wal.read_batch(0, bytes_max=1)) == 1
        assert wal.read_batch(120) == []
        # a reader tailing the live segment sees appends and rewrites
        assert wal.read_batch(115)[-1] == (119, payload(119, 0))
        wal.append([(119, b"rewritten"), (120, b"new")])
        assert wal.read_batch(118) == [(118, payload(118, 0)), (119, b"rewritten"), (120, b"new")]
        wal.append([(120, b"newer")])
        assert wal.read(120) == b"newer"
        assert wal.read_batch(119) == [(119, b"rewritten"), (120, b"newer")]
        assert wal.read(60) == payload(60, 0)
        wal._check()
    with pytest.raises(ValueError, match="decoded_segments_max"):
        Wal.open(tmp_path, decoded_segments_max=-1)


def test_reset_after_snapshot_crash_at_commit_gives_new_state(tmp_path: Path) -> None:
    from parakoon_wal import FaultPoint, FaultPoints, SimulatedCrash

    faults = FaultPoints()
    wal = Wal.open(tmp_path, faults=faults)
    wal.append([(k, b"x") for k in range(5)])
    wal.write_head_snapshot(4, writes(b"s4"))
    faults.arm(FaultPoint.INSTALL_AFTER_COMMIT)
    with pytest.raises(SimulatedCrash):
        wal.reset_after_snapshot(4)
    assert faults.fired == [FaultPoint.INSTALL_AFTER_COMMIT]
    with pytest.raises(WalClosedError, match="simulated crash"):
        wal.append([(5, b"y")])
    with Wal.open(tmp_path) as again:
        assert (again.last_slot, again.next_slot) == (None, 5)
        assert any("superseded" in line for line in again.recovery.finished)
        assert len(seg_files(tmp_path)) == 1


def test_iterator_never_skips_records_appended_while_it_runs(tmp_path: Path) -> None:
    with Wal.open(tmp_path, segment_entries_max=10, fsync=False) as wal:
        wal.append([(k, b"a") for k in range(5)])
        it = wal.iter_from(0)
        assert next(it) == (0, b"a")  # the live segment (slots 0..4) is read now
        wal.append([(k, b"b") for k in range(5, 10)])  # fills it up and rolls over
        wal.append([(k, b"c") for k in range(10, 13)])  # into the next segment
        rest = [s for s, _ in it]
        assert [0, *rest] == list(range(len(rest) + 1)), "a gap in the iteration"
        assert list(wal.iter_from(0)) == [
            (k, b"a" if k < 5 else b"b" if k < 10 else b"c") for k in range(13)
        ]


def test_a_head_snapshot_that_fails_to_write_leaves_the_log_open(tmp_path: Path) -> None:
    """A full disk while writing a head snapshot (ENOSPC) is the snapshot's failure, not the
    log's: the partial file goes, the log stays open for appends, and a later try succeeds."""
    import errno

    with Wal.open(tmp_path / "wal") as wal:
        wal.append([(0, b"a"), (1, b"b")])

        def full_disk(stream: BinaryIO) -> None:
            stream.write(b"x" * 100)
            raise OSError(errno.ENOSPC, "No space left on device")

        with pytest.raises(OSError, match="No space left"):
            wal.write_head_snapshot(1, full_disk)
        assert not list((tmp_path / "wal").glob("*.tmp")), "the partial snapshot was left"
        wal.append([(2, b"c")])  # still open
        assert wal.last_slot == 2

        def snapshot(stream: BinaryIO) -> None:
            stream.write(b"snapshot")

        wal.write_head_snapshot(1, snapshot)
        head = wal.open_head_snapshot()
        assert head is not None and head[0] == 1
        head[1].close()
