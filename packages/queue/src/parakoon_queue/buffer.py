"""The pure part of a leaky queue: a bounded FIFO that drops instead of blocking.

Theory of operation
-------------------

A :class:`LeakyBuffer` holds at most ``max_items`` items. Offering an item never waits and never
fails: when the buffer is full, one item is lost and counted, and which one is fixed at
construction by a :class:`DropPolicy`:

* ``DROP_NEWEST`` refuses the offered item and keeps what is queued. This suits producers whose
  earlier items must not be overtaken (a log, a stream of deltas).
* ``EVICT_OLDEST`` throws the oldest queued item away and queues the offered one. Paxos tolerates
  lost messages and a newer message usually supersedes an older one, so the node uses this policy
  for its per-peer outgoing frames.

Every offer is counted in ``offered`` and every loss in ``dropped``. Nothing else ever leaves the
buffer except through :meth:`LeakyBuffer.take`, so the number taken is derived rather than
counted, which keeps the hot path one increment cheaper. The books always balance::

    offered == taken + dropped + len(buffer)

This module knows nothing about tasks, events or event loops, so the dropping rules are tested
without any: :class:`parakoon_queue.LeakyQueue` adds waiting and closing on top of it.
"""

from __future__ import annotations

import enum
from collections import deque
from typing import Generic, TypeVar

__all__ = ["DropPolicy", "LeakyBuffer", "OfferOutcome"]

T = TypeVar("T")


class DropPolicy(enum.Enum):
    """Which item a full buffer loses when one more is offered."""

    #: Refuse the offered item; what is already queued stays.
    DROP_NEWEST = "drop_newest"
    #: Discard the oldest queued item and queue the offered one.
    EVICT_OLDEST = "evict_oldest"


class OfferOutcome(enum.Enum):
    """What happened to one offered item. Exactly one of these per offer."""

    #: The item was queued and nothing was lost.
    QUEUED = "queued"
    #: The buffer was full and the offered item itself was dropped (``DROP_NEWEST``).
    DROPPED_NEWEST = "dropped_newest"
    #: The buffer was full: the oldest item was dropped and the offered one queued
    #: (``EVICT_OLDEST``).
    EVICTED_OLDEST = "evicted_oldest"


# Module-level aliases: reading a global is cheaper than an attribute lookup on the enum class,
# and offer() is on the hot path of every outgoing frame.
_QUEUED = OfferOutcome.QUEUED
_DROPPED_NEWEST = OfferOutcome.DROPPED_NEWEST
_EVICTED_OLDEST = OfferOutcome.EVICTED_OLDEST


class LeakyBuffer(Generic[T]):
    """A bounded FIFO that drops (and counts) instead of blocking when full.

    Not thread-safe: it belongs to one event loop (or one simulated world) at a time.
    """

    __slots__ = ("_dropped", "_evict_oldest", "_items", "_max_items", "_offered", "_policy")

    def __init__(self, max_items: int, *, policy: DropPolicy) -> None:
        """Create an empty buffer holding at most ``max_items`` items.

        :raises ValueError: if ``max_items`` is not a positive int.
        :raises TypeError: if ``policy`` is not a :class:`DropPolicy`.
        """
        if type(max_items) is not int or max_items < 1:  # bool is an int, but not a bound
            raise ValueError(f"LeakyBuffer: max_items must be a positive int, got {max_items!r}")
        if not isinstance(policy, DropPolicy):
            raise TypeError(f"LeakyBuffer: policy must be a DropPolicy, got {policy!r}")
        self._max_items = max_items
        self._policy = policy
        self._evict_oldest = policy is DropPolicy.EVICT_OLDEST
        # With EVICT_OLDEST the deque's own maxlen performs the eviction in C; offer() only has
        # to notice that it is about to happen so that it can count it.
        self._items: deque[T] = deque(maxlen=max_items if self._evict_oldest else None)
        self._offered = 0
        self._dropped = 0

    # -- the hot path ------------------------------------------------------------------------

    def offer(self, item: T) -> OfferOutcome:
        """Queue ``item`` if there is room; otherwise drop one item as the policy says. O(1)."""
        self._offered += 1
        items = self._items
        if len(items) < self._max_items:
            items.append(item)
            return _QUEUED
        self._dropped += 1
        if self._evict_oldest:
            items.append(item)  # maxlen discards the oldest
            return _EVICTED_OLDEST
        return _DROPPED_NEWEST

    def take(self) -> T:
        """Remove and return the oldest item. O(1).

        :raises IndexError: if the buffer is empty.
        """
        return self._items.popleft()

    def take_batch(self, max_items: int) -> list[T]:
        """Remove and return up to ``max_items`` of the oldest items, oldest first. O(k).

        Returns an empty list when the buffer is empty.

        :raises ValueError: if ``max_items`` is not positive.
        """
        if max_items < 1:
            raise ValueError(f"LeakyBuffer.take_batch: max_items must be >= 1, got {max_items!r}")
        items = self._items
        count = len(items)
        if count <= max_items:
            # Taking everything: copy the deque in C and clear it, rather than popping one by one.
            batch = list(items)
            items.clear()
            return batch
        popleft = items.popleft
        return [popleft() for _ in range(max_items)]

    # -- inspection --------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._items)

    def __bool__(self) -> bool:
        return bool(self._items)

    @property
    def max_items(self) -> int:
        """The bound given at construction."""
        return self._max_items

    @property
    def policy(self) -> DropPolicy:
        """The drop policy given at construction."""
        return self._policy

    @property
    def offered(self) -> int:
        """How many items were ever offered, dropped or not."""
        return self._offered

    @property
    def dropped(self) -> int:
        """How many items were lost to the bound, under either policy."""
        return self._dropped

    @property
    def taken(self) -> int:
        """How many items left through :meth:`take` or :meth:`take_batch`."""
        return self._offered - self._dropped - len(self._items)

    def peek_all(self) -> list[T]:
        """A copy of the queued items, oldest first, for tests and debugging. O(n)."""
        return list(self._items)

    def _check(self) -> None:
        """Assert every invariant of the buffer; stress tests call this after each operation."""
        assert 0 <= len(self._items) <= self._max_items, (len(self._items), self._max_items)
        assert 0 <= self._dropped <= self._offered, (self._dropped, self._offered)
        assert self.taken >= 0, (self._offered, self._dropped, len(self._items))
        assert self._evict_oldest == (self._policy is DropPolicy.EVICT_OLDEST)
        assert self._items.maxlen == (self._max_items if self._evict_oldest else None)

    def __repr__(self) -> str:
        return (
            f"LeakyBuffer(queued={len(self._items)}, max_items={self._max_items}, "
            f"policy={self._policy.name}, offered={self._offered}, dropped={self._dropped})"
        )
