"""Building the update list of a ``sequence`` (protocol §9), and classifying it for retries.

A sequence is applied atomically and in order; later updates see the effects of earlier ones.
:class:`SequenceBuilder` collects updates with the same Python names as the client's own methods
(``set``, ``delete``, ``assert_``, ...). The clients wrap it in a context manager that sends the
sequence when the ``with`` block ends without an exception::

    with client.sequence() as seq:
        seq.set(b"k", b"v")
        seq.delete(b"old")

Keys, values and prefixes may be ``bytes`` or ``str`` (sent as UTF-8); the updates themselves
are the codec's frozen values, so a prepared list can also be passed directly:
``client.sequence([USet(key=b"k", value=b"v")])``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from parakoon_client.codec import (
    UAssert,
    UAssertExists,
    UAssertRange,
    UDelete,
    UDeletePrefix,
    UNop,
    Update,
    UReplace,
    USequence,
    USet,
    UTestAndSet,
    UUserFunction,
)
from parakoon_client.policy import Retry

# Keys, values and prefixes the public API accepts: bytes as they are, text as UTF-8.
BytesLike = bytes | bytearray | memoryview | str

# A sequence nested deeper than this is refused on the client side already; the codec's
# decoder has its own bound (Limits.max_update_depth) and the server would close on it.
SEQUENCE_DEPTH_MAX: Final = 32


def as_bytes(value: BytesLike) -> bytes:
    """``value`` as ``bytes``: text is encoded as UTF-8, buffers are copied."""
    if type(value) is bytes:
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    raise TypeError(f"expected bytes or str, got {type(value).__name__}")


def as_optional_bytes(value: BytesLike | None) -> bytes | None:
    """Like :func:`as_bytes`, keeping ``None`` (an absent key or value)."""
    return None if value is None else as_bytes(value)


class SequenceBuilder:
    """Collects the updates of one sequence, in the order they will be applied.

    Every method appends one update and returns the builder, so calls can be chained.
    """

    __slots__ = ("_updates",)

    def __init__(self, updates: Iterable[Update] = ()) -> None:
        self._updates: list[Update] = list(updates)

    @property
    def updates(self) -> tuple[Update, ...]:
        """The updates collected so far, first to apply first."""
        return tuple(self._updates)

    def __len__(self) -> int:
        return len(self._updates)

    def add(self, update: Update) -> SequenceBuilder:
        """Append an update value built by hand (any client-allowed tag of protocol §9)."""
        self._updates.append(update)
        return self

    def set(self, key: BytesLike, value: BytesLike) -> SequenceBuilder:
        """Store ``value`` under ``key``."""
        self._updates.append(USet(key=as_bytes(key), value=as_bytes(value)))
        return self

    def delete(self, key: BytesLike) -> SequenceBuilder:
        """Remove ``key``; the whole sequence fails with ``NotFound`` if it is absent."""
        self._updates.append(UDelete(key=as_bytes(key)))
        return self

    def test_and_set(
        self, key: BytesLike, expected: BytesLike | None, wanted: BytesLike | None
    ) -> SequenceBuilder:
        """Set ``key`` to ``wanted`` (None deletes) if it holds ``expected`` (None: absent)."""
        self._updates.append(
            UTestAndSet(
                key=as_bytes(key),
                expected=as_optional_bytes(expected),
                wanted=as_optional_bytes(wanted),
            )
        )
        return self

    def replace(self, key: BytesLike, wanted: BytesLike | None) -> SequenceBuilder:
        """Set ``key`` to ``wanted`` unconditionally (None deletes; absent is fine)."""
        self._updates.append(UReplace(key=as_bytes(key), wanted=as_optional_bytes(wanted)))
        return self

    def delete_prefix(self, prefix: BytesLike) -> SequenceBuilder:
        """Remove every key that starts with ``prefix``."""
        self._updates.append(UDeletePrefix(prefix=as_bytes(prefix)))
        return self

    def assert_(self, key: BytesLike, expected: BytesLike | None) -> SequenceBuilder:
        """Fail the sequence (``AssertionFailed``) unless ``key`` holds exactly ``expected``."""
        self._updates.append(UAssert(key=as_bytes(key), expected=as_optional_bytes(expected)))
        return self

    def assert_exists(self, key: BytesLike) -> SequenceBuilder:
        """Fail the sequence (``AssertionFailed``) unless ``key`` exists."""
        self._updates.append(UAssertExists(key=as_bytes(key)))
        return self

    def assert_range(self, prefix: BytesLike, keys: Iterable[BytesLike]) -> SequenceBuilder:
        """Fail the sequence unless the keys under ``prefix`` are exactly ``keys``."""
        wanted = tuple(sorted(as_bytes(k) for k in keys))
        self._updates.append(UAssertRange(prefix=as_bytes(prefix), keys=wanted))
        return self

    def user_function(self, name: str, argument: BytesLike | None = None) -> SequenceBuilder:
        """Run the server-side function ``name`` (its result is thrown away in a sequence)."""
        self._updates.append(UUserFunction(name=name, argument=as_optional_bytes(argument)))
        return self

    def nop(self) -> SequenceBuilder:
        """An update that does nothing."""
        self._updates.append(UNop())
        return self

    def sequence(self, updates: Iterable[Update]) -> SequenceBuilder:
        """Nest a sequence (it is applied in place, as part of this one)."""
        self._updates.append(USequence(updates=tuple(updates)))
        return self


def sequence_retry(updates: Iterable[Update], *, _depth: int = 0) -> Retry:
    """The retry class of a sequence, from the updates it contains.

    Only sets and nops (at any nesting) can be applied twice with the same effect and answer:
    such a sequence is retried like ``set``. With deletes as well it is retried like ``delete``
    (a second attempt may see ``NotFound`` for a key the first one removed). Anything else (test
    and set, replace, delete prefix, user functions, and asserts, which may see the effects of
    the first attempt) makes it a write that is never repeated once sent.
    """
    if _depth > SEQUENCE_DEPTH_MAX:
        raise ValueError(f"sequence nested deeper than {SEQUENCE_DEPTH_MAX} levels")
    result = Retry.ALWAYS
    for update in updates:
        match update:
            case USet() | UNop():
                continue
            case UDelete():
                result = Retry.IDEMPOTENT_EXCEPT_NOT_FOUND
            case USequence(updates=inner):
                nested = sequence_retry(inner, _depth=_depth + 1)
                if nested is Retry.UNTIL_SENT:
                    return Retry.UNTIL_SENT
                if nested is Retry.IDEMPOTENT_EXCEPT_NOT_FOUND:
                    result = nested
            case _:
                return Retry.UNTIL_SENT
    return result
