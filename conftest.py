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

Only the standard library, pytest and ``testing/parakoon_testing.py`` (stdlib only): ``uv run
--package parakoon-paxos pytest packages/paxos`` still runs with nothing else installed.
"""

from __future__ import annotations

import os

import pytest

# The seed rule itself lives with the other shared helpers (testing/parakoon_testing.py, on
# pytest's pythonpath), so that code which is not a fixture can call it too.
from parakoon_testing import DEFAULT_SEED, seed_from_env

__all__ = ["DEFAULT_SEED", "seed_from_env"]


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
