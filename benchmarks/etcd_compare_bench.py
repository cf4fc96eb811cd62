"""Side by side: parakoon and a 3-member etcd 3.4 cluster on this machine, same load, alternating.

Usage (grpcio is not a project dependency, hence ``--with grpcio``)::

    uv run --all-packages --with grpcio python benchmarks/etcd_compare_bench.py \
        [--clients 1,16,128] [--ops 10000] [--rounds 3] [--no-write]

Needs the ``etcd`` binary on PATH (Debian: ``apt-get install etcd-server``, etcd 3.4).

Both clusters run at once in a temporary folder on 127.0.0.1 (free ports), 3 members each, fsync
on for both (parakoon ``fsync = true``; etcd's default, which fsyncs its WAL). For each client
count and each operation (put, then get), the runs alternate: parakoon, etcd, parakoon, etcd ...
``--rounds`` times each, so a slow spell of the machine hits both systems alike; the table gives
each system's median over the rounds and the throughput ratio.

Load shape, the same for both: a closed loop of N clients, one connection each, spread over
worker processes (one per core, up to 4, asyncio inside each), 16-byte keys after a short
per-run prefix, 256-byte values. ``put`` writes fresh keys 0 .. ops-1; ``get`` does linearizable
reads of keys drawn at random from the last put run's keys. parakoon is driven by its own load
generator (``parakoon bench --phases set|get``: SET and consistent GET, on the master); etcd by
the one in this file, written in the same shape: Python, grpcio's asyncio API, one gRPC channel
per client, hand-encoded protobuf (``KV/Put``; ``KV/Range`` with the default
``serializable=false``, i.e. linearizable), sent to the leader as parakoon's are sent to the
master. The two generators are different programs, so their cost per operation differs; that is
stated next to the figures. Results go to docs/performance.md (section ``etcd``) with the
machine, date and command, unless ``--no-write``.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import multiprocessing as mp
import os
import random
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from array import array
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1] / "testing"))
from _report import markdown_table, write_section
from cluster_bench import bench_command, start_nodes, stop_nodes, write_config
from parakoon_testing import free_ports

from parakoon_node.commands.bench import NoCluster, find_master, make_key, percentile
from parakoon_node.runtime.config import load_config

KEY_SIZE = 16
VALUE_SIZE = 256
OPS = ("put", "get")
# parakoon bench's phase names for our two operations.
PARAKOON_PHASE = {"put": "set", "get": "get"}
RPC_TIMEOUT_SECS = 10.0
RUN_TIMEOUT_SECS = 600.0


class BenchError(Exception):
    """A cluster or a run could not be set up; the message says what and where."""


# --- protobuf, by hand ---------------------------------------------------------------------------
# Four messages are all we need, and hand-encoding them keeps protobuf and etcd's generated
# stubs out of the picture (and out of the generator's per-request cost).


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        low = n & 0x7F
        n >>= 7
        if n:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def _bytes_field(number: int, data: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(data)) + data


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data):
            raise ValueError("protobuf: truncated varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def _fields(data: bytes) -> dict[int, int | bytes]:
    """A message's top-level fields (the last of each number); fixed-width fields skipped."""
    out: dict[int, int | bytes] = {}
    pos = 0
    while pos < len(data):
        tag, pos = _read_varint(data, pos)
        number, wire = tag >> 3, tag & 7
        if wire == 0:
            out[number], pos = _read_varint(data, pos)
        elif wire == 2:
            size, pos = _read_varint(data, pos)
            out[number] = data[pos : pos + size]
            pos += size
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        else:
            raise ValueError(f"protobuf: wire type {wire} not supported")
    return out


def put_request(key: bytes, value: bytes) -> bytes:
    """etcdserverpb.PutRequest{key = 1, value = 2}."""
    return _bytes_field(1, key) + _bytes_field(2, value)


def range_request(key: bytes) -> bytes:
    """etcdserverpb.RangeRequest{key = 1}: one key, serializable = false (linearizable)."""
    return _bytes_field(1, key)


def range_found(response: bytes) -> bool:
    """Whether a RangeResponse carries a key-value (field 2, ``kvs``).

    Only as much is decoded as that takes: the header (field 1) comes first and is skipped.
    """
    pos = 0
    if response[:1] == b"\x0a":
        size, pos = _read_varint(response, 1)
        pos += size
    return response[pos : pos + 1] == b"\x12"


