# spec: docs/spec/arakoon-client-protocol.md
"""Backup and restore on real clusters, with the documented commands (docs/operations.md).

* A backup taken from a follower while a writer runs restores, with ``--new-cluster``, into a
  new 3-node cluster that serves exactly the writes before the backup's slot: every key
  acknowledged before the backup started is there with its value, no key written after it
  finished is, and every key present is one the writer wrote; the other two nodes copy the
  seed; the old cluster is untouched and keeps serving.
* The same backup seeds one wiped node of the old cluster, which rejoins as rebuilding and ends
  with the store of the others.
* The admin commands of §8.7: GET_DB is refused by a master, OPT_DB/DEFRAG_DB/COPY_DB_TO_HEAD
  write a head snapshot on a follower, DROP_MASTER on a follower answers OK at once.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from parakoon_testing import wait_until

from parakoon_client import codec

from .conftest import CLUSTER_ID, ClusterProcs

LEASE = 1.0


def parakoon(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """Run the CLI as the docs do (``parakoon ...``), in a child process."""
    return subprocess.run(
        [sys.executable, "-m", "parakoon_node", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


class Writer:
    """Writes w000000, w000001, ... to the master; records when each began and whether it was
    acknowledged."""

    def __init__(self, cluster: ClusterProcs, master: str) -> None:
        self.cluster = cluster
        self.master = master
        self.began: dict[bytes, float] = {}
        self.acked: dict[bytes, bytes] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        k = 0
        with self.cluster.connect(self.master, timeout=5.0) as conn:
            while not self.stop.is_set():
                key, value = f"w{k:06d}".encode(), f"v{k}".encode()
                self.began[key] = time.monotonic()
                if conn.call(codec.Set(key=key, value=value)) is None:
                    self.acked[key] = value
                k += 1

    def __enter__(self) -> Writer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=10)


def test_a_backup_under_load_restores_into_a_new_cluster(
    cluster_factory: Any, tmp_path: Path
) -> None:
    old: ClusterProcs = cluster_factory(lease_period_secs=LEASE)
    old.start_all()
    master = old.wait_master()
    backup = tmp_path / "backup.pkb"
    with Writer(old, master) as writer:
        time.sleep(1.0)
        t_start = time.monotonic()
        done = parakoon("backup", "--config", str(old.config), str(backup))
        t_end = time.monotonic()
        time.sleep(0.5)
    print(done.stdout.strip())
    assert done.returncode == 0, done.stderr
    assert f"backup of cluster '{CLUSTER_ID}'" in done.stdout
    assert "verified" in done.stdout
    before = {k: v for k, v in writer.acked.items() if writer.began[k] < t_start}
    after = {k for k, t in writer.began.items() if t > t_end}
    assert len(before) > 50 and after, (len(before), len(after))

    new: ClusterProcs = cluster_factory(lease_period_secs=LEASE)
    restored = parakoon(
        "restore", "--config", str(new.config), "--node", "node_0", "--new-cluster", str(backup)
    )
    print(restored.stdout.strip())
    assert restored.returncode == 0, restored.stderr
    # The two empty nodes alone never form a cluster of their own.
    new.start("node_1")
    new.start("node_2")
    time.sleep(3 * LEASE)
    assert new.who_master("node_1") is None and new.who_master("node_2") is None
    new.start("node_0")
    new_master = new.wait_master(timeout=30)
    data = new.store_of(new_master)
    missing = [k for k in before if data.get(k) != before[k]]
    assert not missing, f"{len(missing)} keys acknowledged before the backup are missing"
    late = [k for k in data if k in after]
    assert not late, f"{len(late)} keys written after the backup are in it"
    strangers = [k for k in data if k not in writer.began]
    assert not strangers, strangers[:5]
    wrong = [k for k, v in data.items() if v != f"v{int(k[1:])}".encode()]
    assert not wrong, wrong[:5]
    print(f"restored {len(data)} keys; {len(before)} acknowledged before the backup started")
    new.wait_same_store(new.names)
    assert new.call(new_master, codec.Set(key=b"after-restore", value=b"1")) is None
    # The old cluster is untouched: same master, every acknowledged write, still writable.
    assert old.wait_master() == master
    old_data = old.store_of(master)
    assert all(old_data.get(k) == v for k, v in writer.acked.items())
    assert b"after-restore" not in old_data
    assert old.call(master, codec.Set(key=b"old-still-writes", value=b"1")) is None


def test_a_new_cluster_restored_from_a_backup_takes_its_members_from_its_file(
    cluster_factory: Any, tmp_path: Path
) -> None:
    """The backup of a cluster that removed a voter holds a 2-voter membership; restored onto
    three new nodes with --new-cluster, the file's three nodes are the members (the old
    membership names old nodes and addresses, which a new cluster may not have)."""
    old: ClusterProcs = cluster_factory(lease_period_secs=LEASE)
    old.start_all()
    master = old.wait_master()
    victim = next(n for n in old.names if n != master)
    removed = parakoon("member", "remove", victim, "--config", str(old.config))
    assert removed.returncode == 0, removed.stderr
    for k in range(20):
        assert old.call(master, codec.Set(key=b"m%02d" % k, value=b"1")) is None
    backup = tmp_path / "members.pkb"
    # Without --node: a follower that is still a member (the removed node answers too, with
    # the store it had when it left, and refuses to be backed up).
    done = parakoon("backup", "--config", str(old.config), str(backup))
    assert done.returncode == 0, done.stderr
    assert f"from {victim}" not in done.stdout, done.stdout
    refused = parakoon("backup", "--config", str(old.config), "--node", victim, str(backup) + "2")
    assert refused.returncode != 0 and "removed from the cluster" in refused.stderr, refused
    # force-new-cluster keeps the seed's log and so its membership: it says so.
    for name in old.names:
        old.stop(name)
    forced = parakoon("force-new-cluster", "--config", str(old.config), "--node", master)
    assert forced.returncode == 0, forced.stderr
    assert "replicated membership governs the new history" in forced.stdout, forced.stdout
    assert victim not in forced.stdout.split("voters ")[1].split(";")[0]

    new: ClusterProcs = cluster_factory(lease_period_secs=LEASE)
    restored = parakoon(
        "restore", "--config", str(new.config), "--node", "node_0", "--new-cluster", str(backup)
    )
    assert restored.returncode == 0, restored.stderr
    assert "not carried over" in restored.stdout, restored.stdout
    new.start_all()
    new_master = new.wait_master(timeout=30)
    listed = parakoon("member", "list", "--json", "--config", str(new.config))
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout)["voters"] == new.names, listed.stdout
    new.wait_same_store(new.names)
    assert new.store_of(new_master)[b"m19"] == b"1"


def test_a_wiped_node_restored_from_a_backup_rejoins_and_catches_up(
    cluster_factory: Any, tmp_path: Path
) -> None:
    cluster: ClusterProcs = cluster_factory(lease_period_secs=LEASE)
    cluster.start_all()
    master = cluster.wait_master()
    for k in range(200):
        assert cluster.call(master, codec.Set(key=b"a%03d" % k, value=b"1")) is None
    backup = tmp_path / "node.pkb"
    follower = next(n for n in cluster.names if n != master)
    done = parakoon("backup", "--config", str(cluster.config), "--node", follower, str(backup))
    assert done.returncode == 0, done.stderr
    with Writer(cluster, master) as writer:
        time.sleep(0.5)
        cluster.stop(follower)
        shutil.move(cluster.home(follower), cluster.base / "aside")
        restored = parakoon(
            "restore", "--config", str(cluster.config), "--node", follower, str(backup)
        )
        assert restored.returncode == 0, restored.stderr
        # A home_dir that is not empty is refused.
        again = parakoon(
            "restore", "--config", str(cluster.config), "--node", follower, str(backup)
        )
        assert again.returncode == 1 and "is not empty" in again.stderr, again.stderr
        cluster.start(follower)
        time.sleep(2.0)
    log = (cluster.log_dir / f"{follower}.log").read_text()
    assert "rebuilding" in log
    cluster.wait_same_store(cluster.names)
    data = cluster.store_of(follower)
    assert all(data.get(k) == v for k, v in writer.acked.items())
    assert cluster.wait_master() == master
    log_path = cluster.log_dir / f"{follower}.log"
    wait_until(lambda: '"rebuild.done"' in log_path.read_text(), "rebuild.done", timeout=20)


def test_admin_commands_of_the_protocol(cluster_factory: Any) -> None:
    cluster: ClusterProcs = cluster_factory(lease_period_secs=LEASE)
    cluster.start_all()
    master = cluster.wait_master()
    follower = next(n for n in cluster.names if n != master)
    assert cluster.call(master, codec.Set(key=b"k", value=b"v")) is None
    refused = cluster.call(master, codec.GetDb())
    assert isinstance(refused, codec.ErrorResponse)
    assert refused.code == codec.ErrorCode.NOT_SUPPORTED
    assert b"master" in refused.message
    for request in (codec.OptimizeDb(), codec.DefragDb(), codec.CopyDbToHead(tlogs_to_keep=1)):
        assert cluster.call(follower, request) is None
        assert isinstance(cluster.call(master, request), codec.ErrorResponse)
    heads = list((cluster.home(follower) / "wal").glob("head-*.snap"))
    assert heads, "no head snapshot written by COPY_DB_TO_HEAD / OPT_DB"
    bad = cluster.call(follower, codec.CopyDbToHead(tlogs_to_keep=0))
    assert isinstance(bad, codec.ErrorResponse) and bad.code == 0xFF
    db = cluster.call(follower, codec.GetDb(), timeout=10)
    assert isinstance(db, bytes) and db.startswith(b"PKBACKUP")
    # §8.7: DROP_MASTER on a node that is not master answers OK at once (admin scripts send
    # it to every node), and the master stays.
    with cluster.connect(follower) as conn:
        assert conn.call(codec.DropMaster()) is None
        assert conn.call(codec.WhoMaster()) == master


def test_a_head_snapshot_copied_off_a_node_seeds_a_new_cluster(
    cluster_factory: Any, tmp_path: Path
) -> None:
    """The operator's old way (copy a node's head snapshot) also restores, as a new history:
    a head snapshot does not say which history it belongs to, so rejoining is refused."""
    old: ClusterProcs = cluster_factory(lease_period_secs=LEASE)
    old.start_all()
    master = old.wait_master()
    for k in range(100):
        assert old.call(master, codec.Set(key=b"h%03d" % k, value=b"%d" % k)) is None
    follower = next(n for n in old.names if n != master)
    assert old.call(follower, codec.CopyDbToHead(tlogs_to_keep=1)) is None
    head = max((old.home(follower) / "wal").glob("head-*.snap"))
    copy = tmp_path / head.name
    shutil.copyfile(head, copy)
    new: ClusterProcs = cluster_factory(lease_period_secs=LEASE)
    rejoin = parakoon("restore", "--config", str(new.config), "--node", "node_0", str(copy))
    assert rejoin.returncode == 1 and "--new-cluster" in rejoin.stderr, rejoin.stderr
    seeded = parakoon(
        "restore", "--config", str(new.config), "--node", "node_0", "--new-cluster", str(copy)
    )
    assert seeded.returncode == 0, seeded.stderr
    new.start_all()
    new_master = new.wait_master(timeout=30)
    data = new.store_of(new_master)
    assert all(data.get(b"h%03d" % k) == b"%d" % k for k in range(100))
    new.wait_same_store(new.names)
