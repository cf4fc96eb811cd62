# spec: docs/spec/arakoon-client-protocol.md
"""What the client server needs from a node: the :class:`Backend` protocol and its errors.

The split
---------

The server layer (``server.py``) owns everything that follows from the wire protocol alone:
decoding and validation, the prologue and cluster-id checks, the consistency rules of §5 and the
master-only classes of §6 (by calling :meth:`Backend.check_read` at the right moments), mapping
errors to codes and the close rules of §4.2, the value-size limit (§11 rule 20), CONFIRM's "no
round if unchanged" (a consistent read, then a write only if the value differs), refusing
internal update tags from clients, unknown user functions (E_BAD_INPUT before any master check),
the connection limit (rc 0xFE), E_GOING_DOWN during shutdown, and the operation statistics.

The backend owns what depends on the node's role and on consensus: whether this node may serve a
read of a given consistency *now* (master with a valid lease, applied far enough), getting a
write chosen and applied, who the master is, the node's transaction number and state, and the
admin operations. Local reads go straight to :attr:`Backend.store` right after ``check_read``
returned, with no ``await`` in between, so the read sees the state the check approved.

Every method may raise one of the :class:`BackendError` subclasses below; the server turns it
into the error response of its code (and closes when §4.2 says so). Anything else a backend
raises is a bug: the server logs it, answers ``E_UNKNOWN_FAILURE`` and closes that connection.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar, Protocol

from parakoon_client.codec import Consistency, ErrorCode, StatisticsReport, Update, VersionInfo
from parakoon_kv import Result, Store


class BackendError(Exception):
    """An error with a protocol code; ``message`` is the exact bytes of the response's message."""

    code: ClassVar[int] = ErrorCode.UNKNOWN_FAILURE

    def __init__(self, message: bytes | str) -> None:
        raw = message.encode("utf-8", "surrogateescape") if isinstance(message, str) else message
        super().__init__(raw)
        self.message = raw

    def __str__(self) -> str:
        return f"{type(self).__name__} (code 0x{self.code:02x}): {self.message!r}"


class NotMaster(BackendError):
    """E_NOT_MASTER (0x04, closes): this node is not the master. Message = the master's name,
    ``None`` when no master is known, or ``Not_Master`` when mastership was lost before the
    update was queued."""

    code: ClassVar[int] = ErrorCode.NOT_MASTER

    def __init__(self, master: str | None) -> None:
        super().__init__("None" if master is None else master)
        self.master = master


class NoLongerMaster(BackendError):
    """E_NO_LONGER_MASTER (0x21, stays open): mastership was lost while the write was in flight;
    the write may or may not have been applied."""

    code: ClassVar[int] = ErrorCode.NO_LONGER_MASTER

    def __init__(self, message: bytes | str = b"no longer master") -> None:
        super().__init__(message)


class ReadOnly(BackendError):
    """E_READ_ONLY (0x08, closes): a write on a node configured read-only. Message = node name."""

    code: ClassVar[int] = ErrorCode.READ_ONLY


class GoingDown(BackendError):
    """E_GOING_DOWN (0x10, closes): the node is shutting down."""

    code: ClassVar[int] = ErrorCode.GOING_DOWN

    def __init__(self, message: bytes | str = b"closing socket") -> None:
        super().__init__(message)


class InconsistentRead(BackendError):
    """E_INCONSISTENT_READ (0x80, stays open): an ``AtLeast`` read the node cannot serve yet."""

    code: ClassVar[int] = ErrorCode.INCONSISTENT_READ

    def __init__(self, message: bytes | str = b"store not fresh enough") -> None:
        super().__init__(message)


class NotSupported(BackendError):
    """E_NOT_SUPPORTED (0x20, closes): an admin operation not allowed on this node."""

    code: ClassVar[int] = ErrorCode.NOT_SUPPORTED


class BadInput(BackendError):
    """E_BAD_INPUT (0x26, keeps the connection): a request that cannot be carried out as given
    (a membership change that makes no sense now)."""

    code: ClassVar[int] = ErrorCode.BAD_INPUT