def _grpc() -> Any:
    """grpcio's module (untyped, and not a project dependency: imported by name)."""
    return importlib.import_module("grpc")


def _grpc_aio() -> Any:
    return importlib.import_module("grpc.aio")


# --- one run's figures ---------------------------------------------------------------------------


@dataclass(slots=True)
class RunResult:
    ok: int = 0
    failed: int = 0
    seconds: float = 0.0
    ops_per_sec: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    errors: dict[str, int] = field(default_factory=dict)


def _summarise(workers: list[dict[str, Any]]) -> RunResult:
    """Workers' raw results -> one run's figures, computed as parakoon bench computes its own."""
    result = RunResult()
    latencies: list[float] = []
    for r in workers:
        result.ok += r["ok"]
        result.failed += r["failed"]
        arr = array("d")
        arr.frombytes(r["latencies"])
        latencies.extend(arr)
        for k, v in r["errors"].items():
            result.errors[k] = result.errors.get(k, 0) + v
    starts = [r["started"] for r in workers if "started" in r]
    ends = [r["ended"] for r in workers if "ended" in r]
    # From the first worker's start to the last one's end, as parakoon bench divides.
    result.seconds = max(ends) - min(starts) if starts and ends else 0.0
    result.ops_per_sec = result.ok / result.seconds if result.seconds > 0 else 0.0
    latencies.sort()
    result.p50_ms = percentile(latencies, 0.50) * 1000
    result.p99_ms = percentile(latencies, 0.99) * 1000
    return result


# --- etcd: the cluster ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EtcdCluster:
    procs: list[subprocess.Popen[bytes]]
    endpoints: list[str]  # "127.0.0.1:port" of each member's client URL
    logs: list[Path]


def etcd_version(binary: str) -> str:
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, check=False)
    for line in out.stdout.splitlines():
        if line.startswith("etcd Version:"):
            return line.split(":", 1)[1].strip()
    raise BenchError(f"`{binary} --version` printed no 'etcd Version:' line: {out.stdout!r}")


def start_etcd(binary: str, base: Path) -> EtcdCluster:
    ports = free_ports(6)
    peers = [f"http://127.0.0.1:{ports[3 + k]}" for k in range(3)]
    initial = ",".join(f"m{k}={peers[k]}" for k in range(3))
    # etcd also reads ETCD_* variables; one left in the environment would change the setup.
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETCD_")}
    procs: list[subprocess.Popen[bytes]] = []
    logs: list[Path] = []
    for k in range(3):
        client = f"http://127.0.0.1:{ports[k]}"
        command = [
            binary,
            "--name",
            f"m{k}",
            "--data-dir",
            str(base / f"etcd-m{k}"),
            "--listen-client-urls",
            client,
            "--advertise-client-urls",
            client,
            "--listen-peer-urls",
            peers[k],
            "--initial-advertise-peer-urls",
            peers[k],
            "--initial-cluster",
            initial,
            "--initial-cluster-token",
            "etcd-compare-bench",
            "--initial-cluster-state",
            "new",
            "--logger",
            "zap",
            "--log-outputs",
            "stderr",
            "--log-level",
            "warn",
        ]
        log_path = base / f"etcd-m{k}.log"
        with open(log_path, "wb") as log:  # the child keeps its own copy of the descriptor
            procs.append(subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log, env=env))
        logs.append(log_path)
    return EtcdCluster(procs, [f"127.0.0.1:{p}" for p in ports[:3]], logs)


def _log_tails(paths: list[Path], lines: int = 5) -> str:
    parts = []
    for path in paths:
        try:
            tail = path.read_text(errors="replace").splitlines()[-lines:]
        except OSError as exc:
            tail = [f"(unreadable: {exc})"]
        parts.append(f"--- {path.name}:\n" + "\n".join(tail))
    return "\n".join(parts)


