# spec: docs/spec/arakoon-client-protocol.md
"""The node's side of the client server: :class:`NodeBackend` implements
:class:`parakoon_node.clientserver.backend.Backend` on top of the Paxos driver and the store.

* Consistent reads are served only while this node is master with a valid lease (by its own
  clock, the leader's shortened view; consensus notes §5.6). No quorum round is needed.
* Writes are encoded as Arakoon §9 updates, which is also the replicated payload format, handed
  to the driver, and answered when the core replies (after the slot is chosen and applied) or
  fails them. A write that waits longer than a bound is answered ``E_NO_LONGER_MASTER``: its
  outcome is unknown to us, which is exactly what that code tells the client.
* ``AtLeast(s)`` reads wait (bounded) until the store has applied ``s``: followers learn a slot is
  chosen when the next one arrives, so a short wait turns most would-be ``INCONSISTENT_READ``
  answers into read-your-writes.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Protocol

import structlog

import parakoon_kv as kv
from parakoon_client.codec import (
    AtLeast,
    Consistency,
    Consistent,
    Limits,
    NoGuarantees,
    StatisticsReport,
    Update,
    USequence,
    VersionInfo,
    decode_update,
    encode_update,
)
from parakoon_node.clientserver.backend import (
    BackendError,
    BadInput,
    GoingDown,
    InconsistentRead,
    NoLongerMaster,
    NotMaster,
    NotSupported,
    ReadOnly,
    TooLarge,
)
from parakoon_node.clientserver.convert import to_kv_update
from parakoon_node.clientserver.local import default_version_info
from parakoon_paxos import Config as PaxosConfig
from parakoon_paxos import FailCode, MasterMode, MemberOp, Membership, Role
from parakoon_wal.collapser import CollapseReport
from parakoon_wal.framing import RECORD_BYTES_MAX

from .driver import Waiter
from .stages import WriteStages
from .stages import clock as perf_clock
from .status import StatusSource

log = structlog.get_logger("parakoon.backend")

VERSION = default_version_info()


# Chosen payloads are decoded on every node, on replay too. They were encoded by a leader from a
# request its server had accepted, so these limits only need to rule out nothing that fits in
# one log record: a tighter bound here than in the server would turn an acknowledged write into
# an undecodable one.
_REPLICATED = Limits(
    max_string_bytes=RECORD_BYTES_MAX,
    max_list_items=RECORD_BYTES_MAX,
    max_value_bytes=RECORD_BYTES_MAX,
    max_request_bytes=RECORD_BYTES_MAX,
)
# Room for the Accept message and log record around the client's payloads.
_ENVELOPE_BYTES = 1 << 20


def decode_payload(payload: bytes) -> kv.Update:
    """A replicated payload (an Arakoon §9 update) in the store's update language."""
    return to_kv_update(decode_update(payload, limits=_REPLICATED))


