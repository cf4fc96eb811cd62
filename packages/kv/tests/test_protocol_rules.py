# spec: docs/spec/arakoon-client-protocol.md
"""One test per rule of the Arakoon client protocol that the store implements.

Each docstring cites the section of ``arakoon-client-protocol.md`` it checks. Results are in the
store's natural order; the wire orders of §2.1 are the codec's business.
"""

from __future__ import annotations

import pytest

from parakoon_kv import (
    E_ASSERTION_FAILED,
    E_BAD_INPUT,
    E_NOT_FOUND,
    E_USERFUNCTION_FAILURE,
    SEQUENCE_DEPTH_MAX,
    Assert,
    AssertExists,
    AssertionFailed,
    AssertRange,
    BadInput,
    BatchOrderError,
    Delete,
    DeletePrefix,
    KvError,
    Nop,
    NotFound,
    Replace,
    Sequence,
    Set,
    Store,
    TestAndSet,
    Transaction,
    UnknownFailure,
    Update,
    UserFunction,
    UserFunctionFailure,
    UserFunctionRegistry,
    prefix_end,
)


def store_with(*pairs: tuple[bytes, bytes], registry: UserFunctionRegistry | None = None) -> Store:
    store = Store(user_functions=registry)
    store.apply_batch(0, [Set(key=k, value=v) for k, v in pairs])
    return store


def apply_one(store: Store, update: Update) -> object:
    """Apply ``update`` as the single request of the next batch and return its result."""
    i = 0 if store.applied_i is None else store.applied_i + 1
    [result] = store.apply_batch(i, [update])
    store._check()
    return result


def content(store: Store) -> dict[bytes, bytes]:
    return dict(store.range_entries(None, True, None, True, -1))


ABC = ((b"a", b"1"), (b"b", b"2"), (b"c", b"3"))


# ------------------------------------------------------------------------------------------------
# §1, §2: keys and values are arbitrary byte strings, compared as unsigned bytes


def test_empty_key_and_empty_value_are_valid() -> None:
    """§1: the empty string is a valid key and a valid value."""
    store = store_with((b"", b""))
    assert store.get(b"") == b""
    assert store.exists(b"")
    assert store.key_count() == 1
    assert store.range(None, True, None, True, -1) == [b""]


def test_keys_compare_as_unsigned_bytes() -> None:
    """§8.3 RANGE: keys are compared as unsigned bytes (0x80 sorts after 0x7f; a prefix first)."""
    keys = [b"\xff", b"\x80", b"\x7f", b"a\x00", b"a", b"\x00", b""]
    store = store_with(*((k, b"v") for k in keys))
    expected = [b"", b"\x00", b"a", b"a\x00", b"\x7f", b"\x80", b"\xff"]
    assert store.range(None, True, None, True, -1) == expected


# ------------------------------------------------------------------------------------------------
# §8.2 single-key reads, §11 rules 1 and 2


def test_get_missing_key_is_not_found_with_message_Not_found() -> None:
    """§8.2 GET, §11 rule 1: a missing key gives E_NOT_FOUND with message "Not_found"."""
    store = store_with((b"foo", b"bar"))
    assert store.get(b"foo") == b"bar"
    with pytest.raises(NotFound) as info:
        store.get(b"nope")
    assert info.value.code == E_NOT_FOUND == 0x05
    assert info.value.message == b"Not_found"
    assert info.value.key == b"nope"
    assert store.get_option(b"nope") is None


def test_exists_never_fails_for_a_missing_key() -> None:
    """§8.2 EXISTS, §11 rule 2: EXISTS answers false, never E_NOT_FOUND."""
    store = store_with((b"foo", b"bar"))
    assert store.exists(b"foo") is True
    assert store.exists(b"fo") is False


def test_assert_read_checks_exact_state_with_key_as_message() -> None:
    """§8.2 ASSERT, §11 rule 10: None means absent, Some v means exactly v; else 0x07 + key."""
    store = store_with((b"foo", b"bar"))
    store.assert_value(b"foo", b"bar")
    store.assert_value(b"nope", None)
    for key, expected in [(b"foo", b"baz"), (b"foo", None), (b"nope", b"")]:
        with pytest.raises(AssertionFailed) as info:
            store.assert_value(key, expected)
        assert info.value.code == E_ASSERTION_FAILED == 0x07
        assert info.value.message == key


