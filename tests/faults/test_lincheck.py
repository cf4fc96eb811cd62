"""The linearizability checker on hand-made histories, and against a brute-force oracle.

Each named test is a small history whose verdict one can see by hand: a stale read, a lost
acknowledged write, overlapping writes, unknown outcomes that did and did not take effect, the
test-and-set table of protocol §11 rule 8, the single-key compare-and-set sequence. The
randomized tests compare the search with a brute-force enumeration of every order on small
histories (seeded; ``PARAKOON_SEED`` replays one) and check that a register simulated honestly
always yields a linearizable history, however much the intervals overlap.
"""

from __future__ import annotations

import itertools
import os
import random
from collections.abc import Iterator

import pytest

from .lincheck import (
    INFINITY,
    Operation,
    OpKind,
    Outcome,
    Verdict,
    check_history,
    check_key,
    relevant,
    step,
)
from .seeds import seeded

K = b"k"


class History:
    """A builder for hand-made histories: ``h.set(b"a", 0, 1)`` and so on."""

    def __init__(self) -> None:
        self.ops: list[Operation] = []

    def _add(
        self,
        kind: OpKind,
        t_call: float,
        t_return: float | None,
        *,
        key: bytes = K,
        value: bytes | None = None,
        expected: bytes | None = None,
        result: bytes | bool | None = None,
        outcome: Outcome = Outcome.OK,
        client: int = 0,
    ) -> Operation:
        if t_return is None:
            outcome = Outcome.UNKNOWN
        op = Operation(
            op_id=len(self.ops),
            client=client,
            kind=kind,
            key=key,
            value=value,
            expected=expected,
            t_call=t_call,
            t_return=INFINITY if t_return is None else t_return,
            outcome=outcome,
            result=result,
        )
        self.ops.append(op)
        return op

    def set(self, value: bytes, t_call: float, t_return: float | None, **kw: object) -> Operation:
        return self._add(OpKind.SET, t_call, t_return, value=value, **kw)  # type: ignore[arg-type]

    def get(self, result: bytes | None, t_call: float, t_return: float, **kw: object) -> Operation:
        return self._add(OpKind.GET, t_call, t_return, result=result, **kw)  # type: ignore[arg-type]

    def tas(
        self,
        expected: bytes | None,
        wanted: bytes | None,
        before: bytes | None,
        t_call: float,
        t_return: float | None,
        **kw: object,
    ) -> Operation:
        return self._add(
            OpKind.TEST_AND_SET,
            t_call,
            t_return,
            expected=expected,
            value=wanted,
            result=before,
            **kw,  # type: ignore[arg-type]
        )

    def cas(
        self,
        expected: bytes | None,
        new: bytes,
        applied: bool | None,
        t_call: float,
        t_return: float | None,
        **kw: object,
    ) -> Operation:
        return self._add(
            OpKind.CAS,
            t_call,
            t_return,
            expected=expected,
            value=new,
            result=applied,
            **kw,  # type: ignore[arg-type]
        )

    def verdict(self, **kw: object) -> Verdict:
        return check_key(K, self.ops, **kw).verdict  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# Named histories


def test_empty_history_is_linearizable() -> None:
    assert check_history([]).verdict is Verdict.LINEARIZABLE


def test_sequential_history_is_linearizable() -> None:
    h = History()
    h.get(None, 0, 1)
    h.set(b"a", 2, 3)
    h.get(b"a", 4, 5)
    h.tas(b"a", b"b", b"a", 6, 7)
    h.get(b"b", 8, 9)
    h.cas(b"b", b"c", True, 10, 11)
    h.cas(b"b", b"d", False, 12, 13)
    h.get(b"c", 14, 15)
    assert h.verdict() is Verdict.LINEARIZABLE


def test_stale_read_after_a_newer_acknowledged_write_is_a_violation() -> None:
    h = History()
    h.set(b"1", 0, 1)
    h.set(b"2", 2, 3)
    h.get(b"1", 4, 5)
    report = check_key(K, h.ops)
    assert report.verdict is Verdict.VIOLATION
    # The report names the read that cannot be placed and shows the write it contradicts.
    assert "get(b'k') -> b'1'" in report.context
    assert "set(b'k', b'2')" in report.context


def test_stale_read_concurrent_with_the_newer_write_is_fine() -> None:
    h = History()
    h.set(b"1", 0, 1)
    h.set(b"2", 2, 5)
    h.get(b"1", 3, 4)
    h.get(b"2", 6, 7)
    assert h.verdict() is Verdict.LINEARIZABLE


def test_lost_acknowledged_write_is_a_violation() -> None:
    h = History()
    h.set(b"a", 0, 1)
    h.get(None, 2, 3)
    assert h.verdict() is Verdict.VIOLATION


