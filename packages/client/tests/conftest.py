"""Shared fixtures: scripted protocol peers on real TCP sockets (127.0.0.1).

A :class:`ScriptedServer` is a real server socket speaking the Arakoon protocol through the
codec's server side; a test decides, per request, what it answers (bytes), or whether it closes
the connection or stays silent. It exists to put the clients' transport rules under test
(timeouts, lost connections, redirects, protocol violations) where a real node cannot be made to
misbehave on purpose. Behaviour against a real node is tested in the repository's root
``tests/test_client_*.py``.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import pytest

from parakoon_client.codec import (
    NEED_DATA,
    AnyRequest,
    Prologue,
    RemoteProtocolError,
    RequestDecoder,
)

# bytes: answer them; "close": close without answering; "silent": never answer;
# ("then-close", bytes): answer, then close the connection.
Reply = bytes | Literal["close", "silent"] | tuple[Literal["then-close"], bytes]
# (connection number starting at 0, request) -> what to answer
Handler = Callable[[int, AnyRequest], Reply]

POLL_SECS = 0.05  # how often idle peer threads look at the stop flag
JOIN_SECS = 5.0


@dataclass
class ScriptedServer:
    """One listening socket; every accepted connection is served by its own thread."""

    cluster_id: str
    handler: Handler
    address: tuple[str, int] = ("127.0.0.1", 0)
    requests: list[tuple[int, AnyRequest]] = field(default_factory=list)
    connections: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> ScriptedServer:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(POLL_SECS)
        self.address = ("127.0.0.1", self._listener.getsockname()[1])
        self._spawn(self._accept_loop)
        return self

    def _spawn(self, target: Callable[..., None], *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            number = self.connections
            self.connections += 1
            self._spawn(self._serve, conn, number)

    def _serve(self, conn: socket.socket, number: int) -> None:
        conn.settimeout(POLL_SECS)
        decoder = RequestDecoder()
        with conn:
            while not self._stop.is_set():
                try:
                    event = decoder.next_event()
                except RemoteProtocolError:
                    return
                if event is NEED_DATA:
                    try:
                        chunk = conn.recv(65536)
                    except TimeoutError:
                        continue
                    except OSError:
                        return
                    if not chunk:
                        return
                    decoder.feed(chunk)
                    continue
                if isinstance(event, Prologue):
                    if event.cluster_id != self.cluster_id:
                        return  # protocol §3.1: a wrong cluster id closes without a word
                    continue
                self.requests.append((number, event))
                reply = self.handler(number, event)
                if reply == "close":
                    return
                if reply == "silent":
                    self._wait_for_close(conn)
                    return
                then_close = isinstance(reply, tuple)
                data = reply[1] if isinstance(reply, tuple) else reply
                assert isinstance(data, bytes)
                try:
                    conn.sendall(data)
                except OSError:
                    return
                if then_close:
                    return

    def _wait_for_close(self, conn: socket.socket) -> None:
        while not self._stop.is_set():
            try:
                if not conn.recv(65536):
                    return
            except TimeoutError:
                continue
            except OSError:
                return

    def stop(self) -> None:
        self._stop.set()
        self._listener.close()
        for thread in self._threads:
            thread.join(JOIN_SECS)

    def of_type(self, kind: type) -> list[tuple[int, AnyRequest]]:
        return [(n, r) for n, r in self.requests if isinstance(r, kind)]


ServerFactory = Callable[[Handler], ScriptedServer]


@pytest.fixture
def scripted() -> Iterator[ServerFactory]:
    """A factory of started scripted servers for cluster id "test"; all stopped at the end."""
    servers: list[ScriptedServer] = []

    def make(handler: Handler) -> ScriptedServer:
        server = ScriptedServer("test", handler).start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()


@pytest.fixture
def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port
