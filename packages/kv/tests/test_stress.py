"""Seeded stress test: random batches of random updates (nested sequences with failing asserts,
user functions, prefix deletes) and random reads, against a plain dict + ``sorted()`` oracle, with
``_check()`` after every batch.

The default run does 100,000 operations; ``PARAKOON_LONG=1`` does 2,000,000. ``PARAKOON_SEED``
replays a seed printed by a failing run.
"""

from __future__ import annotations

import io
import random

from parakoon_kv import (
    Assert,
    AssertExists,
    AssertionFailed,
    AssertRange,
    BadInput,
    Delete,
    DeletePrefix,
    KvError,
    Nop,
    NotFound,
    Replace,
    Result,
    Sequence,
    Set,
    Store,
    TestAndSet,
    Transaction,
    Update,
    UserFunction,
    UserFunctionFailure,
    UserFunctionRegistry,
    load,
)

OPS_DEFAULT = 100_000
OPS_LONG = 2_000_000
BATCH_REQUESTS_MAX = 12
SEQUENCE_LENGTH_MAX = 5
SEQUENCE_DEPTH_MAX = 3

# A small alphabet gives many collisions, the empty key, 0xff prefixes and prefix relations.
ALPHABET = (b"\x00", b"a", b"b", b"\xff")
VALUES = (b"", b"0", b"1", b"xyz")
# Stands for AssertRange's free-text message in the oracle; no random key looks like it.
ASSERT_RANGE_MARK = b"<assert_range>"


KEY_LENGTH_MAX_DEFAULT = 3


class KeyRng(random.Random):
    """A seeded generator that also knows how long its random keys may be."""

    key_length_max = KEY_LENGTH_MAX_DEFAULT


def random_key(rng: random.Random) -> bytes:
    length_max = getattr(rng, "key_length_max", KEY_LENGTH_MAX_DEFAULT)
    return b"".join(rng.choice(ALPHABET) for _ in range(rng.randrange(length_max + 1)))


def random_value(rng: random.Random) -> bytes:
    return rng.choice(VALUES)


def maybe_value(rng: random.Random) -> bytes | None:
    return None if rng.random() < 0.3 else random_value(rng)


# ------------------------------------------------------------------------------------------------
# User functions, and their oracle twins


def uf_append(txn: Transaction, arg: bytes | None) -> bytes | None:
    """Append ``arg`` to the value of key b"a" (creating it) and return the new value."""
    value = (txn.get(b"a") or b"") + (arg or b"")
    txn.set(b"a", value[-8:])
    return txn.get(b"a")


def uf_move(txn: Transaction, arg: bytes | None) -> bytes | None:
    """Move the value of key ``arg`` to key b"b"; NotFound (key) when absent."""
    key = arg or b""
    value = txn.get(key)
    txn.delete(key)  # raises NotFound when absent
    assert value is not None
    txn.set(b"b", value)
    return value


def uf_explode(txn: Transaction, arg: bytes | None) -> bytes | None:
    """Write, then fail with an ordinary exception."""
    txn.set(b"\xff", b"boom")
    raise RuntimeError("explode")


def uf_first_of(txn: Transaction, arg: bytes | None) -> bytes | None:
    """Return the first key starting with ``arg``, or None."""
    keys = txn.prefix_keys(arg or b"", 1)
    return keys[0] if keys else None


REGISTRY = UserFunctionRegistry(
    {"append": uf_append, "move": uf_move, "explode": uf_explode, "first_of": uf_first_of}
)
UF_NAMES = (*REGISTRY.names(), "missing")


def oracle_user_function(d: dict[bytes, bytes], name: str, arg: bytes | None) -> bytes | None:
    if name == "append":
        d[b"a"] = ((d.get(b"a") or b"") + (arg or b""))[-8:]
        return d[b"a"]
    if name == "move":
        key = arg or b""
        if key not in d:
            raise NotFound.for_key(key)
        value = d.pop(key)
        d[b"b"] = value
        return value
    if name == "explode":
        raise UserFunctionFailure(b"RuntimeError('explode')")
    if name == "first_of":
        keys = sorted(k for k in d if k.startswith(arg or b""))
        return keys[0] if keys else None
    raise BadInput.unknown_user_function(name)


# ------------------------------------------------------------------------------------------------
# The oracle: the protocol's rules written the simplest way