def test_lost_acknowledged_write_seen_by_test_and_set_is_a_violation() -> None:
    h = History()
    h.set(b"a", 0, 1)
    h.tas(None, b"b", None, 2, 3)  # it saw the key absent: the acknowledged write vanished
    assert h.verdict() is Verdict.VIOLATION


def test_concurrent_overlapping_writes_may_land_in_either_order() -> None:
    for last in (b"a", b"b"):
        h = History()
        h.set(b"a", 0, 10, client=1)
        h.set(b"b", 1, 9, client=2)
        h.get(last, 11, 12)
        h.get(last, 13, 14)
        assert h.verdict() is Verdict.LINEARIZABLE, last


def test_concurrent_overlapping_writes_cannot_flip_back() -> None:
    h = History()
    h.set(b"a", 0, 10, client=1)
    h.set(b"b", 1, 9, client=2)
    h.get(b"a", 11, 12)
    h.get(b"b", 13, 14)
    assert h.verdict() is Verdict.VIOLATION


def test_reads_during_overlapping_writes_must_agree_on_one_order() -> None:
    # Two readers see a then b and b then a, both while the writes are in flight: there is no
    # single order of the two writes that explains both readers.
    h = History()
    h.set(b"a", 0, 10, client=1)
    h.set(b"b", 0, 10, client=2)
    h.get(b"a", 1, 2, client=3)
    h.get(b"b", 3, 4, client=3)
    h.get(b"b", 1, 2, client=4)
    h.get(b"a", 3, 4, client=4)
    assert h.verdict() is Verdict.VIOLATION


def test_touching_intervals_count_as_concurrent() -> None:
    # The write returns at the instant the read is called: the clock cannot order them.
    h = History()
    h.set(b"a", 0, 1)
    h.get(None, 1, 2)
    assert h.verdict() is Verdict.LINEARIZABLE


def test_unknown_write_that_took_effect_later() -> None:
    h = History()
    h.set(b"a", 0, None)
    h.get(None, 1, 2)
    h.get(b"a", 3, 4)  # a new master chose the value long after the client gave up
    assert h.verdict() is Verdict.LINEARIZABLE


def test_unknown_write_that_never_took_effect() -> None:
    h = History()
    h.set(b"a", 0, None)
    h.set(b"b", 1, 2)
    h.get(b"b", 3, 4)
    h.get(b"b", 5, 6)
    assert h.verdict() is Verdict.LINEARIZABLE


def test_unknown_write_cannot_take_effect_twice() -> None:
    h = History()
    h.set(b"a", 0, None)
    h.get(b"a", 1, 2)
    h.set(b"b", 3, 4)
    h.get(b"a", 5, 6)
    assert h.verdict() is Verdict.VIOLATION


def test_unknown_write_cannot_take_effect_before_it_was_called() -> None:
    h = History()
    h.get(b"a", 0, 1)
    h.set(b"a", 2, None)
    assert h.verdict() is Verdict.VIOLATION


def test_unknown_test_and_set_only_writes_when_expected_matches() -> None:
    h = History()
    h.set(b"x", 0, 1)
    h.tas(b"other", b"y", None, 2, None)  # unknown answer; it cannot have written y
    h.get(b"y", 3, 4)
    assert h.verdict() is Verdict.VIOLATION
    h = History()
    h.set(b"x", 0, 1)
    h.tas(b"x", b"y", None, 2, None)
    h.get(b"y", 3, 4)
    assert h.verdict() is Verdict.LINEARIZABLE


def test_unknown_cas_may_apply_or_not() -> None:
    for seen in (b"x", b"y"):
        h = History()
        h.set(b"x", 0, 1)
        h.cas(b"x", b"y", None, 2, None)
        h.get(seen, 3, 4)
        assert h.verdict() is Verdict.LINEARIZABLE, seen


def test_failed_cas_is_an_observation() -> None:
    # The assertion failed although nothing but the expected value was ever there.
    h = History()
    h.set(b"x", 0, 1)
    h.cas(b"x", b"y", False, 2, 3)
    assert h.verdict() is Verdict.VIOLATION
    h = History()
    h.set(b"x", 0, 1)
    h.cas(b"x", b"y", True, 2, 3)
    h.get(b"x", 4, 5)  # the sequence said it wrote y
    assert h.verdict() is Verdict.VIOLATION


def test_cas_on_an_absent_key() -> None:
    h = History()
    h.cas(None, b"a", True, 0, 1)
    h.cas(None, b"b", False, 2, 3)
    h.get(b"a", 4, 5)
    assert h.verdict() is Verdict.LINEARIZABLE


