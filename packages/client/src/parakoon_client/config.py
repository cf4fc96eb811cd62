"""Reading the client's view of a cluster from ``cluster.toml``.

The file format belongs to the node (docs/spec/architecture.md): ``[cluster] id`` and one
``[[nodes]]`` table per node with ``name``, ``addresses = ["host:port", ...]`` (node-to-node
messaging) and ``client_port``. A client connects to the host of ``addresses[0]`` on
``client_port``. Every other key is the node's business and is ignored here, so that the client
keeps working when the node grows new settings; the node itself validates the whole file.

TLS: ``[cluster] tls_service = true`` means the client port speaks TLS; the client then
verifies each node against ``[cluster] tls_ca_cert`` (a relative path is relative to the file's
folder). With ``tls_service_validate_peer = true`` the client must present a certificate signed
by that CA: the one given to :func:`client_ssl_context`, else the first node's ``tls_cert`` and
``tls_key`` this process can read (so the command line works as is on a node's machine).
"""

from __future__ import annotations

import os
import ssl
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from parakoon_client.tls import TlsFileError, client_context

Address = tuple[str, int]


class ConfigError(ValueError):
    """The cluster file is missing, unreadable or lacks what a client needs (names the key)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ClusterNodes:
    """The cluster id and the client address of every node, in the order of the file."""

    cluster_id: str
    nodes: Mapping[str, Address]
    # TLS, from [cluster] and the nodes' tls_cert/tls_key (absolute paths).
    tls_ca_cert: Path | None = None
    tls_service: bool = False
    tls_service_validate_peer: bool = False
    node_certs: tuple[tuple[Path, Path], ...] = field(default_factory=tuple)


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


def _path(value: object, base_dir: Path, *, where: str) -> Path:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where}: expected a file path, got {value!r}")
    path = Path(value).expanduser()
    return Path(os.path.normpath(path if path.is_absolute() else base_dir / path))


def nodes_from_toml(
    data: Mapping[str, Any], *, source: str = "cluster.toml", base_dir: Path | None = None
) -> ClusterNodes:
    """Extract the client's view from an already parsed ``cluster.toml`` document (relative
    paths are taken relative to ``base_dir``, default the current folder)."""
    base = Path.cwd() if base_dir is None else base_dir
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
    node_certs: list[tuple[Path, Path]] = []
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
        if entry.get("tls_cert") is not None and entry.get("tls_key") is not None:
            node_certs.append(
                (
                    _path(entry["tls_cert"], base, where=f"{where}.tls_cert"),
                    _path(entry["tls_key"], base, where=f"{where}.tls_key"),
                )
            )
    ca = cluster.get("tls_ca_cert")
    service = cluster.get("tls_service", False) is True
    if service and ca is None:
        raise ConfigError(f"{source}: [cluster] tls_service = true needs tls_ca_cert")
    return ClusterNodes(
        cluster_id=cluster_id,
        nodes=nodes,
        tls_ca_cert=None if ca is None else _path(ca, base, where=f"{source}: cluster.tls_ca_cert"),
        tls_service=service,
        tls_service_validate_peer=cluster.get("tls_service_validate_peer", False) is True,
        node_certs=tuple(node_certs),
    )


def client_ssl_context(
    view: ClusterNodes,
    *,
    cert: str | Path | None = None,
    key: str | Path | None = None,
    ca_cert: str | Path | None = None,
) -> ssl.SSLContext | None:
    """The context a client of ``view`` connects with, or None when its client port is plain.

    ``ca_cert`` overrides the file's ``tls_ca_cert``; ``cert`` and ``key`` (both or neither) are
    the certificate the client presents. Without them and with ``tls_service_validate_peer``,
    the first node certificate and key this process can read are used. Raises
    :class:`ConfigError` naming the file that is unusable.
    """
    if not view.tls_service:
        return None
    ca = Path(ca_cert) if ca_cert is not None else view.tls_ca_cert
    cert_path = None if cert is None else Path(cert)
    key_path = None if key is None else Path(key)
    if cert_path is None and key_path is None and view.tls_service_validate_peer:
        for node_cert, node_key in view.node_certs:
            if os.access(node_cert, os.R_OK) and os.access(node_key, os.R_OK):
                cert_path, key_path = node_cert, node_key
                break
    try:
        return client_context(ca, cert_path, key_path)
    except TlsFileError as exc:
        raise ConfigError(f"client TLS: {exc}") from None


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
    return nodes_from_toml(data, source=str(path), base_dir=path.absolute().parent)