def test_assert_exists_failure_uses_code_0x07() -> None:
    """§8.2 ASSERTEXISTS, §11 rule 11: failure is E_ASSERTION_FAILED (0x07, not 0x11), msg key."""
    store = store_with((b"foo", b"bar"))
    store.assert_exists(b"foo")
    with pytest.raises(AssertionFailed) as info:
        store.assert_exists(b"nope")
    assert info.value.code == 0x07
    assert info.value.message == b"nope"
    assert apply_one(store, AssertExists(key=b"nope")) == AssertionFailed(b"nope")
    assert apply_one(store, AssertExists(key=b"foo")) is None


# ------------------------------------------------------------------------------------------------
# §8.3 multi-key reads, §11 rule 3


def test_multi_get_missing_key_fails_with_that_key_and_no_partial_result() -> None:
    """§8.3 MULTI_GET, §11 rule 3: any missing key fails the whole call with E_NOT_FOUND, message =
    the first missing key in the order given (the node passes the wire keys reversed, so that is
    the missing key nearest the end of the wire order, as §8.3 says)."""
    store = store_with(*ABC)
    assert store.multi_get([b"b", b"a"]) == [b"2", b"1"]
    with pytest.raises(NotFound) as info:
        store.multi_get([b"a", b"x", b"b", b"y"])
    assert info.value.message == b"x"
    assert info.value.code == E_NOT_FOUND
    # The §8.3 example: keys "a","b" on the wire, "b" missing -> message "b".
    store2 = store_with((b"a", b"1"))
    wire = [b"a", b"b"]
    with pytest.raises(NotFound) as info:
        store2.multi_get(reversed(wire))
    assert info.value.message == b"b"


def test_multi_get_list_order_is_the_order_given() -> None:
    """§2.1, §8.3 MULTI_GET: the answer is the reverse of the wire order; the store answers in the
    order given, so the node passes the wire keys reversed and writes the result as is."""
    store = store_with(*ABC)
    wire = [b"a", b"b"]
    assert store.multi_get(list(reversed(wire))) == [b"2", b"1"]  # the §8.3 response order


def test_multi_get_option_never_fails_and_keeps_the_order() -> None:
    """§8.3 MULTI_GET_OPTION, §11 rule 3: missing keys give None; same order as the keys given."""
    store = store_with((b"a", b"1"))
    assert store.multi_get_option([b"a", b"zz"]) == [b"1", None]
    assert store.multi_get_option([]) == []


# ------------------------------------------------------------------------------------------------
# §8.3 range family, §2.1 list orders, §11 rule 4


def test_range_inclusive_and_exclusive_bounds() -> None:
    """§8.3 RANGE: first <= k (< if finc false) and k <= last (< if linc false)."""
    store = store_with(*ABC)
    assert store.range(b"a", True, b"c", True, -1) == [b"a", b"b", b"c"]
    assert store.range(b"a", False, b"c", True, -1) == [b"b", b"c"]
    assert store.range(b"a", True, b"c", False, -1) == [b"a", b"b"]
    assert store.range(b"a", False, b"c", False, -1) == [b"b"]
    # The worked example: first "a" inclusive, last "z" exclusive.
    assert store.range(b"a", True, b"z", False, -1) == [b"a", b"b", b"c"]
    # Bounds that are not keys.
    assert store.range(b"a\x00", True, b"bz", True, -1) == [b"b"]
    assert store.range(b"b", False, b"b", True, -1) == []
    assert store.range(b"b", True, b"b", True, -1) == [b"b"]


def test_range_list_order_is_ascending() -> None:
    """§2.1: RANGE is descending on the wire; the store gives the natural (ascending) order."""
    store = store_with((b"c", b"3"), (b"a", b"1"), (b"b", b"2"))
    assert store.range(None, True, None, True, -1) == [b"a", b"b", b"c"]
    assert store.range_entries(None, True, None, True, -1) == list(ABC)


def test_range_max_minus_one_means_all_and_max_keeps_the_smallest() -> None:
    """§8.3 RANGE, §2.1: max < 0 (clients send -1) = no limit, max = 0 = empty, otherwise the
    ``max`` smallest keys in iteration order."""
    store = store_with(*ABC)
    assert store.range(None, True, None, True, -1) == [b"a", b"b", b"c"]
    assert store.range(None, True, None, True, -7) == [b"a", b"b", b"c"]
    assert store.range(None, True, None, True, 0) == []
    assert store.range(None, True, None, True, 2) == [b"a", b"b"]
    assert store.range(None, True, None, True, 10) == [b"a", b"b", b"c"]
    assert store.range_entries(b"a", False, None, True, 1) == [(b"b", b"2")]


