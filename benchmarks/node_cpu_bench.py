"""Where the time goes: CPU microseconds per operation on each node and in the load generator.

Usage::

    uv run --all-packages python benchmarks/node_cpu_bench.py [--ops 30000] [--clients 128]

Starts a fresh 3-node cluster (fsync on) on 127.0.0.1, runs `parakoon bench` phases, and reads
each node's user and system CPU time from /proc before and after each phase; the load
generator's CPU comes from the rusage of its process tree. On a 2-core machine the cluster and
the load generator share the cores, so CPU per operation, not wall-clock throughput, is the
figure that says what each part costs. Results go to docs/performance.md (section ``node-cpu``).
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import urllib.request

from _report import markdown_table, write_section
from cluster_bench import bench_command, stop_nodes, write_config
from parakoon_testing import free_ports

TICK = os.sysconf("SC_CLK_TCK")


def cpu_of(pid: int) -> tuple[float, float]:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) / TICK, int(fields[12]) / TICK  # utime, stime


def who_master(config: Path) -> str:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "parakoon_node",
                "client",
                "--config",
                str(config),
                "who-master",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode == 0 and done.stdout.strip():
            return done.stdout.strip()
        time.sleep(0.3)
    raise RuntimeError("no master")


def bench(config: Path, phase: str, clients: int, ops: int) -> float:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(
        bench_command(config, clients, ops, phase),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=True,
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def add_metrics_ports(config: Path) -> dict[str, int]:
    """Give every node a metrics port (appended to its [[nodes]] table)."""
    ports = dict(zip((f"node_{k}" for k in range(3)), free_ports(3), strict=True))
    out = []
    for line in config.read_text().splitlines():
        out.append(line)
        if line.startswith('name = "node_'):
            name = line.split('"')[1]
            out.append(f"metrics_port = {ports[name]}")
    config.write_text("\n".join(out) + "\n")
    return ports


def scrape(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("parakoon_") and " " in line:
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", type=int, default=30_000)
    parser.add_argument("--clients", type=int, default=128)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="parakoon-cpu-") as tmp:
        base = Path(tmp)
        config = write_config(base, fsync=True)
        metrics_ports = add_metrics_ports(config)
        notes: list[str] = []
        procs = {
            f"node_{k}": subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "parakoon_node",
                    "node",
                    "--config",
                    str(config),
                    "--node",
                    f"node_{k}",
                    "--log-format",
                    "json",
                    "--log-level",
                    "warning",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for k in range(3)
        }
        try:
            master = who_master(config)
            bench(config, "set", args.clients, args.ops)  # warm-up and data for the reads
            for phase in ("set", "get", "get-ng", "seq10"):
                before = {name: cpu_of(p.pid) for name, p in procs.items()}
                m0 = scrape(metrics_ports[master])
                generator = bench(config, phase, args.clients, args.ops)
                m1 = scrape(metrics_ports[master])
                after = {name: cpu_of(p.pid) for name, p in procs.items()}
                commits = m1["parakoon_fsync_seconds_count"] - m0["parakoon_fsync_seconds_count"]
                if phase in ("set", "seq10") and commits > 0:
                    fsync_ms = (
                        (m1["parakoon_fsync_seconds_sum"] - m0["parakoon_fsync_seconds_sum"])
                        / commits
                        * 1000
                    )
                    batches = (
                        m1["parakoon_batch_requests_count"] - m0["parakoon_batch_requests_count"]
                    )
                    per_batch = args.ops / batches if batches else 0.0
                    notes.append(
                        f"- `{phase}` on the master: {commits:.0f} group commits for {args.ops} "
                        f"operations, mean write + fdatasync {fsync_ms:.2f} ms (three nodes "
                        f"share one disk), {per_batch:.1f} client requests per batch handed "
                        "to the core"
                    )
                for name in sorted(procs):
                    user = (after[name][0] - before[name][0]) / args.ops * 1e6
                    system = (after[name][1] - before[name][1]) / args.ops * 1e6
                    role = "master" if name == master else "follower"
                    rows.append((phase, f"{name} ({role})", f"{user:.1f}", f"{system:.1f}"))
                rows.append(
                    (
                        phase,
                        "load generator (all processes)",
                        "",
                        f"{generator / args.ops * 1e6:.1f} (user+sys, incl. start-up)",
                    )
                )
        finally:
            stop_nodes(list(procs.values()))
    table = markdown_table(("phase", "process", "user us/op", "sys us/op"), rows)
    print(table)
    if not args.no_write:
        body = (
            f"{args.clients} clients, {args.ops} operations per phase, 3 nodes, fsync on. "
            "CPU time per acknowledged operation, read from /proc for each node; the load "
            "generator's from its rusage (it includes starting its worker processes, about "
            "0.3 s of CPU each).\n\n"
            f"{table}\n\n" + "\n".join(notes) + "\n\n"
            "How to read it: the master does all the client-facing work (decode, lease check, "
            "encode, one `send` system call per answer, which on loopback also runs the "
            "receiver's TCP processing) plus proposing, persisting and applying every batch; "
            "a follower only receives each batch, persists it and applies it. With one slot in "
            "flight, throughput is the batch size divided by the slot time (one fdatasync plus "
            "a round trip plus the CPU for the batch). The load generator competes with the nodes "
            "for the same two cores, so its cost per operation is shown too. One slot in flight "
            "also means the clients answered from slot k can only join slot k + 2, so 128 "
            "closed-loop clients form two alternating groups of about 64: sets/s is about 64 "
            "/ (fdatasync + round trip + "
            "follower apply), which is why the disk's fsync latency under three concurrent "
            "writers, more than any CPU figure, sets the ceiling at 128 clients.\n"
        )
        write_section("node-cpu", "Where the time goes: CPU per operation", body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
