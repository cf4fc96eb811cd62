"""LeakyQueue under anyio, on asyncio and on trio (see conftest.anyio_backend).

Ordering between tasks is established with ``anyio.wait_all_tasks_blocked()`` (every other task
is parked) rather than with sleeps, and every test body runs under ``anyio.fail_after`` so a
lost wake-up fails fast instead of hanging.
"""

from __future__ import annotations

import random

import anyio
import pytest

from parakoon_queue import (
    ClosedResourceError,
    DropPolicy,
    EndOfStream,
    LeakyQueue,
    OfferOutcome,
    QueueStatistics,
    WouldBlock,
)

pytestmark = pytest.mark.anyio

#: Upper bound on how long any one test may wait for the tasks it started.
TEST_DEADLINE_SECS = 10.0


def make_queue(max_items: int = 8, policy: DropPolicy = DropPolicy.EVICT_OLDEST) -> LeakyQueue[int]:
    return LeakyQueue(max_items, policy=policy, name="peer-test")


# -- no waiting involved ------------------------------------------------------------------------


async def test_items_come_out_in_offer_order() -> None:
    queue = make_queue()
    assert [queue.put_nowait(item) for item in range(3)] == [OfferOutcome.QUEUED] * 3
    assert [queue.get_nowait() for _ in range(3)] == [0, 1, 2]
    with pytest.raises(WouldBlock):
        queue.get_nowait()
    queue._check()


async def test_a_full_queue_drops_as_its_policy_says() -> None:
    newest = make_queue(2, DropPolicy.DROP_NEWEST)
    oldest = make_queue(2, DropPolicy.EVICT_OLDEST)
    for item in range(5):
        newest.put_nowait(item)
        oldest.put_nowait(item)
    assert newest.get_nowait_batch() == [0, 1]
    assert oldest.get_nowait_batch() == [3, 4]
    assert newest.statistics().dropped == oldest.statistics().dropped == 3


async def test_statistics_is_an_immutable_snapshot_that_balances() -> None:
    queue = make_queue(3, DropPolicy.EVICT_OLDEST)
    for item in range(5):
        queue.put_nowait(item)
    queue.get_nowait()
    stats = queue.statistics()
    assert stats == QueueStatistics(
        queued=2,
        max_items=3,
        offered=5,
        dropped=2,
        taken=1,
        consumers_waiting=0,
        closed=False,
        policy=DropPolicy.EVICT_OLDEST,
    )
    assert stats.offered == stats.taken + stats.dropped + stats.queued
    with pytest.raises(AttributeError):
        stats.dropped = 0  # type: ignore[misc]
    queue.put_nowait(9)
    assert stats.queued == 2, "a snapshot must not follow later changes"
    assert queue.statistics().queued == 3


async def test_get_nowait_batch_bounds_and_errors() -> None:
    queue = make_queue(10)
    with pytest.raises(WouldBlock):
        queue.get_nowait_batch()
    with pytest.raises(ValueError, match=r"'peer-test'.*max_items must be >= 1, got 0"):
        queue.get_nowait_batch(0)
    for item in range(7):
        queue.put_nowait(item)
    assert queue.get_nowait_batch(4) == [0, 1, 2, 3]
    assert queue.get_nowait_batch(4) == [4, 5, 6]
    queue.close()
    with pytest.raises(EndOfStream):
        queue.get_nowait_batch()


async def test_construction_errors_name_the_queue() -> None:
    with pytest.raises(ValueError, match=r"LeakyQueue 'peer-7'.*max_items must be a positive int"):
        LeakyQueue(0, policy=DropPolicy.EVICT_OLDEST, name="peer-7")
    with pytest.raises(TypeError, match=r"LeakyQueue: .*policy must be a DropPolicy"):
        LeakyQueue(4, policy=None)  # type: ignore[arg-type]


async def test_close_keeps_queued_items_then_ends_the_stream() -> None:
    queue = make_queue()
    queue.put_nowait(1)
    queue.put_nowait(2)
    with queue:  # leaving the block closes the queue
        pass
    assert queue.closed
    with pytest.raises(ClosedResourceError, match=r"LeakyQueue\('peer-test', closed"):
        queue.put_nowait(3)
    assert queue.statistics().offered == 2, "an offer after close is refused, not counted"
    assert await queue.get() == 1
    assert queue.get_nowait() == 2
    with pytest.raises(EndOfStream):
        queue.get_nowait()
    with pytest.raises(EndOfStream):
        await queue.get()
    with pytest.raises(EndOfStream):
        await queue.get_batch()
    queue.close()  # idempotent
    await queue.aclose()
    assert queue.statistics().closed
    queue._check()


