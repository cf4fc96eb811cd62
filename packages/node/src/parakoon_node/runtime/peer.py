"""Node-to-node messaging over TCP: one outgoing link per peer, one listener for incoming ones.

Topology. Every node dials every peer once and only *writes* on that outgoing connection; it
only *reads* on the connections peers dialled to it. So each direction of each pair has exactly
one TCP stream, and a reconnect in one direction never disturbs the other.

Outgoing links are driven by the pure connection machine :mod:`parakoon_conn` (when to dial,
back off, give up a dial) and fed from a :class:`parakoon_queue.LeakyQueue` of encoded frames.
The queue never blocks the Paxos core: when a peer is slow or away, the oldest frames are
dropped and counted. Paxos tolerates message loss (the leader re-sends Accepts, candidates
retry), and a master must never stall on one slow follower.

Handshake. The dialer's first frame is ``["hello", 2, cluster_id, node_name, purpose,
identity]`` with purpose ``"msg"`` (Paxos messages follow) or ``"catchup"`` (a catch-up request
follows, see :mod:`parakoon_node.runtime.catchup`). The listener answers ``["welcome",
its_name, identity]`` or ``["refused", reason]`` and closes; a wrong cluster id, an unknown node
name or a peer from another cluster history (:mod:`parakoon_node.runtime.identity`) is refused
and logged with the peer's address, on both sides. Anything malformed closes that connection
only.

TLS. With ``[cluster] tls_ca_cert`` every link is TLS before the first frame (contexts from
:mod:`parakoon_node.runtime.tls`): both sides present certificates signed by the CA, the dialer
checks that the listener's certificate names the node it dialled, and the listener checks that
the name claimed in the hello is the name its certificate gives. A failed handshake (no
certificate, another CA, expired, plain TCP, another node's certificate) is logged with the
peer's address and the reason and closes that connection only; the handshake is bounded by
``HANDSHAKE_TIMEOUT_SECS`` like the hello.

Frames after the handshake on a ``"msg"`` connection: ``["p", <paxos message wire list>]``, and
``["c", slot, content_hash]``: the sender's store content hash right after it applied ``slot``,
for the replicas' cross-check against a forked store (``Node._check_divergence``).
"""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.abc
import msgpack
import structlog
from anyio.streams.tls import TLSAttribute, TLSStream

from parakoon_client.tls import cert_problem, describe_handshake_error
from parakoon_conn import machine as conn
from parakoon_node.clientserver.tls_accept import accept_tls, drain_and_close
from parakoon_paxos import Message
from parakoon_paxos.wire import WireError, message_from_wire, message_to_wire
from parakoon_queue import DropPolicy, EndOfStream, LeakyQueue

from .framing import FrameDecoder, PeerProtocolError, encode_frame, encode_frame_body
from .identity import PeerIdentities
from .status import PeerStatus
from .tls import TlsContexts

log = structlog.get_logger("parakoon.peer")

PROTOCOL_VERSION = 2  # 2: the hello and welcome carry the cluster identity
HANDSHAKE_TIMEOUT_SECS = 5.0
RECEIVE_CHUNK_BYTES = 1 << 16
#: While a peer cannot be reached, "peer.unreachable" is logged at most this often.
UNREACHABLE_LOG_EVERY_SECS = 10.0


@dataclass(frozen=True, slots=True, kw_only=True)
class PeerAddress:
    name: str
    host: str
    port: int

    @property
    def text(self) -> str:
        return f"{self.host}:{self.port}"


class PeerRefused(Exception):
    """The remote side refused our handshake (wrong cluster, unknown name, ...)."""


async def read_frame(
    stream: anyio.abc.ByteStream, decoder: FrameDecoder, pending: list[Any]
) -> Any:
    """Return the next frame from ``stream``; raise ``EndOfStream`` on a clean close."""
    while not pending:
        data = await stream.receive(RECEIVE_CHUNK_BYTES)
        decoder.feed(data)
        pending.extend(decoder.frames())
    return pending.pop(0)