def test_range_first_greater_than_last_is_empty_not_an_error() -> None:
    """§8.3 RANGE, §11 rule 4: first > last gives an empty list."""
    store = store_with(*ABC)
    assert store.range(b"c", True, b"a", True, -1) == []
    assert store.range_entries(b"c", True, b"a", True, -1) == []
    assert store.rev_range_entries(b"a", True, b"c", True, -1) == []


def test_range_none_lower_bound_exclusive_leaves_out_the_empty_key() -> None:
    """§11 rule 4: a None lower bound is "start at the empty key", so with finc = false the key
    b"" is left out; a None upper bound is unbounded whatever linc says."""
    store = store_with((b"", b"e"), *ABC)
    assert store.range(None, True, None, True, -1) == [b"", b"a", b"b", b"c"]
    assert store.range(None, False, None, True, -1) == [b"a", b"b", b"c"]
    assert store.range(None, True, None, False, -1) == [b"", b"a", b"b", b"c"]
    assert store.range_entries(None, False, None, False, -1) == list(ABC)


def test_range_entries_worked_example() -> None:
    """§8.3 RANGE_ENTRIES: same selection as RANGE, pairs in natural (ascending) order."""
    store = store_with((b"a", b"1"), (b"b", b"2"))
    assert store.range_entries(None, True, None, True, -1) == [(b"a", b"1"), (b"b", b"2")]


def test_rev_range_entries_first_is_the_upper_bound_and_order_is_descending() -> None:
    """§8.3 REV_RANGE_ENTRIES, §2.1: ``first`` is the upper bound, ``last`` the lower bound, the
    result is descending and ``max`` keeps the largest keys (the worked example gives c, b)."""
    store = store_with(*ABC)
    assert store.rev_range_entries(None, True, None, True, 2) == [(b"c", b"3"), (b"b", b"2")]
    assert store.rev_range_entries(None, True, None, True, -1) == [
        (b"c", b"3"),
        (b"b", b"2"),
        (b"a", b"1"),
    ]
    assert store.rev_range_entries(b"c", False, b"a", True, -1) == [(b"b", b"2"), (b"a", b"1")]
    assert store.rev_range_entries(b"c", True, b"a", False, -1) == [(b"c", b"3"), (b"b", b"2")]
    assert store.rev_range_entries(b"bb", True, None, True, 1) == [(b"b", b"2")]
    assert store.rev_range_entries(None, True, None, True, 0) == []


def test_rev_range_entries_none_lower_bound_exclusive_leaves_out_the_empty_key() -> None:
    """§11 rule 4: the same quirk holds for REV_RANGE_ENTRIES' None low end with linc = false."""
    store = store_with((b"", b"e"), (b"a", b"1"))
    assert store.rev_range_entries(None, True, None, True, -1) == [(b"a", b"1"), (b"", b"e")]
    assert store.rev_range_entries(None, True, None, False, -1) == [(b"a", b"1")]
    assert store.rev_range_entries(None, False, None, True, -1) == [(b"a", b"1"), (b"", b"e")]


def test_prefix_keys_ascending_max_and_empty_prefix() -> None:
    """§8.3 PREFIX_KEYS: keys starting with the prefix, ascending (descending on the wire), the
    ``max`` smallest (negative = all); an empty prefix matches every key."""
    store = store_with((b"key1", b"1"), (b"key2", b"2"), (b"foo", b"3"), (b"ke", b"4"))
    assert store.prefix_keys(b"ke", -1) == [b"ke", b"key1", b"key2"]
    assert store.prefix_keys(b"key", 1) == [b"key1"]
    assert store.prefix_keys(b"key", 0) == []
    assert store.prefix_keys(b"", -1) == [b"foo", b"ke", b"key1", b"key2"]
    assert store.prefix_keys(b"x", -1) == []


