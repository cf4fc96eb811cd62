"""The sequence builder and the retry class of a sequence."""

from __future__ import annotations

import pytest

from parakoon_client.codec import (
    UAssert,
    UAssertExists,
    UAssertRange,
    UDelete,
    UDeletePrefix,
    UNop,
    UReplace,
    USequence,
    USet,
    UTestAndSet,
    UUserFunction,
)
from parakoon_client.policy import Retry
from parakoon_client.sequence import SequenceBuilder, as_bytes, sequence_retry


def test_builder_collects_every_update_in_order() -> None:
    seq = SequenceBuilder()
    seq.set("k", b"v").delete(b"d").test_and_set(b"t", None, "w").replace(b"r", None)
    seq.delete_prefix(b"p").assert_(b"a", b"x").assert_(b"n", None).assert_exists(b"e")
    seq.assert_range(b"p", [b"p2", b"p1"]).user_function("f", b"arg").nop()
    seq.sequence([USet(key=b"inner", value=b"1")])
    assert len(seq) == 12
    assert seq.updates == (
        USet(key=b"k", value=b"v"),
        UDelete(key=b"d"),
        UTestAndSet(key=b"t", expected=None, wanted=b"w"),
        UReplace(key=b"r", wanted=None),
        UDeletePrefix(prefix=b"p"),
        UAssert(key=b"a", expected=b"x"),
        UAssert(key=b"n", expected=None),
        UAssertExists(key=b"e"),
        UAssertRange(prefix=b"p", keys=(b"p1", b"p2")),
        UUserFunction(name="f", argument=b"arg"),
        UNop(),
        USequence(updates=(USet(key=b"inner", value=b"1"),)),
    )


def test_builder_starts_from_given_updates_and_accepts_hand_made_ones() -> None:
    seq = SequenceBuilder([USet(key=b"a", value=b"1")]).add(UNop())
    assert seq.updates == (USet(key=b"a", value=b"1"), UNop())


@pytest.mark.parametrize(
    ("value", "expected"),
    [(b"x", b"x"), ("é", "é".encode()), (bytearray(b"ab"), b"ab"), (memoryview(b"m"), b"m")],
)
def test_keys_may_be_text_or_buffers(value: bytes | str, expected: bytes) -> None:
    assert as_bytes(value) == expected


def test_other_types_are_refused() -> None:
    with pytest.raises(TypeError, match="int"):
        as_bytes(3)  # type: ignore[arg-type]


def test_retry_class_of_sequences() -> None:
    s, d = USet(key=b"k", value=b"v"), UDelete(key=b"k")
    assert sequence_retry([]) is Retry.ALWAYS
    assert sequence_retry([s, UNop()]) is Retry.ALWAYS
    assert sequence_retry([s, d]) is Retry.IDEMPOTENT_EXCEPT_NOT_FOUND
    assert sequence_retry([USequence(updates=(d,)), s]) is Retry.IDEMPOTENT_EXCEPT_NOT_FOUND
    assert sequence_retry([s, UAssert(key=b"k", expected=None)]) is Retry.UNTIL_SENT
    assert sequence_retry([USequence(updates=(UReplace(key=b"k", wanted=None),))]) is (
        Retry.UNTIL_SENT
    )
    for unsafe in (
        UTestAndSet(key=b"k", expected=None, wanted=None),
        UDeletePrefix(prefix=b""),
        UUserFunction(name="f", argument=None),
        UAssertExists(key=b"k"),
        UAssertRange(prefix=b"", keys=()),
    ):
        assert sequence_retry([s, unsafe]) is Retry.UNTIL_SENT


def test_absurd_nesting_is_refused() -> None:
    nested: USequence = USequence(updates=())
    for _ in range(40):
        nested = USequence(updates=(nested,))
    with pytest.raises(ValueError, match="nested deeper"):
        sequence_retry([nested])
