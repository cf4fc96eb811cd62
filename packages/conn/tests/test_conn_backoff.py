"""Backoff growth, cap, jitter and reset; settings validation; the helpers around ``step``."""

from __future__ import annotations

import pytest

from parakoon_conn import (
    Close,
    CloseSocket,
    Connected,
    ConnectFailed,
    ConnectionLost,
    ConnectRequested,
    ConnMachine,
    ConnPhase,
    ConnSettings,
    ConnSettingsError,
    ConnState,
    ConnUsageError,
    Dial,
    Effect,
    Event,
    FlushQueued,
    SendDisposition,
    SendRequested,
    StartTimer,
    StateChanged,
    Tick,
    backoff_delay_secs,
    check_state,
    initial_state,
    send_disposition,
    step,
)

SETTINGS = ConnSettings(
    backoff_secs_min=0.5,
    backoff_secs_max=10.0,
    backoff_multiplier=2.0,
    backoff_jitter_ratio=0.5,
    stable_after_secs=30.0,
    connect_timeout_secs=1.0,
)


# -- the delay formula -----------------------------------------------------------------------


def test_the_ceiling_doubles_per_failure_until_the_cap() -> None:
    # jitter 0 waits the whole ceiling: 0.5 * 2**n, capped at 10
    assert [backoff_delay_secs(SETTINGS, n, 0.0) for n in range(1, 8)] == [
        1.0,
        2.0,
        4.0,
        8.0,
        10.0,
        10.0,
        10.0,
    ]


def test_jitter_takes_off_up_to_the_ratio_but_never_goes_below_the_floor() -> None:
    assert backoff_delay_secs(SETTINGS, 3, 0.5) == 4.0 * (1 - 0.25)
    assert backoff_delay_secs(SETTINGS, 3, 0.999) == pytest.approx(2.0, rel=1e-3)
    # failure 1: ceiling 1.0, at most half of it comes off, which stays above the 0.5 floor
    assert backoff_delay_secs(SETTINGS, 1, 0.999) == pytest.approx(0.5005)
    wide = ConnSettings(backoff_secs_min=0.5, backoff_jitter_ratio=1.0)
    assert backoff_delay_secs(wide, 1, 0.9) == 0.5  # 1.0 * 0.1 clamps to the floor
    none = ConnSettings(backoff_jitter_ratio=0.0)
    assert {backoff_delay_secs(none, 2, j) for j in (0.0, 0.3, 0.99)} == {0.4}


def test_jitter_spreads_peers_that_failed_together() -> None:
    delays = [backoff_delay_secs(SETTINGS, 4, j / 10) for j in range(10)]
    assert len(set(delays)) == 10
    assert all(4.0 <= d <= 8.0 for d in delays)
    assert delays == sorted(delays, reverse=True)


def test_huge_failure_counts_stay_at_the_cap() -> None:
    assert backoff_delay_secs(SETTINGS, 10_000, 0.0) == 10.0
    steep = ConnSettings(backoff_multiplier=1e6, backoff_secs_max=60.0)
    assert backoff_delay_secs(steep, 400, 0.0) == 60.0  # 1e6**400 overflows a float


def test_a_multiplier_of_one_means_a_constant_delay() -> None:
    flat = ConnSettings(backoff_secs_min=0.2, backoff_multiplier=1.0, backoff_jitter_ratio=0.0)
    assert {backoff_delay_secs(flat, n, 0.5) for n in (1, 5, 50)} == {0.2}


@pytest.mark.parametrize("jitter", [-0.1, 1.0, 1.5, float("nan")])
def test_jitter_outside_the_unit_interval_is_refused(jitter: float) -> None:
    with pytest.raises(ConnUsageError, match=r"jitter=.* must be in \[0, 1\)"):
        backoff_delay_secs(SETTINGS, 1, jitter)
    # ... also when it arrives on an event that starts a backoff
    connecting, _ = step(SETTINGS, initial_state(["h:1"]), ConnectRequested(now=0.0))
    with pytest.raises(ConnUsageError, match="jitter"):
        step(SETTINGS, connecting, ConnectFailed(now=0.1, dial_id=1, jitter=jitter))


def test_failures_must_be_positive() -> None:
    with pytest.raises(ConnUsageError, match="failures=0"):
        backoff_delay_secs(SETTINGS, 0, 0.0)


# -- backoff through the machine -------------------------------------------------------------