def oracle_apply(d: dict[bytes, bytes], update: Update) -> Result:
    """Apply ``update`` to ``d``; raise its error (the caller restores ``d`` on failure)."""
    match update:
        case Set(key=key, value=value):
            d[key] = value
            return None
        case Delete(key=key):
            if key not in d:
                raise NotFound.for_key(key)
            del d[key]
            return None
        case TestAndSet(key=key, expected=expected, wanted=wanted):
            old = d.get(key)
            if old == expected:
                if wanted is None:
                    d.pop(key, None)
                else:
                    d[key] = wanted
            return old
        case Replace(key=key, wanted=wanted):
            old = d.get(key)
            if wanted is None:
                d.pop(key, None)
            else:
                d[key] = wanted
            return old
        case Assert(key=key, expected=expected):
            if d.get(key) != expected:
                raise AssertionFailed(key)
            return None
        case AssertExists(key=key):
            if key not in d:
                raise AssertionFailed(key)
            return None
        case AssertRange(prefix=prefix, keys=keys):
            if tuple(sorted(k for k in d if k.startswith(prefix))) != keys:
                raise AssertionFailed(ASSERT_RANGE_MARK)  # its message is free text
            return None
        case DeletePrefix(prefix=prefix):
            doomed = [k for k in d if k.startswith(prefix)]
            for k in doomed:
                del d[k]
            return len(doomed)
        case Nop():
            return None
        case UserFunction(name=name, arg=arg):
            return oracle_user_function(d, name, arg)
        case Sequence(updates=inner):
            for item in inner:
                oracle_apply(d, item)
            return None
    raise AssertionError(f"unknown update {update!r}")


def oracle_batch(d: dict[bytes, bytes], updates: list[Update]) -> list[Result]:
    results: list[Result] = []
    for update in updates:
        saved = dict(d)
        try:
            results.append(oracle_apply(d, update))
        except KvError as err:
            d.clear()
            d.update(saved)
            results.append(err)
    return results


def oracle_range(
    d: dict[bytes, bytes],
    low: bytes | None,
    low_inclusive: bool,
    high: bytes | None,
    high_inclusive: bool,
    max: int,
    reverse: bool,
) -> list[bytes]:
    start = b"" if low is None else low  # protocol §11 rule 4: a None low end is the empty key
    keys = [
        k
        for k in sorted(d, reverse=reverse)
        if (k > start or (low_inclusive and k == start))
        and (high is None or k < high or (high_inclusive and k == high))
    ]
    return keys if max < 0 else keys[:max]


# ------------------------------------------------------------------------------------------------
# Random updates


def random_update(rng: random.Random, d: dict[bytes, bytes], depth: int) -> Update:
    roll = rng.random()
    existing = rng.choice(sorted(d)) if d and rng.random() < 0.6 else random_key(rng)
    if roll < 0.30:
        return Set(key=random_key(rng), value=random_value(rng))
    if roll < 0.40:
        return Delete(key=existing)
    if roll < 0.48:
        current = d.get(existing)
        expected = current if rng.random() < 0.5 else maybe_value(rng)
        return TestAndSet(key=existing, expected=expected, wanted=maybe_value(rng))
    if roll < 0.54:
        return Replace(key=existing, wanted=maybe_value(rng))
    if roll < 0.62:
        current = d.get(existing)
        expected = current if rng.random() < 0.7 else maybe_value(rng)
        return Assert(key=existing, expected=expected)
    if roll < 0.66:
        return AssertExists(key=existing)
    if roll < 0.69:
        prefix = random_key(rng)[:2]
        keys = tuple(sorted(k for k in d if k.startswith(prefix)))
        if rng.random() < 0.3 and keys:
            keys = keys[1:]
        return AssertRange(prefix=prefix, keys=keys)
    if roll < 0.72:
        length_max = getattr(rng, "key_length_max", KEY_LENGTH_MAX_DEFAULT)
        # Short prefixes in a wide key space would empty the store every few batches.
        cut = rng.randrange(1, 4) if length_max <= 3 else rng.randrange(3, length_max)
        return DeletePrefix(prefix=random_key(rng)[:cut])
    if roll < 0.74:
        return Nop()
    if roll < 0.80:
        return UserFunction(name=rng.choice(UF_NAMES), arg=maybe_value(rng) or existing)
    if depth >= SEQUENCE_DEPTH_MAX:
        return Set(key=random_key(rng), value=random_value(rng))
    inner = tuple(
        random_update(rng, d, depth + 1) for _ in range(rng.randrange(SEQUENCE_LENGTH_MAX + 1))
    )
    return Sequence(updates=inner, synced=rng.random() < 0.1)


def count_ops(update: Update) -> int:
    if isinstance(update, Sequence):
        return 1 + sum(count_ops(u) for u in update.updates)
    return 1


def same_result(got: Result, want: Result) -> bool:
    if isinstance(want, AssertionFailed) and want.message == ASSERT_RANGE_MARK:
        return isinstance(got, AssertionFailed) and got.message.startswith(b"Assert_range")
    return type(got) is type(want) and got == want


