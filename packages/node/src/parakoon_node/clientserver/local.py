"""A single-node backend without replication: writes are applied directly, reads are local.

It serves the client protocol over a ``parakoon_kv.Store`` held in memory, as a one-node
cluster would: the node is always the master, consistent reads are always allowed, and every
write is one transaction numbered after the previous one. Use it for tests of the server and of
the client libraries over real sockets, and as a one-node, non-replicated, non-durable server.
"""

from __future__ import annotations

import platform
from collections.abc import Sequence
from pathlib import Path

from parakoon_client.codec import (
    AtLeast,
    Consistency,
    Consistent,
    NoGuarantees,
    StatisticsReport,
    Update,
    VersionInfo,
)
from parakoon_kv import Result, Store

from .backend import GoingDown, InconsistentRead, NotSupported, ReadOnly
from .convert import to_kv_update

PROTOCOL_COMPATIBLE_VERSION = (1, 8, 6)
"""The Arakoon release whose client protocol this server speaks (VERSION, and PING's text)."""


def default_version_info(product: str = "parakoon 0.1.0") -> VersionInfo:
    """The VERSION answer: Arakoon 1.8.6 compatible, with the info text naming our build."""
    major, minor, patch = PROTOCOL_COMPATIBLE_VERSION
    info = f'revision: "{product}"\ncompiled: ""\nmachine: "{platform.machine()}"\n'
    return VersionInfo(major=major, minor=minor, patch=patch, info=info)


class LocalBackend:
    """The :class:`~parakoon_node.clientserver.backend.Backend` of a one-node, in-memory server.

    ``write`` applies the update at once as transaction ``txid() + 1``; ``check_read`` refuses
    only an ``AtLeast`` stamp above the last transaction (a single node has nothing to wait
    for). ``drop_master`` is E_NOT_SUPPORTED, as on any single-node cluster; ``collapse`` has
    nothing to collapse. With ``read_only`` (the "readonly" master mode) every write is
    E_READ_ONLY with the node's name, and every read is served.
    """

    def __init__(
        self,
        *,
        cluster_id: str,
        node_name: str = "node_0",
        store: Store | None = None,
        version: VersionInfo | None = None,
        read_only: bool = False,
    ) -> None:
        self._read_only = read_only
        self._cluster_id = cluster_id
        self._node_name = node_name
        self._store = Store() if store is None else store
        self._version = default_version_info() if version is None else version
        self._going_down = False

    @property
    def cluster_id(self) -> str:
        return self._cluster_id

    @property
    def node_name(self) -> str:
        return self._node_name

    @property
    def store(self) -> Store:
        return self._store

    @property
    def going_down(self) -> bool:
        return self._going_down

    def begin_shutdown(self) -> None:
        """From now on writes fail with E_GOING_DOWN and the server refuses new connections."""
        self._going_down = True

    async def check_read(self, consistency: Consistency) -> None:
        if self._going_down:
            raise GoingDown()
        match consistency:
            case Consistent() | NoGuarantees():
                return
            case AtLeast(stamp=stamp):
                if stamp > self.txid():
                    raise InconsistentRead()

    async def write(self, update: Update) -> Result:
        if self._going_down:
            raise GoingDown()
        if self._read_only:
            raise ReadOnly(self._node_name)
        results = self._store.apply_batch(self.txid() + 1, [to_kv_update(update)])
        return results[0]

    def who_master(self) -> str | None:
        return self._node_name

    def txid(self) -> int:
        applied = self._store.applied_i
        return 0 if applied is None else applied

    def expect_progress_possible(self) -> bool:
        # A single node is its own quorum.
        return not self._going_down

    def version(self) -> VersionInfo:
        return self._version

    def current_state(self) -> str:
        return "Read_only" if self._read_only else "Stable_master"

    def statistics(self) -> StatisticsReport:
        return StatisticsReport(node_is=((self._node_name, self.txid()),))

    async def collapse(self, tlogs_to_keep: int) -> Sequence[int]:
        # There is no log: nothing to collapse, which the protocol answers with a count of 0.
        return ()

    async def drop_master(self) -> None:
        raise NotSupported("drop master not supported for singletons")

    async def get_db(self) -> Path:
        raise NotSupported("this in-memory server keeps no database to copy")

    async def compact(self) -> None:
        # No log and no snapshot: nothing to write or reclaim.
        return None
