"""Shared fixtures for the cross-package and multi-process tests.

``ClusterProcs`` starts real ``parakoon node`` processes from a generated ``cluster.toml`` on
127.0.0.1 (free ports picked by the OS), and talks to them over real TCP with the client codec.
Every wait is bounded; every process is killed at teardown; node logs are kept in the test's
temporary folder and printed when a test fails.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from parakoon_testing import free_ports, wait_until

from parakoon_client import codec

CLUSTER_ID = "parakoon-test"


@dataclass(frozen=True)
class MovedPorts:
    """A ``cluster.toml`` whose 127.0.0.1 ports were all moved to free ones (``on_free_ports``)."""

    text: str
    #: The file's client ports before and after, in node order.
    shipped_client_ports: list[int]
    client_ports: list[int]

    def localize(self, text: str) -> str:
        """``text`` (a doc example) with every shipped client port replaced by the new one."""
        for shipped, port in zip(self.shipped_client_ports, self.client_ports, strict=True):
            text = re.sub(rf"\b{shipped}\b", str(port), text)
        return text


def on_free_ports(text: str) -> MovedPorts:
    """``text``, a cluster file such as the repository's, with every client port and every
    127.0.0.1 peer port replaced by a free one: a test runs the shipped file without ever
    meeting a cluster it did not start (a user's README cluster runs on the shipped ports)."""
    clients = [int(p) for p in re.findall(r"^client_port = (\d+)", text, re.M)]
    peers = [int(p) for p in re.findall(r'"127\.0\.0\.1:(\d+)"', text)]
    metrics = [int(p) for p in re.findall(r"^metrics_port = (\d+)", text, re.M)]
    fresh = free_ports(len(clients) + len(peers) + len(metrics))
    for old, new in zip(clients, fresh, strict=False):
        text = re.sub(rf"^client_port = {old}\b", f"client_port = {new}", text, flags=re.M)
    for old, new in zip(peers, fresh[len(clients) :], strict=False):
        text = text.replace(f'"127.0.0.1:{old}"', f'"127.0.0.1:{new}"')
    for old, new in zip(metrics, fresh[len(clients) + len(peers) :], strict=True):
        text = re.sub(rf"^metrics_port = {old}\b", f"metrics_port = {new}", text, flags=re.M)
    return MovedPorts(text, clients, fresh[: len(clients)])


class RawConnection:
    """One Arakoon protocol connection over a blocking socket, using only the codec."""

    def __init__(
        self,
        port: int,
        cluster_id: str = CLUSTER_ID,
        timeout: float = 5.0,
        host: str = "127.0.0.1",
    ) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.settimeout(timeout)
        self.sock.sendall(codec.encode_prologue(cluster_id))

    def call(self, request: Any) -> Any:
        """Send one request; return the decoded result or an ``ErrorResponse``."""
        self.sock.sendall(codec.encode_request(request))
        decoder = codec.ResponseDecoder(request)
        while True:
            event = decoder.next_event()
            if event is not codec.NEED_DATA:
                return event
            data = self.sock.recv(1 << 16)
            if not data:
                raise ConnectionError("server closed the connection")
            decoder.feed(data)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()

    def __enter__(self) -> RawConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def serving_master_port(ports: list[int], cluster_id: str) -> int | None:
    """The client port of the master some node names, once it answers a consistent read
    itself; for clusters whose nodes are ``node_0``, ``node_1``, ... in the order of ``ports``
    (the repository's ``cluster.toml``). An ``OSError`` (a node not up yet) propagates, which
    ``wait_until`` counts as "not yet"."""
    for port in ports:
        with RawConnection(port, cluster_id=cluster_id, timeout=1) as conn:
            name = conn.call(codec.WhoMaster())
        if isinstance(name, str):
            master = ports[int(name.rsplit("_", 1)[1])]
            with RawConnection(master, cluster_id=cluster_id, timeout=1) as conn:
                if conn.call(codec.Exists(key=b"?")) in (True, False):
                    return master
    return None


class ClusterProcs:
    """A cluster of real node processes for one test."""

    def __init__(
        self,
        base: Path,
        *,
        nodes: int = 3,
        lease_period_secs: float = 1.0,
        cluster_extra: str = "",
        fsync: bool = True,
        metrics: bool = False,
        redis: bool = False,
    ) -> None:
        self.base = base
        self.names = [f"node_{k}" for k in range(nodes)]
        ports = free_ports(4 * nodes)
        self.client_ports = dict(zip(self.names, ports[:nodes], strict=True))
        self.peer_ports = dict(zip(self.names, ports[nodes : 2 * nodes], strict=True))
        self.metrics_ports = (
            dict(zip(self.names, ports[2 * nodes : 3 * nodes], strict=True)) if metrics else {}
        )
        # The Redis port (docs/redis.md), when asked for.
        self.redis_ports = dict(zip(self.names, ports[3 * nodes :], strict=True)) if redis else {}
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.log_dir = base / "logs"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.lease = lease_period_secs
        self.config = base / "cluster.toml"
        self.write_config(lease_period_secs=lease_period_secs, fsync=fsync, extra=cluster_extra)

    def peer_address(self, name: str) -> str:
        """Where ``name`` takes node-to-node connections (``addresses`` in the file)."""
        return f"127.0.0.1:{self.peer_ports[name]}"

    def write_config(self, *, lease_period_secs: float, fsync: bool, extra: str) -> None:
        """The cluster file every node starts from, at ``self.config``."""
        lines = [
            "[cluster]",
            f'id = "{CLUSTER_ID}"',
            f"lease_period_secs = {lease_period_secs}",
            f"fsync = {'true' if fsync else 'false'}",
            extra,
            "",
        ]
        for name in self.names:
            lines += [
                "[[nodes]]",
                f'name = "{name}"',
                f'addresses = ["{self.peer_address(name)}"]',
                f"client_port = {self.client_ports[name]}",
                # Relative, as in the repository's file: commands run in the cluster's folder.
                f'home_dir = "{os.path.relpath(self.home(name), self.config.parent)}"',
                'compressor = "zstd"',
            ]
            if name in self.metrics_ports:
                lines.append(f"metrics_port = {self.metrics_ports[name]}")
            if name in self.redis_ports:
                lines.append(f"redis_port = {self.redis_ports[name]}")
            lines.append("")
        self.config.write_text("\n".join(lines))

    def home(self, name: str) -> Path:
        return self.base / "data" / name

    def node_command(self, name: str) -> list[str]:
        """The command line that runs ``name`` (the namespace harness puts ``ip netns exec``
        in front)."""
        return [
            sys.executable, "-m", "parakoon_node", "node", "--config", str(self.config),
            "--node", name, "--log-format", "json", "--log-level", "info",
        ]  # fmt: skip

    def start(self, name: str, env: dict[str, str] | None = None) -> None:
        assert name not in self.procs or self.procs[name].poll() is not None
        log = open(self.log_dir / f"{name}.log", "ab")  # noqa: SIM115 - owned by the process
        env = dict(os.environ, PYTHONUNBUFFERED="1", **(env or {}))
        self.procs[name] = subprocess.Popen(
            self.node_command(name), stdout=log, stderr=subprocess.STDOUT, env=env
        )
        log.close()

    def start_all(self) -> None:
        for name in self.names:
            self.start(name)

    def running(self, name: str) -> bool:
        proc = self.procs.get(name)
        return proc is not None and proc.poll() is None

    def kill(self, name: str) -> None:
        proc = self.procs[name]
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGCONT)
            proc.kill()
        proc.wait(timeout=10)

    def stop(self, name: str, timeout: float = 10.0) -> int:
        proc = self.procs[name]
        proc.send_signal(signal.SIGTERM)
        return proc.wait(timeout=timeout)

    def pause(self, name: str) -> None:
        self.procs[name].send_signal(signal.SIGSTOP)

    def resume(self, name: str) -> None:
        self.procs[name].send_signal(signal.SIGCONT)

    def connect(self, name: str, timeout: float = 5.0) -> RawConnection:
        return RawConnection(self.client_ports[name], timeout=timeout)

    def call(self, name: str, request: Any, timeout: float = 5.0) -> Any:
        with self.connect(name, timeout=timeout) as conn:
            return conn.call(request)

    def call_master(self, master: str, request: Any, timeout: float = 5.0) -> tuple[str, Any]:
        """``call`` on ``master``; on E_NOT_MASTER (the request was not taken) send it again
        to the master the nodes agree on now. Returns that master and the result. Why: when
        two candidates ran at once at start, the loser's higher promise could depose the
        winner at its first Accept to the loser (session 8). A candidate refused that way now
        runs again before leading, but a refusal lost while the peer links are still coming
        up can still leave it to that first Accept (a real client retries the same way)."""
        for _ in range(3):
            result = self.call(master, request, timeout=timeout)
            if not (
                isinstance(result, codec.ErrorResponse)
                and result.code == codec.ErrorCode.NOT_MASTER
            ):
                break
            master = self.wait_master(timeout=max(timeout, 10.0))
        return master, result

    def store_of(self, name: str) -> dict[bytes, bytes]:
        """Every key and value of ``name``'s store, read locally (no master needed)."""
        request = codec.RangeEntries(consistency=codec.NO_GUARANTEES, max_keys=-1)
        return dict(self.call(name, request, timeout=10))

    def wait_same_store(self, names: list[str] | None = None, timeout: float = 30.0) -> None:
        """Wait until every node of ``names`` (default: all) holds the same store."""
        names = names or self.names

        def same() -> bool:
            stores = [self.store_of(n) for n in names]
            return all(s == stores[0] for s in stores)

        wait_until(same, f"{names} hold the same store", timeout=timeout, interval=0.3)

    def who_master(self, name: str) -> str | None:
        try:
            result = self.call(name, codec.WhoMaster(), timeout=2.0)
        except OSError:
            return None
        return result if isinstance(result, str) else None

    def wait_master(self, timeout: float = 20.0, among: list[str] | None = None) -> str:
        """Wait until every running node (of ``among``) names the same master, and it agrees."""
        names = among or [n for n in self.names if self.running(n)]
        views: dict[str, str | None] = {}

        def agreed() -> str | None:
            views.update({n: self.who_master(n) for n in names})
            values = set(views.values())
            if len(values) == 1:
                (master,) = values
                if master is not None and master in names and self._serves(master):
                    return master
            return None

        return wait_until(
            agreed, lambda: f"an agreed master: {views}\n{self.tail_logs()}", timeout=timeout
        )

    def _serves(self, name: str) -> bool:
        """Whether ``name`` answers a consistent read (it holds a valid lease)."""
        try:
            result = self.call(name, codec.Exists(key=b"?"), timeout=2.0)
        except OSError:
            return False
        return result is False or result is True

    def wait_ready(self, name: str, timeout: float = 20.0) -> None:
        def serving() -> bool:
            with contextlib.suppress(OSError), self.connect(name, timeout=1.0) as conn:
                conn.call(codec.WhoMaster())
                return True
            if not self.running(name):
                raise AssertionError(f"{name} exited\n{self.tail_logs()}")
            return False

        wait_until(
            serving, lambda: f"{name} serving\n{self.tail_logs()}", timeout=timeout, interval=0.05
        )

    def tail_logs(self, lines: int = 40) -> str:
        out = []
        for name in self.names:
            path = self.log_dir / f"{name}.log"
            if path.exists():
                text = path.read_text(errors="replace").splitlines()[-lines:]
                out.append(f"----- {name} -----\n" + "\n".join(text))
        return "\n".join(out)

    def shutdown(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGCONT)
                    proc.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=10)
            del name


@pytest.fixture
def cluster_factory(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Any]:
    made: list[ClusterProcs] = []

    def make(**kwargs: Any) -> ClusterProcs:
        cluster = ClusterProcs(tmp_path / f"cluster{len(made)}", **kwargs)
        made.append(cluster)
        return cluster

    yield make
    failed = getattr(request.node, "rep_call", None)
    for cluster in made:
        cluster.shutdown()
        if failed is not None and failed.failed:
            print(cluster.tail_logs(80))


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.when == "call":
        item.rep_call = report  # type: ignore[attr-defined]
    return report