def test_prefix_keys_with_0xff_bytes() -> None:
    """§8.3 PREFIX_KEYS: prefixes are raw bytes; trailing 0xff bytes still bound the range."""
    keys = [b"a", b"a\xff", b"a\xff\x00", b"a\xff\xff", b"b", b"\xff", b"\xff\xff\x01"]
    store = store_with(*((k, b"") for k in keys))
    assert store.prefix_keys(b"a\xff", -1) == [b"a\xff", b"a\xff\x00", b"a\xff\xff"]
    assert store.prefix_keys(b"\xff", -1) == [b"\xff", b"\xff\xff\x01"]
    assert store.prefix_keys(b"\xff\xff", -1) == [b"\xff\xff\x01"]
    assert prefix_end(b"a\xff") == b"b"
    assert prefix_end(b"\xff\xff") is None
    assert prefix_end(b"") is None


def test_get_key_count_counts_user_keys() -> None:
    """§8.3 GET_KEY_COUNT: the number of keys in the store."""
    store = store_with(*ABC)
    assert store.key_count() == 3
    apply_one(store, Delete(key=b"a"))
    assert store.key_count() == 2


# ------------------------------------------------------------------------------------------------
# §8.4 writes, §11 rules 6 to 13


def test_set_creates_and_overwrites() -> None:
    """§8.4 SET: stores the value, creating or overwriting; unit answer."""
    store = Store()
    assert apply_one(store, Set(key=b"foo", value=b"bar")) is None
    assert apply_one(store, Set(key=b"foo", value=b"baz")) is None
    assert content(store) == {b"foo": b"baz"}


def test_delete_missing_key_is_not_found_with_key_as_message() -> None:
    """§8.4 DELETE, §11 rule 6: a missing key gives E_NOT_FOUND, message = the key, store
    unchanged; an existing key is removed with a unit answer."""
    store = store_with((b"foo", b"bar"))
    result = apply_one(store, Delete(key=b"nope"))
    assert result == NotFound.for_key(b"nope")
    assert isinstance(result, NotFound)
    assert result.code == 0x05
    assert result.message == b"nope"
    assert content(store) == {b"foo": b"bar"}
    assert apply_one(store, Delete(key=b"foo")) is None
    assert content(store) == {}


def test_delete_prefix_returns_the_count() -> None:
    """§8.4 DELETE_PREFIX, §11 rule 7: removes every key with the prefix and answers the count;
    no match is success with 0; the empty prefix removes everything."""
    store = store_with((b"key1", b"1"), (b"key2", b"2"), (b"foo", b"3"))
    assert apply_one(store, DeletePrefix(prefix=b"ke")) == 2
    assert content(store) == {b"foo": b"3"}
    assert apply_one(store, DeletePrefix(prefix=b"ke")) == 0
    assert apply_one(store, DeletePrefix(prefix=b"")) == 1
    assert store.key_count() == 0


@pytest.mark.parametrize(
    ("current", "expected", "wanted", "after", "answer"),
    [
        (None, None, b"w", b"w", None),
        (None, None, None, None, None),
        (None, b"e", b"w", None, None),
        (b"v", None, b"w", b"v", b"v"),
        (b"v", b"v", b"w", b"w", b"v"),
        (b"v", b"v", None, None, b"v"),
        (b"v", b"e", b"w", b"v", b"v"),
        (b"v", b"e", None, b"v", b"v"),
        (b"", b"", b"w", b"w", b""),
        (b"", None, b"w", b"", b""),
    ],
)
def test_test_and_set_cases(
    current: bytes | None,
    expected: bytes | None,
    wanted: bytes | None,
    after: bytes | None,
    answer: bytes | None,
) -> None:
    """§8.4 TEST_AND_SET, §11 rule 8: writes ``wanted`` (None deletes) only when the current state
    equals ``expected`` (None = absent) and answers the value *before* the call (§13 item 6)."""
    store = store_with() if current is None else store_with((b"k", current))
    result = apply_one(store, TestAndSet(key=b"k", expected=expected, wanted=wanted))
    assert result == answer
    assert store.get_option(b"k") == after


def test_replace_always_writes_and_returns_the_old_value() -> None:
    """§8.4 REPLACE, §11 rule 9: sets unconditionally (None deletes, absent is fine) and answers
    the previous value."""
    store = store_with((b"foo", b"bar"))
    assert apply_one(store, Replace(key=b"foo", wanted=b"baz")) == b"bar"
    assert apply_one(store, Replace(key=b"new", wanted=b"x")) is None
    assert apply_one(store, Replace(key=b"foo", wanted=None)) == b"baz"
    assert apply_one(store, Replace(key=b"foo", wanted=None)) is None
    assert content(store) == {b"new": b"x"}