def etcd_leader(cluster: EtcdCluster, timeout_secs: float = 30.0) -> str:
    """The leader's endpoint, once every member names the same one and it serves a
    linearizable read (which needs a leader and a quorum)."""
    grpc = _grpc()
    deadline = time.monotonic() + timeout_secs
    last_error = "no answer yet"
    while time.monotonic() < deadline:
        for k, proc in enumerate(cluster.procs):
            if proc.poll() is not None:
                raise BenchError(
                    f"etcd member m{k} exited with code {proc.returncode}:\n"
                    + _log_tails(cluster.logs)
                )
        try:
            leaders: set[int] = set()
            by_id: dict[int, str] = {}
            for endpoint in cluster.endpoints:
                with grpc.insecure_channel(endpoint) as channel:
                    status = channel.unary_unary("/etcdserverpb.Maintenance/Status")
                    # StatusResponse: header = 1 (ResponseHeader: member_id = 2), leader = 4.
                    fields = _fields(status(b"", timeout=2.0))
                    header = fields.get(1, b"")
                    member = _fields(header).get(2, 0) if isinstance(header, bytes) else 0
                    leader = fields.get(4, 0)
                    if isinstance(member, int) and isinstance(leader, int):
                        by_id[member] = endpoint
                        leaders.add(leader)
            if len(leaders) == 1 and (leader_id := leaders.pop()) in by_id:
                endpoint = by_id[leader_id]
                with grpc.insecure_channel(endpoint) as channel:
                    channel.unary_unary("/etcdserverpb.KV/Range")(
                        range_request(b"etcd-bench-probe"), timeout=2.0
                    )
                return endpoint
            last_error = f"members name leaders {sorted(leaders)}, members are {sorted(by_id)}"
        except grpc.RpcError as exc:
            last_error = f"{exc.code().name}: {exc.details()}"
        time.sleep(0.2)
    raise BenchError(
        f"etcd cluster at {', '.join(cluster.endpoints)} had no leader serving linearizable "
        f"reads within {timeout_secs:g} s (last: {last_error}):\n" + _log_tails(cluster.logs)
    )


# --- etcd: the load generator --------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class EtcdJob:
    op: str  # "put" or "get"
    target: str  # host:port of the leader
    connections: int
    ops: int
    key_space: int
    prefix: bytes
    worker: int
    workers: int
    seed: int


async def _etcd_worker_main(job: EtcdJob, barrier: Any) -> dict[str, Any]:
    aio = _grpc_aio()
    rng = random.Random(job.seed)
    value = bytes(rng.getrandbits(8) for _ in range(VALUE_SIZE))
    gets: list[bytes] = []
    if job.op == "get":
        gets = [range_request(make_key(k, KEY_SIZE, job.prefix)) for k in range(job.key_space)]
    latencies = array("d")
    errors: dict[str, int] = {}
    counts = {"ok": 0, "failed": 0}
    next_op = [0]

    def fail(name: str) -> None:
        errors[name] = errors.get(name, 0) + 1
        counts["failed"] += 1

    def take() -> int | None:
        if next_op[0] >= job.ops:
            return None
        k = next_op[0]
        next_op[0] += 1
        # Worker w of W writes keys w, w + W, ...: together keys 0 .. ops - 1, as parakoon bench.
        return k * job.workers + job.worker

    # grpc shares one TCP connection between channels to the same address (a process-wide
    # subchannel pool); a local pool per channel gives each client its own connection, as
    # each parakoon bench client has its own socket.
    options = [("grpc.use_local_subchannel_pool", 1)]
    channels = [aio.insecure_channel(job.target, options=options) for _ in range(job.connections)]
    try:
        # Connect (HTTP/2 handshake) before the clock starts: parakoon bench's first request
        # waits for no handshake either.
        await asyncio.gather(
            *(asyncio.wait_for(ch.channel_ready(), RPC_TIMEOUT_SECS) for ch in channels)
        )
        # Importing grpc and connecting take longer than parakoon bench's start-up; the barrier
        # keeps that difference from spreading the workers' start times (and the span).
        await asyncio.to_thread(barrier.wait, 60.0)

        async def client(index: int) -> None:
            channel = channels[index]
            # No serializers: requests are bytes already, responses stay bytes.
            put = channel.unary_unary("/etcdserverpb.KV/Put")
            get = channel.unary_unary("/etcdserverpb.KV/Range")
            crng = random.Random(job.seed * 1000 + index)
            while (n := take()) is not None:
                started = time.perf_counter()
                try:
                    if job.op == "put":
                        await put(
                            put_request(make_key(n, KEY_SIZE, job.prefix), value),
                            timeout=RPC_TIMEOUT_SECS,
                        )
                    else:
                        answer = await get(
                            gets[crng.randrange(job.key_space)], timeout=RPC_TIMEOUT_SECS
                        )
                        if not range_found(answer):
                            fail("key not found")
                            continue
                except aio.AioRpcError as exc:
                    fail(exc.code().name)
                    continue
                latencies.append(time.perf_counter() - started)
                counts["ok"] += 1

        started = time.monotonic()
        await asyncio.gather(*(client(i) for i in range(job.connections)))
        ended = time.monotonic()
    finally:
        await asyncio.gather(*(ch.close() for ch in channels), return_exceptions=True)
    return {
        "ok": counts["ok"],
        "failed": counts["failed"],
        "started": started,
        "ended": ended,
        "latencies": latencies.tobytes(),
        "errors": errors,
    }


