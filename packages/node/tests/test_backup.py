"""The backup file format (runtime/backup.py): round trip, and one flipped byte anywhere is
caught with the file and an offset at or before the flip."""

from __future__ import annotations

from pathlib import Path

import pytest

from parakoon_kv import Store
from parakoon_kv.updates import Set as KvSet
from parakoon_node.runtime.backup import (
    BackupError,
    BackupInfo,
    new_info,
    read_backup,
    verify_backup,
    write_backup_file,
)


def sample(tmp_path: Path, keys: int = 20) -> tuple[Path, BackupInfo, Store]:
    store = Store()
    store.apply_batch(0, [KvSet(key=b"k%03d" % k, value=b"v" * k) for k in range(keys)])
    frozen = store.freeze()
    info = new_info(cluster_id="arakoon", cluster_uuid="ab" * 16, node="node_1", frozen=frozen)
    path = tmp_path / "b.pkb"
    write_backup_file(path, frozen, info)
    return path, info, store


def test_round_trip(tmp_path: Path) -> None:
    path, info, store = sample(tmp_path)
    got_info, got = read_backup(path)
    assert got_info == info
    assert got.applied_i == 0 and got.key_count() == 20
    assert got.range_entries(None, True, None, True, -1) == store.range_entries(
        None, True, None, True, -1
    )
    line = verify_backup(path)
    assert "OK" in line and "slot 0" in line and "20 keys" in line and "node_1" in line


def test_every_flipped_byte_is_caught_with_file_and_offset(tmp_path: Path) -> None:
    path, _info, _store = sample(tmp_path)
    good = path.read_bytes()
    bad = tmp_path / "bad.pkb"
    for at in range(len(good)):
        damaged = bytearray(good)
        damaged[at] ^= 0x01
        bad.write_bytes(bytes(damaged))
        with pytest.raises(BackupError) as caught:
            read_backup(bad)
        assert caught.value.path == bad
        assert str(bad) in str(caught.value) and "offset" in str(caught.value)
        # The reader stops at the first problem: the offset is that of the damaged field, or,
        # for damage a checksum finds, that of the checksum covering it.
        assert caught.value.offset <= at or "checksum" in str(caught.value), (at, caught.value)
        assert 0 <= caught.value.offset <= len(good)


def test_truncated_and_extended_files_are_caught(tmp_path: Path) -> None:
    path, _info, _store = sample(tmp_path)
    good = path.read_bytes()
    bad = tmp_path / "bad.pkb"
    for size in (0, 5, 20, len(good) // 2, len(good) - 1):
        bad.write_bytes(good[:size])
        with pytest.raises(BackupError):
            read_backup(bad)
    bad.write_bytes(good + b"\x00")
    with pytest.raises(BackupError, match="after the trailer"):
        read_backup(bad)


def test_not_a_backup(tmp_path: Path) -> None:
    other = tmp_path / "x"
    other.write_bytes(b"hello world, not a backup at all")
    with pytest.raises(BackupError, match="not a parakoon backup"):
        read_backup(other)
    with pytest.raises(BackupError, match="cannot open"):
        read_backup(tmp_path / "missing")
