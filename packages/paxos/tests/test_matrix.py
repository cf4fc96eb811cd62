"""Every role x every event: no crash, invariants hold, effects are well-formed (h2-style).

Each role is reached by driving a real core (no hand-built states), then every event kind is
applied with a matching and a mismatching variant. The result is also checked to be a pure
function of its inputs: stepping twice gives equal states and effects.
"""

from __future__ import annotations

from typing import Any

import pytest

from parakoon_paxos import (
    NOP,
    Accept,
    Accepted,
    Applied,
    Apply,
    Batch,
    Broadcast,
    CatchupDone,
    CatchupFailed,
    ClientBatch,
    ClientRequest,
    DropMaster,
    Fail,
    LogEntry,
    MasterSet,
    Nak,
    Persist,
    Persisted,
    PersistPromise,
    Prepare,
    Promise,
    Receive,
    Reply,
    Role,
    RoleChanged,
    Send,
    StartCatchup,
    Tick,
    check_invariants,
    role,
    step,
)

EFFECT_TYPES = (
    Send,
    Broadcast,
    Persist,
    PersistPromise,
    Apply,
    Reply,
    Fail,
    StartCatchup,
    RoleChanged,
)


def reach(role_name: str, config: Any, node: Any, leader: Any) -> Any:
    cfg = config(learners=("l0",))
    if role_name == "follower":
        f = node(config(me="n1", learners=("l0",)))
        f.on(Receive(src="n0", msg=Accept(n=3, i=0, value=MasterSet(node="n0"))), 0.01)
        return f
    if role_name == "candidate":
        c = node(cfg)
        c.on(Tick(), 0.2)
        return c
    if role_name == "leader_idle":
        return leader(cfg)
    if role_name == "leader_proposing":
        ld = leader(cfg)
        ld.on(ClientBatch(requests=(ClientRequest(rid=1, payload=b"x"),)))
        return ld
    if role_name == "catching_up":
        f = node(config(me="n1", learners=("l0",)))
        f.on(Receive(src="n0", msg=Accept(n=3, i=4, value=NOP)), 0.01)
        return f
    if role_name == "learner":
        return node(config(me="l0", learners=("l0",)))
    raise AssertionError(role_name)


ROLES = ["follower", "candidate", "leader_idle", "leader_proposing", "catching_up", "learner"]


def events() -> list[Any]:
    e0 = LogEntry(i=0, n=3, value=MasterSet(node="n0"))
    evs: list[Any] = [Tick()]
    for src in ("n0", "n1", "n2", "l0"):
        for n in (-1, 1, 3, 100):
            evs += [
                Receive(src=src, msg=Prepare(n=n, i=0)),
                Receive(src=src, msg=Prepare(n=n, i=5)),
                Receive(src=src, msg=Promise(n=n, i=0, accepted=None)),
                Receive(src=src, msg=Promise(n=n, i=0, accepted=e0)),
                Receive(src=src, msg=Nak(n=n, their_n=n + 1, their_i=0)),
                Receive(src=src, msg=Nak(n=n, their_n=n + 1, their_i=9)),
                Receive(src=src, msg=Accept(n=n, i=0, value=NOP)),
                Receive(src=src, msg=Accept(n=n, i=2, value=Batch(payloads=(b"p",)))),
                Receive(src=src, msg=Accept(n=n, i=9, value=NOP)),
                Receive(src=src, msg=Accepted(n=n, i=0)),
                Receive(src=src, msg=Accepted(n=n, i=2)),
            ]
    evs += [
        ClientBatch(requests=(ClientRequest(rid=5, payload=b"v"),)),
        ClientBatch(requests=()),
        Persisted(i=0, n=3),
        Persisted(i=2, n=3),
        Persisted(i=7, n=1),
        Applied(i=0, results=()),
        Applied(i=2, results=("r",)),
        CatchupDone(applied_i=3, last=LogEntry(i=3, n=3, value=NOP), lease_holder="n0"),
        CatchupDone(applied_i=-1, last=None),
        CatchupFailed(source="n0"),
        CatchupFailed(source="n2"),
        DropMaster(rid=77),
    ]
    return evs


@pytest.mark.parametrize("role_name", ROLES)
def test_every_event_in_every_role(role_name: str, config: Any, node: Any, leader: Any) -> None:
    for ev in events():
        for dt in (0.0, 0.3, 5.0):
            n = reach(role_name, config, node, leader)
            now = n.now + dt
            state0 = n.state
            s1, e1 = step(n.config, state0, ev, now)
            s2, e2 = step(n.config, state0, ev, now)
            assert (s1, e1) == (s2, e2), f"{role_name} {ev}: not deterministic"
            check_invariants(n.config, s1)
            assert all(isinstance(e, EFFECT_TYPES) for e in e1), e1
            # Applies are in slot order and contiguous (S4).
            applies = [e.i for e in e1 if isinstance(e, Apply)]
            assert applies == sorted(applies)
            assert s1.n >= state0.n or isinstance(ev, CatchupDone), "S6: ballot went down"
            assert s1.applied_i >= state0.applied_i
            if not n.config.is_voter:
                assert role(s1) in (Role.FOLLOWER, Role.CATCHING_UP)
                assert not any(isinstance(e, Send) and isinstance(e.msg, Accepted) for e in e1)
            # Every Promise/Accepted sent in this list follows the write it depends on.
            for k, e in enumerate(e1):
                if isinstance(e, Send) and isinstance(e.msg, Promise):
                    assert any(isinstance(p, PersistPromise) and p.n >= e.msg.n for p in e1[:k]), (
                        f"{role_name} {ev}: Promise before PersistPromise"
                    )


def test_evolve_equals_dataclasses_replace(config: Any, node: Any, leader: Any) -> None:
    """The fast copier of the core gives exactly what dataclasses.replace gives."""
    import dataclasses

    from parakoon_paxos.core import evolve  # type: ignore[attr-defined]  # the run-time copier, checked against replace

    for role_name in ROLES:
        state = reach(role_name, config, node, leader).state
        for f in dataclasses.fields(state):
            value = getattr(state, f.name)
            changed = {f.name: value if not isinstance(value, int) else value + 1}
            assert evolve(state, **changed) == dataclasses.replace(state, **changed)
        assert evolve(state) == state
