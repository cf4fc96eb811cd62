"""Real faults on a cluster of hosts in network namespaces (``netns.py``).

* Set-up and teardown leave nothing behind, and a run killed half-way is cleaned up by name.
* Power loss of every node at once loses no acknowledged write; the same cut against a build
  that acknowledges before fsync (``fsync = false``, the broken variant) is caught losing them.
* A seeded schedule runs every nemesis at least once under the recording workload: majority /
  minority partition, isolating the master, a bridge, a master that can send but not hear
  (one-way cuts), a client cut from the master only, packet loss on links, SIGKILL, SIGSTOP,
  power loss of one node, a disk that fails with EIO, a hung disk (fsfreeze), a full disk. It
  ends with every fault healed, a write that must succeed within a bound (liveness), equal
  store digests on every node and a linearizable history.

Every randomized run prints ``seed=N`` (``PARAKOON_SEED=N`` replays the schedule, not the
machine's timing). Skipped, with the reason, where the machine cannot make namespaces, nftables
rules or loop-device filesystems (not root, or commands missing).
"""

from __future__ import annotations

import enum
import os
import random
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from parakoon_testing import wait_until

from parakoon_client import codec

from .lincheck import Outcome, Verdict, check_history
from .netns import (
    NetnsCluster,
    cleanup_leftovers,
    clock_env,
    has_netem,
    libfaketime,
    missing_capabilities,
    set_clock,
    sh,
)
from .seeds import seeded
from .test_nemesis import dump_history, final_reads, wait_converged, write_through_master
from .workload import WorkloadConfig, WorkloadResult, cluster_id_of, keys_of, run_clients

LONG = bool(os.environ.get("PARAKOON_LONG"))
#: How long the long schedule runs (``PARAKOON_LONG_SECS``, default one hour).
LONG_SECS = float(os.environ.get("PARAKOON_LONG_SECS", "3600"))
LEASE = 1.0
#: Keys per group in the multi-key workload.
GROUP = 3
MISSING = missing_capabilities()
pytestmark = pytest.mark.skipif(
    bool(MISSING), reason=f"namespace fault tests need: {'; '.join(MISSING)}"
)


Factory = Callable[..., NetnsCluster]


@pytest.fixture
def netns_cluster(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Factory]:
    """Makes :class:`NetnsCluster` s; tears every one down (logs printed on failure)."""
    made: list[NetnsCluster] = []

    def make(**kwargs: Any) -> NetnsCluster:
        cluster = NetnsCluster(tmp_path / f"hosts{len(made)}", **kwargs)
        made.append(cluster)
        return cluster

    yield make
    report = getattr(request.node, "rep_call", None)
    for cluster in made:
        if report is not None and report.failed:
            print(cluster.tail_logs(60))
        cluster.teardown()


def load(cluster: NetnsCluster, *, seed: int, **options: Any) -> WorkloadResult:
    """The recording clients of ``workload.py`` against the namespace hosts."""
    return run_clients(
        seed=seed,
        ports=cluster.client_ports,
        hosts=cluster.hosts,
        cluster_id=cluster_id_of(cluster),
        **options,
    )


def leftovers(run_id: int) -> list[str]:
    """Namespaces, links and mounts whose names carry ``run_id``."""
    found = [
        f"netns {line.split()[0]}"
        for line in sh("ip", "netns", "list").stdout.splitlines()
        if line.startswith(f"pktest-{run_id}-")
    ]
    found += [
        f"link {line.split(':')[1].strip()}"
        for line in sh("ip", "-o", "link", "show").stdout.splitlines()
        if f"pkb{run_id}" in line or f"pkv{run_id}n" in line
    ]
    found += [
        f"mount {line.split()[1]}"
        for line in Path("/proc/mounts").read_text().splitlines()
        if f"/pktest-{run_id}-" in line
    ]
    found += [
        f"loop {line}"
        for line in sh("losetup", "-l", "-n", "-O", "NAME,BACK-FILE").stdout.splitlines()
        if f"/pktest-{run_id}-" in line
    ]
    return found


