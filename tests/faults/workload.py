"""The client side of the fault tests: recording clients over raw codec connections.

Each client is a thread with its own connections (one per node, opened on demand, dropped on any
error and whenever the protocol closes them). It runs a seeded random mix of consistent ``get``,
``set``, ``test_and_set`` and the single-key compare-and-set sequence ``[Assert(k, expected),
Set(k, new)]`` on a small set of keys, and records every operation as a
:class:`lincheck.Operation` with ``time.monotonic()`` call and return times and its outcome.

How an answer becomes an outcome (this is what makes the history honest):

* an answer of the operation's kind (including not-found for a read and ``E_ASSERTION_FAILED``
  for the sequence, which observed the value) is ``OK``;
* ``E_NOT_MASTER`` is ``FAILED``: the node refused before proposing anything (it checks its
  lease first, and the consensus core refuses requests outside the leader role before queueing);
* a refused connection is ``FAILED`` too: nothing left the client;
* everything else on a write is ``UNKNOWN``: ``E_NO_LONGER_MASTER`` says so itself, a timeout or a
  connection that broke after the request left may hide a write a new master still chooses, and
  any other error code is treated the same way to stay on the safe side;
* a read that did not answer is dropped (it observed nothing).

Keys rotate: every ``key_window_secs`` the clients move to a fresh generation of the same few
keys (as Jepsen's independent-key tests do). Contention stays high, yet each key's history
stays short enough for the exact search, even with the unknown outcomes that every failover
leaves behind.
"""

from __future__ import annotations

import contextlib
import random
import socket
import threading
import time
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from parakoon_client import codec

from .lincheck import INFINITY, Operation, OpKind, Outcome


class Cluster(Protocol):
    """What the fault tests use of ``tests/conftest.py``'s ``ClusterProcs`` (typed here, since
    a test module may not import its parent folder's conftest)."""

    names: list[str]
    client_ports: dict[str, int]
    config: Path

    def start(self, name: str) -> None: ...
    def start_all(self) -> None: ...
    def running(self, name: str) -> bool: ...
    def kill(self, name: str) -> None: ...
    def pause(self, name: str) -> None: ...
    def resume(self, name: str) -> None: ...
    def call(self, name: str, request: Any, timeout: float = 5.0) -> Any: ...
    def who_master(self, name: str) -> str | None: ...
    def wait_master(self, timeout: float = 20.0, among: list[str] | None = None) -> str: ...
    def tail_logs(self, lines: int = 40) -> str: ...


def cluster_id_of(cluster: Cluster) -> str:
    """The cluster id from the cluster's generated ``cluster.toml``."""
    cid = tomllib.loads(cluster.config.read_text())["cluster"]["id"]
    assert isinstance(cid, str), cid
    return cid


#: The client reads with Consistent from the node it believes is master ("master"), or from a
#: random node each time ("any"): a correct node other than a master with a valid lease must
#: refuse, so reads from "any" node probe exactly the rule that a stale old master would break.
READ_TARGETS = ("master", "any")


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkloadConfig:
    clients: int = 4
    keys: int = 5
    #: Every this many seconds the clients move on to fresh keys (see the module docstring).
    key_window_secs: float = 8.0
    #: Socket timeout for one request; after it the outcome of a write is unknown.
    call_timeout_secs: float = 2.0
    connect_timeout_secs: float = 1.0
    #: Relative weights of get, set, test_and_set, cas.
    weights: tuple[int, int, int, int] = (3, 2, 2, 3)
    #: Share of the consistent reads sent to a random node rather than to the master.
    read_any_share: float = 0.3
    #: Pause between two attempts to find a master, so a leaderless moment is not a busy loop.
    discovery_backoff_secs: float = 0.05
    #: Upper bound on operations per client (a guard; the deadline normally ends the run).
    ops_per_client_max: int = 200_000
    #: Multi-key mode: each "key" is a group of ``group_size`` keys (``<key>/0`` ...). Writes
    #: set every member in one sequence (``cas`` asserts the first member first); reads take
    #: the whole group with one consistent ``range_entries``. A read that sees the members
    #: disagree is an atomicity violation (a partial sequence became visible): it is counted
    #: in ``partial_reads`` and recorded as a read of a value nobody wrote, so the checker
    #: rejects the history too. Test-and-set has no group form; its weight goes to ``cas``.
    group_size: int = 0
    #: Put before every key: lets two workloads share a cluster without sharing keys.
    key_prefix: str = ""


