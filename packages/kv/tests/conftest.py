"""Shared fixtures of the parakoon_kv tests."""

from __future__ import annotations

import os
import random

import pytest


@pytest.fixture
def seed() -> int:
    """The seed of a randomized test: ``PARAKOON_SEED`` if set, else a fresh one; printed, so
    pytest shows it with a failure and the run can be replayed exactly."""
    env = os.environ.get("PARAKOON_SEED")
    value = int(env) if env else random.randrange(2**32)
    print(f"seed={value}")
    return value


@pytest.fixture
def long_run() -> bool:
    """Whether the long versions of the randomized tests were asked for (``PARAKOON_LONG=1``)."""
    return os.environ.get("PARAKOON_LONG") == "1"