@pytest.mark.parametrize(
    ("current", "expected", "wanted", "after", "answer"),
    [
        # The table of protocol §11 rule 8, row by row.
        (None, None, b"w", b"w", None),
        (None, None, None, None, None),
        (None, b"e", b"w", None, None),
        (b"v", None, b"w", b"v", b"v"),
        (b"v", b"v", b"w", b"w", b"v"),
        (b"v", b"v", None, None, b"v"),
        (b"v", b"e", b"w", b"v", b"v"),
    ],
)
def test_test_and_set_follows_the_protocol_table(
    current: bytes | None,
    expected: bytes | None,
    wanted: bytes | None,
    after: bytes | None,
    answer: bytes | None,
) -> None:
    h = History()
    h.tas(expected, wanted, answer, 0, 1)
    op = h.ops[0]
    assert step(current, op) == (True, after)
    h.get(after, 2, 3)
    assert check_key(K, h.ops, initial=current).verdict is Verdict.LINEARIZABLE
    wrong = History()
    wrong.tas(expected, wanted, b"nonsense", 0, 1)
    assert check_key(K, wrong.ops, initial=current).verdict is Verdict.VIOLATION


def test_definite_failures_and_failed_reads_are_dropped() -> None:
    h = History()
    h.set(b"a", 0, 1)
    h.set(b"b", 2, 3, outcome=Outcome.FAILED)  # NOT_MASTER: never proposed
    h.get(b"zzz", 4, 5, outcome=Outcome.FAILED)  # a failed read observed nothing
    h.get(b"a", 6, 7)
    assert [op.op_id for op in relevant(h.ops)] == [0, 3]
    assert h.verdict() is Verdict.LINEARIZABLE


def test_keys_are_checked_independently() -> None:
    h = History()
    h.set(b"a", 0, 1, key=b"one")
    h.set(b"a", 0, 1, key=b"two")
    h.get(b"a", 2, 3, key=b"one")
    h.get(None, 2, 3, key=b"two")  # lost write on key "two" only
    report = check_history(h.ops)
    assert report.verdict is Verdict.VIOLATION
    verdicts = {k.key: k.verdict for k in report.keys}
    assert verdicts == {b"one": Verdict.LINEARIZABLE, b"two": Verdict.VIOLATION}
    assert "key b'two': NOT linearizable" in report.describe()


def test_out_of_budget_is_reported_as_unknown_not_as_violation() -> None:
    # Many concurrent writes, all of them read later in an order no linearization explains
    # (v0 twice with v1 in between): deciding it means trying the orders of all the writes.
    h = History()
    for c in range(10):
        h.set(f"v{c}".encode(), 0, 10, client=c)
    for c in range(10):
        h.get(f"v{c}".encode(), 11, 12, client=10 + c)
    h.get(b"v0", 13, 14)
    h.get(b"v1", 15, 16)
    h.get(b"v0", 17, 18)
    full = check_key(K, h.ops)
    assert full.verdict is Verdict.VIOLATION
    assert full.steps > 1000
    assert h.verdict(steps_max=50) is Verdict.UNKNOWN
    report = check_history(h.ops, steps_max_per_key=50)
    assert report.verdict is Verdict.UNKNOWN
    assert "undecided after" in report.describe()


def test_out_of_time_is_reported_as_unknown_too() -> None:
    h = History()
    for c in range(12):
        h.set(f"v{c}".encode(), 0, 10, client=c)
    for c in range(12):
        h.get(f"v{c}".encode(), 11, 12, client=12 + c)
    report = check_history(h.ops, time_budget_secs=0.0)
    assert report.verdict is Verdict.UNKNOWN
    assert report.keys[0].steps <= 4096 + 1  # the clock is read every 4096 steps


def test_operation_rejects_inconsistent_times() -> None:
    with pytest.raises(ValueError, match="unknown outcome"):
        Operation(
            op_id=1, client=0, kind=OpKind.SET, key=K, value=b"a", t_call=0, t_return=1,
            outcome=Outcome.UNKNOWN,
        )  # fmt: skip
    with pytest.raises(ValueError, match="out of order"):
        Operation(
            op_id=2, client=0, kind=OpKind.SET, key=K, value=b"a", t_call=2, t_return=1,
            outcome=Outcome.OK,
        )  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Randomized: against a brute-force oracle, and on honest simulated registers


def brute_force_linearizable(ops: list[Operation], initial: bytes | None = None) -> bool:
    """Try every order of every subset that keeps all completed operations (tiny histories)."""
    ops = relevant(ops)
    must = [op for op in ops if op.outcome is not Outcome.UNKNOWN]
    maybe = [op for op in ops if op.outcome is Outcome.UNKNOWN]
    for r in range(len(maybe) + 1):
        for extra in itertools.combinations(maybe, r):
            chosen = must + list(extra)
            for order in itertools.permutations(chosen):
                if _respects_real_time(order) and _replays(order, initial):
                    return True
    return False