def test_assert_update_sees_earlier_updates_of_its_sequence() -> None:
    """§11 rule 10: inside a sequence an Assert is evaluated at its position, so it sees earlier
    updates; its failure rolls back everything."""
    store = Store()
    seq = Sequence(updates=(Set(key=b"k", value=b"v"), Assert(key=b"k", expected=b"v")))
    assert apply_one(store, seq) is None
    assert content(store) == {b"k": b"v"}
    seq = Sequence(updates=(Delete(key=b"k"), Assert(key=b"k", expected=b"v")))
    assert apply_one(store, seq) == AssertionFailed(b"k")
    assert content(store) == {b"k": b"v"}


def test_would_change_is_confirms_test() -> None:
    """§11 rule 12: CONFIRM writes only when the stored value differs."""
    store = store_with((b"k", b"v"))
    assert not store.would_change(b"k", b"v")
    assert store.would_change(b"k", b"w")
    assert store.would_change(b"absent", b"")


def test_sequence_atomicity_failing_sequence_leaves_nothing_behind() -> None:
    """§8.4 SEQUENCE, §11 rule 13: all updates apply in order, atomically; on failure nothing is
    applied and the error of the first failing update is the answer (§8.4 example: Delete "old"
    of a missing key gives E_NOT_FOUND "old")."""
    store = store_with((b"a", b"1"), (b"p1", b""), (b"p2", b""))
    seq = Sequence(
        updates=(
            Set(key=b"k", value=b"v"),
            Set(key=b"a", value=b"changed"),
            DeletePrefix(prefix=b"p"),
            Replace(key=b"x", wanted=b"y"),
            TestAndSet(key=b"a", expected=b"changed", wanted=None),
            Delete(key=b"old"),
            Assert(key=b"never", expected=b"reached"),
        )
    )
    before = content(store)
    digest = store.digest()
    assert apply_one(store, seq) == NotFound.for_key(b"old")
    assert content(store) == before
    assert store.digest() == digest
    ok = Sequence(updates=(Set(key=b"k", value=b"v"), Delete(key=b"a")))
    assert apply_one(store, ok) is None
    assert content(store) == {b"k": b"v", b"p1": b"", b"p2": b""}


def test_sequence_empty_is_valid() -> None:
    """§11 rule 13: an empty sequence (count 0) is valid and succeeds."""
    store = Store()
    assert apply_one(store, Sequence(updates=())) is None
    assert apply_one(store, Sequence(updates=(), synced=True)) is None
    assert apply_one(store, Nop()) is None


def test_sequence_nested_failure_rolls_back_the_whole_request() -> None:
    """§9 tag 5: sequences nest, and a failure anywhere rolls back the whole top-level request."""
    store = Store()
    inner_ok = Sequence(updates=(Set(key=b"i", value=b"1"),))
    inner_bad = Sequence(updates=(Set(key=b"j", value=b"2"), AssertExists(key=b"zz")))
    outer = Sequence(updates=(Set(key=b"o", value=b"0"), inner_ok, inner_bad))
    assert apply_one(store, outer) == AssertionFailed(b"zz")
    assert content(store) == {}
    outer = Sequence(updates=(Set(key=b"o", value=b"0"), inner_ok, Sequence(updates=())))
    assert apply_one(store, outer) is None
    assert content(store) == {b"o": b"0", b"i": b"1"}


def test_sequence_nested_too_deep_fails_cleanly() -> None:
    """§9: a sequence the server cannot handle gives "unknown failure" (0xFF), nothing applied."""
    update: Update = Set(key=b"deep", value=b"")
    for _ in range(SEQUENCE_DEPTH_MAX + 1):
        update = Sequence(updates=(update,))
    store = Store()
    result = apply_one(store, update)
    assert isinstance(result, UnknownFailure)
    assert result.code == 0xFF
    assert content(store) == {}


def test_assert_range_contains_exactly() -> None:
    """§9 tag 17: Assert_range passes when the keys with the prefix, ascending, are exactly the
    given list; otherwise E_ASSERTION_FAILED naming what was expected and found."""
    store = store_with((b"p1", b""), (b"p2", b""), (b"q", b""))
    assert apply_one(store, AssertRange(prefix=b"p", keys=(b"p1", b"p2"))) is None
    assert apply_one(store, AssertRange(prefix=b"x", keys=())) is None
    result = apply_one(store, AssertRange(prefix=b"p", keys=(b"p2", b"p1")))
    assert isinstance(result, AssertionFailed)
    assert result.code == E_ASSERTION_FAILED
    assert b"p1" in result.message
    assert isinstance(apply_one(store, AssertRange(prefix=b"p", keys=(b"p1",))), AssertionFailed)


