# spec: docs/spec/arakoon-client-protocol.md
"""The Arakoon client-protocol server: one task per connection, one request at a time.

Rules of this file
------------------

* A connection is: prologue (checked: magic, version, cluster id; any mismatch closes without a
  word, §3.1), then requests handled strictly one after another: decode one, answer it with one
  ``send``, and only then decode the next (§1, §11 rule 19). Bytes are fed to the decoder only
  after it asked for more, so a connection holds at most one request plus one receive chunk.
* Malformed input closes only that connection: the decoder's ``RemoteProtocolError`` carries the
  exact answer the reference server gives before closing (or none). Every other failure of one
  connection (peer reset, a backend bug) is logged and closes only that connection.
* After an error response, the connection stays open only for the codes of §4.2
  (``keeps_connection_open``). Before a server-side close the server half-closes and drains what
  the client is still sending, for at most ``linger_secs`` and ``linger_bytes_max``, so that the
  response is not lost to a TCP reset when the client sent more than was read (a refused
  oversized value, a pipelined request).
* Connection limit: beyond ``max_connections`` open connections, a new one gets rc 0xFE "too many
  clients" before anything is read, and is closed (§3.1, §11 rule 22); the log says so at most
  once per ``FULL_LOG_SECS`` with the last refused address and the count since the last line.
* Slots are not held for nothing: one sweeper task (no timer per request) closes a connection
  that has not sent its whole prologue within ``prologue_timeout_secs``, whose current request
  has been trickling in for longer than ``request_timeout_secs`` (slowloris), or, if
  ``idle_timeout_secs`` > 0, that sent no request for that long. Each close is logged with the
  peer's address.
* Output is bounded too. An answer is held until the client has taken it (``send`` returns once
  the transport's buffer is below its high-water mark), so a client that pipelines requests and
  never reads pins one answer. Two rules bound that: an answer the client has not taken within
  ``request_timeout_secs`` closes the connection (a slow reader is a slowloris in reverse), and
  while the answers being sent add up to ``output_budget_bytes`` or more, a read whose answer
  carries stored keys or values (``_BULK_READS``) waits before it is answered; writes and
  small requests go on. The check and the building of the answer happen without an await in
  between for reads that need no waiting, so the held output stays below the budget plus one
  answer (plus the transports' small write buffers): a node with many large answers in flight
  slows its readers down instead of growing.
* Shutdown (``begin_shutdown`` or ``backend.going_down``): a new connection gets rc 0x10
  "closing socket"; an open connection is closed, without an answer, when its next request
  arrives (§3.1). A request already being handled is answered.
* Request classes (§6, §7): C reads call ``backend.check_read(consistency)`` and then read the
  local store with no await in between; M reads do the same with ``Consistent``; W requests go
  to ``backend.write``; A requests are answered from the backend's state; X requests are the
  admin operations through the backend: ``collapse``, ``drop_master``, GET_DB (a backup file,
  streamed in chunks by ``_stream_db``), and OPT_DB, DEFRAG_DB and COPY_DB_TO_HEAD, which for
  an in-memory store mean "write a head snapshot now" (``compact``).
* TLS (``tls_service``): ``serve`` gets a function that returns the context for a new
  connection (so rotated certificates apply to new connections). The TLS handshake runs right
  after accept, bounded by ``prologue_timeout_secs``; the Arakoon bytes then run unchanged
  inside. A failed handshake (plain TCP, no or a wrong client certificate, an expired one) is
  logged with the client's address and the reason and closes that connection only; the alert
  that says why is sent first (``tls_accept.py``). On asyncio the TLS layer runs over the lean
  stream of ``fast.py``.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import ssl
import struct
import time
from collections.abc import Callable
from typing import Any, Final, Protocol, cast

import anyio
import anyio.abc
import structlog
from anyio.abc import SocketAttribute
from anyio.streams.tls import TLSStream

import parakoon_kv as kv
from parakoon_client.codec import (
    CONSISTENT,
    DEFAULT_LIMITS,
    GOING_DOWN_RESPONSE,
    MEMBER_HOOK,
    NEED_DATA,
    TOO_MANY_CLIENTS_RESPONSE,
    UNKNOWN_FAILURE_RESPONSE,
    AnyRequest,
    Assert,
    AssertExists,
    AtLeast,
    Collapse,
    CommandCode,
    Confirm,
    Consistency,
    CopyDbToHead,
    CurrentState,
    DecoderState,
    DefragDb,
    Delete,
    DeletePrefix,
    DropMaster,
    ErrorCode,
    Exists,
    ExpectProgressPossible,
    FlushStore,
    Get,
    GetDb,
    GetKeyCount,
    GetTxid,
    Limits,
    MultiGet,
    MultiGetOption,
    Nop,
    OptimizeDb,
    Ping,
    PrefixKeys,
    Prologue,
    Range,
    RangeEntries,
    RemoteProtocolError,
    Replace,
    RequestDecoder,
    RevRangeEntries,
    Sequence,
    Set,
    Statistics,
    TestAndSet,
    Unsupported,
    USequence,
    UserFunction,
    UserHook,
    Version,
    WhoMaster,
    encode_error,
    encode_response,
    first_internal_update,
)
from parakoon_client.tls import describe_handshake_error

from .backend import Backend, BackendError, BadInput
from .convert import error_response, response_for_result, write_update
from .fast import ProtocolStream, listen, running_on_asyncio
from .stats import OperationStatistics
from .tls_accept import accept_tls, drain_and_close

log = structlog.get_logger("parakoon.clientserver")

RECEIVE_BYTES: Final = 65536
"""Most bytes read from a connection at once."""
PROLOGUE_TIMEOUT_SECS_DEFAULT: Final = 10.0
REQUEST_TIMEOUT_SECS_DEFAULT: Final = 30.0
IDLE_TIMEOUT_SECS_DEFAULT: Final = 900.0
OUTPUT_BUDGET_BYTES_DEFAULT: Final = 256 * 1024 * 1024
"""Most bytes of answers held for clients that have not taken them yet (see the file rules)."""
SWEEP_SECS: Final = 0.5
"""How often the sweeper looks for connections past a timeout."""
FULL_LOG_SECS: Final = 10.0
"""At most one "too many clients" log line per this many seconds."""
LINGER_SECS_DEFAULT: Final = 1.0
"""How long a closing connection drains what the client still sends (see the file rules)."""
LINGER_BYTES_MAX_DEFAULT: Final = 16 * 1024 * 1024
"""Most bytes a closing connection drains before it closes anyway."""
MIN_CONNECTIONS_LIMIT: Final = 200
COMMAND_WORD_BYTES: Final = 4


def default_max_connections() -> int:
    """§11 rule 22: the larger of (soft open-files limit - 200) and 200."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 65536
    return max(soft - 200, MIN_CONNECTIONS_LIMIT)


