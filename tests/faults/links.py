"""Peer links the nemesis can cut: every node-to-node connection runs through a proxy here.

A node dials each peer at the address its ``cluster.toml`` gives for that peer, and only writes on
that connection (``parakoon_node.runtime.peer``): one TCP stream per direction of each pair. Each
node therefore gets its own copy of the cluster file, in which every *other* node's address is a
:class:`LinkProxy` in the test process that forwards to the real peer port. The proxy for (src,
dst) carries exactly the messages src sends to dst, so the nemesis can cut one direction of one
pair, or every link of one node (isolating it: the classic partitioned old master, still reachable
by clients on its client port).

Cutting *blackholes* a link rather than closing it: bytes already in flight and any that follow
are read and thrown away, and new connections are accepted and then ignored. The sender sees a
healthy TCP stream into which its messages vanish, as in a real partition, and has to notice by
the silence (leases run out, handshakes time out). Healing closes every blackholed connection,
since a stream that lost bytes in the middle of a frame cannot be resumed, and lets new ones
through again; the nodes redial.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from pathlib import Path
from typing import Any

from ..conftest import ClusterProcs  # noqa: TID252 - the shared cluster harness of tests/

#: Bytes read per receive while forwarding.
CHUNK_BYTES = 1 << 16
#: Connections one proxy carries at once (a node dials a peer once, plus catch-up streams);
#: more are refused, and counted.
CONNS_MAX_DEFAULT = 16
#: How long the proxy waits to reach the real peer port before it drops the incoming dial.
UPSTREAM_CONNECT_SECS = 2.0
#: How often the accept loop looks at its stop flag.
ACCEPT_POLL_SECS = 0.2


class _Pair:
    """One proxied connection: the dialer's socket and ours to the real peer (or None when the
    connection was accepted while the link was cut)."""

    def __init__(self, down: socket.socket, up: socket.socket | None) -> None:
        self.down = down
        self.up = up
        self.blackholed = up is None

    def close(self) -> None:
        for s in (self.down, self.up):
            if s is None:
                continue
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                s.close()


class LinkProxy:
    """One direction of one peer link (``src`` dials ``dst``), forwarded through this process."""

    def __init__(self, src: str, dst: str, target_port: int, conns_max: int = CONNS_MAX_DEFAULT):
        self.src = src
        self.dst = dst
        self.target_port = target_port
        self.conns_max = conns_max
        self.refused = 0
        self._lock = threading.Lock()
        self._pairs: set[_Pair] = set()
        self._cut = False
        self._stopped = False
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(8)
        self._listener.settimeout(ACCEPT_POLL_SECS)
        self.port: int = self._listener.getsockname()[1]
        self._thread = threading.Thread(
            target=self._accept_loop, name=f"link-{src}-{dst}", daemon=True
        )
        self._thread.start()

    @property
    def is_cut(self) -> bool:
        return self._cut

    def cut(self) -> None:
        """Blackhole the link: everything from now on is read and dropped."""
        with self._lock:
            self._cut = True
            for pair in self._pairs:
                pair.blackholed = True

    def heal(self) -> None:
        """Let traffic through again; blackholed connections are closed so the node redials."""
        with self._lock:
            self._cut = False
            dead = [p for p in self._pairs if p.blackholed]
            for pair in dead:
                self._pairs.discard(pair)
        for pair in dead:
            pair.close()

    def close(self) -> None:
        self._stopped = True
        with self._lock:
            pairs = list(self._pairs)
            self._pairs.clear()
        for pair in pairs:
            pair.close()
        with contextlib.suppress(OSError):
            self._listener.close()
        self._thread.join(timeout=2 * ACCEPT_POLL_SECS + 1)

    # ------------------------------------------------------------------ threads

    def _accept_loop(self) -> None:
        while not self._stopped:
            try:
                down, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            down.settimeout(None)
            with self._lock:
                full = len(self._pairs) >= self.conns_max
                cut = self._cut
            if full:
                self.refused += 1
                with contextlib.suppress(OSError):
                    down.close()
                continue
            up: socket.socket | None = None
            if not cut:
                try:
                    up = socket.create_connection(
                        ("127.0.0.1", self.target_port), timeout=UPSTREAM_CONNECT_SECS
                    )
                    up.settimeout(None)
                except OSError:
                    # The peer is down: the dialer must see a failed connection, as it would
                    # without us in between.
                    with contextlib.suppress(OSError):
                        down.close()
                    continue
            pair = _Pair(down, up)
            with self._lock:
                # The link may have been cut while we dialled the peer: then this connection
                # is born blackholed, like the ones that were open at the cut.
                if self._cut:
                    pair.blackholed = True
                self._pairs.add(pair)
            self._spawn(pair, down, up)
            if up is not None:
                self._spawn(pair, up, down)

    def _spawn(self, pair: _Pair, source: socket.socket, sink: socket.socket | None) -> None:
        threading.Thread(
            target=self._pump, args=(pair, source, sink), name=f"pump-{self.src}-{self.dst}",
            daemon=True,
        ).start()  # fmt: skip

    def _pump(self, pair: _Pair, source: socket.socket, sink: socket.socket | None) -> None:
        try:
            while True:
                data = source.recv(CHUNK_BYTES)
                if not data:
                    break
                if pair.blackholed or sink is None:
                    continue
                sink.sendall(data)
        except OSError:
            pass
        finally:
            with self._lock:
                self._pairs.discard(pair)
            pair.close()


class LinkedCluster(ClusterProcs):
    """A :class:`ClusterProcs` whose node-to-node links all run through :class:`LinkProxy`.

    Each node starts from its own ``cluster-<name>.toml``: the shared file with every other
    node's peer address replaced by the proxy for (this node, that node).
    """

    def __init__(self, base: Path, **kwargs: Any) -> None:
        super().__init__(base, **kwargs)
        self.links: dict[tuple[str, str], LinkProxy] = {}
        self.node_configs: dict[str, Path] = {}
        shared = self.config.read_text()
        for src in self.names:
            text = shared
            for dst in self.names:
                if dst == src:
                    continue
                proxy = LinkProxy(src, dst, self.peer_ports[dst])
                self.links[(src, dst)] = proxy
                real = f'addresses = ["127.0.0.1:{self.peer_ports[dst]}"]'
                assert text.count(real) == 1, f"{dst}'s address not found once in {self.config}"
                text = text.replace(real, f'addresses = ["127.0.0.1:{proxy.port}"]')
            path = base / f"cluster-{src}.toml"
            path.write_text(text)
            self.node_configs[src] = path

    def start(self, name: str, env: dict[str, str] | None = None) -> None:
        # ClusterProcs.start passes self.config to the node; give it this node's own file.
        shared = self.config
        self.config = self.node_configs[name]
        try:
            super().start(name, env)
        finally:
            self.config = shared

    def isolate(self, name: str) -> None:
        for (src, dst), proxy in self.links.items():
            if name in (src, dst):
                proxy.cut()

    def cut(self, src: str, dst: str) -> None:
        self.links[(src, dst)].cut()

    def heal_links(self) -> None:
        for proxy in self.links.values():
            proxy.heal()

    def shutdown(self) -> None:
        try:
            super().shutdown()
        finally:
            for proxy in self.links.values():
                proxy.close()
