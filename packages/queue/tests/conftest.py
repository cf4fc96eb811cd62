"""Shared fixtures for the parakoon_queue tests."""

from __future__ import annotations

import pytest


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Run every ``@pytest.mark.anyio`` test on both backends the node may use."""
    backend: str = request.param
    return backend
