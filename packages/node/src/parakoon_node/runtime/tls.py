"""The node's TLS contexts: built from the files of ``cluster.toml``, re-read when they change.

A node with ``[cluster] tls_ca_cert`` needs three contexts, all from the same three files (the
CA, its own certificate and its own key):

* ``peer_server``: accepts peer links; the peer must present a certificate signed by the CA;
* ``peer_client``: dials peers; presents our certificate and verifies theirs;
* ``client_service`` (with ``tls_service``): the client port; requires a client certificate
  signed by the CA only with ``tls_service_validate_peer``.

Which node a certificate belongs to is checked by the callers with
:func:`parakoon_client.tls.cert_problem` (its common name or a DNS subjectAltName must be the
node's name).

Rotation without a restart. :meth:`TlsContexts.current` is asked for the contexts on every new
connection; it compares the files' modification times and sizes with those of the last load
(three ``stat`` calls, no reading) and rebuilds when any changed. SIGHUP forces a rebuild
(:meth:`TlsContexts.reload`). A rebuild that fails (a half-copied key, a certificate that does
not match its key) keeps the contexts in use and logs why; connections already open keep the
session they negotiated. Each successful reload is logged with the files it read.
"""

from __future__ import annotations

import os
import ssl
import time
from dataclasses import dataclass
from pathlib import Path

import structlog

from parakoon_client.tls import TlsFileError, client_context, server_context

from .config import ClusterConfig, ConfigError, NodeConfig

__all__ = ["TlsContexts", "TlsSet", "check_tls_files", "tls_for_node"]

log = structlog.get_logger("parakoon.tls")


@dataclass(frozen=True, slots=True)
class TlsSet:
    """One consistent set of contexts, built from one reading of the files."""

    peer_server: ssl.SSLContext
    peer_client: ssl.SSLContext
    client_service: ssl.SSLContext | None


@dataclass(frozen=True, slots=True)
class _Files:
    ca_cert: Path
    cert: Path
    key: Path

    def stamp(self) -> tuple[tuple[int, ...], ...]:
        # The inode and ctime too: a file copied over with its mtime kept (cp -p, rsync -a,
        # install -p) and the same size is still seen (ctime changes on any write or rename).
        out: list[tuple[int, ...]] = []
        for path in (self.ca_cert, self.cert, self.key):
            try:
                st = os.stat(path)
                out.append((st.st_mtime_ns, st.st_size, st.st_ino, st.st_ctime_ns))
            except OSError:
                out.append((-1,))
        return tuple(out)


def check_validity(cert: Path, now: float | None = None) -> None:
    """Raise TlsFileError when the certificate ``cert`` is not valid at ``now`` (expired, or
    not yet valid): a node that presented it would be refused by every peer, and the log line
    would be theirs, not ours."""
    try:
        # The standard library's only way to read a certificate file's dates (CPython's own
        # tests use it); cryptography is a test dependency only. Absent: no check, see below.
        decoded = ssl._ssl._test_decode_cert(str(cert))  # type: ignore[attr-defined]  # noqa: SLF001
        not_before = ssl.cert_time_to_seconds(decoded["notBefore"])
        not_after = ssl.cert_time_to_seconds(decoded["notAfter"])
    except (AttributeError, KeyError, ValueError, ssl.SSLError, OSError):
        return  # unreadable dates: the chain load reports what is wrong with the file
    t = time.time() if now is None else now
    if t >= not_after:
        raise TlsFileError("certificate", cert, f"expired on {decoded['notAfter']}")
    if t < not_before:
        raise TlsFileError("certificate", cert, f"not valid before {decoded['notBefore']}")


def _build(files: _Files, *, service: bool, validate_clients: bool) -> TlsSet:
    check_validity(files.cert)
    peer_server = server_context(files.ca_cert, files.cert, files.key, require_client_cert=True)
    peer_client = client_context(files.ca_cert, files.cert, files.key)
    client_service = None
    if service:
        client_service = server_context(
            files.ca_cert, files.cert, files.key, require_client_cert=validate_clients
        )
    return TlsSet(peer_server, peer_client, client_service)