@dataclass(slots=True)
class ClientStats:
    ok: int = 0
    failed: int = 0
    unknown: int = 0
    dropped_reads: int = 0
    #: Multi-key reads that saw a group's members disagree (must stay 0), with what they saw.
    partial_reads: list[str] = field(default_factory=list)
    #: Error codes and exception names seen, with counts, for the test's summary line.
    causes: dict[str, int] = field(default_factory=dict)

    def note(self, cause: str) -> None:
        self.causes[cause] = self.causes.get(cause, 0) + 1


class CallFailed(Exception):
    """A request got no answer. ``sent`` says whether any of it may have reached the node."""

    def __init__(self, cause: str, *, sent: bool) -> None:
        super().__init__(cause)
        self.cause = cause
        self.sent = sent


class Conn:
    """One blocking Arakoon connection that knows whether a failed request was sent."""

    def __init__(
        self,
        port: int,
        cluster_id: str,
        *,
        connect_timeout: float,
        timeout: float,
        host: str = "127.0.0.1",
    ):
        try:
            self.sock = socket.create_connection((host, port), timeout=connect_timeout)
        except OSError as exc:
            raise CallFailed(f"connect: {type(exc).__name__}", sent=False) from exc
        try:
            self.sock.settimeout(timeout)
            self.sock.sendall(codec.encode_prologue(cluster_id))
        except OSError as exc:
            self.close()
            raise CallFailed(f"prologue: {type(exc).__name__}", sent=False) from exc

    def call(self, request: Any) -> Any:
        """The decoded answer (a value or an ``ErrorResponse``), or ``CallFailed``."""
        data = codec.encode_request(request)
        decoder = codec.ResponseDecoder(request)
        try:
            self.sock.sendall(data)
            while True:
                event = decoder.next_event()
                if event is not codec.NEED_DATA:
                    return event
                chunk = self.sock.recv(1 << 16)
                if not chunk:
                    raise CallFailed("closed by the node", sent=True)
                decoder.feed(chunk)
        except TimeoutError as exc:
            raise CallFailed("timeout", sent=True) from exc
        except OSError as exc:
            # Part of the request may have left before the error; treat it as sent.
            raise CallFailed(type(exc).__name__, sent=True) from exc

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


