"""A damaged head snapshot is found, with its file and byte offset, by ``parakoon wal verify``,
by ``parakoon snapshot verify`` and by the node when it starts; a damaged WAL record makes
``parakoon wal dump`` exit non-zero. Real files written by the node's own Storage."""

from __future__ import annotations

from pathlib import Path

import pytest

from parakoon_client.codec import USet, encode_update
from parakoon_node.commands.cli import main
from parakoon_node.runtime.service import decode_payload
from parakoon_node.runtime.storage import Storage, StorageError, StorageSettings
from parakoon_paxos import Batch, LogEntry, MasterSet


def settings(home: Path) -> StorageSettings:
    return StorageSettings(
        home_dir=home,
        cluster_name="test",
        fsync=True,
        compressor="zstd",
        segment_entries_max=4,
        segment_bytes_max=1 << 20,
        collapse_threshold_entries=5,
        segments_to_keep=1,
        single_voter=False,
    )


def node_with_head_snapshot(home: Path) -> Path:
    """A home_dir whose log was collapsed by the node's own code; returns the snapshot file."""
    storage = Storage(settings(home), decode_payload)
    storage.recover()
    entries = [LogEntry(i=0, n=1, value=MasterSet(node="node_0"))] + [
        LogEntry(
            i=k,
            n=1,
            value=Batch(payloads=(encode_update(USet(key=b"k%03d" % k, value=b"v" * k)),)),
        )
        for k in range(1, 40)
    ]
    for e in entries:
        storage.append_entries([e])
        if e.i < 39:
            storage.apply(e.i, e.value)
    frozen = storage.collapse_prepare()
    assert frozen is not None
    storage.collapse_run(frozen, force=True)
    storage.wal.close()
    (head,) = (home / "wal").glob("head-*.snap")
    return head


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_intact_snapshot_passes_every_check(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    head = node_with_head_snapshot(tmp_path / "node_0")
    code, out, err = cli(capsys, "wal", "verify", str(tmp_path / "node_0"))
    assert (code, err) == (0, ""), out
    code, out, err = cli(capsys, "snapshot", "verify", str(head))
    assert (code, err) == (0, "")
    assert "OK, head snapshot of slot 38" in out
    storage = Storage(settings(tmp_path / "node_0"), decode_payload)
    storage.recover()
    assert storage.store.get_option(b"k038") == b"v" * 38


@pytest.mark.parametrize("where", ["header", "first block header", "payload", "end block"])
def test_a_flipped_byte_is_named_with_file_and_offset(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], where: str
) -> None:
    home = tmp_path / "node_0"
    head = node_with_head_snapshot(home)
    data = bytearray(head.read_bytes())
    at = {"header": 20, "first block header": 40, "payload": len(data) // 2}.get(
        where, len(data) - 6
    )
    data[at] ^= 0x10
    head.write_bytes(bytes(data))

    code, out, _err = cli(capsys, "wal", "verify", str(home))
    assert code == 1, out
    problem = next(line for line in out.splitlines() if line.startswith("error:"))
    assert str(head) in problem and " at offset " in problem and "head snapshot" in problem

    code, out, err = cli(capsys, "snapshot", "verify", str(head))
    assert (code, out) == (1, "")
    assert err.startswith(f"error: {head}: ") and "at byte offset" in err
    offset = int(err.rsplit("at byte offset ", 1)[1].split(")")[0])
    assert offset <= at + 16, (at, err)  # the damaged field, or the checksum that covers it

    with pytest.raises(StorageError) as caught:
        Storage(settings(home), decode_payload).recover()
    assert str(head) in str(caught.value) and f"at byte offset {offset}" in str(caught.value)


def test_snapshot_verify_refuses_other_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = tmp_path / "notes.txt"
    other.write_text("hello")
    code, out, err = cli(capsys, "snapshot", "verify", str(other))
    assert (code, out) == (1, "")
    assert "neither a parakoon backup nor a head snapshot" in err


def test_wal_dump_exits_non_zero_on_damage(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = tmp_path / "node_0"
    storage = Storage(settings(home), decode_payload)
    storage.recover()
    for k in range(3):
        storage.append_entries([LogEntry(i=k, n=1, value=MasterSet(node="node_0"))])
    storage.wal.close()
    (segment,) = sorted((home / "wal").glob("*.wal"))[:1]
    data = bytearray(segment.read_bytes())
    data[len(data) // 2] ^= 0x01
    segment.write_bytes(bytes(data))
    code, out, err = cli(capsys, "wal", "dump", str(home))
    assert code == 1
    assert "# ERROR" in out
    assert err.startswith("error: ") and str(segment) in err
