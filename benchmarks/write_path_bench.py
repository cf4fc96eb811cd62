"""Where a write's time goes: the per-stage breakdown of acknowledged sets on a 3-node cluster.

Usage::

    uv run --all-packages python benchmarks/write_path_bench.py [--clients 1,16,128] [--ops N]
        [--linger 0,0.01] [--rounds K]

Starts a fresh 3-node cluster (fsync on, metrics ports on) in a temporary folder for each
``batch_linger_secs`` of ``--linger`` (in turn, ``--rounds`` times: this machine's figures
drift, so the settings are compared run against neighbouring run), runs
`parakoon bench --phases set` once per client count, and reads every node's
``parakoon_write_stage_seconds`` (runtime/stages.py) before and after each run: the difference
gives the mean time per write of each stage on the master, and the mean persist stages on the
followers. It also measures this machine's fdatasync of a 128-byte append and a loopback
round trip, the floor any write stands on. Results go to docs/performance.md (section
``write-path``) with the machine, date and command.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1] / "testing"))
from _report import markdown_table, write_section
from cluster_bench import bench_command, cluster_config, show_logs, start_nodes, stop_nodes

from parakoon_node.runtime.stages import STAGES

MASTER_PATH = ("batching", "slot_wait", "commit", "apply", "respond")


def write_config(base: Path, linger: float) -> tuple[Path, list[int]]:
    config, ports = cluster_config(base, node_ports=["metrics_port"], linger=linger)
    return config, ports["metrics_port"]


Scrape = tuple[dict[str, tuple[float, float]], bool]


def scrape(port: int) -> Scrape:
    """Stage -> (sum seconds, count), and whether the node is master."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    stages: dict[str, list[float]] = {s: [0.0, 0.0] for s in STAGES}
    master = False
    for line in text.splitlines():
        if line.startswith("parakoon_is_master "):
            master = float(line.split()[1]) == 1.0
        if not line.startswith("parakoon_write_stage_seconds_"):
            continue
        name, value = line.rsplit(" ", 1)
        stage = name.split('stage="', 1)[1].split('"', 1)[0]
        if name.startswith("parakoon_write_stage_seconds_sum"):
            stages[stage][0] = float(value)
        elif name.startswith("parakoon_write_stage_seconds_count"):
            stages[stage][1] = float(value)
    return {s: (v[0], v[1]) for s, v in stages.items()}, master


def mean_ms(before: tuple[float, float], after: tuple[float, float]) -> float:
    """Mean milliseconds per event between two (sum seconds, count) readings."""
    (s0, c0), (s1, c1) = before, after
    return 1000 * (s1 - s0) / (c1 - c0) if c1 > c0 else 0.0


def wait_for_master(ports: list[int], timeout: float = 60.0) -> None:
    """Until every node serves its metrics and one of them is master."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if sum(scrape(port)[1] for port in ports) == 1:
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"no master within {timeout:g} s")
        time.sleep(0.2)


def _fsync_times(path: Path, rounds: int) -> list[float]:
    """Seconds of each of ``rounds`` 128-byte appends + fdatasync to ``path`` (removed after)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    times = []
    try:
        for _ in range(rounds):
            start = time.perf_counter()
            os.write(fd, b"x" * 128)
            os.fdatasync(fd)
            times.append(time.perf_counter() - start)
    finally:
        os.close(fd)
        path.unlink()
    return times


def fsync_floor(folder: Path, rounds: int = 500) -> float:
    """Median seconds of a 128-byte append + fdatasync on this filesystem."""
    return statistics.median(_fsync_times(folder / "fsync-probe", rounds))


