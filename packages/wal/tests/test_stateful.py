"""A hypothesis state machine: the log against a dict oracle, through reopens and collapses."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import BinaryIO

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from parakoon_wal import Collapser, Wal, WalSlotPrunedError


class WalMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="wal_state_"))
        self.entries_max = 3
        self.wal = Wal.open(self.dir, fsync=False, segment_entries_max=self.entries_max)
        self.oracle: dict[int, bytes] = {}
        self.next_slot = 0
        self.head: int | None = None
        self.counter = 0

    def _value(self, slot: int) -> bytes:
        self.counter += 1
        return f"{slot}:{self.counter}".encode() * (self.counter % 5)

    @rule(n=st.integers(1, 6))
    def append(self, n: int) -> None:
        entries = [(s, self._value(s)) for s in range(self.next_slot, self.next_slot + n)]
        self.wal.append(entries)
        self.oracle.update(entries)
        self.next_slot += n

    @precondition(lambda self: self.wal.last_slot is not None)
    @rule(n=st.integers(1, 3))
    def rewrite_last(self, n: int) -> None:
        last = self.next_slot - 1
        entries = [(s, self._value(s)) for s in range(last, last + n)]
        self.wal.append(entries)
        self.oracle.update(entries)
        self.next_slot = last + n

    @rule()
    def reopen(self) -> None:
        self.wal.close()
        self.wal = Wal.open(self.dir, fsync=False, segment_entries_max=self.entries_max)
        assert self.wal.recovery.torn_tail is None

    @precondition(lambda self: self.wal.last_slot is not None)
    @rule(back=st.integers(0, 4), keep=st.integers(1, 3))
    def collapse(self, back: int, keep: int) -> None:
        last = self.next_slot - 1
        slot = max(last - back, self.head if self.head is not None else 0)

        def choose() -> tuple[int, object]:
            def write(f: BinaryIO) -> None:
                f.write(b"snap%d" % slot)

            return slot, write

        collapser = Collapser(self.wal, threshold_entries=0, segments_to_keep=keep, snapshot=choose)  # type: ignore[arg-type]
        report = collapser.run_once()
        if self.head is not None and slot <= self.head:
            assert report is None
        else:
            assert report is not None
            self.head = slot
            assert all(info.archived for info in self.wal.segments()[:-1])

    @rule(gap=st.integers(0, 5))
    def install(self, gap: int) -> None:
        slot = self.next_slot + gap

        def write(f: BinaryIO) -> None:
            f.write(b"installed")

        self.wal.install_snapshot(slot, write)
        self.oracle.clear()
        self.next_slot = slot + 1
        self.head = slot

    @rule(data=st.data())
    def read_some(self, data: st.DataObject) -> None:
        first = self.wal.first_slot
        if first is None:
            assert self.wal.last_slot is None
            return
        slot = data.draw(st.integers(first, self.next_slot - 1))
        assert self.wal.read(slot) == self.oracle[slot]
        got = list(self.wal.iter_from(slot))
        assert got == [(s, self.oracle[s]) for s in range(slot, self.next_slot)]
        if first > 0:
            try:
                list(self.wal.iter_from(first - 1))
            except WalSlotPrunedError:
                pass
            else:
                raise AssertionError("a pruned slot was served")

    @invariant()
    def consistent(self) -> None:
        self.wal._check()
        assert self.wal.next_slot == self.next_slot
        last = self.wal.last_slot
        assert last == (self.next_slot - 1 if self.oracle else None)
        head = self.wal.head_snapshot()
        assert (head[0] if head else None) == self.head
        first = self.wal.first_slot
        if first is not None and self.head is not None:
            assert first <= self.head + 1

    def teardown(self) -> None:
        self.wal.close()
        shutil.rmtree(self.dir, ignore_errors=True)


WalMachine.TestCase.settings = settings(max_examples=20, stateful_step_count=25, deadline=None)
test_wal_against_oracle = WalMachine.TestCase
