"""Membership changes on real processes under a recorded write load (issue "Online membership
change", acceptance): grow 3 -> 5 voters, replace a voter by a node with a new name and port,
remove the master, shrink to 3, all with ``parakoon member`` while recording clients write and
read. The history must be linearizable (so no acknowledged write is missing), the remaining
members' stores equal, and writes must keep flowing: no gap between two acknowledged writes
longer than a few lease periods around any step.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

from parakoon_testing import free_ports

from parakoon_client import codec

from .lincheck import Operation, OpKind, Outcome, Verdict, check_history
from .seeds import seeded
from .workload import Cluster, WorkloadConfig, cluster_id_of, run_clients

LEASE = 1.0
WORKLOAD = WorkloadConfig(clients=4, keys=5, key_window_secs=8.0)
#: Longest pause between two acknowledged writes we accept around one step (a removed master
#: is replaced once its lease has run out: about one lease period, plus the election).
GAP_MAX_SECS = 4 * LEASE


def member(cluster: Any, *args: str) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-m", "parakoon_node", "member", *args, "--config", str(cluster.config),
         "--json"],
        check=False, capture_output=True, text=True, timeout=120, cwd=cluster.config.parent,
    )  # fmt: skip
    assert proc.returncode == 0, f"member {args}: rc {proc.returncode}: {proc.stderr}"
    out: dict[str, Any] = json.loads(proc.stdout.splitlines()[0])
    return out


def add_and_promote(cluster: Any, name: str, peer_port: int) -> None:
    client_port = cluster.client_ports[name]
    member(cluster, "add", name, "--address", f"127.0.0.1:{peer_port}",
           "--client-port", str(client_port))  # fmt: skip
    cluster.names.append(name)
    cluster.peer_ports[name] = peer_port
    with open(cluster.config, "a") as f:
        f.write(
            f'\n[[nodes]]\nname = "{name}"\naddresses = ["127.0.0.1:{peer_port}"]\n'
            f'client_port = {client_port}\nhome_dir = "data/{name}"\nlearner = true\n'
        )
    cluster.start(name)
    listed = member(cluster, "promote", name, "--wait", "60")
    assert name in listed["voters"], listed


def remove(cluster: Any, name: str) -> None:
    listed = member(cluster, "remove", name)
    assert name not in listed["voters"] and name not in listed["learners"], listed
    cluster.stop(name)  # the operator stops a removed node


def write_gaps(ops: Sequence[Operation], start: float, end: float) -> float:
    """The longest time between two acknowledged writes (or the window's ends)."""
    times = sorted(
        op.t_return
        for op in ops
        if op.kind is not OpKind.GET and op.outcome is Outcome.OK and start <= op.t_return <= end
    )
    edges = [start, *times, end]
    return max(b - a for a, b in itertools.pairwise(edges))


def test_grow_replace_remove_master_shrink_under_load(cluster_factory: Any) -> None:
    seed = seeded()
    cluster: Cluster = cluster_factory(nodes=3, lease_period_secs=LEASE)
    procs: Any = cluster
    added = ["node_3", "node_4", "node_5"]
    ports = free_ports(2 * len(added))
    peer_ports = dict(zip(added, ports[len(added) :], strict=True))
    # The clients know every node that will ever exist: those not started yet refuse.
    client_ports = dict(procs.client_ports)
    client_ports.update(zip(added, ports[: len(added)], strict=True))
    procs.client_ports.update(client_ports)
    cluster.start_all()
    cluster.wait_master(timeout=30)
    steps: list[tuple[str, float, float]] = []

    def step(what: str, action: Any) -> None:
        began = time.monotonic()
        action()
        steps.append((what, began, time.monotonic()))
        print(f"{what}: {time.monotonic() - began:.1f} s")

    def during(deadline: float) -> None:
        time.sleep(2 * LEASE)
        step("grow to 4", lambda: add_and_promote(procs, "node_3", peer_ports["node_3"]))
        step("grow to 5", lambda: add_and_promote(procs, "node_4", peer_ports["node_4"]))
        step(
            "replace node_1 by node_5 (add)",
            lambda: add_and_promote(procs, "node_5", peer_ports["node_5"]),
        )
        step("replace node_1 by node_5 (remove)", lambda: remove(procs, "node_1"))
        master = cluster.wait_master(timeout=30, among=["node_0", "node_2", *added])
        step(f"remove the master {master}", lambda: remove(procs, master))
        left = [n for n in ["node_0", "node_2", *added] if n != master]
        step(f"shrink to 3 (remove {left[0]})", lambda: remove(procs, left[0]))
        assert time.monotonic() < deadline - 3 * LEASE, "the steps took the whole run"

    t0 = time.monotonic()
    result = run_clients(
        seed=seed,
        ports=client_ports,
        cluster_id=cluster_id_of(cluster),
        config=WORKLOAD,
        duration_secs=55.0,
        t0=t0,
        during=during,
    )
    print(result.summary())
    final = member(procs, "list")
    print(f"final membership: {final}")
    assert len(final["voters"]) == 3 and final["learners"] == []
    report = check_history(result.ops, time_budget_secs=60.0)
    print(report.describe())
    assert report.verdict is Verdict.LINEARIZABLE, report.describe()
    assert not result.partial_reads()
    for what, began, ended in steps:
        gap = write_gaps(result.ops, began, ended + LEASE)
        print(f"{what}: longest pause between acknowledged writes {gap:.2f} s")
        assert gap <= GAP_MAX_SECS, f"{what}: writes stopped for {gap:.1f} s"
    procs.wait_same_store(final["voters"], timeout=30)
    # Writes go on after the last step.
    master = cluster.wait_master(timeout=30, among=final["voters"])
    assert cluster.call(master, codec.Set(key=b"after-the-changes", value=b"1")) is None