def concurrent_fsync_floor(folder: Path, writers: int = 3, rounds: int = 300) -> float:
    """Median seconds of a 128-byte append + fdatasync while ``writers`` threads do the same
    at once, each to its own file in ``folder``: three nodes sharing one disk, as here."""
    times: list[float] = []
    lock = threading.Lock()

    def write(k: int) -> None:
        mine = _fsync_times(folder / f"fsync-probe-{k}", rounds)
        with lock:
            times.extend(mine)

    threads = [threading.Thread(target=write, args=(k,)) for k in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return statistics.median(times)


def loopback_floor(rounds: int = 2000) -> float:
    """Median seconds of a 64-byte TCP ping-pong on 127.0.0.1 between two threads."""
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]

    def echo() -> None:
        conn, _ = server.accept()
        with conn:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            while data := conn.recv(64):
                conn.sendall(data)

    thread = threading.Thread(target=echo, daemon=True)
    thread.start()
    times = []
    with socket.create_connection(("127.0.0.1", port)) as client:
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for _ in range(rounds):
            start = time.perf_counter()
            client.sendall(b"x" * 64)
            got = 0
            while got < 64:
                got += len(client.recv(64))
            times.append(time.perf_counter() - start)
    server.close()
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", default="1,16,128")
    parser.add_argument("--ops", type=int, default=20_000, help="sets per run (1 client: 1/4)")
    parser.add_argument("--value-size", type=int, default=256)
    parser.add_argument(
        "--linger",
        default="0,0.01",
        help="batch_linger_secs values; a fresh cluster for each, in turn, --rounds times",
    )
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--no-write", action="store_true", help="do not touch docs/")
    args = parser.parse_args()
    rows: list[list[str]] = []
    client_rows: list[tuple[object, ...]] = []
    lingers = [float(v) for v in args.linger.split(",")]
    with tempfile.TemporaryDirectory(prefix="parakoon-write-path-", dir=os.getcwd()) as tmp:
        base = Path(tmp)
        fsync_s = fsync_floor(base)
        fsync3_s = concurrent_fsync_floor(base)
        loop_s = loopback_floor()
        for _round in range(args.rounds):
            for linger in lingers:
                run_cluster(base / f"run-{_round}-{linger}", linger, args, rows, client_rows)
    stage_table = markdown_table(("linger ms", "clients", *STAGES, "master path"), rows)
    client_table = markdown_table(
        ("linger ms", "clients", "ok", "sets/s", "p50 ms", "p99 ms"), client_rows
    )
    floors = (
        f"Floors on this machine, same run: a 128-byte append + fdatasync takes "
        f"{fsync_s * 1000:.3f} ms (median of 500, in the benchmark's folder), "
        f"{fsync3_s * 1000:.3f} ms while three writers do the same at once (median of 900: the "
        f"three nodes share this disk), a 64-byte loopback TCP round trip {loop_s * 1000:.3f} "
        "ms (median of 2,000)."
    )
    print(client_table)
    print(stage_table)
    print(floors)
    if not args.no_write:
        load = os.getloadavg()[0]
        body = (
            f"3 nodes on 127.0.0.1, fsync on, lease 2 s, 16-byte keys, {args.value_size}-byte "
            f"values, `parakoon bench --phases set` on the same {os.cpu_count()}-core machine "
            f"(1-minute load average {load:.1f} after the run); a fresh cluster for each "
            "`batch_linger_secs` (`linger ms`), in turn. Mean milliseconds per write "
            "in each stage of `parakoon_write_stage_seconds` (the stages are described in "
            "`packages/node/src/parakoon_node/runtime/stages.py`); `master path` is "
            "batching + slot_wait + commit + apply + respond, the master's share of one "
            "write's latency. The followers' rows are their own persist of the same slots: "
            "one of them is usually the one the quorum waited for (`replicate`).\n\n"
            f"{client_table}\n\n{stage_table}\n\n{floors}\n"
        )
        write_section("write-path", "Where a write's time goes (per-stage breakdown)", body)
    return 0


def run_cluster(
    base: Path,
    linger: float,
    args: argparse.Namespace,
    rows: list[list[str]],
    client_rows: list[tuple[object, ...]],
) -> None:
    """One fresh cluster with ``batch_linger_secs = linger``: a run per client count."""
    base.mkdir()
    label = f"{linger * 1000:g}"
    config, metrics = write_config(base, linger)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        procs = start_nodes(config, base)
        wait_for_master(metrics)
        for clients in [int(c) for c in args.clients.split(",")]:
            ops = args.ops if clients > 1 else max(2_000, args.ops // 4)
            before = [scrape(port) for port in metrics]
            out = base / f"bench-{clients}.json"
            cmd = bench_command(config, clients, ops, "set", "--json", str(out))
            cmd += ["--value-size", str(args.value_size)]
            print("+", " ".join(cmd[2:]), flush=True)
            if subprocess.run(cmd, check=False).returncode != 0:
                raise SystemExit(f"parakoon bench failed with {clients} clients")
            after = [scrape(port) for port in metrics]
            result = json.loads(out.read_text())["results"][0]
            master = [k for k, (_, is_master) in enumerate(after) if is_master]
            if len(master) != 1 or not before[master[0]][1]:
                # The figures would mix two masters' stages.
                print(f"the master changed during the run; skipping {clients}", flush=True)
                continue
            m = master[0]
            followers = [k for k in range(3) if k != m]

            def mean(
                k: int, stage: str, before: list[Scrape] = before, after: list[Scrape] = after
            ) -> float:
                return mean_ms(before[k][0][stage], after[k][0][stage])

            master_sum = sum(mean(m, s) for s in MASTER_PATH)
            rows.append(
                [label, f"{clients}: node_{m} (master)"]
                + [f"{mean(m, s):.3f}" for s in STAGES]
                + [f"{master_sum:.3f}"]
            )
            for k in followers:
                own = {"persist_queue", "fsync", "persist_return"}
                rows.append(
                    [label, f"{clients}: node_{k}"]
                    + [f"{mean(k, s):.3f}" if s in own else "" for s in STAGES]
                    + [""]
                )
            client_rows.append(
                (
                    label,
                    clients,
                    result["ok"],
                    f"{result['ops_per_sec']:.0f}",
                    f"{result['p50_ms']:.2f}",
                    f"{result['p99_ms']:.2f}",
                )
            )
    except BaseException:
        show_logs(base)
        raise
    finally:
        stop_nodes(procs)


if __name__ == "__main__":
    raise SystemExit(main())
