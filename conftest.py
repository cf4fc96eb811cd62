"""Fixtures shared by every test folder of the workspace (pytest loads this root conftest for
all of them): the seed of randomized tests and the long-run switch.

* ``seed``: ``PARAKOON_SEED=N`` replays N; ``PARAKOON_SEED=random`` draws a fresh one; unset, a
  fixed seed, so that CI runs the same cases every time. Printed as ``seed=N`` either way, so
  pytest shows it with a failure.
* ``long_run`` (and its older name ``long_mode``): ``PARAKOON_LONG=1`` asks for the long
  versions of the randomized tests.
* ``anyio_backend``: every ``@pytest.mark.anyio`` test runs on asyncio (the node's loop) and on
  trio (which keeps the code honest about structured concurrency). A module whose code is
  asyncio-only overrides it and says why.

Only the standard library and pytest: ``uv run --package parakoon-paxos pytest packages/paxos``
still runs with nothing else installed.
"""

from __future__ import annotations

import os
import random

import pytest

DEFAULT_SEED = 20261203


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


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)
