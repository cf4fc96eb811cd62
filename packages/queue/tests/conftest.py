"""Shared fixtures for the parakoon_queue tests."""

from __future__ import annotations

import os
import random

import pytest


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Run every ``@pytest.mark.anyio`` test on both backends the node may use."""
    backend: str = request.param
    return backend


@pytest.fixture
def seed() -> int:
    """A seed for one randomized test: from ``PARAKOON_SEED`` if set, else fresh.

    The seed is printed so that pytest shows it with a failure; run again with
    ``PARAKOON_SEED=<seed>`` to replay exactly.
    """
    raw = os.environ.get("PARAKOON_SEED", "20261203")
    # Fixed by default so that CI is repeatable; PARAKOON_SEED=N replays N, =random draws one.
    value = random.SystemRandom().randrange(2**32) if raw == "random" else int(raw)
    print(f"seed={value}")
    return value


@pytest.fixture
def long_run() -> bool:
    """Whether the long versions of randomized tests were asked for (``PARAKOON_LONG=1``)."""
    return os.environ.get("PARAKOON_LONG") == "1"
