# spec: docs/spec/arakoon-client-protocol.md
"""The values the codec speaks in: consistency, updates (§9), requests (§7) and their results.

Every value is a frozen, slotted, keyword-only dataclass, so that tests compare whole values and
the node can put requests and updates into sets and queues without copying. Keys and values are
``bytes``; names that are text by nature (cluster id, node names, function names, version text)
are ``str``, carried as UTF-8 with ``surrogateescape`` so that any byte string survives a round
trip.

Order convention: a request or result held in memory is always in its *natural* order (keys
ascending for ``Range``, descending for ``RevRangeEntries``, value *i* belongs to key *i* for
``MultiGet``). The wire orders of §2.1 are the codec's business only.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Generic, TypeAlias, TypeVar

from ._errors import CommandCode

# ---------------------------------------------------------------------------------------------
# Consistency (§5)


@dataclass(frozen=True, slots=True, kw_only=True)
class Consistent:
    """Tag 0x00: only the master answers."""


@dataclass(frozen=True, slots=True, kw_only=True)
class NoGuarantees:
    """Tag 0x01: any node answers from its local store (a dirty read)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class AtLeast:
    """Tag 0x02: any node that has applied transaction ``stamp`` (an int64) answers."""

    stamp: int


Consistency: TypeAlias = Consistent | NoGuarantees | AtLeast
CONSISTENT = Consistent()
NO_GUARANTEES = NoGuarantees()

# ---------------------------------------------------------------------------------------------
# Updates (§9): the contents of SEQUENCE / SYNCED_SEQUENCE, and the node's replication payload.


class UpdateTag(enum.IntEnum):
    """The int32 tags of §9."""

    SET = 1
    DELETE = 2
    TEST_AND_SET = 3
    MASTER_SET = 4
    SEQUENCE = 5
    NOP = 6
    USER_FUNCTION = 7
    ASSERT = 8
    ADMIN_SET = 9
    SET_INTERVAL = 10
    SET_ROUTING = 11
    SET_ROUTING_DELTA = 12
    SYNCED_SEQUENCE = 13
    DELETE_PREFIX = 14
    ASSERT_EXISTS = 15
    REPLACE = 16
    ASSERT_RANGE = 17


@dataclass(frozen=True, slots=True, kw_only=True)
class USet:
    """Tag 1."""

    key: bytes
    value: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class UDelete:
    """Tag 2: fails the whole sequence with E_NOT_FOUND (message = key) if the key is absent."""

    key: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class UTestAndSet:
    """Tag 3 (its result is thrown away inside a sequence)."""

    key: bytes
    expected: bytes | None
    wanted: bytes | None


@dataclass(frozen=True, slots=True, kw_only=True)
class UMasterSet:
    """Tag 4, internal: never accepted from clients."""

    master: str
    lease: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class USequence:
    """Tag 5 (or tag 13 when ``synced``; only the server creates a synced one)."""

    updates: tuple[Update, ...]
    synced: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class UNop:
    """Tag 6."""


@dataclass(frozen=True, slots=True, kw_only=True)
class UUserFunction:
    """Tag 7 (its result is thrown away inside a sequence)."""

    name: str
    argument: bytes | None


@dataclass(frozen=True, slots=True, kw_only=True)
class UAssert:
    """Tag 8: None means "the key must be absent"."""

    key: bytes
    expected: bytes | None


@dataclass(frozen=True, slots=True, kw_only=True)
class UAdminSet:
    """Tag 9, internal."""

    key: bytes
    value: bytes | None


@dataclass(frozen=True, slots=True, kw_only=True)
class USetInterval:
    """Tag 10, nursery: public begin, public end, private begin, private end."""

    bounds: tuple[bytes | None, bytes | None, bytes | None, bytes | None]


@dataclass(frozen=True, slots=True, kw_only=True)
class USetRouting:
    """Tag 11, nursery: the routing tree, carried as a string (§12)."""

    routing: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class USetRoutingDelta:
    """Tag 12, nursery."""

    left: bytes
    separator: bytes
    right: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class UDeletePrefix:
    """Tag 14."""

    prefix: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class UAssertExists:
    """Tag 15."""

    key: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class UReplace:
    """Tag 16 (its result is thrown away inside a sequence)."""

    key: bytes
    wanted: bytes | None


@dataclass(frozen=True, slots=True, kw_only=True)
class UAssertRange:
    """Tag 17 with the only assertion kind, ContainsExactly.

    ``keys`` is the ascending list the keys under ``prefix`` must equal. The wire carries it
    reversed (descending, §2.1); the codec does the reversing.
    """

    prefix: bytes
    keys: tuple[bytes, ...]


