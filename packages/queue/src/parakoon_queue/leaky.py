"""LeakyQueue: a bounded async queue whose producers never wait.

Theory of operation
-------------------

Producers call :meth:`LeakyQueue.put_nowait`, which is synchronous, O(1) and never blocks: the
item goes into a :class:`~parakoon_queue.buffer.LeakyBuffer`, which drops one item (and counts
it) when the bound is reached. Consumers call :meth:`LeakyQueue.get` (waits) or
:meth:`LeakyQueue.get_nowait` (raises :class:`anyio.WouldBlock`), or their batch forms, which
let one sender drain many frames into one socket write.

Waking consumers. A consumer that finds the queue empty parks on its own :class:`anyio.Event`
in a FIFO of waiters. Each successful offer wakes at most one waiter, and only if one is
parked, so a producer that runs ahead of its consumer pays one length check and nothing else.
Items are never handed directly to a waiter: they stay in the buffer until the woken task
actually runs and takes one. That way a consumer cancelled right after being woken cannot lose
an item; it only has to pass its wake-up on to the next waiter, which it does on the way out.
A woken consumer that finds the buffer emptied by someone faster simply parks again.

Closing. :meth:`LeakyQueue.close` stops producers (``put_nowait`` then raises
:class:`anyio.ClosedResourceError`) and wakes every parked consumer. Consumers go on receiving
what is still queued; once the queue is closed *and* empty, ``get`` and ``get_nowait`` raise
:class:`anyio.EndOfStream`, the same signal an anyio memory stream gives when its last sender
goes away. ``async for item in queue`` ends at that point.

One event loop owns a queue; it is not thread-safe (no anyio queue is).
"""

from __future__ import annotations

from collections import deque
from types import TracebackType
from typing import Generic, NamedTuple, TypeVar

import anyio
from anyio import ClosedResourceError, EndOfStream, WouldBlock
from anyio.lowlevel import checkpoint

from parakoon_queue.buffer import DropPolicy, LeakyBuffer, OfferOutcome

__all__ = ["GET_BATCH_MAX_ITEMS_DEFAULT", "LeakyQueue", "QueueStatistics"]

T = TypeVar("T")

#: Default bound on how many items one ``get_batch``/``get_nowait_batch`` call returns.
GET_BATCH_MAX_ITEMS_DEFAULT = 64


class QueueStatistics(NamedTuple):
    """A snapshot of one queue's counters; immutable, cheap to take.

    ``offered == taken + dropped + queued`` holds for every snapshot.
    """

    #: Items in the queue right now.
    queued: int
    #: The bound given at construction.
    max_items: int
    #: Items ever offered with ``put_nowait``, dropped or not (offers after close excluded).
    offered: int
    #: Items lost to the bound, under either policy.
    dropped: int
    #: Items handed to consumers.
    taken: int
    #: Consumer tasks parked in ``get``/``get_batch`` right now.
    consumers_waiting: int
    #: Whether :meth:`LeakyQueue.close` was called.
    closed: bool
    #: The drop policy given at construction.
    policy: DropPolicy