# ---------------------------------------------------------------------------------------------
# Set-up and cleanup

#: What one 3-node NetnsCluster holds: 3 namespaces (each also a mount under /run/netns), a
#: bridge and 3 veths, 3 filesystem mounts, 3 loop devices.
RESOURCES = 3 * 2 + 4 + 3 + 3


def test_teardown_and_cleanup_of_a_killed_run_leave_nothing(
    netns_cluster: Factory, tmp_path: Path
) -> None:
    cluster = netns_cluster()
    made = leftovers(os.getpid())
    assert len(made) == RESOURCES, "\n".join(made)
    cluster.teardown()
    assert leftovers(os.getpid()) == []
    # A run that dies half-way (SIGKILL, no teardown): the next cleanup removes its hosts.
    script = (
        "import os, sys, time\n"
        "from pathlib import Path\n"
        "from tests.faults.netns import NetnsCluster\n"
        f"NetnsCluster(Path({str(tmp_path / 'killed')!r}))\n"
        "print(os.getpid(), flush=True)\n"
        "time.sleep(60)\n"
    )
    root = Path(__file__).resolve().parents[2]
    # The child imports the test harness, which needs the shared helpers pytest puts on its
    # own path (testing/); a subprocess gets them through PYTHONPATH.
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(root / "testing"), str(root)]))
    child = subprocess.Popen(
        [sys.executable, "-c", script], cwd=root, stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert child.stdout is not None
        pid = int(child.stdout.readline() or "0")
        assert pid, "the child did not build its hosts"
        assert len(leftovers(pid)) == RESOURCES, leftovers(pid)
    finally:
        child.kill()
        child.wait(timeout=10)
        if child.stdout is not None:
            child.stdout.close()
    removed = cleanup_leftovers()
    print("\n".join(removed))
    assert leftovers(pid) == [], removed


# ---------------------------------------------------------------------------------------------
# Power loss


def write_until_power_cut(
    cluster: NetnsCluster, seconds: float, rng: random.Random
) -> tuple[list[bytes], int]:
    """Writers set fresh keys through the master until the power goes (after ``seconds``);
    returns the keys whose write was acknowledged, and how many writes were attempted."""
    acked: list[bytes] = []
    attempts = [0]
    stop = threading.Event()
    lock = threading.Lock()
    master = cluster.wait_master(timeout=30)

    def writer(k: int) -> None:
        n = 0
        conn = None
        while not stop.is_set():
            key = f"power/{k}/{n:06d}".encode()
            n += 1
            try:
                if conn is None:
                    conn = cluster.connect(master, timeout=2.0)
                with lock:
                    attempts[0] += 1
                answer = conn.call(codec.Set(key=key, value=b"v" * 64))
            except OSError:
                if conn is not None:
                    conn.close()
                conn = None
                continue
            if answer is None:
                with lock:
                    acked.append(key)
        if conn is not None:
            conn.close()

    threads = [threading.Thread(target=writer, args=(k,), daemon=True) for k in range(4)]
    for t in threads:
        t.start()
    time.sleep(seconds * rng.uniform(0.7, 1.0))
    cluster.power_loss(cluster.names)  # every disk keeps only what was durable, then SIGKILL
    stop.set()
    for t in threads:
        t.join(timeout=10)
    with lock:
        return list(acked), attempts[0]


def missing_after_power_on(cluster: NetnsCluster, acked: list[bytes]) -> list[bytes]:
    cluster.power_on(cluster.names)
    master = cluster.wait_master(timeout=60)
    entries = cluster.call(master, codec.PrefixKeys(prefix=b"power/", max_keys=-1), timeout=10.0)
    assert isinstance(entries, list), entries
    present = set(entries)
    return [k for k in acked if k not in present]


def test_power_loss_of_every_node_keeps_every_acknowledged_write(
    netns_cluster: Factory,
) -> None:
    rng = random.Random(seeded())
    cluster = netns_cluster(lease_period_secs=LEASE)
    cluster.start_all()
    acked, attempts = write_until_power_cut(cluster, 4.0, rng)
    print(f"acknowledged {len(acked)} of {attempts} writes before the power cut")
    assert len(acked) > 50, "too few writes for the test to mean anything"
    missing = missing_after_power_on(cluster, acked)
    assert missing == [], f"{len(missing)} acknowledged writes lost: {missing[:5]}"
    cluster.wait_same_store(timeout=30)


def test_power_loss_catches_a_build_that_acknowledges_before_fsync(
    netns_cluster: Factory,
) -> None:
    """The broken variant: ``fsync = false`` acknowledges writes still in the page cache.
    The same power cut must show acknowledged writes gone, or the test above proves nothing."""
    rng = random.Random(seeded())
    cluster = netns_cluster(lease_period_secs=LEASE, fsync=False)
    cluster.start_all()
    acked, attempts = write_until_power_cut(cluster, 4.0, rng)
    print(f"acknowledged {len(acked)} of {attempts} writes before the power cut")
    assert len(acked) > 50
    try:
        missing = missing_after_power_on(cluster, acked)
    except AssertionError as exc:
        # So much was lost that no master came back (the nodes' histories were cut short
        # differently): that, too, is the checker seeing the broken variant.
        print(f"no master after the power cut: {str(exc)[:300]}")
        return
    print(f"lost {len(missing)} of {len(acked)} acknowledged writes (expected with no fsync)")
    assert missing, "a power cut without fsync lost nothing: the power-loss fault is not real"


# ---------------------------------------------------------------------------------------------
# The schedule: every nemesis at least once


class Fault(enum.Enum):
    MINORITY = "partition a minority from the majority"
    ISOLATE_MASTER = "isolate the master (clients still reach it)"
    BRIDGE = "bridge: two nodes apart, the third sees both"
    DEAF_MASTER = "one-way: the master sends but hears nobody"
    CLIENT_CUT = "clients cut from the master only"
    LOSSY = "30% packet loss on every link of one node"
    KILL = "SIGKILL, then restart"
    PAUSE = "SIGSTOP, then SIGCONT"
    POWER = "power loss of one node"
    EIO = "the master's disk fails (EIO), then is replaced"
    HUNG_DISK = "the master's disk hangs (fsfreeze)"
    FULL_DISK = "a follower's disk fills up"
    DISK_LOSS = "a follower's disk is replaced by an empty one (it must rebuild)"
    MEMBERSHIP = "a follower is removed, wiped, added back as a learner and promoted"


class Schedule:
    def __init__(self, cluster: NetnsCluster, rng: random.Random, t0: float) -> None:
        self.cluster = cluster
        self.rng = rng
        self.t0 = t0
        self.events: list[str] = []
        self.done: list[Fault] = []

    def note(self, what: str) -> None:
        self.events.append(f"  {time.monotonic() - self.t0:8.3f} {what}")

    def master(self) -> str:
        try:
            return self.cluster.wait_master(timeout=15.0)
        except AssertionError:
            return self.rng.choice(self.cluster.names)

    def run(self, deadline: float) -> None:
        """Every fault once, in a seeded order, then seeded picks until the deadline."""
        faults = list(Fault)
        self.rng.shuffle(faults)
        first_round = len(faults)
        while time.monotonic() < deadline - 10.0:
            fault = faults.pop(0) if faults else self.rng.choice(list(Fault))
            time.sleep(self.rng.uniform(0.5, 1.0))
            left = deadline - 10.0 - time.monotonic()
            # The first round must fit: share what is left among the faults still to come.
            share = left / max(1, len(faults) + 1) if len(self.done) < first_round else left
            hold = self.rng.uniform(0.5, max(0.6, min(3.0 * LEASE, share - 2.0)))
            self.one(fault, hold)
            self.done.append(fault)

    def rebuilding(self) -> list[str]:
        """Nodes that lost their state and have not rebuilt yet (as they say themselves). A
        node that does not answer counts as not rebuilt: it may be one that just restarted
        empty (long run 4244 took a slow answer for "rebuilt" and wiped a second disk of three)."""
        out = []
        for name in self.cluster.names:
            try:
                state = self.cluster.call(name, codec.CurrentState(), timeout=2.0)
            except OSError:
                out.append(name)
                continue
            if isinstance(state, str) and state.startswith(("Rebuilding", "Founding")):
                out.append(name)
        return out

    def member(self, *args: str) -> None:
        """``parakoon member ...`` from the root namespace, as an operator runs it."""
        proc = subprocess.run(
            [sys.executable, "-m", "parakoon_node", "member", *args,
             "--config", str(self.cluster.config), "--wait", "60"],
            check=False, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        self.note(f"{'':15} member {' '.join(args[:2])}: rc {proc.returncode}")
        assert proc.returncode == 0, f"member {args}: {proc.stderr}\n{self.cluster.tail_logs()}"

    def replace_member(self, victim: str) -> None:
        """The membership nemesis: remove a voter, wipe it, add it back under the same name
        and address as a learner, start it, promote it once it has caught up. Meanwhile the
        cluster has one voter fewer (the others' majority), then a learner it must not count,
        then its voters again."""
        c = self.cluster
        self.member("remove", victim)
        c.kill(victim)
        shutil.rmtree(c.home(victim))
        self.member(
            "add", victim, "--address", c.peer_address(victim),
            "--client-port", str(c.client_ports[victim]),
        )  # fmt: skip
        c.start(victim)
        self.member("promote", victim)

    def one(self, fault: Fault, hold: float) -> None:
        c = self.cluster
        if fault in (Fault.DISK_LOSS, Fault.MEMBERSHIP):
            # One lost disk at a time: a second one before the first node rebuilt would be two
            # of three voters without their state, beyond what the cluster tolerates (it would
            # rightly stay unavailable). No other fault is active now, so a rebuild that does
            # not finish in time is a liveness failure of its own. A node that stopped itself
            # on a failed disk (ENOSPC, EIO) is started again first, as an operator would:
            # until it answers, nobody can tell whether it still holds its state.
            for name in c.names:
                if not c.running(name):
                    self.note(f"{'':15} {name} had stopped on its own; started again")
                    c.start(name)
            wait_until(lambda: not self.rebuilding(), "every node rebuilt", timeout=60)
        master = self.master()
        others = [n for n in c.names if n != master]
        victim = self.rng.choice(others)
        self.note(f"{fault.name:15} master={master} victim={victim} hold={hold:.1f}s")
        match fault:
            case Fault.MINORITY:
                c.partition([victim], [n for n in c.names if n != victim])
            case Fault.ISOLATE_MASTER:
                c.isolate(master)
            case Fault.BRIDGE:
                c.partition([master], [victim])
            case Fault.DEAF_MASTER:
                for other in others:
                    c.cut(other, master)
            case Fault.CLIENT_CUT:
                c.cut_client(master)
            case Fault.LOSSY:
                for other in others:
                    c.lose(victim, other, 300)
                    c.lose(other, victim, 300)
            case Fault.KILL:
                c.kill(master)
            case Fault.PAUSE:
                c.pause(master)
            case Fault.POWER:
                c.power_loss([master])
            case Fault.EIO:
                c.fail_disk(master)
            case Fault.HUNG_DISK:
                c.freeze(master)
            case Fault.FULL_DISK:
                c.fill(victim)
            case Fault.DISK_LOSS:
                c.kill(victim)
                shutil.rmtree(c.home(victim))
                c.start(victim)
            case Fault.MEMBERSHIP:
                self.replace_member(victim)
        time.sleep(hold)
        match fault:
            case Fault.KILL:
                c.start(master)
            case Fault.PAUSE:
                c.resume(master)
            case Fault.POWER:
                c.power_on([master])
            case Fault.EIO:
                c.replace_failed_disk(master)
            case Fault.HUNG_DISK | Fault.FULL_DISK:
                c.heal_disks()
            case _:
                c.heal_links()
        self.note(f"{'healed':15}")


def converged_and_linearizable(
    cluster: NetnsCluster,
    loads: list[tuple[Any, int]],
    *,
    seed: int,
    t0: float,
    tmp_path: Path,
    timeline: str,
    budget_secs: float = 60.0,
) -> None:
    """The end of every schedule, with every fault healed: a write must succeed within 30 s
    (liveness), every store must have the same digest, and the history of ``loads`` (each a
    workload result and its group size, 0 for registers) with a final read of every key must
    be linearizable."""
    marker = (b"__final_marker__", f"seed-{seed}".encode())
    t_heal = time.monotonic()
    write_through_master(cluster, *marker, timeout=30.0)
    print(f"a write succeeded {time.monotonic() - t_heal:.2f} s after healing")
    digest = wait_converged(cluster, marker, timeout=60.0)
    print(f"converged: every node's store has digest {digest[:16]}")
    ops: list[Any] = []
    for load, group_size in loads:
        ops += list(load.ops)
        ops += final_reads(cluster, keys_of(load.ops), timeout=30.0, group_size=group_size)
        completed = sum(1 for op in load.ops if op.outcome is Outcome.OK)
        assert completed > 100, f"only {completed} operations completed: {load.summary()}"
    history = tmp_path / "history.jsonl"
    dump_history(history, ops, t0)
    report = check_history(ops, t0=t0, time_budget_secs=budget_secs)
    print(report.describe())
    assert report.verdict is Verdict.LINEARIZABLE, (
        f"seed={seed}\n{report.describe()}\nschedule:\n{timeline}\nhistory: {history}"
    )


@pytest.mark.timeout(400 if not LONG else LONG_SECS + 1400)
def test_every_nemesis_under_load_keeps_history_linearizable(
    netns_cluster: Factory, tmp_path: Path
) -> None:
    seed = seeded()
    rng = random.Random(seed)
    cluster = netns_cluster(lease_period_secs=LEASE)
    cluster.start_all()
    cluster.wait_master(timeout=30)
    t0 = time.monotonic()
    schedule = Schedule(cluster, random.Random(rng.randrange(1 << 32)), t0)
    duration = LONG_SECS if LONG else 85.0
    # Two workloads at once: registers (4 clients) and multi-key groups (2 clients), each
    # group written whole by one sequence and read whole by one range: no partial sequence
    # may ever be visible.
    groups: dict[str, Any] = {}
    group_seed = rng.randrange(1 << 32)

    def group_load() -> None:
        groups["result"] = load(
            cluster,
            seed=group_seed,
            config=WorkloadConfig(
                clients=2, keys=3, key_window_secs=8.0, group_size=GROUP, key_prefix="grp-"
            ),
            duration_secs=duration,
            t0=t0,
        )

    group_thread = threading.Thread(target=group_load, name="group-load", daemon=True)
    group_thread.start()
    result = load(
        cluster,
        seed=rng.randrange(1 << 32),
        config=WorkloadConfig(clients=4, keys=5, key_window_secs=8.0),
        duration_secs=duration,
        t0=t0,
        during=schedule.run,
    )
    group_thread.join(timeout=60)
    assert "result" in groups, "the multi-key workload did not finish"
    grouped = groups["result"]
    timeline = "\n".join(schedule.events)
    print(f"seed={seed}\nregisters: {result.summary()}\ngroups: {grouped.summary()}")
    print(f"schedule:\n{timeline}")
    if not has_netem():
        print("tc netem: not in this kernel; delay, jitter and reordering were not injected")
    assert set(schedule.done) == set(Fault), f"faults not run: {set(Fault) - set(schedule.done)}"
    assert grouped.partial_reads() == [], f"partial sequences seen: {grouped.partial_reads()}"
    gone = {n: cluster.procs[n].returncode for n in cluster.names if not cluster.running(n)}
    for name in gone:  # a node may stop itself on a failed disk: it must start again
        cluster.start(name)
    print(f"nodes that had stopped on their own and were started again: {gone}")
    converged_and_linearizable(
        cluster,
        [(result, 0), (grouped, GROUP)],
        seed=seed,
        t0=t0,
        tmp_path=tmp_path,
        timeline=timeline,
        budget_secs=900.0 if LONG else 60.0,
    )


# ---------------------------------------------------------------------------------------------
# The checker bites: a master that serves reads without a valid lease


def caught_within_rounds(
    cluster: NetnsCluster,
    seed: int,
    rng: random.Random,
    fault: Callable[[float], None],
    *,
    round_secs: float,
    rounds: int = 4,
) -> None:
    """Run the contended workload (reads from every node) with ``fault`` as its nemesis, up to
    ``rounds`` times, until the checker reports a stale read; fail if it never does. For the
    broken variants: a checker that cannot see them would make the other tests prove nothing."""
    verdicts = []
    for round_no in range(rounds):
        result = load(
            cluster,
            seed=rng.randrange(1 << 32),
            config=WorkloadConfig(clients=4, keys=3, key_window_secs=60.0),
            duration_secs=round_secs,
            read_target="any",
            during=fault,
        )
        print(f"round {round_no}: {result.summary()}")
        report = check_history(result.ops, time_budget_secs=30.0)
        verdicts.append(report.verdict)
        if report.verdict is Verdict.VIOLATION:
            print(report.describe())
            assert "get(" in report.describe()
            return
    raise AssertionError(f"seed={seed}: no violation in {len(verdicts)} rounds: {verdicts}")


@pytest.mark.timeout(200)
def test_a_master_serving_reads_without_its_lease_is_caught(netns_cluster: Factory) -> None:
    """``PARAKOON_TEST_FAULT=lease-ignored``: a node that has led keeps answering consistent
    reads after its lease ran out. Isolating the master from its peers (clients still reach it)
    lets a new master take writes while the old one answers reads from its old store: the
    checker must report a stale read. The schedule test above is the control."""
    seed = seeded()
    rng = random.Random(seed)
    cluster = netns_cluster(lease_period_secs=LEASE)
    for name in cluster.names:
        cluster.start(name, env={"PARAKOON_TEST_FAULT": "lease-ignored"})
    cluster.wait_master(timeout=30)

    def isolate_the_master(deadline: float) -> None:
        time.sleep(1.0)
        master = cluster.wait_master(timeout=15)
        cluster.isolate(master)
        time.sleep(max(0.0, min(4.0 * LEASE, deadline - time.monotonic() - 1.0)))
        cluster.heal_links()

    caught_within_rounds(cluster, seed, rng, isolate_the_master, round_secs=8.0)


# ---------------------------------------------------------------------------------------------
# Clocks (libfaketime): within the drift bound nothing breaks; beyond it, leases cannot hold

#: The assumption the lease arithmetic relies on (``Config.clock_drift``; notes §5.6: clock
#: rates may differ by less than about 10%):
#: every node's clock runs within 5% of real time. libfaketime sets each node's rate (its
#: monotonic and wall clocks, its sleeps and timeouts) and shifts its wall clock.
CLOCK_DRIFT = 0.05
needs_faketime = pytest.mark.skipif(
    libfaketime() is None, reason="libfaketime is not installed (Debian package faketime)"
)


@needs_faketime
@pytest.mark.timeout(300)
def test_clocks_within_the_drift_bound_keep_history_linearizable(
    netns_cluster: Factory, tmp_path: Path
) -> None:
    """Each node runs on its own clock: a rate within the bound (0.96-1.04 of real time) and a
    wall clock hours or a day off. The master is killed (restarted on a new rate and wall
    offset: the rate changes, the wall clock jumps), isolated, paused or made deaf, while
    clients read with Consistent from every node. Nothing may be stale or lost."""
    seed = seeded()
    rng = random.Random(seed)
    cluster = netns_cluster(lease_period_secs=LEASE)

    def new_clock(name: str) -> dict[str, str]:
        rate = round(rng.uniform(1 - 0.8 * CLOCK_DRIFT, 1 + 0.8 * CLOCK_DRIFT), 3)
        offset = rng.choice([-7200, 0, 3600, 86400])
        clocks.append(f"{name}: x{rate} {offset:+d}s")
        return clock_env(rate, offset)

    clocks: list[str] = []
    for name in cluster.names:
        cluster.start(name, env=new_clock(name))
    cluster.wait_master(timeout=30)
    t0 = time.monotonic()
    events: list[str] = []

    def schedule(deadline: float) -> None:
        while time.monotonic() < deadline - 10.0:
            time.sleep(rng.uniform(0.5, 1.0))
            master = cluster.wait_master(timeout=15)
            kind = rng.choice(["kill", "isolate", "pause", "deaf"])
            hold = rng.uniform(0.5, 3.0 * LEASE)
            events.append(f"  {time.monotonic() - t0:8.3f} {kind} {master} {hold:.1f}s")
            if kind == "kill":
                cluster.kill(master)
            elif kind == "isolate":
                cluster.isolate(master)
            elif kind == "pause":
                cluster.pause(master)
            else:
                for other in cluster.names:
                    if other != master:
                        cluster.cut(other, master)
            time.sleep(hold)
            if kind == "kill":
                cluster.start(master, env=new_clock(master))
            elif kind == "pause":
                cluster.resume(master)
            else:
                cluster.heal_links()

    result = load(
        cluster,
        seed=rng.randrange(1 << 32),
        config=WorkloadConfig(clients=4, keys=5, key_window_secs=8.0),
        duration_secs=45.0,
        read_target="any",
        t0=t0,
        during=schedule,
    )
    timeline = "\n".join(events)
    print(f"assumption: every clock runs within {CLOCK_DRIFT:.0%} of real time (clock_drift)")
    print(f"seed={seed}\nclocks: {'; '.join(clocks)}\nload: {result.summary()}\n{timeline}")
    assert len(events) >= 5, timeline
    converged_and_linearizable(
        cluster, [(result, 0)], seed=seed, t0=t0, tmp_path=tmp_path, timeline=timeline
    )


@needs_faketime
@pytest.mark.timeout(200)
def test_a_master_clock_beyond_the_drift_bound_breaks_leases_and_is_caught(
    netns_cluster: Factory, tmp_path: Path
) -> None:
    """The assumption made visible: the master's clock goes wrong (it jumps back and runs at
    0.3 of real time, far beyond the bound), then the master is isolated from its peers while
    clients still reach it. It believes its lease lasts long after the others' views ended, so
    it answers consistent reads after a new master took writes. The checker must report it;
    if it did not, the within-bound test would prove nothing."""
    seed = seeded()
    rng = random.Random(seed)
    cluster = netns_cluster(lease_period_secs=LEASE)
    controls = {name: tmp_path / f"clock-{name}" for name in cluster.names}
    for name in cluster.names:
        cluster.start(name, env=clock_env(1.0, control=controls[name]))
    cluster.wait_master(timeout=30)
    time.sleep(3.0)  # a clock that jumps back from a few seconds after the start

    def slow_and_isolate(deadline: float) -> None:
        master = cluster.wait_master(timeout=30)
        time.sleep(0.5)
        set_clock(controls[master], 0.3)
        time.sleep(2.0)  # libfaketime re-reads the file every second
        cluster.isolate(master)
        time.sleep(max(0.0, min(5.0 * LEASE, deadline - time.monotonic() - 1.0)))
        cluster.heal_links()
        set_clock(controls[master], 1.0)

    caught_within_rounds(cluster, seed, rng, slow_and_isolate, round_secs=12.0)