_OK = b"\x00\x00\x00\x00"
_INT32: Final = struct.Struct("<i")
_INT64: Final = struct.Struct("<q")
DB_CHUNK_BYTES: Final = 1 << 20
"""GET_DB sends the backup in pieces of this size."""
# Requests whose answers carry stored keys or values, so can be large: they wait while the
# held output is at its budget (see the file rules). Every other answer is a few bytes.
_BULK_READS: Final = frozenset(
    {Get, MultiGet, MultiGetOption, Range, RangeEntries, RevRangeEntries, PrefixKeys}
)
_NOT_FOUND_GET = encode_error(ErrorCode.NOT_FOUND, kv.errors.NOT_FOUND_MESSAGE)
_INTERNAL_UPDATE = "update of type {} may not be sent by clients"


class ServerCounters:
    """What the server counted since it started (read them; do not write)."""

    __slots__ = (
        "accepted",
        "protocol_errors",
        "refused_going_down",
        "refused_max_connections",
        "requests",
        "timed_out",
        "unexpected_errors",
    )

    def __init__(self) -> None:
        self.accepted = 0
        self.refused_max_connections = 0
        self.refused_going_down = 0
        self.protocol_errors = 0
        self.requests = 0
        self.timed_out = 0
        self.unexpected_errors = 0


class _Watch:
    """What the sweeper knows of one connection (updated on each receive, no timers)."""

    __slots__ = (
        "busy_since",
        "cancel",
        "last",
        "peer",
        "prologue_done",
        "sending",
        "sending_since",
        "started",
    )

    def __init__(self, peer: str, now: float, cancel: anyio.CancelScope) -> None:
        self.peer = peer
        self.started = now
        self.last = now  # the last complete request (or the connection's start)
        self.busy_since: float | None = None  # when the request being received began
        self.sending_since: float | None = None  # when the answer being sent was handed over
        self.sending = 0  # its size in bytes
        self.prologue_done = False
        self.cancel = cancel


