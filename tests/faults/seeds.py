"""The seed of a randomized fault test: ``PARAKOON_SEED`` replays one, else a fresh one; printed."""

from __future__ import annotations

import os
import random


def seeded() -> int:
    """``PARAKOON_SEED`` if set, else a random 32-bit seed; printed as ``seed=N`` either way."""
    seed = int(os.environ.get("PARAKOON_SEED", random.randrange(1 << 32)))
    print(f"seed={seed}")
    return seed
