"""The connection state machine of one outgoing peer link: rules, events and effects.

Theory of operation
-------------------

A node keeps one outgoing TCP link to every peer. This module decides *when* that link should
dial, give up, wait and dial again; the driver (``parakoon_node``) does the dialling, the
writing and the timing. The machine is a pure function::

    step(settings, state, event) -> (new_state, effects)

It reads no clock and draws no random numbers: the current time arrives as ``now`` (seconds on
a monotonic clock, never decreasing) on every event, and the jitter that spreads out reconnect
attempts arrives as ``jitter`` (a number in [0, 1) the driver drew from its own generator) on
every event that can start a backoff. Given the same events the machine gives the same effects,
which is what the deterministic simulator needs.

Phases. ``IDLE`` (never dialled) -> ``CONNECTING`` (a dial is in flight) -> ``CONNECTED``; a dial
that fails, times out, or a connection that drops leads to ``BACKING_OFF``, which dials again
when its timer expires. ``CLOSED`` is terminal and reachable from every phase by ``Close``.

Dial ids. Every dial gets the next id (1, 2, ...) and the driver quotes that id back on
``Connected``, ``ConnectFailed`` and ``ConnectionLost``. Dials and sockets live in other tasks,
so their results race with timeouts and ``Close``; an event about an older dial is *stale* and
changes nothing, except that a late ``Connected`` for a dial nobody wants any more gets a
``CloseSocket`` so that the socket it produced is not leaked. An id the machine never issued is
a driver bug and raises :class:`ConnUsageError`.

Backoff. The n-th consecutive failure (n >= 1) waits a delay between ``max(floor, c * (1 - r))``
and ``c``, where ``c = min(cap, floor * multiplier**n)``, ``r`` is ``backoff_jitter_ratio``, and
the jitter picks the point (jitter 0 waits ``c``, jitter close to 1 waits the least). So every
delay lies in ``[backoff_secs_min, backoff_secs_max]``, the upper end doubles per failure (with
the default multiplier) until it reaches the cap, and peers that failed together do not all
retry together. A connect timeout counts as a failure. The failure count goes back to zero
once a connection has stayed up for ``stable_after_secs``: it is checked when the connection
drops (and by any ``Tick`` while connected), so a peer that accepts and then drops at once keeps
backing off harder, while one that was up for a while is retried at the floor.

Liveness. The machine does not time out a silent but open connection. Outgoing peer links only
write; a peer that stops reading shows up as a write error or a reset (``ConnectionLost``),
and a dead host as TCP keepalive failing. Whether the *peer* is alive is a Paxos question
(leases, missed promises), answered by the consensus core, which has its own timers.

Transition table
----------------

Rows are phases, columns events; ``-`` means "no change, no effects". ``stale`` is a result for
an older dial (see above). Effects are listed in the order they are returned.

==============  ==================  ==================  ==================  ==================
phase           ConnectRequested,   Connected           ConnectFailed       ConnectionLost
                SendRequested
==============  ==================  ==================  ==================  ==================
IDLE            -> CONNECTING:      (no dial issued:    (no dial issued:    (no dial issued:
                StateChanged,       ConnUsageError)     ConnUsageError)     ConnUsageError)
                Dial, StartTimer
CONNECTING      Send: -             current: ->         current: ->         -
                Connect: -          CONNECTED:          BACKING_OFF:
                                    StateChanged,       StateChanged,
                                    FlushQueued;        StartTimer
                                    stale: CloseSocket
CONNECTED       Send: FlushQueued   current: -          -                   current: ->
                Connect: -          (duplicate);                            BACKING_OFF:
                                    stale: CloseSocket                      CloseSocket,
                                                                            StateChanged,
                                                                            StartTimer
BACKING_OFF     -                   CloseSocket         -                   -
CLOSED          -                   CloseSocket         -                   -
==============  ==================  ==================  ==================  ==================

==============  ============================================  ===============================
phase           Tick                                          Close
==============  ============================================  ===============================
IDLE            -                                             -> CLOSED: StateChanged
CONNECTING      now >= deadline: timed out -> BACKING_OFF:    -> CLOSED: CloseSocket,
                CloseSocket, StateChanged, StartTimer         StateChanged
CONNECTED       up for stable_after_secs: reset failures      -> CLOSED: CloseSocket,
                (no effects)                                  StateChanged
BACKING_OFF     now >= deadline: -> CONNECTING:               -> CLOSED: StateChanged
                StateChanged, Dial, StartTimer
CLOSED          -                                             -
==============  ============================================  ===============================

``ConnectRequested`` while backing off does not cut the backoff short: the point of backing off
is to not hammer a peer, and a caller that asks again is not evidence that the peer is back.

Effect contract
---------------

The driver carries out the effects of one step in the order given, before it feeds the next
event. Each step returns teardown effects first, then ``StateChanged``, then what the new phase
needs; so a socket is always closed before a new dial starts.

* ``CloseSocket(dial_id)``: close the socket of that dial, or abandon (cancel) the dial if it is
  still in flight. It must not block the driver; a socket already closed is fine.
* ``StateChanged(old, new, reason)``: report the transition (log line, metrics). Purely
  informational; nothing depends on it being acted upon.
* ``Dial(dial_id, address)``: start connecting to ``address`` ("host:port") in the background
  and later feed exactly one of ``Connected(dial_id)`` or ``ConnectFailed(dial_id)`` unless the
  dial was abandoned by a ``CloseSocket(dial_id)``. Multiple addresses of a peer are tried in
  turn, one per dial.
* ``StartTimer(deadline)``: make sure a ``Tick`` with ``now >= deadline`` arrives soon after the
  deadline. There is one timer per machine: a new ``StartTimer`` replaces the previous one.
  Extra ticks at any time are harmless, so a driver may instead tick all its links periodically.
* ``FlushQueued(dial_id)``: the connection of ``dial_id`` is up; write the frames queued for
  this peer to it, oldest first (in the node a sender task drains the peer's ``LeakyQueue``;
  ``FlushQueued`` is its cue to start). After a ``SendRequested`` while connected it means the
  same, and a driver whose sender task is already draining may ignore it.

While connected, a driver whose write fails or whose peer closes feeds ``ConnectionLost``.
Before writing a frame it may ask :func:`send_disposition`: ``WRITE_NOW`` when connected,
``QUEUE`` while idle, connecting or backing off, ``REJECT`` once closed.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Final, TypeAlias, assert_never

__all__ = [
    "Close",
    "CloseSocket",
    "ConnError",
    "ConnMachine",
    "ConnPhase",
    "ConnSettings",
    "ConnSettingsError",
    "ConnState",
    "ConnUsageError",
    "ConnectFailed",
    "ConnectRequested",
    "Connected",
    "ConnectionLost",
    "Dial",
    "Effect",
    "Event",
    "FlushQueued",
    "SendDisposition",
    "SendRequested",
    "StartTimer",
    "StateChanged",
    "Tick",
    "backoff_delay_secs",
    "check_state",
    "initial_state",
    "send_disposition",
    "step",
]


# -- errors ---------------------------------------------------------------------------------------


class ConnError(Exception):
    """Base class of the errors this package raises."""


class ConnSettingsError(ConnError, ValueError):
    """A :class:`ConnSettings` value is out of range; the message names the setting."""


class ConnUsageError(ConnError, ValueError):
    """The driver fed an event that cannot be right: a dial id never issued, jitter out of range,
    no addresses. Like h11's ``LocalProtocolError``: the caller misused the machine."""