class Driver:
    """Feeds events to one machine and keeps its state; the tests read effects off it."""

    def __init__(self, settings: ConnSettings = SETTINGS, addresses: tuple[str, ...] = ("h:1",)):
        self.settings = settings
        self.state = initial_state(addresses)
        self.now = 0.0

    def feed(self, event: Event) -> tuple[Effect, ...]:
        self.state, effects = step(self.settings, self.state, event)
        check_state(self.state)
        return effects

    def fail_current_dial(self, jitter: float = 0.0) -> float:
        """Fail the dial in flight; return the backoff delay the machine chose."""
        effects = self.feed(ConnectFailed(now=self.now, dial_id=self.state.dial_id, jitter=jitter))
        timers = [e for e in effects if isinstance(e, StartTimer)]
        assert len(timers) == 1
        return timers[0].deadline - self.now

    def wait_out_backoff(self) -> tuple[Effect, ...]:
        assert self.state.phase is ConnPhase.BACKING_OFF
        self.now = self.state.deadline
        return self.feed(Tick(now=self.now, jitter=0.0))


def test_consecutive_failures_grow_the_delay_to_the_cap() -> None:
    driver = Driver()
    driver.feed(ConnectRequested(now=0.0))
    delays = []
    for _ in range(7):
        delays.append(driver.fail_current_dial())
        effects = driver.wait_out_backoff()
        assert any(isinstance(e, Dial) for e in effects)
    assert delays == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0, 10.0]
    assert driver.state.failures == 7


def test_connect_timeouts_count_as_failures() -> None:
    driver = Driver()
    driver.feed(ConnectRequested(now=0.0))
    delays = []
    for _ in range(3):
        driver.now = driver.state.deadline  # the connect timeout
        effects = driver.feed(Tick(now=driver.now, jitter=0.0))
        assert effects[0] == CloseSocket(dial_id=driver.state.dial_id)
        delays.append(effects[-1].deadline - driver.now)  # type: ignore[union-attr]
        driver.wait_out_backoff()
    assert delays == [1.0, 2.0, 4.0]


def test_a_short_lived_connection_does_not_reset_the_backoff() -> None:
    driver = Driver()
    driver.feed(ConnectRequested(now=0.0))
    driver.fail_current_dial()
    driver.wait_out_backoff()
    driver.feed(Connected(now=driver.now, dial_id=driver.state.dial_id))
    driver.now += 29.9  # just short of stable_after_secs
    effects = driver.feed(ConnectionLost(now=driver.now, dial_id=driver.state.dial_id, jitter=0))
    assert effects[-1] == StartTimer(deadline=driver.now + 2.0)  # failure 2
    assert driver.state.failures == 2


def test_a_stable_connection_resets_the_backoff_when_it_drops() -> None:
    driver = Driver()
    driver.feed(ConnectRequested(now=0.0))
    for _ in range(4):
        driver.fail_current_dial()
        driver.wait_out_backoff()
    driver.feed(Connected(now=driver.now, dial_id=driver.state.dial_id))
    assert driver.state.failures == 4  # connecting alone proves little
    driver.now += 30.0
    effects = driver.feed(ConnectionLost(now=driver.now, dial_id=driver.state.dial_id, jitter=0))
    assert effects[-1] == StartTimer(deadline=driver.now + 1.0)  # failure 1 again
    assert driver.state.failures == 1


def test_a_tick_while_stably_connected_resets_the_failures() -> None:
    driver = Driver()
    driver.feed(ConnectRequested(now=0.0))
    driver.fail_current_dial()
    driver.wait_out_backoff()
    driver.feed(Connected(now=driver.now, dial_id=driver.state.dial_id))
    assert driver.feed(Tick(now=driver.now + 29.0, jitter=0.0)) == ()
    assert driver.state.failures == 1
    assert driver.feed(Tick(now=driver.now + 30.0, jitter=0.0)) == ()
    assert driver.state.failures == 0


def test_dials_take_the_addresses_in_turn() -> None:
    driver = Driver(addresses=("10.0.0.1:4010", "10.0.0.2:4010", "10.0.0.3:4010"))
    dialled = [e for e in driver.feed(ConnectRequested(now=0.0)) if isinstance(e, Dial)]
    for _ in range(4):
        driver.fail_current_dial()
        dialled += [e for e in driver.wait_out_backoff() if isinstance(e, Dial)]
    assert [d.address for d in dialled] == [
        "10.0.0.1:4010",
        "10.0.0.2:4010",
        "10.0.0.3:4010",
        "10.0.0.1:4010",
        "10.0.0.2:4010",
    ]
    assert [d.dial_id for d in dialled] == [1, 2, 3, 4, 5]


def test_a_dial_that_succeeds_after_its_timeout_is_closed_not_used() -> None:
    driver = Driver()
    driver.feed(ConnectRequested(now=0.0))
    driver.now = 1.0
    driver.feed(Tick(now=1.0, jitter=0.0))  # timed out: backing off until 2.0
    assert driver.feed(Connected(now=1.5, dial_id=1)) == (CloseSocket(dial_id=1),)
    assert driver.state.phase is ConnPhase.BACKING_OFF
    driver.wait_out_backoff()
    assert driver.feed(Connected(now=2.1, dial_id=1)) == (CloseSocket(dial_id=1),)
    assert driver.feed(Connected(now=2.2, dial_id=2)) == (
        StateChanged(old=ConnPhase.CONNECTING, new=ConnPhase.CONNECTED, reason="connected"),
        FlushQueued(dial_id=2),
    )


