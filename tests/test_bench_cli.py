"""`parakoon bench` against a real 3-node cluster: it prints the table and writes the JSON,
writes only under its own prefix and cleans up, and fails at once when no node answers."""

from __future__ import annotations

import json
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
