"""Acknowledged writes over slow links: a one-way delay on every link between the nodes.

Usage (root, with nftables)::

    uv run --all-packages python benchmarks/slow_link_bench.py [--delay-ms 0,50] [--clients 1,64]

Why not ``tc netem``: the kernels this project is measured on are built without ``sch_netem``
("Specified qdisc kind is unknown"), so the delay is added in user space instead. Every
connection one node opens to another node's messaging port is redirected by an nftables
``dnat`` rule (locally generated traffic, ``output`` hook) to a small proxy, which connects on
to the real port and holds every chunk of data ``--delay-ms`` before passing it on, in each
direction. The proxy's own connections carry a socket mark the rule skips, so they reach the
node. Client traffic (the client ports) is not delayed: the clients sit next to the master, as
in a cluster spread over sites whose clients talk to the nearest node. The rule lives in a
table of its own, removed when the run ends.

With one slot in flight, a write needs the master's proposal to reach a follower and its
acknowledgement to come back: at least two one-way delays per slot, whatever the number of
clients. So the throughput at 50 ms is about (requests per slot) / 100 ms; the rows with 0 ms
delay show the same path with the proxy and no delay. Each delay runs once per
``batch_linger_secs`` of ``--linger`` (a fresh cluster each), and the table shows the
closed-loop bound: no design can give a closed-loop client more than one write per round trip
between nodes. Results go to docs/performance.md
(section ``slow-link``) with the machine, date and command.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1] / "testing"))
from _report import markdown_table, write_section
from cluster_bench import bench_command, cluster_config, show_logs, start_nodes, stop_nodes
from parakoon_testing import free_ports

#: The mark the proxy puts on its own connections; the redirect rule lets them through.
PROXY_MARK = 0x5A1
TABLE = f"parakoon_slowlink_{os.getpid()}"
CHUNK = 1 << 16


def write_config(base: Path, lease: float, linger: float) -> tuple[Path, list[int], list[int]]:
    """The cluster, its messaging ports, and a free port for each node's proxy."""
    config, ports = cluster_config(base, lease=lease, linger=linger)
    return config, ports["messaging"], free_ports(3)