async def test_repr_and_properties() -> None:
    queue = make_queue(4)
    queue.put_nowait(1)
    assert repr(queue) == (
        "LeakyQueue('peer-test', open, queued=1, max_items=4, policy=EVICT_OLDEST, dropped=0)"
    )
    assert (queue.name, queue.max_items, len(queue), queue.closed) == ("peer-test", 4, 1, False)
    unnamed: LeakyQueue[int] = LeakyQueue(1, policy=DropPolicy.DROP_NEWEST)
    assert repr(unnamed).startswith("LeakyQueue(open,")


# -- waiting consumers --------------------------------------------------------------------------


async def test_get_waits_for_an_offer() -> None:
    queue = make_queue()
    received: list[int] = []

    async def consume() -> None:
        received.append(await queue.get())

    with anyio.fail_after(TEST_DEADLINE_SECS):
        async with anyio.create_task_group() as tg:
            tg.start_soon(consume)
            await anyio.wait_all_tasks_blocked()
            assert queue.statistics().consumers_waiting == 1
            assert received == []
            assert queue.put_nowait(42) is OfferOutcome.QUEUED
    assert received == [42]
    assert queue.statistics().consumers_waiting == 0
    queue._check()


async def test_get_batch_waits_then_drains_up_to_the_bound() -> None:
    queue = make_queue(16)
    batches: list[list[int]] = []

    async def sender() -> None:
        while True:
            try:
                batches.append(await queue.get_batch(3))
            except EndOfStream:
                return

    with anyio.fail_after(TEST_DEADLINE_SECS):
        async with anyio.create_task_group() as tg:
            tg.start_soon(sender)
            await anyio.wait_all_tasks_blocked()
            for item in range(7):  # all offered before the sender runs again
                queue.put_nowait(item)
            await anyio.wait_all_tasks_blocked()
            queue.put_nowait(7)
            await anyio.wait_all_tasks_blocked()
            queue.close()
    assert batches == [[0, 1, 2], [3, 4, 5], [6], [7]]


async def test_one_offer_wakes_one_consumer() -> None:
    queue = make_queue()
    received: list[tuple[int, int]] = []

    async def consume(number: int) -> None:
        try:
            while True:
                received.append((number, await queue.get()))
        except EndOfStream:
            return

    with anyio.fail_after(TEST_DEADLINE_SECS):
        async with anyio.create_task_group() as tg:
            for number in range(3):
                tg.start_soon(consume, number)
            await anyio.wait_all_tasks_blocked()
            assert queue.statistics().consumers_waiting == 3
            queue.put_nowait(100)
            await anyio.wait_all_tasks_blocked()
            assert len(received) == 1
            assert queue.statistics().consumers_waiting == 3  # the lucky one parked again
            queue.close()
    assert [item for _, item in received] == [100]


async def test_close_wakes_every_waiting_consumer() -> None:
    queue = make_queue()
    ended: list[int] = []

    async def consume(number: int) -> None:
        with pytest.raises(EndOfStream):
            await queue.get()
        ended.append(number)

    async def consume_batch(number: int) -> None:
        with pytest.raises(EndOfStream):
            await queue.get_batch()
        ended.append(number)

    with anyio.fail_after(TEST_DEADLINE_SECS):
        async with anyio.create_task_group() as tg:
            for number in range(4):
                tg.start_soon(consume if number % 2 else consume_batch, number)
            await anyio.wait_all_tasks_blocked()
            assert queue.statistics().consumers_waiting == 4
            queue.close()
            queue._check()
    assert sorted(ended) == [0, 1, 2, 3]


async def test_async_iteration_drains_then_stops() -> None:
    queue = make_queue()
    received: list[int] = []

    async def consume() -> None:
        async for item in queue:
            received.append(item)

    with anyio.fail_after(TEST_DEADLINE_SECS):
        async with anyio.create_task_group() as tg:
            tg.start_soon(consume)
            await anyio.wait_all_tasks_blocked()
            queue.put_nowait(1)
            queue.put_nowait(2)
            queue.close()
    assert received == [1, 2]