# -- settings, phases, state -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnSettings:
    """The knobs of every link's machine; one instance is shared by all links of a node."""

    #: Floor of every backoff delay.
    backoff_secs_min: float = 0.1
    #: Cap of every backoff delay. Well under a Paxos lease period (2 s by default) would make
    #: a returning peer rejoin quickly; a few lease periods keeps a dead peer from costing much.
    backoff_secs_max: float = 5.0
    #: Growth of the backoff ceiling per consecutive failure.
    backoff_multiplier: float = 2.0
    #: How much of the ceiling the jitter may take off: 0 disables jitter, 1 spreads delays
    #: over [floor, ceiling]. The default keeps every delay in [ceiling / 2, ceiling].
    backoff_jitter_ratio: float = 0.5
    #: A connection that stayed up this long resets the failure count when it drops.
    stable_after_secs: float = 10.0
    #: A dial still pending after this long counts as failed.
    connect_timeout_secs: float = 2.0

    def __post_init__(self) -> None:
        def fail(name: str, rule: str) -> ConnSettingsError:
            return ConnSettingsError(f"ConnSettings.{name}={getattr(self, name)!r}: {rule}")

        for name in (
            "backoff_secs_min",
            "backoff_secs_max",
            "backoff_multiplier",
            "backoff_jitter_ratio",
            "stable_after_secs",
            "connect_timeout_secs",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise fail(name, "must be a number")
            if not math.isfinite(value):
                raise fail(name, "must be finite")
        if self.backoff_secs_min <= 0:
            raise fail("backoff_secs_min", "must be > 0")
        if self.backoff_secs_max < self.backoff_secs_min:
            raise fail("backoff_secs_max", f"must be >= backoff_secs_min={self.backoff_secs_min}")
        if self.backoff_multiplier < 1:
            raise fail("backoff_multiplier", "must be >= 1")
        if not 0 <= self.backoff_jitter_ratio <= 1:
            raise fail("backoff_jitter_ratio", "must be in [0, 1]")
        if self.stable_after_secs < 0:
            raise fail("stable_after_secs", "must be >= 0")
        if self.connect_timeout_secs <= 0:
            raise fail("connect_timeout_secs", "must be > 0")


class ConnPhase(enum.Enum):
    """Where a link is in its life."""

    IDLE = "idle"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    BACKING_OFF = "backing_off"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnState:
    """The whole state of one link's machine. Build the first one with :func:`initial_state`."""

    phase: ConnPhase
    #: The peer's addresses ("host:port"), tried in turn, one per dial.
    addresses: tuple[str, ...]
    #: Id of the latest dial; 0 before the first one.
    dial_id: int = 0
    #: CONNECTING: when the dial times out. BACKING_OFF: when to dial again. Otherwise 0.
    deadline: float = 0.0
    #: CONNECTED: when the connection came up. Otherwise 0.
    connected_since: float = 0.0
    #: Consecutive failures since the last stable connection.
    failures: int = 0


class SendDisposition(enum.Enum):
    """What the driver should do with a frame it wants to send to this peer right now."""

    #: Connected: write it (or let the sender task do so).
    WRITE_NOW = "write_now"
    #: Not connected yet or for the moment: queue it; the queue's bound drops what is too old.
    QUEUE = "queue"
    #: The link is closed for good: drop it.
    REJECT = "reject"


# -- events (driver -> machine) ------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectRequested:
    """Connect now if never connected (a node dials its peers eagerly at start)."""

    now: float


@dataclass(frozen=True, slots=True, kw_only=True)
class Connected:
    """The dial ``dial_id`` produced an open socket."""

    now: float
    dial_id: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectFailed:
    """The dial ``dial_id`` failed (refused, unreachable, ...)."""

    now: float
    dial_id: int
    #: In [0, 1): where in the backoff window the next attempt lands.
    jitter: float
    reason: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectionLost:
    """The connection of ``dial_id`` broke (write error, reset, EOF from the peer)."""

    now: float
    dial_id: int
    #: In [0, 1): where in the backoff window the next attempt lands.
    jitter: float
    reason: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class SendRequested:
    """A frame for this peer was queued. Dials lazily if the link was never used."""

    now: float


@dataclass(frozen=True, slots=True, kw_only=True)
class Tick:
    """Time passed. Carries jitter because a connect timeout starts a backoff."""

    now: float
    #: In [0, 1): used only if this tick times out a pending dial.
    jitter: float


@dataclass(frozen=True, slots=True, kw_only=True)
class Close:
    """Shut the link down for good."""

    now: float


Event: TypeAlias = (
    ConnectRequested | Connected | ConnectFailed | ConnectionLost | SendRequested | Tick | Close
)


# -- effects (machine -> driver); see "Effect contract" above ------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Dial:
    """Start connecting to ``address``; report back quoting ``dial_id``."""

    dial_id: int
    address: str


@dataclass(frozen=True, slots=True, kw_only=True)
class CloseSocket:
    """Close the socket of ``dial_id``, or abandon that dial if it is still in flight."""

    dial_id: int


@dataclass(frozen=True, slots=True, kw_only=True)
class StartTimer:
    """Deliver a ``Tick`` with ``now >= deadline``; replaces any earlier timer."""

    deadline: float


@dataclass(frozen=True, slots=True, kw_only=True)
class FlushQueued:
    """The connection of ``dial_id`` is up: write the queued frames to it."""

    dial_id: int


@dataclass(frozen=True, slots=True, kw_only=True)
class StateChanged:
    """The phase changed; for logs and metrics."""

    old: ConnPhase
    new: ConnPhase
    reason: str


Effect: TypeAlias = Dial | CloseSocket | StartTimer | FlushQueued | StateChanged


# -- the rules -----------------------------------------------------------------------------------

# Phases are compared with ``is`` against these aliases rather than matched as ``ConnPhase.X``
# value patterns: on Python 3.11 every ``ConnPhase.X`` lookup goes through the enum's member
# descriptor and costs about ten times a global read, and step() is on the path of every frame
# and tick. mypy narrows ``phase is _X`` on Final aliases just as it narrows a match, so every
# handler still ends in ``assert_never`` and a new phase cannot be forgotten.
_IDLE: Final = ConnPhase.IDLE
_CONNECTING: Final = ConnPhase.CONNECTING
_CONNECTED: Final = ConnPhase.CONNECTED
_BACKING_OFF: Final = ConnPhase.BACKING_OFF
_CLOSED: Final = ConnPhase.CLOSED

# Steps that change nothing return this one tuple instead of building an empty one each time.
_NO_EFFECTS: tuple[Effect, ...] = ()


def initial_state(addresses: Sequence[str]) -> ConnState:
    """The state of a link that has never dialled.

    :raises ConnUsageError: if ``addresses`` is empty or holds a non-string.
    """
    if isinstance(addresses, str):
        # A lone "host:port" would otherwise be split into characters.
        addresses = (addresses,)
    found = tuple(addresses)
    # The isinstance check guards callers outside the type checker (a config loader's output).
    if not found or any(type(address) is not str or address == "" for address in found):
        raise ConnUsageError(f"initial_state: need one or more 'host:port' strings, got {found!r}")
    return ConnState(phase=_IDLE, addresses=found)


def backoff_delay_secs(settings: ConnSettings, failures: int, jitter: float) -> float:
    """The delay before the next dial after ``failures`` (>= 1) consecutive failures.

    Always within ``[settings.backoff_secs_min, settings.backoff_secs_max]``; see the module's
    "Backoff" paragraph for the formula.

    :raises ConnUsageError: if ``jitter`` is outside [0, 1) or ``failures`` < 1.
    """
    if not 0.0 <= jitter < 1.0:  # also rejects NaN
        raise ConnUsageError(f"jitter={jitter!r} must be in [0, 1)")
    if failures < 1:
        raise ConnUsageError(f"failures={failures!r} must be >= 1")
    floor = settings.backoff_secs_min
    cap = settings.backoff_secs_max
    try:
        ceiling = floor * settings.backoff_multiplier**failures
    except OverflowError:
        ceiling = cap
    ceiling = min(ceiling, cap)
    delay = ceiling * (1.0 - settings.backoff_jitter_ratio * jitter)
    return delay if delay > floor else floor


def send_disposition(state: ConnState) -> SendDisposition:
    """Whether a frame for this peer should be written now, queued, or dropped."""
    phase = state.phase
    if phase is _CONNECTED:
        return SendDisposition.WRITE_NOW
    if phase is _CLOSED:
        return SendDisposition.REJECT
    return SendDisposition.QUEUE


def step(
    settings: ConnSettings, state: ConnState, event: Event
) -> tuple[ConnState, tuple[Effect, ...]]:
    """Apply one event; return the new state and the effects to carry out, in order.

    Pure: the same arguments always give the same result, and ``state`` is not modified.

    :raises ConnUsageError: for a dial id the machine never issued or jitter outside [0, 1).
    """
    # Ordered by how often each event arrives: ticks and sends dominate.
    match event:
        case Tick():
            return _on_tick(settings, state, event)
        case SendRequested():
            return _on_send_requested(settings, state, event)
        case ConnectRequested():
            return _on_connect_requested(settings, state, event)
        case Connected():
            return _on_connected(state, event)
        case ConnectFailed():
            return _on_connect_failed(settings, state, event)
        case ConnectionLost():
            return _on_connection_lost(settings, state, event)
        case Close():
            return _on_close(state)
        case _:
            assert_never(event)


def _check_dial_id(state: ConnState, dial_id: int, event: Event) -> None:
    if not 1 <= dial_id <= state.dial_id:
        raise ConnUsageError(
            f"{type(event).__name__} for dial_id={dial_id}, but the latest dial issued is "
            f"{state.dial_id} (addresses {', '.join(state.addresses)})"
        )


def _dial(
    settings: ConnSettings, state: ConnState, now: float, reason: str
) -> tuple[ConnState, tuple[Effect, ...]]:
    """Enter CONNECTING with a fresh dial id; the next address in turn; arm the timeout."""
    dial_id = state.dial_id + 1
    addresses = state.addresses
    deadline = now + settings.connect_timeout_secs
    new = ConnState(
        phase=_CONNECTING,
        addresses=addresses,
        dial_id=dial_id,
        deadline=deadline,
        failures=state.failures,
    )
    return new, (
        StateChanged(old=state.phase, new=_CONNECTING, reason=reason),
        Dial(dial_id=dial_id, address=addresses[(dial_id - 1) % len(addresses)]),
        StartTimer(deadline=deadline),
    )


def _back_off(
    settings: ConnSettings,
    state: ConnState,
    *,
    now: float,
    jitter: float,
    failures_before: int,
    teardown: tuple[Effect, ...],
    why: str,
) -> tuple[ConnState, tuple[Effect, ...]]:
    """Count one more failure and enter BACKING_OFF until the backoff delay has passed."""
    failures = failures_before + 1
    delay = backoff_delay_secs(settings, failures, jitter)
    deadline = now + delay
    new = ConnState(
        phase=_BACKING_OFF,
        addresses=state.addresses,
        dial_id=state.dial_id,
        deadline=deadline,
        failures=failures,
    )
    reason = f"{why}; failure {failures}, next dial in {delay:.3f}s"
    return new, (
        *teardown,
        StateChanged(old=state.phase, new=_BACKING_OFF, reason=reason),
        StartTimer(deadline=deadline),
    )


def _is_stable(settings: ConnSettings, state: ConnState, now: float) -> bool:
    return now - state.connected_since >= settings.stable_after_secs


def _on_tick(
    settings: ConnSettings, state: ConnState, event: Tick
) -> tuple[ConnState, tuple[Effect, ...]]:
    phase = state.phase
    if phase is _CONNECTED:
        if state.failures and _is_stable(settings, state, event.now):
            return replace(state, failures=0), _NO_EFFECTS
        return state, _NO_EFFECTS
    if phase is _CONNECTING:
        if event.now < state.deadline:
            return state, _NO_EFFECTS
        return _back_off(
            settings,
            state,
            now=event.now,
            jitter=event.jitter,
            failures_before=state.failures,
            teardown=(CloseSocket(dial_id=state.dial_id),),
            why=f"connect timed out after {settings.connect_timeout_secs}s",
        )
    if phase is _BACKING_OFF:
        if event.now < state.deadline:
            return state, _NO_EFFECTS
        return _dial(settings, state, event.now, "backoff elapsed")
    if phase is _IDLE or phase is _CLOSED:
        return state, _NO_EFFECTS
    assert_never(phase)


def _on_send_requested(
    settings: ConnSettings, state: ConnState, event: SendRequested
) -> tuple[ConnState, tuple[Effect, ...]]:
    phase = state.phase
    if phase is _CONNECTED:
        return state, (FlushQueued(dial_id=state.dial_id),)
    if phase is _IDLE:
        return _dial(settings, state, event.now, "send requested")
    if phase is _CONNECTING or phase is _BACKING_OFF or phase is _CLOSED:
        # Connecting or backing off: the frame waits in the queue for the connection.
        # Closed: the driver should have asked send_disposition() and dropped it.
        return state, _NO_EFFECTS
    assert_never(phase)


def _on_connect_requested(
    settings: ConnSettings, state: ConnState, event: ConnectRequested
) -> tuple[ConnState, tuple[Effect, ...]]:
    phase = state.phase
    if phase is _IDLE:
        return _dial(settings, state, event.now, "connect requested")
    if phase is _CONNECTING or phase is _CONNECTED or phase is _BACKING_OFF or phase is _CLOSED:
        # Already on its way, already there, deliberately waiting, or gone for good.
        return state, _NO_EFFECTS
    assert_never(phase)


def _on_connected(state: ConnState, event: Connected) -> tuple[ConnState, tuple[Effect, ...]]:
    _check_dial_id(state, event.dial_id, event)
    phase = state.phase
    current = event.dial_id == state.dial_id
    if phase is _CONNECTING and current:
        new = ConnState(
            phase=_CONNECTED,
            addresses=state.addresses,
            dial_id=state.dial_id,
            connected_since=event.now,
            failures=state.failures,
        )
        return new, (
            StateChanged(old=_CONNECTING, new=_CONNECTED, reason="connected"),
            FlushQueued(dial_id=state.dial_id),
        )
    if phase is _CONNECTED and current:
        # Reported twice; the socket is the live one, so closing it would be the wrong fix.
        return state, _NO_EFFECTS
    if (
        phase is _IDLE
        or phase is _CONNECTING
        or phase is _CONNECTED
        or phase is _BACKING_OFF
        or phase is _CLOSED
    ):
        # A dial we gave up on (timed out, superseded, or the link closed) succeeded after
        # all. Nobody will use that socket, so it must be closed rather than leaked.
        return state, (CloseSocket(dial_id=event.dial_id),)
    assert_never(phase)


def _on_connect_failed(
    settings: ConnSettings, state: ConnState, event: ConnectFailed
) -> tuple[ConnState, tuple[Effect, ...]]:
    _check_dial_id(state, event.dial_id, event)
    phase = state.phase
    if phase is _CONNECTING and event.dial_id == state.dial_id:
        why = f"connect failed: {event.reason}" if event.reason else "connect failed"
        return _back_off(
            settings,
            state,
            now=event.now,
            jitter=event.jitter,
            failures_before=state.failures,
            teardown=_NO_EFFECTS,
            why=why,
        )
    if (
        phase is _IDLE
        or phase is _CONNECTING
        or phase is _CONNECTED
        or phase is _BACKING_OFF
        or phase is _CLOSED
    ):
        # About an older dial: the machine already moved on (timeout, close, new dial).
        return state, _NO_EFFECTS
    assert_never(phase)


def _on_connection_lost(
    settings: ConnSettings, state: ConnState, event: ConnectionLost
) -> tuple[ConnState, tuple[Effect, ...]]:
    _check_dial_id(state, event.dial_id, event)
    phase = state.phase
    if phase is _CONNECTED and event.dial_id == state.dial_id:
        stable = _is_stable(settings, state, event.now)
        why = f"connection lost: {event.reason}" if event.reason else "connection lost"
        return _back_off(
            settings,
            state,
            now=event.now,
            jitter=event.jitter,
            # A connection that stayed up long enough proves the peer healthy again: start the
            # backoff from scratch rather than from where the last outage left it.
            failures_before=0 if stable else state.failures,
            teardown=(CloseSocket(dial_id=state.dial_id),),
            why=why,
        )
    if (
        phase is _IDLE
        or phase is _CONNECTING
        or phase is _CONNECTED
        or phase is _BACKING_OFF
        or phase is _CLOSED
    ):
        # About an older connection, already torn down when the machine moved on.
        return state, _NO_EFFECTS
    assert_never(phase)


def _on_close(state: ConnState) -> tuple[ConnState, tuple[Effect, ...]]:
    phase = state.phase
    teardown: tuple[Effect, ...]
    if phase is _CLOSED:
        return state, _NO_EFFECTS
    if phase is _IDLE or phase is _BACKING_OFF:
        teardown = _NO_EFFECTS
    elif phase is _CONNECTING or phase is _CONNECTED:
        teardown = (CloseSocket(dial_id=state.dial_id),)
    else:
        assert_never(phase)
    new = ConnState(
        phase=_CLOSED,
        addresses=state.addresses,
        dial_id=state.dial_id,
        failures=state.failures,
    )
    return new, (*teardown, StateChanged(old=phase, new=_CLOSED, reason="close requested"))


def check_state(state: ConnState) -> None:
    """Raise AssertionError if ``state`` breaks an invariant; tests call it after every step.

    Uses explicit raises rather than ``assert`` so that it also checks under ``python -O``.
    """

    def require(condition: bool, what: str) -> None:
        if not condition:
            raise AssertionError(f"{what}: {state!r}")

    require(len(state.addresses) >= 1, "a link needs an address")
    require(state.dial_id >= 0 and state.failures >= 0, "counters are never negative")
    match state.phase:
        case ConnPhase.IDLE:
            require(state.dial_id == 0 and state.failures == 0, "IDLE has never dialled")
            require(state.deadline == 0.0 and state.connected_since == 0.0, "IDLE has no times")
        case ConnPhase.CONNECTING:
            require(state.dial_id >= 1, "CONNECTING has a dial in flight")
            require(state.connected_since == 0.0, "CONNECTING is not connected")
        case ConnPhase.CONNECTED:
            require(state.dial_id >= 1, "CONNECTED came from a dial")
            require(state.deadline == 0.0, "CONNECTED has no deadline")
        case ConnPhase.BACKING_OFF:
            require(state.dial_id >= 1 and state.failures >= 1, "BACKING_OFF follows a failure")
            require(state.connected_since == 0.0, "BACKING_OFF is not connected")
        case ConnPhase.CLOSED:
            require(state.deadline == 0.0 and state.connected_since == 0.0, "CLOSED has no times")
        case _:
            assert_never(state.phase)


class ConnMachine:
    """A small mutable wrapper around :func:`step` for drivers that prefer an object.

    ``machine.handle(event)`` replaces ``machine.state`` and returns the effects to carry out.
    """

    __slots__ = ("settings", "state")

    def __init__(self, addresses: Sequence[str], settings: ConnSettings | None = None) -> None:
        self.settings = settings if settings is not None else ConnSettings()
        self.state = initial_state(addresses)

    def handle(self, event: Event) -> tuple[Effect, ...]:
        """Apply ``event``; return the effects, in the order the driver must carry them out."""
        self.state, effects = step(self.settings, self.state, event)
        return effects

    @property
    def phase(self) -> ConnPhase:
        return self.state.phase

    def send_disposition(self) -> SendDisposition:
        """See :func:`send_disposition`."""
        return send_disposition(self.state)

    def __repr__(self) -> str:
        return f"ConnMachine({self.state!r})"