class DelayProxy:
    """Listens on ``proxy_port`` and forwards to ``target_port``, each chunk ``delay`` late.

    Runs on its own asyncio loop in a thread. Order is kept: chunks go out in arrival order,
    each at its arrival time plus the delay (``call_at`` with a monotonic deadline)."""

    def __init__(self, pairs: list[tuple[int, int]], delay: float) -> None:
        self._pairs = pairs
        self.delay = delay
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._servers: list[asyncio.Server] = []

    def start(self) -> None:
        self._thread.start()
        if not self._ready.wait(10):
            raise SystemExit("the delay proxy did not start within 10 s")

    def stop(self) -> None:
        for server in self._servers:
            self._loop.call_soon_threadsafe(server.close)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        for proxy_port, target_port in self._pairs:
            serve = functools.partial(self._serve, target_port=target_port)
            self._servers.append(
                self._loop.run_until_complete(asyncio.start_server(serve, "127.0.0.1", proxy_port))
            )
        self._ready.set()
        self._loop.run_forever()

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, target_port: int
    ) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, PROXY_MARK)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setblocking(False)
        try:
            await self._loop.sock_connect(sock, ("127.0.0.1", target_port))
            up_reader, up_writer = await asyncio.open_connection(sock=sock)
        except OSError:
            sock.close()
            writer.close()
            return
        await asyncio.gather(
            self._pump(reader, up_writer), self._pump(up_reader, writer), return_exceptions=True
        )

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Read as it comes; a second task writes each chunk once its time is due, in order
        (a FIFO, not one timer per chunk: timers due at the same instant may run reordered)."""
        loop = self._loop
        due: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue()

        async def deliver() -> None:
            while (item := await due.get()) is not None:
                when, data = item
                await asyncio.sleep(max(0.0, when - loop.time()))
                if writer.is_closing():
                    return
                writer.write(data)
            writer.close()

        sender = loop.create_task(deliver())
        try:
            while data := await reader.read(CHUNK):
                due.put_nowait((loop.time() + self.delay, data))
        except OSError:
            pass
        due.put_nowait(None)  # what is in flight still arrives, then the close
        await sender


def nft(script: str) -> None:
    subprocess.run(["nft", "-f", "-"], input=script.encode(), check=True)


def redirect(messaging: list[int], proxy: list[int]) -> None:
    """Send every connection to a node's messaging port through its proxy (not the proxy's)."""
    rules = "\n".join(
        f"    meta mark != {PROXY_MARK:#x} ip daddr 127.0.0.1 tcp dport {m} "
        f"dnat ip to 127.0.0.1:{p}"
        for m, p in zip(messaging, proxy, strict=True)
    )
    nft(
        f"table ip {TABLE} {{\n  chain out {{\n"
        f"    type nat hook output priority -100; policy accept;\n{rules}\n  }}\n}}\n"
    )


def unredirect() -> None:
    done = subprocess.run(
        ["nft", "delete", "table", "ip", TABLE], check=False, capture_output=True, text=True
    )
    if done.returncode != 0 and "No such file" not in done.stderr:
        print(f"could not delete nftables table {TABLE}: {done.stderr.strip()}", file=sys.stderr)


def remove_stale_tables() -> None:
    """Tables left by an earlier run that was killed (SIGKILL skips every cleanup)."""
    listed = subprocess.run(["nft", "list", "tables"], check=True, capture_output=True, text=True)
    for line in listed.stdout.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[2].startswith("parakoon_slowlink_"):
            subprocess.run(["nft", "delete", "table", *parts[1:]], check=False)
            print(f"removed a stale nftables table: {parts[2]}", flush=True)


def wait_for_master(config: Path, timeout: float = 60.0) -> str:
    deadline = time.monotonic() + timeout
    command = [sys.executable, "-m", "parakoon_node", "client", "--config", str(config)]
    while time.monotonic() < deadline:
        done = subprocess.run([*command, "who-master"], check=False, capture_output=True, text=True)
        if done.returncode == 0 and done.stdout.strip().startswith("node_"):
            return done.stdout.strip()
        time.sleep(0.5)
    show_logs(config.parent)
    raise SystemExit(f"no master within {timeout:g} s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--delay-ms", default="0,50", help="one-way delays to run, in ms")
    parser.add_argument("--clients", default="1,64")
    parser.add_argument("--seconds", type=float, default=10.0, help="about this long per run")
    parser.add_argument("--value-size", type=int, default=256)
    parser.add_argument(
        "--linger", default="0,0.01", help="batch_linger_secs values, a fresh cluster for each"
    )
    parser.add_argument("--no-write", action="store_true", help="do not touch docs/")
    args = parser.parse_args()
    if os.geteuid() != 0 or shutil.which("nft") is None:
        raise SystemExit("needs root and nftables (apt-get install nftables) for the redirect")
    # SIGTERM and SIGHUP unwind like Ctrl-C, through the finally that removes the redirect.
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, lambda number, _frame: sys.exit(128 + number))
    remove_stale_tables()
    rows = []
    runs = [(float(d), float(g)) for d in args.delay_ms.split(",") for g in args.linger.split(",")]
    for delay_ms, linger in runs:
        with tempfile.TemporaryDirectory(prefix="parakoon-slowlink-") as tmp:
            base = Path(tmp)
            # A lease comfortably above the round trip: renewals take two one-way delays.
            lease = max(2.0, 40 * delay_ms / 1000)
            config, messaging, proxy_ports = write_config(base, lease, linger)
            proxy = DelayProxy(list(zip(proxy_ports, messaging, strict=True)), delay_ms / 1000)
            proxy.start()
            procs: list[subprocess.Popen[bytes]] = []
            try:
                redirect(messaging, proxy_ports)
                procs = start_nodes(config, base)
                master = wait_for_master(config)
                for clients in [int(c) for c in args.clients.split(",")]:
                    # Enough operations for about --seconds at the rate one slot in flight
                    # allows (a guess from the delay; the bench stops when they are done).
                    slot_secs = max(0.002, 2 * delay_ms / 1000)
                    per_slot = max(1, clients // 2)
                    ops = int(max(200, min(20_000, args.seconds * per_slot / slot_secs)))
                    out = base / f"bench-{clients}.json"
                    cmd = bench_command(config, clients, ops, "set", "--json", str(out))
                    cmd += ["--value-size", str(args.value_size)]
                    print(f"+ delay {delay_ms:g} ms, master {master}:", *cmd[2:], flush=True)
                    if subprocess.run(cmd, check=False).returncode != 0:
                        show_logs(base)
                        raise SystemExit(f"parakoon bench failed at delay {delay_ms:g} ms")
                    r = json.loads(out.read_text())["results"][0]
                    # A closed-loop client waits at least one round trip between nodes per
                    # write, however many slots fly at once: the most any design could give.
                    bound = f"{clients * 1000 / (2 * delay_ms):.0f}" if delay_ms else ""
                    rows.append(
                        (
                            f"{delay_ms:g}",
                            f"{linger * 1000:g}",
                            clients,
                            bound,
                            r["ok"],
                            r["failed"],
                            f"{r['ops_per_sec']:.1f}",
                            f"{r['p50_ms']:.1f}",
                            f"{r['p99_ms']:.1f}",
                        )
                    )
            finally:
                stop_nodes(procs)
                unredirect()
                proxy.stop()
    table = markdown_table(
        (
            "one-way delay ms",
            "linger ms",
            "clients",
            "closed-loop bound sets/s",
            "ok",
            "failed",
            "sets/s",
            "p50 ms",
            "p99 ms",
        ),
        rows,
    )
    print(table)
    if not args.no_write:
        body = (
            "3 nodes on 127.0.0.1, fsync on; every link between nodes delayed in user space by "
            "an nftables redirect through a delaying proxy (this kernel has no `sch_netem`), "
            "client links not delayed; lease 2 s, or 40 one-way delays when longer; "
            f"16-byte keys, {args.value_size}-byte values, `parakoon bench --phases set`, "
            f"{os.cpu_count()} cores; a fresh cluster for each `batch_linger_secs` (`linger "
            "ms`). One slot in flight: each slot waits a round trip between nodes, so sets/s "
            "is about the requests per slot over two delays. Without a linger, closed-loop "
            "clients settle into two groups that take turns (each write waits two slots); the "
            "linger lets one slot carry them all. `closed-loop bound`: clients / (2 x delay), "
            "since each client's write needs at least one round trip between nodes, however "
            "many slots are in flight.\n\n"
            f"{table}\n"
        )
        write_section("slow-link", "Slow links between nodes", body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