class LeakyQueue(Generic[T]):
    """A multi-producer, multi-consumer bounded queue that drops instead of blocking.

    ``max_items`` is required: every queue in parakoon has an explicit bound. ``name`` appears
    in error messages and ``repr`` (the node uses the peer's name), so a failure says which
    queue it was.
    """

    __slots__ = ("_buffer", "_closed", "_name", "_waiters")

    def __init__(self, max_items: int, *, policy: DropPolicy, name: str = "") -> None:
        """Create an empty, open queue.

        :raises ValueError: if ``max_items`` is not a positive int.
        :raises TypeError: if ``policy`` is not a :class:`DropPolicy`.
        """
        label = f"LeakyQueue {name!r}" if name else "LeakyQueue"
        try:
            self._buffer: LeakyBuffer[T] = LeakyBuffer(max_items, policy=policy)
        except (ValueError, TypeError) as exc:
            raise type(exc)(f"{label}: {exc}") from None
        self._name = name
        self._closed = False
        # Parked consumers in arrival order. Each event is set at most once, by whoever
        # removes it from this deque (an offer, close(), or a cancelled waiter passing its
        # wake-up on).
        self._waiters: deque[anyio.Event] = deque()

    # -- producers ---------------------------------------------------------------------------

    def put_nowait(self, item: T) -> OfferOutcome:
        """Offer ``item``; never blocks. O(1).

        When the queue is full one item is dropped as the policy says and counted; the return
        value tells which outcome happened.

        :raises anyio.ClosedResourceError: if the queue was closed.
        """
        if self._closed:
            raise ClosedResourceError(f"{self!r}: put_nowait after close")
        outcome = self._buffer.offer(item)
        if self._waiters:
            self._waiters.popleft().set()
        return outcome

    # -- consumers ---------------------------------------------------------------------------

    def get_nowait(self) -> T:
        """Remove and return the oldest item without waiting. O(1).

        :raises anyio.WouldBlock: if the queue is empty and open.
        :raises anyio.EndOfStream: if the queue is empty and closed.
        """
        try:
            return self._buffer.take()
        except IndexError:
            if self._closed:
                raise EndOfStream from None
            raise WouldBlock from None

    async def get(self) -> T:
        """Remove and return the oldest item, waiting for one if the queue is empty.

        Always a checkpoint (it can be cancelled even when an item is ready), as anyio's own
        receive operations are.

        :raises anyio.EndOfStream: once the queue is closed and drained.
        """
        await checkpoint()
        while True:
            try:
                return self.get_nowait()
            except WouldBlock:
                await self._wait_for_item()

    def get_nowait_batch(self, max_items: int = GET_BATCH_MAX_ITEMS_DEFAULT) -> list[T]:
        """Remove and return between 1 and ``max_items`` of the oldest items without waiting.

        O(k) for k items returned. Meant for a sender that writes several frames at once.

        :raises ValueError: if ``max_items`` is not positive.
        :raises anyio.WouldBlock: if the queue is empty and open.
        :raises anyio.EndOfStream: if the queue is empty and closed.
        """
        if max_items < 1:
            raise ValueError(f"{self!r}: get_nowait_batch max_items must be >= 1, got {max_items}")
        if self._buffer:
            return self._buffer.take_batch(max_items)
        if self._closed:
            raise EndOfStream
        raise WouldBlock

    async def get_batch(self, max_items: int = GET_BATCH_MAX_ITEMS_DEFAULT) -> list[T]:
        """Like :meth:`get_nowait_batch`, but waits until at least one item is queued.

        :raises ValueError: if ``max_items`` is not positive.
        :raises anyio.EndOfStream: once the queue is closed and drained.
        """
        await checkpoint()
        while True:
            try:
                return self.get_nowait_batch(max_items)
            except WouldBlock:
                await self._wait_for_item()

    async def _wait_for_item(self) -> None:
        """Park until an offer or close() wakes us. Callers re-check the buffer afterwards."""
        event = anyio.Event()
        self._waiters.append(event)
        try:
            await event.wait()
        except BaseException:
            # Cancelled (or otherwise interrupted). If an offer already chose us, the item it
            # woke us for is still queued and nobody else was told: pass the wake-up on so it
            # does not sit there until the next offer. If nobody chose us, leave the line.
            if event.is_set():
                if self._buffer and self._waiters:
                    self._waiters.popleft().set()
            else:
                self._waiters.remove(event)
            raise

    def __aiter__(self) -> LeakyQueue[T]:
        return self

    async def __anext__(self) -> T:
        try:
            return await self.get()
        except EndOfStream:
            raise StopAsyncIteration from None

    # -- closing -----------------------------------------------------------------------------

    def close(self) -> None:
        """Refuse further offers and wake every parked consumer. Idempotent.

        Items already queued stay available; consumers see :class:`anyio.EndOfStream` only
        after they have taken them all.
        """
        self._closed = True
        waiters = self._waiters
        while waiters:
            waiters.popleft().set()

    async def aclose(self) -> None:
        """Same as :meth:`close`; provided so the queue fits ``anyio``'s resource habits."""
        self.close()

    def __enter__(self) -> LeakyQueue[T]:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- inspection --------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    @property
    def max_items(self) -> int:
        """The bound given at construction."""
        return self._buffer.max_items

    @property
    def name(self) -> str:
        """The name given at construction (may be empty)."""
        return self._name

    def __len__(self) -> int:
        return len(self._buffer)

    def statistics(self) -> QueueStatistics:
        """Return a snapshot of the queue's counters. O(1)."""
        buffer = self._buffer
        return QueueStatistics(
            queued=len(buffer),
            max_items=buffer.max_items,
            offered=buffer.offered,
            dropped=buffer.dropped,
            taken=buffer.taken,
            consumers_waiting=len(self._waiters),
            closed=self._closed,
            policy=buffer.policy,
        )

    def _check(self) -> None:
        """Assert every invariant; stress tests call this between operations."""
        self._buffer._check()  # noqa: SLF001 (the buffer's own check)
        # Whoever sets a waiter's event removes it from the line first, so every consumer still
        # in line is one that nobody has chosen yet.
        assert all(not event.is_set() for event in self._waiters)
        if self._closed:
            assert not self._waiters, "close() must wake every parked consumer"

    def __repr__(self) -> str:
        name = f"{self._name!r}, " if self._name else ""
        state = "closed" if self._closed else "open"
        return (
            f"LeakyQueue({name}{state}, queued={len(self._buffer)}, "
            f"max_items={self._buffer.max_items}, policy={self._buffer.policy.name}, "
            f"dropped={self._buffer.dropped})"
        )
