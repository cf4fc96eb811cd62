"""One parakoon node: storage, Paxos driver, peer messaging and the client server, wired together.

Structure (one anyio task group, services started with ``tg.start`` so that each reports
readiness before the next one relies on it):

* the persister (WAL appends + fsync in a worker thread, group commit);
* the batcher (client requests -> ``ClientBatch``) and the ticker (``Tick`` at the core's next
  deadline);
* the peer network (listener + one outgoing link per peer);
* the client server (Arakoon protocol on ``client_port``);
* the collapser loop (head snapshots by threshold, and on demand);
* optionally the metrics endpoint;
* the identity watcher: while the node is *founding* it decides, from its peers' handshakes,
  whether to form a new cluster history or join the existing one (then it starts the core);
  while it is *rebuilding* lost state it logs whom it is still waiting for
  (:mod:`parakoon_node.runtime.identity`, rule R9);
* the signal watcher.

Shutdown on SIGINT/SIGTERM: the client server stops accepting and answers new connections with
``E_GOING_DOWN``; requests still waiting for consensus are failed with ``NO_LONGER_MASTER``
(outcome unknown); the persister finishes the writes it was given (bounded wait); then every task
is cancelled, the WAL is closed and ``run`` returns 0.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import random
import secrets
import signal
import socket
import ssl
import sys
import time
import tomllib
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import structlog

import parakoon_kv as kv
from parakoon_client.codec import Limits
from parakoon_conn import machine as conn
from parakoon_node.clientserver import Backend, ClientServer
from parakoon_node.clientserver import serve as serve_clients
from parakoon_paxos import Config as PaxosConfig
from parakoon_paxos import FailCode, MasterMode, Membership, Message, Nak, Receive, Role
from parakoon_paxos import core as paxos
from parakoon_wal import WalError
from parakoon_wal.collapser import CollapseReport

from .backup import new_info, write_backup_file
from .catchup import fetch_catchup, serve_catchup
from .config import ClusterConfig, ConfigError, NodeConfig, check_home_dir
from .driver import Driver
from .framing import FrameDecoder
from .identity import Decision, Identity, PeerIdentities, Status, decide
from .members import addresses as member_addresses
from .members import differs_from_file, encode_address
from .peer import PeerAddress, PeerNetwork
from .service import NodeBackend, decode_payload, max_payload_bytes
from .status import NodeCounters, NodeStatus
from .storage import Storage, StorageSettings
from .tls import check_tls_files, tls_for_node

log = structlog.get_logger("parakoon.node")

SHUTDOWN_DRAIN_SECS = 5.0
COLLAPSE_CHECK_SECS = 0.25  # cheap: it only reads the segment list
COLLAPSE_RETRY_SECS = 30.0
IDENTITY_CHECK_SECS = 0.02  # founders decide within this of each other
IDENTITY_LOG_SECS = 5.0
#: A master whose disk is low gives up mastership at most once per this many lease periods
#: (see ``_check_space``).
LOW_DROP_BACKOFF_LEASES = 10
SEED_COPY_ATTEMPTS = 5
REBUILD_CHECK_SECS = 0.25
#: ``PARAKOON_TEST_FAULT=amnesia`` (tests only): a node without state joins an existing
#: history as a voter at once, the bug rule R9 exists to prevent.
AMNESIA = os.environ.get("PARAKOON_TEST_FAULT") == "amnesia"
CLAIMS_MAX = 8  # content-hash claims per peer kept until we apply their slot


def paxos_config(cluster: ClusterConfig, me: str) -> PaxosConfig:
    return PaxosConfig(
        me=me,
        voters=tuple(n.name for n in cluster.voters),
        learners=tuple(n.name for n in cluster.learners),
        lease_period=cluster.lease_period_secs,
        master_mode=MasterMode(cluster.master_mode),
        master=cluster.master,
        preferred=cluster.preferred,
        max_batch_count=cluster.max_batch_count,
        # A batch must fit in one Accept frame with its envelope (see service.max_payload_bytes).
        max_batch_bytes=min(
            cluster.max_batch_bytes, max_payload_bytes(cluster.peer_frame_bytes_max)
        ),
        max_queued=cluster.max_queued_requests,
        batch_linger=cluster.batch_linger_secs,
    )


def peer_conn_settings(lease_period_secs: float) -> conn.ConnSettings:
    """Peer links redial well within a lease period: a peer that comes back must hear the
    master before its own lease check runs out (a 3.6 s back-off against a 2 s lease once made
    returning followers run for election), and the dial must not outlast the lease either."""
    cap = max(0.1, lease_period_secs / 4)
    return conn.ConnSettings(
        backoff_secs_min=min(0.1, cap),
        backoff_secs_max=cap,
        connect_timeout_secs=max(0.2, min(2.0, lease_period_secs / 2)),
    )


def peer_address(node: NodeConfig) -> PeerAddress:
    host, port = node.addresses[0]
    return PeerAddress(name=node.name, host=host, port=port)


GET_DB_PREFIX = "get_db-"
"""GET_DB writes its backup to ``home_dir/get_db-<random>.backup`` and deletes it once sent."""


class Node:
    """A running node. Build it, then ``await node.run()`` inside an anyio event loop."""

    def __init__(self, cluster: ClusterConfig, name: str) -> None:
        self.cluster = cluster
        self.me: NodeConfig = cluster.node(name)
        self.name = name
        self.paxos_config = paxos_config(cluster, name)
        self._rng = random.Random(int.from_bytes(os.urandom(8), "little"))
        self.going_down = False
        self._applied_event: anyio.Event | None = None
        self._collapse_request = anyio.Event()
        self._collapse_lock = anyio.Lock()
        self._backup_lock = anyio.Lock()
        self._tg: anyio.abc.TaskGroup | None = None
        self.catchups = 0
        self.peer_slots: dict[str, int] = {}
        # When (time.monotonic) the last message from each peer arrived: the status reports
        # how long ago, which tells a silent peer from a live one even while its link is up.
        self.peer_heard: dict[str, float] = {}
        # Divergence (a forked store): a peer's (slot, content hash) waiting for us to apply
        # that slot, and once found, what differs. A diverged node serves nothing.
        self._claims: dict[str, dict[int, int]] = {}
        self.divergent_peers: dict[str, str] = {}  # peer -> what differs
        self.diverged: str | None = None  # set when a quorum of voters disagrees with us
        self.disk_stalled: str | None = None  # set while a log write hangs (see _disk_watch)
        self.disk_low: str | None = None  # set while free space is below the reserve
        self._low_dropped_at: float | None = None  # when mastership was last given up for it
        self.client_server: ClientServer | None = None

        # decode_payload: the protocol §9 update decoder shared with the server
        self.storage = Storage(
            StorageSettings(
                home_dir=self.me.home_dir,
                cluster_name=cluster.cluster_id,
                fsync=cluster.fsync,
                compressor=self.me.compressor,
                segment_entries_max=cluster.segment_entries_max,
                segment_bytes_max=cluster.segment_bytes_max,
                collapse_threshold_entries=cluster.collapse_threshold_entries,
                segments_to_keep=cluster.segments_to_keep,
                single_voter=len(self.paxos_config.voters) == 1,
                me=name,
            ),
            decode_payload,
        )
        recovered = self.storage.recover()
        self._recovered = recovered
        log.info(
            "node.recovered",
            applied_i=recovered.applied_i,
            last_i=None if recovered.last is None else recovered.last.i,
            promised_n=recovered.promised_n,
            keys=self.storage.store.key_count(),
            rebuilding=recovered.rebuilding,
        )
        self.identities = PeerIdentities(self._identity, has_state=lambda: self.storage.has_state)
        state = paxos.initial_state(
            self.paxos_config, recovered, time.monotonic(), self._rng.getrandbits(63)
        )
        others = [n for n in cluster.nodes if n.name != name]
        # TLS contexts (None without tls_ca_cert), re-read on SIGHUP and when the files change.
        self.tls = tls_for_node(cluster, self.me)
        self.peers = PeerNetwork(
            cluster_id=cluster.cluster_id,
            me=name,
            identities=self.identities,
            listen=peer_address(self.me),
            peers=[peer_address(n) for n in others],
            on_message=self._on_peer_message,
            on_catchup=self._serve_catchup,
            on_check=self._on_check,
            queue_items=cluster.peer_queue_items,
            max_frame_bytes=cluster.peer_frame_bytes_max,
            rng=self._rng,
            clock=time.monotonic,
            settings=peer_conn_settings(cluster.lease_period_secs),
            tls=self.tls,
        )
        self.driver = Driver(
            self.paxos_config,
            state,
            transport=self.peers,
            applier=self.storage,
            write_log=self.storage,
            start_catchup=self._start_catchup,
            on_applied=self._on_applied,
        )
        self.persister = self.driver.persister
        self.storage.take_decoded = self.driver.take_decoded
        self.driver.on_members = self._on_members
        if recovered.membership is not None:
            self._on_members(recovered.membership, at_start=True)
        # Founding: no history yet, so no core either until the identity watcher decides.
        self.driver.held = self._identity().status is Status.FOUNDING

    # ---------------------------------------------------------------- identity (R9)

    def _identity(self) -> Identity:
        identity = self.storage.identity
        assert identity is not None  # set by recover()
        return identity

    def identity_state(self) -> str:
        """``founding``, ``rebuilding`` or ``voter`` (learners count as voters here)."""
        if self.driver.held:
            return "founding"
        if paxos.rebuild_status(self.driver.state) is not None:
            return "rebuilding"
        return "voter"

    def rebuild_waiting_for(self) -> list[str]:
        """The voters whose answer a rebuilding node still needs (empty when not rebuilding)."""
        rb = paxos.rebuild_status(self.driver.state)
        if rb is None:
            return []
        if rb.target is not None:
            return []
        answered = {a[0] for a in rb.answers} | rb.waived
        return [v for v in self.driver.effective_config().other_voters if v not in answered]

    async def _copy_seed(self, seed: str) -> None:
        """Before voting in a history formed from ``seed``, hold its chosen prefix too.

        The seed's applied slots are chosen in the new history by the operator's decision; an
        empty founder that voted on slot 0 before copying them would fork from the seed. The
        transfer is the ordinary catch-up (the core is not running yet, so its answer to the
        core is dropped); a few bounded attempts, then the core's own catch-up takes over.
        """
        address = peer_address(self.cluster.node(seed))
        for attempt in range(1, SEED_COPY_ATTEMPTS + 1):
            await fetch_catchup(
                self.driver,
                self.persister,
                self.storage,
                address,
                self.storage.applied_i + 1,
                cluster_id=self.cluster.cluster_id,
                me=self.name,
                max_frame_bytes=self.cluster.peer_frame_bytes_max,
                identities=self.identities,
                tls=self.tls,
            )
            if self.storage.has_state:
                break
            log.info("identity.seed_copy_retry", seed=seed, attempt=attempt)
            await anyio.sleep(0.2 * attempt)
        self._recovered = dataclasses.replace(
            self._recovered,
            last=self.storage.last_entry(),
            applied_i=self.storage.applied_i,
            lease_holder=self.storage.lease_holder,
        )
        log.info("identity.seed_copied", seed=seed, applied_i=self.storage.applied_i)

    # ---------------------------------------------------------------- divergence

    def _on_check(self, peer: str, slot: int, content_hash: int) -> None:
        if peer not in self.peers.links:
            return
        claims = self._claims.setdefault(peer, {})
        claims[slot] = content_hash
        while len(claims) > CLAIMS_MAX:
            del claims[min(claims)]
        self._check_divergence(peer)

    def _check_divergence(self, peer: str) -> None:
        """Compare a peer's claimed store hashes with ours at the same slots, once we have them.

        A peer usually claims a slot we have not applied yet (followers trail by one), so the
        claims wait here (a few per peer) and are checked again every period.
        """
        claims = self._claims.get(peer)
        if not claims:
            return
        hashes = self.storage.hashes
        oldest = next(iter(hashes)) if hashes else None
        for slot in sorted(claims):
            mine = hashes.get(slot)
            if mine is None:
                if oldest is not None and slot < oldest:
                    del claims[slot]  # older than what we remember: nothing to compare
                continue
            theirs = claims.pop(slot)
            self._compare(peer, slot, mine, theirs)

    def _compare(self, peer: str, slot: int, mine: int, theirs: int) -> None:
        if mine == theirs:
            self.divergent_peers.pop(peer, None)
            return
        if peer in self.divergent_peers:
            return
        what = (
            f"the store after slot {slot} differs from {peer}'s (content hash {mine:016x} here, "
            f"{theirs:016x} there)"
        )
        self.divergent_peers[peer] = what
        # Out-voted (a quorum of voters holds another store than ours): we are the fork, so we
        # stop serving. Otherwise the peer is, and it stops itself; we keep serving and say so.
        conf = self.driver.effective_config()
        against = sum(1 for p in self.divergent_peers if p in conf.sorted_voters)
        if self.diverged is None and against >= conf.quorum_size:
            self.diverged = f"{what}; {against} voters disagree with this node"
        log.error(
            "divergence.detected",
            slot=slot,
            peer=peer,
            mine=f"{mine:016x}",
            theirs=f"{theirs:016x}",
            action=(
                "this node stops serving reads and writes"
                if self.diverged is not None
                else "the peer's store differs from this node's and a quorum's"
            )
            + "; see docs/operations.md",
        )

    async def _explain_loop(self) -> None:
        """Log, once per change and with the reason, what an operator must know: quorum lost
        and regained (as this node sees its links), and a master whose lease ran out without a
        renewal. Elections are logged by the driver (``role.changed``). A starting node has no
        links yet: that is not a lost quorum, so ``quorum.lost`` needs a quorum seen first, and
        the first one seen is logged as ``quorum.reached``."""
        config = self.paxos_config
        period = max(0.05, config.lease_period / 10)
        had_quorum = False
        ever = False
        was_master = False
        while True:
            await anyio.sleep(period)
            # The membership in force (it may have grown, shrunk or left us out).
            config = self.driver.effective_config()
            if not config.member:
                continue
            links = {p.name: p.connected for p in self.peers.link_status(self.peer_heard)}
            reachable = [v for v in config.other_voters if links.get(v, False)]
            unreachable = [v for v in config.other_voters if not links.get(v, False)]
            quorum = 1 + len(reachable) >= config.quorum_size
            if quorum != had_quorum:
                addresses = {
                    name: f"{a.host}:{a.messaging_port}"
                    for name, a in member_addresses(self.cluster, self.storage.membership).items()
                }
                if quorum:
                    event = "quorum.regained" if ever else "quorum.reached"
                    log.info(event, reachable=reachable, quorum=config.quorum_size)
                    ever = True
                else:
                    log.warning(
                        "quorum.lost",
                        reachable=reachable,
                        unreachable={v: addresses.get(v, "?") for v in unreachable},
                        quorum=config.quorum_size,
                        effect="no writes and no consistent reads until a quorum is back",
                    )
            had_quorum = quorum
            master = self.driver.role() is Role.LEADER and self.driver.lease_valid()
            if was_master and not master and self.driver.role() is Role.LEADER:
                log.warning(
                    "lease.not_renewed",
                    reachable=reachable,
                    unreachable=unreachable,
                    effect="this node stops serving as master until a quorum renews a lease",
                )
            was_master = master

    async def _divergence_loop(self) -> None:
        """Every lease period: tell every peer our newest (slot, store hash); check theirs."""
        period = max(0.2, self.paxos_config.lease_period)
        while True:
            await anyio.sleep(period)
            hashes = self.storage.hashes
            if hashes and not self.driver.held:
                slot = next(reversed(hashes))
                for peer in self.peers.links:
                    self.peers.send_check(peer, slot, hashes[slot])
            for peer in list(self._claims):
                self._check_divergence(peer)

    async def _adopt(self, identity: Identity, decision: Decision) -> None:
        """Take ``identity`` (the founding decision): copy or settle data, persist, start."""
        if decision.copy_from is not None:
            await self._copy_seed(decision.copy_from)
        elif self._identity().seed:
            # Our whole log is the new history's chosen prefix (replayed in full at start): a
            # head snapshot makes that durable, so that a restart does not take the last entry
            # for an unchosen one again.
            await self.collapse(force=True)
        # A small fsynced file, but still a disk write: not on the event loop.
        await anyio.to_thread.run_sync(self.storage.set_identity, identity)
        log.info("identity.decided", identity=identity.describe(), why=decision.reason)
        recovered = dataclasses.replace(
            self._recovered,
            rebuilding=identity.status is Status.REBUILDING,
            quiet_start=decision.joined,
        )
        state = paxos.initial_state(
            self.paxos_config, recovered, time.monotonic(), self._rng.getrandbits(63)
        )
        self.driver.release(state)

    async def _disk_watch(self) -> None:
        """A write that does not complete for ``disk_stall_secs``: the disk hangs (a frozen
        filesystem, a dying device). The master gives up (drop-master: its lease runs out and
        the others elect one whose disk works) and every client write is refused, until the
        write completes; said once when it starts and once when it ends."""
        bound = self.cluster.disk_stall_secs
        while True:
            await anyio.sleep(min(0.5, bound / 2))
            await self._check_space()
            since = self.persister.busy_since
            stalled = since is not None and time.monotonic() - since > bound
            if stalled and self.disk_stalled is None:
                assert since is not None
                self.disk_stalled = (
                    f"a write to {self.me.home_dir} has not completed for "
                    f"{time.monotonic() - since:.1f} s (disk_stall_secs = {bound:g})"
                )
                log.error("disk.stalled", detail=self.disk_stalled, action="stepping down")
                if self.driver.role() is Role.LEADER:
                    await self.driver.drop_master()
            elif not stalled and self.disk_stalled is not None:
                log.warning("disk.recovered", applied_i=self.storage.applied_i)
                self.disk_stalled = None

    async def _check_space(self) -> None:
        """The space guard (like etcd's NOSPACE alarm): below ``disk_reserve_bytes`` free, refuse
        client writes and give up the mastership; resume once 10% above the reserve again."""
        reserve = self.cluster.disk_reserve_bytes
        if reserve <= 0:
            return
        try:
            st = await anyio.to_thread.run_sync(os.statvfs, self.me.home_dir)
        except OSError as exc:
            log.warning("disk.statvfs_failed", home_dir=str(self.me.home_dir), error=str(exc))
            return
        free = st.f_bavail * st.f_frsize
        if free < reserve and self.disk_low is None:
            self.disk_low = (
                f"{self.me.home_dir} has {free / (1 << 20):.1f} MiB free, below the reserve "
                f"of {reserve / (1 << 20):.1f} MiB (disk_reserve_bytes)"
            )
            log.error(
                "disk.low_space",
                detail=self.disk_low,
                action="refusing client writes and the master's client updates",
            )
            self.driver.refuse_entries(self.disk_low)
        elif free >= reserve * 1.1 and self.disk_low is not None:
            log.warning("disk.space_ok", free_mib=round(free / (1 << 20), 1))
            self.disk_low = None
            self.driver.refuse_entries(None)
        if self.disk_low is None:
            self._low_dropped_at = None
        elif self.driver.role() is Role.LEADER:
            # Also when we won an election while low: a master that cannot write is no use if
            # another node can write. But once per LOW_DROP_BACKOFF_LEASES lease periods only:
            # when every disk is low, each winner would give up again and the cluster would
            # flap between elections instead of keeping a master that serves reads.
            now = time.monotonic()
            last = self._low_dropped_at
            if (
                last is None
                or now - last > LOW_DROP_BACKOFF_LEASES * self.cluster.lease_period_secs
            ):
                self._low_dropped_at = now
                log.warning("disk.low_space_drop_master", detail=self.disk_low)
                await self.driver.drop_master()

    async def _identity_loop(self) -> None:
        """Found or join a history while founding; then report rebuild progress (R9)."""
        said = ""
        said_at = -IDENTITY_LOG_SECS
        voters = list(self.paxos_config.voters)
        while self.driver.held:
            decision = decide(
                self._identity(),
                self.name,
                voters,
                dict(self.identities.peers),
                has_state=self.storage.has_state,
            )
            chosen = decision.identity
            if chosen is not None:
                if AMNESIA and chosen.status is Status.REBUILDING:
                    # The amnesia test fault: vote at once, as if always empty (UNSAFE).
                    chosen = dataclasses.replace(chosen, status=Status.VOTER)
                await self._adopt(chosen, decision)
                break
            now = time.monotonic()
            if decision.reason != said or now - said_at >= IDENTITY_LOG_SECS:
                log.info("identity.founding", waiting=decision.reason)
                said, said_at = decision.reason, now
            await anyio.sleep(IDENTITY_CHECK_SECS)
        said_at = -IDENTITY_LOG_SECS
        while True:
            rb = paxos.rebuild_status(self.driver.state)
            if rb is None:
                if said_at > -IDENTITY_LOG_SECS:
                    log.info("rebuild.finished", applied_i=self.storage.applied_i)
                return
            now = time.monotonic()
            if now - said_at >= IDENTITY_LOG_SECS:
                said_at = now
                waiting = self.rebuild_waiting_for()
                log.warning(
                    "rebuild.waiting",
                    detail=(
                        "this node lost its state and does not vote until it has rebuilt"
                        + (f"; waiting for an answer from {waiting}" if waiting else "")
                        + (
                            "; no voter to ask: cluster.toml lists this node as the only voter "
                            "(list the other members there, or, if the cluster really had one "
                            "voter, run 'parakoon force-new-cluster')"
                            if not waiting
                            and rb.target is None
                            and not self.driver.effective_config().other_voters
                            else ""
                        )
                        + (f"; needs slot {rb.target} applied" if rb.target is not None else "")
                    ),
                    applied_i=self.storage.applied_i,
                )
            await anyio.sleep(REBUILD_CHECK_SECS)

    # ---------------------------------------------------------------- what others may read

    @property
    def store(self) -> kv.Store:
        return self.storage.store

    @property
    def applied_i(self) -> int:
        return self.storage.applied_i

    def status(self) -> NodeStatus:
        driver = self.driver
        counters = driver.counters
        return NodeStatus(
            name=self.name,
            role=driver.role(),
            master=driver.master(),
            lease_valid=driver.lease_valid(),
            lease_remaining_secs=driver.lease_remaining(),
            ballot=paxos.ballot(driver.state),
            applied_i=self.storage.applied_i,
            wal_last_slot=self.storage.wal.last_slot,
            snapshot_slot=self.storage.snapshot_slot,
            wal_dir=self.storage.wal.directory,
            keys=self.storage.store.key_count(),
            going_down=self.going_down,
            peers=self.peers.link_status(self.peer_heard),
            peer_slots=tuple(sorted(self.peer_slots.items())),
            client_connections=(
                None if self.client_server is None else self.client_server.open_connections
            ),
            identity=self.identity_state(),
            rebuild_waiting_for=tuple(self.rebuild_waiting_for()),
            diverged=self.diverged,
            divergent_peers=tuple(sorted(self.divergent_peers)),
            disk_stalled=self.disk_stalled,
            disk_low=self.disk_low,
            voters=self.driver.effective_config().sorted_voters,
            learners=self.driver.effective_config().learners,
            membership_replicated=self.storage.membership is not None,
            write_stages=driver.stages.snapshot(),
            counters=NodeCounters(
                applied_slots=counters.applied_slots,
                applied_updates=counters.applied_updates,
                requests_submitted=counters.requests_submitted,
                role_changes=counters.role_changes,
                fsyncs=self.persister.fsyncs,
                collapses=self.storage.collapses,
                catchups=self.catchups,
                peer_connections_accepted=self.peers.incoming,
                peer_connections_refused=self.peers.bad_connections,
            ),
        )

    def set_observers(
        self, *, fsync: Callable[[float], None], batch: Callable[[float], None]
    ) -> None:
        self.persister.fsync_observer = fsync
        self.driver.batch_observer = batch

    # ---------------------------------------------------------------- wiring callbacks

    def _on_peer_message(self, src: str, msg: Message) -> None:
        # The newest slot number each peer mentioned: STATISTICS reports it as node_is.
        i = msg.their_i if isinstance(msg, Nak) else msg.i
        if i >= 0:
            self.peer_slots[src] = i
        self.peer_heard[src] = time.monotonic()
        self.driver.handle(Receive(src=src, msg=msg))

    def _on_applied(self, i: int) -> None:
        # Called for every applied slot: wake AtLeast readers, if any wait (no Event otherwise).
        event = self._applied_event
        if event is not None:
            self._applied_event = None
            event.set()

    async def wait_applied(self, i: int, timeout_secs: float) -> bool:
        """Wait until the store has applied slot ``i``; False after ``timeout_secs``."""
        with anyio.move_on_after(timeout_secs):
            while self.storage.applied_i < i:
                if self._applied_event is None:
                    self._applied_event = anyio.Event()
                await self._applied_event.wait()
            return True
        return self.storage.applied_i >= i

    def _on_members(self, members: Membership, *, at_start: bool = False) -> None:
        """A replicated membership is in force (applied now, or found at start): dial the
        members we did not know, and say what changed."""
        known = member_addresses(self.cluster, members)
        for name in (*members.voters, *members.learners):
            if name != self.name and name in known:
                a = known[name]
                self.peers.add_peer(PeerAddress(name=name, host=a.host, port=a.messaging_port))
        removed = self.name not in members.voters and self.name not in members.learners
        log.log(
            logging.WARNING if removed else logging.INFO,
            "membership.in_force" if at_start else "membership.changed",
            voters=list(members.voters),
            learners=list(members.learners),
            cluster_toml_differs=differs_from_file(self.cluster, members),
            detail=(
                "this node is no longer a member: it votes on nothing and serves no data; "
                "stop it and remove it from cluster.toml"
                if removed
                else "the replicated membership decides; cluster.toml only supplies addresses"
            ),
        )

    def _cluster_settings(self) -> dict[str, object]:
        """The ``[cluster]`` table of the file this node started from (what a joining node
        must share: id, lease period, modes, limits), or {} if it was not read from a file."""
        path = self.cluster.path
        if path is None:
            return {}
        try:
            table = tomllib.loads(path.read_text()).get("cluster", {})
        except (OSError, tomllib.TOMLDecodeError):
            return {}
        return {k: v for k, v in table.items() if isinstance(v, str | int | float | bool)}

    def _member_addresses(self) -> dict[str, str]:
        """Every node this one knows an address of (the file's and the added members')."""
        return {
            name: encode_address(a.host, a.messaging_port, a.client_port)
            for name, a in member_addresses(self.cluster, self.storage.membership).items()
        }

    def _start_catchup(self, source: str, from_i: int) -> None:
        assert self._tg is not None
        self.catchups += 1
        address = self.peers.known[source]
        self._tg.start_soon(self._run_catchup, address, from_i)

    async def _run_catchup(self, address: PeerAddress, from_i: int) -> None:
        if self.disk_low is not None:
            # Catching up writes the log (or a snapshot): not while the disk is nearly full.
            # The pause keeps the core's retries slow; it asks again when space is back.
            await anyio.sleep(min(1.0, self.cluster.lease_period_secs))
            self.driver.catchup_failed(address.name, f"not while {self.disk_low}")
            return
        await fetch_catchup(
            self.driver,
            self.persister,
            self.storage,
            address,
            from_i,
            cluster_id=self.cluster.cluster_id,
            me=self.name,
            max_frame_bytes=self.cluster.peer_frame_bytes_max,
            identities=self.identities,
            tls=self.tls,
        )
        self._on_applied(self.storage.applied_i)

    async def _serve_catchup(
        self, peer: str, stream: anyio.abc.ByteStream, decoder: FrameDecoder, pending: list[Any]
    ) -> None:
        if self.disk_stalled is not None:
            # Serving would wait on our hung disk, and the peer's catch-up with it: close, so
            # that it fails fast and fetches from a node whose disk works.
            log.warning("catchup.refused", peer=peer, reason=self.disk_stalled)
            return
        try:
            await serve_catchup(
                self.storage,
                peer,
                stream,
                decoder,
                pending,
                wait_durable=self.persister.wait_idle,
            )
        except WalError as exc:
            # The log moved under the transfer (a collapse pruned or replaced what we were
            # about to send): close this connection only; the peer asks again.
            log.warning(
                "catchup.serve_aborted", peer=peer, reason=f"{exc.__class__.__name__}: {exc}"
            )

    # ---------------------------------------------------------------- collapse

    async def write_backup(self) -> Path:
        """A consistent backup of the store as it is now (every applied slot is chosen) in a new
        file under ``home_dir``; the caller deletes it. One at a time, written off the loop."""
        async with self._backup_lock:
            frozen = self.storage.store.freeze()  # on the loop: no apply can interleave
            identity = self.storage.identity
            info = new_info(
                cluster_id=self.cluster.cluster_id,
                cluster_uuid=None if identity is None else identity.cluster_uuid,
                node=self.name,
                frozen=frozen,
            )
            path = self.me.home_dir / f"{GET_DB_PREFIX}{secrets.token_hex(4)}.backup"
            await anyio.to_thread.run_sync(write_backup_file, path, frozen, info)
            log.info("backup.written", slot=info.slot, keys=info.keys, file=str(path))
            return path

    async def collapse(self, *, force: bool) -> CollapseReport | None:
        """Write a head snapshot and prune, off the event loop. One at a time."""
        async with self._collapse_lock:
            # Every queued log write must be durable first: until a queued rewrite of an
            # applied slot lands, the log may still hold that slot's older, unchosen copy, and a
            # snapshot taken now would pair the store with that log. No await separates the
            # wait from the freeze below.
            await self.persister.wait_idle()
            frozen = self.storage.collapse_prepare()
            if frozen is None:
                return None
            started = time.monotonic()
            report = await anyio.to_thread.run_sync(
                lambda: self.storage.collapse_run(frozen, force=force)
            )
            if report is not None:
                log.info(
                    "collapse.done",
                    slot=report.snapshot_slot,
                    pruned=len(report.pruned),
                    archived=len(report.archived),
                    secs=round(time.monotonic() - started, 3),
                )
            return report

    async def _collapse_loop(self) -> None:
        while True:
            with anyio.move_on_after(COLLAPSE_CHECK_SECS):
                await self._collapse_request.wait()
            forced = self._collapse_request.is_set()
            self._collapse_request = anyio.Event()
            # By bytes too: the collapser's own threshold counts entries, so a byte-triggered
            # collapse is a forced one.
            by_bytes = self.storage.bytes_since_snapshot() > self.cluster.collapse_threshold_bytes
            forced = forced or by_bytes
            if (
                forced
                or self.storage.entries_since_snapshot() > self.cluster.collapse_threshold_entries
            ):
                try:
                    await self.collapse(force=forced)
                except Exception as exc:  # noqa: BLE001 (a failed collapse must not stop the node)
                    log.error(
                        "collapse.failed",
                        error=f"{exc.__class__.__name__}: {exc}",
                        retry_in_secs=COLLAPSE_RETRY_SECS,
                    )
                    # A full disk fails every attempt: wait before the next automatic one.
                    with anyio.move_on_after(COLLAPSE_RETRY_SECS):
                        await self._collapse_request.wait()

    # ---------------------------------------------------------------- running

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        backend = NodeBackend(
            self,
            self.driver,
            self.paxos_config,
            cluster_id=self.cluster.cluster_id,
            peer_frame_bytes_max=self.cluster.peer_frame_bytes_max,
            addresses=self._member_addresses,
            cluster_settings=self._cluster_settings,
        )
        try:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                tg.start_soon(self.persister.run)
                await tg.start(self.peers.serve)
                tg.start_soon(self.driver.run_batcher)
                tg.start_soon(self.driver.run_ticker)
                self.client_server = await tg.start(_start_client_server, backend, self)
                if self.me.redis_port is not None:
                    await tg.start(_start_redis_server, backend, self)
                tg.start_soon(self._collapse_loop)
                tg.start_soon(self._identity_loop)
                tg.start_soon(self._divergence_loop)
                tg.start_soon(self._explain_loop)
                tg.start_soon(self._disk_watch)
                if self.me.metrics_port is not None:
                    from .metrics import serve_metrics  # prometheus_client only when used

                    await tg.start(
                        partial(
                            serve_metrics,
                            self,
                            host=self.me.metrics_address,
                            port=self.me.metrics_port,
                        )
                    )
                log.info(
                    "node.started",
                    client=f"{self.me.client_host}:{self.me.client_port}",
                    messaging=f"{self.me.messaging_host}:{self.me.messaging_port}",
                    voters=list(self.paxos_config.voters),
                )
                task_status.started()
                await self._wait_for_signal()
                await self.shutdown(tg)
        finally:
            if not self.persister.abandoned:
                # (Left open when a write hangs: the writer thread may still be inside it.)
                self.storage.wal.close()

    async def _wait_for_signal(self) -> None:
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals:
            async for signum in signals:
                if signum == signal.SIGHUP:
                    # SIGHUP re-reads the TLS files (certificate rotation); nothing else.
                    if self.tls is None:
                        log.info("node.sighup", action="nothing to reload (TLS is off)")
                    else:
                        self.tls.reload("SIGHUP")
                    continue
                log.info("node.stopping", signal=signal.Signals(signum).name)
                return

    async def shutdown(self, tg: anyio.abc.TaskGroup) -> None:
        self.going_down = True
        # Requests still in flight: their outcome is unknown to us now.
        self.driver.fail_all_waiters(FailCode.NO_LONGER_MASTER)
        with anyio.move_on_after(SHUTDOWN_DRAIN_SECS):
            await self.persister.wait_idle()
        busy_since = self.persister.busy_since
        if busy_since is not None and self.persister.abandon():
            # The disk hangs (frozen, or a device that stopped answering): waiting for the
            # write would keep the node from ever exiting. Nothing that depends on it was sent.
            log.warning(
                "node.write_abandoned",
                hung_secs=round(time.monotonic() - busy_since, 1),
                note="a log write hung; exiting without it (it was never acknowledged)",
            )
        self.peers.close()
        tg.cancel_scope.cancel()
        log.info("node.stopped", applied_i=self.storage.applied_i)


async def _start_client_server(
    backend: Backend,
    node: Node,
    *,
    task_status: anyio.abc.TaskStatus[ClientServer] = anyio.TASK_STATUS_IGNORED,
) -> None:
    cluster = node.cluster
    limits = Limits(
        max_value_bytes=cluster.max_value_bytes,
        max_request_bytes=cluster.max_request_bytes,
        max_string_bytes=max(cluster.max_request_bytes, cluster.max_value_bytes),
    )
    await serve_clients(
        backend,
        host=node.me.client_host,
        port=node.me.client_port,
        limits=limits,
        max_connections=cluster.max_client_connections,
        prologue_timeout_secs=cluster.client_prologue_timeout_secs,
        request_timeout_secs=cluster.client_request_timeout_secs,
        idle_timeout_secs=cluster.client_idle_timeout_secs,
        output_budget_bytes=cluster.max_client_output_bytes,
        tls=_client_tls(node),
        task_status=task_status,
    )


async def _start_redis_server(
    backend: Backend,
    node: Node,
    *,
    task_status: anyio.abc.TaskStatus[object] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """The Redis port (docs/redis.md), with the Arakoon port's bounds."""
    from parakoon_node.clientserver.resp_server import serve_redis

    cluster = node.cluster

    def redis_address(name: str) -> str | None:
        other = next((n for n in cluster.nodes if n.name == name), None)
        if other is None or other.redis_port is None:
            return None
        return f"{other.client_host}:{other.redis_port}"

    v = backend.version()
    await serve_redis(
        backend,
        host=node.me.client_host,
        port=node.me.redis_port or 0,
        redis_address=redis_address,
        limits=Limits(
            max_value_bytes=cluster.max_value_bytes,
            max_request_bytes=cluster.max_request_bytes,
            max_string_bytes=max(cluster.max_request_bytes, cluster.max_value_bytes),
        ),
        max_connections=cluster.max_client_connections,
        request_timeout_secs=cluster.client_request_timeout_secs,
        idle_timeout_secs=cluster.client_idle_timeout_secs,
        version=f"{v.major}.{v.minor}.{v.patch}",
        tls=_client_tls(node),
        handshake_timeout_secs=cluster.client_prologue_timeout_secs,
        task_status=task_status,
    )


def _client_tls(node: Node) -> Callable[[], ssl.SSLContext] | None:
    """The client port's context for each new connection (re-read when its files changed)."""
    tls = node.tls
    if tls is None or not tls.service:
        return None

    def current() -> ssl.SSLContext:
        assert tls is not None
        context = tls.current().client_service
        assert context is not None  # tls.service
        return context

    return current


def run(cluster: ClusterConfig, node_name: str, *, log_format: str, log_level: str) -> int:
    """The ``parakoon node`` command: run until SIGINT/SIGTERM; return the exit code."""
    from .logs import configure_logging

    configure_logging(log_format, log_level, node_name)  # type: ignore[arg-type]
    try:
        node_cfg = cluster.node(node_name)
        check_home_dir(node_cfg)
        check_tls_files(cluster, node_cfg)
        for stale in node_cfg.home_dir.glob(f"{GET_DB_PREFIX}*"):
            # A GET_DB copy left by a crash while it was being sent.
            stale.unlink(missing_ok=True)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    taken = ports_taken(node_cfg)
    if taken:
        # Before the log is opened or a vote is cast: a node that cannot listen must not have
        # started an election or written anything first.
        for problem in taken:
            log.error("node.start_failed", error=problem)
            print(f"error: cannot start {node_name}: {problem}", file=sys.stderr)
        return 1

    async def amain() -> int:
        # The node is built inside the event loop: its queues and events belong to it.
        try:
            node = Node(cluster, node_name)
        except Exception as exc:  # noqa: BLE001 (any start failure becomes one line)
            # Corrupt WAL, locked directory, unreadable snapshot: say what and where, briefly.
            log.error("node.start_failed", error=f"{exc.__class__.__name__}: {exc}")
            print(f"error: cannot start {node_name}: {exc}", file=sys.stderr)
            return 1
        await node.run()
        return 0

    backend_options: dict[str, Any] = {}
    try:
        import uvloop  # noqa: F401

        backend_options["use_uvloop"] = True
    except ImportError:
        pass
    try:
        return anyio.run(amain, backend="asyncio", backend_options=backend_options)
    except (Exception, BaseExceptionGroup) as exc:  # noqa: BLE001 (any fatal error becomes one line per cause)
        # A port already taken, a log write that failed (disk full, I/O error): the node cannot
        # go on safely. Say what happened in one line per cause and exit non-zero; the log
        # lines (and a restart) tell the rest.
        causes = _leaf_exceptions(exc)
        for cause in causes:
            log.error("node.failed", error=f"{cause.__class__.__name__}: {cause}")
        reasons = "; ".join(f"{c.__class__.__name__}: {c}" for c in causes)
        print(f"error: {node_name} stopped: {reasons}", file=sys.stderr)
        return 1


def ports_taken(node: NodeConfig) -> list[str]:
    """The node's listening addresses that another socket holds, each as one sentence."""
    wanted = [
        ("messaging", node.messaging_host, node.messaging_port, "addresses[0]"),
        ("client", node.client_host, node.client_port, "client_port"),
    ]
    if node.metrics_port is not None:
        wanted.append(("metrics", node.metrics_address, node.metrics_port, "metrics_port"))
    if node.redis_port is not None:
        wanted.append(("redis", node.client_host, node.redis_port, "redis_port"))
    problems = []
    for what, host, port, key in wanted:
        try:
            family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
            with socket.socket(family, socket.SOCK_STREAM) as probe:
                # As the servers bind: a port left in TIME_WAIT is free, one in use is not.
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                probe.bind((host, port))
        except OSError as exc:
            problems.append(
                f"its {what} address {host}:{port} ({node.name}'s {key} in the configuration)"
                f" cannot be bound: {exc.strerror or exc}; is another node or program using it?"
            )
    return problems


def _leaf_exceptions(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        out: list[BaseException] = []
        for inner in exc.exceptions:
            out.extend(_leaf_exceptions(inner))
        return out
    return [exc]