Update: TypeAlias = (
    USet
    | UDelete
    | UTestAndSet
    | UMasterSet
    | USequence
    | UNop
    | UUserFunction
    | UAssert
    | UAdminSet
    | USetInterval
    | USetRouting
    | USetRoutingDelta
    | UDeletePrefix
    | UAssertExists
    | UReplace
    | UAssertRange
)

# ---------------------------------------------------------------------------------------------
# Results that are more than a primitive


@dataclass(frozen=True, slots=True, kw_only=True)
class VersionInfo:
    """The VERSION answer: three int32 and an opaque info text."""

    major: int
    minor: int
    patch: int
    info: str


# ---------------------------------------------------------------------------------------------
# Statistics tree (§10)


@dataclass(frozen=True, slots=True, kw_only=True)
class NamedInt:
    """Type 1: an int32."""

    name: str
    value: int


@dataclass(frozen=True, slots=True, kw_only=True)
class NamedInt64:
    """Type 2: an int64."""

    name: str
    value: int


@dataclass(frozen=True, slots=True, kw_only=True)
class NamedFloat:
    """Type 3: a float64."""

    name: str
    value: float


@dataclass(frozen=True, slots=True, kw_only=True)
class NamedString:
    """Type 4: a string."""

    name: str
    value: str


@dataclass(frozen=True, slots=True, kw_only=True)
class NamedList:
    """Type 5: a list of named values, natural order."""

    name: str
    items: tuple[NamedValue, ...]

    def get(self, name: str) -> NamedValue | None:
        """The first element called ``name``, or None. O(n)."""
        for item in self.items:
            if item.name == name:
                return item
        return None


NamedValue: TypeAlias = NamedInt | NamedInt64 | NamedFloat | NamedString | NamedList


# ---------------------------------------------------------------------------------------------
# Requests (§7). ``Request[R]`` says that the decoded success result has type ``R``.

R = TypeVar("R")


class Request(Generic[R]):
    """Base of every request; ``R`` is the type of its decoded success result."""

    __slots__ = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Ping(Request[str]):
    """0x01, class A. Answers "Arakoon <major>.<minor>.<patch>"."""

    client_id: str
    cluster_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class WhoMaster(Request[str | None]):
    """0x02, class A."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Exists(Request[bool]):
    """0x07, class C."""

    key: bytes
    consistency: Consistency = CONSISTENT


@dataclass(frozen=True, slots=True, kw_only=True)
class Get(Request[bytes]):
    """0x08, class C. A missing key is E_NOT_FOUND "Not_found"."""

    key: bytes
    consistency: Consistency = CONSISTENT


@dataclass(frozen=True, slots=True, kw_only=True)
class Set(Request[None]):
    """0x09, class W."""

    key: bytes
    value: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class Delete(Request[None]):
    """0x0A, class W. A missing key is E_NOT_FOUND with the key as message."""

    key: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class Range(Request[list[bytes]]):
    """0x0B, class C. Result: the selected keys, ascending (at most ``max_keys``, the smallest).

    A negative ``max_keys`` means no limit.
    """

    first: bytes | None = None
    first_inclusive: bool = True
    last: bytes | None = None
    last_inclusive: bool = True
    max_keys: int = -1
    consistency: Consistency = CONSISTENT


@dataclass(frozen=True, slots=True, kw_only=True)
class PrefixKeys(Request[list[bytes]]):
    """0x0C, class C. Result ascending."""

    prefix: bytes
    max_keys: int = -1
    consistency: Consistency = CONSISTENT


@dataclass(frozen=True, slots=True, kw_only=True)
class TestAndSet(Request[bytes | None]):
    """0x0D, class W. Result: the value *before* the call (§13 item 6)."""

    __test__ = False  # not a pytest test class, whatever its name says

    key: bytes
    expected: bytes | None
    wanted: bytes | None


@dataclass(frozen=True, slots=True, kw_only=True)
class RangeEntries(Request[list[tuple[bytes, bytes]]]):
    """0x0F, class C. Result ascending by key."""

    first: bytes | None = None
    first_inclusive: bool = True
    last: bytes | None = None
    last_inclusive: bool = True
    max_keys: int = -1
    consistency: Consistency = CONSISTENT


@dataclass(frozen=True, slots=True, kw_only=True)
class Sequence(Request[None]):
    """0x10 SEQUENCE, or 0x24 SYNCED_SEQUENCE when ``synced``. Atomic, applied in order."""

    updates: tuple[Update, ...]
    synced: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class MultiGet(Request[list[bytes]]):
    """0x11, class C. Result: value *i* belongs to ``keys[i]``. Any missing key fails the call."""

    keys: tuple[bytes, ...]
    consistency: Consistency = CONSISTENT


@dataclass(frozen=True, slots=True, kw_only=True)
class ExpectProgressPossible(Request[bool]):
    """0x12, class A."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Statistics(Request[NamedList]):
    """0x13, class A. Result: the named-value tree of §10 (see ``StatisticsReport.from_tree``)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Collapse(Request[tuple[int, ...]]):
    """0x14 COLLAPSE_TLOGS, class X. Result: the progress values of the stream (meaningless)."""

    tlogs_to_keep: int


@dataclass(frozen=True, slots=True, kw_only=True)
class UserFunction(Request[bytes | None]):
    """0x15, class W."""

    name: str
    argument: bytes | None


@dataclass(frozen=True, slots=True, kw_only=True)
class Assert(Request[None]):
    """0x16, class C. None means "the key must be absent"."""

    key: bytes
    expected: bytes | None
    consistency: Consistency = CONSISTENT


@dataclass(frozen=True, slots=True, kw_only=True)
class GetKeyCount(Request[int]):
    """0x1A, class M."""


@dataclass(frozen=True, slots=True, kw_only=True)
class GetDb(Request[bytes]):
    """0x1B, class X: the node's database file."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Confirm(Request[None]):
    """0x1C, class W: a SET that takes no consensus round when the value is already there."""

    key: bytes
    value: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class RevRangeEntries(Request[list[tuple[bytes, bytes]]]):
    """0x23, class C. ``first`` is the upper bound; the result is descending by key."""

    first: bytes | None = None
    first_inclusive: bool = True
    last: bytes | None = None
    last_inclusive: bool = True
    max_keys: int = -1
    consistency: Consistency = CONSISTENT


