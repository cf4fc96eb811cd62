"""`parakoon bench` against a real 3-node cluster: it prints the table and writes the JSON."""

from __future__ import annotations

import json
import subprocess
import sys
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
    # The sets really happened: read one back through the cluster.
    master = cluster.wait_master()
    assert cluster.call(master, codec.Get(key=make_key(0, 16))) is not None
