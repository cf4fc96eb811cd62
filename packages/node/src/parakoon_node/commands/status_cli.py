"""``parakoon status --config FILE [--json] [--watch SECS]``: the cluster as its nodes see it.

Asks every node of the file, in parallel, over two ports:

* its client port (the Arakoon protocol): who it thinks is master, its state
  (``current_state``), its applied slot (``get_txid``) and what it knows of its peers' slots
  (``statistics``' ``node_is``);
* its metrics port, when the file gives it one (``metrics_port``): the node's ``/status``
  document (``runtime/metrics.py``), for what the client protocol cannot say without changing
  its replies: the seconds left of the master's lease as the node sees it, the newest head
  snapshot's slot, what its write-ahead log takes on disk, its links to the other nodes
  (connected or not, seconds since each last spoke), and its identity, rebuild, divergence and
  disk state. A node without a metrics port has these fields null (``status_error`` says why),
  and the human output says so.

Prints two lines per node, or with ``--json`` one object::

    {"cluster_id": ..., "master": "node_1" | null, "quorum": true,
     "lease_remaining_secs": float | null,
     "nodes": [{"name", "client", "voter", "reachable", "error", "role", "state",
                "master_view", "applied", "lag", "peers": {name: slot},
                "metrics": "host:port" | null, "status_error",
                "lease_remaining_secs", "snapshot_slot", "wal_bytes", "wal_segments",
                "links": {name: {"address", "connected", "last_heard_secs"}},
                "identity", "rebuild_waiting_for", "diverged", "divergent_peers",
                "disk_stalled", "disk_low"}]}

``master`` is set only when a quorum of the voters names the same node and that node claims it
itself and holds its lease (``Stable_master``): a node that lost touch with the master and runs
for election does not hide it. The top-level ``lease_remaining_secs`` is then that master's own
view of its lease (null without a master, or when its ``/status`` could not be read). ``role``
is master, follower, learner, candidate, catching-up, rebuilding, founding, diverged or
unreachable. ``lag`` is the master's applied slot minus the node's (null without a master).
``reachable`` is whether this command reached the node's client port; ``links`` is the node's
own view of its peers (its outgoing connection to each, and how long since a message from each
arrived), so a node that others cannot reach shows up in their ``links`` even when this command
can reach it. Only a master and its followers exchange messages: between two followers
``last_heard_secs`` stays null or old, which is normal. ``wal_bytes`` counts the log segments as
stored on disk (archived ones compressed), not the head snapshot. Exit 0 when there is a master
and a quorum of voters is reachable, 1 otherwise, 2 for a bad configuration.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from parakoon_client import codec
from parakoon_node.commands.direct import DirectConnection
from parakoon_node.commands.member_cli import MemberError, ask
from parakoon_node.commands.member_cli import nodes_of as member_nodes
from parakoon_node.commands.tls_options import add_tls_options, load_client_config
from parakoon_node.runtime.config import ClusterConfig, NodeConfig

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
        help="members, roles, master and lease, applied slot and lag, WAL, snapshot, links",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    status.add_argument("--config", default="cluster.toml", metavar="FILE")
    add_tls_options(status)
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


#: The fields a node's ``/status`` document fills in (null without one).
_NODE_STATUS_FIELDS = (
    "lease_remaining_secs",
    "snapshot_slot",
    "wal_bytes",
    "wal_segments",
    "links",
    "identity",
    "rebuild_waiting_for",
    "diverged",
    "divergent_peers",
    "disk_stalled",
    "disk_low",
)


#: A master and its followers that have not heard from each other for this long are shown
#: as silent in the human output (leases are renewed well within a second by default).
_SILENT_SECS = 1.0


def _metrics_address(node: NodeConfig) -> str | None:
    """``host:port`` of the node's metrics port (on its ``metrics_address``), or None.

    A wildcard ``metrics_address`` listens on every interface: it is reached at the client host.
    A loopback one (the default) is reachable from the node's own machine only.
    """
    if node.metrics_port is None:
        return None
    host = node.metrics_address
    if host in ("0.0.0.0", "::", ""):
        host = node.client_host
    return f"[{host}]:{node.metrics_port}" if ":" in host else f"{host}:{node.metrics_port}"


def _node_status(node: NodeConfig, timeout: float) -> tuple[dict[str, Any] | None, str | None]:
    """The node's ``/status`` document and None, or None and why there is none."""
    address = _metrics_address(node)
    if address is None:
        return None, "no metrics_port in the configuration"
    try:
        with urllib.request.urlopen(f"http://{address}/status", timeout=timeout) as response:
            document = json.loads(response.read())
    except (OSError, ValueError) as exc:  # URLError and HTTPError are OSErrors
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        return None, f"http://{address}/status: {reason}"
    if not isinstance(document, dict) or document.get("node") != node.name:
        return None, f"{address}/status: not the status of {node.name}"
    return document, None


