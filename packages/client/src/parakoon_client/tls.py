"""TLS for the client port and the node-to-node links: contexts, node names, reasons.

A parakoon (or Arakoon) cluster with TLS identifies nodes by certificates signed by one CA. A
hostname check would be the wrong test: nodes are reached by address, and what matters is which
*node* answers. So the contexts built here verify the chain against the CA but leave
``check_hostname`` off, and the caller checks afterwards, with :func:`cert_problem`, that the
certificate names the node it expects: its subject's common name or one of its DNS
subjectAltNames equals the node name. A stolen certificate of one node then cannot be used to
pose as another.

Everything here is pure or builds a context from files; no I/O on sockets. Both sides (the
client library and the node) use it, so the node's checks and the client's agree.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

__all__ = [
    "MINIMUM_VERSION",
    "TlsFileError",
    "cert_names",
    "cert_problem",
    "client_context",
    "describe_handshake_error",
    "server_context",
]

# TLS 1.0 and 1.1 are deprecated (RFC 8996); Python's own default floor is 1.2 as well.
MINIMUM_VERSION: Final = ssl.TLSVersion.TLSv1_2


class TlsFileError(Exception):
    """A certificate, key or CA file could not be used. ``what`` names the file's role."""

    def __init__(self, what: str, path: Path, problem: str) -> None:
        super().__init__(f"{what} {str(path)!r}: {problem}")
        self.what = what
        self.path = path
        self.problem = problem


def _readable(what: str, path: Path) -> None:
    try:
        with path.open("rb") as handle:
            handle.read(1)
    except FileNotFoundError:
        raise TlsFileError(what, path, "no such file") from None
    except IsADirectoryError:
        raise TlsFileError(what, path, "is a folder, not a file") from None
    except OSError as exc:
        raise TlsFileError(what, path, f"cannot read: {exc.strerror or exc}") from None


def _load_ca(context: ssl.SSLContext, ca_cert: Path) -> None:
    _readable("CA certificate", ca_cert)
    try:
        context.load_verify_locations(cafile=str(ca_cert))
    except (ssl.SSLError, ValueError) as exc:
        raise TlsFileError("CA certificate", ca_cert, f"not a PEM certificate ({exc})") from None


def _load_chain(context: ssl.SSLContext, cert: Path, key: Path) -> None:
    _readable("certificate", cert)
    _readable("key", key)
    try:
        context.load_cert_chain(certfile=str(cert), keyfile=str(key))
    except ssl.SSLError as exc:
        reason = exc.reason or ""
        if "KEY_VALUES_MISMATCH" in reason or "KEY_VALUES_MISMATCH" in str(exc):
            raise TlsFileError(
                "certificate", cert, f"does not match its key {str(key)!r}"
            ) from None
        if "PEM" in reason or "NO_START_LINE" in str(exc):
            raise TlsFileError(
                "certificate", cert, f"or its key {str(key)!r} is not valid PEM ({exc})"
            ) from None
        raise TlsFileError("certificate", cert, f"cannot load with {str(key)!r}: {exc}") from None
    except OSError as exc:  # pragma: no cover (read above; a race with a rotation)
        raise TlsFileError("certificate", cert, f"cannot read: {exc.strerror or exc}") from None


def _base(purpose: ssl.Purpose) -> ssl.SSLContext:
    # Built by hand, not with ssl.create_default_context: that one also trusts every CA of the
    # system store, and then any certificate a public or corporate CA issued for a node's name
    # would pass as that node. Only the cluster's CA is loaded (client_context loads the system
    # store only when no CA is given).
    server = purpose is ssl.Purpose.CLIENT_AUTH
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if server else ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = MINIMUM_VERSION
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    # Identity is the node name in the certificate (cert_problem), not the address dialled.
    context.check_hostname = False
    return context


def server_context(
    ca_cert: Path, cert: Path, key: Path, *, require_client_cert: bool
) -> ssl.SSLContext:
    """The accepting side: presents ``cert``; with ``require_client_cert`` the peer must present
    a certificate signed by ``ca_cert`` (else it need not present one). Raises
    :class:`TlsFileError`."""
    context = _base(ssl.Purpose.CLIENT_AUTH)
    # No session tickets: nothing resumes sessions here, and a TLS 1.3 ticket arriving after
    # the handshake would make an idle client connection look readable (closed).
    context.num_tickets = 0
    _load_chain(context, cert, key)
    if require_client_cert:
        _load_ca(context, ca_cert)
        context.verify_mode = ssl.CERT_REQUIRED
    else:
        context.verify_mode = ssl.CERT_NONE
    return context