async def dial_peer(
    address: PeerAddress,
    *,
    cluster_id: str,
    me: str,
    purpose: str,
    max_frame_bytes: int,
    identities: PeerIdentities,
    tls: TlsContexts | None = None,
    timeout_secs: float = HANDSHAKE_TIMEOUT_SECS,
) -> tuple[anyio.abc.ByteStream, FrameDecoder, list[Any]]:
    """Connect to a peer and complete the handshake; return the stream and its decoder state.

    The peer's identity is checked here too: a peer of another cluster history is refused by
    us even if it would accept us (``PeerRefused`` names both histories), and with ``tls`` a
    peer whose certificate does not name ``address.name`` is refused.
    """
    with anyio.fail_after(timeout_secs):
        stream: anyio.abc.ByteStream = await anyio.connect_tcp(address.host, address.port)
        try:
            if tls is not None:
                stream = await _tls_dial(stream, address, tls)
            hello = ["hello", PROTOCOL_VERSION, cluster_id, me, purpose, identities.local()]
            await stream.send(encode_frame(hello))
            decoder = FrameDecoder(max_frame_bytes)
            pending: list[Any] = []
            reply = await read_frame(stream, decoder, pending)
            if (
                isinstance(reply, list)
                and len(reply) == 3
                and reply[0] == "welcome"
                and reply[1] == address.name
            ):
                why = identities.admit(address.name, reply[2])
                if why is not None:
                    raise PeerRefused(f"we refuse {address.name} at {address.text}: {why}")
                return stream, decoder, pending
            if isinstance(reply, list) and reply and reply[0] == "refused":
                raise PeerRefused(f"{address.name} at {address.text} refused us: {reply[1:]!r}")
            raise PeerRefused(f"{address.name} at {address.text}: unexpected handshake {reply!r}")
        except BaseException:
            await _close_quietly(stream)
            raise


async def _tls_dial(
    stream: anyio.abc.ByteStream, address: PeerAddress, tls: TlsContexts
) -> anyio.abc.ByteStream:
    """Run the TLS handshake as the dialer and check that the certificate names the peer."""
    try:
        wrapped = await TLSStream.wrap(
            stream,
            server_side=False,
            ssl_context=tls.current().peer_client,
            standard_compatible=False,
        )
    except (OSError, anyio.BrokenResourceError, EndOfStream) as exc:
        await _close_quietly(stream)
        reason = describe_handshake_error(exc)
        raise PeerRefused(
            f"TLS handshake with {address.name} at {address.text}: {reason}"
        ) from None
    problem = cert_problem(wrapped.extra(TLSAttribute.peer_certificate), address.name)
    if problem is not None:
        await _close_quietly(wrapped)
        raise PeerRefused(f"we refuse {address.name} at {address.text}: {problem}")
    return wrapped


