# spec: docs/spec/arakoon-client-protocol.md
"""The update language: what one client request (or one part of a sequence) asks the store to do.

These mirror the update tags of the Arakoon protocol (§9 of ``arakoon-client-protocol.md``) that
clients may send; the internal and nursery tags (MasterSet, AdminSet, SetInterval, SetRouting,
SetRoutingDelta) are not part of the language: the codec refuses them. ``SyncedSequence`` is a
``Sequence`` with ``synced=True`` (the store applies both the same way; the node fsyncs).

Result of each update when it is a top-level request of ``Store.apply_batch`` (inside a
``Sequence`` every result is thrown away, as §9 says):

=============== ======================= ====================================================
update          result on success       error (returned as a value, request rolled back)
=============== ======================= ====================================================
Set             ``None``                never fails
Delete          ``None``                ``NotFound`` (message = key) when the key is absent
TestAndSet      ``bytes | None``        never fails; value *before* the call (§11 rule 8)
Replace         ``bytes | None``        never fails; value before the call (§11 rule 9)
Assert          ``None``                ``AssertionFailed`` (message = key)
AssertExists    ``None``                ``AssertionFailed`` (message = key)
AssertRange     ``None``                ``AssertionFailed`` (message = expected vs. found)
DeletePrefix    ``int`` (keys removed)  never fails; 0 when nothing matched (§11 rule 7)
Nop             ``None``                never fails
UserFunction    ``bytes | None``        ``BadInput`` (unknown name), ``UserFunctionFailure``
                                        (the function raised), or the ``KvError`` it raised
Sequence        ``None``                the error of the first failing update inside it
=============== ======================= ====================================================

Every record is a frozen, slotted, keyword-only dataclass, so updates can be shared between the
WAL, the Paxos value and the store without anyone changing them.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "Assert",
    "AssertExists",
    "AssertRange",
    "Delete",
    "DeletePrefix",
    "Nop",
    "Replace",
    "Sequence",
    "Set",
    "TestAndSet",
    "Update",
    "UserFunction",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class Set:
    """Tag 1: store ``value`` under ``key``, creating or overwriting it."""

    key: bytes
    value: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class Delete:
    """Tag 2: remove ``key``; a missing key is ``NotFound`` with the key as message (§11 rule 6)."""

    key: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class TestAndSet:
    """Tag 3: if the key's state equals ``expected`` (None = absent), make it ``wanted``.

    ``wanted = None`` deletes (an absent key is fine). The result is the value before the call;
    the swap happened exactly when that equals ``expected`` (§8.4, §11 rule 8).
    """

    # Not a pytest test class, despite the name.
    __test__ = False

    key: bytes
    expected: bytes | None
    wanted: bytes | None


@dataclass(frozen=True, slots=True, kw_only=True)
class Sequence:
    """Tag 5 (13 when ``synced``): apply ``updates`` in order, all or nothing (§8.4, §11 rule 13).

    Later updates see the effects of earlier ones. Sequences nest; a failure anywhere inside undoes
    the whole top-level request. ``synced`` only tells the node to fsync before answering.
    """

    updates: tuple[Update, ...]
    synced: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class Nop:
    """Tag 6: change nothing (the NOP command and harmless filler inside sequences)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class UserFunction:
    """Tag 7: run the registered function ``name`` with ``arg`` inside the transaction."""

    name: str
    arg: bytes | None


@dataclass(frozen=True, slots=True, kw_only=True)
class Assert:
    """Tag 8: the key must hold exactly ``expected`` (None = absent), else AssertionFailed."""

    key: bytes
    expected: bytes | None


@dataclass(frozen=True, slots=True, kw_only=True)
class DeletePrefix:
    """Tag 14: remove every key starting with ``prefix`` (all keys for b""); result = the count."""

    prefix: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class AssertExists:
    """Tag 15: the key must exist, else AssertionFailed with the key as message (§11 rule 11)."""

    key: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class Replace:
    """Tag 16: unconditionally set the key to ``wanted`` (None deletes); result = the old value."""

    key: bytes
    wanted: bytes | None


@dataclass(frozen=True, slots=True, kw_only=True)
class AssertRange:
    """Tag 17 with ContainsExactly: the keys starting with ``prefix`` must be exactly ``keys``.

    ``keys`` is in **ascending** (natural) order here; the wire carries it descending (§2.1), and
    the codec reverses it.
    """

    prefix: bytes
    keys: tuple[bytes, ...]


Update = (
    Set
    | Delete
    | TestAndSet
    | Sequence
    | Nop
    | UserFunction
    | Assert
    | DeletePrefix
    | AssertExists
    | Replace
    | AssertRange
)
