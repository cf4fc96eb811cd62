"""The effect contract of ``step``, written once: which effect waits for which durable write.

``step`` returns effects in the order they must happen. Most run at once, in that order. The
exception is the reason this module exists: a message (``Send``, ``Broadcast``) or an answer to
a client (``Reply``, ``Fail``) that comes *after* a durable write (``Persist``,
``PersistPromise``, ``Rebuilt``) in the same list must not leave before that write, and every
write before it, is durable. That is what makes a ``Promise`` safe to send (its
``PersistPromise`` precedes it) and what keeps a node from telling anyone something its disk
does not hold yet. Writes themselves become durable in list order. Everything else (``Apply``,
``StartCatchup``, ``RoleChanged``) runs at once even after a write: applying is of chosen
values only, and the rest is bookkeeping.

The node driver, the simulator and the scenario interpreter of the core's tests all execute
effects through :func:`stage`, so they cannot disagree about this rule (they once did: the
simulator answered clients at once while the driver held the answers behind the writes).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, TypeAlias

from .types import (
    Apply,
    Broadcast,
    Effect,
    Fail,
    Persist,
    PersistPromise,
    Rebuilt,
    Reply,
    RoleChanged,
    Send,
    StartCatchup,
)

Write: TypeAlias = Persist | PersistPromise | Rebuilt
Held: TypeAlias = Send | Broadcast | Reply | Fail

#: No write to wait for: run at once.
NOW: Final = -1


@dataclass(frozen=True, slots=True)
class Staged:
    """One effect of a list and when it may run.

    ``write`` is the effect's own number among the list's writes (0, 1, ...) for a write, else
    ``NOW``. ``after`` is, for a held effect, the number of the last write before it: it runs
    once that write (and so every earlier one) is durable; ``NOW`` when it may run at once.
    """

    effect: Effect
    write: int
    after: int


def stage(effects: Sequence[Effect]) -> list[Staged]:
    """Each effect of ``effects`` with its place in the contract (see the module docstring)."""
    out: list[Staged] = []
    last_write = NOW
    for effect in effects:
        match effect:
            case Persist() | PersistPromise() | Rebuilt():
                last_write += 1
                out.append(Staged(effect, last_write, NOW))
            case Send() | Broadcast() | Reply() | Fail():
                out.append(Staged(effect, NOW, last_write))
            case Apply() | StartCatchup() | RoleChanged():
                out.append(Staged(effect, NOW, NOW))
            case _:
                raise AssertionError(f"stage: unknown effect {effect!r}")
    return out
