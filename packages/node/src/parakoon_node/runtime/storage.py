"""A node's durable state: its write-ahead log, head snapshots and the in-memory store.

Recovery (rules R1-R3 of the consensus notes). The WAL repairs a torn tail by itself and refuses
to open on corruption in the middle. We then load the newest head snapshot into a fresh store
and replay the log after it, up to ``last_i - 1`` (the last entry may be unchosen, S3), or up to
``last_i`` on a single voter (which chose it alone). The core learns what we found through
``Recovered``; it settles the last slot itself (by election or by catch-up).

Log records. Each WAL record's payload is ``msgpack([ballot, value_wire])`` where ``value_wire``
is :func:`parakoon_paxos.wire.value_to_wire`. A batch's payloads are the encodings of the client
updates of protocol §9, which are decoded again when the slot is applied (on every node, and on
replay), so the replicated format is the protocol's own.

Applying is atomic per slot (R6): the store's ``apply_batch`` records ``applied_i`` with the
slot's effects in one step.

Identity (R9). ``home_dir/identity.json`` says which cluster history this state belongs to and
whether the node is a voter, founding or rebuilding (:mod:`parakoon_node.runtime.identity`);
the storage opens it with the log, so the two are always judged together ("the WAL is gone but
the identity is here" is lost state, too).
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import BinaryIO, Literal

import crc32c
import msgpack
import structlog

from parakoon_kv import FrozenStore, SnapshotError, Store
from parakoon_kv import Update as KvUpdate
from parakoon_kv.updates import Set as KvSet
from parakoon_paxos import NOP, Batch, LogEntry, MasterSet, Membership, Recovered, Value
from parakoon_paxos.wire import value_from_wire, value_to_wire
from parakoon_wal.collapser import Collapser, CollapseReport
from parakoon_wal.log import APPEND_ENTRIES_MAX, Wal

from .identity import Identity, IdentityStore, Status

log = structlog.get_logger("parakoon.storage")

#: Entries per WAL append (the WAL refuses batches above its APPEND_ENTRIES_MAX).
APPEND_CHUNK = min(4096, APPEND_ENTRIES_MAX)
#: How many applied slots keep their store content hash for the replicas' cross-check.
HASHES_KEPT = 1024
#: ``PARAKOON_TEST_FAULT=fork-store`` (tests only): this node applies the last update of every
#: batch to another key, so its store forks from its peers'; the cross-check must catch it.
FORK_FAULT = "fork-store"

PayloadDecoder = Callable[[bytes], KvUpdate]


def snapshot_crc(data: bytes, value: int = 0) -> int:
    return int(crc32c.crc32c(data, value))


def check_snapshot_file(path: Path, slot: int | None = None) -> tuple[int, str] | None:
    """Read a head snapshot file through and check every checksum, that it holds ``slot`` (the
    one in its name) and that nothing follows its end block: ``(byte offset, problem)`` of the
    first problem, or None when it is intact. Raises OSError if it cannot be read."""
    with open(path, "rb") as f:
        try:
            store = Store.load(f, crc=snapshot_crc)
        except SnapshotError as exc:
            return exc.offset, exc.reason
        end = f.tell()
        if f.read(1):
            return end, "bytes after the end block"
    if slot is not None and store.applied_i != slot:
        return 0, f"holds the store at slot {store.applied_i}, its name says {slot}"
    return None


def encode_membership(m: Membership) -> bytes:
    """The store's metadata for a membership (kept in its snapshots)."""
    out: bytes = msgpack.packb(["membership", value_to_wire(m)], use_bin_type=True)
    return out


def decode_membership(meta: bytes, where: str) -> Membership | None:
    if not meta:
        return None
    try:
        tag, wire = msgpack.unpackb(meta, raw=False, use_list=True)
        value = value_from_wire(wire)
    except Exception as exc:
        raise StorageError(f"{where}: snapshot metadata is not a membership: {exc}") from exc
    if tag != "membership" or not isinstance(value, Membership):
        raise StorageError(f"{where}: snapshot metadata is not a membership")
    return value


