# mypy: disable-error-code="unreachable,redundant-expr"
# (the tests assert on state that method calls change; mypy keeps the first narrowing)
"""The node's storage layer on real files: recovery (R1), replay, snapshots, catch-up edge cases."""

from __future__ import annotations

from pathlib import Path

import pytest

from parakoon_client.codec import RemoteProtocolError, USet, encode_update
from parakoon_node.runtime.service import decode_payload
from parakoon_node.runtime.storage import (
    Storage,
    StorageError,
    StorageSettings,
    decode_entry,
    encode_entry,
)
from parakoon_paxos import NOP, Batch, LogEntry, MasterSet


def settings(home: Path, *, single: bool = False) -> StorageSettings:
    return StorageSettings(
        home_dir=home,
        cluster_name="test",
        fsync=True,
        compressor="zstd",
        segment_entries_max=4,
        segment_bytes_max=1 << 20,
        collapse_threshold_entries=5,
        segments_to_keep=1,
        single_voter=single,
    )


def set_batch(*pairs: tuple[bytes, bytes]) -> Batch:
    return Batch(payloads=tuple(encode_update(USet(key=k, value=v)) for k, v in pairs))


def write_and_apply(storage: Storage, entries: list[LogEntry], apply_upto: int) -> None:
    for e in entries:
        storage.append_entries([e])  # one append per slot, as the node does
        if e.i <= apply_upto:
            storage.apply(e.i, e.value)


def test_entry_encoding_round_trips() -> None:
    entry = LogEntry(i=7, n=12, value=set_batch((b"k", b"v")))
    assert decode_entry(7, encode_entry(entry)) == entry
    lease = LogEntry(i=8, n=12, value=MasterSet(node="node_1"))
    assert decode_entry(8, encode_entry(lease)) == lease


def test_recovery_replays_up_to_last_minus_one(tmp_path: Path) -> None:
    """R1: the last entry may be unchosen, so a multi-voter node replays up to last_i - 1."""
    storage = Storage(settings(tmp_path), decode_payload)
    entries = [
        LogEntry(i=0, n=1, value=MasterSet(node="node_0")),
        LogEntry(i=1, n=1, value=set_batch((b"a", b"1"))),
        LogEntry(i=2, n=1, value=set_batch((b"b", b"2"))),
    ]
    write_and_apply(storage, entries, apply_upto=1)
    storage.save_promise(5)
    storage.wal.close()

    again = Storage(settings(tmp_path), decode_payload)
    recovered = again.recover()
    assert recovered.applied_i == 1
    assert recovered.last == entries[2]
    assert recovered.promised_n == 5
    assert recovered.lease_holder == "node_0"
    assert again.store.get(b"a") == b"1"
    assert not again.store.exists(b"b")
    again.wal.close()


def test_single_voter_replays_everything(tmp_path: Path) -> None:
    storage = Storage(settings(tmp_path, single=True), decode_payload)
    entries = [LogEntry(i=k, n=1, value=set_batch((b"k%d" % k, b"v"))) for k in range(3)]
    write_and_apply(storage, entries, apply_upto=2)
    storage.wal.close()
    again = Storage(settings(tmp_path, single=True), decode_payload)
    recovered = again.recover()
    assert recovered.applied_i == 2
    assert again.store.key_count() == 3
    again.wal.close()


def test_recovery_from_snapshot_and_log_after_collapse(tmp_path: Path) -> None:
    storage = Storage(settings(tmp_path), decode_payload)
    entries = [LogEntry(i=k, n=1, value=set_batch((b"k%02d" % k, b"%d" % k))) for k in range(12)]
    write_and_apply(storage, entries, apply_upto=11)
    frozen = storage.collapse_prepare()
    assert frozen is not None
    report = storage.collapse_run(frozen, force=True)
    assert report is not None and report.snapshot_slot == 11
    storage.wal.close()

    again = Storage(settings(tmp_path), decode_payload)
    recovered = again.recover()
    assert again.snapshot_slot == 11
    assert recovered.applied_i == 11
    assert again.store.key_count() == 12
    assert recovered.last is not None and recovered.last.i == 11
    again.wal.close()


