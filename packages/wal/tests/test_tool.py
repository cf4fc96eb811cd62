"""The offline tool: dump, verify, truncate, and ``python -m parakoon_wal``."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path
from typing import BinaryIO

import pytest

from parakoon_wal import Wal, WalCorruptError, WalLockedError, WalUsageError, framing
from parakoon_wal.__main__ import main
from parakoon_wal.tool import dump, resolve_wal_dir, truncate, verify


def make_log(directory: Path, upto: int = 20) -> None:
    with Wal.open(directory, segment_entries_max=4, fsync=False) as wal:
        for k in range(0, upto, 2):
            wal.append([(k, f"value {k}".encode()), (k + 1, f"value {k + 1}".encode())])
        wal.append([(upto - 1, b"rewritten")])
        wal.save_meta({"promised_n": 3})

        def write(f: BinaryIO) -> None:
            f.write(b"snap")

        wal.write_head_snapshot(9, write)
        wal.prune(9, segments_to_keep=1)
        wal.archive_completed()


def test_resolve_prefers_home_wal_subdirectory(tmp_path: Path) -> None:
    assert resolve_wal_dir(tmp_path) == tmp_path
    (tmp_path / "wal").mkdir()
    assert resolve_wal_dir(tmp_path) == tmp_path / "wal"


def test_verify_clean_log(tmp_path: Path) -> None:
    make_log(tmp_path / "wal")
    report = verify(tmp_path)
    assert report.ok, report.lines()
    assert report.problems == ()
    assert (report.first_slot, report.last_slot, report.head_snapshot_slot) == (8, 19, 9)
    assert report.meta == {"promised_n": 3}
    assert "OK" in report.lines()[0]


def test_verify_reports_every_problem_with_file_and_offset(tmp_path: Path) -> None:
    make_log(tmp_path)
    segs = sorted(p for p in tmp_path.iterdir() if ".wal" in p.name)
    # damage a record in the first kept segment and remove one in the middle
    raw = bytearray(segs[0].read_bytes())
    plain = framing.SEGMENT_HEADER_SIZE
    if segs[0].name.endswith(".zst"):
        raw[len(raw) // 2] ^= 0xFF
    else:
        raw[plain + 25] ^= 0xFF
    segs[0].write_bytes(bytes(raw))
    segs[2].unlink()
    with open(segs[-1], "ab") as f:
        f.write(b"\x01\x02\x03")  # a torn tail: a warning, not an error
    (tmp_path / "meta").write_bytes(b"garbage")
    report = verify(tmp_path)
    assert not report.ok
    text = "\n".join(report.lines())
    assert str(segs[0]) in text
    assert "segment" in text and "missing" in text
    assert any(
        p.severity == "warning" and p.path == segs[-1] and "torn" in p.message
        for p in report.problems
    )
    assert any(p.path.name == "meta" for p in report.problems)
    # verify changed nothing
    assert (tmp_path / "meta").read_bytes() == b"garbage"
    assert segs[-1].read_bytes().endswith(b"\x01\x02\x03")


def test_dump_lists_records_and_marks_rewrites(tmp_path: Path) -> None:
    make_log(tmp_path)
    out = io.StringIO()
    report = dump(tmp_path, out)
    text = out.getvalue()
    assert "# head snapshot slot=9" in text
    assert f"19\t9\t{b'rewritten'.hex()}\trewrite" in text
    assert f"12\t8\t{b'value 12'.hex()}" in text
    assert report.records == 13  # slots 8..19 plus the rewrite
    assert report.errors == ()
    out = io.StringIO()
    assert dump(tmp_path, out, from_slot=18).records == 3


def test_truncate_after_slot_keeps_removed_bytes(tmp_path: Path) -> None:
    make_log(tmp_path)
    report = truncate(tmp_path, 13)
    assert report.last_slot == 13 and report.damage is None
    assert report.removed_files and all(p.exists() for p in report.saved_to)
    with Wal.open(tmp_path) as wal:
        assert wal.last_slot == 13
        assert [s for s, _ in wal.iter_from(8)] == list(range(8, 14))
        wal.append([(14, b"new life")])
    with pytest.raises(WalUsageError, match="every segment"):
        truncate(tmp_path, 2)


def test_truncate_repairs_a_corrupt_log_below_the_damage(tmp_path: Path) -> None:
    with Wal.open(tmp_path, segment_entries_max=100, fsync=False) as wal:
        wal.append([(k, b"x" * 30) for k in range(10)])
    (seg,) = [p for p in tmp_path.iterdir() if p.name.endswith(".wal")]
    raw = bytearray(seg.read_bytes())
    bad_record = 6
    raw[framing.SEGMENT_HEADER_SIZE + bad_record * 50 + 30] ^= 1
    seg.write_bytes(bytes(raw))
    with pytest.raises(WalCorruptError):
        Wal.open(tmp_path)
    report = truncate(tmp_path, 8)
    assert report.damage is not None and "checksum" in report.damage
    assert report.last_slot == bad_record - 1
    with Wal.open(tmp_path) as wal:
        assert wal.last_slot == bad_record - 1


def test_truncate_refuses_a_locked_directory(tmp_path: Path) -> None:
    with Wal.open(tmp_path) as wal:
        wal.append([(0, b"a"), (1, b"b")])
        with pytest.raises(WalLockedError):
            truncate(tmp_path, 0)


def test_main_commands(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_log(tmp_path)
    assert main(["verify", str(tmp_path)]) == 0
    assert "OK" in capsys.readouterr().out
    assert main(["dump", str(tmp_path), "--from-slot", "19"]) == 0
    assert "rewrite" in capsys.readouterr().out
    assert main(["truncate", str(tmp_path), "--after", "15"]) == 0
    assert "last slot is now 15" in capsys.readouterr().out
    assert main(["truncate", str(tmp_path), "--after", "1"]) == 1
    assert "every segment" in capsys.readouterr().err
    (tmp_path / "meta").write_bytes(b"garbage")
    assert main(["verify", str(tmp_path)]) == 1


def test_python_dash_m_runs(tmp_path: Path) -> None:
    make_log(tmp_path)
    done = subprocess.run(
        [sys.executable, "-m", "parakoon_wal", "verify", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "OK" in done.stdout


def test_verify_reports_every_damaged_record_and_checks_past_them(tmp_path: Path) -> None:
    with Wal.open(tmp_path, segment_entries_max=100, fsync=False) as wal:
        wal.append([(k, bytes([k]) * 30) for k in range(20)])
        wal.append([(20, b"last")])
    (seg,) = [p for p in tmp_path.iterdir() if p.name.endswith(".wal")]
    raw = bytearray(seg.read_bytes())
    record = 20 + 30
    for bad in (3, 11):
        raw[framing.SEGMENT_HEADER_SIZE + bad * record + 25] ^= 0x04
    seg.write_bytes(bytes(raw))
    report = verify(tmp_path)
    assert not report.ok
    errors = [p for p in report.problems if p.severity == "error"]
    assert [p.offset for p in errors] == [
        framing.SEGMENT_HEADER_SIZE + 3 * record,
        framing.SEGMENT_HEADER_SIZE + 11 * record,
    ]
    resumed = [p for p in report.problems if "resumes" in p.message]
    assert [p.offset for p in resumed] == [
        framing.SEGMENT_HEADER_SIZE + 4 * record,
        framing.SEGMENT_HEADER_SIZE + 12 * record,
    ]
    assert report.records == 21 - 2
    assert report.last_slot == 20


def test_verify_never_raises_on_random_damage(tmp_path: Path, seed: int) -> None:
    import random
    import shutil

    rng = random.Random(seed)
    base = tmp_path / "base"
    make_log(base, upto=40)
    files = sorted(p.name for p in base.iterdir() if ".wal" in p.name or p.name == "meta")
    for trial in range(40):
        work = tmp_path / f"t{trial}"
        shutil.copytree(base, work)
        target = work / rng.choice(files)
        data = bytearray(target.read_bytes())
        for i in rng.sample(range(len(data)), rng.randint(1, 4)):  # distinct: no undoing
            data[i] ^= 1 << rng.randrange(8)
        cut = rng.random() < 0.3
        if cut:
            del data[rng.randrange(len(data)) :]
        target.write_bytes(bytes(data))
        report = verify(work)
        print(f"trial {trial}: {target.name}: {len(report.problems)} problem(s)")
        assert report.ok == all(p.severity == "warning" for p in report.problems)
        if not cut and not target.name.endswith(".zst"):
            # a flipped bit is always seen (a cut at a record boundary of the live segment, or
            # a harmless change to a zstd frame header, may legitimately look fine)
            assert any(p.path == target for p in report.problems), target
        shutil.rmtree(work)
