# spec: docs/spec/arakoon-client-protocol.md
"""The ordered byte-string store that a parakoon node answers clients from.

Theory of operation
-------------------

The store maps byte strings to byte strings, ordered by unsigned byte-wise comparison (Python's
own ``bytes`` order). Every byte value is allowed in keys and values; ``b""`` is a valid key and a
valid value. It keeps two structures:

* ``_data``, a plain ``dict``, answers point lookups (get, exists, multi_get) in O(1);
* ``_keys``, a ``SortedList`` of the keys, answers ordered queries (range, prefix, dumps).

A key that is new to the store is not put into ``_keys`` right away. It goes into ``_pending``, a
set of keys that are in ``_data`` but not yet in ``_keys``, and the ordered index takes the pending
keys in one sorted merge when an ordered query needs it, or when more than ``pending_keys_max``
have piled up. Adding a sorted run of keys to a ``SortedList`` is cheaper than adding the same keys
one by one in random order, and a bulk load (a snapshot, a catch-up, a benchmark fill) becomes
one sort instead of a million bisections. The bound keeps the pause such a merge causes on the
event loop short (about 50 ms for the default on a 1M-key store).

Writes happen only inside a transaction: ``apply_batch`` (what the node calls for every chosen
Paxos value) or ``transaction`` (a context manager for bulk loads and tests). Every write in a
transaction appends ``(key, value before)`` to an undo log, so

* a failing client request (a Delete of a missing key, a failing Assert inside a Sequence, a user
  function that raises) is rolled back to where it started, without copying the store, and the
  other requests of the batch still apply;
* an unexpected Python exception (a bug, MemoryError) rolls back the whole batch and propagates,
  so the store is never left half-applied and ``applied_i`` still names its content.

A transaction reads its own writes because it writes into the live structures. Readers never see
a half-applied batch because ``apply_batch`` runs to completion without yielding: the node calls it
synchronously on its event loop. ``freeze()`` gives a consistent copy that other threads may read
(to write a snapshot) while the live store moves on.

Result order of the read API is the *natural* order (ascending, or descending for
``rev_range_entries``); the codec turns that into the wire order of §2.1 of the protocol.
"""

from __future__ import annotations

import hashlib
import sys
from array import array
from collections.abc import Callable, Iterable, Iterator, Mapping
from collections.abc import Sequence as AbstractSequence
from contextlib import contextmanager
from itertools import islice
from typing import Any, Final, TypeAlias, assert_never

from sortedcontainers import SortedList

from parakoon_kv.crc import CrcFunction, crc32c
from parakoon_kv.errors import (
    AssertionFailed,
    BadInput,
    BatchOrderError,
    KvError,
    NotFound,
    UnknownFailure,
    UserFunctionFailure,
)
from parakoon_kv.snapshot import (
    BLOCK_BYTES_DEFAULT,
    SnapshotReader,
    SnapshotWriter,
    read_snapshot_with_meta,
    write_snapshot,
)
from parakoon_kv.updates import (
    Assert,
    AssertExists,
    AssertRange,
    Delete,
    DeletePrefix,
    Nop,
    Replace,
    Sequence,
    Set,
    TestAndSet,
    Update,
    UserFunction,
)

__all__ = [
    "PENDING_KEYS_MAX_DEFAULT",
    "SEQUENCE_DEPTH_MAX",
    "FrozenStore",
    "Result",
    "Store",
    "Transaction",
    "UserFunctionBody",
    "UserFunctionRegistry",
    "prefix_end",
]

#: Default bound on keys waiting to enter the ordered index (see the theory of operation).
PENDING_KEYS_MAX_DEFAULT: Final = 1 << 15

#: Deepest nesting of Sequence updates the store applies. Deeper nesting would exhaust Python's
#: stack; the request fails with ``UnknownFailure`` instead (the reference server also answers
#: "unknown failure" for sequences it cannot handle). The codec should refuse such input earlier.
SEQUENCE_DEPTH_MAX: Final = 64

#: What one client request of a batch produced: ``None`` (unit), ``bytes | None`` (test_and_set,
#: replace, user_function), ``int`` (delete_prefix) or the ``KvError`` it failed with.
Result: TypeAlias = bytes | int | KvError | None

