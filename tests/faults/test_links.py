"""The link proxy the nemesis cuts peer links with: it forwards, blackholes, and heals.

An echo server over real TCP stands in for a node's peer port (the proxy only moves bytes, so
any TCP server shows what it does).
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator

import pytest

from .links import LinkProxy

#: How long a test waits for bytes that must (or must not) arrive.
WAIT_SECS = 2.0
SILENCE_SECS = 0.3


@pytest.fixture
def echo_port() -> Iterator[int]:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.settimeout(0.2)
    stopped = threading.Event()

    def serve(conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):
            while data := conn.recv(4096):
                conn.sendall(data)

    def accept_loop() -> None:
        while not stopped.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(None)
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=accept_loop, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    stopped.set()
    thread.join(timeout=2)
    listener.close()


@pytest.fixture
def proxy(echo_port: int) -> Iterator[LinkProxy]:
    p = LinkProxy("a", "b", echo_port)
    yield p
    p.close()


def dial(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=WAIT_SECS)
    s.settimeout(WAIT_SECS)
    return s


def test_forwards_both_ways(proxy: LinkProxy) -> None:
    with dial(proxy.port) as s:
        s.sendall(b"hello")
        assert s.recv(100) == b"hello"


def test_cut_swallows_bytes_silently_on_open_and_new_connections(proxy: LinkProxy) -> None:
    with dial(proxy.port) as old:
        old.sendall(b"before")
        assert old.recv(100) == b"before"
        proxy.cut()
        assert proxy.is_cut
        old.sendall(b"lost")
        old.settimeout(SILENCE_SECS)
        with pytest.raises(TimeoutError):
            old.recv(100)
        # A new dial is accepted (the link looks up) but nothing comes back either.
        with dial(proxy.port) as new:
            new.sendall(b"also lost")
            new.settimeout(SILENCE_SECS)
            with pytest.raises(TimeoutError):
                new.recv(100)


def test_heal_closes_blackholed_streams_and_lets_new_ones_through(proxy: LinkProxy) -> None:
    with dial(proxy.port) as old:
        # One round trip first, so that the proxy has surely taken the connection on (bytes of
        # a dial it accepts only after the heal would just arrive late, which is fair too).
        old.sendall(b"before")
        assert old.recv(100) == b"before"
        proxy.cut()
        old.sendall(b"lost")
        proxy.heal()
        # The stream lost bytes, so it must not resume: the proxy closes it.
        with contextlib.suppress(ConnectionResetError):
            assert old.recv(100) == b""
    with dial(proxy.port) as new:
        new.sendall(b"again")
        assert new.recv(100) == b"again"


def test_a_dead_peer_looks_dead_through_the_proxy() -> None:
    free = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    free.bind(("127.0.0.1", 0))
    port = free.getsockname()[1]
    free.close()  # nothing listens there now
    p = LinkProxy("a", "b", port)
    try:
        with dial(p.port) as s, contextlib.suppress(ConnectionResetError):
            assert s.recv(100) == b""
    finally:
        p.close()