@dataclass(frozen=True, slots=True, kw_only=True)
class OptimizeDb(Request[None]):
    """0x25 OPT_DB, class X."""


@dataclass(frozen=True, slots=True, kw_only=True)
class DefragDb(Request[None]):
    """0x26, class X."""


@dataclass(frozen=True, slots=True, kw_only=True)
class DeletePrefix(Request[int]):
    """0x27, class W. Result: the number of keys removed."""

    prefix: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class Version(Request[VersionInfo]):
    """0x28, class A."""


@dataclass(frozen=True, slots=True, kw_only=True)
class AssertExists(Request[None]):
    """0x29, class C."""

    key: bytes
    consistency: Consistency = CONSISTENT


@dataclass(frozen=True, slots=True, kw_only=True)
class DropMaster(Request[None]):
    """0x30, class X."""


@dataclass(frozen=True, slots=True, kw_only=True)
class MultiGetOption(Request[list[bytes | None]]):
    """0x31, class C. Result: value *i* (or None) belongs to ``keys[i]``."""

    keys: tuple[bytes, ...]
    consistency: Consistency = CONSISTENT


@dataclass(frozen=True, slots=True, kw_only=True)
class CurrentState(Request[str]):
    """0x32, class A."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Replace(Request[bytes | None]):
    """0x33, class W. Result: the value before the call."""

    key: bytes
    wanted: bytes | None


@dataclass(frozen=True, slots=True, kw_only=True)
class Nop(Request[None]):
    """0x41, class W: an empty update through consensus."""


@dataclass(frozen=True, slots=True, kw_only=True)
class FlushStore(Request[None]):
    """0x42, class A."""


@dataclass(frozen=True, slots=True, kw_only=True)
class GetTxid(Request[Consistency]):
    """0x43, class A. Result: the node's last applied transaction as ``AtLeast(stamp)``."""


@dataclass(frozen=True, slots=True, kw_only=True)
class CopyDbToHead(Request[None]):
    """0x44, class X."""

    tlogs_to_keep: int


@dataclass(frozen=True, slots=True, kw_only=True)
class UserHook(Request[None]):
    """0x45, class C. The hook takes over the connection; a server without hooks answers 0x82."""

    name: str
    consistency: Consistency = CONSISTENT


#: The user hook of parakoon's membership requests: the hook's name is this prefix followed by
#: a JSON request; the answer is rc 0 and a JSON text (docs/operations.md, "Membership").
MEMBER_HOOK = "parakoon.member "


@dataclass(frozen=True, slots=True, kw_only=True)
class MemberHook(Request[str]):
    """A membership request as the ``parakoon.member`` user hook (0x45): on the wire exactly a
    ``UserHook`` named ``MEMBER_HOOK + request``; its answer is a JSON text. A parakoon
    extension: not one of the protocol's requests (``AnyRequest``), only a client sends it."""

    request: str
    consistency: Consistency = CONSISTENT