def _merge_node_status(
    out: dict[str, Any], document: dict[str, Any] | None, error: str | None
) -> None:
    out["status_error"] = error
    for key in _NODE_STATUS_FIELDS:
        out[key] = None
    if document is None:
        return
    wal = document.get("wal") or {}
    out.update(
        lease_remaining_secs=document.get("lease_remaining_secs"),
        snapshot_slot=document.get("snapshot_slot"),
        wal_bytes=wal.get("segment_bytes"),
        wal_segments=wal.get("segments"),
        links={
            name: {
                "address": link.get("address"),
                "connected": link.get("connected"),
                "last_heard_secs": link.get("last_heard_secs"),
            }
            for name, link in (document.get("peers") or {}).items()
        },
        identity=document.get("identity"),
        rebuild_waiting_for=document.get("rebuild_waiting_for"),
        diverged=document.get("diverged"),
        divergent_peers=document.get("divergent_peers"),
        disk_stalled=document.get("disk_stalled"),
        disk_low=document.get("disk_low"),
    )


def master_of(nodes: list[dict[str, Any]], quorum: int) -> str | None:
    """The node that a quorum of the reachable voters names as master and that claims it
    itself (``Stable_master``), or None.

    Not "the node every reachable node names": a follower cut off from the master runs for
    election (prevote keeps it from deposing anyone) and names nobody, and that must not hide a
    working master; its row shows its own view. Two nodes cannot both be named by a quorum.
    """
    named = Counter(
        n["master_view"]
        for n in nodes
        if n["reachable"] and n["voter"] and n["role"] != "removed" and n["master_view"]
    )
    for view, count in named.items():
        claimed = next((n for n in nodes if n["name"] == view), None)
        if count >= quorum and claimed is not None and claimed["state"] == "Stable_master":
            return str(view)
    return None


def cluster_status(cluster: ClusterConfig, *, timeout: float = 1.0) -> dict[str, Any]:
    """Ask every node at once, over both ports; the whole picture (see the module docstring).

    The nodes are the file's plus the members added at run time; with a replicated membership
    its voters and learners decide each node's ``voter`` flag, and a node of the file that it
    no longer lists shows as ``removed``.
    """
    listing: dict[str, Any] | None = None
    with contextlib.suppress(OSError, MemberError, ValueError, KeyError):
        listing = ask(cluster, {"op": "list"}, timeout=timeout)
    members = tuple(member_nodes(cluster, listing))
    with ThreadPoolExecutor(max_workers=2 * len(members)) as pool:
        asked = [pool.submit(_ask, cluster, n, timeout) for n in members]
        documents = [pool.submit(_node_status, n, timeout) for n in members]
        nodes = [future.result() for future in asked]
        for node, member, future in zip(nodes, members, documents, strict=True):
            node["metrics"] = _metrics_address(member)
            _merge_node_status(node, *future.result())
    quorum = cluster.quorum
    if listing is not None and listing.get("replicated"):
        voters_now = set(listing["voters"])
        everyone = voters_now | set(listing["learners"])
        quorum = len(voters_now) // 2 + 1
        for n in nodes:
            n["voter"] = n["name"] in voters_now
            if n["name"] not in everyone:
                n["role"] = "removed"
    master = master_of(nodes, quorum)
    voters = [n for n in nodes if n["voter"]]
    reachable = sum(1 for n in voters if n["reachable"])
    lease: float | None = None
    if master is not None:
        row = next(n for n in nodes if n["name"] == master)
        lease = row["lease_remaining_secs"]
        top = row["applied"]
        for n in nodes:
            if n["applied"] is not None and top is not None:
                n["lag"] = max(0, top - n["applied"])
    return {
        "cluster_id": cluster.cluster_id,
        "master": master,
        "quorum": reachable >= quorum,
        "lease_remaining_secs": lease,
        "nodes": nodes,
    }


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    value = n / 1024
    for unit in ("KiB", "MiB"):
        if value < 1024:
            return f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