def max_payload_bytes(peer_frame_bytes_max: int) -> int:
    """The largest client update that can still be replicated (protocol §11 rule 23).

    It must fit, with the message around it, in one node-to-node frame and in one log record;
    a larger one would be accepted by the master and then never reach a quorum (or fail its own
    log write), so it is refused before it is proposed.
    """
    limit = min(peer_frame_bytes_max, RECORD_BYTES_MAX)
    return limit - min(_ENVELOPE_BYTES, limit // 8)


class Overloaded(BackendError):
    """Too many requests are already waiting for consensus; this one was not proposed."""


#: Test-only sabotage, for showing that the fault tests' checker bites: with
#: ``PARAKOON_TEST_FAULT=stale-reads`` every node serves consistent reads from its local store
#: without being master (followers trail the master by at least one slot, so a client can read
#: a value older than one it already saw acknowledged). Never set it on a real cluster; the node
#: logs a loud warning at start when it is set.
#: ``lease-ignored``: a node that has led once serves consistent reads from then on, valid
#: lease or not, as a master would whose clock ran slow or that missed being partitioned away.
TEST_FAULT_ENV = "PARAKOON_TEST_FAULT"
TEST_FAULTS = frozenset({"stale-reads", "fork-store", "amnesia", "lease-ignored"})


class Consensus(Protocol):
    """What the service asks of the Paxos driver (:class:`~.driver.Driver` is one)."""

    #: Where a write's time goes; the service adds the ``respond`` stage.
    stages: WriteStages

    def role(self) -> Role: ...

    def master(self) -> str | None: ...

    def lease_valid(self) -> bool: ...

    def submit_write(
        self, payload: bytes, *, sync: bool = False, decoded: object = None
    ) -> Waiter: ...

    async def drop_master(self) -> Waiter: ...

    def change_membership(self, op: MemberOp, node: str, address: str = "") -> Waiter: ...

    def effective_config(self) -> PaxosConfig:
        """The configuration under the replicated membership in force."""
        ...

    def membership(self) -> Membership | None:
        """The replicated membership in force (None: cluster.toml's)."""
        ...


class ServedNode(StatusSource, Protocol):
    """What the service asks of the node itself (:class:`~.node.Node` is one)."""

    @property
    def going_down(self) -> bool: ...

    @property
    def diverged(self) -> str | None:
        """Why this node serves nothing (its store forked from a quorum's), or None."""
        ...

    @property
    def disk_stalled(self) -> str | None:
        """Why this node takes no writes now (its disk hangs), or None."""
        ...

    @property
    def disk_low(self) -> str | None:
        """Why this node takes no writes now (its disk is nearly full), or None."""
        ...

    @property
    def store(self) -> kv.Store:
        """The live store: catch-up may replace it, so read it again for every request."""
        ...

    @property
    def applied_i(self) -> int: ...

    async def wait_applied(self, i: int, timeout_secs: float) -> bool: ...

    async def collapse(self, *, force: bool) -> CollapseReport | None: ...

    async def write_backup(self) -> Path: ...


class NodeBackend:
    """The node as the client server sees it."""

    def __init__(
        self,
        node: ServedNode,
        consensus: Consensus,
        config: PaxosConfig,
        *,
        cluster_id: str,
        peer_frame_bytes_max: int,
        addresses: Callable[[], Mapping[str, str]] | None = None,
        cluster_settings: Callable[[], Mapping[str, object]] | None = None,
    ) -> None:
        # The [cluster] table of this node's file, for a node that joins (``parakoon join``).
        self._cluster_settings = cluster_settings
        self._node = node
        # Every member's address as a ``members.encode_address`` string (``members()``).
        self._addresses = addresses
        self._consensus = consensus
        self._config = config
        self._cluster_id = cluster_id
        lease = config.lease_period
        # How long an AtLeast read may wait for the store to catch up.
        self.at_least_wait_secs = min(2.0, lease)
        self.max_payload_bytes = max_payload_bytes(peer_frame_bytes_max)
        self._readonly = config.master_mode is MasterMode.READONLY
        fault = os.environ.get(TEST_FAULT_ENV, "")
        self._stale_reads = fault == "stale-reads"
        self._lease_ignored = fault == "lease-ignored"
        self._has_led = False
        if fault:
            if fault not in TEST_FAULTS:
                raise ValueError(f"{TEST_FAULT_ENV}={fault!r}: unknown test fault")
            log.warning("node.test_fault_enabled", fault=fault, note="this node is UNSAFE")

    # ---------------------------------------------------------------- identity

    @property
    def cluster_id(self) -> str:
        return self._cluster_id

    @property
    def _single(self) -> bool:
        """One voter in the membership in force (it may grow or shrink at run time)."""
        return len(self._consensus.effective_config().sorted_voters) == 1

    def _refuse_if_removed(self, *, to_master: bool) -> None:
        """A node the membership no longer lists serves nothing. A write or a consistent read
        gets NOT_MASTER naming no master (clients then look for the master among the other
        nodes, as they do after a failover); any other read gets an error saying why, never
        the data it still holds."""
        conf = self._consensus.effective_config()
        if not conf.member and to_master:
            raise NotMaster(None)
        if not conf.member:
            raise BackendError(
                f"{conf.me} was removed from the cluster and serves nothing; its members now "
                f"are {', '.join(conf.sorted_voters + conf.learners)}"
            )

    @property
    def node_name(self) -> str:
        return self._config.me

    @property
    def store(self) -> kv.Store:
        return self._node.store

    @property
    def going_down(self) -> bool:
        return self._node.going_down

    # ---------------------------------------------------------------- reads

    async def check_read(self, consistency: Consistency) -> None:
        if self._node.going_down:
            raise GoingDown()
        self._refuse_if_diverged()
        self._refuse_if_removed(to_master=isinstance(consistency, Consistent))
        if isinstance(consistency, NoGuarantees) or self._readonly:
            return
        if isinstance(consistency, Consistent):
            if self._stale_reads:
                return
            if self._lease_ignored:
                self._has_led = self._has_led or self._consensus.role() is Role.LEADER
                if self._has_led:
                    return
            if self._single and self._consensus.role() is Role.LEADER:
                return
            if not self._consensus.lease_valid():
                raise NotMaster(self.known_master())
            return
        if isinstance(consistency, AtLeast):
            if self.txid() >= consistency.stamp:
                return
            await self._node.wait_applied(consistency.stamp, self.at_least_wait_secs)
            if self.txid() < consistency.stamp:
                raise InconsistentRead()
            return
        raise AssertionError(f"unknown consistency {consistency!r}")

    # ---------------------------------------------------------------- writes

    def _refuse_if_diverged(self) -> None:
        diverged = self._node.diverged
        if diverged is not None:
            raise BackendError(f"this node serves nothing: {diverged}")

    async def write(self, update: Update) -> kv.Result:
        if self._node.going_down:
            raise GoingDown()
        self._refuse_if_diverged()
        self._refuse_if_removed(to_master=True)
        stalled = self._node.disk_stalled or self._node.disk_low
        if stalled is not None:
            raise BackendError(f"this node takes no writes: {stalled}")
        if self._readonly:
            raise ReadOnly(self._config.me)
        driver = self._consensus
        if not driver.lease_valid() and not (self._single and driver.role() is Role.LEADER):
            raise NotMaster(self.known_master())
        sync = isinstance(update, USequence) and update.synced
        payload = encode_update(update)
        if len(payload) > self.max_payload_bytes:
            why = (
                f"update of {len(payload)} bytes is too large to replicate (at most "
                f"{self.max_payload_bytes} bytes, from peer_frame_bytes_max)"
            )
            log.info("client.too_large", size=len(payload), limit=self.max_payload_bytes)
            raise TooLarge(why)
        waiter = driver.submit_write(payload, sync=sync, decoded=to_kv_update(update))
        await waiter.wait()
        if waiter.resolved_at:
            driver.stages.add("respond", perf_clock() - waiter.resolved_at)
        if waiter.timed_out:
            raise NoLongerMaster(b"no consensus within the write timeout; outcome unknown")
        if waiter.failure is not None:
            raise self._failure(waiter.failure)
        result = waiter.result
        if isinstance(result, Exception) and not isinstance(result, kv.KvError):
            raise BackendError(f"update could not be applied: {result}")
        return result  # type: ignore[return-value]

    def _failure(self, code: FailCode) -> BackendError:
        match code:
            case FailCode.NOT_MASTER:
                return NotMaster(self.known_master())
            case FailCode.NO_LONGER_MASTER:
                return NoLongerMaster()
            case FailCode.READ_ONLY:
                return ReadOnly(self._config.me)
            case FailCode.NOT_SUPPORTED:
                return NotSupported("drop master not supported for singletons")
            case FailCode.OVERLOADED:
                return Overloaded("overloaded: too many requests waiting for consensus")
        raise AssertionError(code)

    # ---------------------------------------------------------------- information

    def known_master(self) -> str | None:
        """The master whose lease this node believes live, never itself unless it leads.

        A restarted node counts a remembered lease as starting now (rule R2), even when the
        lease it remembers is its own from before the restart; it must not send clients to
        itself for that lease, since it is not leading.
        """
        driver = self._consensus
        if not driver.effective_config().member:
            return None  # removed: what it remembers of the lease is nobody's business now
        master = driver.master()
        if master == self._config.me and not driver.lease_valid():
            return None
        return master

    def who_master(self) -> str | None:
        if self._readonly:
            return self._config.me
        return self.known_master()

    def txid(self) -> int:
        return max(self._node.applied_i, 0)

    def expect_progress_possible(self) -> bool:
        if self._node.applied_i < 0:
            return False
        status = self._node.status()
        conf = self._consensus.effective_config()
        voters = set(conf.sorted_voters)
        up = sum(1 for peer in status.peers if peer.name in voters and peer.connected)
        if conf.me in voters:
            up += 1
        return up >= conf.quorum_size and status.master is not None

    def version(self) -> VersionInfo:
        return VERSION

    def current_state(self) -> str:
        if self._node.diverged is not None:
            return f"Diverged ({self._node.diverged})"
        if self._readonly:
            return "Read_only"
        status = self._node.status()
        if status.identity == "founding":
            return "Founding (waiting to form or join a cluster history)"
        if status.identity == "rebuilding":
            waiting = status.rebuild_waiting_for
            return "Rebuilding (lost state; not voting" + (
                f"; waiting for {', '.join(waiting)})" if waiting else ")"
            )
        driver = self._consensus
        match driver.role():
            case Role.LEADER:
                return "Stable_master" if driver.lease_valid() else "Master_consensus"
            case Role.CANDIDATE:
                return "Wait_for_promises"
            case Role.FOLLOWER:
                return "Slave_steady_state"
            case Role.CATCHING_UP:
                return "Slave_discovered_other_master"

    def statistics(self) -> StatisticsReport:
        # Only what the node alone knows: the client server fills in start, last, the averages,
        # the per-operation timings and the memory figures itself (clientserver/stats.py).
        return StatisticsReport(node_is=self._node.status().peer_slots)

    # ---------------------------------------------------------------- admin

    async def collapse(self, tlogs_to_keep: int) -> Sequence[int]:
        started = time.monotonic()
        report = await self._node.collapse(force=True)
        if report is None:
            return []
        elapsed_us = int((time.monotonic() - started) * 1e6)
        return [elapsed_us for _ in range(max(1, len(report.pruned)))]

    def _refuse_on_master(self) -> None:
        # §8.7: GET_DB, OPT_DB, DEFRAG_DB and COPY_DB_TO_HEAD are for a non-master node, so the
        # master keeps its disk and CPU for the clients. A single node is always the master and
        # has nobody else to ask: it is allowed (see docs/protocol-notes.md).
        if not self._single and self._consensus.role() is Role.LEADER:
            raise NotSupported("Operation cannot be performed on master node")

    async def get_db(self) -> Path:
        self._refuse_on_master()
        # A removed node's store stops at its removal: a backup of it would silently be old.
        self._refuse_if_removed(to_master=False)
        if self._node.diverged is not None:
            raise NotSupported(f"no backup of a diverged store: {self._node.diverged}")
        if self._node.disk_low is not None:
            # The copy is written to home_dir before it is sent.
            raise NotSupported(f"no room for a backup copy: {self._node.disk_low}")
        return await self._node.write_backup()

    async def compact(self) -> None:
        self._refuse_on_master()
        await self._node.collapse(force=True)

    def members(self) -> dict[str, object]:
        """The membership in force as this node knows it: voters, learners, the slot it runs
        from is not kept; addresses of the members added at run time."""
        conf = self._consensus.effective_config()
        m = self._consensus.membership()
        everyone = set(conf.sorted_voters) | set(conf.learners)
        known = self._addresses() if self._addresses is not None else {}
        return {
            "voters": list(conf.sorted_voters),
            "learners": list(conf.learners),
            "addresses": {n: a for n, a in sorted(known.items()) if n in everyone},
            "replicated": m is not None,
            "node": conf.me,
            "removed": not conf.member,
            "master": self.known_master(),
            "cluster": dict(self._cluster_settings()) if self._cluster_settings else {},
        }

    async def change_membership(self, op: str, node: str, address: str) -> dict[str, object]:
        """One membership change through consensus (master only); the new membership."""
        if self._node.going_down:
            raise GoingDown()
        self._refuse_if_diverged()
        self._refuse_if_removed(to_master=True)
        try:
            member_op = MemberOp(op)
        except ValueError:
            raise BadInput(f"unknown membership operation {op!r}: add, promote or remove") from None
        waiter = self._consensus.change_membership(member_op, node, address)
        await waiter.wait()
        if waiter.timed_out:
            raise NoLongerMaster(b"no consensus within the write timeout; outcome unknown")
        if waiter.failure is not None:
            code = waiter.failure
            why = {
                FailCode.MEMBERSHIP_BUSY: "another membership change is in flight, or the master "
                "has not renewed its lease since the last one; retry in a moment",
                FailCode.MEMBERSHIP_INVALID: f"cannot {op} {node!r} in the membership "
                f"{self.members()['voters']} (voters) / {self.members()['learners']} (learners)",
                FailCode.LEARNER_BEHIND: f"learner {node!r} has not caught up with the master "
                "yet (it must acknowledge the newest slot); retry once it has",
                FailCode.NOT_SUPPORTED: "membership changes are not supported with a forced master",
            }.get(code)
            if why is not None:
                raise BadInput(why)
            raise self._failure(code)
        return self.members()

    async def drop_master(self) -> None:
        if self._single:
            raise NotSupported("drop master not supported for singletons")
        waiter = await self._consensus.drop_master()
        await waiter.wait()
        if waiter.failure is FailCode.NOT_MASTER:
            # §8.7: "immediately if it was not master": admin scripts send it to every node.
            return
        if waiter.failure is not None:
            raise self._failure(waiter.failure)
