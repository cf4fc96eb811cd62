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
                          (closed once the core has taken ``Applied``)
``respond``               a waiter answered, until its client task runs again to send the reply
========================  ======================================================================

``persist_queue``, ``fsync`` and ``persist_return`` are measured on every node for every log
write (so a follower shows its share of ``replicate`` there), once per write job; the others
only on the master, only for slots carrying client updates (lease renewals are left out), and
once per client request in them, so that ``batching + slot_wait + commit + apply + respond``
is the master's part of a write's latency (the client's round trip adds decoding the request
and the loopback both ways). ``replicate`` counts only an acknowledgement for the ballot that
proposed the slot. A cluster of one voter broadcasts nothing, so only ``batching``,
``respond`` and the persist stages move there.

Each stage keeps a sum and a count (two floats updated on the event loop, no lock, no
allocation): the scrape reads them as a Prometheus summary, and ``benchmarks/
write_path_bench.py`` takes the difference of two scrapes to give the mean per write.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any, Final

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

#: Slots proposed and not yet applied that we remember a proposal time for, and batches handed
#: to the core and not yet proposed. Bounds only: a leader that loses its slots, or requests
#: the core refuses (OVERLOADED), must not grow them.
PROPOSED_MAX: Final = 64
UNPROPOSED_MAX: Final = 4096

clock = time.perf_counter


class WriteStages:
    """Sums and counts per stage, and what is needed to close the stages still open.

    The master's stages count **client requests**: a slot carrying 40 updates adds its
    ``commit`` time 40 times, so that every master stage is a mean per write and they add up
    to the master's share of a write's latency. The persist stages count log writes (one per
    group commit job, on every node).
    """

    __slots__ = ("_proposed", "_unproposed", "counts", "sums")

    def __init__(self) -> None:
        self.sums: dict[str, float] = dict.fromkeys(STAGES, 0.0)
        self.counts: dict[str, int] = dict.fromkeys(STAGES, 0)
        # slot -> [ballot, proposed at, requests in it, replicated yet]
        self._proposed: dict[int, list[Any]] = {}
        # Batches handed to the core, oldest first: [arrived at, requests not yet proposed].
        # The core proposes requests in arrival order, a batch possibly over several slots.
        self._unproposed: deque[list[Any]] = deque()

    def add(self, stage: str, seconds: float, weight: int = 1) -> None:
        self.sums[stage] += seconds * weight
        self.counts[stage] += weight

    def batch_to_core(self, first_submitted: float | None, requests: int) -> None:
        now = clock()
        if first_submitted is not None:
            self.add("batching", now - first_submitted, requests)
        if len(self._unproposed) >= UNPROPOSED_MAX:
            self._unproposed.popleft()
        self._unproposed.append([now, requests])

    def proposed(self, i: int, n: int, requests: int) -> None:
        now = clock()
        left = requests
        while left and self._unproposed:
            head = self._unproposed[0]
            taken = min(left, head[1])
            self.add("slot_wait", now - head[0], taken)
            left -= taken
            head[1] -= taken
            if not head[1]:
                self._unproposed.popleft()
        if len(self._proposed) >= PROPOSED_MAX:
            self._proposed.clear()
        self._proposed[i] = [n, now, requests, False]

    def accepted_by_peer(self, i: int, n: int) -> None:
        record = self._proposed.get(i)
        if record is not None and record[0] == n and not record[3]:
            record[3] = True
            self.add("replicate", clock() - record[1], record[2])

    def applying(self, i: int) -> tuple[float, int] | None:
        """The slot is chosen and about to be applied: close ``commit``; return (now, its
        requests) if it was one of ours (the caller closes ``apply`` once it has answered)."""
        record = self._proposed.pop(i, None)
        if record is None:
            return None
        now = clock()
        self.add("commit", now - record[1], record[2])
        return now, record[2]

    def persisted(self, queued: float, began: float, ended: float) -> None:
        self.add("persist_queue", began - queued)
        self.add("fsync", ended - began)
        self.add("persist_return", clock() - ended)

    def forget_proposals(self) -> None:
        """A role change: proposals not applied by now are re-proposed, or lost, elsewhere."""
        self._proposed.clear()
        self._unproposed.clear()

    def snapshot(self) -> tuple[tuple[str, float, int], ...]:
        """(stage, seconds, count) for every stage, in order (``NodeStatus.write_stages``)."""
        return tuple((stage, self.sums[stage], self.counts[stage]) for stage in STAGES)