class TlsContexts:
    """The node's current :class:`TlsSet`, rebuilt when its files change (see module doc)."""

    def __init__(self, cluster: ClusterConfig, node: NodeConfig) -> None:
        assert cluster.tls_ca_cert is not None
        assert node.tls_cert is not None
        assert node.tls_key is not None
        self._files = _Files(cluster.tls_ca_cert, node.tls_cert, node.tls_key)
        self._service = cluster.tls_service
        self._validate = cluster.tls_service_validate_peer
        self._where = f"{node.source}: {node.key}"
        self._stamp = self._files.stamp()
        # The first load happens at start, where a failure stops the node (check_tls_files).
        self._set = _build(self._files, service=self._service, validate_clients=self._validate)
        # The stamp of a failed attempt: not retried on every connection until a file changes.
        self._failed_stamp: tuple[tuple[int, ...], ...] | None = None
        self.reloads = 0
        self.reload_failures = 0

    @property
    def service(self) -> bool:
        return self._service

    def current(self) -> TlsSet:
        """The contexts for a new connection; first re-read the files if they changed."""
        stamp = self._files.stamp()
        if stamp not in (self._stamp, self._failed_stamp):
            self._reload(stamp, why="files changed")
        return self._set

    def reload(self, why: str = "SIGHUP") -> bool:
        """Re-read the files now; keep the old contexts (and log why) if they are unusable."""
        return self._reload(self._files.stamp(), why=why)

    def _reload(self, stamp: tuple[tuple[int, ...], ...], *, why: str) -> bool:
        try:
            fresh = _build(self._files, service=self._service, validate_clients=self._validate)
        except TlsFileError as exc:
            self._failed_stamp = stamp
            self.reload_failures += 1
            log.error(
                "tls.reload_failed",
                trigger=why,
                error=f"{self._where}: {exc}",
                action="keeping the certificates loaded before",
            )
            return False
        self._set = fresh
        self._stamp = stamp
        self._failed_stamp = None
        self.reloads += 1
        log.info(
            "tls.reloaded",
            trigger=why,
            ca_cert=str(self._files.ca_cert),
            cert=str(self._files.cert),
            key=str(self._files.key),
        )
        return True


def _key_of(exc: TlsFileError, node: NodeConfig) -> str:
    if exc.what == "CA certificate":
        return "cluster.tls_ca_cert"
    if exc.what == "key":
        return f"{node.key}.tls_key"
    return f"{node.key}.tls_cert"


def check_tls_files(cluster: ClusterConfig, node: NodeConfig) -> None:
    """Build the node's contexts once; raise :class:`ConfigError` naming the key of the file
    that is unreadable, not a certificate, or a certificate that does not match its key."""
    if cluster.tls_ca_cert is None:
        return
    if node.tls_cert is None or node.tls_key is None:
        raise ConfigError(
            f"{node.source}: {node.key}.tls_cert: missing: cluster.tls_ca_cert turns TLS on,"
            f" so node {node.name!r} needs tls_cert and tls_key"
        )
    files = _Files(cluster.tls_ca_cert, node.tls_cert, node.tls_key)
    try:
        _build(files, service=True, validate_clients=True)
    except TlsFileError as exc:
        raise ConfigError(f"{node.source}: {_key_of(exc, node)}: {exc}") from None


def tls_for_node(cluster: ClusterConfig, node: NodeConfig) -> TlsContexts | None:
    """The node's reloading contexts, or None when ``tls_ca_cert`` is not set."""
    if cluster.tls_ca_cert is None:
        return None
    check_tls_files(cluster, node)  # the files' problems as ConfigError, naming the key
    try:
        return TlsContexts(cluster, node)
    except TlsFileError as exc:
        raise ConfigError(f"{node.source}: {_key_of(exc, node)}: {exc}") from None
