"""A 3-node cluster with TLS on both ports (issue 16), real certificates, real TCP, real processes.

One cluster serves the whole module (starting one costs seconds and CI's budget is tight); the
tests run in file order and each leaves the cluster running with every node up. What is checked:

* it elects, replicates, fails over and catches up, and the blocking client, the async client
  and the command line (``client``, ``status``) work against it;
* refused, each with a log line that names the reason, and without harm to the node: plain TCP
  on the client and the peer port, a client without a certificate, a client or a peer with a
  certificate of another CA, an expired certificate, a peer presenting another node's
  certificate, a client that connects and sends nothing (let go after the handshake bound);
* rotating the node certificates one node at a time (new files, SIGHUP) keeps the cluster
  available, and a broken new certificate keeps the old one in use.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from parakoon_certs import CA, Issued
from parakoon_testing import free_ports, wait_until

from parakoon_client import Client, codec
from parakoon_client.aio import AsyncClient
from parakoon_client.errors import ArakoonError, ArakoonNotConnected
from parakoon_client.tls import client_context
from parakoon_node.runtime.framing import encode_frame

from .conftest import CLUSTER_ID, ClusterProcs

PROLOGUE_TIMEOUT_SECS = 1.0


class TlsCluster(ClusterProcs):
    """``ClusterProcs`` whose file turns TLS on and whose own probes speak TLS."""

    def __init__(self, base: Path) -> None:
        self.ca = CA("parakoon-test-ca", base / "certs")
        self.certs: dict[str, Issued] = {}
        self.client_cert = self.ca.issue("operator")
        self.context = client_context(
            self.ca.cert_path, self.client_cert.cert, self.client_cert.key
        )
        for k in range(3):
            self.certs[f"node_{k}"] = self.ca.issue(f"node_{k}")
        extra = "\n".join(
            [
                'tls_ca_cert = "certs/parakoon-test-ca.pem"',
                "tls_service = true",
                "tls_service_validate_peer = true",
                f"client_prologue_timeout_secs = {PROLOGUE_TIMEOUT_SECS}",
            ]
        )
        super().__init__(
            base, nodes=3, lease_period_secs=1.0, cluster_extra=extra, metrics=True, redis=True
        )

    def write_config(self, *, lease_period_secs: float, fsync: bool, extra: str) -> None:
        super().write_config(lease_period_secs=lease_period_secs, fsync=fsync, extra=extra)
        text = self.config.read_text()
        for name in self.names:
            # Relative to the file's folder, like home_dir.
            anchor = f'name = "{name}"\n'
            text = text.replace(
                anchor, anchor + f'tls_cert = "certs/{name}.pem"\ntls_key = "certs/{name}.key"\n'
            )
        self.config.write_text(text)

    def client(self, **kwargs: Any) -> Client:
        nodes = {n: ("127.0.0.1", p) for n, p in self.client_ports.items()}
        kwargs.setdefault("timeout_secs", 2.0)
        kwargs.setdefault("retry_secs", 15.0)
        return Client(CLUSTER_ID, nodes, ssl_context=self.context, **kwargs)

    def call(self, name: str, request: Any, timeout: float = 5.0) -> Any:
        """One request over a TLS connection to ``name`` only (OSError if it cannot)."""
        client = self.client(timeout_secs=timeout, retry_secs=0)
        try:
            return client.call(request, node=name)
        except ArakoonNotConnected as exc:
            raise ConnectionError(str(exc)) from None
        except ArakoonError as exc:
            return exc
        finally:
            client.close()

    def wait_ready(self, name: str, timeout: float = 20.0) -> None:
        def serving() -> bool:
            try:
                self.call(name, codec.WhoMaster(), timeout=1.0)
            except OSError:
                if not self.running(name):
                    raise AssertionError(f"{name} exited\n{self.tail_logs()}") from None
                return False
            return True

        wait_until(serving, lambda: f"{name} serving\n{self.tail_logs()}", timeout=timeout)

    def _serves(self, name: str) -> bool:
        return self.call(name, codec.Exists(key=b"?"), timeout=2.0) in (True, False)

    def who_master(self, name: str) -> str | None:
        try:
            result = self.call(name, codec.WhoMaster(), timeout=2.0)
        except OSError:
            return None
        return result if isinstance(result, str) else None

    def store_of(self, name: str) -> dict[bytes, bytes]:
        request = codec.RangeEntries(consistency=codec.NO_GUARANTEES, max_keys=-1)
        return dict(self.call(name, request, timeout=10))

    def log_lines(self, name: str) -> list[dict[str, Any]]:
        out = []
        for line in (self.log_dir / f"{name}.log").read_text(errors="replace").splitlines():
            if line.startswith("{"):
                out.append(json.loads(line))
        return out

    def wait_log(self, name: str, event: str, contains: str, since: int = 0) -> dict[str, Any]:
        """The first JSON log line of ``name`` after line ``since`` with ``event`` whose text
        contains ``contains``."""

        def found() -> dict[str, Any] | None:
            for line in self.log_lines(name)[since:]:
                if line.get("event") == event and contains in json.dumps(line):
                    return line
            return None

        return wait_until(
            found, lambda: f"{event} with {contains!r} in {name}'s log\n{self.tail_logs(15)}",
            timeout=10,
        )  # fmt: skip

    def mark(self, name: str) -> int:
        return len(self.log_lines(name))


@pytest.fixture(scope="module")
def tls_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsCluster]:
    cluster = TlsCluster(tmp_path_factory.mktemp("tls"))
    cluster.start_all()
    try:
        cluster.wait_master(timeout=30)
        yield cluster
    finally:
        cluster.shutdown()


def _cli(cluster: TlsCluster, command: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "parakoon_node", command, "--config", str(cluster.config), *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cluster.base,
    )


def test_tls_cluster_serves_the_clients_and_the_command_line(tls_cluster: TlsCluster) -> None:
    cluster = tls_cluster
    with cluster.client() as client:
        client.set(b"greeting", b"hello over tls")
        assert client.get(b"greeting") == b"hello over tls"
    cluster.wait_same_store()

    async def via_async() -> bytes:
        async with AsyncClient.from_config(
            cluster.config,
            tls_cert=cluster.client_cert.cert,
            tls_key=cluster.client_cert.key,
            timeout_secs=2.0,
        ) as client:
            await client.set(b"async", b"yes")
            return await client.get(b"greeting")

    assert anyio.run(via_async) == b"hello over tls"

    # The command line: with the operator's certificate, and (on a node's machine) with none:
    # it then presents the first node certificate it can read.
    cert = ["--tls-cert", str(cluster.client_cert.cert), "--tls-key", str(cluster.client_cert.key)]
    done = _cli(cluster, "client", *cert, "set", "cli-key", "cli-value")
    assert done.returncode == 0, done.stderr
    done = _cli(cluster, "client", "get", "cli-key")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "cli-value"
    done = _cli(cluster, "status", "--json")
    assert done.returncode == 0, done.stderr + done.stdout
    status = json.loads(done.stdout)
    assert status["master"] in cluster.names, status
    # A CA that signed none of the nodes: the command says why it cannot connect.
    other = CA("elsewhere", cluster.base / "other-ca")
    done = _cli(
        cluster, "client", "--retry", "0.5", "--tls-ca-cert", str(other.cert_path), "get", "cli-key"
    )
    assert done.returncode != 0
    assert "certificate" in done.stderr, done.stderr


def _tls_socket(port: int, context: ssl.SSLContext) -> ssl.SSLSocket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    return context.wrap_socket(sock)


def _closed_by_server(sock: socket.socket) -> bool:
    """Whether the server ends the connection (EOF, reset or a TLS alert) within 5 s."""
    try:
        sock.settimeout(5)
        sock.sendall(codec.encode_prologue(CLUSTER_ID) + codec.encode_request(codec.WhoMaster()))
        return sock.recv(100) == b""
    except (ssl.SSLError, ConnectionError):
        return True
    finally:
        sock.close()


def _raw_client(cert: Issued | None, ca: Path) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.load_verify_locations(cafile=str(ca))
    if cert is not None:
        context.load_cert_chain(str(cert.cert), str(cert.key))
    return context


def test_bad_clients_are_refused_with_the_reason(tls_cluster: TlsCluster) -> None:
    cluster = tls_cluster
    node = "node_0"
    port = cluster.client_ports[node]
    ca = cluster.ca.cert_path
    other_ca = CA("other-ca", cluster.base / "other")
    foreign = other_ca.issue("operator")
    expired = cluster.ca.issue("operator", file_stem="expired-operator", expired=True)

    since = cluster.mark(node)
    # Plain TCP to the TLS port: the Arakoon prologue is not a TLS ClientHello.
    with socket.create_connection(("127.0.0.1", port), timeout=5) as plain:
        assert _closed_by_server(plain)
    cluster.wait_log(node, "client.tls_refused", "plain TCP", since)

    cases = [
        (None, "no client certificate"),
        (foreign, "certificate rejected"),
        (expired, "expired"),
    ]
    for cert, reason in cases:
        since = cluster.mark(node)
        assert _closed_by_server(_tls_socket(port, _raw_client(cert, ca)))
        line = cluster.wait_log(node, "client.tls_refused", reason, since)
        assert line["peer"].startswith("127.0.0.1:"), line

    # The client library without a certificate: the node's alert tells it why.
    bare = Client(
        CLUSTER_ID,
        {node: ("127.0.0.1", port)},
        ssl_context=client_context(ca),
        timeout_secs=2.0,
        retry_secs=0,
    )
    with pytest.raises(ArakoonNotConnected, match="CERTIFICATE_REQUIRED"):
        bare.who_master()
    bare.close()

    # A client that connects and never starts the handshake is let go after the bound.
    since = cluster.mark(node)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as silent:
        started = time.monotonic()
        silent.settimeout(PROLOGUE_TIMEOUT_SECS + 4)
        assert silent.recv(10) == b""
        assert time.monotonic() - started < PROLOGUE_TIMEOUT_SECS + 3
    cluster.wait_log(node, "client.tls_refused", "in time", since)

    # None of it harmed the node: it still serves a proper client.
    assert cluster.call(node, codec.WhoMaster()) in cluster.names


def test_the_redis_port_speaks_tls_too(tls_cluster: TlsCluster) -> None:
    """With tls_service on, the Redis port is no way around the certificates: redis-py with the
    CA and a client certificate works; plain RESP and TLS without a certificate are refused."""
    import redis

    cluster = tls_cluster
    master = cluster.wait_master()
    port = cluster.redis_ports[master]
    mark = cluster.mark(master)
    r = redis.Redis(
        host="127.0.0.1",
        port=port,
        ssl=True,
        ssl_ca_certs=str(cluster.ca.cert_path),
        ssl_certfile=str(cluster.client_cert.cert),
        ssl_keyfile=str(cluster.client_cert.key),
        ssl_check_hostname=False,
        socket_timeout=10,
    )
    try:
        assert r.set("tls-redis", "1") is True
        assert r.get("tls-redis") == b"1"
    finally:
        r.close()
    # Plain RESP: the server waits for a ClientHello, gets garbage, and closes.
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"*1\r\n$4\r\nPING\r\n")
        try:
            answer = sock.recv(100)
        except ConnectionError:
            answer = b""
        assert b"PONG" not in answer
    cluster.wait_log(master, "client.tls_refused", "", since=mark)
    no_cert = _raw_client(None, cluster.ca.cert_path)
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        sock = _tls_socket(port, no_cert)
        try:
            sock.sendall(b"*1\r\n$4\r\nPING\r\n")
            if not sock.recv(100):
                raise ConnectionError("closed")
        finally:
            sock.close()


def _hello(claimed: str) -> bytes:
    return encode_frame(["hello", 2, CLUSTER_ID, claimed, "msg", None])


def test_bad_peers_are_refused_with_the_reason(tls_cluster: TlsCluster) -> None:
    cluster = tls_cluster
    target = "node_0"
    peer_port = cluster.peer_ports[target]
    ca = cluster.ca.cert_path
    other_ca = CA("rogue-ca", cluster.base / "rogue")
    rogue_node_1 = other_ca.issue("node_1")
    expired_node_1 = cluster.ca.issue("node_1", file_stem="expired-node_1", expired=True)

    since = cluster.mark(target)
    with socket.create_connection(("127.0.0.1", peer_port), timeout=5) as plain:
        plain.sendall(_hello("node_1"))
        plain.settimeout(5)
        assert plain.recv(100) == b""
    cluster.wait_log(target, "peer.tls_refused", "plain TCP", since)

    for cert, reason in [(rogue_node_1, "certificate rejected"), (expired_node_1, "expired")]:
        since = cluster.mark(target)
        with (
            _tls_socket(peer_port, _raw_client(cert, ca)) as sock,
            pytest.raises((ssl.SSLError, ConnectionError)),
        ):
            sock.sendall(_hello("node_1"))
            if sock.recv(100) == b"":
                raise ConnectionError("closed")
        cluster.wait_log(target, "peer.tls_refused", reason, since)

    # node_1's real certificate, stolen, used to pose as node_2.
    since = cluster.mark(target)
    with _tls_socket(peer_port, _raw_client(cluster.certs["node_1"], ca)) as sock:
        sock.sendall(_hello("node_2"))
        sock.settimeout(5)
        answer = sock.recv(1000)
        assert b"refused" in answer, answer
    line = cluster.wait_log(target, "peer.refused_incoming", "claims to be 'node_2'", since)
    assert "node_1" in line["reason"], line

    # The links among the real nodes are unharmed: a write still reaches every node.
    with cluster.client() as client:
        client.set(b"after-bad-peers", b"ok")
    cluster.wait_same_store()


def test_failover_and_catch_up_over_tls(tls_cluster: TlsCluster) -> None:
    cluster = tls_cluster
    master = cluster.wait_master()
    cluster.kill(master)
    others = [n for n in cluster.names if n != master]
    new_master = cluster.wait_master(among=others, timeout=30)
    assert new_master != master
    with cluster.client() as client:
        for k in range(50):
            client.set(f"during-{k}".encode(), b"x")
    cluster.start(master)
    cluster.wait_ready(master)
    cluster.wait_same_store(timeout=30)
    assert cluster.store_of(master)[b"during-49"] == b"x"


def _presented_serial(cluster: TlsCluster, name: str) -> int:
    from cryptography import x509

    with _tls_socket(cluster.client_ports[name], cluster.context) as sock:
        der = sock.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


def test_rotating_node_certificates_keeps_the_cluster_available(tls_cluster: TlsCluster) -> None:
    cluster = tls_cluster
    cluster.wait_master()
    failures: list[str] = []
    writes = [0]
    stop = threading.Event()

    def writer() -> None:
        with cluster.client(retry_secs=5.0) as client:
            while not stop.is_set():
                try:
                    client.set(f"rot-{writes[0]}".encode(), b"v")
                    writes[0] += 1
                except ArakoonError as exc:
                    failures.append(repr(exc))
                time.sleep(0.01)

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    try:
        # A broken new certificate (the key of another) keeps the old one in use.
        node = "node_0"
        before = _presented_serial(cluster, node)
        good_key = cluster.certs[node].key.read_bytes()
        cluster.certs[node].key.write_bytes(cluster.certs["node_1"].key.read_bytes())
        since = cluster.mark(node)
        cluster.procs[node].send_signal(signal.SIGHUP)
        cluster.wait_log(node, "tls.reload_failed", "does not match its key", since)
        assert _presented_serial(cluster, node) == before
        cluster.certs[node].key.write_bytes(good_key)

        for name in cluster.names:
            old = _presented_serial(cluster, name)
            fresh = cluster.ca.issue(name)
            since = cluster.mark(name)
            cluster.procs[name].send_signal(signal.SIGHUP)
            cluster.wait_log(name, "tls.reloaded", "SIGHUP", since)
            assert _presented_serial(cluster, name) == fresh.serial != old
            cluster.certs[name] = fresh
            time.sleep(0.3)
        # New peer links use the new certificates: restart one node, it rejoins.
        victim = cluster.names[1]
        cluster.stop(victim)
        cluster.start(victim)
        cluster.wait_ready(victim)
    finally:
        stop.set()
        thread.join(timeout=30)
    assert not failures, failures
    assert writes[0] > 20
    cluster.wait_same_store(timeout=30)


def test_a_node_joins_a_tls_cluster(tls_cluster: TlsCluster) -> None:
    """``parakoon join`` with the CA and the new node's certificate: it asks a member over TLS,
    is added as a learner, writes its file with the TLS keys and catches up over TLS links."""
    cluster = tls_cluster
    master = cluster.wait_master()
    with cluster.client() as client:
        client.set(b"before-join", b"yes")
    joiner = cluster.ca.issue("node_3")
    client_port, peer_port = free_ports(2)
    own = cluster.base / "node_3.toml"
    log = open(cluster.log_dir / "node_3.log", "ab")  # noqa: SIM115 - owned by the process
    proc = subprocess.Popen(
        [sys.executable, "-m", "parakoon_node", "join", "node_3",
         "--member", f"127.0.0.1:{cluster.client_ports[master]}", "--cluster-id", CLUSTER_ID,
         "--address", f"127.0.0.1:{peer_port}", "--client-port", str(client_port),
         "--config", str(own), "--tls-ca-cert", str(cluster.ca.cert_path),
         "--tls-cert", str(joiner.cert), "--tls-key", str(joiner.key)],
        stdout=log, stderr=subprocess.STDOUT, cwd=cluster.base,
    )  # fmt: skip
    log.close()
    cluster.client_ports["node_3"] = client_port
    try:
        request = codec.Get(key=b"before-join", consistency=codec.NO_GUARANTEES)

        def caught_up() -> bool:
            try:
                answer: object = cluster.call("node_3", request, timeout=2.0)
            except OSError:
                assert proc.poll() is None, cluster.log_dir.joinpath("node_3.log").read_text()
                return False
            return answer == b"yes"

        wait_until(caught_up, "node_3 serving the data over TLS", timeout=30)
        text = own.read_text()  # complete: the node runs from it
        assert f'tls_cert = "{joiner.cert}"' in text
        assert "tls_service = true" in text
    finally:
        proc.kill()
        proc.wait(timeout=10)
        del cluster.client_ports["node_3"]


def test_tls_files_are_checked_at_start(tmp_path: Path) -> None:
    """A node whose key does not match its certificate does not start; the message names the
    key of the file and the problem."""
    ca = CA("ca", tmp_path / "certs")
    one = ca.issue("node_0")
    two = ca.issue("node_1")
    config = tmp_path / "cluster.toml"
    config.write_text(
        "\n".join(
            [
                "[cluster]",
                'id = "c"',
                f'tls_ca_cert = "{ca.cert_path}"',
                "[[nodes]]",
                'name = "node_0"',
                'addresses = ["127.0.0.1:1"]',
                "client_port = 2",
                'home_dir = "data"',
                f'tls_cert = "{one.cert}"',
                f'tls_key = "{two.key}"',
            ]
        )
    )
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "parakoon_node",
            "node",
            "--config",
            str(config),
            "--node",
            "node_0",
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
        env=dict(os.environ),
    )
    assert done.returncode == 2, done.stderr
    assert "nodes[0].tls_cert" in done.stderr
    assert "does not match its key" in done.stderr
    # An expired certificate of its own: the node says so at start instead of being refused
    # by every peer with the reason in their logs.
    old = ca.issue("node_0", file_stem="node_0_old", expired=True)
    config.write_text(
        config.read_text().replace(f'tls_key = "{two.key}"', f'tls_key = "{old.key}"')
        .replace(f'tls_cert = "{one.cert}"', f'tls_cert = "{old.cert}"')
    )  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-m", "parakoon_node", "node", "--config", str(config),
         "--node", "node_0"],
        check=False, capture_output=True, text=True, timeout=60, env=dict(os.environ),
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "nodes[0].tls_cert" in done.stderr and "expired on" in done.stderr, done.stderr
