"""Retry policy: which failures a client may repeat on its own, and how long it waits.

Both clients (blocking and async) run the same loop around every call:

1. pick the node to ask (the master for writes and consistent reads, the read node for
   ``NoGuarantees``/``AtLeast`` reads), discovering the master when it is not known;
2. send the request and read the answer;
3. on failure ask :func:`decide` what to do, and if it says to try again, wait
   :func:`backoff_secs` (never past the call's deadline) and go back to 1.

This module holds the rules of step 3 and nothing else: no sockets, no clock, no random
generator (the caller passes a uniform draw for the jitter). The rules follow from one question:
*could the server have executed the request?*

* Errors before the request left the client (connect refused, prologue rejected, the node is
  going down or full) and refusals (``NotMaster``) leave the store untouched: every operation may
  be tried again.
* A lost connection or a timeout after the request was sent, and ``NoLongerMaster``, leave the
  outcome of a write unknown. Reads and idempotent writes are repeated; other writes raise
  :class:`~parakoon_client.errors.OutcomeUnknown` at once.
* ``delete`` is repeated too (deleting twice leaves the same store), but its ``NotFound`` is only
  meaningful when no earlier attempt may have deleted the key: after an unknown outcome a
  ``NotFound`` becomes ``OutcomeUnknown``.
* Application errors (``NotFound``, ``AssertionFailed``, ``BadInput``, ...) and the remaining
  server errors are raised as they are.

The table of every command's class is :data:`COMMAND_RETRY` (docs/client.md shows it).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final

from parakoon_client.errors import (
    ArakoonError,
    ArakoonNotConnected,
    GoingDown,
    InconsistentRead,
    MaxConnections,
    NoLongerMaster,
    NotFound,
    NotMaster,
)


class Retry(enum.Enum):
    """How freely an operation may be repeated when an attempt fails."""

    # Reads and writes that leave the same result when applied twice: repeat on any transient
    # failure, including after an unknown outcome.
    ALWAYS = "always"
    # delete: repeated like ALWAYS, but a NotFound after an unknown outcome is ambiguous.
    IDEMPOTENT_EXCEPT_NOT_FOUND = "idempotent-except-not-found"
    # Writes whose effect or answer changes when applied twice: repeat only while it is certain
    # the server did not execute them.
    UNTIL_SENT = "until-sent"


class Verdict(enum.Enum):
    """What the client loop does with a failed attempt."""

    RAISE = "raise"  # give the error to the caller
    RETRY = "retry"  # wait, then try the same node again (its connection stays if it is open)
    REDISCOVER = "rediscover"  # drop the connection, forget the master, wait, try again
    OUTCOME_UNKNOWN = "outcome-unknown"  # raise OutcomeUnknown with this error as its cause


# The class of every operation the clients offer, by the Python method name. Sequences are
# classified by their content with :func:`sequence_retry`.
COMMAND_RETRY: Final[dict[str, Retry]] = {
    "ping": Retry.ALWAYS,
    "who_master": Retry.ALWAYS,
    "exists": Retry.ALWAYS,
    "get": Retry.ALWAYS,
    "range": Retry.ALWAYS,
    "range_entries": Retry.ALWAYS,
    "rev_range_entries": Retry.ALWAYS,
    "prefix": Retry.ALWAYS,
    "multi_get": Retry.ALWAYS,
    "multi_get_option": Retry.ALWAYS,
    "assert_": Retry.ALWAYS,
    "assert_exists": Retry.ALWAYS,
    "get_key_count": Retry.ALWAYS,
    "expect_progress_possible": Retry.ALWAYS,
    "statistics": Retry.ALWAYS,
    "version": Retry.ALWAYS,
    "current_state": Retry.ALWAYS,
    "get_txid": Retry.ALWAYS,
    # Writing the same value twice leaves the same store and the same (unit) answer.
    "set": Retry.ALWAYS,
    "confirm": Retry.ALWAYS,
    "nop": Retry.ALWAYS,
    "delete": Retry.IDEMPOTENT_EXCEPT_NOT_FOUND,
    # The answer (previous value, deleted count, function result) or the effect differs when the
    # first attempt was applied, so a silent repeat would lie to the caller.
    "test_and_set": Retry.UNTIL_SENT,
    "replace": Retry.UNTIL_SENT,
    "delete_prefix": Retry.UNTIL_SENT,
    "user_function": Retry.UNTIL_SENT,
}


def decide(retry: Retry, error: ArakoonError, *, outcome_unknown_before: bool) -> Verdict:
    """Classify a failed attempt of an operation of class ``retry``.

    ``outcome_unknown_before`` says whether an earlier attempt of the same call may have been
    executed by the server (it matters for ``delete``). Transport errors say themselves whether
    the request was sent (:attr:`ArakoonNotConnected.request_sent`).
    """
    match error:
        case NotMaster() | GoingDown() | MaxConnections():
            # Refused before execution; the server closed the connection. The master named in a
            # NotMaster is followed by the caller.
            return Verdict.REDISCOVER
        case InconsistentRead():
            # The node has not caught up yet; it will, so ask it again after a pause.
            return Verdict.RETRY
        case NoLongerMaster():
            if retry is Retry.UNTIL_SENT:
                return Verdict.OUTCOME_UNKNOWN
            return Verdict.REDISCOVER
        case ArakoonNotConnected():
            if error.request_sent and retry is Retry.UNTIL_SENT:
                return Verdict.OUTCOME_UNKNOWN
            return Verdict.REDISCOVER
        case NotFound():
            if retry is Retry.IDEMPOTENT_EXCEPT_NOT_FOUND and outcome_unknown_before:
                return Verdict.OUTCOME_UNKNOWN
            return Verdict.RAISE
        case _:
            # Application errors (AssertionFailed, BadInput, ...), server errors that mean the
            # request itself is wrong (UnknownFailure, ReadOnly, ...), protocol violations and
            # OutcomeUnknown: repeating would give the same answer or hide the problem.
            return Verdict.RAISE


def makes_outcome_unknown(error: ArakoonError) -> bool:
    """Whether a write that failed with ``error`` may nevertheless have been applied."""
    if isinstance(error, NoLongerMaster):
        return True
    return isinstance(error, ArakoonNotConnected) and error.request_sent


@dataclass(frozen=True, slots=True, kw_only=True)
class Backoff:
    """Exponential back-off with jitter between attempts of one call.

    Attempt ``n`` (0-based) waits ``min(backoff_secs_max, backoff_secs_min * 2**n)`` scaled by a
    factor drawn uniformly from ``[1 - jitter, 1]``, so clients that lost the same master do not
    all come back at the same instant.
    """

    backoff_secs_min: float = 0.05
    backoff_secs_max: float = 2.0
    jitter: float = 0.5

    def __post_init__(self) -> None:
        if not 0 < self.backoff_secs_min <= self.backoff_secs_max:
            raise ValueError(
                "backoff needs 0 < backoff_secs_min <= backoff_secs_max, got "
                f"{self.backoff_secs_min} and {self.backoff_secs_max}"
            )
        if not 0 <= self.jitter <= 1:
            raise ValueError(f"backoff jitter must be in [0, 1], got {self.jitter}")

    def delay_secs(self, attempt: int, uniform: float) -> float:
        """The pause after failed attempt ``attempt``; ``uniform`` is a draw from [0, 1)."""
        if attempt < 0:
            raise ValueError(f"attempt must be >= 0, got {attempt}")
        if not 0 <= uniform <= 1:
            raise ValueError(f"uniform draw must be in [0, 1], got {uniform}")
        # Cap the exponent: 2**64 times anything positive is past any sane maximum already.
        ceiling: float = min(self.backoff_secs_max, self.backoff_secs_min * 2.0 ** min(attempt, 64))
        return ceiling * (1 - self.jitter * uniform)
