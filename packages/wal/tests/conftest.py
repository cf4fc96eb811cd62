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
    value = (
        int(os.environ["PARAKOON_SEED"])
        if "PARAKOON_SEED" in os.environ
        else (random.SystemRandom().randrange(2**32))
    )
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