def _etcd_worker_entry(job: EtcdJob, barrier: Any, out: Any) -> None:
    # The default event loop, not uvloop: grpc.aio supports only asyncio's own loop.
    try:
        result = asyncio.run(_etcd_worker_main(job, barrier))
    except BaseException as exc:  # noqa: BLE001 (reported to the parent, which counts it)
        barrier.abort()  # the others would otherwise wait for this worker until the timeout
        result = {
            "ok": 0,
            "failed": 1,
            "latencies": b"",
            "errors": {f"worker {job.worker}: {type(exc).__name__}: {exc}": 1},
        }
    out.send(result)
    out.close()


def run_etcd(target: str, op: str, clients: int, ops: int, prefix: bytes, seed: int) -> RunResult:
    # The same number of worker processes as parakoon bench's default: min(4, CPUs, clients).
    procs = max(1, min(4, os.cpu_count() or 2, clients))
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(procs)
    workers = []
    for w in range(procs):
        job = EtcdJob(
            op=op,
            target=target,
            connections=clients // procs + (1 if w < clients % procs else 0),
            ops=ops // procs + (1 if w < ops % procs else 0),
            key_space=ops,
            prefix=prefix,
            worker=w,
            workers=procs,
            seed=seed * 100 + w,
        )
        parent, child = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=_etcd_worker_entry, args=(job, barrier, child), daemon=True)
        proc.start()
        child.close()
        workers.append((proc, parent))
    results: list[dict[str, Any]] = []
    deadline = time.monotonic() + RUN_TIMEOUT_SECS
    for proc, pipe in workers:
        if pipe.poll(max(0.0, deadline - time.monotonic())):
            try:
                results.append(pipe.recv())
            except EOFError:  # died before it could send anything
                results.append({"ok": 0, "failed": 1, "latencies": b"", "errors": {"died": 1}})
        else:
            proc.kill()
            results.append({"ok": 0, "failed": 1, "latencies": b"", "errors": {"timeout": 1}})
        proc.join(timeout=5)
    return _summarise(results)


# --- parakoon ------------------------------------------------------------------------------------


def run_parakoon(
    config: Path, base: Path, op: str, clients: int, ops: int, prefix: str
) -> RunResult:
    out = base / "parakoon-run.json"
    out.unlink(missing_ok=True)
    command = bench_command(
        config,
        clients,
        ops,
        PARAKOON_PHASE[op],
        "--value-size",
        str(VALUE_SIZE),
        "--key-size",
        str(KEY_SIZE),
        "--prefix",
        prefix,
        # The get runs read what the last put run wrote (and a temporary cluster needs no tidying).
        "--no-cleanup",
        "--json",
        str(out),
    )
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=RUN_TIMEOUT_SECS, check=False
        )
    except subprocess.TimeoutExpired:
        return RunResult(failed=1, errors={f"timeout after {RUN_TIMEOUT_SECS:g} s": 1})
    if not out.exists():
        raise BenchError(
            f"parakoon bench (exit {done.returncode}) wrote no {out}: {done.stderr.strip()[-800:]}"
        )
    phase = json.loads(out.read_text())["results"][0]
    return RunResult(
        ok=phase["ok"],
        failed=phase["failed"],
        seconds=phase["seconds"],
        ops_per_sec=phase["ops_per_sec"],
        p50_ms=phase["p50_ms"],
        p99_ms=phase["p99_ms"],
        errors=dict(phase["errors"]),
    )


# --- the comparison ------------------------------------------------------------------------------


