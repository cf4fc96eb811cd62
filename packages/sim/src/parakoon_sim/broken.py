# spec: docs/spec/multipaxos-design-notes.md
"""Deliberately broken cores, for testing that the simulator's checkers have teeth.

Each variant wraps the real ``step`` and breaks exactly one rule of the protocol. They exist
only for tests and the ``--variant`` option of the command line; nothing else may use them.
"""

from __future__ import annotations

from dataclasses import replace

from parakoon_paxos import (
    Accept,
    Accepted,
    ChangeMembership,
    ClientBatch,
    Config,
    Effect,
    Event,
    Fail,
    Follower,
    Leader,
    MemberOp,
    Persist,
    PersistPromise,
    Receive,
    Reply,
    Send,
    State,
    step,
)
from parakoon_paxos.core import owner

from .sim import StepFn


def ack_before_persist(
    config: Config, state: State, event: Event, now: float
) -> tuple[State, list[Effect]]:
    """Breaks S2: a follower acknowledges an Accept before its Persist is durable."""
    new, effects = step(config, state, event, now)
    if isinstance(new, Follower) and config.is_voter:
        out: list[Effect] = []
        for eff in effects:
            if isinstance(eff, Persist) and eff.entry.n > 0:
                out.append(
                    Send(to=owner(config, eff.entry.n), msg=Accepted(n=eff.entry.n, i=eff.entry.i))
                )
            out.append(eff)
        return new, out
    return new, effects


def skip_promise_persist(
    config: Config, state: State, event: Event, now: float
) -> tuple[State, list[Effect]]:
    """Breaks S2/S6 [stronger]: the promised ballot is never made durable."""
    new, effects = step(config, state, event, now)
    return new, [e for e in effects if not isinstance(e, PersistPromise)]


def accept_lower_ballot(
    config: Config, state: State, event: Event, now: float
) -> tuple[State, list[Effect]]:
    """Breaks S6: a follower accepts an Accept from a ballot lower than the one it promised."""
    if (
        isinstance(state, Follower)
        and isinstance(event, Receive)
        and isinstance(event.msg, Accept)
        and 0 < event.msg.n < state.n
    ):
        promised = state.n
        state = replace(state, n=event.msg.n)
        new, effects = step(config, state, event, now)
        if new.n < promised:  # keep claiming the higher promise we broke
            new = replace(new, n=promised, max_seen=max(new.max_seen, promised))
        return new, effects
    return step(config, state, event, now)


def ignore_lease_guard(
    config: Config, state: State, event: Event, now: float
) -> tuple[State, list[Effect]]:
    """Breaks §5.2 rule 2: promise to anyone, whatever lease is live."""
    if isinstance(event, Receive) and event.msg.__class__.__name__ == "Prepare":
        state = replace(state, lease_start=float("-inf"))
    return step(config, state, event, now)


def optimistic_renewal(
    config: Config, state: State, event: Event, now: float
) -> tuple[State, list[Effect]]:
    """Breaks §5.6: the leader extends its lease when it *proposes* a renewal, before the
    renewal is chosen (so a leader cut off from the others keeps believing in its lease)."""
    new, effects = step(config, state, event, now)
    if (
        isinstance(new, Leader)
        and new.prop is not None
        and new.prop.fresh_lease
        and float("-inf") < new.my_lease_start < new.prop.proposed_at
    ):
        new = replace(new, my_lease_start=new.prop.proposed_at)
    return new, effects


def reply_before_chosen(
    config: Config, state: State, event: Event, now: float
) -> tuple[State, list[Effect]]:
    """Breaks S9: the leader acknowledges a client update as soon as it is queued."""
    new, effects = step(config, state, event, now)
    if isinstance(new, Leader) and isinstance(event, ClientBatch):
        failed = {e.rid for e in effects if isinstance(e, Fail)}
        effects = effects + [
            Reply(rid=r.rid, result=None) for r in event.requests if r.rid not in failed
        ]
    return new, effects


def vote_while_rebuilding(
    config: Config, state: State, event: Event, now: float
) -> tuple[State, list[Effect]]:
    """Breaks R9: a node that lost its disk votes at once, as if it had always been empty."""
    if state.rebuild is not None:
        state = replace(state, rebuild=None)
    return step(config, state, event, now)


def two_changes_at_once(
    config: Config, state: State, event: Event, now: float
) -> tuple[State, list[Effect]]:
    """Breaks "one change at a time": a change asked for while another waits for a free slot
    is folded into it, so one chosen membership changes two nodes at once."""
    if (
        isinstance(event, ChangeMembership)
        and isinstance(state, Leader)
        and state.change is not None
        and state.prop is not None
        and not state.prop.chosen
    ):
        rid, pending = state.change
        base = state.conf or config
        # Validate and build the second change against the first one's result.
        trial = replace(state, change=None, members=pending, conf=base.with_members(pending))
        new, effects = step(config, trial, event, now)
        if isinstance(new, Leader) and new.change is not None:
            return replace(
                new, change=(rid, new.change[1]), members=state.members, conf=state.conf
            ), effects
        return state, effects
    return step(config, state, event, now)


def promote_before_caught_up(
    config: Config, state: State, event: Event, now: float
) -> tuple[State, list[Effect]]:
    """Breaks the promotion rule: a learner is made a voter however far behind it is."""
    if (
        isinstance(event, ChangeMembership)
        and event.op is MemberOp.PROMOTE
        and isinstance(state, Leader)
    ):
        at = (*(x for x in state.learner_at if x[0] != event.node), (event.node, state.applied_i))
        state = replace(state, learner_at=at)
    return step(config, state, event, now)


VARIANTS: dict[str, StepFn] = {
    "two_changes_at_once": two_changes_at_once,
    "promote_before_caught_up": promote_before_caught_up,
    "vote_while_rebuilding": vote_while_rebuilding,
    "reply_before_chosen": reply_before_chosen,
    "optimistic_renewal": optimistic_renewal,
    "ack_before_persist": ack_before_persist,
    "skip_promise_persist": skip_promise_persist,
    "accept_lower_ballot": accept_lower_ballot,
    "ignore_lease_guard": ignore_lease_guard,
}
