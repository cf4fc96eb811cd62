"""Single faults that once stopped a cluster, on real processes with the links cut for real.

Every peer link runs through a proxy (``links.py``) that can blackhole one direction, so a
one-way partition is exactly that: bytes from A to B vanish while B to A flows.

* **Deaf master**: every follower's messages to the master are lost, the master's to them still
  arrive. It used to keep its followers from ever running (no master for 29 of 30 s); now it
  steps down and the followers, whose lease views end, elect a new master within 2 L.
* **Returning follower**: a follower down for 2, 5 and 10 s comes back while writes run; it must
  never depose the healthy master (pre-vote; peer back-off capped well below the lease).
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from parakoon_testing import wait_until

from parakoon_client import codec

from .links import LinkedCluster

LEASE = 1.0


@pytest.fixture
def linked(tmp_path: Path, request: pytest.FixtureRequest) -> Any:
    cluster = LinkedCluster(tmp_path / "cluster", lease_period_secs=LEASE)
    yield cluster
    cluster.shutdown()
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        print(cluster.tail_logs(60))


def serving_master(cluster: LinkedCluster, names: list[str]) -> str | None:
    """A node among ``names`` that accepts a write right now."""
    for name in names:
        try:
            if (
                cluster.call(name, codec.Set(key=b"probe", value=name.encode()), timeout=1.0)
                is None
            ):
                return name
        except OSError:
            continue
    return None


def role_changes(cluster: LinkedCluster, name: str) -> list[dict[str, Any]]:
    path = cluster.log_dir / f"{name}.log"
    out = []
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("{") and '"role.changed"' in line:
            out.append(json.loads(line))
    return out


@pytest.mark.timeout(90)
def test_a_deaf_master_is_replaced_within_two_lease_periods(linked: LinkedCluster) -> None:
    cluster = linked
    cluster.start_all()
    m = cluster.wait_master(timeout=30)
    acked = {}
    for k in range(20):
        key, value = f"deaf{k}".encode(), f"{k}".encode()
        assert cluster.call(m, codec.Set(key=key, value=value)) is None
        acked[key] = value
    followers = [n for n in cluster.names if n != m]
    for f in followers:
        cluster.cut(f, m)  # the master can still talk, but hears nobody
    t0 = time.monotonic()
    new = wait_until(
        lambda: serving_master(cluster, followers),
        "a new master serves writes",
        timeout=10 * LEASE,
        interval=0.05,
    )
    took = time.monotonic() - t0
    print(f"deaf master {m}: {new} serves writes after {took:.2f} s (L = {LEASE} s)")
    # 2 L, plus the polling step, a write's round trip and scheduling on a loaded 2-core
    # machine (measured 2.02 s at L = 1 s on a quiet one).
    assert took <= 2 * LEASE + 1.0, f"took {took:.2f} s"
    # The deaf master no longer claims the lease; nothing acknowledged is lost.
    assert cluster.who_master(m) != m
    with cluster.connect(new) as conn:
        for key, value in acked.items():
            assert conn.call(codec.Get(key=key)) == value
    cluster.heal_links()
    master = cluster.wait_master(timeout=20)
    assert cluster.call(master, codec.Get(key=b"deaf19")) == b"19"


@pytest.mark.timeout(1200)
def test_a_returning_follower_never_deposes_the_master(linked: LinkedCluster) -> None:
    cluster = linked
    cluster.start_all()
    master = cluster.wait_master(timeout=30)
    errors: list[Any] = []
    acked: list[bytes] = []
    stop = threading.Event()

    def writer() -> None:
        k = 0
        with cluster.connect(master, timeout=5.0) as conn:
            while not stop.is_set():
                key = f"r{k:06d}".encode()
                result = conn.call(codec.Set(key=key, value=b"v"))
                if result is None:
                    acked.append(key)
                else:
                    errors.append(result)
                k += 1
                time.sleep(0.005)

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    before = len(role_changes(cluster, master))
    # CI: once each; PARAKOON_LONG=1: ten times each, as the issue asks.
    rounds = 10 if os.environ.get("PARAKOON_LONG") == "1" else 1
    for down in [d for d in (2.0, 5.0, 10.0) for _ in range(rounds)]:
        follower = next(n for n in cluster.names if n != master)
        cluster.kill(follower)
        time.sleep(down)
        cluster.start(follower)
        time.sleep(3 * LEASE)
        assert cluster.who_master(master) == master, f"master changed after {down} s down"
    stop.set()
    thread.join(timeout=10)
    changes = role_changes(cluster, master)[before:]
    print(f"{len(acked)} writes acknowledged, errors: {errors[:3]}, master role changes: {changes}")
    assert not changes, f"the master changed role: {changes}"
    assert not errors, f"the writer saw errors: {errors[:5]}"
    assert len(acked) > 100
    with cluster.connect(master) as conn:  # nothing acknowledged is lost
        for key in acked:
            assert conn.call(codec.Get(key=key)) == b"v", key


def test_an_idle_cluster_agrees_on_the_txid_at_once(linked: LinkedCluster) -> None:
    """Commit notices: right after the last write on an idle cluster, every node has applied
    it (GET_TXID equal on all three within 100 ms), instead of trailing by one slot until the
    next lease renewal."""
    cluster = linked
    cluster.start_all()
    master = cluster.wait_master(timeout=30)
    txids: dict[str, Any] = {}

    def agreed() -> bool:
        txids.update({n: cluster.call(n, codec.GetTxid()) for n in cluster.names})
        return len({str(t) for t in txids.values()}) == 1

    worst = 0.0
    for k in range(10):
        time.sleep(0.3 * LEASE)  # idle in between, at different points of the renewal cycle
        assert cluster.call(master, codec.Set(key=f"t{k}".encode(), value=b"v")) is None
        t0 = time.monotonic()
        wait_until(agreed, lambda: f"txids agreed: {txids}", timeout=2 * LEASE, interval=0.005)
        worst = max(worst, time.monotonic() - t0)
    print(f"every node's txid equal at most {worst * 1000:.0f} ms after the write")
    assert worst <= 0.1, f"{worst:.3f} s"
