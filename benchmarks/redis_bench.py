"""redis-benchmark against the Redis port of a fresh 3-node cluster (fsync on) and against one
redis-server with ``appendfsync always``, on the same machine in the same run.

Usage::

    uv run --all-packages python benchmarks/redis_bench.py [--requests 20000] [--clients 50]

Needs ``redis-benchmark`` and ``redis-server`` (Debian: redis-tools, redis-server). The
cluster runs in a temporary folder on 127.0.0.1 (free ports) with a 2 s lease and fsync on;
redis-server runs with ``--appendonly yes --appendfsync always --save ""`` (every write
fsynced before the reply, the closest Redis has to parakoon's guarantee on one machine, which
it of course does not replicate). Results go to docs/performance.md (section ``redis``).
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1] / "testing"))
from _report import markdown_table, write_section
from cluster_bench import cluster_config, start_nodes, stop_nodes
from parakoon_testing import free_ports


def write_config(base: Path) -> tuple[Path, list[int]]:
    config, ports = cluster_config(base, node_ports=["redis_port"])
    return config, ports["redis_port"]


def wait_master(ports: list[int], timeout: float = 30.0) -> int:
    """The Redis port of the master, by the route of docs/redis.md (INFO replication)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for port in ports:
            try:
                client = redis.Redis(port=port, socket_timeout=2)
                if client.info("replication")["role"] == "master":
                    client.set("bench:probe", "1")
                    return port
            except (redis.ConnectionError, redis.ResponseError):
                pass
        time.sleep(0.2)
    raise RuntimeError("no master within the timeout")


def run_benchmark(
    port: int, requests: int, clients: int, tests: str = "set,get"
) -> list[dict[str, str]]:
    command = [
        "redis-benchmark", "-p", str(port), "-t", tests, "-n", str(requests),
        "-c", str(clients), "--csv",
    ]  # fmt: skip
    print("+", " ".join(command), flush=True)
    done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=900)
    if done.returncode != 0 or "rror" in done.stderr:
        raise RuntimeError(f"redis-benchmark failed: {done.stderr.strip()}")
    return list(csv.DictReader(io.StringIO(done.stdout)))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--no-write", action="store_true", help="do not touch docs/")
    args = parser.parse_args()
    for binary in ("redis-benchmark", "redis-server"):
        if shutil.which(binary) is None:
            print(f"{binary} is not installed (apt-get install redis-tools redis-server)")
            return 2
    load_before = os.getloadavg()[0]
    results: list[tuple[str, list[dict[str, str]]]] = []
    with tempfile.TemporaryDirectory(prefix="parakoon-redis-bench-") as tmp:
        base = Path(tmp)
        config, redis_ports = write_config(base)
        procs = start_nodes(config, base)
        (server_port,) = free_ports(1)
        (base / "redis").mkdir()
        server = subprocess.Popen(
            ["redis-server", "--port", str(server_port), "--bind", "127.0.0.1",
             "--dir", str(base / "redis"), "--save", "", "--appendonly", "yes",
             "--appendfsync", "always", "--daemonize", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            master = wait_master(redis_ports)
            wait_master([server_port])
            hot = max(1000, args.requests // 10)
            for label, port in (
                ("parakoon, 3 nodes, fsync on", master),
                ("redis-server 7, appendfsync always", server_port),
            ):
                rows_of = run_benchmark(port, args.requests, args.clients)
                # INCR of one key, fewer requests: on parakoon each one waits for the previous
                # one's consensus round (docs/redis.md, "Atomicity").
                rows_of += run_benchmark(port, hot, args.clients, "incr")
                results.append((label, rows_of))
        finally:
            stop_nodes([*procs, server])
    load_after = os.getloadavg()[0]
    rows = [
        (
            target,
            row["test"],
            f"{float(row['rps']):.0f}",
            row["avg_latency_ms"],
            row["p50_latency_ms"],
            row["p99_latency_ms"],
            row["max_latency_ms"],
        )
        for target, rows_of in results
        for row in rows_of
    ]
    table = markdown_table(
        ("server", "test", "requests/s", "avg ms", "p50 ms", "p99 ms", "max ms"), rows
    )
    print(table)
    if not args.no_write:
        body = (
            f"`redis-benchmark -t set,get -n {args.requests} -c {args.clients}` (its default "
            "3-byte values, one key per test), and `redis-benchmark -t incr -n "
            f"{max(1000, args.requests // 10)} -c {args.clients}` (one counter), first "
            "against the master's Redis port of a fresh "
            "3-node parakoon cluster on 127.0.0.1 (fsync on, lease 2 s: every SET is chosen by "
            "a majority, fsynced and applied before its reply), then against one redis-server "
            f"with `appendfsync always` (fsync per write, no replication). 1-minute load average "
            f"{load_before:.1f} before and {load_after:.1f} after the run on "
            f"{os.cpu_count()} cores: **the machine was shared with other work** (simulator "
            "runs and a fault test), so both columns are low and noisy; compare them with each "
            f"other, not with other machines.\n\n{table}\n"
        )
        write_section("redis", "Redis port: redis-benchmark against 3 nodes and redis-server", body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
