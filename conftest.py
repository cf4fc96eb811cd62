"""Fixtures shared by every test folder of the workspace (pytest loads this root conftest for
all of them): the seed of randomized tests, the long-run switch, and a bounded wait.

* ``seed``: ``PARAKOON_SEED=N`` replays N; ``PARAKOON_SEED=random`` draws a fresh one; unset, a
  fixed seed, so that CI runs the same cases every time. Printed as ``seed=N`` either way, so
  pytest shows it with a failure.
* ``long_run`` (and its older name ``long_mode``): ``PARAKOON_LONG=1`` asks for the long
  versions of the randomized tests.
* ``wait_until``: poll a condition until it holds or a deadline passes; the failure says what
  was awaited and for how long (tests never order events with bare sleeps).

Only the standard library and pytest: ``uv run --package parakoon-paxos pytest packages/paxos``
still runs with nothing else installed.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable

import pytest

DEFAULT_SEED = 20261203

WaitUntil = Callable[[Callable[[], object], float, str], None]


def seed_from_env() -> int:
    """The seed rule above, for code that is not a fixture (printed as ``seed=N``)."""
    raw = os.environ.get("PARAKOON_SEED", str(DEFAULT_SEED))
    value = random.SystemRandom().randrange(2**32) if raw == "random" else int(raw)
    print(f"seed={value}")
    return value


@pytest.fixture
def seed() -> int:
    return seed_from_env()


@pytest.fixture
def long_run() -> bool:
    return os.environ.get("PARAKOON_LONG") == "1"


@pytest.fixture
def long_mode(long_run: bool) -> bool:
    return long_run


def _wait_until(condition: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(0.02)


@pytest.fixture
def wait_until() -> WaitUntil:
    return _wait_until
