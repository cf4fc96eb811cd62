"""Where a write's time goes: a per-stage breakdown of the write path, always on.

A client write on the master passes through these stages, in order (each is a duration; the
names are the ``stage`` label of ``parakoon_write_stage_seconds``):

========================  ======================================================================
``batching``              its request handed to the driver, until its batch reaches the core
                          (the batcher task's wake-up plus the one turn of the loop it leaves
                          for other clients to join)
``slot_wait``             the batch in the core, until it is proposed: the slot in flight
                          before it must be chosen first (zero when the cluster is idle)
``persist_queue``         a log write queued, until the writer thread starts it (the previous
                          group commit still running, then the hand-off to the thread)
``fsync``                 the writer thread's write and fdatasync of one group commit
``persist_return``        the thread done, until the event loop hears of it
``replicate``             the proposal broadcast, until the first follower's ``Accepted``
                          comes back (the network both ways plus the follower's own persist)
``commit``                the proposal broadcast, until the slot is chosen and applying starts
                          (the slower of our own persist and the quorum's)
``apply``                 applying the chosen batch to the store and answering its waiters
``respond``               a waiter answered, until its client task runs again to send the reply
========================  ======================================================================

``persist_queue``, ``fsync`` and ``persist_return`` are measured on every node for every log
write (so a follower shows its share of ``replicate`` there); the others only on the master
and only for slots carrying client updates (lease renewals are left out). With one slot in
flight, ``batching + slot_wait + commit + apply + respond`` is the master's part of a write's
latency; the client's round trip adds decoding the request and the loopback both ways.

Each stage keeps a sum and a count (two floats updated on the event loop, no lock, no
allocation): the scrape reads them as a Prometheus summary, and ``benchmarks/
write_path_bench.py`` takes the difference of two scrapes to give the mean per write.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Final

STAGES: Final = (
    "batching",
    "slot_wait",
    "persist_queue",
    "fsync",
    "persist_return",
    "replicate",
    "commit",
    "apply",
    "respond",
)

#: Slots proposed and not yet applied that we remember a proposal time for. One slot is in
#: flight at a time today; the bound only keeps a leader that loses its slots (a new ballot
#: re-proposes them) from growing the table.
PROPOSED_MAX: Final = 64

clock = time.perf_counter


class WriteStages:
    """Sums and counts per stage, and the proposal time of each slot in flight."""

    __slots__ = ("_proposed", "_replicated", "counts", "oldest_unproposed", "sums")

    def __init__(self) -> None:
        self.sums: dict[str, float] = dict.fromkeys(STAGES, 0.0)
        self.counts: dict[str, int] = dict.fromkeys(STAGES, 0)
        self._proposed: dict[int, float] = {}
        self._replicated: set[int] = set()
        #: When the oldest batch handed to the core and not yet proposed arrived there.
        self.oldest_unproposed: float | None = None

    def add(self, stage: str, seconds: float) -> None:
        self.sums[stage] += seconds
        self.counts[stage] += 1

    def batch_to_core(self, first_submitted: float | None) -> None:
        now = clock()
        if first_submitted is not None:
            self.add("batching", now - first_submitted)
        if self.oldest_unproposed is None:
            self.oldest_unproposed = now

    def proposed(self, i: int) -> None:
        now = clock()
        if self.oldest_unproposed is not None:
            self.add("slot_wait", now - self.oldest_unproposed)
            self.oldest_unproposed = None
        if len(self._proposed) >= PROPOSED_MAX:
            self._proposed.clear()
            self._replicated.clear()
        self._proposed[i] = now

    def accepted_by_peer(self, i: int) -> None:
        start = self._proposed.get(i)
        if start is not None and i not in self._replicated:
            self._replicated.add(i)
            self.add("replicate", clock() - start)

    def applying(self, i: int) -> float | None:
        """The slot is chosen and about to be applied: close ``commit``; return now if it was
        one of ours (the caller then closes ``apply``)."""
        start = self._proposed.pop(i, None)
        if start is None:
            return None
        self._replicated.discard(i)
        now = clock()
        self.add("commit", now - start)
        return now

    def persisted(self, queued: float, began: float, ended: float) -> None:
        self.add("persist_queue", began - queued)
        self.add("fsync", ended - began)
        self.add("persist_return", clock() - ended)

    def forget_proposals(self) -> None:
        """A role change: proposals not applied by now are re-proposed, or lost, elsewhere."""
        self._proposed.clear()
        self._replicated.clear()
        self.oldest_unproposed = None

    def snapshot(self) -> Mapping[str, tuple[float, int]]:
        return {stage: (self.sums[stage], self.counts[stage]) for stage in STAGES}
