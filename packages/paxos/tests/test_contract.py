"""The effect contract (``parakoon_paxos.contract.stage``): what waits for which write."""

from __future__ import annotations

from parakoon_paxos import (
    NOP,
    Accept,
    Accepted,
    Apply,
    Broadcast,
    Effect,
    Fail,
    FailCode,
    LogEntry,
    Persist,
    PersistPromise,
    Promise,
    Rebuilt,
    Reply,
    Role,
    RoleChanged,
    Send,
    StartCatchup,
)
from parakoon_paxos.contract import NOW, Staged, stage

ENTRY = LogEntry(i=3, n=5, value=NOP)


def test_a_leader_broadcasts_before_its_own_write_without_waiting() -> None:
    accept = Broadcast(msg=Accept(n=5, i=3, value=NOP))
    persist = Persist(entry=ENTRY)
    assert stage([accept, persist]) == [Staged(accept, NOW, NOW), Staged(persist, 0, NOW)]


def test_a_promise_waits_for_its_persisted_ballot() -> None:
    write = PersistPromise(n=7)
    promise = Send(to="n1", msg=Promise(n=7, i=3, accepted=None))
    assert stage([write, promise]) == [Staged(write, 0, NOW), Staged(promise, NOW, 0)]


def test_answers_to_clients_wait_too_and_bookkeeping_does_not() -> None:
    effects: list[Effect] = [
        Apply(i=2, value=NOP),
        Persist(entry=ENTRY),
        Reply(rid=1, result=None),
        RoleChanged(role=Role.FOLLOWER, n=5, master=None),
        PersistPromise(n=8),
        Rebuilt(applied_i=2, n=8),
        Fail(rid=2, code=FailCode.NO_LONGER_MASTER),
        StartCatchup(source="n2", from_i=3),
        Send(to="n2", msg=Accepted(n=5, i=3)),
    ]
    got = [(s.write, s.after) for s in stage(effects)]
    assert got == [
        (NOW, NOW),  # Apply: chosen values only, at once
        (0, NOW),
        (NOW, 0),  # Reply waits for write 0
        (NOW, NOW),
        (1, NOW),
        (2, NOW),  # Rebuilt is a durable write like a promise
        (NOW, 2),  # Fail waits for every write before it
        (NOW, NOW),
        (NOW, 2),
    ]


def test_an_empty_list_stages_to_nothing() -> None:
    assert stage([]) == []
