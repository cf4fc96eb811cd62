"""The store's own machinery: the deferred ordered index, ``_check()`` and the transaction view."""

from __future__ import annotations

import pytest

from parakoon_kv import Delete, Sequence, Set, Store, Transaction


def test_new_keys_wait_in_pending_until_an_ordered_query() -> None:
    """New keys enter the sorted index lazily; ordered queries see them all the same."""
    store = Store()
    store.apply_batch(0, [Set(key=b"b", value=b""), Set(key=b"a", value=b"")])
    assert store._pending == {b"a", b"b"}
    assert len(store._keys) == 0
    store._check()
    assert store.range(None, True, None, True, -1) == [b"a", b"b"]
    assert store._pending == set()
    assert list(store._keys) == [b"a", b"b"]
    store._check()


def test_pending_keys_are_merged_when_the_bound_is_passed() -> None:
    """More than ``pending_keys_max`` waiting keys trigger the merge, inside a batch too."""
    store = Store(pending_keys_max=2)
    store.apply_batch(0, [Set(key=bytes([n]), value=b"") for n in range(5)])
    assert len(store._pending) <= 2
    store._check()
    with pytest.raises(ValueError, match="pending_keys_max"):
        Store(pending_keys_max=-1)


def test_rollback_removes_keys_from_pending_or_index() -> None:
    """A rolled-back request removes the keys it created wherever they are by then."""
    store = Store(pending_keys_max=1)
    store.apply_batch(0, [Set(key=b"keep", value=b"1")])
    store.range(None, True, None, True, -1)
    bad = Sequence(
        updates=(
            Set(key=b"n1", value=b""),
            Set(key=b"n2", value=b""),
            Set(key=b"n3", value=b""),  # passes the bound: n1..n3 merge into the index
            Delete(key=b"keep"),
            Set(key=b"keep", value=b"2"),
            Delete(key=b"missing"),
        )
    )
    [result] = store.apply_batch(1, [bad])
    assert result is not None
    store._check()
    assert store.range_entries(None, True, None, True, -1) == [(b"keep", b"1")]


def test_check_catches_broken_invariants() -> None:
    """``_check()`` notices each kind of damage it promises to look for."""

    def damaged(how: str) -> Store:
        store = Store()
        store.apply_batch(0, [Set(key=b"a", value=b"1"), Set(key=b"b", value=b"2")])
        store.range(None, True, None, True, -1)
        store._check()
        if how == "unindexed key":
            store._data[b"c"] = b"3"
        elif how == "stale index entry":
            del store._data[b"a"]
        elif how == "indexed and pending":
            store._data[b"c"] = b"3"
            store._keys.add(b"c")
            store._pending.add(b"c")
        elif how == "value not bytes":
            store._data[b"a"] = "text"  # type: ignore[assignment]
        elif how == "transaction left open":
            store._undo = []
        elif how == "negative applied_i":
            store._applied_i = -5
        return store

    for how in (
        "unindexed key",
        "stale index entry",
        "indexed and pending",
        "value not bytes",
        "transaction left open",
        "negative applied_i",
    ):
        with pytest.raises(AssertionError):
            damaged(how)._check()


def test_items_from_iterates_in_order_from_a_key() -> None:
    """``items_from`` walks the live store in ascending order from a key (inclusive)."""
    store = Store()
    store.apply_batch(0, [Set(key=k, value=k * 2) for k in (b"c", b"a", b"b", b"")])
    assert list(store.items_from(b"b")) == [(b"b", b"bb"), (b"c", b"cc")]
    assert [k for k, _ in store.items_from()] == [b"", b"a", b"b", b"c"]


def test_transaction_view_is_closed_after_the_block() -> None:
    """A Transaction is usable only inside its block; nested transactions are refused."""
    store = Store()
    views: list[Transaction] = []
    with store.transaction(0) as txn:
        views.append(txn)
        txn.set(b"k", b"v")
        with pytest.raises(RuntimeError, match="already running"):
            store.apply_batch(1, [])
    with pytest.raises(RuntimeError, match="closed"):
        views[0].set(b"x", b"")
    with pytest.raises(RuntimeError, match="closed"):
        views[0].get(b"k")
    assert store.get(b"k") == b"v"
    store._check()