# ------------------------------------------------------------------------------------------------
# §8.4 USER_FUNCTION


def reverse(txn: Transaction, arg: bytes | None) -> bytes | None:
    return None if arg is None else arg[::-1]


def write_then_fail(txn: Transaction, arg: bytes | None) -> bytes | None:
    txn.set(b"uf", b"written")
    raise ValueError("boom")


def counter(txn: Transaction, arg: bytes | None) -> bytes | None:
    value = int(txn.get(b"counter") or b"0") + 1
    txn.set(b"counter", str(value).encode())
    assert txn.get(b"counter") == str(value).encode()  # reads its own write
    return txn.get(b"counter")


def report_not_found(txn: Transaction, arg: bytes | None) -> bytes | None:
    txn.set(b"uf", b"written")
    raise NotFound.for_get()


def bad_return(txn: Transaction, arg: bytes | None) -> bytes | None:
    return "text"  # type: ignore[return-value]


REGISTRY = UserFunctionRegistry(
    {
        "reverse": reverse,
        "write_then_fail": write_then_fail,
        "counter": counter,
        "report_not_found": report_not_found,
        "bad_return": bad_return,
    }
)


def test_user_function_result_is_returned() -> None:
    """§8.4 USER_FUNCTION: runs the registered function and answers its option(string) result."""
    store = store_with(registry=REGISTRY)
    assert "reverse" in store.user_functions
    assert apply_one(store, UserFunction(name="reverse", arg=b"echo")) == b"ohce"
    assert apply_one(store, UserFunction(name="reverse", arg=None)) is None
    assert apply_one(store, UserFunction(name="counter", arg=None)) == b"1"
    assert apply_one(store, UserFunction(name="counter", arg=None)) == b"2"


def test_user_function_unknown_name_is_bad_input() -> None:
    """§8.4 USER_FUNCTION: an unknown name gives E_BAD_INPUT (0x26) with the exact message."""
    store = store_with(registry=REGISTRY)
    result = apply_one(store, UserFunction(name="nosuch", arg=b"x"))
    assert isinstance(result, BadInput)
    assert result.code == E_BAD_INPUT == 0x26
    assert result.message == b'User function "nosuch" could not be found'


def test_user_function_that_raises_is_rolled_back_with_0x81() -> None:
    """§8.4 USER_FUNCTION, §13 item 11: any other failure gives E_USERFUNCTION_FAILURE (0x81)
    with the printed exception, and the request's writes are rolled back."""
    store = store_with(registry=REGISTRY)
    result = apply_one(store, UserFunction(name="write_then_fail", arg=None))
    assert isinstance(result, UserFunctionFailure)
    assert result.code == E_USERFUNCTION_FAILURE == 0x81
    assert result.message == b"ValueError('boom')"
    assert store.key_count() == 0
    result = apply_one(store, UserFunction(name="bad_return", arg=None))
    assert isinstance(result, UserFunctionFailure)


def test_user_function_reporting_an_arakoon_error_gives_that_code() -> None:
    """§8.4 USER_FUNCTION: a function failing with "not found" gives E_NOT_FOUND "Not_found"."""
    store = store_with(registry=REGISTRY)
    result = apply_one(store, UserFunction(name="report_not_found", arg=None))
    assert result == NotFound.for_get()
    assert isinstance(result, KvError)
    assert result.message == b"Not_found"
    assert store.key_count() == 0


def test_user_function_inside_a_sequence_is_rolled_back_with_it() -> None:
    """§9 tag 7: a UserFunction inside a sequence takes part in its all-or-nothing transaction."""
    store = store_with(registry=REGISTRY)
    seq = Sequence(updates=(UserFunction(name="counter", arg=None), Delete(key=b"missing")))
    assert apply_one(store, seq) == NotFound.for_key(b"missing")
    assert store.key_count() == 0