class ClientServer:
    """Serves the client protocol for one backend. Start it with :func:`serve`.

    Raises nothing out of a connection: every connection's failure ends that connection only.
    """

    def __init__(
        self,
        backend: Backend,
        *,
        limits: Limits = DEFAULT_LIMITS,
        max_connections: int | None = None,
        linger_secs: float = LINGER_SECS_DEFAULT,
        linger_bytes_max: int = LINGER_BYTES_MAX_DEFAULT,
        prologue_timeout_secs: float = PROLOGUE_TIMEOUT_SECS_DEFAULT,
        request_timeout_secs: float = REQUEST_TIMEOUT_SECS_DEFAULT,
        idle_timeout_secs: float = IDLE_TIMEOUT_SECS_DEFAULT,
        output_budget_bytes: int = OUTPUT_BUDGET_BYTES_DEFAULT,
    ) -> None:
        self.backend = backend
        if output_budget_bytes < 1:
            raise ValueError(f"output_budget_bytes must be at least 1, not {output_budget_bytes}")
        self.output_budget_bytes = output_budget_bytes
        self._output_held = 0  # bytes of answers handed to ``send`` and not yet taken
        self._output_freed: anyio.Event | None = None  # set when some are taken, if anyone waits
        self.prologue_timeout_secs = prologue_timeout_secs
        self.request_timeout_secs = request_timeout_secs
        self.idle_timeout_secs = idle_timeout_secs
        self._watches: dict[int, _Watch] = {}
        self._refused_since_log = 0
        self._full_logged_at = -FULL_LOG_SECS
        self.limits = limits
        self.max_connections = (
            default_max_connections() if max_connections is None else max_connections
        )
        if self.max_connections < 1:
            raise ValueError(f"max_connections must be at least 1, not {self.max_connections}")
        self.linger_secs = linger_secs
        self.linger_bytes_max = linger_bytes_max
        self.counters = ServerCounters()
        self.operations = OperationStatistics()
        self.port: int | None = None
        self._open_connections = 0
        self._shutting_down = False

    @property
    def open_connections(self) -> int:
        """Connections being served now (refused ones are not counted)."""
        return self._open_connections

    @property
    def output_held(self) -> int:
        """Bytes of answers being sent to clients that have not taken them yet."""
        return self._output_held

    @property
    def going_down(self) -> bool:
        return self._shutting_down or self.backend.going_down

    def begin_shutdown(self) -> None:
        """Refuse new connections with E_GOING_DOWN and close open ones at their next request."""
        self._shutting_down = True

    # ---------------------------------------------------------------- connections

    async def handle_connection(self, stream: ClientStream) -> None:
        """Serve one accepted connection until it closes. Never raises (except cancellation)."""
        peer = _peer_name(stream)
        watch: _Watch | None = None
        try:
            if self.going_down:
                self.counters.refused_going_down += 1
                await self._refuse(stream, GOING_DOWN_RESPONSE)
                return
            if self._open_connections >= self.max_connections:
                self.counters.refused_max_connections += 1
                self._refused_since_log += 1
                now = time.monotonic()
                if now - self._full_logged_at >= FULL_LOG_SECS:
                    log.warning(
                        "client.refused",
                        peer=peer,
                        reason=f"too many clients (max_client_connections={self.max_connections})",
                        refused_since_last_line=self._refused_since_log,
                    )
                    self._full_logged_at = now
                    self._refused_since_log = 0
                await self._refuse(stream, TOO_MANY_CLIENTS_RESPONSE)
                return
            self._open_connections += 1
            self.counters.accepted += 1
            with anyio.CancelScope() as scope:
                watch = _Watch(peer, time.monotonic(), scope)
                self._watches[id(watch)] = watch
                try:
                    await self._converse(stream, peer, watch)
                finally:
                    del self._watches[id(watch)]
                    self._open_connections -= 1
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, anyio.EndOfStream):
            pass
        except OSError as exc:
            log.info("client.io_error", peer=peer, error=str(exc))
        except Exception as exc:
            self.counters.unexpected_errors += 1
            log.exception("client.connection_failed", peer=peer, error=repr(exc))
        finally:
            if (
                watch is not None
                and watch.sending_since is not None
                and isinstance(stream, ProtocolStream)
            ):
                # Closed while an answer was still unread: drop it. A plain close would keep
                # it in the transport for as long as the client keeps its socket open.
                stream.abort()
            with anyio.CancelScope(shield=True):
                await stream.aclose()

    async def _refuse(self, stream: ClientStream, response: bytes) -> None:
        await stream.send(response)
        await self._linger(stream)

    async def _linger(self, stream: ClientStream) -> None:
        """Half-close, then drain the client's bytes (bounded in time and size) before closing."""
        try:
            # TLS has no half-close (anyio raises NotImplementedError): just drain.
            with contextlib.suppress(NotImplementedError):
                await stream.send_eof()
            drained = 0
            with anyio.move_on_after(self.linger_secs):
                while drained < self.linger_bytes_max:
                    drained += len(await stream.receive(RECEIVE_BYTES))
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, anyio.EndOfStream, OSError):
            pass

    def sweep(self, now: float) -> None:
        """Close every connection past one of its timeouts (see the file rules)."""
        idle = self.idle_timeout_secs
        for watch in list(self._watches.values()):
            if not watch.prologue_done:
                if now - watch.started <= self.prologue_timeout_secs:
                    continue
                why = f"no complete prologue within {self.prologue_timeout_secs:g} s"
            elif watch.sending_since is not None:
                if now - watch.sending_since <= self.request_timeout_secs:
                    continue
                why = (
                    f"an answer of {watch.sending} bytes not taken by the client "
                    f"within {self.request_timeout_secs:g} s"
                )
            elif watch.busy_since is not None:
                if now - watch.busy_since <= self.request_timeout_secs:
                    continue
                why = f"a request still incomplete after {self.request_timeout_secs:g} s"
            elif idle > 0 and now - watch.last > idle:
                why = f"no request for {idle:g} s"
            else:
                continue
            self.counters.timed_out += 1
            log.info("client.timed_out", peer=watch.peer, reason=why)
            watch.cancel.cancel()

    async def run_sweeper(self) -> None:
        while True:
            await anyio.sleep(SWEEP_SECS)
            self.sweep(time.monotonic())

    async def _converse(self, stream: ClientStream, peer: str, watch: _Watch) -> None:
        decoder = RequestDecoder(self.limits)
        backend = self.backend
        receive = stream.receive
        while True:
            try:
                event = decoder.next_event()
            except RemoteProtocolError as exc:
                self.counters.protocol_errors += 1
                log.info("client.protocol_error", peer=peer, reason=exc.reason)
                if exc.response is not None:
                    await stream.send(exc.response)
                await self._linger(stream)
                return
            if event is NEED_DATA:
                try:
                    data = await receive(RECEIVE_BYTES)
                except anyio.EndOfStream:
                    if decoder.buffered_bytes:
                        log.info(
                            "client.truncated_request",
                            peer=peer,
                            buffered=decoder.buffered_bytes,
                            offset=decoder.stream_offset,
                        )
                    return
                decoder.feed(data)
                if watch.busy_since is None:
                    watch.busy_since = time.monotonic()
                if (
                    self.going_down
                    and decoder.state is DecoderState.REQUESTS
                    and decoder.buffered_bytes >= COMMAND_WORD_BYTES
                ):
                    # §3.1: during shutdown the connection closes once a command word is in,
                    # without waiting for the rest of the request.
                    return
                continue
            # A whole prologue or request is in: the connection is not stalling.
            watch.busy_since = None if decoder.buffered_bytes == 0 else time.monotonic()
            if isinstance(event, Prologue):
                watch.prologue_done = True
                watch.last = time.monotonic()
                if event.cluster_id != backend.cluster_id:
                    log.info("client.wrong_cluster", peer=peer, cluster_id=event.cluster_id)
                    await self._linger(stream)
                    return
                continue
            if self.going_down:
                # §3.1: a request on an open connection during shutdown closes it, unanswered.
                return
            self.counters.requests += 1
            watch.last = time.monotonic()
            while self._output_held >= self.output_budget_bytes and type(event) in _BULK_READS:
                # Bounded: every held answer is taken or its connection closed by the sweeper
                # within request_timeout_secs. Waiting here is the node's doing, not a stalled
                # request, so the request timeout does not run meanwhile.
                watch.busy_since = None
                if self._output_freed is None:
                    self._output_freed = anyio.Event()
                await self._output_freed.wait()
            if type(event) is GetDb:
                close = await self._stream_db(stream, watch)
            else:
                response, close = await self.answer(event)
                await self._send(stream, watch, response)
            if close:
                await self._linger(stream)
                return

    async def _send(self, stream: ClientStream, watch: _Watch, response: bytes) -> None:
        """Send one answer, counting it as held output until the client has taken it."""
        size = len(response)
        self._output_held += size
        watch.sending = size
        watch.sending_since = time.monotonic()
        try:
            await stream.send(response)
            watch.sending_since = None
        finally:
            self._output_held -= size
            freed = self._output_freed
            if freed is not None:
                self._output_freed = None
                freed.set()

    async def _stream_db(self, stream: ClientStream, watch: _Watch) -> bool:
        """GET_DB (§8.7): rc 0, int64 length, then the backup file's bytes, in chunks (each one
        a held answer of its own, so the output bound and the unread-answer timeout apply).
        Returns whether to close the connection."""
        try:
            path = await self.backend.get_db()
        except (BackendError, kv.KvError) as error:
            response, close = error_response(error)
            await self._send(stream, watch, response)
            return close
        except Exception as exc:  # as in answer(): any other failure is rc 0xFF and a close
            self.counters.unexpected_errors += 1
            log.exception("client.get_db_failed", peer=watch.peer, error=repr(exc))
            await self._send(stream, watch, UNKNOWN_FAILURE_RESPONSE)
            return True
        try:
            with open(path, "rb") as f:  # noqa: ASYNC230 (reads go through a worker thread)
                size = os.fstat(f.fileno()).st_size
                await self._send(stream, watch, _OK + _INT64.pack(size))
                sent = 0
                while sent < size:
                    chunk = await anyio.to_thread.run_sync(f.read, DB_CHUNK_BYTES)
                    if not chunk:
                        raise OSError(f"{path}: ended after {sent} of {size} bytes")
                    await self._send(stream, watch, chunk)
                    sent += len(chunk)
        finally:
            path.unlink(missing_ok=True)
        return False

    # ---------------------------------------------------------------- requests

    async def answer(self, request: AnyRequest) -> tuple[bytes, bool]:
        """The response to one request and whether to close the connection after it.

        Never raises (except cancellation): backend and store errors become error responses,
        and anything unexpected becomes rc 0xFF "unknown failure" plus a close.
        """
        started = time.perf_counter()
        try:
            response, close, size = await self._dispatch(request)
        except (BackendError, kv.KvError) as error:
            response, close = error_response(error)
            return response, close
        except Exception as exc:
            self.counters.unexpected_errors += 1
            log.exception("client.request_failed", request=type(request).__name__, error=repr(exc))
            return UNKNOWN_FAILURE_RESPONSE, True
        if not close and response[:4] == _OK:
            self.operations.record(request, time.perf_counter() - started, size)
        return response, close

    async def _dispatch(self, request: AnyRequest) -> tuple[bytes, bool, int | None]:
        """(response, close, size for the statistics). Raises BackendError / KvError."""
        backend = self.backend
        # The store is read again after every check_read: an AtLeast read may wait there, and a
        # catch-up meanwhile may replace the node's store with one installed from a snapshot.
        store = backend.store
        match request:
            # -- the hot two first
            case Get(key=key, consistency=consistency):
                await backend.check_read(consistency)
                store = backend.store
                value = store.get_option(key)
                if value is None:
                    return _NOT_FOUND_GET, False, None
                return encode_response(request, value), False, len(value)
            case Set(value=value):
                response, close = await self._write(request)
                return response, close, len(value)
            # -- class W
            case Delete() | TestAndSet() | Replace() | Nop():
                response, close = await self._write(request)
                return response, close, None
            case DeletePrefix():
                result = await backend.write(_write_update(request))
                response, close = response_for_result(request, result)
                return response, close, result if isinstance(result, int) else None
            case Sequence(updates=updates):
                internal = first_internal_update(USequence(updates=updates))
                if internal is not None:
                    message = _INTERNAL_UPDATE.format(type(internal).__name__)
                    return encode_error(ErrorCode.BAD_INPUT, message), False, None
                response, close = await self._write(request)
                return response, close, None
            case UserFunction(name=name):
                # §7: an unknown function is E_BAD_INPUT on any node, before the master check.
                if name not in store.user_functions:
                    error = kv.BadInput.unknown_user_function(name)
                    return encode_error(error.code, error.message), False, None
                response, close = await self._write(request)
                return response, close, None
            case Confirm(key=key, value=value):
                # §11 rule 12: a consistent read first; consensus only if the value differs.
                await backend.check_read(CONSISTENT)
                store = backend.store
                if store.get_option(key) == value:
                    return _OK, False, None
                response, close = await self._write(request)
                return response, close, None
            # -- class C
            case Exists(key=key, consistency=consistency):
                await backend.check_read(consistency)
                store = backend.store
                return encode_response(request, store.exists(key)), False, None
            case MultiGet(keys=keys, consistency=consistency):
                await backend.check_read(consistency)
                store = backend.store
                # §8.3: the missing key reported is the one nearest the end of the wire order,
                # and kv reports the first missing key of the order it is given.
                values = store.multi_get(reversed(keys))
                values.reverse()
                return encode_response(request, values), False, None
            case MultiGetOption(keys=keys, consistency=consistency):
                await backend.check_read(consistency)
                store = backend.store
                return encode_response(request, store.multi_get_option(keys)), False, None
            case Range(consistency=consistency) | RangeEntries(consistency=consistency):
                await backend.check_read(consistency)
                store = backend.store
                read = store.range if isinstance(request, Range) else store.range_entries
                found: list[Any] = read(
                    request.first,
                    request.first_inclusive,
                    request.last,
                    request.last_inclusive,
                    request.max_keys,
                )
                return encode_response(request, found), False, len(found)
            case RevRangeEntries(consistency=consistency):
                await backend.check_read(consistency)
                store = backend.store
                pairs = store.rev_range_entries(
                    request.first,
                    request.first_inclusive,
                    request.last,
                    request.last_inclusive,
                    request.max_keys,
                )
                return encode_response(request, pairs), False, len(pairs)
            case PrefixKeys(prefix=prefix, max_keys=max_keys, consistency=consistency):
                await backend.check_read(consistency)
                store = backend.store
                keys_found = store.prefix_keys(prefix, max_keys)
                return encode_response(request, keys_found), False, len(keys_found)
            case Assert(key=key, expected=expected, consistency=consistency):
                await backend.check_read(consistency)
                store = backend.store
                store.assert_value(key, expected)
                return _OK, False, None
            case AssertExists(key=key, consistency=consistency):
                await backend.check_read(consistency)
                store = backend.store
                store.assert_exists(key)
                return _OK, False, None
            case UserHook(name=name, consistency=consistency):
                if name.startswith(MEMBER_HOOK) and hasattr(backend, "change_membership"):
                    return await self._member_hook(name[len(MEMBER_HOOK) :], consistency)
                # No other hooks are registered on this server (§8.5).
                await backend.check_read(consistency)
                store = backend.store
                return encode_error(ErrorCode.USERHOOK_NOT_FOUND, name), True, None
            # -- class M
            case GetKeyCount():
                await backend.check_read(CONSISTENT)
                store = backend.store
                return encode_response(request, store.key_count()), False, None
            case Unsupported(code=code):
                return await self._unsupported(request, code)
            # -- class A
            case Ping(cluster_id=cluster_id):
                if cluster_id != backend.cluster_id:
                    # §8.1 and §13 item 7: what the reference server actually answers.
                    return UNKNOWN_FAILURE_RESPONSE, True, None
                v = backend.version()
                text = f"Arakoon {v.major}.{v.minor}.{v.patch}"
                return encode_response(request, text), False, None
            case WhoMaster():
                return encode_response(request, backend.who_master()), False, None
            case ExpectProgressPossible():
                answer = backend.expect_progress_possible()
                return encode_response(request, answer), False, None
            case Statistics():
                report = self.operations.report(backend.statistics())
                return encode_response(request, report), False, None
            case Version():
                return encode_response(request, backend.version()), False, None
            case CurrentState():
                return encode_response(request, backend.current_state()), False, None
            case GetTxid():
                return encode_response(request, AtLeast(stamp=backend.txid())), False, None
            case FlushStore():
                # The store lives in memory and the WAL is made durable before every answer,
                # so there is nothing batched to flush.
                return _OK, False, None
            # -- class X
            case Collapse(tlogs_to_keep=n):
                if n < 1:
                    return UNKNOWN_FAILURE_RESPONSE, True, None
                progress = await backend.collapse(n)
                return encode_response(request, tuple(progress)), False, None
            case DropMaster():
                await backend.drop_master()
                return _OK, False, None
            case CopyDbToHead(tlogs_to_keep=n):
                if n < 1:
                    return UNKNOWN_FAILURE_RESPONSE, True, None
                await backend.compact()
                return _OK, False, None
            case OptimizeDb() | DefragDb():
                await backend.compact()
                return _OK, False, None
            case GetDb():
                raise AssertionError("GET_DB is streamed by _stream_db")
            case _:
                raise AssertionError(f"unhandled request {request!r}")

    async def _write(self, request: AnyRequest) -> tuple[bytes, bool]:
        result = await self.backend.write(_write_update(request))
        return response_for_result(request, result)

    async def _member_hook(
        self, text: str, consistency: Consistency
    ) -> tuple[bytes, bool, int | None]:
        """The ``parakoon.member`` hook (docs/operations.md, "Membership changes"): the rest of
        the hook's name is a JSON request; the answer is rc 0 and a JSON text, or an error."""
        backend: Any = self.backend
        try:
            request = json.loads(text)
            op = request["op"]
            if not isinstance(op, str):
                raise TypeError("op")
        except (ValueError, KeyError, TypeError) as exc:
            raise BadInput(f"parakoon.member: malformed request {text[:200]!r}: {exc}") from None
        if op == "list":
            answer = backend.members()
        else:
            node, address = request.get("node"), request.get("address", "")
            if not isinstance(node, str) or not isinstance(address, str):
                raise BadInput("parakoon.member: node and address must be strings")
            await backend.check_read(consistency)
            answer = await backend.change_membership(op, node, address)
        body = json.dumps(answer).encode()
        return _OK + _INT32.pack(len(body)) + body, False, None

    async def _unsupported(self, request: Unsupported, code: int) -> tuple[bytes, bool, None]:
        """§12: what a reference node that never had nursery configured answers."""
        if code == CommandCode.GET_INTERVAL:
            await self.backend.check_read(CONSISTENT)
            return encode_response(request, None), False, None
        if code in (CommandCode.GET_ROUTING, CommandCode.GET_NURSERY_CFG):
            await self.backend.check_read(CONSISTENT)
            return _NOT_FOUND_GET, False, None
        name = CommandCode(code).name
        message = f"{name} is not supported by this server"
        return encode_error(ErrorCode.NOT_SUPPORTED, message), True, None


