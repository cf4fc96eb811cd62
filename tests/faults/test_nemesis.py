"""Fault injection: a 3-node cluster of real processes under client load and a seeded nemesis.

Recording clients (``workload.py``) run get / set / test_and_set / compare-and-set on a few keys
over raw codec connections while the nemesis, after a gap of 1-2 s each time, holds one fault
for 0.3-3 s: kill a node (SIGKILL) and restart it; pause it (SIGSTOP) and resume it; isolate it
by blackholing every peer link to and from it (``links.py``; clients still reach it); or
blackhole one direction of one peer link.
The master is the victim most of the time. Many faults outlast the lease, so that an old master
comes back, or keeps serving its clients from the wrong side of a partition, after a new one was
elected: if it answered a consistent read from its stale store, the checker would see a stale
read. Then every fault is healed, the load stops, and:

* a final marker written through the master must reach every node, and every node's whole
  store (a no-guarantees ``RANGE_ENTRIES``) must hash to the same digest;
* a final consistent read of every key joins the history (so that a lost acknowledged write
  cannot hide behind a key nobody read again), and ``lincheck`` must find the history
  linearizable.

The run is seeded (``seed=N`` is printed; ``PARAKOON_SEED=N`` replays the nemesis schedule and
the clients' choices, though not the machine's timing). The CI version loads the cluster for
about 40 s and never has more than one node down (killed, paused or isolated) at a time;
``PARAKOON_LONG=1`` runs 10 minutes with more clients and keys, and lets the nemesis take down
two nodes at once now and then (no quorum for a while).
"""

from __future__ import annotations

import enum
import hashlib
import json
import os
import random
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, assert_never

import pytest
from parakoon_testing import wait_until

from parakoon_client import codec

from .lincheck import INFINITY, Operation, OpKind, Outcome, Verdict, check_history
from .links import LinkedCluster
from .seeds import seeded
from .workload import Cluster, WorkloadConfig, cluster_id_of, keys_of, run_clients

LONG = bool(os.environ.get("PARAKOON_LONG"))
LEASE = 1.0
LOAD_SECS = 600.0 if LONG else 40.0
CHECK_BUDGET_SECS = 300.0 if LONG else 20.0
WORKLOAD = (
    WorkloadConfig(clients=8, keys=10, key_window_secs=8.0)
    if LONG
    else WorkloadConfig(clients=4, keys=5, key_window_secs=8.0)
)


# ---------------------------------------------------------------------------------------------
# The nemesis


class Fault(enum.Enum):
    KILL = "kill"  # SIGKILL, restarted later
    PAUSE = "pause"  # SIGSTOP, SIGCONT later
    ISOLATE = "isolate"  # every peer link to and from the node blackholed; clients still reach it
    CUT = "cut"  # one direction of one peer link blackholed


@dataclass(frozen=True, slots=True, kw_only=True)
class NemesisEvent:
    at_secs: float
    action: str
    node: str


@dataclass(frozen=True, slots=True, kw_only=True)
class NemesisConfig:
    #: Pause between two faults (uniform in this range).
    gap_secs: tuple[float, float] = (1.0, 2.0)
    #: How long a fault lasts before it is undone. The upper part outlasts the lease, so a
    #: paused or isolated master is replaced and then comes back believing nothing happened.
    hold_secs: tuple[float, float] = (0.3, 3.0 * LEASE)
    #: Relative weights of the faults, in the order of ``Fault``.
    weights: tuple[int, int, int, int] = (3, 3, 3, 1)
    #: Share of faults aimed at the current master (the rest hit a random node).
    master_share: float = 0.6
    #: Most nodes down (killed, paused or isolated) at once; 1 keeps a quorum throughout.
    down_max: int = 1