def test_user_function_view_is_closed_afterwards() -> None:
    """§8.4 USER_FUNCTION: the function's view lives only as long as its call."""
    leaked: list[Transaction] = []

    def leak(txn: Transaction, arg: bytes | None) -> bytes | None:
        leaked.append(txn)
        return None

    store = store_with(registry=UserFunctionRegistry({"leak": leak}))
    assert apply_one(store, UserFunction(name="leak", arg=None)) is None
    with pytest.raises(RuntimeError, match="closed"):
        leaked[0].set(b"k", b"v")
    assert store.key_count() == 0


def test_registry_refuses_a_duplicate_name() -> None:
    """§8.4 USER_FUNCTION: names are unique in the registry."""
    registry = UserFunctionRegistry({"f": reverse})
    with pytest.raises(ValueError, match="'f'"):
        registry.register("f", reverse)
    assert registry.names() == ["f"]


# ------------------------------------------------------------------------------------------------
# Batches: one chosen Paxos value, one result per client request


def test_batch_failing_request_does_not_stop_the_others() -> None:
    """§11 rule 13, §4.1: each request of a batch gets its own result; a failing one (returned as
    an error value) is rolled back alone, the others apply, and applied_i is recorded."""
    store = Store()
    results = store.apply_batch(
        7,
        [
            Set(key=b"a", value=b"1"),
            Sequence(updates=(Set(key=b"b", value=b"2"), Delete(key=b"zz"))),
            Delete(key=b"a"),
            Set(key=b"c", value=b"3"),
            TestAndSet(key=b"c", expected=b"3", wanted=b"4"),
            DeletePrefix(prefix=b""),
            Replace(key=b"d", wanted=b"5"),
        ],
    )
    assert results == [None, NotFound.for_key(b"zz"), None, None, b"3", 1, None]
    assert content(store) == {b"d": b"5"}
    assert store.applied_i == 7
    store._check()


def test_batch_numbers_must_grow() -> None:
    """Every chosen value is applied once, in order: a batch number at or below applied_i is a
    caller bug, refused without touching the store."""
    assert Store().applied_i is None
    store = Store()
    store.apply_batch(3, [Set(key=b"a", value=b"1")])
    for i in (3, 2, -1):
        with pytest.raises(BatchOrderError):
            store.apply_batch(i, [Set(key=b"b", value=b"1")])
    assert content(store) == {b"a": b"1"}
    assert store.applied_i == 3
    store.apply_batch(10, [])
    assert store.applied_i == 10


class Crash(BaseException):
    """Stands for an unexpected failure (a bug, MemoryError) in the middle of a batch."""


def crash(txn: Transaction, arg: bytes | None) -> bytes | None:
    txn.set(b"crash", b"")
    raise Crash


def test_batch_unexpected_exception_rolls_back_the_whole_batch() -> None:
    """A batch is applied whole or not at all: an unexpected exception undoes every request of the
    batch, leaves applied_i alone and propagates."""
    store = store_with((b"keep", b"1"), registry=UserFunctionRegistry({"crash": crash}))
    with pytest.raises(Crash):
        store.apply_batch(
            1,
            [
                Set(key=b"new", value=b""),
                Delete(key=b"keep"),
                DeletePrefix(prefix=b""),
                UserFunction(name="crash", arg=None),
            ],
        )
    assert content(store) == {b"keep": b"1"}
    assert store.applied_i == 0
    store._check()


def test_transaction_context_commits_or_rolls_back() -> None:
    """The transaction context is all-or-nothing and reads its own writes."""
    store = Store()
    with store.transaction(0) as txn:
        txn.set(b"a", b"1")
        assert txn.get(b"a") == b"1"
        assert txn.apply(Replace(key=b"a", wanted=b"2")) == b"1"
    assert store.applied_i == 0
    with pytest.raises(NotFound), store.transaction(1) as txn:
        txn.set(b"b", b"1")
        txn.delete(b"missing")
    assert content(store) == {b"a": b"2"}
    assert store.applied_i == 0
    store._check()


def test_errors_compare_by_value_and_carry_codes() -> None:
    """§4.1: each error class maps to exactly one Arakoon code."""
    assert NotFound.for_key(b"k") == NotFound(b"k", b"k")
    assert NotFound.for_key(b"k") != AssertionFailed(b"k")
    assert len({NotFound.for_key(b"k"), NotFound.for_key(b"k")}) == 1
    codes = {cls.code for cls in (NotFound, AssertionFailed, BadInput, UserFunctionFailure)}
    assert codes == {0x05, 0x07, 0x26, 0x81}
    assert "0x05" in str(NotFound.for_key(b"k"))
