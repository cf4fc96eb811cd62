"""Random event sequences (hypothesis) against the machine's invariants.

The events are drawn blind: results for the current dial, for older dials, ticks at any time,
duplicates, results that make no sense for the phase. Whatever arrives, the machine must keep
these promises, checked after every step:

* it never dials while connected, and every dial gets the next id and enters CONNECTING;
* every backoff delay lies in [backoff_secs_min, backoff_secs_max];
* CLOSED is terminal: nothing changes and nothing happens afterwards, except that a socket
  produced by a late ``Connected`` is closed;
* exactly one ``StateChanged`` per phase change, naming the right phases, and none otherwise;
* no socket leaks: a model of the driver's open dials and sockets (opened by ``Dial`` and by
  ``Connected``; ended by ``CloseSocket``, ``ConnectFailed`` and ``ConnectionLost``) holds at
  most the current dial while connecting or connected, and nothing in any other phase;
* once a backoff's deadline passes, the next tick dials.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

from hypothesis import Phase, given, settings
from hypothesis import strategies as st

from parakoon_conn import (
    Close,
    CloseSocket,
    Connected,
    ConnectFailed,
    ConnectionLost,
    ConnectRequested,
    ConnPhase,
    ConnSettings,
    ConnState,
    Dial,
    Effect,
    Event,
    FlushQueued,
    SendRequested,
    StartTimer,
    StateChanged,
    Tick,
    backoff_delay_secs,
    check_state,
    initial_state,
    step,
)

#: Longest event sequence one example feeds.
EVENTS_MAX = 150

# Hypothesis's "explain" phase re-runs a failing example many times to annotate it; over long
# event sequences that took minutes. Shrinking alone gives a short, readable failing script.
# One bug at a time keeps shrinking from chasing several failures at once.
QUICK_FAILURES = settings(
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink],
    report_multiple_bugs=False,
    deadline=None,
)

jitters = st.floats(min_value=0.0, max_value=1.0, exclude_max=True, allow_nan=False)


@st.composite
def conn_settings(draw: st.DrawFn) -> ConnSettings:
    floor = draw(st.floats(min_value=0.001, max_value=5.0))
    return ConnSettings(
        backoff_secs_min=floor,
        backoff_secs_max=floor * draw(st.floats(min_value=1.0, max_value=1000.0)),
        backoff_multiplier=draw(st.floats(min_value=1.0, max_value=10.0)),
        backoff_jitter_ratio=draw(st.floats(min_value=0.0, max_value=1.0)),
        stable_after_secs=draw(st.floats(min_value=0.0, max_value=60.0)),
        connect_timeout_secs=draw(st.floats(min_value=0.01, max_value=10.0)),
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class Action:
    """An event before it is tied to a state: ``back`` picks the dial id (current minus back)."""

    kind: str
    dt: float
    back: int
    jitter: float


# Close is drawn one time in ten among the "close" draws so that most sequences live long
# enough to reach every phase before ending.
KINDS = ["connect", "send", "tick", "tick", "connected", "failed", "lost", "close"]

actions = st.builds(
    Action,
    kind=st.sampled_from(KINDS),
    dt=st.one_of(st.just(0.0), st.floats(min_value=0.0, max_value=30.0)),
    back=st.integers(min_value=0, max_value=2),
    jitter=jitters,
)


def to_event(action: Action, state: ConnState, now: float, close_roll: int) -> Event | None:
    dial_id = state.dial_id - action.back
    match action.kind:
        case "connect":
            return ConnectRequested(now=now)
        case "send":
            return SendRequested(now=now)
        case "tick":
            return Tick(now=now, jitter=action.jitter)
        case "close":
            return Close(now=now) if close_roll == 0 else Tick(now=now, jitter=action.jitter)
        case "connected" | "failed" | "lost" if dial_id < 1:
            return None  # no such dial yet; feeding it would be a driver bug (tested elsewhere)
        case "connected":
            return Connected(now=now, dial_id=dial_id)
        case "failed":
            return ConnectFailed(now=now, dial_id=dial_id, jitter=action.jitter, reason="x")
        case "lost":
            return ConnectionLost(now=now, dial_id=dial_id, jitter=action.jitter, reason="y")
    raise AssertionError(action)


def within(value: float, low: float, high: float, now: float) -> bool:
    """``low <= value <= high`` up to the rounding of adding a delay to ``now`` and back."""
    slack = 4 * math.ulp(max(abs(now), high, 1.0))
    return low - slack <= value <= high + slack


def check_step(
    conf: ConnSettings,
    old: ConnState,
    event: Event,
    new: ConnState,
    effects: tuple[Effect, ...],
    live: set[int],
) -> None:
    check_state(new)
    now = event.now
    dials = [e for e in effects if isinstance(e, Dial)]
    changes = [e for e in effects if isinstance(e, StateChanged)]
    timers = [e for e in effects if isinstance(e, StartTimer)]

    # Closed is terminal.
    if old.phase is ConnPhase.CLOSED:
        assert new == old
        if isinstance(event, Connected):
            assert effects == (CloseSocket(dial_id=event.dial_id),)
        else:
            assert effects == ()

    # Never dial while connected; every dial is the next id and enters CONNECTING.
    assert len(dials) <= 1
    if dials:
        assert old.phase in (ConnPhase.IDLE, ConnPhase.BACKING_OFF)
        assert new.phase is ConnPhase.CONNECTING
        assert dials[0].dial_id == old.dial_id + 1 == new.dial_id
        assert dials[0].address in new.addresses
        assert timers == [StartTimer(deadline=now + conf.connect_timeout_secs)]
    else:
        assert new.dial_id == old.dial_id

    # Backoff within [floor, cap].
    if new.phase is ConnPhase.BACKING_OFF and old.phase is not ConnPhase.BACKING_OFF:
        assert timers == [StartTimer(deadline=new.deadline)]
        assert within(new.deadline - now, conf.backoff_secs_min, conf.backoff_secs_max, now), (
            new.deadline - now,
            conf,
        )

    # Exactly one report per phase change.
    if new.phase is old.phase:
        assert changes == []
    else:
        assert changes == [StateChanged(old=old.phase, new=new.phase, reason=changes[0].reason)]
        assert effects.index(changes[0]) == sum(isinstance(e, CloseSocket) for e in effects)

    # A passed backoff deadline dials at the next tick.
    if old.phase is ConnPhase.BACKING_OFF and isinstance(event, Tick) and now >= old.deadline:
        assert dials

    # Flush only onto the live connection.
    for effect in effects:
        if isinstance(effect, FlushQueued):
            assert new.phase is ConnPhase.CONNECTED
            assert effect.dial_id == new.dial_id

    # No leaked sockets: replay the driver's bookkeeping.
    match event:
        case Connected():
            live.add(event.dial_id)
        case ConnectFailed() | ConnectionLost():
            live.discard(event.dial_id)
        case _:
            pass
    for effect in effects:
        match effect:
            case Dial():
                live.add(effect.dial_id)
            case CloseSocket():
                live.discard(effect.dial_id)
            case _:
                pass
    if new.phase in (ConnPhase.CONNECTING, ConnPhase.CONNECTED):
        assert live <= {new.dial_id}, (live, new)
    else:
        assert live == set(), (live, new)


@settings(QUICK_FAILURES, max_examples=300)
@given(
    conf=conn_settings(),
    start=st.floats(min_value=0.0, max_value=1e6),
    script=st.lists(st.tuples(actions, st.integers(min_value=0, max_value=9)), max_size=EVENTS_MAX),
    addresses=st.lists(st.sampled_from(["a:1", "b:2", "c:3"]), min_size=1, max_size=3),
)
def test_random_event_sequences_keep_the_invariants(
    conf: ConnSettings,
    start: float,
    script: list[tuple[Action, int]],
    addresses: list[str],
) -> None:
    state = initial_state(addresses)
    now = start
    live: set[int] = set()
    for action, close_roll in script:
        now += action.dt
        event = to_event(action, state, now, close_roll)
        if event is None:
            continue
        new, effects = step(conf, state, event)
        check_step(conf, state, event, new, effects, live)
        state = new


@settings(QUICK_FAILURES, max_examples=200)
@given(
    conf=conn_settings(),
    failures=st.integers(min_value=1, max_value=5000),
    jitter=jitters,
)
def test_every_backoff_delay_is_within_floor_and_cap(
    conf: ConnSettings, failures: int, jitter: float
) -> None:
    delay = backoff_delay_secs(conf, failures, jitter)
    assert conf.backoff_secs_min <= delay <= conf.backoff_secs_max
    # A later failure never waits less at the same jitter.
    assert backoff_delay_secs(conf, failures + 1, jitter) >= delay


@settings(QUICK_FAILURES, max_examples=100)
@given(conf=conn_settings(), jitters_drawn=st.lists(jitters, min_size=1, max_size=40))
def test_a_dead_peer_is_retried_forever_at_most_cap_apart(
    conf: ConnSettings, jitters_drawn: list[float]
) -> None:
    """Liveness of the retry loop: with every dial failing at once, dials keep coming, never
    closer together than the floor and never further apart than the cap."""
    state = initial_state(["dead:1"])
    state, _ = step(conf, state, ConnectRequested(now=0.0))
    now = 0.0
    dial_times = [0.0]
    for jitter in jitters_drawn:
        state, _ = step(conf, state, ConnectFailed(now=now, dial_id=state.dial_id, jitter=jitter))
        now = state.deadline
        state, effects = step(conf, state, Tick(now=now, jitter=jitter))
        assert isinstance(effects[1], Dial)
        dial_times.append(now)
    gaps = [b - a for a, b in itertools.pairwise(dial_times)]
    assert all(within(g, conf.backoff_secs_min, conf.backoff_secs_max, now) for g in gaps)