_DIGEST_DOMAIN: Final = b"parakoon-kv digest v1\n"
_DIGEST_CHUNK_ENTRIES: Final = 4096


def prefix_end(prefix: bytes) -> bytes | None:
    """The smallest key greater than every key that starts with ``prefix``, or None if unbounded.

    Trailing 0xff bytes cannot be incremented, so they are dropped first: every key starting with
    ``b"a\\xff"`` is below ``b"b"``. A prefix of only 0xff bytes (or b"") has no upper bound.
    """
    stem = prefix.rstrip(b"\xff")
    if not stem:
        return None
    return stem[:-1] + bytes((stem[-1] + 1,))


def entry_hash(key: bytes, value: bytes) -> int:
    """The 64-bit hash of one entry that ``Store.content_hash`` XORs together."""
    h = hashlib.blake2b(len(key).to_bytes(4, "little"), digest_size=8)
    h.update(key)
    h.update(value)
    return int.from_bytes(h.digest(), "little")


def content_hash_of(items: Iterable[tuple[bytes, bytes]]) -> int:
    """``Store.content_hash`` computed from scratch over ``items`` (O(n))."""
    acc = 0
    for key, value in items:
        acc ^= entry_hash(key, value)
    return acc


def _entries_digest(keys: Iterable[bytes], data: Mapping[bytes, bytes]) -> bytes:
    """SHA-256 of the entries in key order, in groups of ``_DIGEST_CHUNK_ENTRIES``.

    Each group is hashed as its key lengths, its value lengths (u32 little-endian each), its keys
    and its values, like a snapshot block. The groups are cut by entry count, so the digest
    depends on the content alone; the per-entry work runs in C (array, map, join).
    """
    hasher = hashlib.sha256(_DIGEST_DOMAIN)
    iterator = iter(keys)
    while chunk := list(islice(iterator, _DIGEST_CHUNK_ENTRIES)):
        values = list(map(data.__getitem__, chunk))
        key_lengths = array("I", map(len, chunk))
        value_lengths = array("I", map(len, values))
        if sys.byteorder != "little":
            key_lengths.byteswap()
            value_lengths.byteswap()
        hasher.update(key_lengths)
        hasher.update(value_lengths)
        hasher.update(b"".join(chunk))
        hasher.update(b"".join(values))
    return hasher.digest()


UserFunctionBody: TypeAlias = "Callable[[Transaction, bytes | None], bytes | None]"


class UserFunctionRegistry:
    """Named, deterministic functions that run inside a transaction (USER_FUNCTION, §8.4).

    A function gets the request's ``Transaction`` (reads see the transaction's own writes) and the
    optional argument, and returns ``bytes | None``. It must be deterministic: every node runs it
    on its own replica and must reach the same state. To fail with a protocol error it raises a
    ``KvError`` (``NotFound.for_get()`` gives the protocol's ``Not_found``); any other exception
    rolls the request back and becomes ``UserFunctionFailure`` with the printed exception.
    """

    __slots__ = ("_functions",)

    def __init__(self, functions: Mapping[str, UserFunctionBody] | None = None) -> None:
        self._functions: dict[str, UserFunctionBody] = {}
        for name, body in (functions or {}).items():
            self.register(name, body)

    def register(self, name: str, body: UserFunctionBody) -> None:
        """Add ``body`` under ``name``. Raises ValueError if the name is already taken."""
        if name in self._functions:
            raise ValueError(f"user function {name!r} is already registered")
        self._functions[name] = body

    def __contains__(self, name: object) -> bool:
        return name in self._functions

    def get(self, name: str) -> UserFunctionBody | None:
        """The function registered as ``name``, or None."""
        return self._functions.get(name)

    def names(self) -> list[str]:
        """The registered names, sorted."""
        return sorted(self._functions)