def wait_parakoon(
    config: Path, nodes: list[subprocess.Popen[bytes]], timeout_secs: float = 60.0
) -> str:
    """The master, once it serves consistent reads (parakoon bench's own test of that).

    find_master gives up at once while no node answers, which is the case until the nodes
    have opened their ports, so that answer is retried here until ``timeout_secs``.
    """
    cluster = load_config(config)
    deadline = time.monotonic() + timeout_secs
    while True:
        for k, proc in enumerate(nodes):
            if proc.poll() is not None:
                raise BenchError(
                    f"parakoon node_{k} exited with code {proc.returncode} "
                    f"(log: {config.parent / f'node_{k}.log'}):\n"
                    + _log_tails([config.parent / f"node_{k}.log"])
                )
        try:
            return find_master(cluster, timeout_secs=max(1.0, deadline - time.monotonic()))
        except NoCluster as exc:
            if time.monotonic() >= deadline:
                raise BenchError(f"parakoon cluster ({config}): {exc}") from exc
        time.sleep(0.2)


Runs = dict[tuple[int, str, str], list[RunResult]]  # (clients, op, system) -> one per round


def run_prefix(n: int) -> str:
    """Run ``n``'s key prefix; both systems use this one form, so their keys are as long."""
    return f"r{n:04d}/"