def _write_update(request: AnyRequest) -> Any:
    update = write_update(request)
    if update is None:  # pragma: no cover - the dispatcher only passes write requests
        raise AssertionError(f"{type(request).__name__} is not a write")
    return update


class ClientStream(Protocol):
    """What the server needs of a connection: anyio's socket stream, or fast.ProtocolStream."""

    async def receive(self, max_bytes: int = 65536) -> bytes: ...

    async def send(self, item: bytes) -> None: ...

    async def send_eof(self) -> None: ...

    async def aclose(self) -> None: ...

    def extra(self, attribute: Any, default: Any = ...) -> Any: ...


def _peer_name(stream: ClientStream) -> str:
    try:
        address = stream.extra(SocketAttribute.remote_address)
    except anyio.TypedAttributeLookupError:
        return "?"
    if isinstance(address, tuple):
        return f"{address[0]}:{address[1]}"
    return str(address)


async def serve(
    backend: Backend,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    limits: Limits = DEFAULT_LIMITS,
    max_connections: int | None = None,
    linger_secs: float = LINGER_SECS_DEFAULT,
    prologue_timeout_secs: float = PROLOGUE_TIMEOUT_SECS_DEFAULT,
    request_timeout_secs: float = REQUEST_TIMEOUT_SECS_DEFAULT,
    idle_timeout_secs: float = IDLE_TIMEOUT_SECS_DEFAULT,
    output_budget_bytes: int = OUTPUT_BUDGET_BYTES_DEFAULT,
    tls: Callable[[], ssl.SSLContext] | None = None,
    task_status: anyio.abc.TaskStatus[ClientServer] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Listen on ``host:port`` and serve the client protocol until cancelled.

    Start it with ``server = await tg.start(serve, backend, ...)``: readiness is reported once
    the socket listens, with the :class:`ClientServer` (its ``port`` is the bound port, useful
    with ``port=0``). Each connection runs in a task of its own. Raises ``OSError`` if the port
    cannot be bound; nothing a client does ends the service. With ``tls`` (a function giving
    the context for each new connection) every connection is TLS.
    """
    server = ClientServer(
        backend,
        limits=limits,
        max_connections=max_connections,
        linger_secs=linger_secs,
        prologue_timeout_secs=prologue_timeout_secs,
        request_timeout_secs=request_timeout_secs,
        idle_timeout_secs=idle_timeout_secs,
        output_budget_bytes=output_budget_bytes,
    )
    await run_listener(
        server,
        host=host,
        port=port,
        tls=tls,
        handshake_timeout_secs=prologue_timeout_secs,
        event="clientserver.listening",
        task_status=task_status,
    )


class Served(Protocol):
    """What :func:`run_listener` needs of a port's server (the Arakoon and the Redis port)."""

    port: int | None
    max_connections: int

    async def run_sweeper(self) -> None: ...

    async def handle_connection(self, stream: Any, /) -> None: ...


async def run_listener(
    server: Served,
    *,
    host: str,
    port: int,
    tls: Callable[[], ssl.SSLContext] | None,
    handshake_timeout_secs: float,
    event: str,
    task_status: anyio.abc.TaskStatus[Any],
) -> None:
    """Listen on ``host:port`` and give each connection to ``server.handle_connection`` in a
    task of its own, after a TLS handshake (bounded in time and in number, see
    :class:`HandshakeGate`) when ``tls`` gives a context; run the server's sweeper beside.
    Reports ``server`` once listening (``server.port`` is then the bound port). On asyncio,
    the node's case, connections use the lean protocol-backed stream (see fast.py); elsewhere
    anyio's socket streams."""
    gate = HandshakeGate(server.max_connections)

    async def serve_one(stream: Any) -> None:
        if tls is None:
            await server.handle_connection(stream)
            return
        wrapped = await gated_tls(
            gate, cast(anyio.abc.ByteStream, stream), tls(), handshake_timeout_secs
        )
        if wrapped is not None:
            await server.handle_connection(wrapped)

    if running_on_asyncio():
        async with anyio.create_task_group() as tg:
            tg.start_soon(server.run_sweeper)

            def on_connect(stream: ProtocolStream) -> None:
                tg.start_soon(serve_one, stream)

            listening = await listen(host, port, on_connect)
            try:
                server.port = listening.sockets[0].getsockname()[1]
                log.info(event, host=host, port=server.port, tls=tls is not None)
                task_status.started(server)
                await anyio.sleep_forever()
            finally:
                listening.close()
        return
    listener = await anyio.create_tcp_listener(local_host=host, local_port=port)
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(server.run_sweeper)
        server.port = listener.extra(SocketAttribute.local_port)
        log.info(event, host=host, port=server.port, tls=tls is not None)
        task_status.started(server)
        await listener.serve(serve_one)


class HandshakeGate:
    """At most ``limit`` TLS handshakes at once on one port. The connection limit counts
    sessions, which begin after the handshake: without this, clients with no certificate could
    hold any number of sockets (file descriptors the node needs for its log and peers) for the
    handshake timeout each. Beyond the limit a connection is closed at once, unanswered."""

    def __init__(self, limit: int) -> None:
        self.limit = max(1, limit)
        self.active = 0
        self.refused = 0

    def enter(self) -> bool:
        if self.active >= self.limit:
            self.refused += 1
            return False
        self.active += 1
        return True

    def leave(self) -> None:
        self.active -= 1


async def gated_tls(
    gate: HandshakeGate,
    stream: anyio.abc.ByteStream,
    context: ssl.SSLContext,
    timeout_secs: float,
) -> TLSStream | None:
    """:func:`accept_client_tls` within ``gate``: None (closed) when too many are in progress."""
    if not gate.enter():
        log.warning(
            "client.tls_refused",
            peer=_peer_name(cast(ClientStream, stream)),
            reason=f"{gate.limit} TLS handshakes already in progress on this port",
        )
        with anyio.CancelScope(shield=True):
            await stream.aclose()
        return None
    try:
        return await accept_client_tls(stream, context, timeout_secs)
    finally:
        gate.leave()


async def accept_client_tls(
    stream: anyio.abc.ByteStream, context: ssl.SSLContext, timeout_secs: float
) -> TLSStream | None:
    """The server side of the TLS handshake, bounded by ``timeout_secs``; None (logged, and the
    connection closed) when it fails. A client that connects and sends nothing is let go after
    ``timeout_secs``, like one that never sends its prologue."""
    peer = _peer_name(cast(ClientStream, stream))  # before: a refused client may be gone after
    try:
        with anyio.fail_after(timeout_secs):
            return await accept_tls(stream, context)
    except (OSError, TimeoutError, anyio.BrokenResourceError, anyio.EndOfStream) as exc:
        log.warning("client.tls_refused", peer=peer, reason=describe_handshake_error(exc))
        await drain_and_close(stream)
        return None