class Transaction:
    """The view of the store inside one transaction: reads see the transaction's own writes.

    User functions receive one; ``Store.transaction`` yields one. It is only valid while its
    transaction (or user function call) runs; afterwards every method raises RuntimeError.
    Failing methods raise ``KvError`` subclasses, exactly like the updates of the same name.
    """

    __slots__ = ("_open", "_store")

    def __init__(self, store: Store) -> None:
        self._store = store
        self._open = True

    def _live(self) -> Store:
        if not self._open:
            raise RuntimeError("this transaction view is closed: its transaction has ended")
        return self._store

    def get(self, key: bytes) -> bytes | None:
        """The value of ``key``, or None if absent. O(1)."""
        return self._live()._data.get(key)  # noqa: SLF001 (Transaction is the store's own view)

    def exists(self, key: bytes) -> bool:
        """Whether ``key`` is present. O(1)."""
        return key in self._live()._data  # noqa: SLF001 (Transaction is the store's own view)

    def set(self, key: bytes, value: bytes) -> None:
        """Store ``value`` under ``key``. O(1) amortized (the index is updated lazily)."""
        # The liveness check is inlined: this is the bulk-load path.
        if not self._open:
            self._live()
        self._store._put(key, value)  # noqa: SLF001 (Transaction is the store's own view)

    def delete(self, key: bytes) -> None:
        """Remove ``key``. Raises NotFound (message = key) if absent. O(log n)."""
        if self._live()._remove(key) is None:  # noqa: SLF001 (Transaction is the store's own view)
            raise NotFound.for_key(key)

    def apply(self, update: Update) -> Result:
        """Apply one update of the update language; raises its ``KvError`` on failure.

        A failure does not undo the update's own partial effects by itself: the enclosing
        request is rolled back as a whole when the error leaves the user function or transaction.
        """
        return self._live()._apply(update, 0)  # noqa: SLF001 (Transaction is the store's own view)

    def range_entries(
        self,
        first: bytes | None,
        first_inclusive: bool,
        last: bytes | None,
        last_inclusive: bool,
        max: int,
    ) -> list[tuple[bytes, bytes]]:
        """As ``Store.range_entries``."""
        return self._live().range_entries(first, first_inclusive, last, last_inclusive, max)

    def prefix_keys(self, prefix: bytes, max: int = -1) -> list[bytes]:
        """As ``Store.prefix_keys``."""
        return self._live().prefix_keys(prefix, max)