def membership_on_disk(wal: Wal) -> Membership | None:
    """The newest membership in a stopped node's head snapshot and log, the last log entry
    included (a seed of a new history takes its whole log as chosen); None when the node never
    saw a change and ``cluster.toml`` governs. Reads the whole log after the snapshot."""
    found: Membership | None = None
    head = wal.open_head_snapshot()
    start = 0
    if head is not None:
        slot, stream = head
        with stream:
            try:
                store = Store.load(stream, crc=snapshot_crc)
            except SnapshotError as exc:
                raise StorageError(
                    f"{stream.name}: head snapshot damaged: {exc.reason} (at byte offset "
                    f"{exc.offset})"
                ) from exc
            found = decode_membership(store.meta, str(stream.name))
        start = slot + 1
    if wal.last_slot is not None and wal.last_slot >= start:
        for i, payload in wal.iter_from(max(start, wal.first_slot or 0)):
            value = decode_entry(i, payload).value
            if isinstance(value, Membership):
                found = value
    return found


def encode_entry(entry: LogEntry) -> bytes:
    out: bytes = msgpack.packb([entry.n, value_to_wire(entry.value)], use_bin_type=True)
    return out


def decode_entry(i: int, payload: bytes) -> LogEntry:
    n, wire = msgpack.unpackb(payload, raw=False, use_list=True)
    return LogEntry(i=i, n=int(n), value=value_from_wire(wire))


@dataclass(frozen=True, slots=True, kw_only=True)
class StorageSettings:
    home_dir: Path
    cluster_name: str
    fsync: bool
    compressor: Literal["zstd", "none"]
    segment_entries_max: int
    segment_bytes_max: int
    collapse_threshold_entries: int
    segments_to_keep: int
    single_voter: bool
    me: str = ""  # this node's name (whether it is the only voter of a replicated membership)


class StorageError(Exception):
    """The node's durable state is inconsistent; the message names the directory."""