def compare(args: argparse.Namespace, binary: str, base: Path) -> Runs:
    runs: Runs = {}
    config = write_config(base, fsync=True)
    procs = start_nodes(config, base)
    try:
        etcd = start_etcd(binary, base)
        procs += etcd.procs
        wait_parakoon(config, procs[:3])
        etcd_leader(etcd)
        seed = 1
        for clients in args.clients:
            ops = args.ops if clients > 1 else max(2_000, args.ops // 5)
            # The get runs read the keys of the last put run of the same system.
            written = {"parakoon": "", "etcd": ""}
            for op in OPS:
                for rnd in range(args.rounds):
                    for system in ("parakoon", "etcd"):
                        seed += 1
                        if op == "put":
                            # Fresh keys each round; the same prefix length for both systems.
                            written[system] = run_prefix(seed)
                        prefix = written[system]
                        if system == "parakoon":
                            result = run_parakoon(config, base, op, clients, ops, prefix)
                        else:
                            # Looked up each run: a leader change would otherwise send every
                            # request through a follower.
                            target = etcd_leader(etcd)
                            result = run_etcd(target, op, clients, ops, prefix.encode(), seed)
                        runs.setdefault((clients, op, system), []).append(result)
                        errors = f" errors {result.errors}" if result.errors else ""
                        print(
                            f"{op:>3} clients={clients:<4} round {rnd + 1} {system:<8}: "
                            f"{result.ok} ok, {result.failed} failed, "
                            f"{result.ops_per_sec:8.0f} ops/s, p50 {result.p50_ms:.2f} ms, "
                            f"p99 {result.p99_ms:.2f} ms{errors}",
                            flush=True,
                        )
    finally:
        stop_nodes(procs)
    return runs


def tables(runs: Runs, clients_list: list[int]) -> tuple[str, str]:
    """The summary (medians over the rounds) and the per-round table."""
    summary = []
    detail = []
    for clients in clients_list:
        for op in OPS:
            p = runs[(clients, op, "parakoon")]
            e = runs[(clients, op, "etcd")]
            p_rate = statistics.median(r.ops_per_sec for r in p)
            e_rate = statistics.median(r.ops_per_sec for r in e)
            summary.append(
                (
                    op,
                    clients,
                    f"{p_rate:.0f}",
                    f"{e_rate:.0f}",
                    f"{p_rate / e_rate:.2f}" if e_rate > 0 else "n/a",
                    f"{statistics.median(r.p50_ms for r in p):.2f}",
                    f"{statistics.median(r.p50_ms for r in e):.2f}",
                    f"{statistics.median(r.p99_ms for r in p):.2f}",
                    f"{statistics.median(r.p99_ms for r in e):.2f}",
                    f"{sum(r.failed for r in p)} / {sum(r.failed for r in e)}",
                )
            )
            for system, rs in (("parakoon", p), ("etcd", e)):
                errors: dict[str, int] = {}
                for r in rs:
                    for k, v in r.errors.items():
                        errors[k] = errors.get(k, 0) + v
                detail.append(
                    (
                        op,
                        clients,
                        system,
                        ", ".join(f"{r.ops_per_sec:.0f}" for r in rs),
                        sum(r.ok for r in rs),
                        sum(r.failed for r in rs),
                        ", ".join(f"{k}: {v}" for k, v in errors.items()) or "-",
                    )
                )
    summary_table = markdown_table(
        (
            "op",
            "clients",
            "parakoon ops/s",
            "etcd ops/s",
            "parakoon/etcd",
            "parakoon p50 ms",
            "etcd p50 ms",
            "parakoon p99 ms",
            "etcd p99 ms",
            "failed (parakoon / etcd)",
        ),
        summary,
    )
    detail_table = markdown_table(
        ("op", "clients", "system", "ops/s per round", "ok", "failed", "errors"), detail
    )
    return summary_table, detail_table


def parse_clients(text: str) -> list[int]:
    try:
        values = [int(c) for c in text.split(",") if c.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--clients {text!r}: not a list of integers") from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"--clients {text!r}: give positive integers, e.g. 1,16")
    return values


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=parse_clients, default=[1, 16, 128])
    parser.add_argument(
        "--ops", type=int, default=10_000, help="operations per run (1 client: max(2000, ops/5))"
    )
    parser.add_argument("--rounds", type=int, default=3, help="runs per system and case")
    parser.add_argument("--no-write", action="store_true", help="do not touch docs/")
    args = parser.parse_args()
    if args.ops < 1 or args.rounds < 1:
        parser.error("--ops and --rounds must be at least 1")
    binary = shutil.which("etcd")
    if binary is None:
        print(
            "error: no `etcd` on PATH; install etcd 3.4 with `apt-get install etcd-server` "
            "(Debian), or put an etcd binary on PATH",
            file=sys.stderr,
        )
        return 2
    try:
        _grpc_aio()
    except ImportError as exc:
        print(
            f"error: cannot import grpc ({exc}); grpcio is not a project dependency, run this "
            "script with `uv run --all-packages --with grpcio python "
            "benchmarks/etcd_compare_bench.py`",
            file=sys.stderr,
        )
        return 2
    version = etcd_version(binary)
    load_before = os.getloadavg()[0]
    try:
        with tempfile.TemporaryDirectory(prefix="etcd-compare-") as tmp:
            runs = compare(args, binary, Path(tmp))
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    load_after = os.getloadavg()[0]
    summary, detail = tables(runs, args.clients)
    print(summary)
    print()
    print(detail)
    failed = sum(r.failed for rs in runs.values() for r in rs)
    if not args.no_write:
        body = (
            f"Two clusters of 3 members each, both running at once on 127.0.0.1 and sharing this "
            f"machine's {os.cpu_count()} cores with the load generators: parakoon (fsync on, "
            f"lease 2 s) and etcd {version} (`{binary}`, default settings: it fsyncs its WAL). "
            f"{KEY_SIZE}-byte keys after a {len(run_prefix(1))}-byte per-run prefix, "
            f"{VALUE_SIZE}-byte values. For "
            f"each client count and operation the runs alternate, parakoon then etcd, "
            f"{args.rounds} round(s) each; the figures are each system's median over the rounds, "
            f"`parakoon/etcd` the ratio of the median throughputs. `put` writes fresh keys "
            f"(parakoon SET, etcd Put); `get` reads keys written by the last put run "
            f"(parakoon consistent GET on the master, etcd linearizable Range on the leader). "
            f"Runs of {args.ops} operations ({max(2_000, args.ops // 5)} with 1 client); "
            f"closed loop, one connection per client. 1-minute load average {load_before:.1f} "
            f"before and {load_after:.1f} after the run.\n\n"
            f"The load generators differ: parakoon is driven by `parakoon bench`, etcd by the "
            f"Python + grpcio (asyncio) generator in this script, not by etcd's own Go "
            f"`benchmark` tool. Both are Python with the same shape (processes x asyncio "
            f"clients), but a gRPC call costs the generator more CPU than a parakoon request, "
            f"and that CPU comes from the same cores the clusters use, so etcd's figures "
            f"likely understate what etcd does with a cheaper client (such as its Go tool).\n\n"
            f"{summary}\n\nEvery run:\n\n{detail}\n"
        )
        write_section(
            "etcd",
            "Side by side: parakoon and etcd 3.4 on the same machine",
            body,
            command="uv run --all-packages --with grpcio python "
            + shlex.join(["benchmarks/etcd_compare_bench.py", *sys.argv[1:]]),
        )
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
