"""Helpers shared by the core's tests, exposed as fixtures (tests cannot import each other)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from parakoon_paxos import (
    Accepted,
    Applied,
    Apply,
    Candidate,
    Config,
    Effect,
    Event,
    Leader,
    Persist,
    Persisted,
    PreVoteOk,
    Promise,
    Receive,
    Recovered,
    State,
    Tick,
    check_invariants,
    initial_state,
    step,
)


def make_config(me: str = "n0", voters: tuple[str, ...] = ("n0", "n1", "n2"), **kw: Any) -> Config:
    kw.setdefault("lease_period", 2.0)
    return Config(me=me, voters=voters, **kw)


@dataclass
class Node:
    """One core plus the effects of its last step, driven by hand."""

    config: Config
    state: State
    now: float = 0.0
    effects: list[Effect] = field(default_factory=list)

    def on(self, event: Event, now: float | None = None) -> list[Effect]:
        if now is not None:
            self.now = now
        self.state, self.effects = step(self.config, self.state, event, self.now)
        check_invariants(self.config, self.state)
        return self.effects

    def of(self, kind: type) -> list[Any]:
        return [e for e in self.effects if isinstance(e, kind)]


def new_node(config: Config, recovered: Recovered | None = None, now: float = 0.0) -> Node:
    state = initial_state(config, recovered or Recovered(), now, seed=7)
    return Node(config=config, state=state, now=now)


def make_leader(config: Config, now: float = 1.0) -> Node:
    """A leader of a cold cluster holding a fresh lease, idle, with slots 0 (lease), 1 (Nop)."""
    node = new_node(config)
    node.on(Tick(), now)
    state = node.state
    if isinstance(state, Candidate) and state.pre:
        # Pre-vote first: the peers would promise, so the real election starts.
        for peer in config.other_voters:
            node.on(Receive(src=peer, msg=PreVoteOk(n=state.pre_n, i=0)))
            if not (isinstance(node.state, Candidate) and node.state.pre):
                break
    n = node.state.n
    for peer in config.other_voters:
        node.on(Receive(src=peer, msg=Promise(n=n, i=0, accepted=None)))
        if isinstance(node.state, Leader):
            break
    for slot in (0, 1):
        if not isinstance(node.state, Leader) or node.state.prop is None:
            break
        node.on(Persisted(i=slot, n=n))
        for peer in config.other_voters:
            node.on(Receive(src=peer, msg=Accepted(n=n, i=slot)))
        node.on(Applied(i=slot, results=()))
    assert isinstance(node.state, Leader), node.state
    return node


@pytest.fixture
def config() -> Callable[..., Config]:
    return make_config


@pytest.fixture
def node() -> Callable[..., Node]:
    return new_node


@pytest.fixture
def leader() -> Callable[..., Node]:
    return make_leader


__all__ = ["Apply", "Node", "Persist"]
