"""`parakoon bench` against a real 3-node cluster: it prints the table and writes the JSON,
writes only under its own prefix and cleans up, its live rate on a terminal agrees with its
table, and it fails at once when no node answers."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from parakoon_client import codec
from parakoon_node.commands.bench import make_key

from .conftest import ClusterProcs


def test_bench_prints_a_table_and_writes_json(cluster_factory: Any, tmp_path: Path) -> None:
    cluster: ClusterProcs = cluster_factory(lease_period_secs=1.0)
    cluster.start_all()
    cluster.wait_master()
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "parakoon_node",
            "bench",
            "--config",
            str(cluster.config),
            "--clients",
            "4",
            "--ops",
            "300",
            "--procs",
            "2",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    header = next(line for line in done.stdout.splitlines() if "phase" in line)
    assert all(word in header for word in ("ops/s", "p50 ms", "p99 ms", "max ms"))
    report = json.loads(out.read_text())
    phases = {r["phase"]: r for r in report["results"]}
    assert set(phases) == {"set", "get", "get-ng", "seq10", "mixed"}
    for name, result in phases.items():
        # Only acknowledged operations count; with a healthy cluster every one is.
        assert result["ok"] == 300, (name, result)
        assert result["failed"] == 0, (name, result)
        assert result["ops_per_sec"] > 0
        assert 0 < result["p50_ms"] <= result["p99_ms"] <= result["max_ms"]
        assert name in done.stdout
    # The sets happened under the run's own prefix, and the clean-up removed every one of them.
    assert report["prefix"].startswith("parakoon-bench/"), report["prefix"]
    assert "cleaned up: deleted the " in done.stdout
    master = cluster.wait_master()
    left = cluster.call(master, codec.PrefixKeys(prefix=b""))
    assert left == [], f"the benchmark left keys behind: {left[:5]}"


def test_bench_keeps_its_keys_only_when_asked_and_never_touches_others(
    cluster_factory: Any, tmp_path: Path
) -> None:
    cluster: ClusterProcs = cluster_factory(lease_period_secs=1.0)
    cluster.start_all()
    master = cluster.wait_master()
    assert cluster.call(master, codec.Set(key=make_key(0, 16), value=b"mine")) is None
    done = bench(cluster.config, "--phases", "set", "--prefix", "b/", "--no-cleanup")
    assert done.returncode == 0, done.stderr
    assert "kept the keys under 'b/'" in done.stdout
    keys = cluster.call(master, codec.PrefixKeys(prefix=b""))
    assert len(keys) == 301 and make_key(0, 16) in keys, len(keys)
    assert cluster.call(master, codec.Get(key=make_key(0, 16))) == b"mine"
    assert cluster.call(master, codec.Get(key=make_key(0, 16, b"b/"))) is not None


def test_bench_against_a_stopped_cluster_fails_at_once_in_one_line(cluster_factory: Any) -> None:
    cluster: ClusterProcs = cluster_factory(lease_period_secs=1.0)  # never started
    started = time.monotonic()
    done = bench(cluster.config)
    took = time.monotonic() - started
    print(done.stderr)
    assert done.returncode == 1
    assert took < 15, f"{took:.1f} s"
    assert "Traceback" not in done.stderr
    assert done.stderr.startswith("error: bench: no node of the cluster answers: ")
    for name in cluster.names:
        assert f"{name} at 127.0.0.1:{cluster.client_ports[name]}" in done.stderr


def bench(config: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "parakoon_node", "bench", "--config", str(config),
         "--clients", "2", "--ops", "300", "--procs", "1", *extra],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


LIVE_LINE = re.compile(
    r"^\s*(?P<phase>[\w-]+) \[[#-]+\]\s+(?P<ops>\d+) ops in\s+(?P<secs>[\d.]+) s"
    r"\s+(?P<rate>\d+) ops/s$"
)


def run_on_a_terminal(command: list[str], timeout: float) -> tuple[int, str, str]:
    """Run ``command`` with its stderr on a pseudo-terminal (bench draws its live line only on
    a terminal) and its stdout on a pipe; the exit code, stdout and everything the terminal
    got. Reads the terminal while the command runs, so it never blocks on a full buffer."""
    master, slave = pty.openpty()
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=slave, text=True) as proc:
            os.close(slave)
            slave = -1
            try:
                while not _read_some(master, chunks, proc):
                    if time.monotonic() >= deadline:
                        raise AssertionError(f"not within {timeout:g} s: {command}")
                assert proc.stdout is not None
                out = proc.stdout.read()
                code = proc.wait(timeout=10)
            finally:
                if proc.poll() is None:
                    proc.kill()
    finally:
        os.close(master)
        if slave >= 0:
            os.close(slave)
    return code, out, b"".join(chunks).decode(errors="replace")


def _read_some(master: int, chunks: list[bytes], proc: subprocess.Popen[str]) -> bool:
    """Read what the terminal has (at most 0.2 s of waiting); True once there is no more."""
    ready, _, _ = select.select([master], [], [], 0.2)
    if not ready:
        # Exited with nothing left to read (a helper process may still hold the terminal).
        return proc.poll() is not None
    try:
        data = os.read(master, 1 << 16)
    except OSError:  # EIO: every holder of the terminal closed it
        return True
    chunks.append(data)
    return not data


def test_bench_live_rate_agrees_with_its_table(cluster_factory: Any) -> None:
    """Both figures count acknowledged operations since the first worker started: every live
    line's rate is its operations over its seconds, the counts only grow, and the last live line
    of a phase is the table's row (same operations, same ops/s). Once half a phase is done the
    running rate is within a factor of 4 of the final one (a sanity bound: a rate measured from
    a different start, e.g. the parent's including process start-up, would fall outside it)."""
    cluster: ClusterProcs = cluster_factory(lease_period_secs=1.0)
    cluster.start_all()
    cluster.wait_master()
    ops = 2000
    code, out, terminal = run_on_a_terminal(
        [sys.executable, "-m", "parakoon_node", "bench", "--config", str(cluster.config),
         "--clients", "4", "--ops", str(ops), "--procs", "2", "--phases", "set,get"],
        timeout=120,
    )  # fmt: skip
    print(out)
    print(terminal.replace("\r", "\n"))
    assert code == 0, terminal
    table = {}
    for line in out.splitlines():
        cells = line.split()
        if cells and cells[0] in ("set", "get"):
            table[cells[0]] = {"ok": int(cells[2]), "rate": int(cells[4])}
    assert set(table) == {"set", "get"}, out
    live: dict[str, list[dict[str, float]]] = {"set": [], "get": []}
    for piece in re.split(r"[\r\n]+", terminal):
        m = LIVE_LINE.match(piece)
        if m:
            live[m["phase"]].append(
                {"ops": int(m["ops"]), "secs": float(m["secs"]), "rate": int(m["rate"])}
            )
    for phase, lines in live.items():
        final = table[phase]
        assert final["ok"] == ops, final
        assert lines, f"no live line for {phase}"
        assert lines[-1]["ops"] == final["ok"] and lines[-1]["rate"] == final["rate"], (
            phase,
            lines[-1],
            final,
        )
        counts = [row["ops"] for row in lines]
        assert counts == sorted(counts) and counts[-1] <= final["ok"], counts
        for row in lines:
            if row["secs"] >= 0.1:  # the seconds are shown to 0.01 s
                expected = row["ops"] / row["secs"]
                assert abs(row["rate"] - expected) <= 0.06 * expected + 1, (phase, row)
            if row["ops"] >= ops / 2:
                assert final["rate"] / 4 <= row["rate"] <= 4 * final["rate"], (phase, row, final)