class Store:
    """Ordered byte-string map with Arakoon's update language, transactions and snapshots.

    Construct an empty store with ``Store()``, or rebuild one from a snapshot with
    ``Store.load(stream)``. Complexities: n is the number of keys, k the size of a result.
    """

    __slots__ = (
        "_applied_i",
        "_content_hash",
        "_data",
        "_keys",
        "_pending",
        "_pending_keys_max",
        "_undo",
        "_user_functions",
        "meta",
    )

    def __init__(
        self,
        *,
        user_functions: UserFunctionRegistry | None = None,
        pending_keys_max: int = PENDING_KEYS_MAX_DEFAULT,
    ) -> None:
        if pending_keys_max < 0:
            raise ValueError(f"pending_keys_max must be >= 0, got {pending_keys_max}")
        self._data: dict[bytes, bytes] = {}
        self._keys: Any = SortedList()  # SortedList[bytes]; sortedcontainers ships no types.
        self._pending: set[bytes] = set()
        self._pending_keys_max = pending_keys_max
        self._applied_i: int | None = None
        # XOR of entry_hash over every entry, kept with each write (see content_hash).
        self._content_hash = 0
        # The undo log of the running transaction; None when no transaction runs.
        self._undo: list[tuple[bytes, bytes | None]] | None = None
        self._user_functions = (
            user_functions if user_functions is not None else (UserFunctionRegistry())
        )
        # Opaque bytes kept with the store in its snapshots and not part of its content (the
        # node keeps its replicated membership here); set it together with applying a batch.
        self.meta = b""

    @classmethod
    def _from_sorted(
        cls,
        keys: list[bytes],
        values: list[bytes],
        applied_i: int | None,
        *,
        user_functions: UserFunctionRegistry | None = None,
        pending_keys_max: int = PENDING_KEYS_MAX_DEFAULT,
    ) -> Store:
        """A store holding ``keys`` (strictly ascending, checked by the caller) and ``values``."""
        store = cls(user_functions=user_functions, pending_keys_max=pending_keys_max)
        store._data = dict(zip(keys, values, strict=True))
        store._content_hash = content_hash_of(zip(keys, values, strict=True))
        store._keys.update(keys)
        store._applied_i = applied_i
        return store

    # ----------------------------------------------------------------------------------------
    # Bookkeeping

    @property
    def applied_i(self) -> int | None:
        """Number of the last batch applied (None for a store that never applied one)."""
        return self._applied_i

    @property
    def user_functions(self) -> UserFunctionRegistry:
        """The registry USER_FUNCTION requests are looked up in."""
        return self._user_functions

    def key_count(self) -> int:
        """Number of keys. O(1)."""
        return len(self._data)

    def _index(self) -> Any:
        """The ordered key index, with every pending key merged in. O(p log n) for p pending."""
        pending = self._pending
        if pending:
            # SortedList.update sorts the new keys; when they are many compared with the index it
            # rebuilds the whole list in one sort, which is what makes bulk loads cheap.
            self._keys.update(pending)
            pending.clear()
        return self._keys

    def _insert_key(self, key: bytes) -> None:
        """Register a key that was just added to ``_data``."""
        pending = self._pending
        pending.add(key)
        if len(pending) > self._pending_keys_max:
            self._index()

    def _drop_key(self, key: bytes) -> None:
        """Unregister a key that was just removed from ``_data``."""
        pending = self._pending
        if key in pending:
            pending.discard(key)
        else:
            self._keys.remove(key)

    # ----------------------------------------------------------------------------------------
    # Reads (natural order; the codec produces the wire order)

    def get(self, key: bytes) -> bytes:
        """The value of ``key``. Raises NotFound with message ``Not_found`` (§11 rule 1). O(1)."""
        try:
            return self._data[key]
        except KeyError:
            raise NotFound.for_get(key) from None

    def get_option(self, key: bytes) -> bytes | None:
        """The value of ``key``, or None if absent. O(1)."""
        return self._data.get(key)

    def exists(self, key: bytes) -> bool:
        """Whether ``key`` is present; never fails (§11 rule 2). O(1)."""
        return key in self._data

    def would_change(self, key: bytes, value: bytes) -> bool:
        """Whether SET(key, value) would change the store: CONFIRM's test (§11 rule 12). O(1)."""
        return self._data.get(key) != value

    def multi_get(self, keys: Iterable[bytes]) -> list[bytes]:
        """The values of ``keys``, in the order given. O(k).

        Raises NotFound with the first missing key (in the order given) as message, and returns no
        partial result (§8.3, §11 rule 3). The protocol answers MULTI_GET in the reverse of the
        request's wire order and reports the missing key nearest the end of the wire order, so the
        node passes the wire keys reversed and sends this result as it is.
        """
        data = self._data
        values: list[bytes] = []
        for key in keys:
            value = data.get(key)
            if value is None:
                raise NotFound.for_key(key)
            values.append(value)
        return values

    def multi_get_option(self, keys: Iterable[bytes]) -> list[bytes | None]:
        """The value or None for each of ``keys``, in the order given; never fails. O(k)."""
        get = self._data.get
        return [get(key) for key in keys]

    def assert_value(self, key: bytes, expected: bytes | None) -> None:
        """ASSERT as a read: raises AssertionFailed (message = key) unless the key's state is
        exactly ``expected`` (None = absent) (§8.2, §11 rule 10). O(1)."""
        if self._data.get(key) != expected:
            raise AssertionFailed(key)

    def assert_exists(self, key: bytes) -> None:
        """ASSERTEXISTS as a read: raises AssertionFailed (message = key) if absent. O(1)."""
        if key not in self._data:
            raise AssertionFailed(key)

    def _irange(  # noqa: PLR0917 (mirrors the protocol's argument list, plus the direction)
        self,
        first: bytes | None,
        first_inclusive: bool,
        last: bytes | None,
        last_inclusive: bool,
        max: int,
        reverse: bool,
    ) -> Iterator[bytes]:
        # ``first``/``last`` are the low/high ends here. A missing low end is the empty key, not
        # "unbounded": that is how the reference server behaves, so with an exclusive low end the
        # key b"" is left out (§11 rule 4). A missing high end is unbounded.
        keys = self._index().irange(
            b"" if first is None else first,
            last,
            (first_inclusive, last_inclusive),
            reverse=reverse,
        )
        if max < 0:
            return iter(keys)
        return islice(keys, max)

    def range(
        self,
        first: bytes | None,
        first_inclusive: bool,
        last: bytes | None,
        last_inclusive: bool,
        max: int,
    ) -> list[bytes]:
        """RANGE (§8.3): keys k with first <= k (< if not first_inclusive) and k <= last (<),
        **ascending**; None bounds as §11 rule 4; max < 0 = all, else the ``max`` smallest.
        ``first > last`` gives []. O(log n + k)."""
        return list(self._irange(first, first_inclusive, last, last_inclusive, max, False))

    def range_entries(
        self,
        first: bytes | None,
        first_inclusive: bool,
        last: bytes | None,
        last_inclusive: bool,
        max: int,
    ) -> list[tuple[bytes, bytes]]:
        """RANGE_ENTRIES (§8.3): as ``range`` but (key, value) pairs, ascending. O(log n + k)."""
        data = self._data
        keys = self._irange(first, first_inclusive, last, last_inclusive, max, False)
        return [(key, data[key]) for key in keys]

    def rev_range_entries(
        self,
        first: bytes | None,
        first_inclusive: bool,
        last: bytes | None,
        last_inclusive: bool,
        max: int,
    ) -> list[tuple[bytes, bytes]]:
        """REV_RANGE_ENTRIES (§8.3): pairs walked from high to low, **descending**.

        ``first`` is the *upper* bound (None = from the largest key), ``last`` the *lower* bound
        (None = the empty key, so an exclusive None low end leaves b"" out, §11 rule 4). ``max``
        keeps the ``max`` largest keys (max < 0 = all). O(log n + k).
        """
        data = self._data
        keys = self._irange(last, last_inclusive, first, first_inclusive, max, True)
        return [(key, data[key]) for key in keys]

    def prefix_keys(self, prefix: bytes, max: int = -1) -> list[bytes]:
        """PREFIX_KEYS (§8.3): the keys starting with ``prefix``, ascending, the ``max`` smallest
        (max < 0 = all). An empty prefix matches every key. O(log n + k)."""
        return list(self._prefix_iter(prefix, max))

    def _prefix_iter(self, prefix: bytes, max: int = -1) -> Iterator[bytes]:
        keys = self._index().irange(prefix, prefix_end(prefix), (True, False))
        if max < 0:
            return iter(keys)
        return islice(keys, max)

    def items_from(self, key: bytes = b"") -> Iterator[tuple[bytes, bytes]]:
        """(key, value) pairs in ascending order from ``key`` (inclusive).

        The iterator reads the live store: finish it before the next write (the event loop does
        this naturally if no ``await`` happens in between); to iterate at leisure, ``freeze()``.
        """
        data = self._data
        for k in self._index().irange(key, None):
            yield k, data[k]

    def content_hash(self) -> int:
        """A 64-bit hash of the content, kept up to date with every write: O(1).

        The XOR of a BLAKE2b hash of each entry, so it depends on the content alone (not on the
        order of writes, ``applied_i`` or the index). Replicas compare it at equal applied slots
        to detect a forked store; it is a checksum against accidents, not a cryptographic
        commitment (``digest`` is the strong, O(n) one).
        """
        return self._content_hash

    def digest(self) -> bytes:
        """SHA-256 over the content (keys and values in key order) and nothing else.

        Two stores with the same content have the same digest whatever their history,
        ``applied_i`` or index state. O(n).
        """
        return _entries_digest(self._index(), self._data)

    def freeze(self) -> FrozenStore:
        """A consistent, immutable copy to read (dump, digest) while this store moves on.

        Costs a ``dict.copy()`` and a list of the sorted keys: O(n) on the caller's thread (about
        0.15 s for 1M keys, see docs/kv.md); the copies share the key and value objects.
        """
        return FrozenStore(
            applied_i=self._applied_i,
            data=self._data.copy(),
            keys=list(self._index()),
            meta=self.meta,
        )

    def dump(
        self,
        stream: SnapshotWriter,
        *,
        crc: CrcFunction = crc32c,
        block_bytes: int = BLOCK_BYTES_DEFAULT,
    ) -> int:
        """Write the whole store as a snapshot (format in ``parakoon_kv.snapshot``).

        Returns the number of bytes written. Must not interleave with writes; to dump while
        writes continue, ``freeze()`` first and dump the frozen copy.
        """
        return write_snapshot(
            stream,
            applied_i=self._applied_i,
            keys=self._index(),
            data=self._data,
            crc=crc,
            block_bytes=block_bytes,
            meta=self.meta,
        )

    @classmethod
    def load(
        cls,
        stream: SnapshotReader,
        *,
        crc: CrcFunction = crc32c,
        user_functions: UserFunctionRegistry | None = None,
        pending_keys_max: int = PENDING_KEYS_MAX_DEFAULT,
    ) -> Store:
        """Rebuild a store from a snapshot written by ``dump``; verifies every checksum, count
        and the key order. Raises SnapshotError naming the byte offset of the problem."""
        applied_i, keys, values, meta = read_snapshot_with_meta(stream, crc=crc)
        store = cls._from_sorted(
            keys,
            values,
            applied_i,
            user_functions=user_functions,
            pending_keys_max=pending_keys_max,
        )
        store.meta = meta
        return store

    # ----------------------------------------------------------------------------------------
    # Writes

    def _check_next(self, i: int) -> None:
        if self._undo is not None:
            raise RuntimeError(f"batch {i}: a transaction is already running on this store")
        if i < 0 or (self._applied_i is not None and i <= self._applied_i):
            raise BatchOrderError(
                f"batch {i} cannot follow applied_i={self._applied_i}: batch numbers must grow"
            )

    def apply_batch(self, i: int, updates: AbstractSequence[Update]) -> list[Result]:
        """Apply the requests of chosen value ``i`` in order, as one transaction; set applied_i.

        Returns one result per request (see ``parakoon_kv.updates`` for each update's result).
        A request that fails is rolled back on its own and its ``KvError`` is its result; the
        other requests still apply. ``i`` must be above ``applied_i`` (else BatchOrderError). An
        unexpected exception rolls back the whole batch, leaves applied_i as it was, and
        propagates. O(total size of the updates), plus O(log n) per deleted or removed key.
        """
        self._check_next(i)
        undo: list[tuple[bytes, bytes | None]] = []
        self._undo = undo
        results: list[Result] = []
        append = results.append
        data = self._data
        pending = self._pending
        try:
            for update in updates:
                if type(update) is Set:
                    # The hot path, inlined: a Set cannot fail, so it needs no rollback mark.
                    key = update.key
                    old = data.get(key)
                    value = update.value
                    data[key] = value
                    undo.append((key, old))
                    self._content_hash ^= entry_hash(key, value) ^ (
                        0 if old is None else entry_hash(key, old)
                    )
                    if old is None:
                        pending.add(key)
                        if len(pending) > self._pending_keys_max:
                            self._index()
                    append(None)
                    continue
                mark = len(undo)
                try:
                    append(self._apply(update, 0))
                except KvError as err:
                    self._rollback(mark)
                    append(err)
        except BaseException:
            self._rollback(0)
            raise
        finally:
            self._undo = None
        self._applied_i = i
        return results

    @contextmanager
    def transaction(self, i: int) -> Iterator[Transaction]:
        """A transaction numbered ``i`` (above applied_i), for bulk loads and tests.

        Everything done through the yielded ``Transaction`` commits together when the block ends,
        with ``applied_i = i``; if the block raises (a ``KvError`` included), everything is rolled
        back and the exception propagates.
        """
        self._check_next(i)
        self._undo = []
        view = Transaction(self)
        try:
            yield view
        except BaseException:
            self._rollback(0)
            raise
        finally:
            view._open = False  # noqa: SLF001 (Transaction is the store's own view)
            self._undo = None
        self._applied_i = i

    def _rollback(self, mark: int) -> None:
        """Undo the running transaction's writes back to undo-log length ``mark``."""
        undo = self._undo
        assert undo is not None, "rollback outside a transaction"
        data = self._data
        while len(undo) > mark:
            key, old = undo.pop()
            cur = data.get(key)
            self._content_hash ^= (0 if cur is None else entry_hash(key, cur)) ^ (
                0 if old is None else entry_hash(key, old)
            )
            if old is None:
                del data[key]
                self._drop_key(key)
            elif key not in data:
                data[key] = old
                self._insert_key(key)
            else:
                data[key] = old

    def _put(self, key: bytes, value: bytes) -> None:
        undo = self._undo
        assert undo is not None, "write outside a transaction"
        data = self._data
        old = data.get(key)
        data[key] = value
        undo.append((key, old))
        self._content_hash ^= entry_hash(key, value) ^ (0 if old is None else entry_hash(key, old))
        if old is None:
            # _insert_key, inlined because this is the hot path of transactions.
            pending = self._pending
            pending.add(key)
            if len(pending) > self._pending_keys_max:
                self._index()

    def _remove(self, key: bytes) -> bytes | None:
        """Remove ``key`` if present; return its value (None if it was absent)."""
        undo = self._undo
        assert undo is not None, "write outside a transaction"
        old = self._data.pop(key, None)
        if old is not None:
            undo.append((key, old))
            self._content_hash ^= entry_hash(key, old)
            self._drop_key(key)
        return old

    def _delete_prefix(self, prefix: bytes) -> int:
        undo = self._undo
        assert undo is not None, "write outside a transaction"
        keys = self._index()
        start = keys.bisect_left(prefix)
        end = prefix_end(prefix)
        stop = len(keys) if end is None else keys.bisect_left(end)
        if start >= stop:
            return 0
        doomed: list[bytes] = keys[start:stop]
        del keys[start:stop]
        pop = self._data.pop
        removed = [(key, pop(key)) for key in doomed]
        undo.extend(removed)
        self._content_hash ^= content_hash_of(removed)
        return len(doomed)

    def _run_user_function(self, name: str, arg: bytes | None) -> bytes | None:
        body = self._user_functions.get(name)
        if body is None:
            raise BadInput.unknown_user_function(name)
        view = Transaction(self)
        try:
            result = body(view, arg)
        except KvError:
            raise
        except Exception as exc:
            # The protocol's message is "the printed exception"; repr() prints its type and text.
            raise UserFunctionFailure(repr(exc).encode("utf-8", "backslashreplace")) from exc
        finally:
            view._open = False  # noqa: SLF001 (Transaction is the store's own view)
        if result is not None and not isinstance(result, bytes):
            raise UserFunctionFailure(
                f"user function {name!r} returned {type(result).__name__}, "
                "not bytes or None".encode()
            )
        return result

    def _apply(self, update: Update, depth: int) -> Result:
        """Apply one update inside the running transaction; raise its KvError on failure.

        The caller rolls back to its own mark on failure; this method does not clean up after
        itself. ``depth`` is the Sequence nesting level of ``update``.
        """
        data = self._data
        match update:
            case Set(key=key, value=value):
                self._put(key, value)
                return None
            case Delete(key=key):
                if self._remove(key) is None:
                    raise NotFound.for_key(key)
                return None
            case TestAndSet(key=key, expected=expected, wanted=wanted):
                old = data.get(key)
                if old == expected:
                    if wanted is None:
                        self._remove(key)
                    else:
                        self._put(key, wanted)
                return old
            case Replace(key=key, wanted=wanted):
                if wanted is None:
                    return self._remove(key)
                old = data.get(key)
                self._put(key, wanted)
                return old
            case Assert(key=key, expected=expected):
                if data.get(key) != expected:
                    raise AssertionFailed(key)
                return None
            case AssertExists(key=key):
                if key not in data:
                    raise AssertionFailed(key)
                return None
            case AssertRange(prefix=prefix, keys=expected_keys):
                found = tuple(self._prefix_iter(prefix))
                if found != tuple(expected_keys):
                    raise AssertionFailed(
                        b"Assert_range "
                        + repr(prefix).encode()
                        + b": expected "
                        + repr(list(expected_keys)).encode()
                        + b", found "
                        + repr(list(found)).encode()
                    )
                return None
            case DeletePrefix(prefix=prefix):
                return self._delete_prefix(prefix)
            case Nop():
                return None
            case UserFunction(name=name, arg=arg):
                return self._run_user_function(name, arg)
            case Sequence(updates=inner):
                if depth >= SEQUENCE_DEPTH_MAX:
                    raise UnknownFailure(
                        f"sequence nested deeper than {SEQUENCE_DEPTH_MAX} levels".encode()
                    )
                for item in inner:
                    self._apply(item, depth + 1)
                return None
            case _:
                assert_never(update)

    # ----------------------------------------------------------------------------------------
    # Invariants

    def _check(self) -> None:
        """Assert every invariant of the store; O(n log n). Called by the stress tests."""
        data = self._data
        keys = self._keys
        pending = self._pending
        keys._check()  # noqa: SLF001 (SortedList's own check)
        assert self._undo is None, "a transaction is still running"
        assert self._applied_i is None or self._applied_i >= 0, f"applied_i={self._applied_i!r}"
        assert len(pending) <= self._pending_keys_max, (
            f"{len(pending)} pending keys exceed the bound {self._pending_keys_max}"
        )
        assert len(keys) + len(pending) == len(data), (
            f"index {len(keys)} + pending {len(pending)} != data {len(data)}"
        )
        previous: bytes | None = None
        for key in keys:
            assert type(key) is bytes, f"key {key!r} is not bytes"
            assert key in data, f"indexed key {key!r} missing from data"
            assert key not in pending, f"key {key!r} both indexed and pending"
            assert previous is None or previous < key, f"keys out of order at {key!r}"
            previous = key
        for key in pending:
            assert type(key) is bytes, f"pending key {key!r} is not bytes"
            assert key in data, f"pending key {key!r} missing from data"
        for key, value in data.items():
            assert type(key) is bytes, f"key {key!r} is not bytes"
            assert type(value) is bytes, f"value of {key!r} is not bytes: {value!r}"
        assert self._content_hash == content_hash_of(data.items()), "content_hash drifted"