# -- send disposition, the wrapper, initial state, settings -----------------------------------


def test_send_disposition_follows_the_phase() -> None:
    machine = ConnMachine(["h:1"], SETTINGS)
    seen = [machine.send_disposition()]
    machine.handle(SendRequested(now=0.0))
    seen.append(machine.send_disposition())
    machine.handle(ConnectFailed(now=0.1, dial_id=1, jitter=0.0))
    seen.append(machine.send_disposition())
    machine.handle(Tick(now=10.0, jitter=0.0))
    machine.handle(Connected(now=10.1, dial_id=2))
    seen.append(machine.send_disposition())
    machine.handle(Close(now=11.0))
    seen.append(send_disposition(machine.state))
    assert seen == [
        SendDisposition.QUEUE,
        SendDisposition.QUEUE,
        SendDisposition.QUEUE,
        SendDisposition.WRITE_NOW,
        SendDisposition.REJECT,
    ]
    assert machine.phase is ConnPhase.CLOSED
    assert repr(machine).startswith("ConnMachine(ConnState(phase=<ConnPhase.CLOSED")


def test_the_machine_wrapper_defaults_its_settings() -> None:
    machine = ConnMachine("127.0.0.1:4010")
    assert machine.settings == ConnSettings()
    assert machine.handle(ConnectRequested(now=5.0)) == (
        StateChanged(old=ConnPhase.IDLE, new=ConnPhase.CONNECTING, reason="connect requested"),
        Dial(dial_id=1, address="127.0.0.1:4010"),
        StartTimer(deadline=5.0 + ConnSettings().connect_timeout_secs),
    )


@pytest.mark.parametrize("addresses", [[], [""], [b"h:1"], ["h:1", 7]])
def test_initial_state_needs_addresses(addresses: list[object]) -> None:
    with pytest.raises(ConnUsageError, match="need one or more 'host:port' strings"):
        initial_state(addresses)  # type: ignore[arg-type]


def test_initial_state_takes_one_address_as_a_string() -> None:
    assert initial_state("h:1") == ConnState(phase=ConnPhase.IDLE, addresses=("h:1",))


def test_default_settings_are_sensible() -> None:
    defaults = ConnSettings()
    assert 0 < defaults.backoff_secs_min <= defaults.backoff_secs_max
    assert defaults.backoff_multiplier >= 1
    assert defaults.connect_timeout_secs > 0


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"backoff_secs_min": 0.0}, "ConnSettings.backoff_secs_min=0.0: must be > 0"),
        (
            {"backoff_secs_min": 2.0, "backoff_secs_max": 1.0},
            "ConnSettings.backoff_secs_max=1.0: must be >= backoff_secs_min=2.0",
        ),
        ({"backoff_multiplier": 0.5}, "ConnSettings.backoff_multiplier=0.5: must be >= 1"),
        ({"backoff_jitter_ratio": 1.5}, r"ConnSettings.backoff_jitter_ratio=1.5: must be in"),
        ({"stable_after_secs": -1}, "ConnSettings.stable_after_secs=-1: must be >= 0"),
        ({"connect_timeout_secs": 0}, "ConnSettings.connect_timeout_secs=0: must be > 0"),
        ({"backoff_secs_max": float("inf")}, "ConnSettings.backoff_secs_max=inf: must be finite"),
        ({"stable_after_secs": float("nan")}, "stable_after_secs=nan: must be finite"),
        ({"backoff_secs_min": "1"}, "ConnSettings.backoff_secs_min='1': must be a number"),
        ({"connect_timeout_secs": True}, "connect_timeout_secs=True: must be a number"),
    ],
)
def test_bad_settings_name_the_setting(fields: dict[str, object], message: str) -> None:
    with pytest.raises(ConnSettingsError, match=message.replace("[", r"\[")):
        ConnSettings(**fields)  # type: ignore[arg-type]


def test_a_closed_link_stays_closed() -> None:
    driver = Driver()
    driver.feed(SendRequested(now=0.0))
    driver.feed(Close(now=0.5))
    closed = driver.state
    for event in (
        ConnectRequested(now=1.0),
        SendRequested(now=1.0),
        Tick(now=1e6, jitter=0.0),
        ConnectFailed(now=1.0, dial_id=1, jitter=0.0),
        ConnectionLost(now=1.0, dial_id=1, jitter=0.0),
        Close(now=2.0),
    ):
        assert driver.feed(event) == ()
        assert driver.state == closed
