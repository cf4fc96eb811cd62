"""``parakoon bench``: a load generator for a running cluster, over the Arakoon client protocol.

Several worker processes (``--procs``), each running many concurrent connections on one event
loop, share each phase's work. Every connection does one request at a time and records the
latency of each *acknowledged* operation; an error or a dropped connection is counted as a
failure, never as done (a write that was not acknowledged did not happen as far as the benchmark
is concerned). Phases:

* ``set``: SET of fresh keys, on the master;
* ``get``: consistent GET of keys written by ``set``, on the master;
* ``get-ng``: no-guarantees GET, spread over every node;
* ``seq10``: SEQUENCE of 10 SETs, on the master (one operation = one sequence);
* ``mixed``: 90% consistent GET / 10% SET, on the master.

Keys live under a prefix of the run's own (``--prefix``, default ``parakoon-bench/<random>/``)
and are deleted at the end (``--no-cleanup`` keeps them), so a run never touches other keys and
leaves nothing behind. With no node answering, it stops at once with one line naming the
addresses it tried.

Throughput is acknowledged operations divided by the time from the first worker's start to the
last one's end (process start-up excluded). On a terminal a live line per phase shows the
acknowledged operations so far, the seconds since that same first start and their quotient;
when the phase ends the line is drawn once more with the table's own figures (operations,
span, ops/s), so the last live rate is the table's. Latencies are per operation
(p50/p95/p99/max). ``--json PATH`` writes everything for machines.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import random
import secrets
import ssl
import sys
import time
from array import array
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from parakoon_client import codec
from parakoon_client.tls import client_context
from parakoon_node.commands.direct import DirectConnection
from parakoon_node.commands.tls_options import load_client_config, resolve_client_cert
from parakoon_node.runtime.config import ClusterConfig

PHASES = ("set", "get", "get-ng", "seq10", "mixed")
PROGRESS_EVERY_OPS = 64


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerJob:
    phase: str
    cluster_id: str
    targets: tuple[tuple[str, int], ...]  # (host, port) to spread connections over
    connections: int
    ops: int  # 0 = run for duration_secs
    duration_secs: float
    key_size: int
    value_size: int
    key_space: int
    worker: int
    workers: int
    seed: int
    prefix: bytes = b""
    # With tls_service: (CA, certificate, key) paths; each worker process builds its own
    # context (an SSLContext cannot be sent to another process).
    tls: tuple[Path | None, Path | None, Path | None] | None = None


@dataclass(slots=True)
class PhaseResult:
    phase: str
    clients: int
    ok: int = 0
    failed: int = 0
    seconds: float = 0.0
    ops_per_sec: float = 0.0
    p50_ms: float = 0.0
    p95_ms: float = 0.0
    p99_ms: float = 0.0
    max_ms: float = 0.0
    errors: dict[str, int] = field(default_factory=dict)


def make_key(index: int, size: int, prefix: bytes = b"") -> bytes:
    """Key number ``index``: ``prefix`` then ``size`` bytes of zero-padded number."""
    text = f"k{index:015d}"
    raw = text.encode()
    if size <= len(raw):
        return prefix + (raw[-size:] if size > 0 else b"")
    return prefix + raw.rjust(size, b"0")


UNIT = 0  # the answer to SET / SEQUENCE: rc 0 and nothing else
STRING = 1  # the answer to GET: rc 0 and one string
_ANSWER_BYTES_MAX = 64 << 20


class _BenchProtocol(asyncio.Protocol):
    """One connection's receiving side, with a lean parser for the two answer shapes we ask for.

    Every phase sends requests whose answer is either "unit" or one string, so instead of a
    general response decoder per request we read the return code and, where one follows, one
    length-prefixed string (the error message, or the value). A non-zero code is an error
    answer (protocol §3.3): it is returned as ``codec.ErrorResponse`` and never counted as done.
    """

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.shape = UNIT
        self.waiter: asyncio.Future[Any] | None = None
        self.lost: BaseException | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buf += data
        waiter = self.waiter
        if waiter is None or waiter.done():
            return
        buf = self.buf
        if len(buf) < 4:
            return
        rc = int.from_bytes(buf[:4], "little", signed=True)
        if rc == 0 and self.shape == UNIT:
            del buf[:4]
            waiter.set_result(None)
            return
        if rc == codec.ErrorCode.NO_MAGIC:  # the one answer without a message (protocol §3.2)
            del buf[:4]
            waiter.set_result(codec.ErrorResponse(code=rc, message=b""))
            return
        if len(buf) < 8:
            return
        size = int.from_bytes(buf[4:8], "little", signed=True)
        if not 0 <= size <= _ANSWER_BYTES_MAX:
            waiter.set_exception(ConnectionError(f"bad answer length {size}"))
            return
        if len(buf) < 8 + size:
            return
        payload = bytes(buf[8 : 8 + size])
        del buf[: 8 + size]
        waiter.set_result(payload if rc == 0 else codec.ErrorResponse(code=rc, message=payload))

    def connection_lost(self, exc: BaseException | None) -> None:
        self.lost = exc or ConnectionError("server closed the connection")
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("server closed the connection"))


class Connection:
    """One protocol connection over a plain asyncio protocol.

    Lean on purpose: the load generator shares the machine with the cluster it measures, so
    every microsecond it spends per request is taken from the nodes. Requests are encoded by the
    codec (GETs once, up front); answers are read by :class:`_BenchProtocol`.
    """

    def __init__(self, protocol: _BenchProtocol) -> None:
        self._protocol = protocol
        self._loop = asyncio.get_running_loop()

    @classmethod
    async def open(
        cls, host: str, port: int, cluster_id: str, ssl_context: ssl.SSLContext | None = None
    ) -> Connection:
        loop = asyncio.get_running_loop()
        if ssl_context is None:
            transport, protocol = await loop.create_connection(_BenchProtocol, host, port)
        else:
            # The node name is not checked here: the bench measures, it is not a client to trust.
            transport, protocol = await loop.create_connection(
                _BenchProtocol, host, port, ssl=ssl_context, server_hostname=""
            )
        transport.write(codec.encode_prologue(cluster_id))
        return cls(protocol)

    async def call(self, wire: bytes, shape: int) -> Any:
        protocol = self._protocol
        if protocol.lost is not None or protocol.transport is None:
            raise ConnectionError("connection is closed")
        protocol.shape = shape
        protocol.waiter = waiter = self._loop.create_future()
        protocol.transport.write(wire)
        return await waiter

    def close(self) -> None:
        if self._protocol.transport is not None:
            self._protocol.transport.close()


def _get_wires(job: WorkerJob, consistency: Any) -> list[bytes]:
    """Every GET this worker may send, encoded once before the clock starts."""
    return [
        codec.encode_request(
            codec.Get(key=make_key(k, job.key_size, job.prefix), consistency=consistency)
        )
        for k in range(job.key_space)
    ]


def _request(
    job: WorkerJob, rng: random.Random, n: int, value: bytes, gets: list[bytes]
) -> tuple[bytes, int]:
    phase = job.phase
    if phase == "set":
        return codec.encode_request(
            codec.Set(key=make_key(n, job.key_size, job.prefix), value=value)
        ), UNIT
    if phase in ("get", "get-ng"):
        return gets[rng.randrange(job.key_space)], STRING
    if phase == "seq10":
        base = n * 10
        sequence = codec.Sequence(
            updates=tuple(
                codec.USet(key=make_key(base + k, job.key_size, job.prefix), value=value)
                for k in range(10)
            )
        )
        return codec.encode_request(sequence), UNIT
    if phase == "mixed":
        if rng.random() < 0.9:
            return gets[rng.randrange(job.key_space)], STRING
        key = make_key(rng.randrange(job.key_space), job.key_size, job.prefix)
        return codec.encode_request(codec.Set(key=key, value=value)), UNIT
    raise ValueError(f"unknown phase {phase!r}")


async def _worker_main(job: WorkerJob, progress: Any, first_start: Any) -> dict[str, Any]:
    rng = random.Random(job.seed)
    value = bytes(rng.getrandbits(8) for _ in range(job.value_size))
    latencies = array("d")
    errors: dict[str, int] = {}
    counter = [0]
    failed = [0]
    deadline = time.monotonic() + job.duration_secs if job.ops == 0 else float("inf")
    # Keys for "set" are numbered so workers never collide and "get" finds them.
    next_op = [0]
    gets: list[bytes] = []
    if job.phase in ("get", "mixed"):
        gets = _get_wires(job, codec.CONSISTENT)
    elif job.phase == "get-ng":
        gets = _get_wires(job, codec.NO_GUARANTEES)
    ssl_context = None if job.tls is None else client_context(*job.tls)

    def take() -> int | None:
        if job.ops and next_op[0] >= job.ops:
            return None
        if time.monotonic() >= deadline:
            return None
        k = next_op[0]
        next_op[0] += 1
        # Worker w of W writes keys w, w + W, w + 2W, ...: together the keys 0 .. ops - 1,
        # which is the key space the read phases draw from.
        return k * job.workers + job.worker

    async def run_connection(index: int) -> None:
        host, port = job.targets[index % len(job.targets)]
        conn: Connection | None = None
        crng = random.Random(job.seed * 1000 + index)
        try:
            while (n := take()) is not None:
                if conn is None:
                    try:
                        conn = await Connection.open(host, port, job.cluster_id, ssl_context)
                    except OSError as exc:
                        errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                        failed[0] += 1
                        await asyncio.sleep(0.05)
                        continue
                wire, shape = _request(job, crng, n, value, gets)
                started = time.perf_counter()
                try:
                    result = await conn.call(wire, shape)
                except (OSError, ConnectionError) as exc:
                    errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                    failed[0] += 1
                    conn.close()
                    conn = None
                    continue
                elapsed = time.perf_counter() - started
                if isinstance(result, codec.ErrorResponse):
                    name = f"rc=0x{result.code:02x}"
                    # Reads of keys that "set" did not reach are not failures of the cluster.
                    if not (result.code == codec.ErrorCode.NOT_FOUND and job.phase != "set"):
                        errors[name] = errors.get(name, 0) + 1
                        failed[0] += 1
                        if not codec.keeps_connection_open(result.code):
                            conn.close()
                            conn = None
                        continue
                latencies.append(elapsed)
                counter[0] += 1
                if counter[0] % PROGRESS_EVERY_OPS == 0:
                    with progress.get_lock():
                        progress.value += PROGRESS_EVERY_OPS
        finally:
            if conn is not None:
                conn.close()

    started = time.monotonic()
    with first_start.get_lock():
        if first_start.value == 0.0 or started < first_start.value:
            first_start.value = started  # the live rate counts from the same moment
    await asyncio.gather(*(run_connection(i) for i in range(job.connections)))
    ended = time.monotonic()
    with progress.get_lock():
        progress.value += counter[0] % PROGRESS_EVERY_OPS
    return {
        "ok": counter[0],
        "failed": failed[0],
        "started": started,
        "ended": ended,
        "seconds": ended - started,
        "latencies": latencies.tobytes(),
        "errors": errors,
    }


def _worker_entry(job: WorkerJob, progress: Any, first_start: Any, out: Any) -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    result = asyncio.run(_worker_main(job, progress, first_start))
    out.send(result)
    out.close()


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return 0.0
    k = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[k]


def _ask(cluster: ClusterConfig, name: str, request: Any, timeout: float = 2.0) -> Any:
    with DirectConnection(cluster, cluster.node(name), timeout=timeout) as conn:
        return conn.call(request)


class NoCluster(Exception):
    """No node answers, or none serves as master in time; the message says which."""


def find_master(cluster: ClusterConfig, timeout_secs: float = 15.0) -> str:
    """The master, once it serves: named by a node, and answering a consistent read itself.

    Right after an election the new master is named before its own lease value is chosen; the
    benchmark waits for that instead of measuring refusals. When no node answers at all it
    gives up at once (a stopped cluster does not start by itself), naming the addresses.
    """
    deadline = time.monotonic() + timeout_secs
    while True:
        unreachable: list[str] = []
        for node in cluster.nodes:
            try:
                named = _ask(cluster, node.name, codec.WhoMaster())
                if isinstance(named, str) and named in cluster.node_names:
                    answer = _ask(cluster, named, codec.Exists(key=b"parakoon-bench-probe"))
                    if answer is True or answer is False:
                        return named
            except (OSError, ConnectionError, codec.ProtocolError) as exc:
                where = f"{node.client_host}:{node.client_port}"
                unreachable.append(f"{node.name} at {where} ({exc.__class__.__name__})")
        if len(unreachable) == len(cluster.nodes):
            raise NoCluster(f"no node of the cluster answers: {'; '.join(unreachable)}")
        if time.monotonic() >= deadline:
            down = f" (unreachable: {'; '.join(unreachable)})" if unreachable else ""
            raise NoCluster(f"no master serving consistent reads within {timeout_secs:g} s{down}")
        time.sleep(0.2)


def cleanup(cluster: ClusterConfig, prefix: bytes) -> int:
    """Delete every key the benchmark wrote (one DELETE_PREFIX on the master); the count."""
    # One request that may delete many keys: a generous bound on the answer.
    event = _ask(cluster, find_master(cluster), codec.DeletePrefix(prefix=prefix), timeout=60)
    if isinstance(event, codec.ErrorResponse):
        raise NoCluster(f"the clean-up (delete_prefix {prefix!r}) failed: {event.message!r}")
    return int(event)


def bench_tls(cluster: ClusterConfig) -> tuple[Path | None, Path | None, Path | None] | None:
    """The TLS files the workers connect with, or None for plain TCP."""
    if not cluster.tls_service:
        return None
    cert, key = resolve_client_cert(cluster)
    return (cluster.tls_ca_cert, cert, key)


def run_phase(
    phase: str,
    cluster: ClusterConfig,
    master: str,
    *,
    clients: int,
    procs: int,
    ops: int,
    duration_secs: float,
    key_size: int,
    value_size: int,
    key_space: int,
    seed: int,
    show_progress: bool,
    prefix: bytes = b"",
) -> PhaseResult:
    master_node = cluster.node(master)
    if phase == "get-ng":
        targets = tuple((n.client_host, n.client_port) for n in cluster.nodes)
    else:
        targets = ((master_node.client_host, master_node.client_port),)
    procs = max(1, min(procs, clients))
    ctx = mp.get_context("spawn")
    progress = ctx.Value("q", 0)
    # When the first worker started measuring (time.monotonic() is one clock for every
    # process): the live rate and the final table both divide by the time since then.
    first_start = ctx.Value("d", 0.0)
    workers = []
    for w in range(procs):
        conns = clients // procs + (1 if w < clients % procs else 0)
        share = ops // procs + (1 if w < ops % procs else 0) if ops else 0
        job = WorkerJob(
            phase=phase,
            cluster_id=cluster.cluster_id,
            targets=targets,
            connections=conns,
            ops=share,
            duration_secs=duration_secs,
            key_size=key_size,
            value_size=value_size,
            key_space=key_space,
            worker=w,
            workers=procs,
            seed=seed * 100 + w,
            prefix=prefix,
            tls=bench_tls(cluster),
        )
        parent, child = ctx.Pipe(duplex=False)
        proc = ctx.Process(
            target=_worker_entry, args=(job, progress, first_start, child), daemon=True
        )
        proc.start()
        child.close()
        workers.append((proc, parent))
    started = time.monotonic()
    results = []
    pending = list(workers)
    while pending:
        for item in list(pending):
            proc, pipe = item
            if pipe.poll(0.05):
                results.append(pipe.recv())
                pending.remove(item)
                proc.join(timeout=5)
            elif not proc.is_alive():
                pending.remove(item)
                results.append(
                    {
                        "ok": 0,
                        "failed": 0,
                        "seconds": 0.0,
                        "latencies": b"",
                        "errors": {"worker died": 1},
                    }
                )
        if show_progress:
            measured = time.monotonic() - first_start.value if first_start.value else 0.0
            done = progress.value
            if ops:
                frac = done / ops
            else:
                frac = measured / duration_secs if duration_secs else 0.0
            _draw_progress(phase, done, measured, frac)
    wall = time.monotonic() - started
    lat: list[float] = []
    result = PhaseResult(phase=phase, clients=clients)
    for r in results:
        result.ok += r["ok"]
        result.failed += r["failed"]
        arr = array("d")
        arr.frombytes(r["latencies"])
        lat.extend(arr)
        for k, v in r["errors"].items():
            result.errors[k] = result.errors.get(k, 0) + v
    # From the first worker's start to the last one's end (process start-up excluded), the
    # same span the live rate divides by.
    starts = [r["started"] for r in results if "started" in r]
    ends = [r["ended"] for r in results if "ended" in r]
    result.seconds = (max(ends) - min(starts)) if starts and ends else wall
    result.ops_per_sec = result.ok / result.seconds if result.seconds > 0 else 0.0
    lat.sort()
    result.p50_ms = percentile(lat, 0.50) * 1000
    result.p95_ms = percentile(lat, 0.95) * 1000
    result.p99_ms = percentile(lat, 0.99) * 1000
    result.max_ms = (lat[-1] if lat else 0.0) * 1000
    if show_progress:
        # The last live line states the final figures: a line drawn while the last results
        # were still on their way would divide by a slightly later clock than the table does.
        _draw_progress(phase, result.ok, result.seconds, 1.0)
        sys.stderr.write("\n")
    return result


def _draw_progress(phase: str, done: int, elapsed: float, frac: float) -> None:
    """Redraw the live line: ``done`` acknowledged operations in ``elapsed`` seconds since the
    first worker started (the table's clock), and the bar at ``frac`` of the phase."""
    width = 30
    filled = int(max(0.0, min(1.0, frac)) * width)
    bar = "#" * filled + "-" * (width - filled)
    rate = done / elapsed if elapsed > 0 else 0.0
    sys.stderr.write(f"\r{phase:>7} [{bar}] {done:>9} ops in {elapsed:7.2f} s {rate:>10.0f} ops/s")
    sys.stderr.flush()


def format_table(results: list[PhaseResult]) -> str:
    header = ("phase", "clients", "ok", "failed", "ops/s", "p50 ms", "p95 ms", "p99 ms", "max ms")
    rows = [
        (
            r.phase,
            str(r.clients),
            str(r.ok),
            str(r.failed),
            f"{r.ops_per_sec:.0f}",
            f"{r.p50_ms:.2f}",
            f"{r.p95_ms:.2f}",
            f"{r.p99_ms:.2f}",
            f"{r.max_ms:.2f}",
        )
        for r in results
    ]
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(header)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(header, widths, strict=True))]
    lines += ["  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    cluster = load_client_config(args)
    phases = tuple(p.strip() for p in (args.phases or ",".join(PHASES)).split(",") if p.strip())
    unknown = [p for p in phases if p not in PHASES]
    if unknown:
        print(
            f"error: unknown phase(s) {unknown}; choose from {', '.join(PHASES)}", file=sys.stderr
        )
        return 2
    duration = float(getattr(args, "duration", None) or 0.0)
    ops = 0 if duration > 0 else int(args.ops)
    clients = int(args.clients)
    procs = int(getattr(args, "procs", None) or min(4, max(1, (os.cpu_count() or 2))))
    seed = int(getattr(args, "seed", None) or 1)
    prefix_text = getattr(args, "prefix", None) or f"parakoon-bench/{secrets.token_hex(4)}/"
    prefix = prefix_text.encode()
    try:
        master = find_master(cluster)
    except NoCluster as exc:
        print(f"error: bench: {exc}", file=sys.stderr)
        return 1
    show = sys.stderr.isatty()
    key_space = max(1, ops if ops else 10_000)
    results: list[PhaseResult] = []
    for phase in phases:
        result = run_phase(
            phase,
            cluster,
            master,
            clients=clients,
            procs=procs,
            ops=ops,
            duration_secs=duration,
            key_size=int(args.key_size),
            value_size=int(args.value_size),
            key_space=key_space,
            seed=seed,
            show_progress=show,
            prefix=prefix,
        )
        results.append(result)
        if not show:
            print(f"{phase}: {result.ok} ok, {result.ops_per_sec:.0f} ops/s", file=sys.stderr)
    print(
        f"master: {master}; clients: {clients}; processes: {procs}; "
        f"value size: {args.value_size}; key size: {args.key_size} after the prefix {prefix_text!r}"
    )
    print(format_table(results))
    if getattr(args, "cleanup", True):
        try:
            removed = cleanup(cluster, prefix)
        except (NoCluster, OSError) as exc:
            print(f"error: bench: keys under {prefix_text!r} were left: {exc}", file=sys.stderr)
            return 1
        print(f"cleaned up: deleted the {removed} keys under {prefix_text!r}")
    else:
        print(f"kept the keys under {prefix_text!r} (--no-cleanup)")
    if args.json:
        payload = {
            "master": master,
            "clients": clients,
            "procs": procs,
            "ops": ops,
            "duration_secs": duration,
            "key_size": int(args.key_size),
            "value_size": int(args.value_size),
            "prefix": prefix_text,
            "results": [asdict(r) for r in results],
        }
        with open(args.json, "w") as f:
            json.dump(payload, f, indent=2)
    return 0 if all(r.ok > 0 for r in results) else 1