def client_context(
    ca_cert: Path | None, cert: Path | None = None, key: Path | None = None
) -> ssl.SSLContext:
    """The dialling side: verifies the server's chain against ``ca_cert`` and presents ``cert``
    and ``key`` when given (both or neither). ``ca_cert=None`` trusts the system's CAs.
    Raises :class:`TlsFileError`."""
    context = _base(ssl.Purpose.SERVER_AUTH)
    if ca_cert is not None:
        _load_ca(context, ca_cert)
    else:
        context.load_default_certs(ssl.Purpose.SERVER_AUTH)
    if (cert is None) != (key is None):
        given = cert if cert is not None else key
        assert given is not None
        raise TlsFileError(
            "certificate" if cert is not None else "key",
            given,
            "a client certificate needs its key and the key its certificate (give both)",
        )
    if cert is not None and key is not None:
        _load_chain(context, cert, key)
    context.verify_mode = ssl.CERT_REQUIRED
    return context


def cert_names(peercert: Mapping[str, Any]) -> list[str]:
    """The names a certificate (as ``SSLSocket.getpeercert()`` decodes it) gives its holder:
    its DNS subjectAltNames, or, when it has none, the subject's commonName(s); without repeats.
    As RFC 6125 says, a certificate with subjectAltNames is not also named by its CN: one with
    CN=node_1 and DNS=node_2 is node_2's only."""
    names = [str(v) for kind, v in peercert.get("subjectAltName", ()) if kind == "DNS"]
    if not names:
        for rdn in peercert.get("subject", ()):
            for attribute in rdn:
                if len(attribute) == 2 and attribute[0] == "commonName":
                    names.append(str(attribute[1]))
    return list(dict.fromkeys(names))


def cert_problem(peercert: Mapping[str, Any] | None, node: str) -> str | None:
    """Why the verified certificate ``peercert`` is not ``node``'s, or ``None`` if it names it."""
    if not peercert:
        return "presented no certificate"
    names = cert_names(peercert)
    if node in names:
        return None
    shown = ", ".join(repr(n) for n in names[:5]) or "no name"
    return f"certificate names {shown}, not node {node!r}"


def describe_handshake_error(exc: BaseException) -> str:
    """One line on why a TLS handshake failed, for logs: what the peer did wrong if we can tell.

    OpenSSL's reason codes are terse (``WRONG_VERSION_NUMBER``); the common cases get words.
    """
    cause: BaseException = exc
    # anyio wraps some failures (BrokenResourceError from an SSLError).
    while not isinstance(cause, ssl.SSLError) and cause.__cause__ is not None:
        cause = cause.__cause__
    if isinstance(cause, ssl.SSLCertVerificationError):
        return f"certificate rejected: {cause.verify_message} (verify code {cause.verify_code})"
    if isinstance(cause, ssl.SSLError):
        reason = cause.reason or ""
        text = str(cause)
        if reason in ("WRONG_VERSION_NUMBER", "HTTP_REQUEST", "UNEXPECTED_RECORD") or (
            "record layer failure" in text or "packet length too long" in text
        ):
            return f"not a TLS handshake: plain TCP to a TLS port? ({reason or text})"
        if isinstance(cause, ssl.SSLEOFError) or "UNEXPECTED_EOF" in reason:
            return "the connection closed during the TLS handshake"
        if reason == "TLSV13_ALERT_CERTIFICATE_REQUIRED":
            return "the node requires a client certificate (none presented)"
        if reason == "PEER_DID_NOT_RETURN_A_CERTIFICATE":
            return f"no client certificate presented ({reason})"
        if "CERTIFICATE_VERIFY_FAILED" in reason or "certificate verify failed" in text:
            return f"certificate rejected: {text}"
        if "EXPIRED" in reason:
            return f"certificate expired ({reason})"
        if reason.startswith(("SSLV3_ALERT", "TLSV1_ALERT", "TLSV13_ALERT")):
            return f"the other side refused our certificate or the handshake ({reason})"
        return f"TLS error: {reason or text}"
    if isinstance(exc, TimeoutError) or "handshake is taking longer" in str(exc):
        return "no TLS handshake in time"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