class PeerLink:
    """The outgoing side of one peer: a connection machine, a leaky queue and a sender task."""

    def __init__(
        self,
        address: PeerAddress,
        *,
        cluster_id: str,
        me: str,
        identities: PeerIdentities,
        settings: conn.ConnSettings,
        queue_items: int,
        max_frame_bytes: int,
        rng: random.Random,
        clock: Callable[[], float],
        tls: TlsContexts | None = None,
    ) -> None:
        self.address = address
        self._tls = tls
        self._identities = identities
        self._cluster_id = cluster_id
        self._me = me
        self._settings = settings
        self._max_frame = max_frame_bytes
        self._rng = rng
        self._clock = clock
        self.queue: LeakyQueue[bytes] = LeakyQueue(
            queue_items, policy=DropPolicy.EVICT_OLDEST, name=f"peer:{address.name}"
        )
        self.state = conn.initial_state([address.text])
        self._streams: dict[int, anyio.abc.ByteStream] = {}
        self._dial_scopes: dict[int, anyio.CancelScope] = {}
        self._sender_dial: int | None = None
        self._tg: anyio.abc.TaskGroup | None = None
        # Dials that failed since the last connection, and when "unreachable" was last logged.
        self._failed_dials = 0
        self._unreachable_logged_at: float | None = None

    @property
    def connected(self) -> bool:
        return self.state.phase is conn.ConnPhase.CONNECTED

    def offer(self, frame: bytes) -> None:
        if self.queue.closed:
            return  # shutting down: a message now would go nowhere anyway
        self.queue.put_nowait(frame)
        # Before run() started, the frame just waits: run() asks for the connection itself.
        if self._tg is not None and self.state.phase is conn.ConnPhase.IDLE:
            self._feed(conn.SendRequested(now=self._clock()))

    async def run(self) -> None:
        async with anyio.create_task_group() as tg:
            self._tg = tg
            self._feed(conn.ConnectRequested(now=self._clock()))
            while True:
                await anyio.sleep(0.05)
                self._feed(conn.Tick(now=self._clock(), jitter=self._rng.random()))

    def _feed(self, event: conn.Event) -> None:
        self.state, effects = conn.step(self._settings, self.state, event)
        for effect in effects:
            match effect:
                case conn.Dial(dial_id=dial_id):
                    assert self._tg is not None
                    scope = anyio.CancelScope()
                    self._dial_scopes[dial_id] = scope
                    self._tg.start_soon(self._dial, dial_id, scope)
                case conn.CloseSocket(dial_id=dial_id):
                    pending_dial = self._dial_scopes.pop(dial_id, None)
                    if pending_dial is not None:
                        pending_dial.cancel()
                    stream = self._streams.pop(dial_id, None)
                    if stream is not None and self._tg is not None:
                        self._tg.start_soon(_close_quietly, stream)
                case conn.FlushQueued(dial_id=dial_id):
                    if self._sender_dial != dial_id and dial_id in self._streams:
                        assert self._tg is not None
                        self._sender_dial = dial_id
                        self._tg.start_soon(self._send_loop, dial_id)
                case conn.StateChanged(old=old, new=new, reason=reason):
                    if new is conn.ConnPhase.CONNECTED:
                        log.info("peer.connected", peer=self.address.name, addr=self.address.text)
                        self._failed_dials = 0
                        self._unreachable_logged_at = None
                    elif old is conn.ConnPhase.CONNECTED:
                        log.info(
                            "peer.disconnected",
                            peer=self.address.name,
                            addr=self.address.text,
                            reason=reason,
                        )
                case conn.StartTimer():
                    pass  # run() ticks every link periodically, which the contract allows
                case _:
                    raise AssertionError(f"unexpected conn effect {effect!r}")

    def _note_unreachable(self, exc: BaseException) -> None:
        """Log a peer we cannot reach, with its address: the first failure, then at most once
        per ``UNREACHABLE_LOG_EVERY_SECS`` while it lasts (dials retry every few hundred ms)."""
        self._failed_dials += 1
        now = self._clock()
        last = self._unreachable_logged_at
        if last is not None and now - last < UNREACHABLE_LOG_EVERY_SECS:
            return
        self._unreachable_logged_at = now
        log.warning(
            "peer.unreachable",
            peer=self.address.name,
            addr=self.address.text,
            reason=f"{exc.__class__.__name__}: {exc}",
            failed_dials=self._failed_dials,
        )

    async def _dial(self, dial_id: int, scope: anyio.CancelScope) -> None:
        with scope:
            try:
                stream, _decoder, _pending = await dial_peer(
                    self.address,
                    cluster_id=self._cluster_id,
                    me=self._me,
                    purpose="msg",
                    max_frame_bytes=self._max_frame,
                    identities=self._identities,
                    tls=self._tls,
                    timeout_secs=self._settings.connect_timeout_secs,
                )
            except (
                OSError,
                TimeoutError,
                PeerRefused,
                PeerProtocolError,
                EndOfStream,
                anyio.BrokenResourceError,
            ) as exc:
                if isinstance(exc, PeerRefused):
                    log.warning("peer.refused", peer=self.address.name, reason=str(exc))
                else:
                    self._note_unreachable(exc)
                self._dial_scopes.pop(dial_id, None)
                self._feed(
                    conn.ConnectFailed(
                        now=self._clock(),
                        dial_id=dial_id,
                        jitter=self._rng.random(),
                        reason=f"{exc.__class__.__name__}: {exc}",
                    )
                )
                return
            self._dial_scopes.pop(dial_id, None)
            self._streams[dial_id] = stream
            self._feed(conn.Connected(now=self._clock(), dial_id=dial_id))
            if dial_id in self._streams:
                # Watch for the peer closing: it never writes to us on this connection.
                await self._watch(dial_id, stream)

    async def _watch(self, dial_id: int, stream: anyio.abc.ByteStream) -> None:
        try:
            while True:
                await stream.receive(RECEIVE_CHUNK_BYTES)
        except (EndOfStream, OSError, anyio.BrokenResourceError, anyio.ClosedResourceError):
            pass
        self._lost(dial_id, "closed by peer")

    async def _send_loop(self, dial_id: int) -> None:
        try:
            while dial_id in self._streams:
                frames = await self.queue.get_batch(512)
                stream = self._streams.get(dial_id)
                if stream is None:
                    # The connection went away while we waited: these frames are lost, which
                    # the protocol tolerates (the queue counts them as taken, not dropped).
                    return
                await stream.send(b"".join(frames))
        except (OSError, anyio.BrokenResourceError, anyio.ClosedResourceError) as exc:
            self._lost(dial_id, f"write failed: {exc.__class__.__name__}")
        except EndOfStream:
            return
        finally:
            if self._sender_dial == dial_id:
                self._sender_dial = None

    def _lost(self, dial_id: int, reason: str) -> None:
        if self.state.dial_id == dial_id and self.state.phase is conn.ConnPhase.CONNECTED:
            self._feed(
                conn.ConnectionLost(
                    now=self._clock(), dial_id=dial_id, jitter=self._rng.random(), reason=reason
                )
            )

    def close(self) -> None:
        self.queue.close()
        self._feed(conn.Close(now=self._clock()))