class Client:
    """One recording client thread (see the module docstring)."""

    def __init__(
        self,
        *,
        client_id: int,
        seed: int,
        ports: dict[str, int],
        hosts: dict[str, str] | None = None,
        cluster_id: str,
        config: WorkloadConfig,
        read_target: str,
        t0: float,
        stop: threading.Event,
        deadline: float,
    ) -> None:
        if read_target not in READ_TARGETS:
            raise ValueError(f"read_target={read_target!r}: expected one of {READ_TARGETS}")
        self.client_id = client_id
        self.rng = random.Random(seed)
        self.ports = ports
        #: Each node's address (127.0.0.1 unless the nodes live in network namespaces).
        self.hosts = hosts or {}
        self.names = sorted(ports)
        self.cluster_id = cluster_id
        self.config = config
        self.read_target = read_target
        self.t0 = t0
        self.stop = stop
        self.deadline = deadline
        self.conns: dict[str, Conn] = {}
        self.master: str | None = None
        self.ops: list[Operation] = []
        self.stats = ClientStats()
        #: The last value this client saw per key: a likely ``expected`` for test-and-set/cas.
        self.last_seen: dict[bytes, bytes | None] = {}
        self.seq = 0
        self.error: BaseException | None = None

    # ------------------------------------------------------------------ connections

    def conn(self, name: str) -> Conn:
        c = self.conns.get(name)
        if c is None:
            c = Conn(
                self.ports[name],
                self.cluster_id,
                connect_timeout=self.config.connect_timeout_secs,
                timeout=self.config.call_timeout_secs,
                host=self.hosts.get(name, "127.0.0.1"),
            )
            self.conns[name] = c
        return c

    def drop(self, name: str) -> None:
        c = self.conns.pop(name, None)
        if c is not None:
            c.close()

    def drop_all(self) -> None:
        for name in list(self.conns):
            self.drop(name)

    def find_master(self) -> str | None:
        """Ask the nodes in random order; accept a name only when that node names itself."""
        for name in self.rng.sample(self.names, len(self.names)):
            try:
                claimed = self.conn(name).call(codec.WhoMaster())
            except CallFailed:
                self.drop(name)
                continue
            if not isinstance(claimed, str) or claimed not in self.ports:
                continue
            try:
                confirmed = self.conn(claimed).call(codec.WhoMaster())
            except CallFailed:
                self.drop(claimed)
                continue
            if confirmed == claimed:
                return claimed
        return None

    # ------------------------------------------------------------------ the loop

    def run(self) -> None:
        try:
            self._run()
        except BaseException as exc:  # reported by the test, never swallowed
            self.error = exc
        finally:
            self.drop_all()

    def _run(self) -> None:
        cfg = self.config
        for _ in range(cfg.ops_per_client_max):
            if self.stop.is_set() or time.monotonic() >= self.deadline:
                return
            if self.master is None:
                self.master = self.find_master()
                if self.master is None:
                    self.stop.wait(cfg.discovery_backoff_secs)
                    continue
            self.one_op()

    def key_now(self) -> bytes:
        generation = int((time.monotonic() - self.t0) / self.config.key_window_secs)
        key = f"{self.config.key_prefix}k{self.rng.randrange(self.config.keys)}.g{generation}"
        return key.encode()

    def one_op(self) -> None:
        assert self.master is not None
        rng = self.rng
        kind = rng.choices(list(OpKind), weights=self.config.weights)[0]
        if self.config.group_size and kind is OpKind.TEST_AND_SET:
            kind = OpKind.CAS
        key = self.key_now()
        self.seq += 1
        new = f"c{self.client_id}-{self.seq}".encode()
        guess = self.last_seen.get(key)
        # Mostly the value this client last saw (so swaps often succeed), sometimes absent.
        expected = guess if rng.random() < 0.8 else None
        request: Any
        target = self.master
        match kind:
            case OpKind.GET:
                request = codec.Get(key=key, consistency=codec.CONSISTENT)
                if self.read_target == "any" or rng.random() < self.config.read_any_share:
                    target = rng.choice(self.names)
            case OpKind.SET:
                request = codec.Set(key=key, value=new)
            case OpKind.TEST_AND_SET:
                wanted = None if rng.random() < 0.1 else new
                request = codec.TestAndSet(key=key, expected=expected, wanted=wanted)
            case OpKind.CAS:
                request = codec.Sequence(
                    updates=(
                        codec.UAssert(key=key, expected=expected),
                        codec.USet(key=key, value=new),
                    )
                )
        if self.config.group_size:
            request = self.as_group(kind, key, request)
        t_call = time.monotonic()
        try:
            answer = self.conn(target).call(request)
        except CallFailed as exc:
            self.drop(target)
            if target == self.master:
                self.master = None
            self.record_failure(kind, key, request, t_call, exc)
            return
        t_return = time.monotonic()
        if self.config.group_size and kind is OpKind.GET and isinstance(answer, list):
            answer = self.group_value(key, answer, target)
        self.record_answer(kind, key, request, target, t_call, t_return, answer)

    # ------------------------------------------------------------------ multi-key groups

    def members(self, key: bytes) -> list[bytes]:
        return [key + b"/%d" % m for m in range(self.config.group_size)]

    def as_group(self, kind: OpKind, key: bytes, request: Any) -> Any:
        """The group form of a single-key request (see ``WorkloadConfig.group_size``)."""
        members = self.members(key)
        match kind:
            case OpKind.GET:
                return codec.RangeEntries(
                    first=key + b"/", last=key + b"/\xff", max_keys=-1,
                    consistency=request.consistency,
                )  # fmt: skip
            case OpKind.SET:
                sets = tuple(codec.USet(key=m, value=request.value) for m in members)
                return codec.Sequence(updates=sets)
            case _:
                assert kind is OpKind.CAS, kind
                check, new = request.updates
                sets = tuple(codec.USet(key=m, value=new.value) for m in members)
                return codec.Sequence(
                    updates=(codec.UAssert(key=members[0], expected=check.expected), *sets)
                )

    def group_value(self, key: bytes, entries: list[tuple[bytes, bytes]], node: str) -> Any:
        """The group's value from its members, or a value nobody wrote if they disagree."""
        values = {value for _, value in entries}
        if not entries:
            return codec.ErrorResponse(code=codec.ErrorCode.NOT_FOUND, message=key)
        if len(entries) == self.config.group_size and len(values) == 1:
            return entries[0][1]
        seen = ", ".join(f"{k.decode(errors='replace')}={v.decode(errors='replace')}"
                         for k, v in entries)  # fmt: skip
        self.stats.partial_reads.append(f"{node}: {seen}")
        return b"<partial: " + seen.encode() + b">"

    # ------------------------------------------------------------------ recording

    def _op(
        self,
        kind: OpKind,
        key: bytes,
        request: Any,
        t_call: float,
        t_return: float,
        outcome: Outcome,
        result: bytes | bool | None,
        detail: str,
    ) -> Operation:
        value: bytes | None = None
        expected: bytes | None = None
        match kind:
            case OpKind.GET:
                pass
            case OpKind.SET if isinstance(request, codec.Sequence):  # a group's sets
                first = request.updates[0]
                assert isinstance(first, codec.USet), first
                value = first.value
            case OpKind.SET:
                value = request.value
            case OpKind.TEST_AND_SET:
                value, expected = request.wanted, request.expected
            case OpKind.CAS:
                value, expected = request.updates[1].value, request.updates[0].expected
        return Operation(
            op_id=self.client_id * 1_000_000 + self.seq,
            client=self.client_id,
            kind=kind,
            key=key,
            value=value,
            expected=expected,
            t_call=t_call,
            t_return=INFINITY if outcome is Outcome.UNKNOWN else t_return,
            outcome=outcome,
            result=result,
            detail=detail,
        )

    def record_failure(
        self, kind: OpKind, key: bytes, request: Any, t_call: float, exc: CallFailed
    ) -> None:
        self.stats.note(exc.cause)
        if kind is OpKind.GET:
            self.stats.dropped_reads += 1
            return
        outcome = Outcome.UNKNOWN if exc.sent else Outcome.FAILED
        self._count(outcome)
        self.ops.append(
            self._op(kind, key, request, t_call, time.monotonic(), outcome, None, exc.cause)
        )

    def record_answer(
        self,
        kind: OpKind,
        key: bytes,
        request: Any,
        target: str,
        t_call: float,
        t_return: float,
        answer: Any,
    ) -> None:
        detail = f"on {target}"
        if isinstance(answer, codec.ErrorResponse):
            code = answer.code
            cause = code.name if isinstance(code, codec.ErrorCode) else f"0x{code:02x}"
            detail = f"{cause} on {target}"
            self.stats.note(cause)
            if not codec.keeps_connection_open(code):
                self.drop(target)
            if code == codec.ErrorCode.NOT_MASTER and target == self.master:
                hint = answer.message.decode("utf-8", "replace")
                self.master = hint if hint in self.ports and hint != target else None
            if kind is OpKind.GET and code == codec.ErrorCode.NOT_FOUND:
                self._finish(kind, key, request, t_call, t_return, Outcome.OK, None, detail)
            elif kind is OpKind.CAS and code == codec.ErrorCode.ASSERTION_FAILED:
                self._finish(kind, key, request, t_call, t_return, Outcome.OK, False, detail)
            elif kind is OpKind.GET:
                self.stats.dropped_reads += 1
            elif code == codec.ErrorCode.NOT_MASTER:
                self._finish(kind, key, request, t_call, t_return, Outcome.FAILED, None, detail)
            else:
                self._finish(kind, key, request, t_call, t_return, Outcome.UNKNOWN, None, detail)
            return
        match kind:
            case OpKind.GET | OpKind.TEST_AND_SET:
                result: bytes | bool | None = answer
            case OpKind.SET:
                result = None
            case OpKind.CAS:
                result = True
        self._finish(kind, key, request, t_call, t_return, Outcome.OK, result, detail)

    def _finish(
        self,
        kind: OpKind,
        key: bytes,
        request: Any,
        t_call: float,
        t_return: float,
        outcome: Outcome,
        result: bytes | bool | None,
        detail: str,
    ) -> None:
        self._count(outcome)
        op = self._op(kind, key, request, t_call, t_return, outcome, result, detail)
        self.ops.append(op)
        if outcome is Outcome.OK:
            match kind:
                case OpKind.GET | OpKind.TEST_AND_SET:
                    self.last_seen[key] = result if isinstance(result, bytes) else None
                case OpKind.SET:
                    self.last_seen[key] = op.value
                case OpKind.CAS:
                    self.last_seen[key] = op.value if result else self.last_seen.get(key)

    def _count(self, outcome: Outcome) -> None:
        match outcome:
            case Outcome.OK:
                self.stats.ok += 1
            case Outcome.FAILED:
                self.stats.failed += 1
            case Outcome.UNKNOWN:
                self.stats.unknown += 1


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkloadResult:
    ops: tuple[Operation, ...]
    stats: tuple[ClientStats, ...]

    def partial_reads(self) -> list[str]:
        """Multi-key reads that saw a partial sequence (atomicity violations; must be empty)."""
        return [seen for s in self.stats for seen in s.partial_reads]

    def summary(self) -> str:
        total = ClientStats()
        for s in self.stats:
            total.ok += s.ok
            total.failed += s.failed
            total.unknown += s.unknown
            total.dropped_reads += s.dropped_reads
            for cause, n in s.causes.items():
                total.causes[cause] = total.causes.get(cause, 0) + n
        causes = ", ".join(f"{c}={n}" for c, n in sorted(total.causes.items()))
        return (
            f"ops={len(self.ops)} ok={total.ok} failed={total.failed} unknown={total.unknown} "
            f"dropped_reads={total.dropped_reads} causes: {causes or '-'}"
        )


