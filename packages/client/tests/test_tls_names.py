"""Which node a certificate names, and the reasons a failed handshake is logged with."""

from __future__ import annotations

import socket
import ssl
import threading
from pathlib import Path
from typing import Any

import pytest
from parakoon_certs import CA

from parakoon_client.tls import (
    TlsFileError,
    cert_names,
    cert_problem,
    client_context,
    describe_handshake_error,
    server_context,
)

NODE_1 = {
    "subject": ((("commonName", "node_1"),), (("organizationName", "acme"),)),
    "subjectAltName": (("DNS", "node_1"), ("DNS", "n1.example"), ("IP Address", "10.0.0.1")),
}


def test_names_are_the_common_name_and_the_dns_alt_names() -> None:
    assert cert_names(NODE_1) == ["node_1", "n1.example"]
    assert cert_names({"subject": ((("commonName", "only_cn"),),)}) == ["only_cn"]
    assert cert_names({"subjectAltName": (("DNS", "only_san"),)}) == ["only_san"]
    assert cert_names({}) == []


def test_alt_names_replace_the_common_name() -> None:
    """RFC 6125: with DNS subjectAltNames the CN names nothing, so a certificate with CN=node_1
    and DNS=node_2 cannot pass as both nodes."""
    both = {"subject": ((("commonName", "node_1"),),), "subjectAltName": (("DNS", "node_2"),)}
    assert cert_names(both) == ["node_2"]
    assert cert_problem(both, "node_1") is not None
    assert cert_problem(both, "node_2") is None


def test_only_the_cluster_ca_is_trusted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Given a CA, a context trusts that CA alone, not the system store (here a second CA put
    in the store through SSL_CERT_FILE): a certificate a public or corporate CA issued for a
    node's name must not pass as that node."""
    ours = CA("ours", tmp_path / "ours")
    system = CA("system", tmp_path / "system")
    node = ours.issue("node_0")
    monkeypatch.setenv("SSL_CERT_FILE", str(system.cert_path))
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    for context in (
        client_context(ours.cert_path),
        client_context(ours.cert_path, node.cert, node.key),
        server_context(ours.cert_path, node.cert, node.key, require_client_cert=True),
    ):
        subjects = [_common_name(c) for c in context.get_ca_certs()]
        assert subjects == ["ours"], subjects
        assert context.options & ssl.OP_NO_RENEGOTIATION
    # Without a CA the dialling side falls back to the system store, as a browser would.
    fallback = client_context(None)
    assert "system" in [_common_name(c) for c in fallback.get_ca_certs()]


def _common_name(decoded: Any) -> str:
    for rdn in decoded["subject"]:
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return ""


def test_a_certificate_must_name_the_node() -> None:
    assert cert_problem(NODE_1, "node_1") is None
    assert cert_problem(NODE_1, "n1.example") is None
    problem = cert_problem(NODE_1, "node_2")
    assert problem is not None
    assert "'node_1'" in problem
    assert "node 'node_2'" in problem
    # An IP address SAN is not a node name.
    assert cert_problem(NODE_1, "10.0.0.1") is not None
    assert cert_problem({}, "node_1") == "presented no certificate"
    assert cert_problem(None, "node_1") == "presented no certificate"


def _handshake_error(server: ssl.SSLContext, client: ssl.SSLContext | None) -> BaseException:
    """The server side's exception of one real handshake over a socket pair."""
    a, b = socket.socketpair()
    a.settimeout(5)
    b.settimeout(5)
    caught: list[BaseException] = []

    def serve() -> None:
        try:
            with server.wrap_socket(a, server_side=True) as tls:
                tls.recv(1)
        except (OSError, ssl.SSLError) as exc:
            caught.append(exc)

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        if client is None:
            b.sendall(b"\xb1\xff\x00\x00" + b"\x00" * 40)  # the Arakoon prologue, in clear
        else:
            with client.wrap_socket(b) as tls:
                tls.sendall(b"x")
                tls.recv(1)
    except (OSError, ssl.SSLError):
        pass
    finally:
        b.close()
        thread.join(timeout=10)
    assert caught, "the handshake should have failed on the server"
    return caught[0]


def test_handshake_failures_are_described(tmp_path: Path) -> None:
    ca = CA("ca", tmp_path)
    node = ca.issue("node_0")
    server = server_context(ca.cert_path, node.cert, node.key, require_client_cert=True)
    assert "plain TCP" in describe_handshake_error(_handshake_error(server, None))
    no_cert = client_context(ca.cert_path)
    assert "no client certificate" in describe_handshake_error(_handshake_error(server, no_cert))
    expired = ca.issue("client", expired=True)
    old = client_context(ca.cert_path, expired.cert, expired.key)
    assert "expired" in describe_handshake_error(_handshake_error(server, old))
    assert describe_handshake_error(TimeoutError()) == "no TLS handshake in time"


def test_client_context_wants_both_certificate_and_key(tmp_path: Path) -> None:
    ca = CA("ca", tmp_path)
    one = ca.issue("c")
    with pytest.raises(TlsFileError, match="give both"):
        client_context(ca.cert_path, one.cert, None)
    with pytest.raises(TlsFileError, match="no such file"):
        client_context(tmp_path / "missing.pem")
    context = client_context(ca.cert_path, one.cert, one.key)
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert context.verify_mode == ssl.CERT_REQUIRED
