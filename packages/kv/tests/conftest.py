"""Shared fixtures of the parakoon_kv tests."""

from __future__ import annotations

import os
import random

import pytest


@pytest.fixture
def seed() -> int:
    """The seed of a randomized test: ``PARAKOON_SEED`` if set (``random`` draws one), else a
    fixed one; printed, so pytest shows it with a failure and the run can be replayed."""
    env = os.environ.get("PARAKOON_SEED", "20261203")
    # Fixed by default so that CI is repeatable; PARAKOON_SEED=N replays N, =random draws one.
    value = random.randrange(2**32) if env == "random" else int(env)
    print(f"seed={value}")
    return value


@pytest.fixture
def long_run() -> bool:
    """Whether the long versions of the randomized tests were asked for (``PARAKOON_LONG=1``)."""
    return os.environ.get("PARAKOON_LONG") == "1"
