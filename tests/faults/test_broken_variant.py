"""The checker bites: a deliberately broken cluster produces a history it rejects.

With ``PARAKOON_TEST_FAULT=stale-reads`` in their environment, the nodes answer *consistent* reads
from their local store without being master (``parakoon_node.runtime.service``). Followers learn
that a slot is chosen only when the next message from the master arrives, so right after a write is
acknowledged a follower still holds the value before it. Clients that write through the master and
read with Consistent from every node therefore see values older than writes that were already
acknowledged: a stale read, which ``lincheck`` must report as a violation.

The control runs the same workload on a correct cluster and must come out linearizable, so the
violation is the sabotage's doing and not the workload's or the checker's.
"""

from __future__ import annotations

import os
import random
from typing import Any

import pytest

from .lincheck import OpKind, Outcome, Verdict, check_history
from .seeds import seeded
from .workload import Cluster, WorkloadConfig, WorkloadResult, cluster_id_of, run_clients

LEASE = 1.0
#: Rounds of load before giving up on seeing a violation, and the length of each.
ROUNDS_MAX = 4
ROUND_SECS = 4.0
WORKLOAD = WorkloadConfig(clients=4, keys=3, key_window_secs=60.0)


def load(cluster: Cluster, seed: int) -> WorkloadResult:
    return run_clients(
        seed=seed,
        ports=cluster.client_ports,
        cluster_id=cluster_id_of(cluster),
        config=WORKLOAD,
        duration_secs=ROUND_SECS,
        read_target="any",
    )


def reads_served_off_master(result: WorkloadResult, master: str) -> int:
    return sum(
        1
        for op in result.ops
        if op.kind is OpKind.GET
        and op.outcome is Outcome.OK
        and not op.detail.endswith(f"on {master}")
    )


def test_stale_reads_sabotage_is_reported_as_a_violation(
    cluster_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    seed = seeded()
    rng = random.Random(seed)
    # ClusterProcs.start copies os.environ into each node process.
    monkeypatch.setenv("PARAKOON_TEST_FAULT", "stale-reads")
    cluster: Cluster = cluster_factory(lease_period_secs=LEASE)
    cluster.start_all()
    master = cluster.wait_master(timeout=30)
    verdicts = []
    for round_no in range(ROUNDS_MAX):
        result = load(cluster, rng.randrange(1 << 32))
        print(f"round {round_no}: {result.summary()}")
        # The sabotage must be live: nodes other than the master answered consistent reads.
        assert reads_served_off_master(result, master) > 0, result.summary()
        report = check_history(result.ops, time_budget_secs=30.0)
        verdicts.append(report.verdict)
        if report.verdict is Verdict.VIOLATION:
            print(report.describe())
            # The report must point at the cause: a read that returned an overwritten value.
            assert "NOT linearizable" in report.describe()
            assert "get(" in report.describe()
            return
    raise AssertionError(f"no violation found in {ROUNDS_MAX} rounds: {verdicts}")


def test_same_workload_on_a_correct_cluster_is_linearizable(cluster_factory: Any) -> None:
    seed = seeded()
    assert "PARAKOON_TEST_FAULT" not in os.environ
    cluster: Cluster = cluster_factory(lease_period_secs=LEASE)
    cluster.start_all()
    master = cluster.wait_master(timeout=30)
    result = load(cluster, seed)
    print(result.summary())
    # The reads sent to the other nodes were refused (had the master changed during the run,
    # reads from the new one would be right too, so the verdict below is the real check).
    refused = sum(s.causes.get("NOT_MASTER", 0) for s in result.stats)
    assert refused > 0, result.summary()
    print(f"consistent reads answered off {master}: {reads_served_off_master(result, master)}")
    assert sum(1 for op in result.ops if op.outcome is Outcome.OK) > 50, result.summary()
    report = check_history(result.ops, time_budget_secs=30.0)
    print(report.describe())
    assert report.verdict is Verdict.LINEARIZABLE, report.describe()
