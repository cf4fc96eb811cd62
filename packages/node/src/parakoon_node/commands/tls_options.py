"""The TLS options every client-side command takes, and the context they make.

A command reads ``cluster.toml`` like the node does; with ``[cluster] tls_service = true`` it
connects with TLS, trusting ``tls_ca_cert``. The certificate it presents (needed when
``tls_service_validate_peer = true``) comes from ``--tls-cert``/``--tls-key``; without them it
is the first node's ``tls_cert``/``tls_key`` this process can read, so that an operator on a
node's machine runs ``parakoon status`` or ``parakoon client`` with no extra option.
``--tls-ca-cert`` overrides the file's CA (a client that keeps its own copy).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import os
import ssl
from pathlib import Path

from parakoon_client.tls import TlsFileError, client_context
from parakoon_node.runtime.config import ClusterConfig, ConfigError, load_config

__all__ = ["add_tls_options", "client_ssl_context", "load_client_config", "resolve_client_cert"]


def add_tls_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("TLS (when the cluster has tls_service = true)")
    group.add_argument(
        "--tls-cert",
        metavar="FILE",
        help="the client certificate to present (default: the first node's tls_cert readable here)",
    )
    group.add_argument("--tls-key", metavar="FILE", help="the key of --tls-cert")
    group.add_argument(
        "--tls-ca-cert", metavar="FILE", help="the CA to trust (default: [cluster] tls_ca_cert)"
    )


def load_client_config(args: argparse.Namespace) -> ClusterConfig:
    """``load_config(args.config)`` with the TLS options of ``args`` applied."""
    cluster = load_config(args.config)
    cert = getattr(args, "tls_cert", None)
    key = getattr(args, "tls_key", None)
    ca = getattr(args, "tls_ca_cert", None)
    if (cert is None) != (key is None):
        raise ConfigError("--tls-cert and --tls-key go together: give both or neither")
    if cert is not None and key is not None:
        cluster = dataclasses.replace(
            cluster, client_tls_cert=Path(cert).absolute(), client_tls_key=Path(key).absolute()
        )
    if ca is not None:
        cluster = dataclasses.replace(cluster, tls_ca_cert=Path(ca).absolute())
    return cluster


def client_ssl_context(cluster: ClusterConfig) -> ssl.SSLContext | None:
    """The context to reach ``cluster``'s client ports with, or None when they are plain TCP.
    Raises :class:`ConfigError` naming an unusable file."""
    if not cluster.tls_service:
        return None
    cert, key = resolve_client_cert(cluster)
    return _context(cluster.tls_ca_cert, cert, key)


def resolve_client_cert(cluster: ClusterConfig) -> tuple[Path | None, Path | None]:
    """The certificate and key a client presents: the options', else (when the cluster
    requires one) the first node's this process can read, else none."""
    cert, key = cluster.client_tls_cert, cluster.client_tls_key
    if cert is None and cluster.tls_service_validate_peer:
        for node in cluster.nodes:
            if (
                node.tls_cert is not None
                and node.tls_key is not None
                and os.access(node.tls_cert, os.R_OK)
                and os.access(node.tls_key, os.R_OK)
            ):
                return node.tls_cert, node.tls_key
    return cert, key


@functools.lru_cache(maxsize=8)
def _context(ca: Path | None, cert: Path | None, key: Path | None) -> ssl.SSLContext:
    # Cached: `parakoon status` opens one connection per node, and loading a key is not free.
    try:
        return client_context(ca, cert, key)
    except TlsFileError as exc:
        raise ConfigError(f"client TLS: {exc}") from None
