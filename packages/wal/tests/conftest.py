"""Shared fixtures of the WAL tests.

Randomised tests take the ``seed`` fixture: it prints the seed (pytest shows it on failure) and
takes one back from ``PARAKOON_SEED``. ``PARAKOON_LONG=1`` makes the fuzzing tests run longer.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable

import pytest


@pytest.fixture
def seed() -> int:
    raw = os.environ.get("PARAKOON_SEED", "20261203")
    # Fixed by default so that CI is repeatable; PARAKOON_SEED=N replays N, =random draws one.
    value = random.SystemRandom().randrange(2**32) if raw == "random" else int(raw)
    print(f"seed={value}")
    return value


@pytest.fixture
def long_mode() -> bool:
    return os.environ.get("PARAKOON_LONG") == "1"


@pytest.fixture
def payload() -> Callable[[int, int], bytes]:
    """A deterministic payload for (slot, version): distinct per copy of a slot."""

    def make(slot: int, version: int = 0) -> bytes:
        rng = random.Random(slot * 1_000_003 + version)
        return f"s{slot}v{version}:".encode() + rng.randbytes(rng.randrange(0, 200))

    return make
