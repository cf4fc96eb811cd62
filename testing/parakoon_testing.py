"""Helpers every test folder of the workspace shares (on pytest's ``pythonpath`` and mypy's
``mypy_path``, see ``pyproject.toml``): bounded waits, free ports and the seed rule. The root
``conftest.py`` holds the shared fixtures (seeds, long runs, anyio backends); this module holds
plain functions, which a conftest cannot export to another folder's tests.

Standard library only, so any package's tests can use it with nothing else installed.
"""

from __future__ import annotations

import os
import random
import socket
import time
from collections.abc import Callable
from typing import TypeVar

__all__ = ["DEFAULT_SEED", "free_ports", "holds_for", "seed_from_env", "wait_until"]

T = TypeVar("T")

DEFAULT_SEED = 20261203


def seed_from_env() -> int:
    """The seed of a randomized test: ``PARAKOON_SEED=N`` replays N, ``PARAKOON_SEED=random``
    draws a fresh one; unset, a fixed seed, so that CI runs the same cases every time. Printed
    as ``seed=N`` either way, so pytest shows it with a failure. (The root ``conftest.py``'s
    ``seed`` fixture returns it; code that is not a test function calls this.)"""
    raw = os.environ.get("PARAKOON_SEED", str(DEFAULT_SEED))
    value = random.SystemRandom().randrange(2**32) if raw == "random" else int(raw)
    print(f"seed={value}")
    return value


def wait_until(
    condition: Callable[[], T | None],
    what: str | Callable[[], str],
    *,
    timeout: float,
    interval: float = 0.1,
) -> T:
    """Poll ``condition`` until it returns something true; return that (typed: a condition
    returning ``str | None`` gives a ``str``). After ``timeout`` seconds fail with ``what``
    (say what was awaited: "node_2 caught up"; a callable is called then, to add what was last
    seen). An ``OSError`` from the condition (a node still starting or just killed) counts as
    not yet; any other exception, an ``AssertionError`` included, fails at once."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = condition()
        except OSError:
            result = None
        if result:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(
                f"not within {timeout:g} s: {what if isinstance(what, str) else what()}"
            )
        time.sleep(interval)


def holds_for(
    seconds: float, check: Callable[[], object], what: str, *, interval: float = 0.1
) -> None:
    """Call ``check`` every ``interval`` for ``seconds``; it must hold every time (it raises,
    or returns something false, to fail with ``what``). For "this must never happen during the
    window" (no master without a quorum, no write accepted), where ``wait_until`` is for "this
    must happen within the window"."""
    deadline = time.monotonic() + seconds
    while True:
        if not check():
            raise AssertionError(f"did not hold for {seconds:g} s: {what}")
        if time.monotonic() >= deadline:
            return
        time.sleep(interval)


def free_ports(count: int) -> list[int]:
    """Ports the OS considers free now (bound then released together, so all distinct).

    Probing races with other processes in principle; the node processes need their ports in
    ``cluster.toml`` before they start, and handing them pre-bound sockets instead would keep a
    killed node's port accepting connections (the parent's socket), which is not what a
    crashed node looks like to its peers and clients. In-process servers take port 0 and
    report the port they got."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()