@dataclass(frozen=True, slots=True, kw_only=True)
class Unsupported(Request[None]):
    """A known command this codec does not carry: nursery (§12) and the node-to-node LAST_ENTRIES.

    The server-side decoder reads only the command word of these. For GET_INTERVAL, GET_ROUTING
    and GET_NURSERY_CFG (no arguments) the server can answer as §12 says and go on; for the rest
    it must answer E_NOT_SUPPORTED and close, because their arguments were not read.
    """

    code: CommandCode

    @property
    def has_arguments(self) -> bool:
        return self.code not in _NO_ARGUMENT_UNSUPPORTED


_NO_ARGUMENT_UNSUPPORTED = frozenset(
    {CommandCode.GET_INTERVAL, CommandCode.GET_ROUTING, CommandCode.GET_NURSERY_CFG}
)

UNSUPPORTED_CODES = frozenset(
    {
        CommandCode.LAST_ENTRIES,
        CommandCode.LAST_ENTRIES2,
        CommandCode.SET_INTERVAL,
        CommandCode.GET_ROUTING,
        CommandCode.SET_ROUTING,
        CommandCode.GET_FRINGE,
        CommandCode.GET_INTERVAL,
        CommandCode.SET_NURSERY_CFG,
        CommandCode.GET_NURSERY_CFG,
        CommandCode.SET_ROUTING_DELTA,
        CommandCode.MIGRATE_RANGE,
    }
)

AnyRequest: TypeAlias = (
    Ping
    | WhoMaster
    | Exists
    | Get
    | Set
    | Delete
    | Range
    | PrefixKeys
    | TestAndSet
    | RangeEntries
    | Sequence
    | MultiGet
    | ExpectProgressPossible
    | Statistics
    | Collapse
    | UserFunction
    | Assert
    | GetKeyCount
    | GetDb
    | Confirm
    | RevRangeEntries
    | OptimizeDb
    | DefragDb
    | DeletePrefix
    | Version
    | AssertExists
    | DropMaster
    | MultiGetOption
    | CurrentState
    | Replace
    | Nop
    | FlushStore
    | GetTxid
    | CopyDbToHead
    | UserHook
    | Unsupported
)

# ---------------------------------------------------------------------------------------------
# Responses and server-side events


@dataclass(frozen=True, slots=True, kw_only=True)
class ErrorResponse:
    """A response with rc != 0: the code (an ``ErrorCode`` when known) and the raw message."""

    code: int
    message: bytes

    @property
    def text(self) -> str:
        """The message as text (errors replaced: it may hold a binary key)."""
        return self.message.decode("utf-8", "replace")


@dataclass(frozen=True, slots=True, kw_only=True)
class Prologue:
    """The connection prologue (§3.1). The decoder has already checked magic and version."""

    cluster_id: str


# ---------------------------------------------------------------------------------------------
# Fast constructors for the hot decoding paths.
#
# A frozen dataclass's generated __init__ (keyword-only, with the frozen guard) costs about twice
# as much as storing the fields through the slot descriptors directly, and on the decode path of
# GET, SET and the updates of a replicated sequence that difference is a third of the total.
# These builders produce objects identical to the normal constructor's (tests compare them); use
# them only where the arguments are already known to have the right types.

_new = object.__new__
_GET_KEY = Get.__dict__["key"].__set__
_GET_CONSISTENCY = Get.__dict__["consistency"].__set__
_SET_KEY = Set.__dict__["key"].__set__
_SET_VALUE = Set.__dict__["value"].__set__
_USET_KEY = USet.__dict__["key"].__set__
_USET_VALUE = USet.__dict__["value"].__set__
_UDELETE_KEY = UDelete.__dict__["key"].__set__


def new_get(key: bytes, consistency: Consistency) -> Get:
    obj: Get = _new(Get)
    _GET_KEY(obj, key)
    _GET_CONSISTENCY(obj, consistency)
    return obj


def new_set(key: bytes, value: bytes) -> Set:
    obj: Set = _new(Set)
    _SET_KEY(obj, key)
    _SET_VALUE(obj, value)
    return obj


def new_uset(key: bytes, value: bytes) -> USet:
    obj: USet = _new(USet)
    _USET_KEY(obj, key)
    _USET_VALUE(obj, value)
    return obj


def new_udelete(key: bytes) -> UDelete:
    obj: UDelete = _new(UDelete)
    _UDELETE_KEY(obj, key)
    return obj