class TooLarge(BackendError):
    """E_UNKNOWN_FAILURE (0xff, closes): the update could not be replicated (§11 rule 23). Raised
    before the update is proposed, so nothing of it was applied."""


class Backend(Protocol):
    """The node as the client server sees it. See the module docstring for the split of duties.

    Methods without ``async`` must not block: they run on the event loop between two awaits.
    """

    @property
    def cluster_id(self) -> str:
        """The cluster id clients must send in the prologue (and in PING)."""
        ...

    @property
    def node_name(self) -> str:
        """This node's name."""
        ...

    @property
    def store(self) -> Store:
        """The local store; the server reads it only right after ``check_read`` returned."""
        ...

    @property
    def going_down(self) -> bool:
        """True once the node began shutting down: new connections get E_GOING_DOWN, and a
        request arriving on an open connection closes it without an answer (§3.1)."""
        ...

    async def check_read(self, consistency: Consistency) -> None:
        """Return once a read with ``consistency`` may be served from :attr:`store`.

        ``Consistent``: only the master with a valid lease (a single-node cluster and a
        read-only node always may); raises :class:`NotMaster` otherwise. ``NoGuarantees``:
        returns at once. ``AtLeast(s)``: may wait, for a bounded time, until transaction ``s`` is
        applied; raises :class:`InconsistentRead` if it is not. Class M reads (GET_KEY_COUNT)
        call this with ``Consistent``. May raise :class:`GoingDown`.
        """
        ...

    async def write(self, update: Update) -> Result:
        """Get ``update`` chosen by consensus and applied; return the store's result for it.

        ``update`` is a codec update (§9), already checked by the server: only client tags, and
        a top-level ``USequence`` has ``synced`` set for SYNCED_SEQUENCE (fsync before answering).
        The result is what ``parakoon_kv.Store.apply_batch`` gave for it: ``None``, ``bytes |
        None``, an ``int``, or the ``KvError`` the update failed with (the store rolled it back).
        Raises :class:`NotMaster`, :class:`NoLongerMaster` (outcome unknown),
        :class:`ReadOnly` or :class:`GoingDown`.
        """
        ...

    def who_master(self) -> str | None:
        """The master this node knows of whose lease has not expired (itself if read-only)."""
        ...

    def txid(self) -> int:
        """The last applied transaction number (0 if none): what GET_TXID answers."""
        ...

    def expect_progress_possible(self) -> bool:
        """Whether a quorum is reachable and in step, by this node's bookkeeping."""
        ...

    def version(self) -> VersionInfo:
        """The version reported by VERSION and (as "Arakoon M.m.p") by PING."""
        ...

    def current_state(self) -> str:
        """The consensus state name for CURRENT_STATE (informational)."""
        ...

    def statistics(self) -> StatisticsReport:
        """Node-level statistics: ``node_is`` and ``harvest_stats``. The server fills in the
        fields it measures itself (start, last, the averages, the per-operation timings, the
        memory figures) over whatever this returns for them."""
        ...

    async def collapse(self, tlogs_to_keep: int) -> Sequence[int]:
        """COLLAPSE_TLOGS: collapse the log, keeping ``tlogs_to_keep`` (>= 1, checked by the
        server) units uncollapsed; return one progress value per unit collapsed (clients ignore
        the values). May raise :class:`NotSupported`."""
        ...

    async def drop_master(self) -> None:
        """DROP_MASTER: give up mastership; return once stepped down (at once if not master).
        Raises :class:`NotSupported` on a single-node cluster."""
        ...

    async def get_db(self) -> Path:
        """GET_DB: write a consistent backup of the store (the backup file format of
        ``parakoon_node.runtime.backup``) to a new file and return its path; the server streams
        it to the client and then deletes it. Raises :class:`NotSupported` where the protocol
        refuses it (the master of a multi-node cluster) or where there is nothing to back up."""
        ...

    async def compact(self) -> None:
        """OPT_DB, DEFRAG_DB and COPY_DB_TO_HEAD: for an in-memory store they can only mean
        "write a head snapshot now and prune the log it covers" (it reclaims disk). Raises
        :class:`NotSupported` on the master of a multi-node cluster, as §8.7 says."""
        ...