# -- cancellation -------------------------------------------------------------------------------


async def test_a_cancelled_consumer_leaves_the_line() -> None:
    queue = make_queue()
    with anyio.fail_after(TEST_DEADLINE_SECS):
        async with anyio.create_task_group() as tg:
            tg.start_soon(queue.get)
            await anyio.wait_all_tasks_blocked()
            assert queue.statistics().consumers_waiting == 1
            tg.cancel_scope.cancel()
    assert queue.statistics().consumers_waiting == 0
    queue.put_nowait(1)
    assert queue.get_nowait() == 1
    queue._check()


async def test_a_wake_up_for_a_cancelled_consumer_passes_to_the_next_one() -> None:
    """The offer chooses consumer A, but A was cancelled before it ran: B must get the item."""
    queue = make_queue()
    got_b: list[int] = []

    async def consume_b() -> None:
        got_b.append(await queue.get())

    with anyio.fail_after(TEST_DEADLINE_SECS):
        async with anyio.create_task_group() as tg, anyio.create_task_group() as tg_a:
            tg_a.start_soon(queue.get)  # A, first in line
            await anyio.wait_all_tasks_blocked()
            tg.start_soon(consume_b)  # B, second in line
            await anyio.wait_all_tasks_blocked()
            assert queue.statistics().consumers_waiting == 2
            # Both happen before A runs again: A is cancelled, then chosen by the offer.
            tg_a.cancel_scope.cancel()
            queue.put_nowait(7)
    assert got_b == [7]
    assert queue.statistics() == QueueStatistics(
        queued=0,
        max_items=8,
        offered=1,
        dropped=0,
        taken=1,
        consumers_waiting=0,
        closed=False,
        policy=DropPolicy.EVICT_OLDEST,
    )


async def test_an_item_is_delivered_once_when_the_chosen_consumer_is_cancelled_after() -> None:
    """Offer first, cancel second: A may still take the item, but nobody may lose it."""
    queue = make_queue()
    got_a: list[int] = []
    got_b: list[int] = []

    async def consume_a() -> None:
        got_a.append(await queue.get())

    async def consume_b() -> None:
        try:
            got_b.append(await queue.get())
        except EndOfStream:
            return

    with anyio.fail_after(TEST_DEADLINE_SECS):
        async with anyio.create_task_group() as tg:
            async with anyio.create_task_group() as tg_a:
                tg_a.start_soon(consume_a)
                await anyio.wait_all_tasks_blocked()
                tg.start_soon(consume_b)
                await anyio.wait_all_tasks_blocked()
                queue.put_nowait(7)
                tg_a.cancel_scope.cancel()
            await anyio.wait_all_tasks_blocked()
            # Had the wake-up been lost, the item would still be queued with B parked.
            assert queue.statistics().queued == 0
            queue.close()
    assert got_a + got_b == [7]
    assert queue.statistics().taken == 1


# -- many producers, many consumers -------------------------------------------------------------


async def run_producers_and_consumers(
    queue: LeakyQueue[tuple[int, int]],
    rng: random.Random,
    producers: int,
    items_per_producer: int,
    consumers: int,
) -> list[list[tuple[int, int]]]:
    """Producers offer (producer, sequence) pairs with random pauses at checkpoints; consumers
    take single items or batches until the queue ends. Returns what each consumer received."""
    received: list[list[tuple[int, int]]] = [[] for _ in range(consumers)]
    # Draw every schedule up front so the tasks' interleaving does not change the draws.
    pauses = [[rng.random() < 0.3 for _ in range(items_per_producer)] for _ in range(producers)]
    # The first producer starts with a burst one longer than the queue, offered without a
    # checkpoint, so a small queue is certain to overflow at least once.
    pauses[0][: queue.max_items + 1] = [False] * min(queue.max_items + 1, items_per_producer)
    batch_sizes = [rng.randint(1, 5) for _ in range(consumers)]

    async def produce(number: int) -> None:
        for sequence in range(items_per_producer):
            queue.put_nowait((number, sequence))
            if pauses[number][sequence]:
                await anyio.lowlevel.checkpoint()

    async def consume(number: int) -> None:
        try:
            while True:
                if batch_sizes[number] == 1:
                    received[number].append(await queue.get())
                else:
                    received[number].extend(await queue.get_batch(batch_sizes[number]))
        except EndOfStream:
            return

    async with anyio.create_task_group() as consumers_tg:
        for number in range(consumers):
            consumers_tg.start_soon(consume, number)
        async with anyio.create_task_group() as producers_tg:
            for number in range(producers):
                producers_tg.start_soon(produce, number)
        queue.close()
    queue._check()
    return received


