# spec: docs/spec/arakoon-client-protocol.md
"""Typed errors of the store, one class per Arakoon error code.

Each failing update raises exactly one of these, and each class maps one-to-one to an error code of
the Arakoon client protocol (§4.1 of ``arakoon-client-protocol.md``), so the node can answer a
client with ``rc = err.code`` and the message string ``err.message`` without translating anything.

``apply_batch`` returns these as *values* in its per-request result list (it does not raise them),
so they compare by value: two errors are equal when they have the same class and the same message.
That keeps tests simple (``assert results == [None, NotFound.for_key(b"k")]``).

Misuse of the store by its caller (applying a batch out of order, a snapshot that fails to verify)
is not a client error and uses ordinary exceptions (``BatchOrderError``, ``SnapshotError``).
"""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "E_ASSERTION_FAILED",
    "E_BAD_INPUT",
    "E_NOT_FOUND",
    "E_UNKNOWN_FAILURE",
    "E_USERFUNCTION_FAILURE",
    "NOT_FOUND_MESSAGE",
    "AssertionFailed",
    "BadInput",
    "BatchOrderError",
    "KvError",
    "NotFound",
    "SnapshotError",
    "UnknownFailure",
    "UserFunctionFailure",
]

E_NOT_FOUND = 0x05
E_ASSERTION_FAILED = 0x07
E_BAD_INPUT = 0x26
E_USERFUNCTION_FAILURE = 0x81
E_UNKNOWN_FAILURE = 0xFF

#: The message the reference server sends for a GET of a missing key (§8.2, §11 rule 1), and for
#: a user function that fails with "not found" (§8.4 USER_FUNCTION).
NOT_FOUND_MESSAGE = b"Not_found"


class KvError(Exception):
    """An Arakoon error that a store operation produced.

    ``code`` is the protocol's error code (an int), ``message`` the exact bytes the protocol puts
    in the response's message string.
    """

    code: ClassVar[int] = E_UNKNOWN_FAILURE
    __slots__ = ("message",)

    def __init__(self, message: bytes) -> None:
        super().__init__(message)
        self.message = message

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.message == self.message

    def __hash__(self) -> int:
        return hash((type(self), self.message))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r})"

    def __str__(self) -> str:
        return f"{type(self).__name__} (code 0x{self.code:02x}): {self.message!r}"


class NotFound(KvError):
    """E_NOT_FOUND (0x05): a key that must exist does not.

    The message is the key itself for DELETE, MULTI_GET and updates inside a sequence (§8.3,
    §8.4, §11 rules 3 and 6), and the fixed text ``Not_found`` for GET (§11 rule 1). ``key`` keeps
    the key in both cases (``None`` when no single key is involved, e.g. a user function).
    """

    code: ClassVar[int] = E_NOT_FOUND
    __slots__ = ("key",)

    def __init__(self, message: bytes, key: bytes | None = None) -> None:
        super().__init__(message)
        self.key = key

    @classmethod
    def for_key(cls, key: bytes) -> NotFound:
        """The error whose message is the key (delete, multi_get, updates in a sequence)."""
        return cls(key, key)

    @classmethod
    def for_get(cls, key: bytes | None = None) -> NotFound:
        """The error a GET of a missing key gives: message ``Not_found``."""
        return cls(NOT_FOUND_MESSAGE, key)


class AssertionFailed(KvError):
    """E_ASSERTION_FAILED (0x07): Assert, AssertExists or AssertRange did not hold.

    The message is the key (§8.2 ASSERT, ASSERTEXISTS); for AssertRange it describes what was
    expected and what was found (§9).
    """

    code: ClassVar[int] = E_ASSERTION_FAILED
    __slots__ = ()


class BadInput(KvError):
    """E_BAD_INPUT (0x26): a user function that is not registered (§8.4 USER_FUNCTION)."""

    code: ClassVar[int] = E_BAD_INPUT
    __slots__ = ()

    @classmethod
    def unknown_user_function(cls, name: str) -> BadInput:
        """The protocol's exact message: ``User function "<name>" could not be found``."""
        return cls(f'User function "{name}" could not be found'.encode())


class UserFunctionFailure(KvError):
    """E_USERFUNCTION_FAILURE (0x81): a user function raised; message = the printed exception."""

    code: ClassVar[int] = E_USERFUNCTION_FAILURE
    __slots__ = ()


class UnknownFailure(KvError):
    """E_UNKNOWN_FAILURE (0xFF): anything else; the reference message is ``unknown failure``."""

    code: ClassVar[int] = E_UNKNOWN_FAILURE
    __slots__ = ()


class BatchOrderError(ValueError):
    """The caller applied a batch whose number is not above the store's ``applied_i``."""


class SnapshotError(ValueError):
    """A snapshot stream is truncated, corrupted or of an unknown version.

    ``offset`` is the byte offset from the start of the snapshot where the problem was found.
    """

    def __init__(self, message: str, *, offset: int) -> None:
        super().__init__(f"snapshot: {message} (at byte offset {offset})")
        self.offset = offset
        self.reason = message  # without the offset, for callers that print it themselves