class FrozenStore:
    """An immutable copy of a store's content, made by ``Store.freeze()``.

    It shares nothing mutable with the live store, so another thread may read it (dump a
    snapshot, compute a digest) while the event loop keeps applying batches.
    """

    __slots__ = ("_applied_i", "_data", "_keys", "meta")

    def __init__(
        self,
        *,
        applied_i: int | None,
        data: dict[bytes, bytes],
        keys: list[bytes],
        meta: bytes = b"",
    ):
        self._applied_i = applied_i
        self._data = data
        self._keys = keys
        self.meta = meta

    @property
    def applied_i(self) -> int | None:
        """``applied_i`` of the store when it was frozen."""
        return self._applied_i

    def key_count(self) -> int:
        """Number of keys. O(1)."""
        return len(self._keys)

    def get_option(self, key: bytes) -> bytes | None:
        """The value of ``key`` or None. O(1)."""
        return self._data.get(key)

    def items(self) -> Iterator[tuple[bytes, bytes]]:
        """All (key, value) pairs in ascending key order."""
        data = self._data
        for key in self._keys:
            yield key, data[key]

    def digest(self) -> bytes:
        """The same digest ``Store.digest()`` gave at the moment of freezing."""
        return _entries_digest(self._keys, self._data)

    def dump(
        self,
        stream: SnapshotWriter,
        *,
        crc: CrcFunction = crc32c,
        block_bytes: int = BLOCK_BYTES_DEFAULT,
    ) -> int:
        """Write this content as a snapshot, exactly as ``Store.dump`` would have."""
        return write_snapshot(
            stream,
            applied_i=self._applied_i,
            keys=self._keys,
            data=self._data,
            crc=crc,
            block_bytes=block_bytes,
            meta=self.meta,
        )
