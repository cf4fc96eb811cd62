"""The retry rules, as pure functions: every (retry class, error) pair and the back-off."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from parakoon_client import errors
from parakoon_client.errors import ArakoonError, ArakoonNotConnected, ArakoonTimeout
from parakoon_client.policy import (
    COMMAND_RETRY,
    Backoff,
    Retry,
    Verdict,
    decide,
    makes_outcome_unknown,
)

A, D, U = Retry.ALWAYS, Retry.IDEMPOTENT_EXCEPT_NOT_FOUND, Retry.UNTIL_SENT
RAISE, RETRY, REDISCOVER, UNKNOWN = (
    Verdict.RAISE,
    Verdict.RETRY,
    Verdict.REDISCOVER,
    Verdict.OUTCOME_UNKNOWN,
)

NOT_SENT = ArakoonNotConnected("refused", node="n", request_sent=False)
SENT = ArakoonNotConnected("reset", node="n", request_sent=True)
TIMEOUT_SENT = ArakoonTimeout("slow", node="n", request_sent=True)
TIMEOUT_NOT_SENT = ArakoonTimeout("slow connect", node="n", request_sent=False)

# (error, verdict for ALWAYS, for delete, for UNTIL_SENT), with no unknown outcome before.
TABLE: list[tuple[ArakoonError, Verdict, Verdict, Verdict]] = [
    (errors.NotMaster("node_1"), REDISCOVER, REDISCOVER, REDISCOVER),
    (errors.GoingDown("closing socket"), REDISCOVER, REDISCOVER, REDISCOVER),
    (errors.MaxConnections("too many clients"), REDISCOVER, REDISCOVER, REDISCOVER),
    (errors.InconsistentRead("store not fresh enough"), RETRY, RETRY, RETRY),
    (errors.NoLongerMaster("lost"), REDISCOVER, REDISCOVER, UNKNOWN),
    (NOT_SENT, REDISCOVER, REDISCOVER, REDISCOVER),
    (TIMEOUT_NOT_SENT, REDISCOVER, REDISCOVER, REDISCOVER),
    (SENT, REDISCOVER, REDISCOVER, UNKNOWN),
    (TIMEOUT_SENT, REDISCOVER, REDISCOVER, UNKNOWN),
    (errors.NotFound("k"), RAISE, RAISE, RAISE),
    (errors.AssertionFailed("k"), RAISE, RAISE, RAISE),
    (errors.BadInput("no such function"), RAISE, RAISE, RAISE),
    (errors.UnknownFailure("unknown failure"), RAISE, RAISE, RAISE),
    (errors.ReadOnly("node_2"), RAISE, RAISE, RAISE),
    (errors.NotSupported("no"), RAISE, RAISE, RAISE),
    (errors.UnknownErrorCode("?", code=0x55), RAISE, RAISE, RAISE),
    (errors.ArakoonProtocolError("garbage"), RAISE, RAISE, RAISE),
    (errors.OutcomeUnknown("x", SENT), RAISE, RAISE, RAISE),
]


@pytest.mark.parametrize(("error", "always", "delete", "until_sent"), TABLE)
def test_verdicts(
    error: ArakoonError, always: Verdict, delete: Verdict, until_sent: Verdict
) -> None:
    assert decide(A, error, outcome_unknown_before=False) is always
    assert decide(D, error, outcome_unknown_before=False) is delete
    assert decide(U, error, outcome_unknown_before=False) is until_sent


def test_not_found_after_an_unknown_outcome_is_ambiguous_only_for_delete() -> None:
    nf = errors.NotFound("k")
    assert decide(D, nf, outcome_unknown_before=True) is UNKNOWN
    assert decide(A, nf, outcome_unknown_before=True) is RAISE
    # Other verdicts do not depend on the history.
    for error, always, delete, until_sent in TABLE:
        if isinstance(error, errors.NotFound):
            continue
        assert decide(A, error, outcome_unknown_before=True) is always
        assert decide(D, error, outcome_unknown_before=True) is delete
        assert decide(U, error, outcome_unknown_before=True) is until_sent


def test_which_errors_make_a_write_outcome_unknown() -> None:
    assert makes_outcome_unknown(SENT)
    assert makes_outcome_unknown(TIMEOUT_SENT)
    assert makes_outcome_unknown(errors.NoLongerMaster("x"))
    assert not makes_outcome_unknown(NOT_SENT)
    assert not makes_outcome_unknown(errors.NotMaster("node_0"))
    assert not makes_outcome_unknown(errors.NotFound("k"))


def test_non_idempotent_writes_are_never_retried_after_sending() -> None:
    for name in ("test_and_set", "replace", "delete_prefix", "user_function"):
        assert COMMAND_RETRY[name] is Retry.UNTIL_SENT
    assert COMMAND_RETRY["delete"] is Retry.IDEMPOTENT_EXCEPT_NOT_FOUND
    for name in ("get", "set", "who_master", "exists", "assert_", "confirm"):
        assert COMMAND_RETRY[name] is Retry.ALWAYS


def test_backoff_grows_then_caps() -> None:
    backoff = Backoff(backoff_secs_min=0.1, backoff_secs_max=1.0, jitter=0.5)
    no_jitter = [backoff.delay_secs(n, 0.0) for n in range(6)]
    assert no_jitter == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0])
    assert backoff.delay_secs(3, 1.0) == pytest.approx(0.4)
    assert backoff.delay_secs(10_000, 0.5) == pytest.approx(0.75)


@given(
    attempt=st.integers(min_value=0, max_value=10_000),
    uniform=st.floats(min_value=0.0, max_value=1.0),
    low=st.floats(min_value=1e-4, max_value=1.0),
    factor=st.floats(min_value=1.0, max_value=100.0),
    jitter=st.floats(min_value=0.0, max_value=1.0),
)
def test_backoff_stays_within_its_bounds(
    attempt: int, uniform: float, low: float, factor: float, jitter: float
) -> None:
    backoff = Backoff(backoff_secs_min=low, backoff_secs_max=low * factor, jitter=jitter)
    delay = backoff.delay_secs(attempt, uniform)
    assert 0 <= delay <= backoff.backoff_secs_max
    assert delay >= (1 - jitter) * min(backoff.backoff_secs_max, low) - 1e-12


@pytest.mark.parametrize(
    "kwargs",
    [
        {"backoff_secs_min": 0.0},
        {"backoff_secs_min": 2.0, "backoff_secs_max": 1.0},
        {"jitter": 1.5},
        {"jitter": -0.1},
    ],
)
def test_backoff_rejects_bad_settings(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="backoff"):
        Backoff(**kwargs)


def test_backoff_rejects_bad_inputs() -> None:
    with pytest.raises(ValueError, match="attempt"):
        Backoff().delay_secs(-1, 0.5)
    with pytest.raises(ValueError, match="uniform"):
        Backoff().delay_secs(0, 2.0)
