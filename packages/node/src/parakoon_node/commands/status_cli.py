"""``parakoon status --config FILE [--json] [--watch SECS]``: the cluster as its nodes see it.

Asks every node of the file, over its client port and in parallel, who it thinks is master,
its state (``current_state``), its applied slot (``get_txid``) and what it knows of its peers'
slots (``statistics``' ``node_is``). Prints one line per node, or with ``--json`` one object::

    {"cluster_id": ..., "master": "node_1" | null, "quorum": true,
     "nodes": [{"name", "client", "voter", "reachable", "error", "role", "state",
                "master_view", "applied", "lag", "peers": {name: slot}}]}

``master`` is set only when the node every reachable node names claims it itself and holds
its lease (``Stable_master``). ``role`` is master, follower, learner, candidate, catching-up,
rebuilding, founding, diverged or unreachable. ``lag`` is the master's applied slot minus the
node's (null without a master). Exit 0 when there is a master and a quorum of voters is
reachable, 1 otherwise, 2 for a bad configuration.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from parakoon_client import codec
from parakoon_node.commands.direct import DirectConnection
from parakoon_node.runtime.config import ClusterConfig, NodeConfig, load_config

__all__ = ["add_parser", "cluster_status"]

EXIT_OK = 0
EXIT_UNHEALTHY = 1

_ROLES = (
    ("Stable_master", "master"),
    ("Master_consensus", "master"),
    ("Slave_steady_state", "follower"),
    ("Slave_discovered_other_master", "catching-up"),
    ("Wait_for_promises", "candidate"),
    ("Rebuilding", "rebuilding"),
    ("Founding", "founding"),
    ("Diverged", "diverged"),
    ("Read_only", "read-only"),
)


def add_parser(commands: Any) -> None:
    status = commands.add_parser(
        "status",
        help="members, roles, master, applied slot and lag per node",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    status.add_argument("--config", default="cluster.toml", metavar="FILE")
    status.add_argument("--json", action="store_true", help="one JSON object")
    status.add_argument(
        "--watch", type=float, metavar="SECS", help="print again every SECS seconds until Ctrl-C"
    )
    status.add_argument(
        "--timeout", type=float, default=1.0, metavar="SECS", help="per node (default: 1)"
    )
    status.set_defaults(run=run)


def _ask(cluster: ClusterConfig, node: NodeConfig, timeout: float) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": node.name,
        "client": f"{node.client_host}:{node.client_port}",
        "voter": not node.learner,
        "reachable": False,
        "error": None,
        "role": "unreachable",
        "state": None,
        "master_view": None,
        "applied": None,
        "lag": None,
        "peers": {},
    }
    try:
        with DirectConnection(cluster, node, timeout=timeout) as conn:
            master = conn.call(codec.WhoMaster())
            state = conn.call(codec.CurrentState())
            txid = conn.call(codec.GetTxid())
            stats = conn.call(codec.Statistics())
    except OSError as exc:
        out["error"] = f"{exc.__class__.__name__}: {exc}"
        return out
    out["reachable"] = True
    out["master_view"] = master if isinstance(master, str) else None
    out["state"] = state if isinstance(state, str) else None
    if isinstance(txid, codec.AtLeast):
        out["applied"] = txid.stamp
    if isinstance(stats, codec.NamedList):
        report = codec.StatisticsReport.from_tree(stats)
        out["peers"] = dict(report.node_is)
    role = "follower"
    text = out["state"] or ""
    for prefix, name in _ROLES:
        if text.startswith(prefix):
            role = name
            break
    if role == "follower" and node.learner:
        role = "learner"
    out["role"] = role
    return out


def cluster_status(cluster: ClusterConfig, *, timeout: float = 1.0) -> dict[str, Any]:
    """Ask every node at once; the whole picture (see the module docstring)."""
    with ThreadPoolExecutor(max_workers=len(cluster.nodes)) as pool:
        nodes = list(pool.map(lambda n: _ask(cluster, n, timeout), cluster.nodes))
    views = {n["master_view"] for n in nodes if n["reachable"]}
    master: str | None = None
    if len(views) == 1:
        (view,) = views
        claimed = next((n for n in nodes if n["name"] == view), None)
        if claimed is not None and claimed["state"] == "Stable_master":
            master = view
    voters = [n for n in nodes if n["voter"]]
    reachable = sum(1 for n in voters if n["reachable"])
    if master is not None:
        top = next(n["applied"] for n in nodes if n["name"] == master)
        for n in nodes:
            if n["applied"] is not None and top is not None:
                n["lag"] = max(0, top - n["applied"])
    return {
        "cluster_id": cluster.cluster_id,
        "master": master,
        "quorum": reachable >= cluster.quorum,
        "nodes": nodes,
    }


def _lines(status: dict[str, Any]) -> list[str]:
    master = status["master"] or "none"
    quorum = "yes" if status["quorum"] else "NO"
    out = [f"cluster {status['cluster_id']}: master {master}, quorum of voters reachable: {quorum}"]
    for n in status["nodes"]:
        if not n["reachable"]:
            out.append(f"  {n['name']:<12} {n['client']:<21} unreachable: {n['error']}")
            continue
        lag = "" if n["lag"] is None else f" lag {n['lag']}"
        out.append(
            f"  {n['name']:<12} {n['client']:<21} {n['role']:<11} applied {n['applied']}{lag}"
            f"  (says master: {n['master_view'] or 'none'}; {n['state']})"
        )
    return out


def run(args: argparse.Namespace) -> int:
    cluster = load_config(args.config)
    while True:
        status = cluster_status(cluster, timeout=args.timeout)
        if args.json:
            print(json.dumps(status, sort_keys=True), flush=True)
        else:
            print("\n".join(_lines(status)), flush=True)
        healthy = status["master"] is not None and status["quorum"]
        if args.watch is None:
            return EXIT_OK if healthy else EXIT_UNHEALTHY
        try:
            time.sleep(args.watch)
        except KeyboardInterrupt:
            return EXIT_OK if healthy else EXIT_UNHEALTHY
        if not args.json:
            print(file=sys.stdout)