def _respects_real_time(order: tuple[Operation, ...]) -> bool:
    return all(not (b.t_return < a.t_call) for a, b in itertools.combinations(order, 2))


def _replays(order: tuple[Operation, ...], initial: bytes | None) -> bool:
    state = initial
    for op in order:
        fits, state = step(state, op)
        if not fits:
            return False
    return True


VALUES = (None, b"a", b"b")


def random_history(rng: random.Random, n: int) -> list[Operation]:
    """Arbitrary operations with arbitrary answers: mostly not linearizable."""
    ops = []
    for i in range(n):
        t_call = rng.randrange(10)
        unknown = rng.random() < 0.2
        t_return = INFINITY if unknown else t_call + rng.randrange(4)
        kind = rng.choice(list(OpKind))
        if kind is OpKind.GET:
            unknown = False
            t_return = t_call + rng.randrange(4)
        result: bytes | bool | None = None
        if kind is OpKind.CAS:
            result = None if unknown else rng.random() < 0.5
        elif kind in (OpKind.GET, OpKind.TEST_AND_SET):
            result = rng.choice(VALUES)
        ops.append(
            Operation(
                op_id=i,
                client=i,
                kind=kind,
                key=K,
                value=rng.choice(VALUES[1:])
                if kind is not OpKind.TEST_AND_SET
                else rng.choice(VALUES),
                expected=rng.choice(VALUES),
                t_call=t_call,
                t_return=t_return,
                outcome=Outcome.UNKNOWN if unknown else Outcome.OK,
                result=result,
            )
        )
    return ops


def test_search_agrees_with_brute_force_on_small_random_histories() -> None:
    rng = random.Random(seeded())
    rounds = 3000 if os.environ.get("PARAKOON_LONG") else 400
    verdicts = {True: 0, False: 0}
    for _ in range(rounds):
        ops = random_history(rng, rng.randrange(1, 7))
        initial = rng.choice(VALUES)
        expected = brute_force_linearizable(ops, initial)
        got = check_key(K, ops, initial=initial).verdict
        assert got is (Verdict.LINEARIZABLE if expected else Verdict.VIOLATION), "\n".join(
            map(repr, ops)
        )
        verdicts[expected] += 1
    # Both verdicts must actually have been exercised for the comparison to mean anything.
    assert verdicts[True] > rounds // 10 and verdicts[False] > rounds // 10, verdicts


def honest_history(rng: random.Random, clients: int, per_client: int) -> Iterator[Operation]:
    """Clients with overlapping intervals on a real register; each operation takes effect at a
    random instant inside its interval, and some answers are lost (unknown)."""
    events = []
    op_id = 0
    for c in range(clients):
        t = rng.random()
        for _ in range(per_client):
            start = t + rng.random()
            end = start + rng.random() * 3
            events.append((rng.uniform(start, end), start, end, c, op_id))
            op_id += 1
            t = end
    state: bytes | None = None
    for counter, (_, start, end, c, i) in enumerate(sorted(events), start=1):
        kind = rng.choice(list(OpKind))
        new = f"v{counter}".encode()
        expected = rng.choice([state, b"v1", None])
        before = state
        result: bytes | bool | None = None
        match kind:
            case OpKind.GET:
                result = state
            case OpKind.SET:
                state = new
            case OpKind.TEST_AND_SET:
                result = before
                if state == expected:
                    state = new
            case OpKind.CAS:
                result = state == expected
                if result:
                    state = new
        lost = kind is not OpKind.GET and rng.random() < 0.1
        yield Operation(
            op_id=i,
            client=c,
            kind=kind,
            key=K,
            value=new,
            expected=expected,
            t_call=start,
            t_return=INFINITY if lost else end,
            outcome=Outcome.UNKNOWN if lost else Outcome.OK,
            result=None if lost else result,
        )


def test_honest_register_histories_are_linearizable_and_a_corrupted_read_is_not() -> None:
    rng = random.Random(seeded())
    rounds = 200 if os.environ.get("PARAKOON_LONG") else 30
    for _ in range(rounds):
        ops = list(honest_history(rng, clients=rng.randrange(2, 6), per_client=40))
        report = check_history(ops)
        assert report.verdict is Verdict.LINEARIZABLE, report.describe()
        # A read of a value nobody ever wrote cannot be explained by any order.
        reads = [k for k, op in enumerate(ops) if op.kind is OpKind.GET]
        if reads:
            k = rng.choice(reads)
            old = ops[k]
            ops[k] = Operation(
                op_id=old.op_id,
                client=old.client,
                kind=OpKind.GET,
                key=K,
                t_call=old.t_call,
                t_return=old.t_return,
                outcome=Outcome.OK,
                result=b"never-written",
            )
            bad = check_history(ops)
            assert bad.verdict is Verdict.VIOLATION, bad.describe()
            assert f"#{old.op_id} get" in bad.describe()