def check_reads(rng: random.Random, store: Store, d: dict[bytes, bytes]) -> None:
    low, high = random_key(rng), random_key(rng)
    low_o = None if rng.random() < 0.2 else low
    high_o = None if rng.random() < 0.2 else high
    li, hi = rng.random() < 0.5, rng.random() < 0.5
    max_ = rng.choice((-1, 0, 1, 2, 5, 100))
    want = oracle_range(d, low_o, li, high_o, hi, max_, False)
    assert store.range(low_o, li, high_o, hi, max_) == want
    assert store.range_entries(low_o, li, high_o, hi, max_) == [(k, d[k]) for k in want]
    # rev_range_entries: first = upper bound, last = lower bound.
    want = oracle_range(d, high_o, hi, low_o, li, max_, True)
    assert store.rev_range_entries(low_o, li, high_o, hi, max_) == [(k, d[k]) for k in want]
    prefix = random_key(rng)[:2]
    want = sorted(k for k in d if k.startswith(prefix))
    assert store.prefix_keys(prefix, max_) == (want if max_ < 0 else want[:max_])
    keys = [random_key(rng) for _ in range(rng.randrange(4))]
    assert store.multi_get_option(keys) == [d.get(k) for k in keys]
    missing = [k for k in keys if k not in d]
    if missing:
        try:
            store.multi_get(keys)
        except NotFound as err:
            assert err.message == missing[0]
        else:
            raise AssertionError("multi_get did not fail")
    else:
        assert store.multi_get(keys) == [d[k] for k in keys]
    key = random_key(rng)
    assert store.get_option(key) == d.get(key)
    assert store.exists(key) == (key in d)
    assert store.key_count() == len(d)


def run_stress(
    seed: int, ops: int, key_length_max: int = KEY_LENGTH_MAX_DEFAULT, prefill: int = 0
) -> None:
    rng = KeyRng(seed)
    rng.key_length_max = key_length_max
    pending_keys_max = rng.choice((0, 1, 3, 100, 1 << 15))
    print(f"pending_keys_max={pending_keys_max}")
    store = Store(user_functions=REGISTRY, pending_keys_max=pending_keys_max)
    d: dict[bytes, bytes] = {}
    fill: list[Update] = [Set(key=random_key(rng), value=random_value(rng)) for _ in range(prefill)]
    oracle_batch(d, fill)
    store.apply_batch(0, fill)
    store._check()
    done = 0
    i = 1
    batches = 0
    key_count_max = store.key_count()
    while done < ops:
        updates = [random_update(rng, d, 0) for _ in range(rng.randrange(BATCH_REQUESTS_MAX + 1))]
        done += sum(count_ops(u) for u in updates) or 1
        want = oracle_batch(d, updates)
        got = store.apply_batch(i, updates)
        assert len(got) == len(want)
        for n, (g, w) in enumerate(zip(got, want, strict=True)):
            assert same_result(g, w), f"batch {i} request {n} {updates[n]!r}: got {g!r}, want {w!r}"
        assert store.applied_i == i
        store._check()
        assert dict(store.items_from(b"")) == d, f"content differs after batch {i}"
        check_reads(rng, store, d)
        if rng.random() < 0.01:
            stream = io.BytesIO()
            store.dump(stream, block_bytes=rng.choice((1, 64, 1 << 20)))
            stream.seek(0)
            again = load(stream, user_functions=REGISTRY, pending_keys_max=pending_keys_max)
            again._check()
            assert again.digest() == store.digest()
            assert again.applied_i == i
            store = again
        i += rng.randrange(1, 3)
        batches += 1
        key_count_max = max(key_count_max, store.key_count())
    print(f"{done} operations in {batches} batches, up to {key_count_max} keys")


def test_stress_against_dict_oracle(seed: int, long_run: bool) -> None:
    """100,000 random operations (2,000,000 with PARAKOON_LONG=1) agree with the oracle, and every
    invariant holds after every batch."""
    run_stress(seed, OPS_LONG if long_run else OPS_DEFAULT)


def test_stress_with_a_wide_key_space(seed: int, long_run: bool) -> None:
    """Keys up to 8 bytes long: the store grows to thousands of keys, so the ordered index has
    many sublists and prefix deletes and rollbacks cross their borders."""
    run_stress(seed, 200_000 if long_run else 15_000, key_length_max=8, prefill=8_000)


def test_stress_regression_seeds() -> None:
    """Fixed seeds, so the default run always covers the same ground too."""
    for seed in (0, 1, 2):
        run_stress(seed, 5_000)