async def _close_quietly(stream: anyio.abc.ByteStream) -> None:
    with (
        anyio.CancelScope(shield=True),
        contextlib.suppress(OSError, anyio.BrokenResourceError, anyio.ClosedResourceError),
    ):
        await stream.aclose()


MessageHandler = Callable[[str, Message], None]
CheckHandler = Callable[[str, int, int], None]
CatchupServer = Callable[[str, anyio.abc.ByteStream, FrameDecoder, list[Any]], Awaitable[None]]


class PeerNetwork:
    """All outgoing links of a node plus its listener for incoming connections."""

    def __init__(
        self,
        *,
        cluster_id: str,
        me: str,
        identities: PeerIdentities,
        listen: PeerAddress,
        peers: Sequence[PeerAddress],
        on_message: MessageHandler,
        on_catchup: CatchupServer,
        on_check: CheckHandler,
        queue_items: int,
        max_frame_bytes: int,
        rng: random.Random,
        clock: Callable[[], float],
        settings: conn.ConnSettings | None = None,
        tls: TlsContexts | None = None,
    ) -> None:
        self.cluster_id = cluster_id
        self.tls = tls
        self.me = me
        self.identities = identities
        self.listen = listen
        self.known = {p.name: p for p in peers}
        self._on_message = on_message
        self._on_catchup = on_catchup
        self._on_check = on_check
        self.max_frame_bytes = max_frame_bytes
        self.links = {
            p.name: PeerLink(
                p,
                cluster_id=cluster_id,
                me=me,
                identities=identities,
                settings=settings or conn.ConnSettings(),
                queue_items=queue_items,
                max_frame_bytes=max_frame_bytes,
                rng=rng,
                clock=clock,
                tls=tls,
            )
            for p in peers
        }
        self._settings = settings or conn.ConnSettings()
        self._queue_items = queue_items
        self._rng = rng
        self._clock = clock
        self._tg: anyio.abc.TaskGroup | None = None
        self.bad_connections = 0
        self.incoming = 0

    def add_peer(self, address: PeerAddress) -> None:
        """A node the replicated membership added: admit its handshakes and dial it (a known
        name whose address changed gets a new link)."""
        old = self.known.get(address.name)
        if old == address or address.name == self.me:
            return
        self.known[address.name] = address
        link = PeerLink(
            address,
            cluster_id=self.cluster_id,
            me=self.me,
            identities=self.identities,
            settings=self._settings,
            queue_items=self._queue_items,
            max_frame_bytes=self.max_frame_bytes,
            rng=self._rng,
            clock=self._clock,
            tls=self.tls,
        )
        previous = self.links.get(address.name)
        if previous is not None:
            previous.close()
        self.links[address.name] = link
        if self._tg is not None:
            self._tg.start_soon(link.run)
        log.info("peer.added", peer=address.name, address=address.text)

    # ---------------------------------------------------------------- sending

    def send(self, to: str, msg: Message) -> None:
        link = self.links.get(to)
        if link is not None:
            link.offer(encode_frame(["p", message_to_wire(msg)]))

    def send_check(self, to: str, slot: int, content_hash: int) -> None:
        link = self.links.get(to)
        if link is not None:
            link.offer(encode_frame(["c", slot, content_hash]))

    def broadcast(self, peers: Sequence[str], msg: Message) -> None:
        body: bytes = msgpack.packb(["p", message_to_wire(msg)], use_bin_type=True)
        frame = encode_frame_body(body)
        for name in peers:
            link = self.links.get(name)
            if link is not None:
                link.offer(frame)

    # ---------------------------------------------------------------- serving

    async def serve(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        listener = await anyio.create_tcp_listener(
            local_host=self.listen.host, local_port=self.listen.port, reuse_port=False
        )
        async with listener, anyio.create_task_group() as tg:
            self._tg = tg
            for link in self.links.values():
                tg.start_soon(link.run)
            task_status.started()
            await listener.serve(self._handle_incoming, task_group=tg)

    async def _accept_tls(self, raw: anyio.abc.SocketStream, remote: str) -> TLSStream | None:
        """The listener's TLS handshake, bounded in time; None (logged) if it failed."""
        assert self.tls is not None
        try:
            with anyio.fail_after(HANDSHAKE_TIMEOUT_SECS):
                return await accept_tls(raw, self.tls.current().peer_server)
        except (OSError, TimeoutError, anyio.BrokenResourceError, EndOfStream) as exc:
            self.bad_connections += 1
            log.warning("peer.tls_refused", remote=remote, reason=describe_handshake_error(exc))
            await drain_and_close(raw)
            return None

    async def _handle_incoming(self, raw: anyio.abc.SocketStream) -> None:
        self.incoming += 1
        try:
            remote = str(raw.extra(anyio.abc.SocketAttribute.remote_address))
        except Exception:  # noqa: BLE001 (the address is only for the log)
            remote = "?"
        stream: anyio.abc.ByteStream = raw
        if self.tls is not None:
            wrapped = await self._accept_tls(raw, remote)
            if wrapped is None:
                return
            stream = wrapped
        decoder = FrameDecoder(self.max_frame_bytes)
        pending: list[Any] = []
        async with stream:
            try:
                with anyio.fail_after(HANDSHAKE_TIMEOUT_SECS):
                    hello = await read_frame(stream, decoder, pending)
                peer = self._check_hello(hello)
                if peer.startswith("!"):
                    log.warning("peer.refused_incoming", remote=str(remote), reason=peer[1:])
                    await stream.send(encode_frame(["refused", peer[1:]]))
                    self.bad_connections += 1
                    return
                purpose = hello[4]
                why = self._cert_refusal(stream, peer)
                if why is None:
                    why = self.identities.admit(peer, hello[5])
                if why is not None:
                    log.warning("peer.refused_incoming", remote=str(remote), peer=peer, reason=why)
                    await stream.send(encode_frame(["refused", why]))
                    self.bad_connections += 1
                    return
                await stream.send(encode_frame(["welcome", self.me, self.identities.local()]))
                if purpose == "catchup":
                    await self._on_catchup(peer, stream, decoder, pending)
                    return
                while True:
                    frame = await read_frame(stream, decoder, pending)
                    self._dispatch(peer, frame)
            except (
                EndOfStream,
                anyio.BrokenResourceError,
                anyio.ClosedResourceError,
                ConnectionError,
            ):
                return
            except TimeoutError:
                self.bad_connections += 1
                log.warning("peer.handshake_timeout", remote=str(remote))
            except (PeerProtocolError, WireError) as exc:
                self.bad_connections += 1
                log.warning("peer.protocol_error", remote=str(remote), reason=str(exc))
            except OSError as exc:
                log.info("peer.connection_error", remote=str(remote), reason=str(exc))

    def _cert_refusal(self, stream: anyio.abc.ByteStream, peer: str) -> str | None:
        """With TLS: why the certificate does not allow the name claimed in the hello."""
        if self.tls is None:
            return None
        problem = cert_problem(stream.extra(TLSAttribute.peer_certificate, None), peer)
        if problem is None:
            return None
        return f"claims to be {peer!r} but its {problem}"

    def _check_hello(self, hello: Any) -> str:
        if not (isinstance(hello, list) and hello and hello[0] == "hello" and len(hello) >= 2):
            raise PeerProtocolError(f"expected a hello frame, got {str(hello)[:80]!r}")
        if hello[1] != PROTOCOL_VERSION:
            return (
                f"!unsupported peer protocol version {hello[1]!r} (this node speaks "
                f"{PROTOCOL_VERSION}; run the same parakoon version on every node)"
            )
        if len(hello) != 6:
            raise PeerProtocolError(f"expected a 6-field hello frame, got {str(hello)[:80]!r}")
        _, _version, cluster_id, name, purpose, _identity = hello
        if cluster_id != self.cluster_id:
            return f"!wrong cluster id {cluster_id!r} (this is {self.cluster_id!r})"
        if not isinstance(name, str) or name not in self.known:
            return f"!unknown node name {name!r}"
        if purpose not in ("msg", "catchup"):
            return f"!unknown purpose {purpose!r}"
        return name

    def _dispatch(self, peer: str, frame: Any) -> None:
        if (
            isinstance(frame, list)
            and len(frame) == 3
            and frame[0] == "c"
            and type(frame[1]) is int
            and type(frame[2]) is int
        ):
            self._on_check(peer, frame[1], frame[2])
            return
        if not (isinstance(frame, list) and len(frame) == 2 and frame[0] == "p"):
            raise PeerProtocolError(f"unexpected frame from {peer}: {str(frame)[:80]!r}")
        msg = message_from_wire(frame[1])
        self._on_message(peer, msg)

    def close(self) -> None:
        for link in self.links.values():
            link.close()

    def link_status(self, heard: Mapping[str, float]) -> tuple[PeerStatus, ...]:
        """Each outgoing link's state, for the node's status; ``heard`` maps a peer to when
        (``time.monotonic``) its last message arrived."""
        now = time.monotonic()
        out = []
        for name, link in self.links.items():
            stats = link.queue.statistics()
            last = heard.get(name)
            out.append(
                PeerStatus(
                    name=name,
                    address=link.address.text,
                    connected=link.connected,
                    last_heard_secs=None if last is None else max(0.0, now - last),
                    queued=stats.queued,
                    dropped=stats.dropped,
                )
            )
        return tuple(out)
