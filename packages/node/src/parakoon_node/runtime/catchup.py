"""Catch-up over the peer port (rule R4): a node that is behind copies chosen slots from a peer.

The node that is behind dials the source with purpose ``"catchup"`` and asks
``["fetch", from_i]`` (``from_i`` is its own last slot, which may be unchosen and is overwritten).
The source answers with a stream of frames:

* ``["snap", slot, size]`` then ``["chunk", bytes]``... then ``["snapend"]``: the source no
  longer keeps ``from_i`` in its log (it collapsed), so it first ships its head snapshot;
* ``["entries", [[i, payload], ...]]``: log records, in slot order, never beyond the source's
  ``applied_i`` (S8: only chosen data is transferred);
* ``["end", applied_i]``.

While it streams, the source pins the segments it reads so its collapser cannot prune them, and
it reads the snapshot through a file handle opened before the first chunk, so a collapse that
replaces the head snapshot meanwhile does not disturb the transfer.

The receiving side owns its log for the duration (it holds the persister's lock): it installs a
received snapshot (which atomically replaces the head snapshot and drops the segments it covers),
appends the records (rewriting its own last slot where they overlap), applies every record beyond
its store's ``applied_i``, and reports ``CatchupDone`` to the core.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

import anyio
import anyio.abc
import structlog

from parakoon_kv import Store
from parakoon_paxos import LogEntry, Membership

from .driver import Persister
from .framing import FrameDecoder, PeerProtocolError, encode_frame
from .identity import PeerIdentities
from .peer import PeerAddress, dial_peer, read_frame
from .storage import Storage, decode_entry, decode_membership, snapshot_crc
from .tls import TlsContexts

log = structlog.get_logger("parakoon.catchup")

CHUNK_BYTES = 1 << 20
ENTRY_BATCH_BYTES = 1 << 20
FRAME_TIMEOUT_SECS = 30.0


class CatchupError(Exception):
    """The transfer could not be completed; the core is told ``CatchupFailed``."""


async def serve_catchup(
    storage: Storage,
    peer: str,
    stream: anyio.abc.ByteStream,
    decoder: FrameDecoder,
    pending: list[Any],
    *,
    wait_durable: Callable[[], Awaitable[None]],
) -> None:
    """Source side: answer one fetch request on an accepted ``catchup`` connection.

    ``wait_durable`` returns once every log write queued so far is durable. Before that, the
    log may still hold, at an applied slot, the older unchosen copy that a queued rewrite is
    about to replace (a follower applies slot i when slot i + 1 arrives, possibly before its
    rewrite of slot i reached the disk); serving it would ship a value that was never chosen.
    After it, every slot up to ``applied_i`` holds its chosen value, and later rewrites of such
    a slot can only write that same value again.

    Raises ``PeerProtocolError`` for a bad request and ``WalError`` when the log moved under us
    (for instance a collapse pruned what we meant to send); the caller closes the connection
    and the receiver tries again.
    """
    with anyio.fail_after(FRAME_TIMEOUT_SECS):
        request = await read_frame(stream, decoder, pending)
    if not (
        isinstance(request, list)
        and len(request) == 2
        and request[0] == "fetch"
        and type(request[1]) is int
        and request[1] >= 0
    ):
        raise PeerProtocolError(f"bad catch-up request from {peer}: {str(request)[:80]!r}")
    from_i: int = request[1]
    await wait_durable()
    upto = storage.applied_i  # S8: chosen slots only
    snap_slot, start = storage.catchup_plan(from_i)
    head: Any = None
    if snap_slot is not None:
        opened = storage.wal.open_head_snapshot()
        if opened is None:
            raise PeerProtocolError("head snapshot vanished while serving catch-up")
        # The snapshot we actually opened decides where the entries resume: a collapse may
        # have replaced the one catchup_plan saw. The open file stays readable either way.
        snap_slot, head = opened
        start = snap_slot + 1
    log.info("catchup.serving", peer=peer, from_i=from_i, upto=upto, snapshot=snap_slot)
    try:
        with storage.wal.pin(start):
            if head is not None:
                size = _size_of(head)
                await stream.send(encode_frame(["snap", snap_slot, size]))
                while True:
                    chunk = await anyio.to_thread.run_sync(head.read, CHUNK_BYTES)
                    if not chunk:
                        break
                    await stream.send(encode_frame(["chunk", chunk]))
                await stream.send(encode_frame(["snapend"]))
            if start <= upto:
                entries = storage.iter_entries(start, upto)
                while True:
                    batch = await anyio.to_thread.run_sync(_take_batch, entries)
                    if not batch:
                        break
                    await stream.send(encode_frame(["entries", batch]))
            await stream.send(encode_frame(["end", upto]))
    finally:
        if head is not None:
            head.close()


def _size_of(handle: Any) -> int:
    try:
        return os.fstat(handle.fileno()).st_size
    except (OSError, AttributeError, ValueError):
        return -1


def _take_batch(entries: Iterator[tuple[int, bytes]]) -> list[list[object]]:
    batch: list[list[object]] = []
    size = 0
    for i, payload in entries:
        batch.append([i, payload])
        size += len(payload) + 16
        if size >= ENTRY_BATCH_BYTES:
            break
    return batch


class CatchupCore(Protocol):
    """Where the outcome of a transfer goes (:class:`~.driver.Driver` is one)."""

    def catchup_done(
        self,
        applied_i: int,
        last: LogEntry | None,
        holder: str | None,
        membership: Membership | None = None,
    ) -> None: ...

    def catchup_failed(self, source: str, why: str) -> None: ...


class LocalStorageFailure(Exception):
    """Our own log or snapshot write failed during catch-up: the node must stop, not retry."""


async def fetch_catchup(
    driver: CatchupCore,
    persister: Persister,
    storage: Storage,
    source: PeerAddress,
    from_i: int,
    *,
    cluster_id: str,
    me: str,
    max_frame_bytes: int,
    identities: PeerIdentities,
    tls: TlsContexts | None = None,
) -> None:
    """Receiving side: copy everything chosen from ``from_i`` on, then tell the core.

    A network or source problem ends in ``CatchupFailed`` (the core retries), unless some slots
    were already applied: then the core is told ``CatchupDone`` with what we really have, so its
    view and the store never disagree. A failure of our own disk raises
    :class:`LocalStorageFailure`, which stops the node.
    """
    try:
        stream, decoder, pending = await dial_peer(
            source,
            cluster_id=cluster_id,
            me=me,
            purpose="catchup",
            max_frame_bytes=max_frame_bytes,
            identities=identities,
            tls=tls,
        )
    except Exception as exc:  # noqa: BLE001 (any dial failure is reported to the core)
        driver.catchup_failed(source.name, f"dial: {exc.__class__.__name__}: {exc}")
        return
    epoch = storage.lease_epoch
    applied_before = storage.applied_i
    snapshot_before = storage.snapshot_slot
    failure: str | None = None
    received = 0
    try:
        await persister.wait_idle()
        async with stream, persister.lock:
            await stream.send(encode_frame(["fetch", from_i]))
            received = await _receive(stream, decoder, pending, storage)
    except LocalStorageFailure:
        raise
    except Exception as exc:  # noqa: BLE001 (the network or the source: the core retries)
        failure = f"{exc.__class__.__name__}: {exc}"
    # Only a lease value applied *by this transfer* is news for the core's lease view (which it
    # then starts at now, conservatively). Re-announcing the lease it already knew would restart
    # that view and hold off elections for another lease period for nothing: after an idle
    # leader's last slot (followers always trail it by one), that kept drop-master from working.
    holder = storage.lease_holder if storage.lease_epoch != epoch else None
    progressed = storage.applied_i != applied_before or storage.snapshot_slot != snapshot_before
    if failure is not None and not progressed:
        driver.catchup_failed(source.name, failure)
        return
    if failure is not None:
        log.warning(
            "catchup.partial", source=source.name, reason=failure, applied_i=storage.applied_i
        )
    log.info("catchup.received", source=source.name, entries=received, applied_i=storage.applied_i)
    driver.catchup_done(storage.applied_i, storage.last_entry(), holder, storage.membership)


async def _local(func: Callable[..., Any], *args: Any) -> Any:
    """Run a write to our own disk in a worker thread; its failure is fatal for the node."""
    try:
        return await anyio.to_thread.run_sync(func, *args)
    except Exception as exc:
        log.error("catchup.local_write_failed", error=f"{exc.__class__.__name__}: {exc}")
        raise LocalStorageFailure(f"{exc.__class__.__name__}: {exc}") from exc


async def _receive(
    stream: anyio.abc.ByteStream,
    decoder: FrameDecoder,
    pending: list[Any],
    storage: Storage,
) -> int:
    received = 0
    tmp: Path = storage.settings.home_dir / "catchup-snapshot.tmp"
    snap_slot: int | None = None
    snap_size = -1
    snap_file: Any = None
    snap_written = 0
    try:
        while True:
            with anyio.fail_after(FRAME_TIMEOUT_SECS):
                frame = await read_frame(stream, decoder, pending)
            if not (isinstance(frame, list) and frame):
                raise CatchupError(f"bad catch-up frame {str(frame)[:80]!r}")
            kind = frame[0]
            if kind == "snap":
                if len(frame) != 3 or type(frame[1]) is not int or type(frame[2]) is not int:
                    raise CatchupError(f"bad snapshot header {str(frame)[:80]!r}")
                snap_slot, snap_size, snap_written = frame[1], frame[2], 0
                snap_file = await _local(open, tmp, "wb")
            elif kind == "chunk":
                if snap_file is None or len(frame) != 2 or not isinstance(frame[1], bytes):
                    raise CatchupError("snapshot chunk outside a snapshot")
                await _local(snap_file.write, frame[1])
                snap_written += len(frame[1])
            elif kind == "snapend":
                if snap_file is None or snap_slot is None:
                    raise CatchupError("snapshot end outside a snapshot")
                await _local(snap_file.close)
                snap_file = None
                if snap_size >= 0 and snap_written != snap_size:
                    raise CatchupError(
                        f"snapshot of {snap_written} bytes, the source announced {snap_size}"
                    )
                # Verify before installing: a damaged transfer must not replace our log.
                try:
                    store = await anyio.to_thread.run_sync(_load_store, tmp)
                except Exception as exc:
                    raise CatchupError(f"received snapshot does not load: {exc}") from exc
                if store.applied_i != snap_slot:
                    raise CatchupError(
                        f"snapshot says slot {store.applied_i}, the source said {snap_slot}"
                    )
                await _local(_install_snapshot, storage, snap_slot, tmp)
                storage.store = store
                storage.snapshot_slot = snap_slot
                storage.membership = decode_membership(store.meta, "a caught-up snapshot")
                log.info("catchup.snapshot_installed", slot=snap_slot, keys=store.key_count())
            elif kind == "entries":
                received += await _take_entries(storage, frame[1] if len(frame) == 2 else None)
            elif kind == "end":
                return received
            else:
                raise CatchupError(f"unknown catch-up frame kind {kind!r}")
    finally:
        if snap_file is not None:
            snap_file.close()
        tmp.unlink(missing_ok=True)  # noqa: ASYNC240 (a local unlink on cleanup)


def _install_snapshot(storage: Storage, slot: int, tmp: Path) -> None:
    def write(out: Any) -> None:
        with open(tmp, "rb") as src:
            shutil.copyfileobj(src, out, CHUNK_BYTES)

    storage.wal.install_snapshot(slot, write)


def _load_store(tmp: Path) -> Store:
    with open(tmp, "rb") as src:
        return Store.load(src, crc=snapshot_crc)


async def _take_entries(storage: Storage, raw: Any) -> int:
    """Append the source's chosen records to our log and apply the ones beyond our store."""
    if not isinstance(raw, list):
        raise CatchupError("entries frame without a list")
    decoded = []
    for item in raw:
        if not (
            isinstance(item, list)
            and len(item) == 2
            and type(item[0]) is int
            and isinstance(item[1], bytes)
        ):
            raise CatchupError(f"malformed catch-up entry {str(item)[:80]!r}")
        try:
            decoded.append((decode_entry(item[0], item[1]), item[1]))
        except Exception as exc:
            raise CatchupError(f"undecodable catch-up entry at slot {item[0]}: {exc}") from exc
    # What the log can take: its last slot may be rewritten (it may be our unchosen copy, S3),
    # everything below it is immutable; an empty log (just after a snapshot) continues at its
    # next slot. Older records are already in our log or snapshot.
    wal = storage.wal
    first = wal.next_slot if wal.last_slot is None else wal.last_slot
    to_write = [(entry.i, payload) for entry, payload in decoded if entry.i >= first]
    if to_write:
        if to_write[0][0] > wal.next_slot:
            raise CatchupError(f"gap: our log continues at {wal.next_slot}, got {to_write[0][0]}")
        await _local(lambda: wal.append(to_write, sync=True))
    count = 0
    for entry, _payload in decoded:
        if entry.i == storage.applied_i + 1:
            storage.apply(entry.i, entry.value)
            count += 1
            if count % 256 == 0:
                await anyio.lowlevel.checkpoint()
        elif entry.i > storage.applied_i + 1:
            raise CatchupError(f"gap: store at {storage.applied_i}, source sent {entry.i}")
    return count
