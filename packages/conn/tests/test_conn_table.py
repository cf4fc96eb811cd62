"""Every phase x event pair of the connection machine, table-driven (as h2 tests its states).

The starting states are reached by stepping the machine itself from ``initial_state``, so the
table tests the rules rather than hand-made states. Apart from IDLE they have issued two dials
(addresses ``a:1`` then ``b:2``), so each has a *current* dial id (2) and a *stale* one (1).
Settings use round numbers so the expected deadlines can be read off directly: floor 1 s,
cap 8 s, multiplier 2, jitter ratio 0.5, stable after 10 s, connect timeout 2 s.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass, replace

import pytest

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
    ConnUsageError,
    Dial,
    Effect,
    Event,
    FlushQueued,
    SendRequested,
    StartTimer,
    StateChanged,
    Tick,
    check_state,
    initial_state,
    step,
)

IDLE = ConnPhase.IDLE
CONNECTING = ConnPhase.CONNECTING
CONNECTED = ConnPhase.CONNECTED
BACKING_OFF = ConnPhase.BACKING_OFF
CLOSED = ConnPhase.CLOSED

SETTINGS = ConnSettings(
    backoff_secs_min=1.0,
    backoff_secs_max=8.0,
    backoff_multiplier=2.0,
    backoff_jitter_ratio=0.5,
    stable_after_secs=10.0,
    connect_timeout_secs=2.0,
)
#: The time of most events in the table: before every deadline of the starting states.
T = 103.5


def run(state: ConnState, *events: Event) -> ConnState:
    for event in events:
        state, _ = step(SETTINGS, state, event)
        check_state(state)
    return state


def starting_states() -> dict[ConnPhase, ConnState]:
    idle = initial_state(["a:1", "b:2"])
    # dial 1 at t=100 fails at once (failure 1: delay 2 s with jitter 0), dial 2 at t=102.5
    connecting = run(
        idle,
        ConnectRequested(now=100.0),
        ConnectFailed(now=100.5, dial_id=1, jitter=0.0),
        Tick(now=102.5, jitter=0.0),
    )
    connected = run(connecting, Connected(now=103.0, dial_id=2))
    backing_off = run(connecting, ConnectFailed(now=103.0, dial_id=2, jitter=0.0))
    closed = run(connected, Close(now=103.2))
    return {
        IDLE: idle,
        CONNECTING: connecting,
        CONNECTED: connected,
        BACKING_OFF: backing_off,
        CLOSED: closed,
    }


START = starting_states()


def test_the_starting_states_are_what_the_table_assumes() -> None:
    addresses = ("a:1", "b:2")
    assert {
        IDLE: ConnState(phase=IDLE, addresses=addresses),
        CONNECTING: ConnState(
            phase=CONNECTING, addresses=addresses, dial_id=2, deadline=104.5, failures=1
        ),
        CONNECTED: ConnState(
            phase=CONNECTED, addresses=addresses, dial_id=2, connected_since=103.0, failures=1
        ),
        # failure 2: ceiling min(8, 1 * 2**2) = 4, jitter 0 waits the whole ceiling
        BACKING_OFF: ConnState(
            phase=BACKING_OFF, addresses=addresses, dial_id=2, deadline=107.0, failures=2
        ),
        CLOSED: ConnState(phase=CLOSED, addresses=addresses, dial_id=2, failures=1),
    } == START


@dataclass(frozen=True, slots=True, kw_only=True)
class Case:
    """One row: from ``phase``, ``event`` gives ``state`` (None: unchanged) and ``effects``."""

    phase: ConnPhase
    event: Event
    effects: tuple[Effect, ...] = ()
    state: ConnState | None = None
    raises: bool = False

    @property
    def id(self) -> str:
        fields = ", ".join(
            f"{k}={v}" for k, v in vars_of(self.event).items() if k not in ("now", "reason")
        )
        return f"{self.phase.name}-{type(self.event).__name__}({fields})"


def vars_of(event: Event) -> dict[str, object]:
    return {name: getattr(event, name) for name in type(event).__dataclass_fields__}


def changed(phase: ConnPhase, **fields: object) -> ConnState:
    return replace(START[phase], **fields)  # type: ignore[arg-type]


def on_every_phase_nothing(event: Event, *, but: tuple[ConnPhase, ...]) -> list[Case]:
    return [Case(phase=phase, event=event) for phase in ConnPhase if phase not in but]


CASES: list[Case] = [
    # -- ConnectRequested: dials once from IDLE, otherwise changes nothing --------------------
    Case(
        phase=IDLE,
        event=ConnectRequested(now=T),
        state=ConnState(phase=CONNECTING, addresses=("a:1", "b:2"), dial_id=1, deadline=T + 2),
        effects=(
            StateChanged(old=IDLE, new=CONNECTING, reason="connect requested"),
            Dial(dial_id=1, address="a:1"),
            StartTimer(deadline=T + 2),
        ),
    ),
    *on_every_phase_nothing(ConnectRequested(now=T), but=(IDLE,)),
    # -- SendRequested: dials lazily from IDLE, flushes when connected ------------------------
    Case(
        phase=IDLE,
        event=SendRequested(now=T),
        state=ConnState(phase=CONNECTING, addresses=("a:1", "b:2"), dial_id=1, deadline=T + 2),
        effects=(
            StateChanged(old=IDLE, new=CONNECTING, reason="send requested"),
            Dial(dial_id=1, address="a:1"),
            StartTimer(deadline=T + 2),
        ),
    ),
    Case(phase=CONNECTED, event=SendRequested(now=T), effects=(FlushQueued(dial_id=2),)),
    *on_every_phase_nothing(SendRequested(now=T), but=(IDLE, CONNECTED)),
    # -- Connected ---------------------------------------------------------------------------
    Case(phase=IDLE, event=Connected(now=T, dial_id=1), raises=True),
    Case(
        phase=CONNECTING,
        event=Connected(now=T, dial_id=2),
        state=changed(CONNECTED, connected_since=T),
        effects=(
            StateChanged(old=CONNECTING, new=CONNECTED, reason="connected"),
            FlushQueued(dial_id=2),
        ),
    ),
    Case(phase=CONNECTING, event=Connected(now=T, dial_id=1), effects=(CloseSocket(dial_id=1),)),
    Case(phase=CONNECTED, event=Connected(now=T, dial_id=2)),  # reported twice: keep it
    Case(phase=CONNECTED, event=Connected(now=T, dial_id=1), effects=(CloseSocket(dial_id=1),)),
    Case(phase=BACKING_OFF, event=Connected(now=T, dial_id=2), effects=(CloseSocket(dial_id=2),)),
    Case(phase=BACKING_OFF, event=Connected(now=T, dial_id=1), effects=(CloseSocket(dial_id=1),)),
    Case(phase=CLOSED, event=Connected(now=T, dial_id=2), effects=(CloseSocket(dial_id=2),)),
    Case(phase=CLOSED, event=Connected(now=T, dial_id=1), effects=(CloseSocket(dial_id=1),)),
    # -- ConnectFailed -----------------------------------------------------------------------
    Case(phase=IDLE, event=ConnectFailed(now=T, dial_id=1, jitter=0.0), raises=True),
    Case(
        phase=CONNECTING,
        event=ConnectFailed(now=T, dial_id=2, jitter=0.0, reason="refused"),
        state=changed(BACKING_OFF, deadline=T + 4),
        effects=(
            StateChanged(
                old=CONNECTING,
                new=BACKING_OFF,
                reason="connect failed: refused; failure 2, next dial in 4.000s",
            ),
            StartTimer(deadline=T + 4),
        ),
    ),
    *[
        Case(phase=phase, event=ConnectFailed(now=T, dial_id=dial_id, jitter=0.0))
        for phase in (CONNECTING, CONNECTED, BACKING_OFF, CLOSED)
        for dial_id in (1, 2)
        if (phase, dial_id) != (CONNECTING, 2)
    ],
    # -- ConnectionLost ----------------------------------------------------------------------
    Case(phase=IDLE, event=ConnectionLost(now=T, dial_id=1, jitter=0.0), raises=True),
    Case(
        # up for 0.5 s only: not stable, so failure 2 (ceiling 4 s, jitter 0 waits all of it)
        phase=CONNECTED,
        event=ConnectionLost(now=T, dial_id=2, jitter=0.0),
        state=changed(BACKING_OFF, deadline=T + 4),
        effects=(
            CloseSocket(dial_id=2),
            StateChanged(
                old=CONNECTED,
                new=BACKING_OFF,
                reason="connection lost; failure 2, next dial in 4.000s",
            ),
            StartTimer(deadline=T + 4),
        ),
    ),
    Case(
        # up for 10 s: stable, so the count restarts and this is failure 1 (ceiling 2 s)
        phase=CONNECTED,
        event=ConnectionLost(now=113.0, dial_id=2, jitter=0.0, reason="reset by peer"),
        state=changed(BACKING_OFF, deadline=115.0, failures=1),
        effects=(
            CloseSocket(dial_id=2),
            StateChanged(
                old=CONNECTED,
                new=BACKING_OFF,
                reason="connection lost: reset by peer; failure 1, next dial in 2.000s",
            ),
            StartTimer(deadline=115.0),
        ),
    ),
    *[
        Case(phase=phase, event=ConnectionLost(now=T, dial_id=dial_id, jitter=0.0))
        for phase in (CONNECTING, CONNECTED, BACKING_OFF, CLOSED)
        for dial_id in (1, 2)
        if (phase, dial_id) != (CONNECTED, 2)
    ],
    # -- Tick ----------------------------------------------------------------------------------
    *[Case(phase=phase, event=Tick(now=T, jitter=0.0)) for phase in ConnPhase],
    Case(phase=IDLE, event=Tick(now=1e9, jitter=0.0)),
    Case(
        # the connect deadline (104.5) passed: failure 2, ceiling 4, jitter 0.5 takes a quarter
        phase=CONNECTING,
        event=Tick(now=104.5, jitter=0.5),
        state=changed(BACKING_OFF, deadline=107.5),
        effects=(
            CloseSocket(dial_id=2),
            StateChanged(
                old=CONNECTING,
                new=BACKING_OFF,
                reason="connect timed out after 2.0s; failure 2, next dial in 3.000s",
            ),
            StartTimer(deadline=107.5),
        ),
    ),
    Case(
        # connected since 103: stable from 113 on, which resets the failure count quietly
        phase=CONNECTED,
        event=Tick(now=113.0, jitter=0.0),
        state=changed(CONNECTED, failures=0),
    ),
    Case(phase=CONNECTED, event=Tick(now=112.9, jitter=0.0)),
    Case(
        # the backoff deadline (107) passed: dial 3, back to the first address
        phase=BACKING_OFF,
        event=Tick(now=107.0, jitter=0.3),
        state=ConnState(
            phase=CONNECTING, addresses=("a:1", "b:2"), dial_id=3, deadline=109.0, failures=2
        ),
        effects=(
            StateChanged(old=BACKING_OFF, new=CONNECTING, reason="backoff elapsed"),
            Dial(dial_id=3, address="a:1"),
            StartTimer(deadline=109.0),
        ),
    ),
    Case(phase=CLOSED, event=Tick(now=1e9, jitter=0.0)),
    # -- Close ---------------------------------------------------------------------------------
    Case(
        phase=IDLE,
        event=Close(now=T),
        state=ConnState(phase=CLOSED, addresses=("a:1", "b:2")),
        effects=(StateChanged(old=IDLE, new=CLOSED, reason="close requested"),),
    ),
    Case(
        phase=CONNECTING,
        event=Close(now=T),
        state=ConnState(phase=CLOSED, addresses=("a:1", "b:2"), dial_id=2, failures=1),
        effects=(
            CloseSocket(dial_id=2),
            StateChanged(old=CONNECTING, new=CLOSED, reason="close requested"),
        ),
    ),
    Case(
        phase=CONNECTED,
        event=Close(now=T),
        state=ConnState(phase=CLOSED, addresses=("a:1", "b:2"), dial_id=2, failures=1),
        effects=(
            CloseSocket(dial_id=2),
            StateChanged(old=CONNECTED, new=CLOSED, reason="close requested"),
        ),
    ),
    Case(
        phase=BACKING_OFF,
        event=Close(now=T),
        state=ConnState(phase=CLOSED, addresses=("a:1", "b:2"), dial_id=2, failures=2),
        effects=(StateChanged(old=BACKING_OFF, new=CLOSED, reason="close requested"),),
    ),
    Case(phase=CLOSED, event=Close(now=T)),
]


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_transition(case: Case) -> None:
    start = START[case.phase]
    if case.raises:
        with pytest.raises(ConnUsageError, match=r"latest dial issued is 0 "):
            step(SETTINGS, start, case.event)
        return
    new, effects = step(SETTINGS, start, case.event)
    assert effects == case.effects
    assert new == (case.state if case.state is not None else start)
    check_state(new)
    # Pure: the same input gives the same output again.
    assert step(SETTINGS, start, case.event) == (new, effects)


def test_the_table_covers_every_phase_and_event_pair() -> None:
    event_types = set(typing.get_args(Event))
    covered = {(case.phase, type(case.event)) for case in CASES}
    missing = {(p, e.__name__) for p in ConnPhase for e in event_types if (p, e) not in covered}
    assert not missing
    assert len(event_types) == 7


def test_ids_never_issued_are_driver_bugs() -> None:
    for phase in ConnPhase:
        start = START[phase]
        for event in (
            Connected(now=T, dial_id=start.dial_id + 1),
            ConnectFailed(now=T, dial_id=start.dial_id + 1, jitter=0.0),
            ConnectionLost(now=T, dial_id=0, jitter=0.0),
        ):
            with pytest.raises(ConnUsageError, match=r"dial_id=\d+, but the latest dial"):
                step(SETTINGS, start, event)


def test_the_usage_error_names_the_event_and_the_peer() -> None:
    with pytest.raises(ConnUsageError) as info:
        step(SETTINGS, START[CONNECTING], Connected(now=T, dial_id=9))
    assert str(info.value) == (
        "Connected for dial_id=9, but the latest dial issued is 2 (addresses a:1, b:2)"
    )