class Nemesis:
    """Seeded faults on a :class:`LinkedCluster`, one at a time (or two, with ``down_max=2``).

    Every fault is undone before the next one starts, and ``run`` heals everything before it
    returns, so the cluster leaves it whole.
    """

    def __init__(
        self, cluster: LinkedCluster, rng: random.Random, t0: float, config: NemesisConfig
    ) -> None:
        self.cluster = cluster
        self.rng = rng
        self.t0 = t0
        self.config = config
        self.events: list[NemesisEvent] = []
        self.killed: set[str] = set()
        self.paused: set[str] = set()
        self.cut_links = False

    def note(self, action: str, node: str) -> None:
        self.events.append(
            NemesisEvent(at_secs=time.monotonic() - self.t0, action=action, node=node)
        )

    def timeline(self) -> str:
        return "\n".join(f"  {e.at_secs:8.3f} {e.action:8} {e.node}" for e in self.events)

    def master_faults(self) -> int:
        return sum(1 for e in self.events if e.node.endswith("(master)"))

    def current_master(self, wait_secs: float = 2.0) -> str | None:
        """The master some live node names; waits a little while an election is under way."""
        deadline = time.monotonic() + wait_secs
        while True:
            for name in self.cluster.names:
                if name in self.killed or name in self.paused:
                    continue
                master = self.cluster.who_master(name)
                if master is not None:
                    return master
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.1)

    def pick_victim(self, exclude: set[str]) -> tuple[str, bool]:
        """A node to hit, and whether it is the master as far as the others can tell."""
        candidates = [n for n in self.cluster.names if n not in exclude]
        master = self.current_master()
        if master in candidates and self.rng.random() < self.config.master_share:
            return master, True
        victim = self.rng.choice(candidates)
        return victim, victim == master

    def fault(self, victim: str, is_master: bool, *, single: bool) -> None:
        role = " (master)" if is_master else ""
        kinds = list(Fault) if single else [Fault.KILL, Fault.PAUSE, Fault.ISOLATE]
        kind = self.rng.choices(kinds, weights=self.config.weights[: len(kinds)])[0]
        match kind:
            case Fault.KILL:
                self.cluster.kill(victim)
                self.killed.add(victim)
                self.note("kill", victim + role)
            case Fault.PAUSE:
                self.cluster.pause(victim)
                self.paused.add(victim)
                self.note("pause", victim + role)
            case Fault.ISOLATE:
                self.cluster.isolate(victim)
                self.cut_links = True
                self.note("isolate", victim + role)
            case Fault.CUT:
                # One direction only: the victim stops hearing from (or reaching) one peer.
                peer = self.rng.choice([n for n in self.cluster.names if n != victim])
                src, dst = (victim, peer) if self.rng.random() < 0.5 else (peer, victim)
                self.cluster.cut(src, dst)
                self.cut_links = True
                self.note("cut", f"{src} -> {dst}{role}")
            case _:
                assert_never(kind)

    def heal_all(self) -> None:
        for name in sorted(self.killed):
            self.cluster.start(name)
            self.note("restart", name)
        for name in sorted(self.paused):
            self.cluster.resume(name)
            self.note("resume", name)
        if self.cut_links:
            self.cluster.heal_links()
            self.note("heal", "links")
        self.killed.clear()
        self.paused.clear()
        self.cut_links = False

    def run(self, deadline: float) -> None:
        """Inject faults until shortly before ``deadline``; leave every node running."""
        cfg = self.config
        # The last fault must be over in time for the cluster to settle before the load ends.
        last_start = deadline - cfg.hold_secs[1] - 3.0
        try:
            while time.monotonic() < last_start:
                time.sleep(self.rng.uniform(*cfg.gap_secs))
                if time.monotonic() >= last_start:
                    break
                victims = [self.pick_victim(set())]
                if cfg.down_max > 1 and self.rng.random() < 0.15:
                    victims.append(self.pick_victim({victims[0][0]}))
                for victim, is_master in victims:
                    self.fault(victim, is_master, single=len(victims) == 1)
                time.sleep(self.rng.uniform(*cfg.hold_secs))
                self.heal_all()
        finally:
            self.heal_all()


# ---------------------------------------------------------------------------------------------
# After the storm: convergence and the final reads