def test_snapshot_only_log_gives_a_stand_in_last_entry(tmp_path: Path) -> None:
    """After installing a peer's snapshot the log is empty: the core still needs a last entry."""
    source = Storage(settings(tmp_path / "src"), decode_payload)
    entries = [LogEntry(i=k, n=1, value=set_batch((b"k%d" % k, b"v"))) for k in range(6)]
    write_and_apply(source, entries, apply_upto=5)
    frozen = source.store.freeze()
    snap = tmp_path / "snap.bin"
    with open(snap, "wb") as f:
        frozen.dump(f)
    source.wal.close()

    target = Storage(settings(tmp_path / "dst"), decode_payload)
    target.recover()
    target.wal.install_snapshot(5, lambda out: out.write(snap.read_bytes()))  # type: ignore[arg-type]  # write() returns a count, unused
    target.wal.close()

    again = Storage(settings(tmp_path / "dst"), decode_payload)
    recovered = again.recover()
    assert recovered.applied_i == 5
    assert recovered.last == LogEntry(i=5, n=0, value=NOP)
    # A re-sent Accept for the snapshot's own slot writes nothing; the next slot is appended.
    again.append_entries([LogEntry(i=5, n=3, value=set_batch((b"x", b"y")))])
    assert again.wal.last_slot is None
    again.append_entries([LogEntry(i=6, n=3, value=set_batch((b"x", b"y")))])
    assert again.wal.last_slot == 6
    again.wal.close()


def test_undecodable_chosen_payload_stops_the_node(tmp_path: Path) -> None:
    """A chosen value that does not decode is damage or a bug: skipping it would fork replicas."""
    storage = Storage(settings(tmp_path), decode_payload)
    batch = Batch(payloads=(encode_update(USet(key=b"ok", value=b"1")), b"\xff\xff"))
    with pytest.raises(StorageError, match="chosen slot 0, update 1 of 2"):
        storage.apply(0, batch)
    assert not storage.store.exists(b"ok")  # nothing of the slot was applied
    storage.wal.close()


def test_replicated_payloads_decode_beyond_the_client_codec_defaults(tmp_path: Path) -> None:
    """The server may accept values above the codec's default string limit; replay must too."""
    storage = Storage(settings(tmp_path), decode_payload)
    big = b"x" * (33 << 20)  # above DEFAULT_LIMITS.max_string_bytes (32 MiB)
    storage.apply(0, Batch(payloads=(encode_update(USet(key=b"big", value=big)),)))
    assert storage.store.get(b"big") == big
    storage.wal.close()


def test_catchup_plan_needs_a_snapshot_only_for_pruned_slots(tmp_path: Path) -> None:
    storage = Storage(settings(tmp_path), decode_payload)
    entries = [LogEntry(i=k, n=1, value=set_batch((b"k%02d" % k, b"v"))) for k in range(20)]
    write_and_apply(storage, entries, apply_upto=19)
    assert storage.catchup_plan(0) == (None, 0)
    frozen = storage.collapse_prepare()
    assert frozen is not None
    storage.collapse_run(frozen, force=True)
    first = storage.wal.first_slot
    assert first is not None and first > 0
    assert storage.catchup_plan(0) == (19, 20)
    assert storage.catchup_plan(first) == (None, first)
    assert [i for i, _ in storage.iter_entries(first, 18)] == list(range(first, 19))
    storage.wal.close()


@pytest.mark.parametrize("bad", [b"", b"\x00" * 3])
def test_decode_payload_rejects_garbage(bad: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        decode_payload(bad)


def test_a_backlog_longer_than_the_wal_batch_limit_is_appended_in_pieces(tmp_path: Path) -> None:
    """A disk that hung hands the persister a long backlog at once (81,535 entries were seen);
    the WAL refuses batches above APPEND_ENTRIES_MAX, so storage appends them in pieces."""
    from parakoon_wal.log import APPEND_ENTRIES_MAX

    storage = Storage(settings(tmp_path), decode_payload)
    count = APPEND_ENTRIES_MAX + 1000
    storage.append_entries([LogEntry(i=i, n=1, value=NOP) for i in range(count)])
    assert storage.wal.last_slot == count - 1
    assert decode_entry(count - 1, storage.wal.read(count - 1)) == LogEntry(
        i=count - 1, n=1, value=NOP
    )
