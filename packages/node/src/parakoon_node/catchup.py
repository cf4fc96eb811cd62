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

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc
import structlog

from parakoon_kv import Store

from .framing import FrameDecoder, PeerProtocolError, encode_frame
from .peer import PeerAddress, dial_peer, read_frame
from .storage import Storage, _crc, decode_entry

if TYPE_CHECKING:
    from .driver import Driver

log = structlog.get_logger("parakoon.catchup")

CHUNK_BYTES = 1 << 20
ENTRY_BATCH_BYTES = 1 << 20
FRAME_TIMEOUT_SECS = 30.0


class CatchupError(Exception):
    """The transfer could not be completed; the core is told ``CatchupFailed``."""


async def serve_catchup(
    storage: Storage,
    peer: str,
    stream: anyio.abc.SocketStream,
    decoder: FrameDecoder,
    pending: list[Any],
) -> None:
    """Source side: answer one fetch request on an accepted ``catchup`` connection."""
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
    upto = storage.applied_i  # S8: chosen slots only
    snap_slot, start = storage.catchup_plan(from_i)
    log.info("catchup.serving", peer=peer, from_i=from_i, upto=upto, snapshot=snap_slot)
    with storage.wal.pin(start):
        if snap_slot is not None:
            opened = storage.wal.open_head_snapshot()
            if opened is None:
                raise PeerProtocolError("head snapshot vanished while serving catch-up")
            _slot, head = opened
            with head:
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


def _size_of(handle: Any) -> int:
    try:
        import os

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


async def fetch_catchup(
    driver: Driver,
    storage: Storage,
    source: PeerAddress,
    from_i: int,
    *,
    cluster_id: str,
    me: str,
    max_frame_bytes: int,
    on_store_replaced: Any = None,
) -> None:
    """Receiving side: copy everything chosen from ``from_i`` on, then tell the core."""
    try:
        stream, decoder, pending = await dial_peer(
            source,
            cluster_id=cluster_id,
            me=me,
            purpose="catchup",
            max_frame_bytes=max_frame_bytes,
        )
    except Exception as exc:
        driver.catchup_failed(source.name, f"dial: {exc.__class__.__name__}: {exc}")
        return
    epoch = storage.lease_epoch
    try:
        await driver.persister.wait_idle()
        async with stream, driver.persister.lock:
            await stream.send(encode_frame(["fetch", from_i]))
            received = await _receive(stream, decoder, pending, storage, on_store_replaced)
    except Exception as exc:  # any failure: the core retries (CatchupFailed)
        driver.catchup_failed(source.name, f"{exc.__class__.__name__}: {exc}")
        return
    log.info("catchup.received", source=source.name, entries=received, applied_i=storage.applied_i)
    # Only a lease value applied *by this transfer* is news for the core's lease view (which it
    # then starts at now, conservatively). Re-announcing the lease it already knew would restart
    # that view and hold off elections for another lease period for nothing: after an idle
    # leader's last slot (followers always trail it by one), that kept drop-master from working.
    holder = storage.lease_holder if storage.lease_epoch != epoch else None
    driver.catchup_done(storage.applied_i, storage.last_entry(), holder)


async def _receive(
    stream: anyio.abc.SocketStream,
    decoder: FrameDecoder,
    pending: list[Any],
    storage: Storage,
    on_store_replaced: Any,
) -> int:
    received = 0
    tmp: Path = storage.settings.home_dir / "catchup-snapshot.tmp"
    snap_slot: int | None = None
    snap_file: Any = None
    try:
        while True:
            with anyio.fail_after(FRAME_TIMEOUT_SECS):
                frame = await read_frame(stream, decoder, pending)
            if not (isinstance(frame, list) and frame):
                raise CatchupError(f"bad catch-up frame {str(frame)[:80]!r}")
            kind = frame[0]
            if kind == "snap":
                snap_slot = int(frame[1])
                snap_file = open(tmp, "wb")  # noqa: SIM115 - closed at snapend or in finally
            elif kind == "chunk":
                if snap_file is None:
                    raise CatchupError("snapshot chunk outside a snapshot")
                await anyio.to_thread.run_sync(snap_file.write, frame[1])
            elif kind == "snapend":
                if snap_file is None or snap_slot is None:
                    raise CatchupError("snapshot end outside a snapshot")
                snap_file.close()
                snap_file = None
                await anyio.to_thread.run_sync(_install_snapshot, storage, snap_slot, tmp)
                store = await anyio.to_thread.run_sync(_load_store, tmp)
                storage.store = store
                storage.snapshot_slot = snap_slot
                if on_store_replaced is not None:
                    on_store_replaced(store)
                log.info("catchup.snapshot_installed", slot=snap_slot, keys=store.key_count())
            elif kind == "entries":
                received += await _take_entries(storage, frame[1])
            elif kind == "end":
                return received
            else:
                raise CatchupError(f"unknown catch-up frame kind {kind!r}")
    finally:
        if snap_file is not None:
            snap_file.close()
        tmp.unlink(missing_ok=True)


def _install_snapshot(storage: Storage, slot: int, tmp: Path) -> None:
    def write(out: Any) -> None:
        with open(tmp, "rb") as src:
            shutil.copyfileobj(src, out, CHUNK_BYTES)

    storage.wal.install_snapshot(slot, write)


def _load_store(tmp: Path) -> Store:
    with open(tmp, "rb") as src:
        return Store.load(src, crc=_crc)


async def _take_entries(storage: Storage, raw: Any) -> int:
    if not isinstance(raw, list):
        raise CatchupError("entries frame without a list")
    wal_last = storage.wal.last_slot
    to_write: list[tuple[int, bytes]] = []
    decoded = []
    for item in raw:
        if not (
            isinstance(item, list)
            and len(item) == 2
            and type(item[0]) is int
            and isinstance(item[1], bytes)
        ):
            raise CatchupError(f"malformed catch-up entry {str(item)[:80]!r}")
        i, payload = item
        entry = decode_entry(i, payload)
        if wal_last is None or i >= wal_last:
            to_write.append((i, payload))
        decoded.append(entry)
    if to_write:
        expected = 0 if wal_last is None else wal_last
        first = to_write[0][0]
        if wal_last is not None and first > wal_last + 1:
            raise CatchupError(f"gap: log ends at {wal_last}, source sent {first}")
        if wal_last is None and storage.snapshot_slot is None and first != expected:
            raise CatchupError(f"gap: empty log, source sent {first}")
        await anyio.to_thread.run_sync(lambda: storage.wal.append(to_write, sync=True))
    count = 0
    for entry in decoded:
        if entry.i == storage.applied_i + 1:
            storage.apply(entry.i, entry.value)
            count += 1
        elif entry.i > storage.applied_i + 1:
            raise CatchupError(f"gap: store at {storage.applied_i}, source sent {entry.i}")
        if count % 256 == 0:
            await anyio.lowlevel.checkpoint()
    return count