def run_clients(
    *,
    seed: int,
    ports: dict[str, int],
    cluster_id: str,
    config: WorkloadConfig,
    duration_secs: float,
    hosts: dict[str, str] | None = None,
    read_target: str = "master",
    t0: float | None = None,
    during: Callable[[float], None] | None = None,
) -> WorkloadResult:
    """Run ``config.clients`` recording clients for ``duration_secs``.

    ``during`` (the nemesis) runs on the calling thread while the clients work; it gets the
    ``time.monotonic()`` deadline of the run and must return by then. The clients stop at the
    deadline. Raises if a client thread crashed or did not stop.
    """
    start = time.monotonic() if t0 is None else t0
    stop = threading.Event()
    deadline = time.monotonic() + duration_secs
    clients = [
        Client(
            client_id=k,
            seed=seed * 1000 + k,
            ports=ports,
            hosts=hosts,
            cluster_id=cluster_id,
            config=config,
            read_target=read_target,
            t0=start,
            stop=stop,
            deadline=deadline,
        )
        for k in range(config.clients)
    ]
    threads = [
        threading.Thread(target=c.run, name=f"client-{c.client_id}", daemon=True) for c in clients
    ]
    for t in threads:
        t.start()
    try:
        if during is not None:
            during(deadline)
        for t in threads:
            t.join(timeout=max(0.0, deadline - time.monotonic()) + 2 * config.call_timeout_secs + 5)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=2 * config.call_timeout_secs + 5)
    stuck = [t.name for t in threads if t.is_alive()]
    if stuck:
        raise AssertionError(f"client threads did not stop: {stuck}")
    for c in clients:
        if c.error is not None:
            raise AssertionError(f"client {c.client_id} crashed: {c.error!r}") from c.error
    ops: list[Operation] = []
    for c in clients:
        ops.extend(c.ops)
    return WorkloadResult(ops=tuple(ops), stats=tuple(c.stats for c in clients))


def keys_of(ops: Sequence[Operation]) -> list[bytes]:
    return sorted({op.key for op in ops})