async def test_many_producers_and_consumers_lose_nothing_below_the_bound(seed: int) -> None:
    rng = random.Random(seed)
    producers, items, consumers = rng.randint(2, 6), rng.randint(50, 300), rng.randint(1, 5)
    queue: LeakyQueue[tuple[int, int]] = LeakyQueue(
        producers * items, policy=DropPolicy.DROP_NEWEST, name="big"
    )
    with anyio.fail_after(TEST_DEADLINE_SECS):
        received = await run_producers_and_consumers(queue, rng, producers, items, consumers)
    everything = sorted(item for per_consumer in received for item in per_consumer)
    assert everything == [(p, s) for p in range(producers) for s in range(items)]
    for per_consumer in received:
        # One consumer sees each producer's items in the order they were offered.
        for producer in range(producers):
            sequences = [s for p, s in per_consumer if p == producer]
            assert sequences == sorted(sequences)
    assert queue.statistics().dropped == 0


@pytest.mark.parametrize("policy", list(DropPolicy))
async def test_many_producers_overrunning_a_small_queue_balance_the_books(
    policy: DropPolicy, seed: int
) -> None:
    rng = random.Random(seed)
    producers, items, consumers = rng.randint(2, 6), rng.randint(200, 500), rng.randint(1, 3)
    queue: LeakyQueue[tuple[int, int]] = LeakyQueue(rng.randint(1, 8), policy=policy, name="small")
    with anyio.fail_after(TEST_DEADLINE_SECS):
        received = await run_producers_and_consumers(queue, rng, producers, items, consumers)
    taken = [item for per_consumer in received for item in per_consumer]
    stats = queue.statistics()
    assert len(taken) == len(set(taken)), "an item was delivered twice"
    assert stats.offered == producers * items
    assert stats.taken == len(taken)
    assert stats.offered == stats.taken + stats.dropped
    assert stats.queued == 0
    assert stats.dropped > 0, "the producers were meant to overrun the queue"


async def test_consumers_cancelled_at_random_neither_lose_nor_duplicate_items(
    seed: int, long_run: bool
) -> None:
    """Consumers come and go (cancelled while parked, while woken, or between items) while
    producers offer. Every offered item must end up exactly once: received, dropped or still
    queued. (Replays exactly on asyncio; trio shuffles its run queue, so there a seed replays
    the draws but not necessarily the interleaving.)"""
    rng = random.Random(seed)
    rounds = 2_000 if long_run else 300
    queue: LeakyQueue[int] = LeakyQueue(rng.randint(1, 16), policy=DropPolicy.EVICT_OLDEST)
    received: list[int] = []
    scopes: list[anyio.CancelScope] = []

    async def consume(scope: anyio.CancelScope) -> None:
        with scope:
            while True:
                if rng.random() < 0.5:
                    received.append(await queue.get())
                else:
                    received.extend(await queue.get_batch(rng.randint(1, 4)))

    next_item = 0
    with anyio.fail_after(TEST_DEADLINE_SECS * (10 if long_run else 1)):
        async with anyio.create_task_group() as tg:
            for _ in range(rounds):
                roll = rng.random()
                if roll < 0.45:
                    for _ in range(rng.randint(1, 6)):
                        queue.put_nowait(next_item)
                        next_item += 1
                elif roll < 0.65 or not scopes:
                    scope = anyio.CancelScope()
                    scopes.append(scope)
                    tg.start_soon(consume, scope)
                else:
                    scopes.pop(rng.randrange(len(scopes))).cancel()
                if rng.random() < 0.9:
                    await anyio.lowlevel.checkpoint()
                else:
                    await anyio.wait_all_tasks_blocked()
                queue._check()
            for scope in scopes:
                scope.cancel()
    stats = queue.statistics()
    assert len(received) == len(set(received)), "an item was delivered twice"
    assert stats.offered == next_item
    assert stats.taken == len(received)
    assert stats.offered == stats.taken + stats.dropped + stats.queued
    assert stats.consumers_waiting == 0
    # Items come out in offer order across all consumers taken together.
    assert received == sorted(received)
