"""The seed of a randomized fault test: the one seed rule of every test folder
(``parakoon_testing.seed_from_env``: ``PARAKOON_SEED`` replays one, ``random`` draws one, else a
fixed seed; printed as ``seed=N``), under the name the fault tests use."""

from __future__ import annotations

from parakoon_testing import seed_from_env as seeded

__all__ = ["seeded"]
