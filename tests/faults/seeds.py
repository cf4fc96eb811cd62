"""The seed of a randomized fault test: ``PARAKOON_SEED`` replays one, else a fresh one; printed."""

from __future__ import annotations

import os
import random


def seeded() -> int:
    """``PARAKOON_SEED`` if set (``random`` draws one), else a fixed seed; printed as
    ``seed=N`` either way, so CI is repeatable and any run can be replayed."""
    raw = os.environ.get("PARAKOON_SEED", "20261203")
    seed = random.randrange(1 << 32) if raw == "random" else int(raw)
    print(f"seed={seed}")
    return seed
