"""``Store.content_hash``: the O(1) content checksum replicas compare to detect a fork."""

from __future__ import annotations

import io
import random

from parakoon_kv import Store
from parakoon_kv.store import content_hash_of
from parakoon_kv.updates import Delete, DeletePrefix, Sequence, Set, Update

SEED = 20261203


def test_equal_content_gives_equal_hash_whatever_the_history() -> None:
    a, b = Store(), Store()
    a.apply_batch(0, [Set(key=b"x", value=b"1"), Set(key=b"y", value=b"2")])
    b.apply_batch(0, [Set(key=b"y", value=b"0"), Set(key=b"z", value=b"9")])
    b.apply_batch(1, [Set(key=b"x", value=b"1"), Set(key=b"y", value=b"2"), Delete(key=b"z")])
    assert a.content_hash() == b.content_hash() != 0
    a.apply_batch(1, [Set(key=b"y", value=b"3")])
    assert a.content_hash() != b.content_hash()


def test_failed_requests_and_snapshots_keep_it_exact() -> None:
    rng = random.Random(SEED)
    print(f"seed={SEED}")
    store = Store()
    for i in range(300):
        updates: list[Update] = []
        for _ in range(rng.randint(1, 5)):
            key = b"k%d" % rng.randrange(40)
            roll = rng.random()
            if roll < 0.5:
                updates.append(Set(key=key, value=b"v%d" % rng.randrange(1000)))
            elif roll < 0.7:
                updates.append(Delete(key=key))  # fails (rolled back) when absent
            elif roll < 0.8:
                updates.append(DeletePrefix(prefix=b"k1"))
            else:
                # A sequence whose last step may fail: all of it is rolled back then.
                updates.append(
                    Sequence(
                        updates=(Set(key=key, value=b"s"), Delete(key=b"k%d" % rng.randrange(40)))
                    )
                )
        store.apply_batch(i, updates)
        assert store.content_hash() == content_hash_of(store.items_from()), f"batch {i}"
    buf = io.BytesIO()
    store.dump(buf)
    buf.seek(0)
    assert Store.load(buf).content_hash() == store.content_hash()
    store._check()