class Storage:
    """Owns the WAL and the store of one node. All methods run on the event loop unless noted."""

    def __init__(self, settings: StorageSettings, decode_payload: PayloadDecoder) -> None:
        self.settings = settings
        self._decode_payload = decode_payload
        self.wal_existed = (settings.home_dir / "wal").is_dir()
        self.identities = IdentityStore(settings.home_dir, settings.cluster_name)
        self.identity: Identity | None = None  # set by recover()
        self.wal: Wal = Wal.open(
            settings.home_dir / "wal",
            fsync=settings.fsync,
            segment_entries_max=settings.segment_entries_max,
            segment_bytes_max=settings.segment_bytes_max,
            compressor=settings.compressor,
        )
        self.store = Store()
        self.lease_holder: str | None = None
        # Counts applied MasterSet values: catch-up reports a lease holder to the core only
        # when it applied a newer lease than the node already knew (see catchup.py).
        self.lease_epoch = 0
        self.collapses = 0
        self.collapsing = False
        # Slot -> the store's content hash right after applying it (newest last, bounded): the
        # replicas compare these to detect a forked store (Node._check_divergence).
        self.hashes: OrderedDict[int, int] = OrderedDict()
        self._fork = os.environ.get("PARAKOON_TEST_FAULT") == FORK_FAULT
        self.snapshot_slot: int | None = None
        # The newest replicated membership applied (None: cluster.toml's is in force).
        self.membership: Membership | None = None
        # Set by the node to the driver's take_decoded (see Driver.decoded).
        self.take_decoded: Callable[[bytes], object] | None = None

    # ---------------------------------------------------------------- recovery

    def recover(self) -> Recovered:
        recovery = self.wal.recovery
        for message in recovery.messages():
            if recovery.torn_tail is not None:
                log.warning("wal.recovery", detail=message)
            else:
                log.info("wal.recovery", detail=message)
        head = self.wal.open_head_snapshot()
        if head is not None:
            slot, stream = head
            with stream:
                try:
                    self.store = Store.load(stream, crc=snapshot_crc)
                except SnapshotError as exc:
                    raise StorageError(
                        f"{stream.name}: head snapshot damaged: {exc.reason} (at byte offset "
                        f"{exc.offset}); see 'A corrupt snapshot' in docs/operations.md"
                    ) from exc
            if self.store.applied_i != slot:
                raise StorageError(
                    f"{self.settings.home_dir}: head snapshot for slot {slot} holds a store "
                    f"applied up to {self.store.applied_i}"
                )
            self.snapshot_slot = slot
            self.membership = decode_membership(self.store.meta, str(stream.name))
            log.info("recovery.snapshot_loaded", slot=slot, keys=self.store.key_count())
        last_slot = self.wal.last_slot
        meta = self.wal.load_meta() or {}
        promised = meta.get("promised_n", 0)
        promised_n = int(promised) if isinstance(promised, int) else 0
        has_state = last_slot is not None or self.applied_i >= 0 or promised_n > 0
        self.identity, why = self.identities.open_at_start(
            wal_existed=self.wal_existed, has_state=has_state
        )
        # The seed of a new history (force-new-cluster) takes its whole log as chosen: its
        # last entry may be a write the old cluster acknowledged.
        seed = self.identity.status is Status.FOUNDING and self.identity.seed
        last: LogEntry | None = None
        if last_slot is not None:
            last = decode_entry(last_slot, self.wal.read(last_slot))
            start = self.applied_i + 1
            replayed = 0
            if start <= last_slot - 1:
                for i, payload in self.wal.iter_from(start):
                    if i > last_slot - 1:
                        break
                    self.apply(i, decode_entry(i, payload).value)
                    replayed += 1
            if self.applied_i == last_slot - 1 and (seed or self.alone()):
                # The only voter chose its last entry alone (under the membership the slot
                # runs under), and a seed's whole log counts as chosen.
                self.apply(last_slot, last.value)
                replayed += 1
            log.info(
                "recovery.replayed", entries=replayed, applied_i=self.applied_i, last_i=last_slot
            )
        if last is None and self.applied_i >= 0:
            last = self.snapshot_entry()
        log.info("identity.opened", identity=self.identity.describe(), why=why)
        return Recovered(
            last=last,
            applied_i=self.applied_i,
            promised_n=promised_n,
            lease_holder=self.lease_holder,
            rebuilding=self.identity.status is Status.REBUILDING,
            membership=self.membership,
        )

    def alone(self) -> bool:
        """Is this node the only voter of the membership in force?"""
        if self.membership is None:
            return self.settings.single_voter
        return self.membership.voters == (self.settings.me,)

    @property
    def has_state(self) -> bool:
        return self.wal.last_slot is not None or self.applied_i >= 0

    def set_identity(self, identity: Identity) -> None:
        """Make ``identity`` durable and current (the founding decision, or rebuilt)."""
        self.identities.save(identity)
        self.identity = identity

    @property
    def applied_i(self) -> int:
        i = self.store.applied_i
        return -1 if i is None else i

    # ---------------------------------------------------------------- applying

    def apply(self, i: int, value: Value) -> tuple[object, ...]:
        """Apply chosen slot ``i`` to the store; one result per client update."""
        if isinstance(value, MasterSet):
            self.lease_holder = value.node
            self.lease_epoch += 1
            self.store.apply_batch(i, ())
            self._record_hash(i)
            return ()
        if isinstance(value, Membership):
            self.store.apply_batch(i, ())
            self.store.meta = encode_membership(value)
            self.membership = value
            self._record_hash(i)
            log.info(
                "membership.applied",
                slot=i,
                voters=list(value.voters),
                learners=list(value.learners),
            )
            return ()
        assert isinstance(value, Batch)
        updates: list[KvUpdate] = []
        take = self.take_decoded
        for k, payload in enumerate(value.payloads):
            if take is not None:
                known = take(payload)
                if known is not None:
                    updates.append(known)  # type: ignore[arg-type]
                    continue
            try:
                updates.append(self._decode_payload(payload))
            except Exception as exc:
                # A chosen value that does not decode is a bug or damage, never client input
                # (the leader decoded the same bytes before proposing them). Skipping it here
                # while the leader applied it would fork the replicas: stop instead.
                raise StorageError(
                    f"{self.settings.home_dir}: chosen slot {i}, update {k} of "
                    f"{len(value.payloads)} cannot be decoded: {exc.__class__.__name__}: {exc}"
                ) from exc
        if self._fork and updates:
            # The fork-store test fault: the last update writes elsewhere, so this replica's
            # store differs while every request still gets a result (the core asserts that).
            updates[-1] = KvSet(key=b"__fork-store__", value=b"%d" % i)
        results = tuple(self.store.apply_batch(i, updates))
        self._record_hash(i)
        return results

    def _record_hash(self, i: int) -> None:
        hashes = self.hashes
        hashes[i] = self.store.content_hash()
        if len(hashes) > HASHES_KEPT:
            hashes.popitem(last=False)

    # ---------------------------------------------------------------- durable writes (thread)

    def append_entries(self, entries: Sequence[LogEntry]) -> None:
        """Called in a worker thread by the persister: one write, one fdatasync.

        Right after a snapshot was installed the log is empty and continues at the snapshot's
        slot + 1. A re-sent ``Accept`` for a slot the snapshot covers holds the chosen value,
        which the snapshot already keeps durably: there is nothing to write for it.
        """
        last = self.wal.last_slot
        if last is None:
            first = self.wal.next_slot
            todo = [e for e in entries if e.i >= first]
        else:
            # Below the last slot the log is immutable and chosen (S3). A write for such a slot
            # can only be a stale one overtaken by a catch-up; the core ignores its Persisted.
            todo = [e for e in entries if e.i >= last]
            if len(todo) != len(entries):
                log.warning("wal.stale_write_skipped", below=last, slots=[e.i for e in entries])
        if not todo:
            return
        sync = any(isinstance(e.value, Batch) and e.value.sync for e in todo)
        records = [(e.i, encode_entry(e)) for e in todo]
        # A disk that hung for a while hands us a long backlog at once: append it in pieces the
        # WAL accepts (in order; the persister answers Persisted only after the whole call).
        for start in range(0, len(records), APPEND_CHUNK):
            chunk = records[start : start + APPEND_CHUNK]
            self.wal.append(chunk, sync=True if sync else None)

    def save_promise(self, n: int) -> None:
        self.wal.save_meta({"promised_n": n})

    def mark_rebuilt(self) -> None:
        """The core's ``Rebuilt``: this node votes again (runs in the persister's thread)."""
        assert self.identity is not None
        self.set_identity(replace(self.identity, status=Status.VOTER))

    # ---------------------------------------------------------------- last entry

    def last_entry(self) -> LogEntry | None:
        last = self.wal.last_slot
        if last is None:
            return self.snapshot_entry() if self.applied_i >= 0 else None
        return decode_entry(last, self.wal.read(last))

    def snapshot_entry(self) -> LogEntry:
        """Stand-in for the last log entry when the log is empty after a head snapshot.

        The core needs a last entry whenever something is applied (S3). The snapshot's slot is
        chosen and applied; the entry's value is never read again (only slots above
        ``applied_i`` are ever proposed or promised), so a ``Nop`` under ballot 0 stands for it.
        """
        return LogEntry(i=self.applied_i, n=0, value=NOP)

    # ---------------------------------------------------------------- collapse

    def entries_since_snapshot(self) -> int:
        last = self.wal.last_slot
        if last is None:
            return 0
        base = self.snapshot_slot if self.snapshot_slot is not None else -1
        return int(last) - base

    def bytes_since_snapshot(self) -> int:
        """Bytes of the log segments that hold slots beyond the head snapshot (not archived)."""
        base = self.snapshot_slot if self.snapshot_slot is not None else -1
        return sum(
            info.size_bytes
            for info in self.wal.segments()
            if not info.archived and (info.last_slot is None or info.last_slot > base)
        )

    def collapse_prepare(self) -> FrozenStore | None:
        """On the loop: freeze the store for a snapshot, or None if it is not safe now."""
        last = self.wal.last_slot
        if last is None or self.store.applied_i is None or self.store.applied_i > last:
            return None
        return self.store.freeze()

    def collapse_run(self, frozen: FrozenStore, *, force: bool) -> CollapseReport | None:
        """In a worker thread: write a head snapshot of ``frozen`` and prune what it covers."""
        applied = frozen.applied_i
        assert applied is not None

        def write(stream: BinaryIO) -> None:
            frozen.dump(stream, crc=snapshot_crc)

        def snapshot() -> tuple[int, Callable[[BinaryIO], None]]:
            return applied, write

        collapser = Collapser(
            self.wal,
            threshold_entries=0 if force else self.settings.collapse_threshold_entries,
            segments_to_keep=self.settings.segments_to_keep,
            snapshot=snapshot,
        )
        report = collapser.run_once()
        if report is not None:
            self.snapshot_slot = applied
            self.collapses += 1
        return report

    # ---------------------------------------------------------------- catch-up (source side)

    def catchup_plan(self, from_i: int) -> tuple[int | None, int]:
        """Whether a snapshot is needed to serve ``from_i``: (snapshot slot or None, first slot)."""
        first = self.wal.first_slot
        if first is None or from_i < first:
            head = self.wal.head_snapshot()
            if head is None:
                return None, 0 if first is None else first
            return head[0], head[0] + 1
        return None, from_i

    def iter_entries(self, start: int, upto: int) -> Iterator[tuple[int, bytes]]:
        for i, payload in self.wal.iter_from(start):
            if i > upto:
                return
            yield i, payload
