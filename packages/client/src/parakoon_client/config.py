"""Reading the client's view of a cluster from ``cluster.toml``.

The file format belongs to the node (docs/spec/architecture.md): ``[cluster] id`` and one
``[[nodes]]`` table per node with ``name``, ``addresses = ["host:port", ...]`` (node-to-node
messaging) and ``client_port``. A client connects to the host of ``addresses[0]`` on
``client_port``. Every other key is the node's business and is ignored here, so that the client
keeps working when the node grows new settings; the node itself validates the whole file.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

Address = tuple[str, int]


class ConfigError(ValueError):
    """The cluster file is missing, unreadable or lacks what a client needs (names the key)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ClusterNodes:
    """The cluster id and the client address of every node, in the order of the file."""

    cluster_id: str
    nodes: Mapping[str, Address]


def parse_host_port(text: str, *, where: str) -> Address:
    """Split ``"host:port"`` (``"[v6addr]:port"`` for IPv6); ``where`` names the key on error."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not host:
        raise ConfigError(f"{where}: expected 'host:port', got {text!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        port = int(port_text)
    except ValueError:
        raise ConfigError(f"{where}: port {port_text!r} is not a number") from None
    check_port(port, where=where)
    return host, port


def check_port(port: object, *, where: str) -> int:
    """Return ``port`` if it is an int in 1..65535, else raise naming ``where``."""
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise ConfigError(f"{where}: expected a port number 1..65535, got {port!r}")
    return port


def nodes_from_toml(data: Mapping[str, Any], *, source: str = "cluster.toml") -> ClusterNodes:
    """Extract the client's view from an already parsed ``cluster.toml`` document."""
    cluster = data.get("cluster")
    if not isinstance(cluster, Mapping):
        raise ConfigError(f"{source}: missing table [cluster]")
    cluster_id = cluster.get("id")
    if not isinstance(cluster_id, str) or not cluster_id:
        raise ConfigError(f"{source}: [cluster] id must be a non-empty string, got {cluster_id!r}")
    entries = data.get("nodes")
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"{source}: expected at least one [[nodes]] table")
    nodes: dict[str, Address] = {}
    for index, entry in enumerate(entries):
        where = f"{source}: nodes[{index}]"
        if not isinstance(entry, Mapping):
            raise ConfigError(f"{where}: expected a table")
        name = entry.get("name")
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{where}.name must be a non-empty string, got {name!r}")
        where = f"{source}: node {name!r}"
        if name in nodes:
            raise ConfigError(f"{where}: duplicate node name")
        addresses = entry.get("addresses")
        if not isinstance(addresses, list) or not addresses or not isinstance(addresses[0], str):
            raise ConfigError(f"{where}: addresses must be a non-empty list of 'host:port'")
        host, _messaging_port = parse_host_port(addresses[0], where=f"{where}.addresses[0]")
        client_port = check_port(entry.get("client_port"), where=f"{where}.client_port")
        nodes[name] = (host, client_port)
    return ClusterNodes(cluster_id=cluster_id, nodes=nodes)


def load_cluster_nodes(path: str | Path) -> ClusterNodes:
    """Read ``path`` (a ``cluster.toml``) and return the cluster id and client addresses."""
    path = Path(path)
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return nodes_from_toml(data, source=str(path))
