"""``parakoon wal dump|verify|truncate`` over a real log written by ``parakoon_wal.Wal``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from parakoon_node.commands.cli import main
from parakoon_wal import Wal

TIMEOUT_SECS = 60


def make_log(home: Path, slots: int = 10) -> Path:
    """A node home folder whose ``wal/`` holds ``slots`` records in segments of 4."""
    with Wal.open(home / "wal", segment_entries_max=4) as wal:
        wal.append([(slot, f"payload-{slot}".encode()) for slot in range(slots)])
    return home


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    print(f"exit={code}\nstdout={captured.out!r}\nstderr={captured.err!r}")
    return code, captured.out, captured.err


def test_dump_lists_every_record(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    home = make_log(tmp_path / "node_0")
    code, out, err = run_cli(capsys, "wal", "dump", str(home))
    assert (code, err) == (0, "")
    records = [line for line in out.splitlines() if not line.startswith("#")]
    assert records == [f"{slot}\t9\t{f'payload-{slot}'.encode().hex()}" for slot in range(10)]
    assert any(line.startswith("# segment ") for line in out.splitlines())


def test_dump_from_slot(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    home = make_log(tmp_path / "node_0")
    code, out, _ = run_cli(capsys, "wal", "dump", str(home), "--from-slot", "7")
    assert code == 0
    records = [line.split("\t")[0] for line in out.splitlines() if not line.startswith("#")]
    assert records == ["7", "8", "9"]


def test_verify_ok(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    home = make_log(tmp_path / "node_0")
    code, out, err = run_cli(capsys, "wal", "verify", str(home))
    assert (code, err) == (0, "")
    assert out.startswith(f"{home / 'wal'}: OK: ")
    assert "10 record(s), slots 0..9" in out


def test_verify_damaged_names_file_and_offset(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = make_log(tmp_path / "node_0")
    segments = sorted((home / "wal").glob("*.wal"))
    first = segments[0]
    data = bytearray(first.read_bytes())
    data[len(data) // 2] ^= 0xFF  # a bit flip inside a record of a closed segment
    first.write_bytes(bytes(data))
    code, out, _ = run_cli(capsys, "wal", "verify", str(home))
    assert code == 1
    assert out.startswith(f"{home / 'wal'}: DAMAGED: ")
    assert f"error: {first} at offset " in out


def test_truncate_then_verify(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    home = make_log(tmp_path / "node_0")
    code, out, err = run_cli(capsys, "wal", "truncate", str(home), "--after", "6")
    assert (code, err) == (0, "")
    assert out.startswith("truncated after slot 6: last slot is now 6\n")
    assert list((home / "wal" / "torn").iterdir()), "what was cut is kept aside"
    code, out, _ = run_cli(capsys, "wal", "verify", str(home))
    assert code == 0
    assert "7 record(s), slots 0..6" in out


def test_truncate_refuses_a_locked_log(tmp_path: Path) -> None:
    home = make_log(tmp_path / "node_0")
    with Wal.open(home / "wal"):
        # Another process, as an operator's shell would be, while "the node" holds the lock.
        result = subprocess.run(
            [sys.executable, "-m", "parakoon_node", "wal", "truncate", str(home), "--after", "3"],
            capture_output=True,
            text=True,
            timeout=TIMEOUT_SECS,
            check=False,
        )
    print(result.stdout, result.stderr)
    assert result.returncode == 1
    assert (
        result.stderr == f"error: {home / 'wal'}: the WAL directory is locked by another open log\n"
    )
    assert "Traceback" not in result.stderr


def test_truncate_needs_after(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["wal", "truncate", "somewhere"])
    assert info.value.code == 2
    assert "--after" in capsys.readouterr().err


def test_truncate_rejects_a_negative_slot(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["wal", "truncate", "somewhere", "--after", "-1"])
    assert info.value.code == 2
    assert "expected a slot number >= 0, got '-1'" in capsys.readouterr().err


def test_missing_home_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(capsys, "wal", "verify", str(tmp_path / "nope"))
    assert (code, out) == (1, "")
    assert err == f"error: {tmp_path / 'nope'}: no such folder\n"


def test_home_dir_from_the_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "cluster.toml").write_text(
        '[cluster]\nid = "x"\n\n[[nodes]]\nname = "node_0"\naddresses = ["127.0.0.1:4010"]\n'
        'client_port = 4000\nhome_dir = "data/node_0"\n'
    )
    make_log(tmp_path / "data" / "node_0", slots=3)
    config = str(tmp_path / "cluster.toml")
    code, out, _ = run_cli(capsys, "wal", "verify", "--config", config, "--node", "node_0")
    assert code == 0
    assert "3 record(s), slots 0..2" in out
    code, _, err = run_cli(capsys, "wal", "verify", "--config", config, "--node", "node_5")
    assert code == 2
    assert err == f"error: {config}: no node named 'node_5' (nodes: node_0)\n"


def test_home_dir_or_node_is_required(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(capsys, "wal", "verify")
    assert code == 2
    assert err == "error: HOME_DIR (or --node NAME) is required\n"