def store_digest(cluster: Cluster, name: str) -> tuple[str, int]:
    """SHA-256 over a node's whole store (a no-guarantees RANGE_ENTRIES) and its key count."""
    entries = cluster.call(
        name,
        codec.RangeEntries(first=None, max_keys=-1, consistency=codec.NO_GUARANTEES),
        timeout=10.0,
    )
    assert isinstance(entries, list), f"{name}: RANGE_ENTRIES answered {entries!r}"
    h = hashlib.sha256()
    for key, value in entries:
        h.update(len(key).to_bytes(4, "little") + key + len(value).to_bytes(4, "little") + value)
    return h.hexdigest(), len(entries)


def write_through_master(cluster: Cluster, key: bytes, value: bytes, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    last: list[Any] = [None]

    def acknowledged() -> str | None:
        master = cluster.wait_master(timeout=max(1.0, deadline - time.monotonic()))
        try:
            last[0] = cluster.call(master, codec.Set(key=key, value=value), timeout=5.0)
        except OSError as exc:
            last[0] = exc
            return None
        return master if last[0] is None else None

    return wait_until(
        acknowledged, lambda: f"marker write acknowledged (last: {last[0]!r})", timeout=timeout
    )


def wait_converged(cluster: Cluster, marker: tuple[bytes, bytes], timeout: float) -> str:
    """Wait until every node has the marker, then until all digests agree; return the digest."""
    key, value = marker
    deadline = time.monotonic() + timeout
    views: dict[str, Any] = {}

    def marked() -> bool:
        for name in cluster.names:
            try:
                views[name] = cluster.call(
                    name, codec.Get(key=key, consistency=codec.NO_GUARANTEES), timeout=2.0
                )
            except OSError as exc:
                views[name] = exc
        return all(v == value for v in views.values())

    wait_until(marked, lambda: f"marker on every node: {views}", timeout=timeout)
    digests: dict[str, tuple[str, int]] = {}

    def agreed() -> str | None:
        digests.update({name: store_digest(cluster, name) for name in cluster.names})
        if len({d for d, _ in digests.values()}) == 1:
            return next(iter(digests.values()))[0]
        return None

    return wait_until(
        agreed,
        lambda: f"equal stores after healing: {digests}",
        timeout=max(0.0, deadline - time.monotonic()),
        interval=0.2,
    )


def final_reads(
    cluster: Cluster, keys: list[bytes], timeout: float, group_size: int = 0
) -> list[Operation]:
    """A consistent read of every key through the master, recorded as operations. With
    ``group_size``, each key is a multi-key group (``workload.WorkloadConfig.group_size``),
    read whole with one ``range_entries``; members that disagree fail the test at once."""
    out: list[Operation] = []
    deadline = time.monotonic() + timeout
    master = cluster.wait_master(timeout=timeout)
    for n, key in enumerate(keys):
        while True:
            assert time.monotonic() < deadline, f"final reads not done within {timeout}s"
            t_call = time.monotonic()
            request: Any = codec.Get(key=key)
            if group_size:
                request = codec.RangeEntries(first=key + b"/", last=key + b"/\xff")
            try:
                answer = cluster.call(master, request, timeout=5.0)
            except OSError:
                master = cluster.wait_master(timeout=max(1.0, deadline - time.monotonic()))
                continue
            t_return = time.monotonic()
            if group_size and isinstance(answer, list):
                values = {v for _, v in answer}
                assert not answer or (len(answer) == group_size and len(values) == 1), (
                    f"group {key!r} is partial on {master}: {answer}"
                )
                answer = answer[0][1] if answer else None
            if isinstance(answer, codec.ErrorResponse):
                if answer.code == codec.ErrorCode.NOT_FOUND:
                    answer = None
                else:
                    master = cluster.wait_master(timeout=max(1.0, deadline - time.monotonic()))
                    continue
            out.append(
                Operation(
                    op_id=900_000_000 + n,
                    client=-1,
                    kind=OpKind.GET,
                    key=key,
                    t_call=t_call,
                    t_return=t_return,
                    outcome=Outcome.OK,
                    result=answer,
                    detail=f"final read on {master}",
                )
            )
            break
    return out


def dump_history(path: Path, ops: list[Operation], t0: float) -> None:
    """One JSON object per operation, times relative to the start, for reading a failure."""

    def text(v: bytes | bool | None) -> Any:
        return v.decode("utf-8", "backslashreplace") if isinstance(v, bytes) else v

    with path.open("w") as f:
        for op in sorted(ops, key=lambda o: o.t_call):
            row = {
                "id": op.op_id,
                "client": op.client,
                "kind": op.kind.value,
                "key": text(op.key),
                "value": text(op.value),
                "expected": text(op.expected),
                "t_call": round(op.t_call - t0, 6),
                "t_return": None if op.t_return == INFINITY else round(op.t_return - t0, 6),
                "outcome": op.outcome.value,
                "result": text(op.result),
                "detail": op.detail,
            }
            f.write(json.dumps(row) + "\n")


# ---------------------------------------------------------------------------------------------
# The test


@pytest.fixture
def linked_cluster(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[LinkedCluster]:
    """A 3-node cluster whose peer links run through proxies; killed and closed at teardown,
    with the node logs printed when the test failed (as ``cluster_factory`` does)."""
    cluster = LinkedCluster(tmp_path / "cluster", lease_period_secs=LEASE)
    yield cluster
    cluster.shutdown()
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        print(cluster.tail_logs(80))


@pytest.mark.timeout(LOAD_SECS + 110)
def test_nemesis_history_is_linearizable_and_stores_converge(
    linked_cluster: LinkedCluster, tmp_path: Path
) -> None:
    seed = seeded()
    rng = random.Random(seed)
    cluster = linked_cluster
    cluster.start_all()
    cluster.wait_master(timeout=30)
    t0 = time.monotonic()
    nemesis = Nemesis(
        cluster, random.Random(rng.randrange(1 << 32)), t0, NemesisConfig(down_max=2 if LONG else 1)
    )
    result = run_clients(
        seed=rng.randrange(1 << 32),
        ports=cluster.client_ports,
        cluster_id=cluster_id_of(cluster),
        config=WORKLOAD,
        duration_secs=LOAD_SECS,
        t0=t0,
        during=nemesis.run,
    )
    print(f"load: {result.summary()}")
    print(f"nemesis ({len(nemesis.events)} events):\n{nemesis.timeline()}")
    # Only the nemesis stops nodes, and it restarted every one it killed.
    gone = {n: cluster.procs[n].returncode for n in cluster.names if not cluster.running(n)}
    assert not gone, f"nodes exited on their own (return codes): {gone}\n{cluster.tail_logs()}"

    marker = (b"__final_marker__", f"seed-{seed}".encode())
    write_through_master(cluster, *marker, timeout=30.0)
    digest = wait_converged(cluster, marker, timeout=30.0)
    print(f"converged: every node's store has digest {digest[:16]}")

    ops = list(result.ops) + final_reads(cluster, keys_of(result.ops), timeout=30.0)
    history = tmp_path / "history.jsonl"
    dump_history(history, ops, t0)
    report = check_history(ops, t0=t0, time_budget_secs=CHECK_BUDGET_SECS)
    print(report.describe())
    # Enough must have happened for a pass to mean something: completed operations, failovers.
    completed = sum(1 for op in ops if op.outcome is Outcome.OK)
    assert completed > 100, f"only {completed} operations completed: {result.summary()}"
    assert len(nemesis.events) >= 8, nemesis.timeline()
    assert nemesis.master_faults() >= 1, nemesis.timeline()
    assert report.verdict is Verdict.LINEARIZABLE, (
        f"seed={seed}\n{report.describe()}\nnemesis:\n{nemesis.timeline()}\nhistory: {history}"
    )


# ---------------------------------------------------------------------------------------------
# Lost disks under load (R9): wipe a follower, then kill the master while it rebuilds


WIPE_CYCLES = 6 if LONG else 3


def _rebuilds_done(cluster: LinkedCluster, name: str) -> int:
    path = cluster.log_dir / f"{name}.log"
    if not path.exists():
        return 0
    return path.read_text(errors="replace").count('"rebuild.done"')


def _wipe_then_kill_master(cluster: LinkedCluster, rng: random.Random, t0: float) -> Any:
    """The nemesis of the lost-disk test: returns the ``during`` callable and its timeline."""
    events: list[str] = []

    def note(what: str) -> None:
        events.append(f"  {time.monotonic() - t0:8.3f} {what}")

    def run(deadline: float) -> None:
        for _ in range(WIPE_CYCLES):
            if time.monotonic() > deadline - 12.0:
                break
            time.sleep(rng.uniform(1.0, 2.0))
            master = cluster.wait_master(timeout=10.0)
            follower = rng.choice([n for n in cluster.names if n != master])
            before = _rebuilds_done(cluster, follower)
            # The follower's disk is replaced; it comes back empty and must rebuild.
            cluster.kill(follower)
            shutil.rmtree(cluster.home(follower))
            cluster.start(follower)
            note(f"wipe     {follower}")
            time.sleep(rng.uniform(0.1, 0.5))
            # The master dies while the wiped node has not rebuilt: no quorum until it returns.
            cluster.kill(master)
            note(f"kill     {master} (master)")
            time.sleep(rng.uniform(0.5, 2.0 * LEASE))
            cluster.start(master)
            note(f"restart  {master}")
            limit = time.monotonic() + 15.0
            while _rebuilds_done(cluster, follower) == before and time.monotonic() < limit:
                time.sleep(0.1)
            note(f"rebuilt  {follower}: {_rebuilds_done(cluster, follower) > before}")

    return run, events


@pytest.mark.timeout(120 if not LONG else 400)
def test_wiped_follower_and_dead_master_lose_nothing(
    linked_cluster: LinkedCluster, tmp_path: Path
) -> None:
    """Issue "never forget": wipe a follower, kill the master 0.1-0.5 s later, under a
    recording write load; repeat. No acknowledged write may be lost, the history must be
    linearizable and the stores equal afterwards, and every wiped node must rebuild."""
    seed = seeded()
    rng = random.Random(seed)
    cluster = linked_cluster
    cluster.start_all()
    cluster.wait_master(timeout=30)
    t0 = time.monotonic()
    during, events = _wipe_then_kill_master(cluster, random.Random(rng.randrange(1 << 32)), t0)
    result = run_clients(
        seed=rng.randrange(1 << 32),
        ports=cluster.client_ports,
        cluster_id=cluster_id_of(cluster),
        config=WORKLOAD,
        duration_secs=60.0 if LONG else 35.0,
        t0=t0,
        during=during,
    )
    timeline = "\n".join(events)
    print(f"load: {result.summary()}\nnemesis:\n{timeline}")
    gone = {n: cluster.procs[n].returncode for n in cluster.names if not cluster.running(n)}
    assert not gone, f"nodes exited on their own (return codes): {gone}\n{cluster.tail_logs()}"
    assert sum("wipe" in e for e in events) >= 2, timeline
    assert all(e.endswith("True") for e in events if "rebuilt" in e), timeline
    marker = (b"__final_marker__", f"seed-{seed}".encode())
    write_through_master(cluster, *marker, timeout=30.0)
    digest = wait_converged(cluster, marker, timeout=30.0)
    print(f"converged: every node's store has digest {digest[:16]}")
    ops = list(result.ops) + final_reads(cluster, keys_of(result.ops), timeout=30.0)
    history = tmp_path / "history.jsonl"
    dump_history(history, ops, t0)
    report = check_history(ops, t0=t0, time_budget_secs=CHECK_BUDGET_SECS)
    print(report.describe())
    completed = sum(1 for op in ops if op.outcome is Outcome.OK)
    assert completed > 100, f"only {completed} operations completed: {result.summary()}"
    assert report.verdict is Verdict.LINEARIZABLE, (
        f"seed={seed}\n{report.describe()}\nnemesis:\n{timeline}\nhistory: {history}"
    )
