"""The pure dropping rules of LeakyBuffer, tested without any event loop."""

from __future__ import annotations

import random
from collections import deque

import pytest

from parakoon_queue import DropPolicy, LeakyBuffer, OfferOutcome

QUEUED = OfferOutcome.QUEUED
DROPPED_NEWEST = OfferOutcome.DROPPED_NEWEST
EVICTED_OLDEST = OfferOutcome.EVICTED_OLDEST


@pytest.mark.parametrize("bad", [0, -1, 1.5, "3", True, None])
def test_max_items_must_be_a_positive_int(bad: object) -> None:
    with pytest.raises(ValueError, match="max_items must be a positive int"):
        LeakyBuffer(bad, policy=DropPolicy.DROP_NEWEST)  # type: ignore[arg-type]


def test_policy_must_be_a_drop_policy() -> None:
    with pytest.raises(TypeError, match="policy must be a DropPolicy"):
        LeakyBuffer(3, policy="evict_oldest")  # type: ignore[arg-type]


def test_drop_newest_keeps_what_is_queued_and_counts_the_refused_items() -> None:
    buffer: LeakyBuffer[str] = LeakyBuffer(3, policy=DropPolicy.DROP_NEWEST)
    outcomes = [buffer.offer(item) for item in "abcde"]
    assert outcomes == [QUEUED, QUEUED, QUEUED, DROPPED_NEWEST, DROPPED_NEWEST]
    assert buffer.peek_all() == ["a", "b", "c"]
    assert (buffer.offered, buffer.dropped, buffer.taken, len(buffer)) == (5, 2, 0, 3)
    assert buffer.take() == "a"
    assert buffer.offer("f") is QUEUED
    assert buffer.peek_all() == ["b", "c", "f"]
    assert (buffer.offered, buffer.dropped, buffer.taken, len(buffer)) == (6, 2, 1, 3)
    buffer._check()


def test_evict_oldest_keeps_the_newest_items_and_counts_the_evicted_ones() -> None:
    buffer: LeakyBuffer[str] = LeakyBuffer(3, policy=DropPolicy.EVICT_OLDEST)
    outcomes = [buffer.offer(item) for item in "abcde"]
    assert outcomes == [QUEUED, QUEUED, QUEUED, EVICTED_OLDEST, EVICTED_OLDEST]
    assert buffer.peek_all() == ["c", "d", "e"]
    assert (buffer.offered, buffer.dropped, buffer.taken, len(buffer)) == (5, 2, 0, 3)
    assert buffer.take() == "c"
    assert buffer.offer("f") is QUEUED
    assert buffer.offer("g") is EVICTED_OLDEST
    assert buffer.peek_all() == ["e", "f", "g"]
    assert (buffer.offered, buffer.dropped, buffer.taken) == (7, 3, 1)
    buffer._check()


@pytest.mark.parametrize("policy", list(DropPolicy))
def test_a_buffer_of_one_item(policy: DropPolicy) -> None:
    buffer: LeakyBuffer[int] = LeakyBuffer(1, policy=policy)
    assert buffer.offer(1) is QUEUED
    expected = EVICTED_OLDEST if policy is DropPolicy.EVICT_OLDEST else DROPPED_NEWEST
    assert buffer.offer(2) is expected
    assert buffer.take() == (2 if policy is DropPolicy.EVICT_OLDEST else 1)
    assert not buffer
    with pytest.raises(IndexError):
        buffer.take()
    buffer._check()


def test_take_batch_returns_oldest_first_and_at_most_the_bound() -> None:
    buffer: LeakyBuffer[int] = LeakyBuffer(10, policy=DropPolicy.DROP_NEWEST)
    for item in range(7):
        buffer.offer(item)
    assert buffer.take_batch(3) == [0, 1, 2]
    assert buffer.take_batch(10) == [3, 4, 5, 6]  # fewer than asked: everything
    assert buffer.take_batch(5) == []
    assert (buffer.offered, buffer.taken, buffer.dropped) == (7, 7, 0)
    for item in range(4):
        buffer.offer(item)
    assert buffer.take_batch(4) == [0, 1, 2, 3]  # exactly the count: the copy-and-clear path
    buffer._check()


def test_take_batch_rejects_a_non_positive_bound() -> None:
    buffer: LeakyBuffer[int] = LeakyBuffer(2, policy=DropPolicy.DROP_NEWEST)
    with pytest.raises(ValueError, match="max_items must be >= 1, got 0"):
        buffer.take_batch(0)


def test_repr_names_the_counters() -> None:
    buffer: LeakyBuffer[int] = LeakyBuffer(2, policy=DropPolicy.EVICT_OLDEST)
    for item in range(3):
        buffer.offer(item)
    assert repr(buffer) == (
        "LeakyBuffer(queued=2, max_items=2, policy=EVICT_OLDEST, offered=3, dropped=1)"
    )
    assert buffer.max_items == 2
    assert buffer.policy is DropPolicy.EVICT_OLDEST


class OracleBuffer:
    """The dropping rules written as plainly as possible, to compare LeakyBuffer against."""

    def __init__(self, max_items: int, policy: DropPolicy) -> None:
        self.items: list[int] = []
        self.max_items = max_items
        self.policy = policy
        self.offered = 0
        self.dropped = 0
        self.taken = 0

    def offer(self, item: int) -> OfferOutcome:
        self.offered += 1
        if len(self.items) < self.max_items:
            self.items.append(item)
            return QUEUED
        self.dropped += 1
        if self.policy is DropPolicy.DROP_NEWEST:
            return DROPPED_NEWEST
        del self.items[0]
        self.items.append(item)
        return EVICTED_OLDEST

    def take_batch(self, count: int) -> list[int]:
        batch, self.items = self.items[:count], self.items[count:]
        self.taken += len(batch)
        return batch


@pytest.mark.parametrize("policy", list(DropPolicy))
def test_random_operations_agree_with_the_oracle(
    policy: DropPolicy, seed: int, long_run: bool
) -> None:
    rng = random.Random(seed)
    operations = 200_000 if long_run else 20_000
    max_items = rng.randint(1, 12)
    buffer: LeakyBuffer[int] = LeakyBuffer(max_items, policy=policy)
    oracle = OracleBuffer(max_items, policy)
    recent: deque[str] = deque(maxlen=8)  # the last operations, shown when a check fails
    for step in range(operations):
        roll = rng.random()
        if roll < 0.55:
            recent.append(f"offer({step})")
            assert buffer.offer(step) is oracle.offer(step), (seed, list(recent))
        elif roll < 0.85:
            recent.append("take")
            if oracle.items:
                assert buffer.take() == oracle.take_batch(1)[0], (seed, list(recent))
            else:
                with pytest.raises(IndexError):
                    buffer.take()
        else:
            count = rng.randint(1, max_items + 2)
            recent.append(f"take_batch({count})")
            assert buffer.take_batch(count) == oracle.take_batch(count), (seed, list(recent))
        buffer._check()
        assert buffer.peek_all() == oracle.items, (seed, list(recent))
        assert (buffer.offered, buffer.dropped, buffer.taken) == (
            oracle.offered,
            oracle.dropped,
            oracle.taken,
        ), (seed, list(recent))
    assert buffer.offered == buffer.taken + buffer.dropped + len(buffer)
