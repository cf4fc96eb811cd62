"""Start a fresh 3-node cluster (fsync on) and run `parakoon bench` with 1, 16 and 128 clients.

Usage::

    uv run --all-packages python benchmarks/cluster_bench.py [--ops 20000] [--clients 1,16,128]

The cluster runs in a temporary folder on 127.0.0.1 (free ports), with the repository's
settings otherwise (2 s lease, fsync on, 16-byte keys, 100-byte values). Results go to
docs/performance.md (section ``cluster``) with the machine, date and command.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
# The tests' free_ports (its docstring says why ports are probed: the nodes need them in
# cluster.toml before they start); node_cpu_bench.py imports it from here.
sys.path.insert(0, str(Path(__file__).parents[1] / "testing"))
from _report import markdown_table, write_section
from parakoon_testing import free_ports

AIMS = (
    "Aims (issue 8, this 2-core machine): >= 18,000 acknowledged sets/s with 128 clients, "
    "p99 <= 30 ms; p50 <= 1.5 ms with 1 client; consistent gets >= 40,000/s."
)


def start_nodes(config: Path, base: Path, count: int = 3) -> list[subprocess.Popen[bytes]]:
    """``parakoon node`` for node_0 .. node_<count-1> of ``config``, logging to ``base``."""
    procs = []
    for k in range(count):
        command = [sys.executable, "-m", "parakoon_node", "node", "--config", str(config)]
        command += ["--node", f"node_{k}", "--log-format", "json", "--log-level", "warning"]
        log = open(base / f"node_{k}.log", "wb")  # noqa: SIM115 (the child holds it)
        procs.append(subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log))
        log.close()
    return procs


def stop_nodes(procs: Sequence[subprocess.Popen[bytes]]) -> None:
    """SIGTERM every process, then kill whichever has not exited within 15 s."""
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=15)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def show_logs(base: Path, lines: int = 20) -> None:
    """The end of each node's log: a failed run's temporary folder goes when the run ends."""
    for log in sorted(base.glob("node_*.log")):
        tail = log.read_text(errors="replace").splitlines()[-lines:]
        print(f"----- {log.name} -----", *tail, sep="\n", file=sys.stderr)


def cluster_config(
    base: Path,
    *,
    fsync: bool = True,
    lease: float = 2.0,
    node_ports: Sequence[str] = (),
    linger: float | None = None,
) -> tuple[Path, dict[str, list[int]]]:
    """A 3-node ``cluster.toml`` in ``base`` on free ports of 127.0.0.1.

    Every node gets a client port and a messaging address, plus one free port for each key of
    ``node_ports`` (``metrics_port``, ``redis_port``). ``linger`` sets ``batch_linger_secs``
    (the node's default when None). Returns the file and the ports per key (``client_port``,
    ``messaging`` and the ``node_ports``), each in node order.
    """
    keys = ["client_port", "messaging", *node_ports]
    free = free_ports(3 * len(keys))
    ports = {key: free[3 * k : 3 * k + 3] for k, key in enumerate(keys)}
    fsync_text = "true" if fsync else "false"
    lines = ["[cluster]", 'id = "bench"', f"lease_period_secs = {lease}", f"fsync = {fsync_text}"]
    if linger is not None:
        lines.append(f"batch_linger_secs = {linger}")
    for k in range(3):
        lines += ["", "[[nodes]]", f'name = "node_{k}"']
        lines += [f'addresses = ["127.0.0.1:{ports["messaging"][k]}"]']
        lines += [f"{key} = {ports[key][k]}" for key in keys if key != "messaging"]
        lines += [f'home_dir = "data/node_{k}"']
    path = base / "cluster.toml"
    path.write_text("\n".join(lines) + "\n")
    return path, ports


def bench_command(config: Path, clients: int, ops: int, phases: str, *extra: str) -> list[str]:
    """The ``parakoon bench`` command line every script drives the cluster with."""
    command = [sys.executable, "-m", "parakoon_node", "bench", "--config", str(config)]
    return [*command, "--clients", str(clients), "--ops", str(ops), "--phases", phases, *extra]


def write_config(base: Path, fsync: bool) -> Path:
    return cluster_config(base, fsync=fsync)[0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", type=int, default=20_000, help="operations per phase")
    parser.add_argument("--clients", default="1,16,128")
    parser.add_argument("--phases", default="set,get,get-ng,seq10,mixed")
    parser.add_argument("--no-fsync", action="store_true")
    parser.add_argument("--no-write", action="store_true", help="do not touch docs/")
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory(prefix="parakoon-bench-") as tmp:
        base = Path(tmp)
        config = write_config(base, fsync=not args.no_fsync)
        procs = start_nodes(config, base)
        try:
            time.sleep(1.0)
            for clients in [int(c) for c in args.clients.split(",")]:
                ops = args.ops if clients > 1 else max(2_000, args.ops // 10)
                out = base / f"bench-{clients}.json"
                cmd = bench_command(config, clients, ops, args.phases, "--json", str(out))
                print("+", " ".join(cmd[2:]), flush=True)
                subprocess.run(cmd, check=True)
                results.append(json.loads(out.read_text()))
        finally:
            stop_nodes(procs)
    rows = []
    for run in results:
        for r in run["results"]:
            rows.append(
                (
                    r["phase"],
                    run["clients"],
                    r["ok"],
                    r["failed"],
                    f"{r['ops_per_sec']:.0f}",
                    f"{r['p50_ms']:.2f}",
                    f"{r['p95_ms']:.2f}",
                    f"{r['p99_ms']:.2f}",
                    f"{r['max_ms']:.2f}",
                )
            )
    table = markdown_table(
        ("phase", "clients", "ok", "failed", "ops/s", "p50 ms", "p95 ms", "p99 ms", "max ms"),
        rows,
    )
    print(table)
    if not args.no_write:
        body = (
            f"3 nodes on 127.0.0.1, fsync {'off' if args.no_fsync else 'on'}, lease 2 s, "
            f"16-byte keys, 100-byte values, bench and nodes on the same {os.cpu_count()}-core "
            f"machine. `seq10` counts sequences of 10 sets.\n\n{table}\n\n{AIMS}\n"
        )
        write_section("cluster", "Cluster: parakoon bench against 3 nodes", body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