def _detail(n: dict[str, Any]) -> str:
    """The second line of a node: what its ``/status`` said, or why nothing."""
    if n["status_error"] is not None:
        if n["metrics"] is None:
            return "no metrics_port: lease, WAL, snapshot and links unknown"
        return f"lease, WAL, snapshot and links unknown: {n['status_error']}"
    parts = []
    lease = n["lease_remaining_secs"]
    parts.append("no lease seen" if lease is None else f"lease {lease:.2f} s left")
    if n["wal_bytes"] is not None:
        parts.append(f"WAL {_size(n['wal_bytes'])} in {n['wal_segments']} segment(s)")
    snap = n["snapshot_slot"]
    parts.append("no snapshot" if snap is None else f"snapshot slot {snap}")
    if n["identity"] not in (None, "voter"):
        waiting = n["rebuild_waiting_for"] or []
        parts.append(n["identity"] + (f" (waiting for {', '.join(waiting)})" if waiting else ""))
    if n["diverged"] is not None:
        parts.append(f"DIVERGED: {n['diverged']}")
    if n["divergent_peers"]:
        parts.append(f"store differs from {', '.join(n['divergent_peers'])}")
    for key in ("disk_stalled", "disk_low"):
        if n[key] is not None:
            parts.append(f"disk: {n[key]}")
    links = []
    for name, link in sorted((n["links"] or {}).items()):
        state = "up" if link["connected"] else "DOWN"
        # Only a master and its followers talk (followers never write to each other): the
        # silence of a link is news only between a node and the master it names.
        heard = link["last_heard_secs"]
        if n["master_view"] in (n["name"], name) and (heard is None or heard >= _SILENT_SECS):
            state += ", never heard" if heard is None else f", silent {heard:.1f} s"
        links.append(f"{name} {state}")
    text = ", ".join(parts)
    return text + ("; links: " + "; ".join(links) if links else "")


def _lines(status: dict[str, Any]) -> list[str]:
    master = status["master"] or "none"
    lease = status["lease_remaining_secs"]
    if status["master"] is not None and lease is not None:
        master += f" (lease {lease:.2f} s left)"
    quorum = "yes" if status["quorum"] else "NO"
    out = [f"cluster {status['cluster_id']}: master {master}, quorum of voters reachable: {quorum}"]
    for n in status["nodes"]:
        if not n["reachable"]:
            out.append(f"  {n['name']:<12} {n['client']:<21} unreachable: {n['error']}")
        else:
            lag = "" if n["lag"] is None else f" lag {n['lag']}"
            out.append(
                f"  {n['name']:<12} {n['client']:<21} {n['role']:<11} applied {n['applied']}{lag}"
                f"  (says master: {n['master_view'] or 'none'}; {n['state']})"
            )
        out.append(f"  {'':<12} {_detail(n)}")
    return out


def run(args: argparse.Namespace) -> int:
    cluster = load_client_config(args)
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
