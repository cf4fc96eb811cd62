"""Every operator procedure of docs/operations.md, run with the commands as the document writes
them, under a write load, on real clusters.

The commands are read from the document itself (the ```sh blocks of each section), so a
procedure that changes in the document changes here, and one that stops working fails here.
``uv run --all-packages parakoon ARGS`` runs as ``python -m parakoon_node ARGS`` in the test
cluster's folder, which holds ``cluster.toml`` and ``data/node_N`` as the repository root does
for the README's cluster. Lines that start nodes (``parakoon node`` / ``parakoon cluster``) are
checked for the node they name and then done by the harness, which owns the processes.

After each procedure: every acknowledged write is read back from the master, and every node
ends with the same store.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from parakoon_testing import wait_until

from parakoon_client import codec

from .conftest import ClusterProcs

LEASE = 1.0
DOC = Path(__file__).resolve().parents[1] / "docs" / "operations.md"
PREFIX = "uv run --all-packages parakoon "
PREFERRED_NODE_0 = "\n".join(['master = "node_0"', "preferred = true"])


def doc_commands(heading: str) -> list[str]:
    """The command lines of the ```sh blocks under ``heading`` (up to the next heading of the
    same or a higher level), trailing ``# comments`` removed."""
    text = DOC.read_text(encoding="utf-8")
    marker = f"\n{heading}\n"
    assert marker in text, f"docs/operations.md has no section {heading!r}"
    level = len(heading.split(maxsplit=1)[0])
    rest = text[text.index(marker) + len(marker) :]
    end = re.search(rf"^#{{1,{level}}} ", rest, re.MULTILINE)
    body = rest[: end.start()] if end else rest
    lines: list[str] = []
    for block in re.findall(r"```sh\n(.*?)```", body, re.DOTALL):
        for line in block.splitlines():
            line = re.sub(r"\s+#.*$", "", line).strip()
            if line:
                lines.append(line)
    assert lines, f"no commands under {heading!r}"
    return lines


def run_doc_line(cluster: ClusterProcs, line: str, **swap: str) -> subprocess.CompletedProcess[str]:
    """Run one documented ``parakoon`` line in the cluster's folder (a pipe runs in a shell,
    with pipefail, so that the first command's status is seen)."""
    assert line.startswith(PREFIX), f"not a parakoon command line: {line!r}"
    for old, new in swap.items():
        line = line.replace(old, new)
    command = f"{shlex.quote(sys.executable)} -m parakoon_node {line[len(PREFIX) :]}"
    done = subprocess.run(
        ["bash", "-o", "pipefail", "-c", command],
        cwd=cluster.base,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    print(f"$ {line}\n{done.stdout}{done.stderr}exit {done.returncode}")
    return done


def node_line_names(line: str) -> str | None:
    """The node a documented ``parakoon node``/``cluster`` line starts (None: all of them)."""
    words = shlex.split(line[len(PREFIX) :])
    assert words[0] in ("node", "cluster"), line
    assert "--config" in words and words[words.index("--config") + 1] == "cluster.toml", line
    return words[words.index("--node") + 1] if words[0] == "node" else None


class Load:
    """Writes p000000, p000001, ... to whichever node is master, following hand-overs; keeps
    the acknowledged ones."""

    def __init__(self, cluster: ClusterProcs) -> None:
        self.cluster = cluster
        self.acked: dict[bytes, bytes] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        k = 0
        while not self.stop.is_set():
            master = next((n for n in self.cluster.names if self.cluster.who_master(n) == n), None)
            if master is None:
                time.sleep(0.05)
                continue
            try:
                with self.cluster.connect(master, timeout=3.0) as conn:
                    while not self.stop.is_set():
                        key, value = f"p{k:06d}".encode(), f"{k}".encode()
                        k += 1
                        if conn.call(codec.Set(key=key, value=value)) is not None:
                            break  # not master any more (the answer closes the connection)
                        self.acked[key] = value
                        time.sleep(0.002)
            except OSError:
                time.sleep(0.05)

    def __enter__(self) -> Load:
        self.thread.start()
        time.sleep(0.5)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=10)


def check_nothing_lost_and_replicas_equal(cluster: ClusterProcs, load: Load) -> None:
    assert len(load.acked) > 20, f"only {len(load.acked)} writes acknowledged"
    master = cluster.wait_master(timeout=30)
    data = cluster.store_of(master)
    lost = [k for k, v in load.acked.items() if data.get(k) != v]
    assert not lost, f"{len(lost)} acknowledged writes missing, e.g. {lost[:3]}"
    cluster.wait_same_store()
    print(f"{len(load.acked)} acknowledged writes all present; {len(cluster.names)} replicas equal")


@pytest.fixture
def cluster(cluster_factory: Any) -> ClusterProcs:
    made: ClusterProcs = cluster_factory(lease_period_secs=LEASE, cluster_extra=PREFERRED_NODE_0)
    made.start_all()
    wait_until(lambda: made.who_master("node_1") == "node_0", "node_0 is master", timeout=30)
    return made


def rebuilt(cluster: ClusterProcs, name: str) -> None:
    log = cluster.log_dir / f"{name}.log"
    wait_until(lambda: '"rebuild.done"' in log.read_text(), f"{name}: rebuild.done", timeout=30)


def test_replacing_a_failed_node(cluster: ClusterProcs) -> None:
    (line,) = doc_commands("## Replacing a failed node")
    name = node_line_names(line)
    assert name == "node_2"
    with Load(cluster) as load:
        cluster.kill(name)  # the machine is gone
        shutil.move(cluster.home(name), cluster.base / "lost")
        cluster.start(name)  # the documented line, with an empty home_dir
        rebuilt(cluster, name)
    check_nothing_lost_and_replicas_equal(cluster, load)


def test_wiping_and_reseeding_a_node(cluster: ClusterProcs) -> None:
    # The section is prose: stop the node, move its home_dir aside, start it empty.
    text = DOC.read_text(encoding="utf-8")
    assert "move its **whole** `home_dir` aside" in text
    with Load(cluster) as load:
        assert cluster.stop("node_1") == 0
        shutil.move(cluster.home("node_1"), cluster.base / "aside")
        cluster.start("node_1")
        rebuilt(cluster, "node_1")
    check_nothing_lost_and_replicas_equal(cluster, load)


def test_collapsing_the_log(cluster: ClusterProcs) -> None:
    (line,) = doc_commands("## Collapsing the log")
    with Load(cluster) as load:
        done = run_doc_line(cluster, line)
        assert done.returncode == 0
    assert list((cluster.home("node_1") / "wal").glob("head-*.snap"))
    check_nothing_lost_and_replicas_equal(cluster, load)


def test_moving_the_master_away(cluster: ClusterProcs) -> None:
    (line,) = doc_commands("## Moving the master away (drop-master)")
    assert "--node node_0" in line  # node_0 is the master here
    with Load(cluster) as load:
        done = run_doc_line(cluster, line)
        assert done.returncode == 0
        # Another node takes over (the preferred node_0 takes it back later).
        wait_until(
            lambda: cluster.who_master("node_1") not in (None, "node_0"),
            "another node became master",
            timeout=5 * LEASE,
            interval=0.05,
        )
    check_nothing_lost_and_replicas_equal(cluster, load)


def take_backup(cluster: ClusterProcs) -> Path:
    backup, verify = doc_commands("## Backup and restore")[:2]
    done = run_doc_line(cluster, backup)
    assert done.returncode == 0 and "verified" in done.stdout
    done = run_doc_line(cluster, verify)
    assert done.returncode == 0 and "OK" in done.stdout
    return cluster.base / "backup.pkb"


def test_backup_and_restoring_one_node(cluster: ClusterProcs) -> None:
    restore, start = doc_commands("### Restoring one node")
    assert node_line_names(start) == "node_2"
    with Load(cluster) as load:
        take_backup(cluster)
        cluster.stop("node_2")
        shutil.move(cluster.home("node_2"), cluster.base / "aside")
        done = run_doc_line(cluster, restore)
        assert done.returncode == 0
        cluster.start("node_2")
        rebuilt(cluster, "node_2")
    check_nothing_lost_and_replicas_equal(cluster, load)


def test_restoring_a_whole_cluster(cluster: ClusterProcs, cluster_factory: Any) -> None:
    restore, start = doc_commands("### Restoring a whole cluster")
    assert node_line_names(start) is None
    with Load(cluster) as load:
        time.sleep(0.5)
        before = dict(load.acked)  # acknowledged before the backup began: all in it
        take_backup(cluster)
    new: ClusterProcs = cluster_factory(lease_period_secs=LEASE, cluster_extra=PREFERRED_NODE_0)
    shutil.copyfile(cluster.base / "backup.pkb", new.base / "backup.pkb")
    done = run_doc_line(new, restore)
    assert done.returncode == 0
    new.start_all()
    master = new.wait_master(timeout=30)
    data = new.store_of(master)
    assert all(data.get(k) == v for k, v in before.items())
    assert all(k.startswith(b"p") and v == b"%d" % int(k[1:]) for k, v in data.items())
    new.wait_same_store()
    check_nothing_lost_and_replicas_equal(cluster, load)  # the old one is untouched


def flip_byte_in_a_record(home: Path) -> Path:
    segment = max((home / "wal").glob("*.wal"), key=lambda p: p.stat().st_size)
    data = bytearray(segment.read_bytes())
    data[len(data) // 2] ^= 0x01
    segment.write_bytes(bytes(data))
    return segment


def test_a_corrupt_wal(cluster: ClusterProcs) -> None:
    verify, dump = doc_commands("## A corrupt WAL")
    assert "data/node_1" in verify and "data/node_1" in dump
    with Load(cluster) as load:
        time.sleep(1.0)
        cluster.stop("node_1")
        segment = flip_byte_in_a_record(cluster.home("node_1"))
        done = run_doc_line(cluster, verify)
        assert done.returncode == 1 and str(segment.name) in done.stdout
        done = run_doc_line(cluster, dump)
        assert done.returncode == 1 and "error:" in done.stderr
        # Preference 1: re-seed the node.
        shutil.move(cluster.home("node_1"), cluster.base / "aside")
        cluster.start("node_1")
        rebuilt(cluster, "node_1")
    check_nothing_lost_and_replicas_equal(cluster, load)


def test_a_corrupt_snapshot(cluster: ClusterProcs) -> None:
    (verify,) = doc_commands("## A corrupt snapshot")
    example = re.search(r"data/node_1/wal/head-\d+\.snap", verify)
    assert example, verify
    with Load(cluster) as load:
        assert cluster.call("node_1", codec.CopyDbToHead(tlogs_to_keep=1)) is None
        cluster.stop("node_1")
        head = max((cluster.home("node_1") / "wal").glob("head-*.snap"))
        data = bytearray(head.read_bytes())
        data[len(data) // 2] ^= 0x01
        head.write_bytes(bytes(data))
        # The documented line names an example file; this node's has another slot.
        done = run_doc_line(cluster, verify, **{example.group(0): f"data/node_1/wal/{head.name}"})
        assert done.returncode == 1 and "at byte offset" in done.stderr
        cluster.start("node_1")
        wait_until(lambda: not cluster.running("node_1"), "node_1 refuses to start", timeout=20)
        log = (cluster.log_dir / "node_1.log").read_text()
        assert head.name in log and "at byte offset" in log
        shutil.move(cluster.home("node_1"), cluster.base / "aside")
        cluster.start("node_1")
        rebuilt(cluster, "node_1")
    check_nothing_lost_and_replicas_equal(cluster, load)


def test_more_nodes_lost_than_the_cluster_tolerates(cluster: ClusterProcs) -> None:
    (force,) = doc_commands("## More nodes lost than the cluster tolerates")
    assert "--node node_0" in force
    # Step 1 names its command inline, in backquotes.
    inline = re.search(
        r"`(uv run --all-packages parakoon wal dump data/node_0[^`]*)`", DOC.read_text()
    )
    assert inline, "step 1 of 'More nodes lost' no longer shows the wal dump command"
    dump = inline.group(1)
    with Load(cluster) as load:
        time.sleep(1.0)
        # Two of three disks are lost at once.
        for name in ("node_1", "node_2"):
            cluster.kill(name)
            shutil.move(cluster.home(name), cluster.base / f"lost-{name}")
    # 1. Stop every node; the survivor is node_0 (the master: it holds every acknowledged
    #    write, each made durable on it before the answer).
    assert cluster.stop("node_0") == 0
    done = run_doc_line(cluster, dump)
    assert done.returncode == 0 and done.stdout.strip()
    # 2. Make it the seed of a new history.
    done = run_doc_line(cluster, force)
    assert done.returncode == 0 and "seed of a new cluster history" in done.stdout
    # 3. The others' home_dirs are aside (lost); start every node.
    cluster.start_all()
    check_nothing_lost_and_replicas_equal(cluster, load)
