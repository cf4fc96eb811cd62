"""Shared fixtures of the WAL tests.

``seed`` and ``long_mode`` come from the repository's root ``conftest.py``
(one rule for seeds everywhere: fixed by default, ``PARAKOON_SEED=N`` or ``=random``).
"""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest


@pytest.fixture
def payload() -> Callable[[int, int], bytes]:
    """A deterministic payload for (slot, version): distinct per copy of a slot."""

    def make(slot: int, version: int = 0) -> bytes:
        rng = random.Random(slot * 1_000_003 + version)
        return f"s{slot}v{version}:".encode() + rng.randbytes(rng.randrange(0, 200))

    return make
