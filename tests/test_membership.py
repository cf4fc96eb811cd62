"""Online membership change on real processes (issue "Online membership change").

Each test starts its own cluster on free ports of 127.0.0.1 and changes its membership with
``parakoon member`` while it runs: a node is added as a learner, started with the lines the
command printed, promoted once it has caught up; any node can be removed, the master
included.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

from parakoon_client import codec
from parakoon_testing import free_ports, wait_until

from .conftest import ClusterProcs


def member(cluster: ClusterProcs, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """``parakoon member ...`` against ``cluster``'s file, as an operator runs it."""
    proc = subprocess.run(
        [sys.executable, "-m", "parakoon_node", "member", *args, "--config", str(cluster.config)],
        capture_output=True,
        text=True,
        timeout=90,
        cwd=cluster.config.parent,
    )
    if check:
        assert proc.returncode == 0, f"member {args}: rc {proc.returncode}\n{proc.stderr}\n{cluster.tail_logs()}"
    return proc


def members(cluster: ClusterProcs) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(member(cluster, "list", "--json").stdout)
    return out


def add_node(cluster: ClusterProcs, name: str) -> None:
    """``member add``, then append the printed lines to the file and start the node."""
    client, peer = free_ports(2)
    proc = member(
        cluster, "add", name, "--address", f"127.0.0.1:{peer}", "--client-port", str(client)
    )
    lines = proc.stdout[proc.stdout.index("[[nodes]]") :]
    assert f'name = "{name}"' in lines and "learner = true" in lines
    cluster.names.append(name)
    cluster.client_ports[name] = client
    cluster.peer_ports[name] = peer
    with open(cluster.config, "a") as f:
        f.write("\n" + lines)
    cluster.start(name)
    cluster.wait_ready(name, timeout=30)


def test_grow_a_cluster_by_one_voter(cluster_factory: Any) -> None:
    cluster = cluster_factory(nodes=3, lease_period_secs=1.0)
    cluster.start_all()
    master = cluster.wait_master()
    cluster.call(master, codec.Set(key=b"before", value=b"1"))
    add_node(cluster, "node_3")
    listed = members(cluster)
    assert listed["learners"] == ["node_3"] and len(listed["voters"]) == 3
    member(cluster, "promote", "node_3", "--wait", "60")
    listed = members(cluster)
    assert listed["voters"] == ["node_0", "node_1", "node_2", "node_3"]
    master = cluster.wait_master()
    cluster.call(master, codec.Set(key=b"after", value=b"2"))
    cluster.wait_same_store()
    assert cluster.store_of("node_3")[b"before"] == b"1"
